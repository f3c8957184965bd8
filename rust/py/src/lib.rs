//! `tokenmill._core`: thin PyO3 bindings over `tokenmill-core`, one file per
//! area. Every call that does real work goes through [`utils::detach`].

use std::path::PathBuf;

use pyo3::prelude::*;

mod bm25;
mod conversion;
mod corrupt;
mod dedup;
mod error;
mod negatives;
mod pack;
mod pairs;
mod random;
mod tokenizer;
mod utils;

/// XXH3-128 of a file, as the manifest records it.
#[pyfunction]
fn file_checksum(py: Python<'_>, path: PathBuf) -> error::BindingResult<String> {
    utils::detach(py, || Ok(tokenmill_core::checksum::file_checksum(&path)?))
}

/// Worker threads for later calls; 0 restores the default.
#[pyfunction]
fn set_num_threads(threads: usize) {
    utils::set_num_threads(threads);
}

#[pyfunction]
fn num_threads() -> usize {
    utils::num_threads()
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(file_checksum, module)?)?;
    module.add_function(wrap_pyfunction!(set_num_threads, module)?)?;
    module.add_function(wrap_pyfunction!(num_threads, module)?)?;
    error::register(module)?;
    dedup::register(module)?;
    bm25::register(module)?;
    corrupt::register(module)?;
    pack::register(module)?;
    pairs::register(module)?;
    negatives::register(module)?;
    random::register(module)?;
    tokenizer::register(module)?;
    Ok(())
}
