//! The tigerflow engine: pipeline config, DAG, fingerprints, artifact store, lock and runner.
//! It knows stages only through `tigerflow_stage::Stage` and never imports ML code.
