//! How rank processes report to the stage that started them: one JSON object per line on
//! stdout. Rank 0 sends its progress; any rank that fails sends why before it exits, so that
//! the stage can name the first failure instead of the ranks that were stopped because of it.

use std::io::Write;

use serde::{Deserialize, Serialize};
use tigerflow_stage::Reporter;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankLine {
    Begin {
        step: String,
        total: Option<u64>,
        unit: String,
    },
    Position(u64),
    Message(String),
    Log(String),
    Failed {
        rank: usize,
        message: String,
    },
}

impl RankLine {
    pub fn print(&self) {
        let line = serde_json::to_string(self).expect("a rank line serializes");
        let mut out = std::io::stdout().lock();
        // A rank whose stage went away has no one to report to; training goes on regardless.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// Parses a line of a rank's stdout; other text (a launcher's own output) becomes a log line.
    pub fn parse(line: &str) -> RankLine {
        serde_json::from_str(line).unwrap_or_else(|_| RankLine::Log(line.to_owned()))
    }

    /// Shows a progress line on `reporter`; returns the failure it carries, if any.
    pub fn relay(self, reporter: &dyn Reporter) -> Option<String> {
        match self {
            RankLine::Begin { step, total, unit } => reporter.begin(&step, total, &unit),
            RankLine::Position(position) => reporter.set_position(position),
            RankLine::Message(message) => reporter.set_message(&message),
            RankLine::Log(line) => reporter.log(&line),
            RankLine::Failed { rank, message } => return Some(format!("rank {rank}: {message}")),
        }
        None
    }
}

/// Rank 0's reporter: every call becomes a line on stdout (whole, under stdout's lock). Other
/// ranks report nothing.
pub struct LineReporter {
    speaks: bool,
}

impl LineReporter {
    pub fn new(speaks: bool) -> Self {
        LineReporter { speaks }
    }

    fn send(&self, line: RankLine) {
        if self.speaks {
            line.print();
        }
    }
}

impl Reporter for LineReporter {
    fn begin(&self, step: &str, total: Option<u64>, unit: &str) {
        self.send(RankLine::Begin {
            step: step.to_owned(),
            total,
            unit: unit.to_owned(),
        });
    }

    fn set_position(&self, position: u64) {
        self.send(RankLine::Position(position));
    }

    fn set_message(&self, message: &str) {
        self.send(RankLine::Message(message.to_owned()));
    }

    fn log(&self, line: &str) {
        self.send(RankLine::Log(line.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_stray_text_is_a_log_line() {
        for line in [
            RankLine::Begin {
                step: "training".into(),
                total: Some(9),
                unit: "steps".into(),
            },
            RankLine::Position(3),
            RankLine::Message("loss 2.1".into()),
            RankLine::Failed {
                rank: 1,
                message: "out of memory".into(),
            },
        ] {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(RankLine::parse(&text), line);
        }
        assert_eq!(
            RankLine::parse("srun: job 12 queued"),
            RankLine::Log("srun: job 12 queued".into())
        );
    }
}
