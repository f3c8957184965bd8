//! Okapi BM25 retrieval over an in-memory inverted index.
//!
//! Documents are bags of term ids: token ids from a token column, or words
//! from [`words`] (lowercased runs of two or more word characters, as
//! scikit-learn's and bm25s' default pattern `\b\w\w+\b` finds them). Scores
//! use Lucene's BM25 (the variant bm25s and Elasticsearch use):
//!
//! `idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))`,
//! `score(q, d) = sum over t in q of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))`,
//!
//! which ranks as Robertson's original (it drops the constant `k1 + 1`).

use ahash::AHashMap;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Result, TokenmillError};

/// BM25's two knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalization, from 0 (none) to 1 (full).
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self { k1: 1.5, b: 0.75 }
    }
}

/// The lowercased words of `text`: maximal runs of alphanumeric characters
/// or `_`, at least two characters long.
pub fn words(text: &str, out: &mut Vec<u64>) {
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if word.chars().nth(1).is_some() {
            out.push(xxh3_64(word.as_bytes()));
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            flush(&mut word, out);
        }
    }
    flush(&mut word, out);
}

/// An inverted index: for each term, the documents holding it and how often.
pub struct Bm25Index {
    params: Bm25Params,
    terms: AHashMap<u64, u32>,
    /// Postings of term `t`: `postings[starts[t]..starts[t + 1]]`, by document.
    starts: Vec<usize>,
    postings: Vec<(u32, u32)>,
    idf: Vec<f32>,
    /// `k1 * (1 - b + b * |d| / avgdl)` per document: the length part of the score.
    length_norm: Vec<f32>,
}

/// The best `k` matches of one query: document indices and their scores,
/// best first, ties broken by the lower document index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hits {
    pub documents: Vec<u32>,
    pub scores: Vec<f32>,
}

impl Bm25Index {
    /// Indexes documents given as lists of term keys (any u64 per term).
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for `k1` not a finite number >= 0, `b`
    /// outside [0, 1], an empty corpus, or more than `u32::MAX` documents.
    pub fn build(documents: &[Vec<u64>], params: Bm25Params) -> Result<Self> {
        let k1_ok = params.k1.is_finite() && params.k1 >= 0.0;
        if !(k1_ok && (0.0..=1.0).contains(&params.b)) {
            return Err(TokenmillError::config(
                format!(
                    "k1 {} and b {} are outside finite k1 >= 0, 0 <= b <= 1",
                    params.k1, params.b
                ),
                "use the defaults, --k1 1.5 --b 0.75",
            ));
        }
        if documents.is_empty() || documents.len() > u32::MAX as usize {
            return Err(TokenmillError::config(
                format!("cannot index {} documents", documents.len()),
                "index between 1 and 4 billion documents",
            ));
        }
        let mut terms: AHashMap<u64, u32> = AHashMap::new();
        let mut counts: Vec<(u32, u32, u32)> = Vec::new(); // (term, doc, tf)
        let mut local: AHashMap<u32, u32> = AHashMap::new();
        for (doc, keys) in documents.iter().enumerate() {
            local.clear();
            for key in keys {
                let next = terms.len() as u32;
                let term = *terms.entry(*key).or_insert(next);
                *local.entry(term).or_default() += 1;
            }
            counts.extend(local.iter().map(|(&t, &tf)| (t, doc as u32, tf)));
        }
        counts.par_sort_unstable();
        let mut starts = vec![0usize; terms.len() + 1];
        for &(term, _, _) in &counts {
            starts[term as usize + 1] += 1;
        }
        for t in 0..terms.len() {
            starts[t + 1] += starts[t];
        }
        let postings: Vec<(u32, u32)> = counts.iter().map(|&(_, d, tf)| (d, tf)).collect();
        let idf = (0..terms.len())
            .map(|t| idf(starts[t + 1] - starts[t], documents.len()))
            .collect();
        let n = documents.len() as f32;
        let lengths: Vec<f32> = documents.iter().map(|d| d.len() as f32).collect();
        let average = (lengths.iter().sum::<f32>() / n).max(f32::MIN_POSITIVE);
        let length_norm = lengths
            .iter()
            .map(|&len| params.k1 * (1.0 - params.b + params.b * len / average))
            .collect();
        Ok(Self {
            params,
            terms,
            starts,
            postings,
            idf,
            length_norm,
        })
    }

    pub fn documents(&self) -> usize {
        self.length_norm.len()
    }

    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// Adds each query term's contribution into `scores` (one slot per document).
    fn accumulate(&self, query: &[u64], scores: &mut [f32]) {
        for key in query {
            let Some(&term) = self.terms.get(key) else {
                continue;
            };
            let t = term as usize;
            let idf = self.idf[t];
            for &(doc, tf) in &self.postings[self.starts[t]..self.starts[t + 1]] {
                let tf = tf as f32;
                scores[doc as usize] += idf * tf / (tf + self.length_norm[doc as usize]);
            }
        }
    }

    /// As `accumulate`, into `scratch`: only the documents the query
    /// reaches are written, and `scratch` lists each of them once, so a
    /// query over a large corpus costs its postings, not the corpus size.
    pub fn accumulate_sparse(&self, query: &[u64], scratch: &mut Accumulator) {
        scratch.begin(self.documents());
        for key in query {
            let Some(&term) = self.terms.get(key) else {
                continue;
            };
            let t = term as usize;
            let idf = self.idf[t];
            for &(doc, tf) in &self.postings[self.starts[t]..self.starts[t + 1]] {
                let tf = tf as f32;
                scratch.add(doc, idf * tf / (tf + self.length_norm[doc as usize]));
            }
        }
    }

    /// The BM25 score of one document for one query.
    pub fn score(&self, query: &[u64], document: u32) -> f32 {
        let mut total = 0.0;
        for key in query {
            let Some(&term) = self.terms.get(key) else {
                continue;
            };
            let t = term as usize;
            let postings = &self.postings[self.starts[t]..self.starts[t + 1]];
            if let Ok(i) = postings.binary_search_by_key(&document, |&(d, _)| d) {
                let tf = postings[i].1 as f32;
                total += self.idf[t] * tf / (tf + self.length_norm[document as usize]);
            }
        }
        total
    }

    /// The top `k` documents of each query, in parallel. Documents that share
    /// no term with the query score 0 and are returned only to fill `k`.
    pub fn search(&self, queries: &[Vec<u64>], k: usize) -> Vec<Hits> {
        let n = self.documents();
        let k = k.min(n);
        queries
            .par_iter()
            .map_init(
                || vec![0f32; n],
                |scores, query| {
                    scores.fill(0.0);
                    self.accumulate(query, scores);
                    top_k(scores, k)
                },
            )
            .collect()
    }
}

/// `ln(1 + (N - df + 0.5) / (df + 0.5))`, in f64: in f32, `1 + x` rounds
/// to exactly 1 for a term in every document of a corpus past 2^24
/// documents, and a weight of 0 would make the term invisible.
fn idf(df: usize, documents: usize) -> f32 {
    let (df, n) = (df as f64, documents as f64);
    ((n - df + 0.5) / (df + 0.5)).ln_1p() as f32
}

/// Scratch space for sparse scoring, reused from query to query without
/// clearing: a slot belongs to the current query only when its stamp is the
/// current generation, so starting a query costs nothing, and a document is
/// listed in `touched` once however often it is reached and whatever it
/// scores (a weight can round to 0).
#[derive(Default)]
pub struct Accumulator {
    scores: Vec<f32>,
    stamps: Vec<u32>,
    generation: u32,
    touched: Vec<u32>,
}

impl Accumulator {
    /// Starts a query over a corpus of `documents`.
    pub fn begin(&mut self, documents: usize) {
        if self.scores.len() < documents {
            self.scores.resize(documents, 0.0);
            self.stamps.resize(documents, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Once in 2^32 queries: old stamps could alias the new generation.
            self.stamps.fill(0);
            self.generation = 1;
        }
        self.touched.clear();
    }

    /// Adds `value` to document `doc`'s score in the current query.
    #[inline]
    pub fn add(&mut self, doc: u32, value: f32) {
        let d = doc as usize;
        if self.stamps[d] == self.generation {
            self.scores[d] += value;
        } else {
            self.stamps[d] = self.generation;
            self.scores[d] = value;
            self.touched.push(doc);
        }
    }

    /// Document `doc`'s score in the current query: 0 when not reached.
    #[inline]
    pub fn score(&self, doc: u32) -> f32 {
        let d = doc as usize;
        if self.stamps[d] == self.generation {
            self.scores[d]
        } else {
            0.0
        }
    }

    /// The documents the current query reached, in first-visit order.
    pub fn touched(&self) -> &[u32] {
        &self.touched
    }

    /// The reached documents to reorder in place, beside a score lookup.
    pub fn touched_and_scores(&mut self) -> (&mut [u32], impl Fn(u32) -> f32 + '_) {
        let (scores, stamps, generation) = (&self.scores, &self.stamps, self.generation);
        let score = move |doc: u32| {
            let d = doc as usize;
            if stamps[d] == generation {
                scores[d]
            } else {
                0.0
            }
        };
        (&mut self.touched, score)
    }
}

/// Best `k` of `scores`, best first; equal scores by lower index.
fn top_k(scores: &[f32], k: usize) -> Hits {
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    if k == 0 {
        return Hits::default();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, better);
        order.truncate(k);
    }
    order.sort_unstable_by(better);
    Hits {
        scores: order.iter().map(|&d| scores[d as usize]).collect(),
        documents: order,
    }
}

/// Term bags of a text column (its words) or a token column (its ids).
///
/// # Errors
///
/// [`TokenmillError::Schema`] for a column of neither kind, and
/// [`TokenmillError::Data`] for text that is not UTF-8.
pub fn bags(column: &str, array: &dyn arrow_array::Array) -> Result<Vec<Vec<u64>>> {
    match crate::columns::Documents::try_new(column, array, "name a text or token column")? {
        crate::columns::Documents::Tokens { ids, offsets } => Ok((0..offsets.rows())
            .map(|row| {
                ids[offsets.range(row)]
                    .iter()
                    .map(|&t| u64::from(t))
                    .collect()
            })
            .collect()),
        crate::columns::Documents::Text(texts) => (0..texts.len())
            .into_par_iter()
            .map(|row| {
                let mut bag = Vec::new();
                words(texts.get(row)?, &mut bag);
                Ok(bag)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bag(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        words(text, &mut out);
        out
    }

    #[test]
    fn words_follow_the_two_character_pattern() {
        assert_eq!(
            bag("A cat, the CAT; x y_z 42"),
            vec![
                xxh3_64(b"cat"),
                xxh3_64(b"the"),
                xxh3_64(b"cat"),
                xxh3_64(b"y_z"),
                xxh3_64(b"42"),
            ]
        );
    }

    #[test]
    fn scores_equal_the_formula_on_a_small_case() {
        let docs = vec![
            bag("apple apple banana"),
            bag("banana cherry"),
            bag("cherry cherry cherry date"),
        ];
        let index = Bm25Index::build(&docs, Bm25Params::default()).unwrap();
        let (k1, b) = (1.5f32, 0.75f32);
        let avgdl = (3.0 + 2.0 + 4.0) / 3.0;
        let idf = |df: f32| (1.0 + (3.0 - df + 0.5) / (df + 0.5)).ln();
        let term =
            |tf: f32, dl: f32, df: f32| idf(df) * tf / (tf + k1 * (1.0 - b + b * dl / avgdl));
        let query = bag("apple cherry");
        let expected = [
            term(2.0, 3.0, 1.0),
            term(1.0, 2.0, 2.0),
            term(3.0, 4.0, 2.0),
        ];
        for (doc, want) in expected.iter().enumerate() {
            assert!((index.score(&query, doc as u32) - want).abs() < 1e-6);
        }
        let hits = &index.search(&[query], 3)[0];
        let mut ranked: Vec<(f32, u32)> = expected.iter().copied().zip(0..).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        assert_eq!(
            hits.documents,
            ranked.iter().map(|r| r.1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_parameters_are_config_errors() {
        let docs = vec![bag("a b")];
        assert!(Bm25Index::build(&docs, Bm25Params { k1: -1.0, b: 0.5 }).is_err());
        assert!(Bm25Index::build(&docs, Bm25Params { k1: 1.0, b: 1.5 }).is_err());
        // An infinite k1 once made every score 0.
        let infinite = Bm25Params {
            k1: f32::INFINITY,
            b: 0.5,
        };
        assert!(Bm25Index::build(&docs, infinite).is_err());
        assert!(Bm25Index::build(&[], Bm25Params::default()).is_err());
    }

    #[test]
    fn a_term_in_every_document_keeps_a_positive_weight() {
        // In f32, 1 + 0.5 / (N + 0.5) is exactly 1 past 2^24 documents.
        assert!(idf(100_000_000, 100_000_000) > 0.0);
        assert!(idf(1, 100_000_000) > idf(2, 100_000_000));
    }

    #[test]
    fn the_accumulator_lists_each_document_once_even_at_zero() {
        let mut scratch = Accumulator::default();
        scratch.begin(4);
        for (doc, value) in [(2, 0.0), (2, 0.0), (1, 0.5), (2, 1.0), (1, 0.0)] {
            scratch.add(doc, value);
        }
        assert_eq!(scratch.touched(), [2, 1]);
        assert_eq!(
            (scratch.score(2), scratch.score(1), scratch.score(0)),
            (1.0, 0.5, 0.0)
        );
        // The next query starts clean without clearing the slots.
        scratch.begin(4);
        assert!(scratch.touched().is_empty());
        assert_eq!(scratch.score(2), 0.0);
    }

    #[test]
    fn repeated_query_terms_in_every_document_touch_each_once() {
        let docs: Vec<Vec<u64>> = (0..50u64).map(|d| vec![7, 100 + d % 5]).collect();
        let index = Bm25Index::build(&docs, Bm25Params::default()).unwrap();
        let query = [7, 7, 7, 100, 100];
        let mut scratch = Accumulator::default();
        index.accumulate_sparse(&query, &mut scratch);
        let mut touched = scratch.touched().to_vec();
        touched.sort_unstable();
        assert_eq!(touched, (0..50).collect::<Vec<u32>>());
        for d in 0..50 {
            assert_eq!(scratch.score(d), index.score(&query, d));
        }
    }

    proptest! {
        // search() and score() agree, and the ranking is what sorting all scores gives.
        #[test]
        fn search_is_a_sorted_prefix_of_all_scores(
            docs in proptest::collection::vec(proptest::collection::vec(0u64..30, 0..20), 1..30),
            query in proptest::collection::vec(0u64..30, 0..6),
            k in 1usize..10,
        ) {
            let index = Bm25Index::build(&docs, Bm25Params::default()).unwrap();
            let hits = &index.search(std::slice::from_ref(&query), k)[0];
            let mut all: Vec<(f32, u32)> = (0..docs.len() as u32).map(|d| (index.score(&query, d), d)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let expected: Vec<u32> = all.iter().take(k.min(docs.len())).map(|x| x.1).collect();
            prop_assert_eq!(&hits.documents, &expected);
            for (d, s) in hits.documents.iter().zip(&hits.scores) {
                prop_assert!((index.score(&query, *d) - s).abs() < 1e-4);
            }
        }
    }
}
