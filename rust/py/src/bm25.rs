//! BM25 retrieval for negative mining and the Python API.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use tokenmill_core::bm25::{self, Bm25Index, Bm25Params};

use crate::error::BindingResult;
use crate::utils::{arrow_input, detach};

/// Document indices `[queries, k]` (int64) and scores `[queries, k]` (float32).
type Ranked<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// An Okapi BM25 index over a text column (words) or a token column (ids).
#[pyclass(name = "Bm25Index", module = "tokenmill._core", frozen)]
pub struct PyBm25Index {
    inner: Bm25Index,
}

#[pymethods]
impl PyBm25Index {
    #[new]
    #[pyo3(signature = (documents, *, k1 = 1.5, b = 0.75, column = "text"))]
    fn new(
        py: Python<'_>,
        documents: &Bound<'_, PyAny>,
        k1: f32,
        b: f32,
        column: &str,
    ) -> BindingResult<Self> {
        let array = arrow_input(documents, column)?;
        let inner = detach(py, || {
            let bags = bm25::bags(column, array.as_ref())?;
            Ok(Bm25Index::build(&bags, Bm25Params { k1, b })?)
        })?;
        Ok(Self { inner })
    }

    #[getter]
    fn documents(&self) -> usize {
        self.inner.documents()
    }

    /// The best `k` documents of every query, best first.
    #[pyo3(signature = (queries, k, *, column = "text"))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: usize,
        column: &str,
    ) -> BindingResult<Ranked<'py>> {
        let array = arrow_input(queries, column)?;
        let index = &self.inner;
        let hits = detach(py, || {
            let bags = bm25::bags(column, array.as_ref())?;
            Ok(index.search(&bags, k))
        })?;
        let width = k.min(self.inner.documents());
        let documents: Vec<i64> = hits
            .iter()
            .flat_map(|h| h.documents.iter().map(|&d| i64::from(d)))
            .collect();
        let scores: Vec<f32> = hits.iter().flat_map(|h| h.scores.iter().copied()).collect();
        let rows = hits.len();
        Ok((
            Array2::from_shape_vec((rows, width), documents)
                .expect("k per query")
                .into_pyarray(py),
            Array2::from_shape_vec((rows, width), scores)
                .expect("k per query")
                .into_pyarray(py),
        ))
    }

    /// The score of document `document` for each query (one per row of `queries`).
    #[pyo3(signature = (queries, documents, *, column = "text"))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        documents: Vec<u32>,
        column: &str,
    ) -> BindingResult<Vec<f32>> {
        let array = arrow_input(queries, column)?;
        let index = &self.inner;
        detach(py, || {
            let bags = bm25::bags(column, array.as_ref())?;
            if bags.len() != documents.len() {
                return Err(tokenmill_core::TokenmillError::config(
                    format!("{} queries but {} documents", bags.len(), documents.len()),
                    "pass one document index per query",
                )
                .into());
            }
            let indexed = index.documents();
            if let Some(&beyond) = documents.iter().find(|&&d| d as usize >= indexed) {
                return Err(tokenmill_core::TokenmillError::config(
                    format!("document {beyond} is beyond the {indexed} indexed"),
                    "pass document indices below the index's `documents`",
                )
                .into());
            }
            Ok(bags
                .iter()
                .zip(&documents)
                .map(|(q, &d)| index.score(q, d))
                .collect())
        })
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyBm25Index>()
}
