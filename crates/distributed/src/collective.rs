//! Summing what data-parallel ranks computed, so that every rank takes the same optimizer step.
//!
//! A rank is one process training one model replica on its share of every optimizer step's
//! micro-batches. After its share, each rank holds a partial gradient sum; the collective turns
//! it into the full sum on every rank. GPUs sum through NCCL (`nccl.rs`); CPU ranks, which exist
//! to test the data-parallel path on machines without GPUs, sum over TCP (`tcp_group.rs`).

/// Why ranks could not meet or sum.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// A connection to another rank broke: most often that rank stopped, and its log says why.
    #[error("{what}: {source} (another rank stopped; its log says why)")]
    Lost {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("rank 0 cannot listen on {address}: {source}; fix: choose a free MASTER_PORT")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    /// The ranks disagree about the job, or did not all come: the message says which and the fix.
    #[error("{0}")]
    Job(String),
    /// NCCL or the CUDA driver under it failed.
    #[error("{0}")]
    Device(String),
}

/// A group of ranks that can sum vectors element-wise.
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Replaces `values` by their element-wise sum over all ranks. Every rank passes the same
    /// length and gets bit-identical results, so replicas stay identical after the update.
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), CollectiveError>;
}

/// One process training alone: nothing to sum.
pub struct Alone;

impl Collective for Alone {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&mut self, _values: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// Which micro-batches of an optimizer step a rank computes: those whose index `j` in the step
/// has `j % count == index`. Micro-batches keep their step-wide index (it seeds their dropout), so
/// the ranks together compute exactly what one process computes for the whole step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole step, on one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn of(collective: &dyn Collective) -> Shard {
        Shard {
            index: collective.rank(),
            count: collective.world_size(),
        }
    }

    pub fn owns(self, micro_batch: usize) -> bool {
        micro_batch % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_a_step() {
        let shards = [
            Shard { index: 0, count: 3 },
            Shard { index: 1, count: 3 },
            Shard { index: 2, count: 3 },
        ];
        for j in 0..10 {
            assert_eq!(
                shards.iter().filter(|s| s.owns(j)).count(),
                1,
                "micro-batch {j}"
            );
        }
        assert!((0..10).all(|j| Shard::WHOLE.owns(j)));
    }
}
