//! The parameters shared by `upload` and `push`.

use serde::{Deserialize, Serialize};
use tigerflow_stage::{ParamError, Params};

use crate::target::Target;

/// Where and how to publish. Both stage kinds take the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishParams {
    /// Required. `dir:PATH` publishes into a local folder (relative to the project root) laid
    /// out exactly as the hub repository; `hf:owner/name` publishes to the Hugging Face Hub.
    pub target: String,
    /// Hub only: create the repository private if it does not exist yet. Default `true`; an
    /// existing repository keeps its visibility.
    pub private: bool,
    /// Hub only: the branch to commit to. Default `"main"`.
    pub revision: String,
    /// The commit summary. Default: names the pipeline, the stage and the content fingerprint.
    pub commit_message: Option<String>,
}

impl Default for PublishParams {
    fn default() -> Self {
        PublishParams {
            target: String::new(),
            private: true,
            revision: "main".to_owned(),
            commit_message: None,
        }
    }
}

impl PublishParams {
    /// The parsed target; `validate` has already accepted it.
    pub fn target(&self) -> Result<Target, String> {
        Target::parse(&self.target)
    }
}

impl Params for PublishParams {
    fn validate(&self) -> Result<(), ParamError> {
        self.target()
            .map_err(|message| ParamError::new(&["target"], message))?;
        if self.revision.is_empty() || self.revision.chars().any(char::is_whitespace) {
            return Err(ParamError::new(
                &["revision"],
                format!(
                    "must be a branch name without spaces (got `{}`); fix: `revision = \"main\"`",
                    self.revision
                ),
            ));
        }
        if self
            .commit_message
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err(ParamError::new(
                &["commit_message"],
                "must not be empty; fix: remove the key to get the default message, or write one",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tigerflow_stage::parse_params;

    fn parse(text: &str) -> Result<PublishParams, ParamError> {
        parse_params(&toml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_fill_in() {
        let p = parse(r#"target = "hf:a/b""#).unwrap();
        assert!(p.private);
        assert_eq!(p.revision, "main");
        assert_eq!(p.commit_message, None);
    }

    #[test]
    fn target_is_required_and_named() {
        let err = parse("private = false").unwrap_err();
        assert_eq!(err.path, ["target"]);
        assert!(err.message.contains("required"), "{}", err.message);
        let err = parse(
            r#"target = "hf:a/b"
revision = "my branch""#,
        )
        .unwrap_err();
        assert_eq!(err.path, ["revision"]);
    }

    #[test]
    fn typos_are_caught() {
        let err = parse(
            r#"target = "dir:x"
privat = true"#,
        )
        .unwrap_err();
        assert!(err.message.contains("privat"), "{}", err.message);
    }
}
