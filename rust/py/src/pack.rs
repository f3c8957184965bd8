//! The packing stage's kernel: a stateful packer fed one batch at a time.

use arrow_schema::DataType;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tokenmill_core::columns::token_lists;
use tokenmill_core::pack::{self, PackStrategy, PackedRows, Packer};
use tokenmill_core::TokenmillError;

use crate::conversion::{Named, PackKind};
use crate::error::BindingResult;
use crate::utils::{arrow_input, detach, list_of, to_pyarrow};

/// Packs one shard's documents into rows; see `tokenmill.stages.pack`.
#[pyclass(name = "Packer", module = "tokenmill._core")]
pub struct PyPacker {
    inner: Packer,
    positions: bool,
}

/// `(input_ids, seq_lens, doc_index, doc_offset, position_ids)` as pyarrow
/// arrays; position_ids None unless `positions` (they are as large as the
/// tokens, and the corrupt stage has no use for them).
fn to_columns<'py>(
    py: Python<'py>,
    rows: PackedRows,
    positions: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    use arrow_array::types::{UInt32Type, UInt64Type};
    let position_ids = positions.then(|| {
        let mut positions = Vec::with_capacity(rows.tokens.len());
        for segment in &rows.segments {
            positions.extend(0..segment.len);
        }
        list_of::<UInt32Type>(positions, &rows.row_offsets, DataType::UInt32)
    });
    let seq_lens: Vec<u32> = rows.segments.iter().map(|s| s.len).collect();
    let docs: Vec<u64> = rows.segments.iter().map(|s| s.doc).collect();
    let starts: Vec<u32> = rows.segments.iter().map(|s| s.offset).collect();
    let columns = [
        Some(list_of::<UInt32Type>(
            rows.tokens,
            &rows.row_offsets,
            DataType::UInt32,
        )),
        Some(list_of::<UInt32Type>(
            seq_lens,
            &rows.segment_offsets,
            DataType::UInt32,
        )),
        Some(list_of::<UInt64Type>(
            docs,
            &rows.segment_offsets,
            DataType::UInt64,
        )),
        Some(list_of::<UInt32Type>(
            starts,
            &rows.segment_offsets,
            DataType::UInt32,
        )),
        position_ids,
    ];
    let converted = columns
        .into_iter()
        .map(|c| match c {
            Some(c) => to_pyarrow(py, c),
            None => Ok(py.None().into_bound(py)),
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, converted)
}

#[pymethods]
impl PyPacker {
    #[new]
    #[pyo3(signature = (seq_len, *, strategy = "bfd", buffer = 10_000, overlap = false, positions = true))]
    fn new(
        seq_len: u32,
        strategy: &str,
        buffer: usize,
        overlap: bool,
        positions: bool,
    ) -> BindingResult<Self> {
        // A name, not a `Wrap`, so the signature shows its default.
        let strategy = match PackKind::from_name(strategy)? {
            PackKind::Bfd => PackStrategy::Bfd { buffer },
            PackKind::Concat => PackStrategy::Concat { overlap },
        };
        Ok(Self {
            inner: Packer::new(seq_len, strategy)?,
            positions,
        })
    }

    /// Adds the documents of a `list<uint32>` array, numbered from
    /// `first_doc`; returns the rows they completed.
    #[pyo3(signature = (tokens, first_doc, *, column = "input_ids"))]
    fn push<'py>(
        &mut self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        first_doc: u64,
        column: &str,
    ) -> BindingResult<Bound<'py, PyTuple>> {
        let array = arrow_input(tokens, column)?;
        let packer = &mut self.inner;
        let rows = detach(py, || {
            let (values, offsets) = token_lists(column, array.as_ref())?;
            let offsets: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
            Ok(packer.push(values, &offsets, first_doc)?)
        })?;
        Ok(to_columns(py, rows, self.positions)?)
    }

    /// The rows left at the end of the shard.
    fn finish<'py>(&mut self, py: Python<'py>) -> BindingResult<Bound<'py, PyTuple>> {
        let packer = &mut self.inner;
        let rows = detach(py, || Ok(packer.finish()))?;
        Ok(to_columns(py, rows, self.positions)?)
    }

    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.stats();
        let dict = PyDict::new(py);
        dict.set_item("documents", stats.documents)?;
        dict.set_item("empty_documents", stats.empty_documents)?;
        dict.set_item("documents_split", stats.documents_split)?;
        dict.set_item("rows", stats.rows)?;
        dict.set_item("tokens", stats.tokens)?;
        dict.set_item("tokens_truncated", stats.tokens_truncated)?;
        Ok(dict)
    }
}

/// The bin of each item under best-fit decreasing: the packing decision
/// alone, on lengths, for benchmarks and planning.
#[pyfunction]
fn best_fit_decreasing<'py>(
    py: Python<'py>,
    lengths: PyReadonlyArray1<'py, u32>,
    capacity: u32,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let lengths = lengths.as_array().to_vec();
    if capacity == 0 {
        return Err(TokenmillError::config(
            "bins of capacity 0 hold nothing",
            "pass a positive capacity, e.g. the row length",
        )
        .into());
    }
    if let Some(&too_long) = lengths.iter().find(|&&l| l > capacity) {
        return Err(TokenmillError::config(
            format!("an item of {too_long} does not fit bins of {capacity}"),
            "split long items first, or raise the capacity",
        )
        .into());
    }
    let bins = detach(py, || {
        let mut bin_of = vec![0u64; lengths.len()];
        for (bin, items) in pack::best_fit_decreasing(&lengths, capacity)
            .into_iter()
            .enumerate()
        {
            for item in items {
                bin_of[item] = bin as u64;
            }
        }
        Ok(bin_of)
    })?;
    Ok(bins.into_pyarray(py))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyPacker>()?;
    module.add_function(wrap_pyfunction!(best_fit_decreasing, module)?)?;
    Ok(())
}
