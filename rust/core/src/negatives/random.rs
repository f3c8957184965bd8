//! Random negatives: uniform draws under the shared rules.

use rayon::prelude::*;

use super::{check_rows, gather, Corpus, Mined, MiningOptions, Picker, RowResult, STAGE};
use crate::error::Result;
use crate::rng::StreamKey;

/// Random negatives: documents drawn uniformly, never the row's positive or
/// a copy of it, distinct within a row.
///
/// # Errors
///
/// [`TokenmillError::Config`] for bad options or rows outside the corpus,
/// [`TokenmillError::Data`] for a row whose positive leaves fewer than
/// `num_negatives` distinct other texts in the corpus.
pub fn mine_random(
    corpus: &Corpus,
    rows: &[u64],
    keys: &[u64],
    options: &MiningOptions,
) -> Result<Mined> {
    options.check(corpus.len())?;
    check_rows(corpus, rows, keys, rows.len())?;
    let stream = StreamKey::new(options.seed, STAGE, options.epoch);
    let unbounded = MiningOptions {
        margin: f32::INFINITY,
        ..*options
    };
    let nan = |_| f32::NAN;
    let results: Vec<RowResult> = (0..rows.len())
        .into_par_iter()
        .map(|i| {
            let mut picker = Picker::new(corpus, &unbounded, i, rows[i] as usize, 1.0);
            let mut rng = stream.row(keys[i]);
            picker.top_up(&mut rng, &nan, &[], corpus.documents());
            picker.settle(&mut rng, &nan, &[])?;
            // Every random negative is a draw, not a top-up of a ranking.
            let mut picked = picker.finish(f32::NAN, 0)?;
            picked.topped_up = 0;
            Ok(picked)
        })
        .collect();
    gather(results)
}

#[cfg(test)]
mod tests {
    use super::super::tests::options;
    use super::*;
    use crate::error::TokenmillError;

    #[test]
    fn a_corpus_of_copies_is_a_data_error() {
        let corpus = Corpus::new(vec![1, 1, 1, 2]).unwrap();
        let err = mine_random(&corpus, &[0, 1], &[0, 1], &options(2)).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 0, .. }), "{err}");
    }
}
