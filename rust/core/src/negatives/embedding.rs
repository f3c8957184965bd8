//! Embedding-hard negatives: exact top-k by cosine, blocked through sgemm.

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::Array;
use arrow_schema::DataType;
use rayon::prelude::*;

use super::{check_rows, gather, ranking, Corpus, Mined, MiningOptions, Picker, RowResult, STAGE};
use crate::error::{Result, TokenmillError};
use crate::rng::StreamKey;

/// Queries scored against all documents at once by the embedding miner:
/// a block of `QUERY_CHUNK x DOC_CHUNK` float32 scores (4 MiB) per thread.
pub const QUERY_CHUNK: usize = 256;
pub const DOC_CHUNK: usize = 4096;

/// How many documents a top-up walks, from a random start, looking for one
/// within the margin when each costs a dot product; past it, the row takes
/// the lowest-scoring documents instead of scanning on for hours.
pub const SCAN_LIMIT: u32 = 1 << 14;

/// Candidates the embedding miner keeps past `range_max`: sgemm rounds
/// differently from the scalar dot product they are rescored with, so the
/// last few places of its top-k can trade with the next ones.
const RESCORE_SLACK: usize = 8;

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
/// As [`mine_random`](super::mine_random), and [`TokenmillError::Config`]
/// for query and document vectors of different dimensions, a document
/// count that is not the corpus's, or empty blocks.
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
    use super::super::tie;
    use super::*;
    use ahash::AHashSet;
    use proptest::prelude::*;

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
