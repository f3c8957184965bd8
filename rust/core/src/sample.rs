//! Deterministic row sampling: which rows a fraction keeps.

use crate::error::{Result, TokenmillError};
use crate::rng::StreamKey;

/// For each row key, whether a Bernoulli(`fraction`) draw keeps it.
///
/// A row's fate depends on its key alone, so sampling a dataset with
/// `fraction` and with `invert` splits it into two disjoint parts that
/// together hold every row, however the rows are sharded or batched.
///
/// # Errors
///
/// [`TokenmillError::Config`] when `fraction` is outside `[0, 1]`.
///
/// # Examples
///
/// ```
/// use tokenmill_core::{rng::StreamKey, sample::keep_mask};
/// let stream = StreamKey::new(0, "sample", 0);
/// let kept = keep_mask(&stream, &[1, 2, 3], 1.0, false).unwrap();
/// assert_eq!(kept, vec![true, true, true]);
/// ```
pub fn keep_mask(
    stream: &StreamKey,
    row_keys: &[u64],
    fraction: f64,
    invert: bool,
) -> Result<Vec<bool>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(TokenmillError::config(
            format!("fraction {fraction} is outside [0, 1]"),
            "pass --fraction between 0 and 1",
        ));
    }
    Ok(row_keys
        .iter()
        .map(|&key| stream.row(key).bernoulli(fraction) != invert)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_the_requested_fraction() {
        let stream = StreamKey::new(3, "sample", 0);
        let keys: Vec<u64> = (0..100_000).collect();
        let kept = keep_mask(&stream, &keys, 0.1, false).unwrap();
        let rate = kept.iter().filter(|&&k| k).count() as f64 / keys.len() as f64;
        // Three standard errors of a binomial proportion at n = 1e5.
        assert!((rate - 0.1).abs() < 0.003, "{rate}");
    }

    #[test]
    fn out_of_range_fraction_is_refused() {
        let stream = StreamKey::new(3, "sample", 0);
        assert!(keep_mask(&stream, &[1], 1.5, false).is_err());
        assert!(keep_mask(&stream, &[1], f64::NAN, false).is_err());
    }

    proptest! {
        #[test]
        fn sample_and_its_complement_partition_the_rows(
            seed: u64, fraction in 0.0f64..=1.0, keys in proptest::collection::vec(any::<u64>(), 0..200)
        ) {
            let stream = StreamKey::new(seed, "sample", 0);
            let kept = keep_mask(&stream, &keys, fraction, false).unwrap();
            let rest = keep_mask(&stream, &keys, fraction, true).unwrap();
            for (a, b) in kept.iter().zip(&rest) {
                prop_assert!(a ^ b);
            }
        }
    }
}
