//! Turning tokenized samples into training rows.
//!
//! A sample is one conversation, already wrapped in BOS … EOS. With packing, whole samples fill
//! rows of `sequence_len` tokens (first fit, in the given order); position ids restart at 0 for
//! every sample and each sample gets its own segment id, which the model turns into a
//! block-diagonal causal mask, so no token ever attends to another sample. Labels are the next
//! token within the same sample: the EOS is a target (the model learns to stop), the first token
//! of the next sample is not.

/// The label of a position that does not count in the loss (transformers' `-100`).
pub const IGNORE: i64 = -100;

/// One row of a micro-batch, before padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub position_ids: Vec<i64>,
    pub segment_ids: Vec<i64>,
}

impl Row {
    fn new() -> Self {
        Row {
            input_ids: Vec::new(),
            labels: Vec::new(),
            position_ids: Vec::new(),
            segment_ids: Vec::new(),
        }
    }

    fn push_sample(&mut self, sample: &[u32]) {
        let segment = self.segment_ids.last().map_or(0, |s| s + 1);
        for (i, &token) in sample.iter().enumerate() {
            self.input_ids.push(token);
            self.labels
                .push(sample.get(i + 1).map_or(IGNORE, |&next| i64::from(next)));
            self.position_ids.push(i as i64);
            self.segment_ids.push(segment);
        }
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Positions that count in the loss.
    pub fn target_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// Rows built from a split, and what did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub rows: Vec<Row>,
    /// Samples longer than `sequence_len`, left out as the reference trainer does.
    pub dropped: usize,
}

/// Builds rows from `samples`. With `packing`, several whole samples share a row (first fit);
/// without, every sample is a row of its own.
pub fn pack(samples: &[Vec<u32>], sequence_len: usize, packing: bool) -> Packed {
    let mut rows: Vec<Row> = Vec::new();
    let mut dropped = 0;
    for sample in samples {
        if sample.len() > sequence_len {
            dropped += 1;
            continue;
        }
        if sample.len() < 2 {
            // A sample with no next token has no target.
            continue;
        }
        let slot = if packing {
            rows.iter_mut()
                .find(|r| r.len() + sample.len() <= sequence_len)
        } else {
            None
        };
        match slot {
            Some(row) => row.push_sample(sample),
            None => {
                let mut row = Row::new();
                row.push_sample(sample);
                rows.push(row);
            }
        }
    }
    Packed { rows, dropped }
}

/// A micro-batch after padding: `[rows, len]` row-major tensors' data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub position_ids: Vec<i64>,
    pub segment_ids: Vec<i64>,
    pub target_tokens: usize,
}

/// How [`collate`] pads a micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    pub pad_id: u32,
    /// At least this many rows (extra rows are all padding).
    pub min_rows: usize,
    /// At least this many tokens per row.
    pub min_len: usize,
}

impl Padding {
    /// Pad to the longest row only.
    pub fn longest(pad_id: u32) -> Self {
        Padding {
            pad_id,
            min_rows: 0,
            min_len: 0,
        }
    }

    /// Pad every micro-batch to `rows × len` (axolotl's `pad_to_sequence_len`): every step then
    /// has one tensor shape, so GPU kernels compile once and memory peaks at the first step.
    pub fn fixed(pad_id: u32, rows: usize, len: usize) -> Self {
        Padding {
            pad_id,
            min_rows: rows,
            min_len: len,
        }
    }

    /// The padding a stage's `pad_to_sequence_len` setting asks for: [`Padding::fixed`] to
    /// `rows × len` when set, else [`Padding::longest`].
    pub fn to_sequence_len(pad_id: u32, enabled: bool, rows: usize, len: usize) -> Self {
        if enabled {
            Padding::fixed(pad_id, rows, len)
        } else {
            Padding::longest(pad_id)
        }
    }
}

/// Pads `rows` on the right and adds whole padding rows as `padding` asks. Padding is a segment
/// of its own (id -1) with ignored labels, so it neither sees nor is seen by real tokens.
pub fn collate(rows: &[Row], padding: Padding) -> Batch {
    let len = rows
        .iter()
        .map(Row::len)
        .max()
        .unwrap_or(0)
        .max(padding.min_len);
    let count = rows.len().max(padding.min_rows);
    let mut batch = Batch {
        rows: count,
        len,
        input_ids: Vec::with_capacity(count * len),
        labels: Vec::with_capacity(count * len),
        position_ids: Vec::with_capacity(count * len),
        segment_ids: Vec::with_capacity(count * len),
        target_tokens: rows.iter().map(Row::target_tokens).sum(),
    };
    let empty = Row::new();
    let padded_rows = rows
        .iter()
        .chain(std::iter::repeat_n(&empty, count - rows.len()));
    for row in padded_rows {
        let pad = len - row.len();
        batch
            .input_ids
            .extend(row.input_ids.iter().map(|&t| i64::from(t)));
        batch
            .input_ids
            .extend(std::iter::repeat_n(i64::from(padding.pad_id), pad));
        batch.labels.extend(&row.labels);
        batch.labels.extend(std::iter::repeat_n(IGNORE, pad));
        batch.position_ids.extend(&row.position_ids);
        batch.position_ids.extend(0..pad as i64);
        batch.segment_ids.extend(&row.segment_ids);
        batch.segment_ids.extend(std::iter::repeat_n(-1, pad));
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_whole_samples_and_resets_positions() {
        let samples = vec![
            vec![1, 10, 11, 2],
            vec![1, 20, 2],
            vec![1, 30, 31, 32, 33, 2],
            vec![1, 40, 2],
            vec![1, 2],
        ];
        let packed = pack(&samples, 8, true);
        assert_eq!(packed.dropped, 0);
        // First fit: 4 + 3 share a row, 6 + 2 another, and 3 fits neither.
        assert_eq!(packed.rows.len(), 3);
        let r = &packed.rows[0];
        assert_eq!(r.input_ids, vec![1, 10, 11, 2, 1, 20, 2]);
        assert_eq!(r.position_ids, vec![0, 1, 2, 3, 0, 1, 2]);
        assert_eq!(r.segment_ids, vec![0, 0, 0, 0, 1, 1, 1]);
        // EOS (2) is a target; nothing predicts across the sample boundary.
        assert_eq!(r.labels, vec![10, 11, 2, IGNORE, 20, 2, IGNORE]);
        assert_eq!(packed.rows[1].input_ids, vec![1, 30, 31, 32, 33, 2, 1, 2]);
        assert_eq!(packed.rows[2].input_ids, vec![1, 40, 2]);
    }

    #[test]
    fn drops_samples_longer_than_a_row() {
        let samples = vec![vec![1; 9], vec![1, 2]];
        let packed = pack(&samples, 8, true);
        assert_eq!(packed.dropped, 1);
        assert_eq!(packed.rows.len(), 1);
    }

    #[test]
    fn unpacked_rows_hold_one_sample_and_collate_pads_right() {
        let samples = vec![vec![1, 5, 2], vec![1, 6, 7, 2]];
        let packed = pack(&samples, 8, false);
        assert_eq!(packed.rows.len(), 2);
        let batch = collate(&packed.rows, Padding::longest(0));
        assert_eq!((batch.rows, batch.len), (2, 4));
        assert_eq!(batch.input_ids, vec![1, 5, 2, 0, 1, 6, 7, 2]);
        assert_eq!(batch.labels, vec![5, 2, IGNORE, IGNORE, 6, 7, 2, IGNORE]);
        assert_eq!(batch.segment_ids, vec![0, 0, 0, -1, 0, 0, 0, 0]);
        assert_eq!(batch.target_tokens, 5);
    }

    #[test]
    fn fixed_padding_adds_whole_rows_that_count_for_nothing() {
        let samples = vec![vec![1, 5, 2]];
        let packed = pack(&samples, 8, true);
        let batch = collate(&packed.rows, Padding::fixed(0, 2, 4));
        assert_eq!((batch.rows, batch.len), (2, 4));
        assert_eq!(batch.input_ids, vec![1, 5, 2, 0, 0, 0, 0, 0]);
        assert_eq!(batch.labels[3..], [IGNORE; 5]);
        assert_eq!(batch.position_ids, vec![0, 1, 2, 0, 0, 1, 2, 3]);
        assert_eq!(batch.segment_ids, vec![0, 0, 0, -1, -1, -1, -1, -1]);
        assert_eq!(batch.target_tokens, 2);
    }
}
