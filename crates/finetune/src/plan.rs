//! Which rows every optimizer step sees.
//!
//! Samples are packed once; every epoch visits all rows in an order drawn from (seed, epoch),
//! cut into micro-batches of `micro_batch_size` rows and optimizer steps of
//! `gradient_accumulation_steps` micro-batches (the last step of an epoch may have fewer). The
//! rows of any step follow from its index alone, which is what makes resuming exact.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::packing::{Batch, Padding, Row, collate};

#[derive(Debug, Clone)]
pub struct Plan {
    rows: Vec<Row>,
    micro_batch_size: usize,
    accumulation: usize,
    seed: u64,
    padding: Padding,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

/// Where step `step` starts: (epoch, first micro-batch of the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: usize,
    pub micro_batch: usize,
}

impl Plan {
    /// `rows` must not be empty.
    pub fn new(
        rows: Vec<Row>,
        micro_batch_size: usize,
        accumulation: usize,
        num_epochs: usize,
        max_steps: Option<usize>,
        seed: u64,
        padding: Padding,
    ) -> Self {
        let micro_batches = rows.len().div_ceil(micro_batch_size);
        let steps_per_epoch = micro_batches.div_ceil(accumulation).max(1);
        Plan {
            rows,
            micro_batch_size,
            accumulation,
            seed,
            padding,
            steps_per_epoch,
            total_steps: max_steps.unwrap_or(steps_per_epoch * num_epochs),
        }
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn position(&self, step: usize) -> Position {
        Position {
            epoch: step / self.steps_per_epoch,
            micro_batch: (step % self.steps_per_epoch) * self.accumulation,
        }
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch as u64 + 1);
        order.shuffle(&mut rng);
        order
    }

    /// The micro-batches of optimizer step `step` (0-based).
    pub fn step(&self, step: usize) -> Vec<Batch> {
        let Position { epoch, micro_batch } = self.position(step);
        let order = self.epoch_order(epoch);
        order
            .chunks(self.micro_batch_size)
            .skip(micro_batch)
            .take(self.accumulation)
            .map(|idx| {
                let rows: Vec<Row> = idx.iter().map(|&i| self.rows[i].clone()).collect();
                collate(&rows, self.padding)
            })
            .collect()
    }

    /// The epoch as a fraction, after `steps_done` steps.
    pub fn epoch_progress(&self, steps_done: usize) -> f64 {
        steps_done as f64 / self.steps_per_epoch as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packing::pack;

    fn plan(max_steps: Option<usize>) -> Plan {
        let samples: Vec<Vec<u32>> = (0..10).map(|i| vec![1, 100 + i, 2]).collect();
        Plan::new(
            pack(&samples, 4, false).rows,
            2,
            2,
            2,
            max_steps,
            7,
            Padding::longest(0),
        )
    }

    #[test]
    fn every_row_is_seen_once_per_epoch() {
        let p = plan(None);
        assert_eq!((p.steps_per_epoch, p.total_steps), (3, 6));
        let mut seen: Vec<i64> = (0..3)
            .flat_map(|s| p.step(s))
            .flat_map(|b| b.input_ids)
            .filter(|&t| t >= 100)
            .collect();
        seen.sort();
        assert_eq!(seen, (100..110).collect::<Vec<_>>());
        assert_eq!(
            p.step(2).len(),
            1,
            "the last step of an epoch takes the remainder"
        );
    }

    #[test]
    fn steps_are_reproducible_and_epochs_reshuffle() {
        let (a, b) = (plan(Some(9)), plan(Some(9)));
        assert_eq!(a.step(4), b.step(4));
        assert_ne!(a.step(0), a.step(3));
        assert_eq!(
            a.position(4),
            Position {
                epoch: 1,
                micro_batch: 2
            }
        );
    }
}
