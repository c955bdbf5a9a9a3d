//! `tigerflow generate`: continues a chat with the base model and, by default, the pipeline's
//! latest trained adapter.
