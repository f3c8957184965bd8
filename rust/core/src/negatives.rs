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

use std::cell::RefCell;
use std::cmp::Ordering;

use ahash::{AHashMap, AHashSet};
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use arrow_schema::DataType;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::bm25::{Accumulator, Bm25Index};
use crate::error::{Result, TokenmillError};
use crate::rng::{RowRng, StreamKey};
use crate::text::Documents;

/// The random stream family of this stage.
pub const STAGE: &str = "negatives";

/// Queries scored against all documents at once by the embedding miner:
/// a block of `QUERY_CHUNK x DOC_CHUNK` float32 scores (4 MiB) per thread.
pub const QUERY_CHUNK: usize = 256;
pub const DOC_CHUNK: usize = 4096;

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

/// How many documents a top-up walks, from a random start, looking for one
/// within the margin when each costs a dot product; past it, the row takes
/// the lowest-scoring documents instead of scanning on for hours.
pub const SCAN_LIMIT: u32 = 1 << 14;

/// Candidates the embedding miner keeps past `range_max`: sgemm rounds
/// differently from the scalar dot product they are rescored with, so the
/// last few places of its top-k can trade with the next ones.
const RESCORE_SLACK: usize = 8;

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
/// As [`mine_random`], and [`TokenmillError::Config`] when the index and the
/// corpus differ in size.
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

/// Row-major float32 vectors of one dimension, scaled to unit length so a
/// dot product is the cosine similarity.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    values: Vec<f32>,
    dim: usize,
}

impl Vectors {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for a length that is not `rows * dim` or
    /// `dim == 0`; [`TokenmillError::Data`] for a vector with a non-finite
    /// value or of zero length (it has no direction to compare).
    pub fn new(mut values: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || values.len() % dim != 0 {
            return Err(TokenmillError::config(
                format!(
                    "{} values do not make vectors of dimension {dim}",
                    values.len()
                ),
                "pass a [rows, dim] float32 array with dim >= 1",
            ));
        }
        for (row, v) in values.chunks_exact_mut(dim).enumerate() {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !norm.is_finite() || norm == 0.0 {
                return Err(TokenmillError::data(
                    row,
                    format!("the vector has norm {norm}; cosine needs a finite, non-zero vector"),
                    "re-embed this row, or drop it",
                ));
            }
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(Self { values, dim })
    }

    /// Reads a `fixed_size_list<float32>` or `list<float32>` column.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Schema`] for another type; [`TokenmillError::Data`]
    /// for a null vector, a null value, vectors of mixed dimension, or as
    /// [`Vectors::new`].
    pub fn from_arrow(column: &str, array: &dyn Array) -> Result<Self> {
        let schema_error = || {
            TokenmillError::schema(
                column,
                format!(
                    "expected fixed_size_list<float32> or list<float32> vectors, found {}",
                    array.data_type()
                ),
                "cast the embedding column to float32 vectors",
            )
        };
        if let Some(row) = (0..array.len()).find(|&r| array.is_null(r)) {
            return Err(TokenmillError::data(
                row,
                "the vector is null",
                "embed every row, or drop rows without a vector",
            ));
        }
        let (values, offsets): (&dyn Array, Vec<usize>) = match array.data_type() {
            DataType::FixedSizeList(item, size) if item.data_type() == &DataType::Float32 => {
                let list = array.as_fixed_size_list();
                let size = *size as usize;
                let first = list.value_offset(0) as usize;
                let offsets = (0..=list.len()).map(|r| first + r * size).collect();
                (list.values().as_ref(), offsets)
            }
            DataType::List(item) if item.data_type() == &DataType::Float32 => {
                let list = array.as_list::<i32>();
                let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                (list.values().as_ref(), offsets)
            }
            DataType::LargeList(item) if item.data_type() == &DataType::Float32 => {
                let list = array.as_list::<i64>();
                let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                (list.values().as_ref(), offsets)
            }
            _ => return Err(schema_error()),
        };
        let floats = values.as_primitive::<Float32Type>();
        if array.is_empty() {
            return Err(TokenmillError::config(
                format!("column '{column}' holds no vectors"),
                "pass at least one row",
            ));
        }
        let dim = offsets[1] - offsets[0];
        let mut flat = Vec::with_capacity(dim * array.len());
        for (row, w) in offsets.windows(2).enumerate() {
            if w[1] - w[0] != dim {
                return Err(TokenmillError::data(
                    row,
                    format!("the vector has {} values, the first row {dim}", w[1] - w[0]),
                    "give every row a vector of the same dimension",
                ));
            }
            if floats.null_count() > 0 && (w[0]..w[1]).any(|i| floats.is_null(i)) {
                return Err(TokenmillError::data(
                    row,
                    "the vector holds a null value",
                    "re-embed this row",
                ));
            }
            flat.extend_from_slice(&floats.values()[w[0]..w[1]]);
        }
        Self::new(flat, dim)
    }

    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.dim..(r + 1) * self.dim]
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The best `keep` of a stream of (score, doc) candidates, best first by
/// [`ranking`] under `key`. Memory stays at `2 * keep` entries.
struct RunningTop {
    keep: usize,
    key: u64,
    entries: Vec<(f32, u32)>,
    /// Once `keep` entries are held, a candidate must reach this to matter.
    floor: f32,
}

impl RunningTop {
    fn new(keep: usize, key: u64) -> Self {
        Self {
            keep,
            key,
            entries: Vec::with_capacity(2 * keep + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    /// A candidate that only ties the floor may still win on the tie hash,
    /// so it is kept for the next compaction to decide.
    #[inline]
    fn push(&mut self, score: f32, doc: u32) {
        if score >= self.floor || self.entries.len() < self.keep {
            self.entries.push((score, doc));
            if self.entries.len() >= 2 * self.keep.max(1) {
                self.compact();
            }
        }
    }

    fn compact(&mut self) {
        let key = self.key;
        if self.entries.len() > self.keep {
            self.entries
                .select_nth_unstable_by(self.keep.saturating_sub(1), |a, b| ranking(key, *a, *b));
            self.entries.truncate(self.keep);
        }
        if self.keep > 0 && self.entries.len() == self.keep {
            self.floor = self
                .entries
                .iter()
                .map(|e| e.0)
                .fold(f32::INFINITY, f32::min);
        }
    }

    fn finish(mut self) -> Vec<(f32, u32)> {
        self.compact();
        let key = self.key;
        self.entries.sort_unstable_by(|a, b| ranking(key, *a, *b));
        self.entries
    }
}

/// How [`mine_embedding_blocked`] tiles the score matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Most queries per block; fewer when that leaves threads idle.
    pub queries: usize,
    pub documents: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Self {
            queries: QUERY_CHUNK,
            documents: DOC_CHUNK,
        }
    }
}

/// Embedding-hard negatives with the default [`Blocks`]; see
/// [`mine_embedding_blocked`].
///
/// # Errors
///
/// As [`mine_embedding_blocked`].
pub fn mine_embedding(
    documents: &Vectors,
    corpus: &Corpus,
    queries: &Vectors,
    rows: &[u64],
    keys: &[u64],
    options: &MiningOptions,
) -> Result<Mined> {
    mine_embedding_blocked(
        documents,
        corpus,
        queries,
        rows,
        keys,
        options,
        Blocks::default(),
    )
}

/// Embedding-hard negatives: exact top-k by cosine between query and
/// document vectors. Candidates come from sgemm over blocks of queries by
/// documents with a running top-k (and bottom-k) per query, so memory stays
/// bounded whatever the corpus size; the kept candidates are then rescored
/// with a scalar dot product in a fixed order, and the window and margin
/// judge those scores. The output therefore depends neither on the blocks,
/// the threads or the batch, nor on which kernel sgemm picks for the CPU
/// (short of a candidate more than [`RESCORE_SLACK`] places off).
///
/// A row the margin leaves short is topped up at random within the margin,
/// then from its lowest-scoring documents; only when none of those is within
/// the margin does it take them anyway, counted in [`Mined::over_margin`].
///
/// # Errors
///
/// As [`mine_random`], and [`TokenmillError::Config`] for query and
/// document vectors of different dimensions, a document count that is not
/// the corpus's, or empty blocks.
#[allow(clippy::too_many_arguments)]
pub fn mine_embedding_blocked(
    documents: &Vectors,
    corpus: &Corpus,
    queries: &Vectors,
    rows: &[u64],
    keys: &[u64],
    options: &MiningOptions,
    blocks: Blocks,
) -> Result<Mined> {
    options.check(corpus.len())?;
    check_rows(corpus, rows, keys, queries.rows())?;
    if documents.rows() != corpus.len() {
        return Err(TokenmillError::config(
            format!(
                "{} document vectors for a corpus of {}",
                documents.rows(),
                corpus.len()
            ),
            "pass one vector per positive",
        ));
    }
    if documents.dim() != queries.dim() {
        return Err(TokenmillError::config(
            format!(
                "query vectors have dimension {}, document vectors {}",
                queries.dim(),
                documents.dim()
            ),
            "embed queries and documents with the same model",
        ));
    }
    if blocks.queries == 0 || blocks.documents == 0 {
        return Err(TokenmillError::config(
            format!("blocks of {blocks:?}"),
            "use blocks of at least one query and one document",
        ));
    }
    let stream = StreamKey::new(options.seed, STAGE, options.epoch);
    let dim = documents.dim();
    let n = corpus.len();
    // Enough blocks for every thread: a 2048-row batch in 256-query blocks
    // would keep at most 8 busy.
    let per_block = blocks
        .queries
        .min(queries.rows().div_ceil(rayon::current_num_threads()))
        .max(1);
    let doc_block = blocks.documents.min(n);
    let firsts: Vec<usize> = (0..queries.rows()).step_by(per_block).collect();
    let results: Vec<Vec<RowResult>> = firsts
        .into_par_iter()
        .map(|first| {
            let count = per_block.min(queries.rows() - first);
            let block_queries = &queries.values[first * dim..(first + count) * dim];
            let keep = |i: usize| corpus.copies(rows[i] as usize);
            let mut tops: Vec<RunningTop> = (first..first + count)
                .map(|i| RunningTop::new(options.range_max + 1 + keep(i) + RESCORE_SLACK, keys[i]))
                .collect();
            // The lowest scores, by the same order on negated scores.
            let mut bottoms: Vec<RunningTop> = (first..first + count)
                .map(|i| RunningTop::new(2 * options.num_negatives + keep(i), keys[i]))
                .collect();
            let mut block = vec![0f32; count * doc_block];
            for doc_first in (0..n).step_by(doc_block) {
                let docs = doc_block.min(n - doc_first);
                let block_docs = &documents.values[doc_first * dim..(doc_first + docs) * dim];
                // block[q, d] = sum_k queries[q, k] * documents[d, k]
                // SAFETY: the pointers and strides describe `count x dim`,
                // `dim x docs` (the row-major documents read transposed) and
                // `count x docs` matrices inside the slices above.
                unsafe {
                    matrixmultiply::sgemm(
                        count,
                        dim,
                        docs,
                        1.0,
                        block_queries.as_ptr(),
                        dim as isize,
                        1,
                        block_docs.as_ptr(),
                        1,
                        dim as isize,
                        0.0,
                        block.as_mut_ptr(),
                        docs as isize,
                        1,
                    );
                }
                for (q, (top, bottom)) in tops.iter_mut().zip(&mut bottoms).enumerate() {
                    let scores = &block[q * docs..(q + 1) * docs];
                    for (d, &s) in scores.iter().enumerate() {
                        let doc = (doc_first + d) as u32;
                        top.push(s, doc);
                        bottom.push(-s, doc);
                    }
                }
            }
            tops.into_iter()
                .zip(bottoms)
                .enumerate()
                .map(|(q, (top, bottom))| {
                    let i = first + q;
                    let positive = rows[i] as usize;
                    let query = queries.row(i);
                    let score_of = |d: u32| dot(query, documents.row(d as usize));
                    let positive_score = dot(query, documents.row(positive));
                    // Rescored in a fixed order, so the window and the margin
                    // compare numbers rounded the same way as the positive's.
                    let mut ranked: Vec<(f32, u32)> = top
                        .finish()
                        .into_iter()
                        .map(|(_, d)| (score_of(d), d))
                        .collect();
                    ranked.sort_unstable_by(|a, b| ranking(keys[i], *a, *b));
                    let mut lowest: Vec<(f32, u32)> = bottom
                        .finish()
                        .into_iter()
                        .map(|(_, d)| (score_of(d), d))
                        .collect();
                    lowest.sort_unstable_by(|a, b| ranking(keys[i], *b, *a));
                    let lowest: Vec<u32> = lowest.into_iter().map(|(_, d)| d).collect();
                    let mut picker = Picker::new(corpus, options, i, positive, positive_score);
                    picker.take_ranked(ranked.into_iter().map(|(s, d)| (d, s)));
                    let from_ranking = picker.documents.len();
                    let mut rng = stream.row(keys[i]);
                    if !picker.full() {
                        picker.top_up(&mut rng, &score_of, &lowest, SCAN_LIMIT);
                    }
                    if !picker.full() {
                        picker.settle(&mut rng, &score_of, &lowest)?;
                    }
                    picker.finish(positive_score, from_ranking)
                })
                .collect()
        })
        .collect();
    gather(results.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bm25::{words, Bm25Params};
    use proptest::prelude::*;

    fn bag(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        words(text, &mut out);
        out
    }

    fn options(k: usize) -> MiningOptions {
        MiningOptions {
            num_negatives: k,
            ..MiningOptions::default()
        }
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
    fn a_corpus_of_copies_is_a_data_error() {
        let corpus = Corpus::new(vec![1, 1, 1, 2]).unwrap();
        let err = mine_random(&corpus, &[0, 1], &[0, 1], &options(2)).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 0, .. }), "{err}");
    }

    #[test]
    fn vectors_refuse_mixed_dimensions_and_zero_vectors() {
        let list = arrow_array::ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
            Some(vec![Some(1.0), Some(0.0)]),
            Some(vec![Some(1.0)]),
        ]);
        let err = Vectors::from_arrow("v", &list).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 1, .. }), "{err}");
        let err = Vectors::new(vec![1.0, 0.0, 0.0, 0.0], 2).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 1, .. }), "{err}");
    }

    #[test]
    fn running_top_keeps_the_best_with_ties_by_hash() {
        let scores = [0.5f32, 0.9, 0.5, 0.1, 0.9, 0.7, 0.5, 0.5];
        for key in 0..20u64 {
            let mut top = RunningTop::new(4, key);
            for (d, s) in scores.iter().enumerate() {
                top.push(*s, d as u32);
            }
            let got = top.finish();
            // 0.9, 0.9, 0.7, then whichever 0.5 hashes lowest under this key.
            let fives = [0u32, 2, 6, 7];
            let want = *fives.iter().min_by_key(|&&d| tie(key, d)).unwrap();
            assert_eq!(&got[2..], [(0.7, 5), (0.5, want)]);
            let mut nines = [1u32, 4];
            nines.sort_by_key(|&d| tie(key, d));
            assert_eq!([got[0].1, got[1].1], [nines[0], nines[1]]);
        }
        // Ties do not all go to one end of the corpus.
        let firsts: AHashSet<u32> = (0..50u64)
            .map(|key| {
                let mut top = RunningTop::new(1, key);
                (0..8).for_each(|d| top.push(1.0, d));
                top.finish()[0].1
            })
            .collect();
        assert!(firsts.len() > 3);
    }

    #[test]
    fn corpora_past_u32_documents_are_refused_up_front() {
        // The check is on the count alone: no such corpus needs building.
        assert!(u32::try_from(u32::MAX as usize + 1).is_err());
        assert!(Corpus::new(vec![0; 3]).is_ok());
    }

    #[test]
    fn a_margin_nothing_passes_takes_the_lowest_scoring_and_counts_them() {
        // Every document is the query's direction but one, which is
        // nearly so: with margin 0.5 nothing qualifies, and the row takes
        // the lowest-scoring documents rather than failing.
        let n = 40;
        let mut values = Vec::new();
        for d in 0..n {
            values.extend([1.0, d as f32 * 0.01]);
        }
        let docs = Vectors::new(values, 2).unwrap();
        let corpus = Corpus::new((0..n as u64).collect()).unwrap();
        let o = MiningOptions {
            num_negatives: 2,
            range_max: 5,
            margin: 0.5,
            ..MiningOptions::default()
        };
        let query = Vectors::new(vec![1.0, 0.0], 2).unwrap();
        let mined = mine_embedding(&docs, &corpus, &query, &[0], &[3], &o).unwrap();
        assert_eq!(mined.over_margin, [2]);
        assert_eq!(mined.topped_up, [2]);
        // The two farthest from document 0's direction.
        assert_eq!(mined.documents, [39, 38]);
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

    proptest! {
        // Embedding mining equals a brute-force ranking, obeys the window and
        // the margin, and never returns the positive or a copy of it.
        #[test]
        fn embedding_mining_matches_brute_force(
            n in 3usize..60,
            dim in 1usize..6,
            seed: u64,
            margin in 0.5f32..1.5,
            range_min in 0usize..3,
        ) {
            let mut rng = StreamKey::new(seed, "test", 0).row(0);
            let mut values: Vec<f32> = (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
            values[..dim].iter_mut().for_each(|v| *v += 1.0); // never a zero vector
            for r in 1..n { values[r * dim] += 0.01; }
            let docs = Vectors::new(values, dim).unwrap();
            // Doc 1 is a copy of doc 0's text.
            let hashes: Vec<u64> = (0..n as u64).map(|i| if i == 1 { 0 } else { i }).collect();
            let corpus = Corpus::new(hashes.clone()).unwrap();
            let o = MiningOptions { num_negatives: 1, range_min, range_max: range_min + 3, margin, seed, epoch: 0 };
            let rows: Vec<u64> = (0..n as u64).collect();
            // Small document blocks: the running top-k crosses blocks.
            let blocks = Blocks { queries: 5, documents: 7 };
            let Ok(mined) = mine_embedding_blocked(&docs, &corpus, &docs, &rows, &rows, &o, blocks) else {
                // Only when the skipped ranks leave no other text at all.
                prop_assert!(n <= 2 + range_min);
                return Ok(());
            };
            for i in 0..n {
                let doc = mined.documents[i] as usize;
                prop_assert_ne!(hashes[doc], hashes[i]);
                let limit = margin * dot(docs.row(i), docs.row(i));
                prop_assert_eq!(mined.scores[i] > limit, mined.over_margin[i] == 1);
                prop_assert_eq!(mined.scores[i], dot(docs.row(i), docs.row(doc)));
                if mined.topped_up[i] == 0 {
                    let mut ranked: Vec<(f32, u32)> = (0..n)
                        .filter(|&d| hashes[d] != hashes[i])
                        .map(|d| (dot(docs.row(i), docs.row(d)), d as u32))
                        .collect();
                    ranked.sort_by(|a, b| ranking(i as u64, *a, *b));
                    let rank = ranked.iter().position(|r| r.1 as usize == doc).unwrap();
                    prop_assert!(rank >= range_min && rank <= range_min + 3);
                    // The first in the window within the margin.
                    let first = ranked[range_min..].iter().find(|r| r.0 <= limit).unwrap();
                    prop_assert_eq!(first.1 as usize, doc);
                }
            }
        }
    }
}
