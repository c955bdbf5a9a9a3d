//! Where a rank learns who it is: the environment variables torchrun sets (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), with SLURM's task variables
//! standing in for the first three so that `srun` can start ranks directly.

/// A rank variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankEnvError {
    #[error(
        "{0} is not set; fix: start ranks through the train stage's `devices` or `launcher`, or set the torchrun variables RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
    )]
    Missing(&'static str),
    #[error("{name}={text:?} is not a whole number")]
    NotANumber { name: &'static str, text: String },
    #[error(
        "MASTER_ADDR is not set; fix: set it to the host name of rank 0 (under SLURM: the first host of the job)"
    )]
    NoMasterAddr,
    #[error("MASTER_PORT is not a port number (1-65535)")]
    BadPort,
    #[error("RANK={rank} is not below WORLD_SIZE={world_size}; fix: number ranks from 0")]
    RankOutOfRange { rank: usize, world_size: usize },
}

/// One rank's place in a data-parallel job and where the ranks meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank's index on its host: which of the host's devices it uses.
    pub local_rank: usize,
    /// Where rank 0 listens for the others.
    pub master_addr: String,
    pub master_port: u16,
}

impl RankEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, RankEnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads variables through `var`, so that tests need not touch the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, RankEnvError> {
        let number = |names: &[&'static str]| -> Result<usize, RankEnvError> {
            let (name, text) = names
                .iter()
                .find_map(|n| var(n).map(|v| (*n, v)))
                .ok_or(RankEnvError::Missing(names[0]))?;
            text.trim()
                .parse()
                .map_err(|_| RankEnvError::NotANumber { name, text })
        };
        let env = RankEnv {
            rank: number(&["RANK", "SLURM_PROCID"])?,
            world_size: number(&["WORLD_SIZE", "SLURM_NTASKS"])?,
            local_rank: number(&["LOCAL_RANK", "SLURM_LOCALID"])?,
            master_addr: var("MASTER_ADDR").ok_or(RankEnvError::NoMasterAddr)?,
            master_port: number(&["MASTER_PORT"])?
                .try_into()
                .map_err(|_| RankEnvError::BadPort)?,
        };
        if env.rank >= env.world_size {
            return Err(RankEnvError::RankOutOfRange {
                rank: env.rank,
                world_size: env.world_size,
            });
        }
        Ok(env)
    }

    /// The variables that describe this rank to a child process.
    pub fn vars(&self) -> [(&'static str, String); 5] {
        [
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<RankEnv, RankEnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RankEnv::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn reads_torchrun_variables_and_writes_them_back() {
        let env = RankEnv {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            master_addr: "node7".into(),
            master_port: 29500,
        };
        let vars = env.vars();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(read(&pairs), Ok(env));
    }

    #[test]
    fn slurm_task_variables_stand_in() {
        let env = read(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "node1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (5, 8, 1));
    }

    #[test]
    fn bad_or_missing_variables_are_named() {
        let err = read(&[("RANK", "0")]).unwrap_err().to_string();
        assert!(err.starts_with("WORLD_SIZE is not set"), "{err}");
        let err = read(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("RANK=2 is not below WORLD_SIZE=2"), "{err}");
        let err = read(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("MASTER_PORT"), "{err}");
    }
}
