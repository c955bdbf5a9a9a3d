//! The `tigerflow` command line: parses arguments and hands them to the engine, or to the
//! generation front end for `tigerflow generate`.

#[cfg(feature = "ml-stages")]
mod bench;
mod cli;
#[cfg(feature = "ml-stages")]
mod generate;

/// mimalloc instead of the system allocator: see its entry in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut registry = tigerflow_stage::Registry::new();
    tigerflow_cmd::register(&mut registry);
    #[cfg(feature = "data-stages")]
    {
        tigerflow_telegram::register(&mut registry);
        tigerflow_chunk::register(&mut registry);
        tigerflow_split::register(&mut registry);
    }
    #[cfg(feature = "publish-stages")]
    tigerflow_publish::register(&mut registry);
    #[cfg(feature = "ml-stages")]
    {
        tigerflow_train::register(&mut registry);
        tigerflow_eval::register(&mut registry);
    }
    std::process::exit(cli::main(registry));
}
