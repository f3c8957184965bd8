//! Token rows as Python hands them over: 2-D numpy arrays cut at their
//! lengths, Arrow word ids aligned with the tokens, and plain lists of ints.

use arrow_array::types::UInt32Type;
use arrow_array::Array;
use arrow_schema::DataType;
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;
use tokenmill_core::corrupt;
use tokenmill_core::TokenmillError;

use super::config_error;
use crate::error::{BindingError, BindingResult};
use crate::utils::{list_of, to_pyarrow};

/// The `[rows, width]` shape of a 2-D token array and each row's length
/// (`lengths`, else the full width).
pub(super) fn matrix_rows(
    tokens: &Bound<'_, PyUntypedArray>,
    lengths: Option<Vec<i64>>,
) -> BindingResult<(usize, Vec<usize>)> {
    if tokens.ndim() != 2 {
        return Err(config_error(
            format!(
                "token arrays must be 2-D [batch, length], got {} dimensions",
                tokens.ndim()
            ),
            "pass a [batch, length] array, or a list of token lists",
        )
        .into());
    }
    let shape = tokens.shape();
    let (rows, width) = (shape[0], shape[1]);
    let lengths: Vec<usize> = match lengths {
        Some(l) if l.len() != rows => {
            return Err(config_error(
                format!("{} lengths for {rows} rows", l.len()),
                "pass one length per row (for example attention_mask.sum(1))",
            )
            .into())
        }
        Some(l) => l
            .iter()
            .enumerate()
            .map(|(row, &n)| {
                usize::try_from(n).map(|n| n.min(width)).map_err(|_| {
                    TokenmillError::data(
                        row,
                        format!("length {n} is negative"),
                        "pass each row's token count",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        None => vec![width; rows],
    };
    Ok((width, lengths))
}

/// Token rows cut out of a row-major `[rows, width]` buffer at `lengths`,
/// checked to be valid ids (runs without the GIL).
pub(super) fn cut_rows<T: Copy + Into<i64>>(
    data: &[T],
    width: usize,
    lengths: &[usize],
    keys: Option<&mut Vec<u64>>,
) -> Result<(Vec<u32>, Vec<usize>), TokenmillError> {
    let mut values = Vec::with_capacity(lengths.iter().sum());
    let mut offsets = Vec::with_capacity(lengths.len() + 1);
    offsets.push(0);
    let mut keys = keys;
    for (r, &n) in lengths.iter().enumerate() {
        let row = &data[r * width..r * width + n];
        // An id outside [0, 2^32) has high bits as u64 (negative ones too):
        // OR-ing them while narrowing is one pass that vectorizes on any
        // x86-64, where a 64-bit min/max does not.
        let mut high_bits = 0u64;
        values.extend(row.iter().map(|&v| {
            let v: i64 = v.into();
            high_bits |= v as u64 >> 32;
            v as u32
        }));
        if high_bits != 0 {
            let bad = row
                .iter()
                .map(|&v| v.into())
                .find(|&v: &i64| u32::try_from(v).is_err())
                .expect("an id with high bits");
            return Err(TokenmillError::data(
                r,
                format!("token id {bad} is not a valid id"),
                "pass non-negative token ids; padding belongs past each row's length",
            ));
        }
        if let Some(keys) = keys.as_deref_mut() {
            // Hashed while the row is still in L1, not in a second pass.
            keys.push(corrupt::row_key_from_tokens(&values[values.len() - n..]));
        }
        offsets.push(values.len());
    }
    Ok((values, offsets))
}

/// Each row's document lengths, flattened: `(lengths, per-row offsets)`.
pub(super) type Segmentation = Option<(Vec<u32>, Vec<usize>)>;

/// Word ids (`list<int32>`, one per token) laid out like the token values
/// buffer, so row `i`'s ids sit at the same offsets as its tokens.
pub(super) fn aligned_word_ids(
    array: &dyn Array,
    offsets: &[usize],
    len: usize,
) -> Result<Vec<i32>, TokenmillError> {
    let schema_error = || {
        TokenmillError::schema(
            "word_ids",
            format!("expected list<int32> word ids, found {}", array.data_type()),
            "save word ids with `tokenmill tokenize --word-ids`",
        )
    };
    let list = array
        .as_any()
        .downcast_ref::<arrow_array::ListArray>()
        .ok_or_else(schema_error)?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<arrow_array::Int32Array>()
        .ok_or_else(schema_error)?;
    if list.len() + 1 != offsets.len() {
        return Err(config_error(
            format!(
                "word_ids has {} rows, the tokens {}",
                list.len(),
                offsets.len() - 1
            ),
            "pass the word_ids column of the same rows",
        ));
    }
    let mut aligned = vec![-1; len];
    let word_offsets = list.value_offsets();
    for row in 0..list.len() {
        let (a, b) = (word_offsets[row] as usize, word_offsets[row + 1] as usize);
        let (start, end) = (offsets[row], offsets[row + 1]);
        if list.is_null(row) || b - a != end - start || (a..b).any(|i| values.is_null(i)) {
            return Err(TokenmillError::data(
                row,
                format!("word_ids holds {} ids for {} tokens", b - a, end - start),
                "save word ids with the tokens, `tokenmill tokenize --word-ids`",
            ));
        }
        aligned[start..end].copy_from_slice(&values.values()[a..b]);
    }
    Ok(aligned)
}

/// Token rows given as Python lists of ints, read straight into a
/// `list<uint32>` array: about three times faster than pyarrow's generic
/// converter, which bounded collators fed lists of dicts.
#[pyfunction]
pub(super) fn token_lists_from_python<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyList>,
) -> BindingResult<Bound<'py, PyAny>> {
    let mut values = Vec::new();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    for (r, row) in rows.iter().enumerate() {
        let row = row.cast::<PyList>().map_err(|_| {
            TokenmillError::data(
                r,
                "the row is not a list of token ids",
                "pass lists of non-negative integers",
            )
        })?;
        let n = row.len();
        values.reserve(n);
        let not_an_id = |item: String| -> BindingError {
            TokenmillError::data(
                r,
                format!("{item} is not a token id"),
                "token ids are integers in [0, 2^32)",
            )
            .into()
        };
        for i in 0..n {
            // Plain ints are read through the C API: a bound item and a
            // checked extraction per token cost three times as much, and
            // that reading bounded collators fed Python lists.
            // SAFETY: the GIL is held and `row` keeps the list, so the
            // borrowed item lives through these calls, none of which runs
            // Python code for an exact int.
            let fast = unsafe {
                let item = pyo3::ffi::PyList_GetItem(row.as_ptr(), i as pyo3::ffi::Py_ssize_t);
                if !item.is_null() && pyo3::ffi::PyLong_CheckExact(item) != 0 {
                    Some(pyo3::ffi::PyLong_AsLongLong(item))
                } else {
                    None
                }
            };
            let shown = |i: usize| {
                row.get_item(i)
                    .map_or_else(|_| "?".into(), |v| v.to_string())
            };
            let id = match fast {
                Some(id) => u32::try_from(id).map_err(|_| {
                    // An int beyond long long leaves an OverflowError set.
                    let _ = PyErr::take(py);
                    not_an_id(shown(i))
                }),
                // Anything else (a numpy integer) the safe way. A bool is
                // an int to Python but no token id, as numpy bool rows are not.
                None => {
                    let item = row.get_item(i)?;
                    if item.is_instance_of::<pyo3::types::PyBool>() {
                        Err(not_an_id(item.to_string()))
                    } else {
                        item.extract::<u32>()
                            .map_err(|_| not_an_id(item.to_string()))
                    }
                }
            };
            values.push(id?);
        }
        offsets.push(values.len());
    }
    let array = list_of::<UInt32Type>(values, &offsets, DataType::UInt32);
    Ok(to_pyarrow(py, array)?)
}
