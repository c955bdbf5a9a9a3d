//! Summing what data-parallel ranks computed, so that every rank takes the same optimizer step.
//!
//! A rank is one process training one model replica on its share of every optimizer step's
//! micro-batches. After its share, each rank holds a partial gradient sum; the collective turns
//! it into the full sum on every rank. GPUs sum through NCCL (`nccl.rs`); CPU ranks, which exist
//! to test the data-parallel path on machines without GPUs, sum over TCP (`tcp_group.rs`).

/// A group of ranks that can sum vectors element-wise.
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Replaces `values` by their element-wise sum over all ranks. Every rank passes the same
    /// length and gets bit-identical results, so replicas stay identical after the update.
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), String>;
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

    fn all_reduce_sum(&mut self, _values: &mut [f32]) -> Result<(), String> {
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
