//! Keeps secrets from the environment (tokens, passwords) out of logs and messages.

/// Name fragments of environment variables that hold secrets.
const SECRET_NAMES: [&str; 6] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "CREDENTIAL",
];
/// Shorter values would mask ordinary words.
const MIN_LEN: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn from_env() -> Redactor {
        Redactor::new(std::env::vars())
    }

    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Redactor {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(name, value)| {
                let upper = name.to_ascii_uppercase();
                value.len() >= MIN_LEN && SECRET_NAMES.iter().any(|s| upper.contains(s))
            })
            .map(|(_, value)| value)
            .collect();
        // Longest first, so that a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secret_values_only() {
        let r = Redactor::new([
            ("HF_TOKEN".to_string(), "hf_abcdef123".to_string()),
            ("HOME".to_string(), "/home/user".to_string()),
        ]);
        assert_eq!(
            r.redact("token hf_abcdef123 in /home/user"),
            "token *** in /home/user"
        );
    }
}
