//! Negative mining for contrastive pairs: random, BM25-hard and
//! embedding-hard negatives, with false-negative filtering.
//!
//! The corpus is the positives of every pair row; row `i`'s positive is
//! document `i`. For each query the miners rank the corpus, drop every
//! document whose content hash equals the row's positive (the positive
//! itself and its exact copies), and keep candidates whose rank, counted
//! after that drop and starting at 0, lies in `[range_min, range_max]` and
//! whose score is at most `margin * positive_score` (a relative margin, as
//! sentence-transformers' `mine_hard_negatives(relative_margin=1 - margin)`:
//! a candidate that scores nearly as well as the positive is likely an
//! unlabeled positive, a false negative). Candidates identical to an earlier
//! pick are skipped, so a row's negatives are distinct texts.
//!
//! When fewer than `num_negatives` candidates survive, the row is topped up
//! with documents that obey the same rules (not the positive, not a repeat,
//! not ranked above `range_min`, within the margin): random draws first,
//! then the lowest-scoring documents, then a bounded walk; top-ups are
//! counted. If the margin leaves nothing to find, the row takes its
//! lowest-scoring admissible documents anyway, counted as over the margin.
//! Mining fails, naming the row, only when the whole corpus holds too few
//! distinct texts besides the positive.
//!
//! Equal scores rank by a hash of (row key, document), not by index.
//! Random draws come from `StreamKey(seed, "negatives", epoch).row(key)`;
//! every query is mined on its own, so the output does not depend on how
//! queries are batched or how many threads run (tested for every miner).
//!
//! Each strategy lives in its own file (`random`, `bm25`, `embedding`);
//! this one holds the options, the corpus and the rules they share.

use std::cmp::Ordering;

use ahash::{AHashMap, AHashSet};
use arrow_array::Array;
use xxhash_rust::xxh3::xxh3_64;

use crate::columns::Documents;
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

mod bm25;
mod embedding;
mod random;

pub use bm25::mine_bm25;
pub use embedding::{
    mine_embedding, mine_embedding_blocked, Blocks, Vectors, DOC_CHUNK, QUERY_CHUNK, SCAN_LIMIT,
};
pub use random::mine_random;

/// The random stream family of this stage.
pub const STAGE: &str = "negatives";

/// What every miner shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MiningOptions {
    pub num_negatives: usize,
    /// First rank (0 = best) a negative may come from.
    pub range_min: usize,
    /// Last rank a negative may come from, inclusive.
    pub range_max: usize,
    /// Candidates scoring above `margin * positive_score` are dropped.
    pub margin: f32,
    pub seed: u64,
    pub epoch: u64,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self {
            num_negatives: 4,
            range_min: 0,
            range_max: 99,
            margin: 0.95,
            seed: 0,
            epoch: 0,
        }
    }
}

impl MiningOptions {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for no negatives, more than `documents - 1`,
    /// a window `range_min > range_max` or narrower than `num_negatives`
    /// ranks, or a margin that is not a positive number.
    pub fn check(&self, documents: usize) -> Result<()> {
        if self.num_negatives == 0 || self.num_negatives >= documents {
            return Err(TokenmillError::config(
                format!(
                    "{} negatives per row, but the corpus has {documents} document(s)",
                    self.num_negatives
                ),
                format!(
                    "pass --num-negatives between 1 and {} (documents - 1)",
                    documents.saturating_sub(1)
                ),
            ));
        }
        if self.range_min > self.range_max {
            return Err(TokenmillError::config(
                format!(
                    "range_min {} is above range_max {}",
                    self.range_min, self.range_max
                ),
                "pass --range-min <= --range-max",
            ));
        }
        if (self.range_max - self.range_min).saturating_add(1) < self.num_negatives {
            return Err(TokenmillError::config(
                format!(
                    "the rank window [{}, {}] holds fewer than {} negatives",
                    self.range_min, self.range_max, self.num_negatives
                ),
                "widen the window with --range-max, or lower --num-negatives",
            ));
        }
        if !(self.margin.is_finite() && self.margin > 0.0) {
            return Err(TokenmillError::config(
                format!("margin {} is not a positive number", self.margin),
                "pass e.g. --margin 0.95 (drop candidates above 95% of the positive's score)",
            ));
        }
        Ok(())
    }
}

/// Content hashes of the documents, and how often each occurs.
pub struct Corpus {
    hashes: Vec<u64>,
    counts: AHashMap<u64, u32>,
}

impl Corpus {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for more than `u32::MAX` documents: the
    /// miners name documents by `u32`.
    pub fn new(hashes: Vec<u64>) -> Result<Self> {
        if u32::try_from(hashes.len()).is_err() {
            return Err(TokenmillError::config(
                format!(
                    "a corpus of {} documents is more than the {} a miner can index",
                    hashes.len(),
                    u32::MAX
                ),
                "mine negatives within smaller groups of shards",
            ));
        }
        let mut counts = AHashMap::with_capacity(hashes.len());
        for &h in &hashes {
            *counts.entry(h).or_default() += 1;
        }
        Ok(Self { hashes, counts })
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many documents share the content of document `doc`.
    fn copies(&self, doc: usize) -> usize {
        self.counts[&self.hashes[doc]] as usize
    }

    /// The document count as `u32`, which [`Corpus::new`] guarantees.
    fn documents(&self) -> u32 {
        self.hashes.len() as u32
    }
}

/// XXH3-64 of each row's content: the UTF-8 bytes of text, or the
/// little-endian bytes of token ids. Equal content, equal hash.
///
/// # Errors
///
/// [`TokenmillError::Schema`] for a column that is neither text nor tokens.
pub fn content_hashes(column: &str, array: &dyn Array) -> Result<Vec<u64>> {
    Ok(
        match Documents::try_new(column, array, "name a text or token column")? {
            Documents::Tokens { ids, offsets } => (0..offsets.rows())
                .map(|row| {
                    let doc = &ids[offsets.range(row)];
                    let bytes: Vec<u8> = doc.iter().flat_map(|t| t.to_le_bytes()).collect();
                    xxh3_64(&bytes)
                })
                .collect(),
            Documents::Text(texts) => (0..texts.len()).map(|r| xxh3_64(texts.bytes(r))).collect(),
        },
    )
}

/// The negatives of a batch of rows: `num_negatives` per row, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mined {
    pub documents: Vec<u32>,
    /// The miner's score of each negative (NaN for the random miner).
    pub scores: Vec<f32>,
    /// The score of each row's own positive (NaN for the random miner).
    pub positive_scores: Vec<f32>,
    /// Per row, how many negatives are top-ups rather than ranked picks.
    pub topped_up: Vec<u32>,
    /// Per row, how many negatives score above `margin * positive_score`:
    /// taken, lowest-scoring first, only when no document within the margin
    /// was found.
    pub over_margin: Vec<u32>,
}

/// The tie-break between equal scores: a hash of (row key, document), so
/// ties neither favour low document indices (the first shard) nor depend
/// on anything but the row. The multiply and the finalizer are bijections,
/// so two documents never tie again.
#[inline]
fn tie(key: u64, doc: u32) -> u64 {
    let mut z = key ^ u64::from(doc).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Best first: higher score, then the lower tie hash.
#[inline]
fn ranking(key: u64, a: (f32, u32), b: (f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0)
        .then_with(|| tie(key, a.1).cmp(&tie(key, b.1)))
}

/// One row's picks so far and the rules they obey.
struct Picker<'a> {
    corpus: &'a Corpus,
    options: &'a MiningOptions,
    /// The row's index in the batch, for errors.
    row: usize,
    positive_hash: u64,
    limit: f32,
    documents: Vec<u32>,
    scores: Vec<f32>,
    hashes: Vec<u64>,
    /// Documents ranked above `range_min`: too close to the query to trust.
    skipped: AHashSet<u32>,
    over_margin: u32,
}

impl<'a> Picker<'a> {
    /// `positive` is the corpus index of the row's positive, `score` its score.
    fn new(
        corpus: &'a Corpus,
        options: &'a MiningOptions,
        row: usize,
        positive: usize,
        score: f32,
    ) -> Self {
        Self {
            corpus,
            options,
            row,
            positive_hash: corpus.hashes[positive],
            limit: options.margin * score,
            documents: Vec::with_capacity(options.num_negatives),
            scores: Vec::with_capacity(options.num_negatives),
            hashes: Vec::with_capacity(options.num_negatives),
            skipped: AHashSet::new(),
            over_margin: 0,
        }
    }

    fn full(&self) -> bool {
        self.documents.len() == self.options.num_negatives
    }

    /// Every rule but the margin: not the positive or a copy, not a text
    /// already picked, not ranked above `range_min`.
    fn admissible(&self, doc: u32) -> bool {
        let hash = self.corpus.hashes[doc as usize];
        hash != self.positive_hash && !self.hashes.contains(&hash) && !self.skipped.contains(&doc)
    }

    /// NaN scores (the random miner) pass: there is no margin to keep.
    fn within_margin(&self, score: f32) -> bool {
        score.is_nan() || score <= self.limit
    }

    fn take(&mut self, doc: u32, score: f32) {
        if !self.within_margin(score) {
            self.over_margin += 1;
        }
        self.documents.push(doc);
        self.scores.push(score);
        self.hashes.push(self.corpus.hashes[doc as usize]);
    }

    /// Takes `doc` if it obeys every rule, scoring it only then.
    fn offer(&mut self, doc: u32, score_of: &impl Fn(u32) -> f32) {
        if self.admissible(doc) {
            let score = score_of(doc);
            if self.within_margin(score) {
                self.take(doc, score);
            }
        }
    }

    /// Walks ranked candidates (best first) through the window and margin.
    fn take_ranked(&mut self, ranked: impl Iterator<Item = (u32, f32)>) {
        let mut rank = 0;
        for (doc, score) in ranked {
            if self.full() || rank > self.options.range_max {
                break;
            }
            if self.corpus.hashes[doc as usize] == self.positive_hash {
                continue;
            }
            if rank < self.options.range_min {
                self.skipped.insert(doc);
            } else if self.admissible(doc) && self.within_margin(score) {
                self.take(doc, score);
            }
            rank += 1;
        }
    }

    /// Fills the row with documents within the margin: a few random draws,
    /// then `lowest` (documents in increasing score, the likeliest to pass;
    /// once one fails, every document not yet tried fails too), then a
    /// walk of at most `scan_limit` documents from a random start.
    fn top_up(
        &mut self,
        rng: &mut RowRng,
        score_of: &impl Fn(u32) -> f32,
        lowest: &[u32],
        scan_limit: u32,
    ) {
        let n = self.corpus.documents();
        let mut draws = 0;
        while !self.full() && draws < 16 * self.options.num_negatives {
            draws += 1;
            self.offer(rng.below(n), score_of);
        }
        let mut exhausted = false;
        for &doc in lowest {
            if self.full() {
                break;
            }
            if self.admissible(doc) {
                let score = score_of(doc);
                if !self.within_margin(score) {
                    exhausted = true;
                    break;
                }
                self.take(doc, score);
            }
        }
        if !self.full() && !exhausted {
            let start = rng.below(n);
            for step in 0..n.min(scan_limit) {
                self.offer((start + step) % n, score_of);
                if self.full() {
                    break;
                }
            }
        }
    }

    /// Fills what the margin left short: the documents of `lowest` first
    /// (the least likely to be unlabeled positives), then any admissible
    /// document from a random start. Counted in `over_margin`.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Data`] when the whole corpus holds too few
    /// admissible documents: too few distinct texts besides the positive.
    fn settle(
        &mut self,
        rng: &mut RowRng,
        score_of: &impl Fn(u32) -> f32,
        lowest: &[u32],
    ) -> Result<()> {
        let n = self.corpus.documents();
        for &doc in lowest {
            if self.full() {
                break;
            }
            if self.admissible(doc) {
                self.take(doc, score_of(doc));
            }
        }
        if !self.full() {
            // Only admissibility is checked on the way: scores are computed
            // for the few documents taken.
            let start = rng.below(n);
            for step in 0..n {
                let doc = (start + step) % n;
                if self.admissible(doc) {
                    self.take(doc, score_of(doc));
                    if self.full() {
                        break;
                    }
                }
            }
        }
        if !self.full() {
            return Err(TokenmillError::data(
                self.row,
                format!(
                    "only {} document(s) of the whole corpus differ from this row's positive, \
                     from each other and from the ranks above range_min; {} are asked for",
                    self.documents.len(),
                    self.options.num_negatives
                ),
                "lower --num-negatives or --range-min, or deduplicate the corpus",
            ));
        }
        Ok(())
    }

    fn finish(self, positive: f32, ranked: usize) -> RowResult {
        let topped = (self.documents.len() - ranked) as u32;
        Ok(Picked {
            documents: self.documents,
            scores: self.scores,
            positive,
            topped_up: topped,
            over_margin: self.over_margin,
        })
    }
}

/// Checks one row index per query and returns the rows as corpus indices.
fn check_rows(corpus: &Corpus, rows: &[u64], keys: &[u64], queries: usize) -> Result<()> {
    if rows.len() != queries || keys.len() != queries {
        return Err(TokenmillError::config(
            format!(
                "{queries} queries, {} rows and {} row keys",
                rows.len(),
                keys.len()
            ),
            "pass one row index and one row key per query",
        ));
    }
    if let Some(bad) = rows.iter().position(|&r| r >= corpus.len() as u64) {
        return Err(TokenmillError::config(
            format!(
                "row {} is outside the corpus of {} documents",
                rows[bad],
                corpus.len()
            ),
            "pass each query's row in the corpus the miner was built on",
        ));
    }
    Ok(())
}

/// One row's negatives, their scores, the positive's score and the counts.
struct Picked {
    documents: Vec<u32>,
    scores: Vec<f32>,
    positive: f32,
    topped_up: u32,
    over_margin: u32,
}

type RowResult = Result<Picked>;

/// Collects per-row results in row order.
fn gather(results: impl IntoIterator<Item = RowResult>) -> Result<Mined> {
    let mut mined = Mined::default();
    for result in results {
        let picked = result?;
        mined.documents.extend(picked.documents);
        mined.scores.extend(picked.scores);
        mined.positive_scores.push(picked.positive);
        mined.topped_up.push(picked.topped_up);
        mined.over_margin.push(picked.over_margin);
    }
    Ok(mined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::StreamKey;

    pub(super) fn options(k: usize) -> MiningOptions {
        MiningOptions {
            num_negatives: k,
            ..MiningOptions::default()
        }
    }

    #[test]
    fn bad_options_are_config_errors() {
        let bad = [
            options(0),
            options(5),
            MiningOptions {
                range_min: 5,
                range_max: 2,
                ..options(1)
            },
            MiningOptions {
                range_max: 1,
                ..options(3)
            },
            MiningOptions {
                margin: 0.0,
                ..options(1)
            },
            MiningOptions {
                margin: f32::NAN,
                ..options(1)
            },
        ];
        for o in bad {
            assert!(
                matches!(o.check(5), Err(TokenmillError::Config { .. })),
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_window_up_to_usize_max_holds_every_rank() {
        // range_max - range_min + 1 overflowed: a panic in debug builds, and
        // in release a window of 0 ranks, refused with the wrong reason.
        let wide = MiningOptions {
            range_max: usize::MAX,
            ..options(2)
        };
        assert!(wide.check(5).is_ok());
    }

    #[test]
    fn corpora_past_u32_documents_are_refused_up_front() {
        // The check is on the count alone: no such corpus needs building.
        assert!(u32::try_from(u32::MAX as usize + 1).is_err());
        assert!(Corpus::new(vec![0; 3]).is_ok());
    }

    #[test]
    fn every_miner_is_the_same_for_any_batch_and_thread_count() {
        let n = 90;
        let mut rng = StreamKey::new(3, "test", 0).row(0);
        let values: Vec<f32> = (0..n * 4).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let docs = Vectors::new(values.clone(), 4).unwrap();
        let corpus = Corpus::new((0..n as u64).map(|d| d % 80).collect()).unwrap();
        let rows: Vec<u64> = (0..n as u64).collect();
        let keys: Vec<u64> = rows.iter().map(|r| r ^ 0xABCD).collect();
        let o = MiningOptions {
            num_negatives: 3,
            range_min: 1,
            range_max: 10,
            margin: 0.9,
            seed: 4,
            epoch: 1,
        };
        let whole = mine_embedding(&docs, &corpus, &docs, &rows, &keys, &o).unwrap();
        let random = mine_random(&corpus, &rows, &keys, &o).unwrap();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (queries, documents) in [(1, 7), (5, 4096), (256, 13)] {
                let blocks = Blocks { queries, documents };
                let mut embedding = Mined::default();
                let mut random_parts = Mined::default();
                for part in [0..37, 37..n] {
                    let q: Vec<f32> = values[part.start * 4..part.end * 4].to_vec();
                    let q = Vectors::new(q, 4).unwrap();
                    let (r, k) = (&rows[part.clone()], &keys[part]);
                    let e = pool
                        .install(|| mine_embedding_blocked(&docs, &corpus, &q, r, k, &o, blocks))
                        .unwrap();
                    let x = pool.install(|| mine_random(&corpus, r, k, &o)).unwrap();
                    for (all, one) in [(&mut embedding, e), (&mut random_parts, x)] {
                        all.documents.extend(one.documents);
                        all.scores.extend(one.scores);
                        all.positive_scores.extend(one.positive_scores);
                        all.topped_up.extend(one.topped_up);
                        all.over_margin.extend(one.over_margin);
                    }
                }
                assert_eq!(embedding, whole, "{threads} threads, {blocks:?}");
                assert_eq!(random_parts.documents, random.documents);
            }
        }
    }
}
