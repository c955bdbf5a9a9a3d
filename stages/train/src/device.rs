//! The `device` parameter.

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainDevice {
    Cpu,
    Cuda(usize),
}

impl TrainDevice {
    /// Parses `"cpu"`, `"cuda"` or `"cuda:N"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(TrainDevice::Cpu),
            "cuda" => Ok(TrainDevice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(TrainDevice::Cuda)
                .ok_or_else(|| {
                    format!("unknown device {other:?}; fix: use \"cpu\", \"cuda\" or \"cuda:N\"")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(TrainDevice::parse("cpu"), Ok(TrainDevice::Cpu));
        assert_eq!(TrainDevice::parse("cuda"), Ok(TrainDevice::Cuda(0)));
        assert_eq!(TrainDevice::parse("cuda:3"), Ok(TrainDevice::Cuda(3)));
        assert!(TrainDevice::parse("gpu").unwrap_err().contains("cuda:N"));
    }
}
