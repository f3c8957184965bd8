//! The negative miner behind `tokenmill.negatives`: built once over the
//! corpus of positives, then asked batch by batch.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use tokenmill_core::bm25::{self, Bm25Index, Bm25Params};
use tokenmill_core::negatives::{self, Corpus, Mined, MiningOptions, Vectors};
use tokenmill_core::TokenmillError;

use crate::conversion::{StrategyKind, Wrap};
use crate::error::BindingResult;
use crate::utils::{arrow_input, detach};

enum Strategy {
    Random,
    Bm25(Bm25Index),
    Embedding(Vectors),
}

/// `(documents [rows, k] int64, scores [rows, k] float32,
/// positive_scores [rows] float32, topped_up [rows] uint32,
/// over_margin [rows] uint32)`.
type MinedArrays<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u32>>,
);

/// The arrays of `mined`, `k` negatives per row.
fn to_arrays(py: Python<'_>, mined: Mined, k: usize) -> MinedArrays<'_> {
    let Mined {
        documents,
        scores,
        positive_scores,
        topped_up,
        over_margin,
    } = mined;
    let n = topped_up.len();
    let documents: Vec<i64> = documents.into_iter().map(i64::from).collect();
    (
        Array2::from_shape_vec((n, k), documents)
            .expect("the miners return k negatives per row")
            .into_pyarray(py),
        Array2::from_shape_vec((n, k), scores)
            .expect("the miners return k scores per row")
            .into_pyarray(py),
        positive_scores.into_pyarray(py),
        topped_up.into_pyarray(py),
        over_margin.into_pyarray(py),
    )
}

/// Mines negatives for pair rows against the corpus of their positives.
#[pyclass(name = "NegativeMiner", module = "tokenmill._core", frozen)]
pub struct PyNegativeMiner {
    strategy: Strategy,
    corpus: Corpus,
    options: MiningOptions,
}

#[pymethods]
impl PyNegativeMiner {
    /// `positives` is the corpus (text or tokens, row `i` the positive of
    /// pair row `i`); `vectors` its embeddings for the embedding strategy.
    #[new]
    #[pyo3(signature = (
        positives, *, strategy, num_negatives, range_min = 0, range_max = 99, margin = 0.95,
        k1 = 1.5, b = 0.75, seed = 0, epoch = 0, column = "positive", vectors = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        positives: &Bound<'_, PyAny>,
        strategy: Wrap<StrategyKind>,
        num_negatives: usize,
        range_min: usize,
        range_max: usize,
        margin: f32,
        k1: f32,
        b: f32,
        seed: u64,
        epoch: u64,
        column: &str,
        vectors: Option<&Bound<'_, PyAny>>,
    ) -> BindingResult<Self> {
        let array = arrow_input(positives, column)?;
        let options = MiningOptions {
            num_negatives,
            range_min,
            range_max,
            margin,
            seed,
            epoch,
        };
        let vectors = vectors
            .map(|v| arrow_input(v, "positive vectors"))
            .transpose()?;
        let column = column.to_owned();
        detach(py, move || {
            let corpus = Corpus::new(negatives::content_hashes(&column, array.as_ref())?)?;
            options.check(corpus.len())?;
            let strategy = match strategy.0 {
                StrategyKind::Random => Strategy::Random,
                StrategyKind::Bm25 => {
                    let bags = bm25::bags(&column, array.as_ref())?;
                    Strategy::Bm25(Bm25Index::build(&bags, Bm25Params { k1, b })?)
                }
                StrategyKind::Embedding => {
                    let Some(vectors) = vectors else {
                        return Err(TokenmillError::config(
                            "the embedding strategy needs the positives' vectors",
                            "pass --positive-vector-column, or an embedding function",
                        )
                        .into());
                    };
                    let vectors = Vectors::from_arrow("positive vectors", vectors.as_ref())?;
                    if vectors.rows() != corpus.len() {
                        return Err(TokenmillError::config(
                            format!("{} vectors for {} positives", vectors.rows(), corpus.len()),
                            "pass one vector per positive",
                        )
                        .into());
                    }
                    Strategy::Embedding(vectors)
                }
            };
            Ok(Self {
                strategy,
                corpus,
                options,
            })
        })
    }

    #[getter]
    fn documents(&self) -> usize {
        self.corpus.len()
    }

    /// Negatives of a batch of pair rows: `rows` are their indices in the
    /// corpus, `keys` their row keys; `queries` their query column (text or
    /// tokens; bm25) or query vectors (embedding); the random strategy
    /// ignores it.
    #[pyo3(signature = (queries, rows, keys, *, column = "query"))]
    fn mine<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        rows: PyReadonlyArray1<'py, u64>,
        keys: PyReadonlyArray1<'py, u64>,
        column: &str,
    ) -> BindingResult<MinedArrays<'py>> {
        let rows = rows.as_array().to_vec();
        let keys = keys.as_array().to_vec();
        let k = self.options.num_negatives;
        let queries = arrow_input(queries, column)?;
        let mined = detach(py, || {
            Ok(match &self.strategy {
                Strategy::Random => {
                    negatives::mine_random(&self.corpus, &rows, &keys, &self.options)?
                }
                Strategy::Bm25(index) => {
                    let bags = bm25::bags(column, queries.as_ref())?;
                    negatives::mine_bm25(index, &self.corpus, &bags, &rows, &keys, &self.options)?
                }
                Strategy::Embedding(documents) => {
                    // An empty batch has no vector to read a dimension from.
                    let vectors = if queries.is_empty() {
                        Vectors::new(Vec::new(), documents.dim())?
                    } else {
                        Vectors::from_arrow(column, queries.as_ref())?
                    };
                    negatives::mine_embedding(
                        documents,
                        &self.corpus,
                        &vectors,
                        &rows,
                        &keys,
                        &self.options,
                    )?
                }
            })
        })?;
        Ok(to_arrays(py, mined, k))
    }
}

/// Exact top-k by cosine, blocked, for tests and benchmarks: `documents`
/// and `queries` are `[rows, dim]` float32.
#[pyfunction]
#[pyo3(signature = (documents, queries, *, num_negatives, range_min = 0, range_max = 99, margin = 0.95, seed = 0))]
#[allow(clippy::too_many_arguments)]
fn mine_embedding_arrays<'py>(
    py: Python<'py>,
    documents: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    num_negatives: usize,
    range_min: usize,
    range_max: usize,
    margin: f32,
    seed: u64,
) -> BindingResult<MinedArrays<'py>> {
    let dim = documents.as_array().ncols();
    let docs: Vec<f32> = documents.as_array().iter().copied().collect();
    let qdim = queries.as_array().ncols();
    let qs: Vec<f32> = queries.as_array().iter().copied().collect();
    let k = num_negatives;
    let options = MiningOptions {
        num_negatives,
        range_min,
        range_max,
        margin,
        seed,
        epoch: 0,
    };
    let mined = detach(py, move || {
        let docs = Vectors::new(docs, dim)?;
        let qs = Vectors::new(qs, qdim)?;
        // Distinct hashes: every document is its own text.
        let corpus = Corpus::new((0..docs.rows() as u64).collect())?;
        let rows: Vec<u64> = (0..qs.rows() as u64).collect();
        Ok(negatives::mine_embedding(
            &docs, &corpus, &qs, &rows, &rows, &options,
        )?)
    })?;
    Ok(to_arrays(py, mined, k))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyNegativeMiner>()?;
    module.add_function(wrap_pyfunction!(mine_embedding_arrays, module)?)?;
    Ok(())
}
