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
//! with random documents that obey the same rules (not the positive, not a
//! repeat, not ranked above `range_min`, within the margin), and the count
//! of top-ups is reported. Only when no document of the whole corpus
//! qualifies does mining fail, naming the row.
//!
//! Random draws come from `StreamKey(seed, "negatives", epoch).row(key)`;
//! every query is mined on its own, so the output does not depend on how
//! queries are batched or how many threads run.

use ahash::AHashMap;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use arrow_schema::DataType;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::bm25::Bm25Index;
use crate::error::{Result, TokenmillError};
use crate::rng::{RowRng, StreamKey};
use crate::text::TextColumn;
use crate::tokenize::token_lists;

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
        if self.range_max - self.range_min + 1 < self.num_negatives {
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
    pub fn new(hashes: Vec<u64>) -> Self {
        let mut counts = AHashMap::with_capacity(hashes.len());
        for &h in &hashes {
            *counts.entry(h).or_default() += 1;
        }
        Self { hashes, counts }
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
}

/// XXH3-64 of each row's content: the UTF-8 bytes of text, or the
/// little-endian bytes of token ids. Equal content, equal hash.
///
/// # Errors
///
/// [`TokenmillError::Schema`] for a column that is neither text nor tokens.
pub fn content_hashes(column: &str, array: &dyn Array) -> Result<Vec<u64>> {
    match token_lists(column, array) {
        Ok((ids, offsets)) => Ok(offsets
            .windows(2)
            .map(|w| {
                let doc = &ids[w[0] as usize..w[1] as usize];
                let bytes: Vec<u8> = doc.iter().flat_map(|t| t.to_le_bytes()).collect();
                xxh3_64(&bytes)
            })
            .collect()),
        Err(TokenmillError::Schema { .. }) => {
            let texts = TextColumn::try_new(column, array).map_err(|_| {
                TokenmillError::schema(
                    column,
                    format!(
                        "expected text or list<uint32> token ids, found {}",
                        array.data_type()
                    ),
                    "name a text or token column",
                )
            })?;
            Ok((0..texts.len()).map(|r| xxh3_64(texts.bytes(r))).collect())
        }
        Err(other) => Err(other),
    }
}

/// The negatives of a batch of rows: `num_negatives` per row, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mined {
    pub documents: Vec<u32>,
    /// The miner's score of each negative (NaN for the random miner).
    pub scores: Vec<f32>,
    /// The score of each row's own positive (NaN for the random miner).
    pub positive_scores: Vec<f32>,
    /// Per row, how many negatives are random top-ups.
    pub topped_up: Vec<u32>,
}

/// One row's picks so far and the rules they obey.
struct Picker<'a> {
    corpus: &'a Corpus,
    options: &'a MiningOptions,
    row: usize,
    positive_hash: u64,
    limit: f32,
    documents: Vec<u32>,
    scores: Vec<f32>,
    hashes: Vec<u64>,
    /// Documents ranked above `range_min`: too close to the query to trust.
    skipped: Vec<u32>,
}

impl<'a> Picker<'a> {
    fn new(corpus: &'a Corpus, options: &'a MiningOptions, row: usize, positive: f32) -> Self {
        Self {
            corpus,
            options,
            row,
            positive_hash: corpus.hashes[row],
            limit: options.margin * positive,
            documents: Vec::with_capacity(options.num_negatives),
            scores: Vec::with_capacity(options.num_negatives),
            hashes: Vec::with_capacity(options.num_negatives),
            skipped: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.documents.len() == self.options.num_negatives
    }

    /// Takes `doc` if it obeys every rule; `false` if it does not.
    fn offer(&mut self, doc: u32, score: f32) -> bool {
        let hash = self.corpus.hashes[doc as usize];
        // NaN scores (the random miner) pass: there is no margin to keep.
        if hash == self.positive_hash || self.hashes.contains(&hash) || score > self.limit {
            return false;
        }
        self.documents.push(doc);
        self.scores.push(score);
        self.hashes.push(hash);
        true
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
                self.skipped.push(doc);
            } else {
                self.offer(doc, score);
            }
            rank += 1;
        }
    }

    /// Fills the row with random documents under the same rules: a few
    /// rejection draws, then a scan of the whole corpus from a random start,
    /// which finds a document whenever one qualifies.
    fn top_up(&mut self, rng: &mut RowRng, score_of: impl Fn(u32) -> f32) -> Result<u32> {
        let n = u32::try_from(self.corpus.len()).expect("corpora hold at most u32::MAX documents");
        let before = self.documents.len();
        let mut draws = 0;
        while !self.full() && draws < 16 * self.options.num_negatives {
            draws += 1;
            let doc = rng.below(n);
            if !self.skipped.contains(&doc) {
                self.offer(doc, score_of(doc));
            }
        }
        if !self.full() {
            let start = rng.below(n);
            for step in 0..n {
                let doc = (start + step) % n;
                if !self.skipped.contains(&doc) && !self.documents.contains(&doc) {
                    self.offer(doc, score_of(doc));
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
                    "only {} document(s) of the corpus differ from this row's positive and pass \
                     the margin and window, {} are asked for",
                    self.documents.len(),
                    self.options.num_negatives
                ),
                "lower --num-negatives, raise --margin, or deduplicate the corpus",
            ));
        }
        Ok((self.documents.len() - before) as u32)
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

/// One row's negatives, their scores, the positive's score and the top-ups.
type RowResult = Result<(Vec<u32>, Vec<f32>, f32, u32)>;

/// Collects per-row results in row order.
fn gather(results: Vec<RowResult>) -> Result<Mined> {
    let mut mined = Mined::default();
    for result in results {
        let (documents, scores, positive, topped) = result?;
        mined.documents.extend(documents);
        mined.scores.extend(scores);
        mined.positive_scores.push(positive);
        mined.topped_up.push(topped);
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
    let results = (0..rows.len())
        .into_par_iter()
        .map(|i| {
            let mut picker = Picker::new(corpus, &unbounded, rows[i] as usize, 1.0);
            picker.row = i;
            picker.limit = f32::INFINITY;
            let mut rng = stream.row(keys[i]);
            picker.top_up(&mut rng, |_| f32::NAN)?;
            Ok((picker.documents, picker.scores, f32::NAN, 0))
        })
        .collect();
    gather(results)
}

/// BM25-hard negatives from `index`, built over the corpus's documents in
/// corpus order; `queries` are term bags as [`crate::bm25::bags`] makes.
///
/// Only documents sharing a term with the query are ranked: one that shares
/// none scores 0 and is no harder than a random pick, so the top-up covers it.
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
    let n = corpus.len();
    let results = (0..queries.len())
        .into_par_iter()
        .map_init(
            || (vec![0f32; n], Vec::new()),
            |(scores, touched), i| {
                let row = rows[i] as usize;
                index.accumulate_touched(&queries[i], scores, touched);
                let positive = scores[row];
                let wanted = (options.range_max + 1 + corpus.copies(row)).min(touched.len());
                let better = |a: &u32, b: &u32| {
                    scores[*b as usize]
                        .total_cmp(&scores[*a as usize])
                        .then(a.cmp(b))
                };
                if wanted > 0 && wanted < touched.len() {
                    touched.select_nth_unstable_by(wanted - 1, better);
                }
                let ranked = &mut touched[..wanted];
                ranked.sort_unstable_by(better);
                let mut picker = Picker::new(corpus, options, row, positive);
                picker.take_ranked(ranked.iter().map(|&d| (d, scores[d as usize])));
                picker.row = i;
                let mut rng = stream.row(keys[i]);
                let topped = picker.top_up(&mut rng, |d| scores[d as usize]);
                for &d in touched.iter() {
                    scores[d as usize] = 0.0;
                }
                touched.clear();
                let topped = topped?;
                Ok((picker.documents, picker.scores, positive, topped))
            },
        )
        .collect();
    gather(results)
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

/// The best `keep` of a stream of (score, doc) candidates, best first; equal
/// scores by lower document. Memory stays at `2 * keep` entries.
struct RunningTop {
    keep: usize,
    entries: Vec<(f32, u32)>,
    /// Once `keep` entries are held, a candidate must beat this to matter.
    floor: f32,
}

impl RunningTop {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            entries: Vec::with_capacity(2 * keep + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    fn order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
    }

    /// Candidates arrive in increasing document order, so one that only
    /// ties the floor loses to the entry already there.
    #[inline]
    fn push(&mut self, score: f32, doc: u32) {
        if score > self.floor || self.entries.len() < self.keep {
            self.entries.push((score, doc));
            if self.entries.len() >= 2 * self.keep.max(1) {
                self.compact();
            }
        }
    }

    fn compact(&mut self) {
        if self.entries.len() > self.keep {
            self.entries
                .select_nth_unstable_by(self.keep.saturating_sub(1), Self::order);
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
        self.entries.sort_unstable_by(Self::order);
        self.entries
    }
}

/// Embedding-hard negatives: exact top-k by cosine between query and
/// document vectors, computed in blocks of [`QUERY_CHUNK`] queries by
/// [`DOC_CHUNK`] documents with a running top-k per query, so memory stays
/// bounded whatever the corpus size. Query blocks run in parallel; each
/// query's scores come from the same arithmetic whatever its block.
///
/// # Errors
///
/// As [`mine_random`], and [`TokenmillError::Config`] for query and
/// document vectors of different dimensions or a document count that is
/// not the corpus's.
pub fn mine_embedding(
    documents: &Vectors,
    corpus: &Corpus,
    queries: &Vectors,
    rows: &[u64],
    keys: &[u64],
    options: &MiningOptions,
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
    let stream = StreamKey::new(options.seed, STAGE, options.epoch);
    let dim = documents.dim();
    let n = corpus.len();
    let chunks: Vec<usize> = (0..queries.rows()).step_by(QUERY_CHUNK).collect();
    let results: Vec<Vec<RowResult>> = chunks
        .into_par_iter()
        .map(|first| {
            let count = QUERY_CHUNK.min(queries.rows() - first);
            let block_queries = &queries.values[first * dim..(first + count) * dim];
            let mut tops: Vec<RunningTop> = (first..first + count)
                .map(|i| RunningTop::new(options.range_max + 1 + corpus.copies(rows[i] as usize)))
                .collect();
            let mut block = vec![0f32; QUERY_CHUNK * DOC_CHUNK];
            for doc_first in (0..n).step_by(DOC_CHUNK) {
                let docs = DOC_CHUNK.min(n - doc_first);
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
                for (q, top) in tops.iter_mut().enumerate() {
                    let scores = &block[q * docs..(q + 1) * docs];
                    for (d, &s) in scores.iter().enumerate() {
                        top.push(s, (doc_first + d) as u32);
                    }
                }
            }
            tops.into_iter()
                .enumerate()
                .map(|(q, top)| {
                    let i = first + q;
                    let row = rows[i] as usize;
                    let query = queries.row(i);
                    let positive = dot(query, documents.row(row));
                    let mut picker = Picker::new(corpus, options, row, positive);
                    picker.take_ranked(top.finish().into_iter().map(|(s, d)| (d, s)));
                    picker.row = i;
                    let mut rng = stream.row(keys[i]);
                    let topped =
                        picker.top_up(&mut rng, |d| dot(query, documents.row(d as usize)))?;
                    Ok((picker.documents, picker.scores, positive, topped))
                })
                .collect()
        })
        .collect();
    gather(results.into_iter().flatten().collect())
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
        let corpus = Corpus::new(hashes);
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
    fn a_corpus_of_copies_is_a_data_error() {
        let corpus = Corpus::new(vec![1, 1, 1, 2]);
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
    fn running_top_keeps_the_best_with_ties_by_index() {
        let mut top = RunningTop::new(3);
        for (d, s) in [0.5f32, 0.9, 0.5, 0.1, 0.9, 0.7, 0.5].iter().enumerate() {
            top.push(*s, d as u32);
        }
        assert_eq!(top.finish(), [(0.9, 1), (0.9, 4), (0.7, 5)]);
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
            let corpus = Corpus::new(hashes.clone());
            let o = MiningOptions { num_negatives: 1, range_min, range_max: range_min + 3, margin, seed, epoch: 0 };
            let rows: Vec<u64> = (0..n as u64).collect();
            let Ok(mined) = mine_embedding(&docs, &corpus, &docs, &rows, &rows, &o) else {
                return Ok(()); // a row with no qualifying document anywhere
            };
            for i in 0..n {
                let doc = mined.documents[i] as usize;
                prop_assert_ne!(hashes[doc], hashes[i]);
                let limit = margin * dot(docs.row(i), docs.row(i));
                prop_assert!(mined.scores[i] <= limit);
                if mined.topped_up[i] == 0 {
                    let mut ranked: Vec<(f32, usize)> = (0..n)
                        .filter(|&d| hashes[d] != hashes[i])
                        .map(|d| (dot(docs.row(i), docs.row(d)), d))
                        .collect();
                    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    let rank = ranked.iter().position(|r| r.1 == doc).unwrap();
                    prop_assert!(rank >= range_min && rank <= range_min + 3);
                    // The first in the window within the margin.
                    let first = ranked[range_min..].iter().find(|r| r.0 <= limit).unwrap();
                    prop_assert_eq!(first.1, doc);
                }
            }
        }
    }
}
