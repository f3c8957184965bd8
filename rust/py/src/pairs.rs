//! Positive pairs (`tokenmill.pairs`) and content hashes for the contrastive tools.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokenmill_core::negatives;
use tokenmill_core::pairs::{self, PairMode};

use crate::conversion::{PairKind, Wrap};
use crate::error::BindingResult;
use crate::utils::{arrow_input, detach, to_pyarrow};

/// `(query, positive)` pyarrow arrays of one batch of documents: strings
/// for a text column, `list<uint32>` for a token column.
#[pyfunction]
#[pyo3(signature = (
    documents, keys, *, mode, seed = 0, epoch = 0, column = "text", min_ratio = 0.1,
    max_ratio = 0.5, keep_probability = 0.1, sentence_end_ids = Vec::new()
))]
#[allow(clippy::too_many_arguments)]
fn make_pairs<'py>(
    py: Python<'py>,
    documents: &Bound<'py, PyAny>,
    keys: PyReadonlyArray1<'py, u64>,
    mode: Wrap<PairKind>,
    seed: u64,
    epoch: u64,
    column: &str,
    min_ratio: f64,
    max_ratio: f64,
    keep_probability: f64,
    sentence_end_ids: Vec<u32>,
) -> BindingResult<Bound<'py, PyTuple>> {
    let mode = match mode.0 {
        PairKind::Crop => PairMode::Crop {
            min_ratio,
            max_ratio,
        },
        PairKind::Ict => PairMode::Ict {
            keep_probability,
            sentence_end_ids,
        },
    };
    let array = arrow_input(documents, column)?;
    let keys = keys.as_array().to_vec();
    let (query, positive) = detach(py, || {
        Ok(pairs::pair_columns(
            column,
            array.as_ref(),
            &keys,
            &mode,
            seed,
            epoch,
        )?)
    })?;
    Ok(PyTuple::new(
        py,
        [to_pyarrow(py, query)?, to_pyarrow(py, positive)?],
    )?)
}

/// XXH3-64 of each row's raw content (text bytes, or token ids as
/// little-endian uint32 bytes): equal content, equal hash.
#[pyfunction]
#[pyo3(signature = (values, *, column = "text"))]
fn content_hashes<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    column: &str,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let array = arrow_input(values, column)?;
    let hashes = detach(py, || {
        Ok(negatives::content_hashes(column, array.as_ref())?)
    })?;
    Ok(hashes.into_pyarray(py))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(make_pairs, module)?)?;
    module.add_function(wrap_pyfunction!(content_hashes, module)?)?;
    Ok(())
}
