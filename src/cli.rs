use tigerflow_stage::Registry;

/// Runs the command line and returns the process exit code.
pub fn main(_registry: Registry) -> i32 {
    0
}
