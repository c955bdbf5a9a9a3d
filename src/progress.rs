//! How the runner shows progress: an indicatif multi-bar (one line per running stage) on a
//! terminal, plain lines otherwise or with NO_COLOR. Every stage also gets a log file.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tigerflow_stage::Reporter;

use crate::secrets::Redactor;

/// In plain mode, status messages are printed at most this often per stage.
const PLAIN_MESSAGE_EVERY: Duration = Duration::from_secs(5);

/// The run's output channel on stderr. Clones share the same bars.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    redactor: Redactor,
}

impl Progress {
    /// Bars when stderr is a terminal and NO_COLOR is not set; plain lines otherwise.
    pub fn new(redactor: Redactor) -> Progress {
        let interactive = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let multi =
            interactive.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi, redactor }
    }

    /// Prints a line above the bars (or plainly).
    pub fn line(&self, text: &str) {
        let text = self.redactor.redact(text);
        match &self.multi {
            Some(m) => m.println(text).unwrap_or_default(),
            None => eprintln!("{text}"),
        }
    }

    /// A reporter for one running stage, logging to `log_path` (truncated).
    pub fn stage(&self, name: &str, log_path: &Path) -> StageReporter<'_> {
        let log = log_path
            .parent()
            .map(std::fs::create_dir_all)
            .and_then(Result::ok)
            .and_then(|()| File::create(log_path).ok());
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(spinner_style());
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        StageReporter {
            progress: self,
            name: name.to_string(),
            bar,
            log: Mutex::new(log),
            last_plain_message: Mutex::new(None),
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
        .expect("valid template")
}

fn bar_style(unit: &str) -> ProgressStyle {
    let template = match unit {
        "bytes" => {
            "{spinner} {prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})".to_string()
        }
        _ => format!(
            "{{spinner}} {{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{eta}})"
        ),
    };
    ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| spinner_style())
        .progress_chars("=> ")
}

/// One stage's progress line and log file.
pub struct StageReporter<'p> {
    progress: &'p Progress,
    name: String,
    bar: Option<ProgressBar>,
    log: Mutex<Option<File>>,
    last_plain_message: Mutex<Option<Instant>>,
}

impl StageReporter<'_> {
    fn write_log(&self, line: &str) {
        if let Some(file) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Removes the bar; the runner prints the outcome line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for StageReporter<'_> {
    fn begin(&self, step: &str, total: Option<u64>, unit: &str) {
        let step = self.progress.redactor.redact(step);
        self.write_log(&format!("== {step}"));
        match &self.bar {
            Some(bar) => {
                bar.reset();
                match total {
                    Some(total) => {
                        bar.set_length(total);
                        bar.set_style(bar_style(unit));
                    }
                    None => bar.set_style(spinner_style()),
                }
                bar.set_message(step);
            }
            None => {
                let size = total.map(|t| format!(" ({t} {unit})")).unwrap_or_default();
                eprintln!("[{}] {step}{size}", self.name);
            }
        }
    }

    fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    fn set_message(&self, message: &str) {
        let message = self.progress.redactor.redact(message);
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => {
                let mut last = self
                    .last_plain_message
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= PLAIN_MESSAGE_EVERY) {
                    *last = Some(Instant::now());
                    eprintln!("[{}] {message}", self.name);
                }
            }
        }
    }

    fn log(&self, line: &str) {
        let line = self.progress.redactor.redact(line);
        self.write_log(&line);
        self.progress.line(&format!("[{}] {line}", self.name));
    }
}
