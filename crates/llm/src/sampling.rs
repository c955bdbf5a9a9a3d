//! Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, with a
//! seeded random generator so that sampled runs are reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings; the defaults decode greedily.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 picks the most likely token (greedy); higher values flatten the distribution.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// > 1 discourages tokens already in the context (transformers' formula); 1 is off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// Picks tokens according to a [`SamplingConfig`].
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// The next token given the last position's `logits` and the ids seen so far.
    pub fn next(&mut self, mut logits: Vec<f32>, context: &[u32]) -> u32 {
        let penalty = self.config.repetition_penalty;
        if penalty != 1.0 {
            for &id in context {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
                }
            }
        }
        if self.config.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut ranked: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / self.config.temperature))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.config.top_k > 0 {
            ranked.truncate(self.config.top_k);
        }
        let max = ranked[0].1;
        let mut probs: Vec<f32> = ranked.iter().map(|(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= self.config.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut pick = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            pick -= p;
            if pick <= 0.0 {
                return ranked[i].0;
            }
        }
        ranked[probs.len() - 1].0
    }
}

/// Index of the largest value (the first one on ties, like torch.argmax).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(SamplingConfig::default());
        assert_eq!(s.next(vec![0.1, 2.0, -1.0, 2.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let config = SamplingConfig {
            repetition_penalty: 4.0,
            ..SamplingConfig::default()
        };
        let mut s = Sampler::new(config);
        assert_eq!(s.next(vec![1.0, 2.0, 0.9], &[1]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_makes_sampling_repeatable() {
        let config = SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            ..SamplingConfig::default()
        };
        assert_eq!(Sampler::new(config).next(vec![0.0, 3.0, 1.0], &[]), 1);
        let config = SamplingConfig {
            temperature: 1.0,
            seed: 42,
            ..SamplingConfig::default()
        };
        let logits = vec![0.0; 50];
        let a: Vec<u32> = {
            let mut s = Sampler::new(config.clone());
            (0..10).map(|_| s.next(logits.clone(), &[])).collect()
        };
        let mut s = Sampler::new(config);
        let b: Vec<u32> = (0..10).map(|_| s.next(logits.clone(), &[])).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|&t| t != a[0]));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        let config = SamplingConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..SamplingConfig::default()
        };
        let mut s = Sampler::new(config);
        // Token 2 alone holds ~98% of the mass.
        for _ in 0..20 {
            assert_eq!(s.next(vec![0.0, 0.0, 5.0, 0.0], &[]), 2);
        }
    }
}
