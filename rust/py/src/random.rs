//! Row keys and the deterministic generator, for Python-side stages and tests.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use tokenmill_core::error::reserve;
use tokenmill_core::rng::StreamKey;
use tokenmill_core::{columns, sample};

use crate::error::BindingResult;
use crate::utils::{arrow_input, detach, detach_inline};

/// Stable 64-bit row keys from a document id column (strings or integers).
#[pyfunction]
#[pyo3(signature = (ids, *, column = "id"))]
fn row_keys_from_ids<'py>(
    py: Python<'py>,
    ids: &Bound<'py, PyAny>,
    column: &str,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let array = arrow_input(ids, column)?;
    let keys = detach(py, || {
        Ok(columns::row_keys_from_ids(column, array.as_ref())?)
    })?;
    Ok(keys.into_pyarray(py))
}

/// Row keys of `rows` rows of `shard` starting at row `first_row`.
#[pyfunction]
fn row_keys_from_position<'py>(
    py: Python<'py>,
    shard: &str,
    first_row: u64,
    rows: usize,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let keys = detach_inline(py, || {
        Ok(columns::row_keys_from_position(shard, first_row, rows)?)
    })?;
    Ok(keys.into_pyarray(py))
}

/// `draws` uniform floats in [0, 1) per row key: shape `[len(keys) * draws]`,
/// row-major. Draw `j` of a row is the same whatever else is asked.
#[pyfunction]
#[pyo3(signature = (keys, *, seed, stage, epoch = 0, draws = 1))]
fn uniform<'py>(
    py: Python<'py>,
    keys: PyReadonlyArray1<'py, u64>,
    seed: u64,
    stage: &str,
    epoch: u64,
    draws: usize,
) -> BindingResult<Bound<'py, PyArray1<f64>>> {
    let keys = keys.as_array().to_vec();
    let stream = StreamKey::new(seed, stage, epoch);
    let values = detach(py, || {
        let mut out = reserve(keys.len().saturating_mul(draws), "draws")?;
        for &key in &keys {
            let mut rng = stream.row(key);
            out.extend((0..draws).map(|_| rng.next_f64()));
        }
        Ok(out)
    })?;
    Ok(values.into_pyarray(py))
}

/// Which rows a Bernoulli(`fraction`) sample keeps (`invert` keeps the rest).
#[pyfunction]
#[pyo3(signature = (keys, *, seed, fraction, invert = false, stage = "sample", epoch = 0))]
fn keep_mask<'py>(
    py: Python<'py>,
    keys: PyReadonlyArray1<'py, u64>,
    seed: u64,
    fraction: f64,
    invert: bool,
    stage: &str,
    epoch: u64,
) -> BindingResult<Bound<'py, PyArray1<bool>>> {
    let keys = keys.as_array().to_vec();
    let stream = StreamKey::new(seed, stage, epoch);
    let mask = detach(py, || {
        Ok(sample::keep_mask(&stream, &keys, fraction, invert)?)
    })?;
    Ok(mask.into_pyarray(py))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(row_keys_from_ids, module)?)?;
    module.add_function(wrap_pyfunction!(row_keys_from_position, module)?)?;
    module.add_function(wrap_pyfunction!(uniform, module)?)?;
    module.add_function(wrap_pyfunction!(keep_mask, module)?)?;
    Ok(())
}
