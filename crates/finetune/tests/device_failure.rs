//! A panic on a backend thread (as burn's CUDA threads panic when the GPU is out of memory) stops
//! training at the next step with a one-line error, instead of training on whatever the failed
//! kernels left behind. Its own test binary: the panic is recorded for the whole process.

mod common;

use common::*;
use tigerflow_finetune::packing::pack;
use tigerflow_finetune::trainer::TrainError;

#[test]
fn a_failed_device_thread_stops_training_at_the_next_step() {
    tigerflow_llm::failure::watch();
    let crashed = std::thread::Builder::new()
        .name("DSD-0-0".into())
        .spawn(|| panic!("can't allocate buffer of size: 2345466880"))
        .unwrap()
        .join();
    assert!(crashed.is_err());

    let s = settings(0.0);
    let plan = plan_of(pack(&samples(8, 5), 32, true).rows, &s);
    let out = tempfile::tempdir().unwrap();
    let err = train_tiny(&mut tiny_model(false), &plan, &[], &s, out.path(), None).unwrap_err();
    assert!(matches!(err, TrainError::Device { step: 1, .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "the GPU ran out of memory (can't allocate buffer of size: 2345466880) in step 1"
        ) && message.contains("fix: lower micro_batch_size or sequence_len"),
        "{message}"
    );
    assert!(
        !out.path().join("checkpoints").exists(),
        "nothing from the failed step is saved"
    );
}
