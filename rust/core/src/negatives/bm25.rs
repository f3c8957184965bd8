//! BM25-hard negatives: the corpus ranked by BM25 against each query.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{check_rows, gather, ranking, Corpus, Mined, MiningOptions, Picker, RowResult, STAGE};
use crate::bm25::{Accumulator, Bm25Index};
use crate::error::{Result, TokenmillError};
use crate::rng::StreamKey;

thread_local! {
    /// Each mining thread's BM25 scratch, kept between batches: it holds a
    /// score and a stamp per document (8 bytes), allocated once per thread
    /// instead of once per rayon split.
    static SCRATCH: RefCell<Accumulator> = RefCell::new(Accumulator::default());
}

/// BM25-hard negatives from `index`, built over the corpus's documents in
/// corpus order; `queries` are term bags as [`crate::bm25::bags`] makes.
///
/// Only documents sharing a term with the query are ranked: one that shares
/// none scores 0 and is no harder than a random pick, so the top-up covers
/// it. Equal scores rank by a hash of (row key, document).
///
/// # Errors
///
/// As [`mine_random`](super::mine_random), and [`TokenmillError::Config`]
/// when the index and the corpus differ in size.
pub fn mine_bm25(
    index: &Bm25Index,
    corpus: &Corpus,
    queries: &[Vec<u64>],
    rows: &[u64],
    keys: &[u64],
    options: &MiningOptions,
) -> Result<Mined> {
    options.check(corpus.len())?;
    check_rows(corpus, rows, keys, queries.len())?;
    if index.documents() != corpus.len() {
        return Err(TokenmillError::config(
            format!(
                "the index holds {} documents, the corpus {}",
                index.documents(),
                corpus.len()
            ),
            "build the index over the corpus's positives",
        ));
    }
    let stream = StreamKey::new(options.seed, STAGE, options.epoch);
    let results: Vec<RowResult> = (0..queries.len())
        .into_par_iter()
        .map(|i| {
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                mine_bm25_row(
                    index,
                    corpus,
                    &queries[i],
                    rows[i] as usize,
                    keys[i],
                    i,
                    options,
                    &stream,
                    scratch,
                )
            })
        })
        .collect();
    gather(results)
}

#[allow(clippy::too_many_arguments)]
fn mine_bm25_row(
    index: &Bm25Index,
    corpus: &Corpus,
    query: &[u64],
    positive: usize,
    key: u64,
    row: usize,
    options: &MiningOptions,
    stream: &StreamKey,
    scratch: &mut Accumulator,
) -> RowResult {
    index.accumulate_sparse(query, scratch);
    let positive_score = scratch.score(positive as u32);
    let (touched, score) = scratch.touched_and_scores();
    let better = |a: &u32, b: &u32| ranking(key, (score(*a), *a), (score(*b), *b));
    let wanted = (options.range_max + 1 + corpus.copies(positive)).min(touched.len());
    if wanted > 0 && wanted < touched.len() {
        touched.select_nth_unstable_by(wanted - 1, better);
    }
    let ranked = &mut touched[..wanted];
    ranked.sort_unstable_by(better);
    let mut picker = Picker::new(corpus, options, row, positive, positive_score);
    picker.take_ranked(ranked.iter().map(|&d| (d, score(d))));
    let from_ranking = picker.documents.len();
    let mut rng = stream.row(key);
    if !picker.full() {
        // Scores are lookups here: the walk may cover the whole corpus.
        picker.top_up(&mut rng, &score, &[], corpus.documents());
    }
    if !picker.full() {
        // Every document outside the margin was reached by the query: the
        // lowest-scoring of them are the safest picks.
        let worst = |a: &u32, b: &u32| better(b, a);
        let lowest = (options.num_negatives + corpus.copies(positive) + options.range_min)
            .min(touched.len());
        if lowest > 0 && lowest < touched.len() {
            touched.select_nth_unstable_by(lowest - 1, worst);
        }
        let lowest = &mut touched[..lowest];
        lowest.sort_unstable_by(worst);
        picker.settle(&mut rng, &score, lowest)?;
    }
    picker.finish(positive_score, from_ranking)
}

#[cfg(test)]
mod tests {
    use super::super::tests::options;
    use super::*;
    use crate::bm25::{words, Bm25Params};
    use xxhash_rust::xxh3::xxh3_64;

    fn bag(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        words(text, &mut out);
        out
    }

    #[test]
    fn bm25_mining_on_a_small_case() {
        // Row 0's positive is doc 0. Ranked for "apple banana" after dropping
        // doc 0 and its copy doc 3: doc 1 (both words), doc 2 (banana), doc 4
        // (nothing in common, so never ranked).
        let docs = [
            "apple banana cherry",
            "apple banana",
            "banana kiwi",
            "apple banana cherry",
            "plum",
        ];
        let hashes: Vec<u64> = docs.iter().map(|d| xxh3_64(d.as_bytes())).collect();
        let corpus = Corpus::new(hashes).unwrap();
        let bags: Vec<Vec<u64>> = docs.iter().map(|d| bag(d)).collect();
        let index = Bm25Index::build(&bags, Bm25Params::default()).unwrap();
        let query = vec![bag("apple banana")];
        let margin_off = MiningOptions {
            margin: 100.0,
            ..options(2)
        };
        let mined = mine_bm25(&index, &corpus, &query, &[0], &[7], &margin_off).unwrap();
        assert_eq!(mined.documents, [1, 2]);
        assert_eq!(mined.topped_up, [0]);
        assert_eq!(mined.scores[0], index.score(&query[0], 1));
        assert_eq!(mined.positive_scores[0], index.score(&query[0], 0));
        // Doc 1 scores above the positive (it is shorter): the margin drops it,
        // and a random top-up that is not doc 0, 3 or 1 takes its place.
        let mined = mine_bm25(&index, &corpus, &query, &[0], &[7], &options(2)).unwrap();
        assert_eq!(mined.documents[0], 2);
        assert_eq!(mined.documents[1], 4);
        assert_eq!(mined.topped_up, [1]);
        // range_min 1 skips doc 1 and never lets it back in through the top-up.
        let window = MiningOptions {
            range_min: 1,
            margin: 100.0,
            ..options(2)
        };
        let mined = mine_bm25(&index, &corpus, &query, &[0], &[7], &window).unwrap();
        assert_eq!(mined.documents, [2, 4]);
    }

    #[test]
    fn bm25_negatives_are_the_hardest_eligible_in_rank_order() {
        let mut rng = StreamKey::new(1, "test", 0).row(0);
        let n = 120;
        let bags: Vec<Vec<u64>> = (0..n)
            .map(|d| {
                let len = 3 + rng.below(8) as usize;
                let mut bag: Vec<u64> = (0..len).map(|_| u64::from(rng.below(25))).collect();
                if d % 17 == 0 {
                    bag = vec![1, 2, 3]; // copies of one text
                }
                bag
            })
            .collect();
        let hashes: Vec<u64> = bags
            .iter()
            .map(|b| xxh3_64(&b.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()))
            .collect();
        let corpus = Corpus::new(hashes.clone()).unwrap();
        let index = Bm25Index::build(&bags, Bm25Params::default()).unwrap();
        let queries: Vec<Vec<u64>> = bags.iter().map(|b| b[..2].to_vec()).collect();
        let rows: Vec<u64> = (0..n as u64).collect();
        let keys: Vec<u64> = rows.iter().map(|r| r * 7 + 1).collect();
        let o = MiningOptions {
            num_negatives: 3,
            range_min: 1,
            range_max: 40,
            margin: 0.9,
            seed: 2,
            epoch: 0,
        };
        let mined = mine_bm25(&index, &corpus, &queries, &rows, &keys, &o).unwrap();
        let mut checked = 0;
        for i in 0..n {
            let got = &mined.documents[3 * i..3 * i + 3];
            let positive = index.score(&queries[i], i as u32);
            let mut ranked: Vec<(f32, u32)> = (0..n as u32)
                .map(|d| (index.score(&queries[i], d), d))
                .filter(|&(s, d)| s > 0.0 && hashes[d as usize] != hashes[i])
                .collect();
            ranked.sort_by(|a, b| ranking(keys[i], *a, *b));
            let mut want = Vec::new();
            let mut seen = Vec::new();
            for &(s, d) in ranked.iter().take(41).skip(1) {
                let h = hashes[d as usize];
                if s <= 0.9 * positive && !seen.contains(&h) && want.len() < 3 {
                    want.push(d);
                    seen.push(h);
                }
            }
            let ranked_picks = 3 - mined.topped_up[i] as usize;
            assert_eq!(&got[..ranked_picks], &want[..ranked_picks], "row {i}");
            if mined.topped_up[i] == 0 {
                checked += 1;
            }
        }
        assert!(
            checked > n / 2,
            "only {checked} rows came fully from the ranking"
        );
    }
}
