//! A failed device operation must stop the work that depends on it.
//!
//! burn's CUDA backend runs kernels on threads of its own. When one of them panics (most often:
//! the device is out of memory) the panic never reaches the caller: later operations read
//! buffers that were never allocated, and a training step on an H200 reported a loss of 0.0 and
//! went on (docs/perf-log.md, "The Llama-2-7B shape"). [`watch`] installs a panic hook that keeps the first
//! panic of the process; loops that read results back call [`check`] and stop with its message.

use std::fmt;
use std::sync::{Once, OnceLock};

static FIRST: OnceLock<String> = OnceLock::new();

/// The first panic seen after [`watch`], on any thread.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFailure {
    pub message: String,
}

impl DeviceFailure {
    /// Whether the device ran out of memory (cubecl's allocator could not reserve a buffer).
    pub fn out_of_memory(&self) -> bool {
        self.message.contains("can't allocate")
            || self.message.to_ascii_lowercase().contains("out of memory")
    }
}

impl fmt::Display for DeviceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first_line = self.message.lines().next().unwrap_or_default();
        if self.out_of_memory() {
            write!(f, "the GPU ran out of memory ({first_line})")
        } else {
            write!(f, "a GPU operation failed ({first_line})")
        }
    }
}

/// Keeps the first panic of the process from now on, then lets the previous hook print it as
/// before. Idempotent.
pub fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let _ = FIRST.set(message);
            previous(info);
        }));
    });
}

/// `Err` once any thread has panicked since [`watch`]; always `Ok` without it.
pub fn check() -> Result<(), DeviceFailure> {
    match FIRST.get() {
        Some(message) => Err(DeviceFailure {
            message: message.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_named_as_such() {
        let oom = DeviceFailure {
            message: "called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 2345466880\nmore".into(),
        };
        assert!(oom.out_of_memory());
        assert_eq!(
            oom.to_string(),
            "the GPU ran out of memory (called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 2345466880)"
        );
        let other = DeviceFailure {
            message: "Should have handle for tensor TensorId { value: 11265 }".into(),
        };
        assert!(!other.out_of_memory());
        assert!(
            other
                .to_string()
                .starts_with("a GPU operation failed (Should have handle")
        );
    }
}
