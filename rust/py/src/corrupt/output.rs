//! Corrupted rows as a model takes them: int64 numpy arrays padded to one
//! width, with attention masks and T5's shifted-right decoder inputs.

use numpy::ndarray::Array2;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenmill_core::corrupt::{self, DenseCorrupted, Lists};

use crate::error::BindingResult;

/// Row `i` padded to `width` as int64, the layout PyTorch losses take,
/// written in one pass.
pub(super) fn padded<T: Copy + Into<i64>>(lists: &Lists<T>, width: usize, fill: i64) -> Vec<i64> {
    if lists.values.len() == lists.rows() * width {
        // Every row is full (static shapes): one widening pass, no per-row work.
        return lists.values.iter().map(|&v| v.into()).collect();
    }
    let mut out = Vec::with_capacity(lists.rows() * width);
    for r in 0..lists.rows() {
        out.extend(lists.row(r).iter().map(|&v| v.into()));
        out.resize((r + 1) * width, fill);
    }
    out
}

pub(super) fn round_up(n: usize, multiple: usize) -> usize {
    n.div_ceil(multiple.max(1)) * multiple.max(1)
}

pub(super) fn array2(
    py: Python<'_>,
    rows: usize,
    width: usize,
    data: Vec<i64>,
) -> Bound<'_, numpy::PyArray2<i64>> {
    Array2::from_shape_vec((rows, width), data)
        .expect("rows * width values")
        .into_pyarray(py)
}

/// How `corrupt_padded` lays out its arrays.
pub(super) struct Layout {
    pub(super) pad_id: i64,
    pub(super) pad_to_multiple_of: usize,
    pub(super) decoder_start_id: Option<i64>,
    pub(super) attention_mask: bool,
}

/// T5's decoder inputs: a padded `[rows, width]` label matrix shifted right
/// behind `start`, ignored positions as `pad_id`.
pub(super) fn shifted_right(
    labels: &[i64],
    rows: usize,
    width: usize,
    start: i64,
    pad_id: i64,
) -> Vec<i64> {
    let ignored = i64::from(corrupt::IGNORE_INDEX);
    let mut out = Vec::with_capacity(rows * width);
    if width == 0 {
        return out;
    }
    for row in labels.chunks_exact(width).take(rows) {
        out.push(start);
        out.extend(
            row[..width - 1]
                .iter()
                .map(|&l| if l == ignored { pad_id } else { l }),
        );
    }
    out
}

/// A row-major `[rows, width]` matrix widened to `[rows, padded]` with `fill`
/// (returned as it is when the width already fits).
pub(super) fn repadded(
    values: Vec<i64>,
    rows: usize,
    width: usize,
    padded: usize,
    fill: i64,
) -> Vec<i64> {
    if padded == width {
        return values;
    }
    let mut out = Vec::with_capacity(rows * padded);
    for row in values.chunks_exact(width.max(1)).take(rows) {
        out.extend_from_slice(&row[..width]);
        out.resize(out.len() + padded - width, fill);
    }
    out.resize(rows * padded, fill);
    out
}

/// `[rows, width]` ones over each row's `length(r)` tokens, zeros after.
pub(super) fn mask_over(rows: usize, width: usize, length: impl Fn(usize) -> usize) -> Vec<i64> {
    let mut mask = Vec::with_capacity(rows * width);
    for r in 0..rows {
        mask.resize(r * width + length(r), 1);
        mask.resize((r + 1) * width, 0);
    }
    mask
}

/// The arrays every corruption batch returns, as a dict of int64 numpy arrays.
pub(super) struct Padded {
    rows: usize,
    width: usize,
    label_width: usize,
    inputs: Vec<i64>,
    mask: Option<Vec<i64>>,
    labels: Vec<i64>,
    decoder: Option<Vec<i64>>,
}

impl Padded {
    /// The batch, with the mask (over the first `length(r)` tokens of row
    /// `r`) and decoder inputs `layout` asks for.
    pub(super) fn new(
        layout: &Layout,
        (rows, width, label_width): (usize, usize, usize),
        inputs: Vec<i64>,
        labels: Vec<i64>,
        length: impl Fn(usize) -> usize,
    ) -> Self {
        let mask = layout
            .attention_mask
            .then(|| mask_over(rows, width, length));
        let decoder = layout
            .decoder_start_id
            .map(|start| shifted_right(&labels, rows, label_width, start, layout.pad_id));
        Self {
            rows,
            width,
            label_width,
            inputs,
            mask,
            labels,
            decoder,
        }
    }

    pub(super) fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let (rows, width, label_width) = (self.rows, self.width, self.label_width);
        let dict = PyDict::new(py);
        dict.set_item("input_ids", array2(py, rows, width, self.inputs))?;
        if let Some(mask) = self.mask {
            dict.set_item("attention_mask", array2(py, rows, width, mask))?;
        }
        dict.set_item("labels", array2(py, rows, label_width, self.labels))?;
        if let Some(decoder) = self.decoder {
            dict.set_item("decoder_input_ids", array2(py, rows, label_width, decoder))?;
        }
        Ok(dict)
    }
}

/// The arrays of a [`DenseCorrupted`] batch, as `corrupt_padded` returns them.
pub(super) fn dense_batch<'py>(
    py: Python<'py>,
    dense: DenseCorrupted,
    layout: &Layout,
) -> BindingResult<Bound<'py, PyDict>> {
    let rows = dense.rows;
    let width = round_up(dense.input_width, layout.pad_to_multiple_of);
    let label_width = round_up(dense.label_width, layout.pad_to_multiple_of);
    let batch = py.detach(|| {
        let inputs = repadded(dense.inputs, rows, dense.input_width, width, layout.pad_id);
        let ignored = i64::from(corrupt::IGNORE_INDEX);
        let labels = repadded(dense.labels, rows, dense.label_width, label_width, ignored);
        let shape = (rows, width, label_width);
        Padded::new(layout, shape, inputs, labels, |_| dense.input_width)
    });
    Ok(batch.into_dict(py)?)
}
