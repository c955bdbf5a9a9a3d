//! The data-parallel runtime: ranks that meet (over TCP, as torchrun's variables describe them),
//! sum their gradients (TCP on CPUs, NCCL on GPUs) and are started and watched as processes.
//! It knows nothing of models: the trainer sums through [`collective::Collective`].

pub mod collective;
pub mod launch;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod nccl_lib;
pub mod rank_env;
pub mod rank_report;
pub mod tcp_group;
