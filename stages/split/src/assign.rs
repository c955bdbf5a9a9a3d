//! Which samples go to test: a pure function of the samples' sessions and times, the
//! parameters and the seed.

use crate::params::{SplitParams, Strategy};
use crate::rng::SplitMix64;

/// What `assign` needs to know of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub session: u32,
    pub first_unix_time: i64,
}

/// The split: indices into the samples, in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// How many samples go to test: `round(n * test_size)`, at least 1 and at most `n - 1`
/// (for `n >= 2`), so that neither side is empty.
pub fn test_count(n: usize, test_size: f64) -> usize {
    if n < 2 {
        return 0;
    }
    ((n as f64 * test_size).round() as usize).clamp(1, n - 1)
}

pub fn assign(keys: &[Key], params: &SplitParams) -> Assignment {
    let n = keys.len();
    let wanted = test_count(n, params.test_size);
    let mut rng = SplitMix64::new(params.seed);
    // Time order (stable: ties keep dataset order).
    let mut by_time: Vec<usize> = (0..n).collect();
    by_time.sort_by_key(|&i| keys[i].first_unix_time);

    let (mut train, mut test) = match params.strategy {
        Strategy::Random => {
            let mut order = by_time;
            if params.shuffle {
                rng.shuffle(&mut order);
            }
            let test = order.split_off(n - wanted);
            (order, test)
        }
        Strategy::Time => {
            let mut order = by_time;
            let test = order.split_off(n - wanted);
            (order, test)
        }
        Strategy::Session => split_sessions(keys, &by_time, wanted, params.shuffle, &mut rng),
    };
    if params.shuffle && params.strategy != Strategy::Random {
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
    }
    if !params.shuffle {
        // Unshuffled output is in time order (ties in dataset order).
        let key = |&i: &usize| (keys[i].first_unix_time, i);
        train.sort_unstable_by_key(key);
        test.sort_unstable_by_key(key);
    }
    Assignment { train, test }
}

/// Whole sessions go to test, the last ones in (shuffled or time) order, until at least
/// `wanted` samples are there; the train side keeps at least one session.
fn split_sessions(
    keys: &[Key],
    by_time: &[usize],
    wanted: usize,
    shuffle: bool,
    rng: &mut SplitMix64,
) -> (Vec<usize>, Vec<usize>) {
    let mut sessions: Vec<Vec<usize>> = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    for &i in by_time {
        let slot = *index_of.entry(keys[i].session).or_insert_with(|| {
            sessions.push(Vec::new());
            sessions.len() - 1
        });
        sessions[slot].push(i);
    }
    if shuffle {
        rng.shuffle(&mut sessions);
    }
    let mut test = Vec::new();
    while test.len() < wanted && sessions.len() > 1 {
        let session = sessions.pop().expect("more than one left");
        test.extend(session);
    }
    (sessions.concat(), test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Strategy;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn keys(sessions: &[u32]) -> Vec<Key> {
        sessions
            .iter()
            .enumerate()
            .map(|(i, &session)| Key {
                session,
                first_unix_time: i as i64 * 60,
            })
            .collect()
    }

    fn params(strategy: Strategy, shuffle: bool, seed: u64, test_size: f64) -> SplitParams {
        SplitParams {
            test_size,
            seed,
            shuffle,
            strategy,
        }
    }

    #[test]
    fn test_counts_leave_both_sides_non_empty() {
        assert_eq!(test_count(100, 0.15), 15);
        assert_eq!(test_count(3, 0.01), 1);
        assert_eq!(test_count(3, 0.99), 2);
        assert_eq!(test_count(1, 0.5), 0);
    }

    #[test]
    fn time_puts_the_latest_samples_in_test() {
        let a = assign(
            &keys(&[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]),
            &params(Strategy::Time, false, 1, 0.2),
        );
        assert_eq!(a.test, vec![8, 9]);
        assert_eq!(a.train, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_fixed_seed_gives_a_fixed_split() {
        let a = assign(&keys(&[0; 10]), &params(Strategy::Random, true, 42, 0.3));
        assert_eq!(a.test, vec![2, 1, 3]);
    }

    proptest! {
        #[test]
        fn splits_are_partitions_deterministic_and_leak_free(
            sessions in prop::collection::vec(0u32..8, 2..60),
            seed in any::<u64>(),
            test_size in 0.05f64..0.95,
            shuffle in any::<bool>(),
            strategy in prop_oneof![Just(Strategy::Random), Just(Strategy::Time), Just(Strategy::Session)],
        ) {
            let mut sorted = sessions.clone();
            sorted.sort();
            let keys = keys(&sorted);
            let p = params(strategy, shuffle, seed, test_size);
            let a = assign(&keys, &p);
            prop_assert_eq!(&a, &assign(&keys, &p));
            let mut all: Vec<usize> = a.train.iter().chain(&a.test).copied().collect();
            all.sort();
            prop_assert_eq!(all, (0..keys.len()).collect::<Vec<_>>());
            prop_assert!(!a.train.is_empty());
            if strategy == Strategy::Session {
                let train: HashSet<u32> = a.train.iter().map(|&i| keys[i].session).collect();
                prop_assert!(a.test.iter().all(|&i| !train.contains(&keys[i].session)));
            } else {
                prop_assert_eq!(a.test.len(), test_count(keys.len(), test_size));
            }
        }
    }
}
