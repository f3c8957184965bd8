//! The corruption engine: one `Corruptor` per mode, run by the `corrupt`
//! stage over Arrow batches and by the collators over padded batches.

use std::sync::Arc;

use arrow_array::types::{Int32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, UInt8Array};
use arrow_schema::DataType;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3_arrow::PyArray;
use tokenmill_core::columns::token_lists;
use tokenmill_core::corrupt::{
    self, BartOptions, Corrupted, Corruptor, Denoiser, DenseCorrupted, Lists, MaskLength,
    MlmOptions, Mode, PrefixLayout, PrefixOptions, PrefixSplit, Segments, SpanLengths, SpanOptions,
    TokenRows, Ul2Options,
};
use tokenmill_core::TokenmillError;

use crate::error::{BindingError, BindingResult};
use crate::tokenizer::PyTokenizer;
use crate::utils::{detach, detach_inline, list_of, to_pyarrow};

/// The vocabulary as corruption sees it: size, special ids, word starts.
#[pyclass(name = "Vocab", module = "tokenmill._core", frozen)]
#[derive(Clone)]
pub struct PyVocab {
    inner: corrupt::Vocab,
}

#[pymethods]
impl PyVocab {
    #[new]
    #[pyo3(signature = (size, special_ids, *, word_starts = None))]
    fn new(
        size: u32,
        special_ids: Vec<u32>,
        word_starts: Option<Vec<bool>>,
    ) -> BindingResult<Self> {
        let mut inner = corrupt::Vocab::new(size, &special_ids)?;
        if let Some(starts) = word_starts {
            inner = inner.with_word_marks(corrupt::WordMarks::Starts(starts))?;
        }
        Ok(Self { inner })
    }

    /// Special ids and word starts as the tokenizer marks them.
    #[staticmethod]
    fn from_tokenizer(tokenizer: &PyTokenizer) -> BindingResult<Self> {
        let tokenizer = tokenizer.core();
        let size = u32::try_from(tokenizer.vocab_size()).unwrap_or(u32::MAX);
        let inner = corrupt::Vocab::new(size, &tokenizer.special_ids())?
            .with_word_marks(tokenizer.word_marks())?;
        Ok(Self { inner })
    }

    #[getter]
    fn size(&self) -> u32 {
        self.inner.size()
    }

    #[getter]
    fn has_word_marks(&self) -> bool {
        self.inner.has_word_marks()
    }

    fn is_special(&self, id: u32) -> bool {
        id < self.inner.size() && self.inner.is_special(id)
    }
}

/// One corruption mode bound to its vocabulary. Build it with the static
/// constructors; every call is deterministic per (seed, epoch, row key).
#[pyclass(name = "Corruptor", module = "tokenmill._core", frozen)]
pub struct PyCorruptor {
    inner: Corruptor,
}

fn build(mode: Mode, vocab: &PyVocab) -> BindingResult<PyCorruptor> {
    Ok(PyCorruptor {
        inner: Corruptor::new(mode, vocab.inner.clone())?,
    })
}

fn config_error(problem: String, fix: &str) -> TokenmillError {
    TokenmillError::config(problem, fix)
}

/// The `[rows, width]` shape of a 2-D token array and each row's length
/// (`lengths`, else the full width).
fn matrix_rows(
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
fn cut_rows<T: Copy + Into<i64>>(
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

/// Row `i` padded to `width` as int64, the layout PyTorch losses take,
/// written in one pass.
fn padded<T: Copy + Into<i64>>(lists: &Lists<T>, width: usize, fill: i64) -> Vec<i64> {
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

fn round_up(n: usize, multiple: usize) -> usize {
    n.div_ceil(multiple.max(1)) * multiple.max(1)
}

fn array2(
    py: Python<'_>,
    rows: usize,
    width: usize,
    data: Vec<i64>,
) -> Bound<'_, numpy::PyArray2<i64>> {
    Array2::from_shape_vec((rows, width), data)
        .expect("rows * width values")
        .into_pyarray(py)
}

/// Each row's document lengths, flattened: `(lengths, per-row offsets)`.
type Segmentation = Option<(Vec<u32>, Vec<usize>)>;

/// A UL2 denoiser from Python: `(kind, density, mean_span, mode_id, weight)`.
type DenoiserSpec = (String, f64, f64, u32, f64);

/// Word ids (`list<int32>`, one per token) laid out like the token values
/// buffer, so row `i`'s ids sit at the same offsets as its tokens.
fn aligned_word_ids(
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

/// How `corrupt_padded` lays out its arrays.
struct Layout {
    pad_id: i64,
    pad_to_multiple_of: usize,
    decoder_start_id: Option<i64>,
    attention_mask: bool,
}

/// T5's decoder inputs: a padded `[rows, width]` label matrix shifted right
/// behind `start`, ignored positions as `pad_id`.
fn shifted_right(labels: &[i64], rows: usize, width: usize, start: i64, pad_id: i64) -> Vec<i64> {
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
fn repadded(values: Vec<i64>, rows: usize, width: usize, padded: usize, fill: i64) -> Vec<i64> {
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
fn mask_over(rows: usize, width: usize, length: impl Fn(usize) -> usize) -> Vec<i64> {
    let mut mask = Vec::with_capacity(rows * width);
    for r in 0..rows {
        mask.resize(r * width + length(r), 1);
        mask.resize((r + 1) * width, 0);
    }
    mask
}

/// The arrays every corruption batch returns, as a dict of int64 numpy arrays.
struct Padded {
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
    fn new(
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

    fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
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
fn dense_batch<'py>(
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

impl PyCorruptor {
    /// The span fast path of `corrupt_padded`: a C-ordered 2-D array of
    /// whole rows goes to [`Corruptor::span_dense`]. `None` sends the batch
    /// down the general path (another mode, another layout, a big batch).
    fn span_dense(
        &self,
        py: Python<'_>,
        tokens: &Bound<'_, PyAny>,
        keys: Option<&PyReadonlyArray1<'_, u64>>,
        seed: u64,
        epoch: u64,
    ) -> BindingResult<Option<DenseCorrupted>> {
        if !matches!(self.inner.mode(), Mode::Span(_)) {
            return Ok(None);
        }
        let Ok(array) = tokens.cast::<PyUntypedArray>() else {
            return Ok(None);
        };
        if array.ndim() != 2 || !array.is_c_contiguous() {
            return Ok(None);
        }
        let (rows, width) = (array.shape()[0], array.shape()[1]);
        let keys = keys.map(|k| k.as_array().to_vec());
        if keys.as_ref().is_some_and(|k| k.len() != rows) {
            return Ok(None); // the general path says what is wrong
        }
        let corruptor = &self.inner;
        macro_rules! dense_of {
            ($t:ty) => {
                if let Ok(typed) = array.cast::<numpy::PyArray2<$t>>() {
                    let readonly = typed.readonly();
                    let Ok(data) = readonly.as_slice() else {
                        return Ok(None);
                    };
                    // A batch the fast path rejects goes down the general
                    // path, whose checks run in its own order: the same bad
                    // batch then gets the same error whichever form it came in.
                    let work = || {
                        Ok(corruptor
                            .span_dense(data, width, keys.as_deref(), seed, epoch)
                            .unwrap_or(None))
                    };
                    return detach_inline(py, work);
                }
            };
        }
        if width == 0 {
            return Ok(None);
        }
        dense_of!(i64);
        dense_of!(i32);
        dense_of!(u32);
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        tokens: &Bound<'_, PyAny>,
        keys: Option<PyReadonlyArray1<'_, u64>>,
        seed: u64,
        epoch: u64,
        lengths: Option<Vec<i64>>,
        seq_lens: Option<PyArray>,
        word_ids: Option<PyArray>,
        column: &str,
    ) -> BindingResult<Corrupted> {
        let given_keys = keys.map(|k| k.as_array().to_vec());
        let seq_lens = seq_lens.map(|s| s.array().clone());
        let word_ids = word_ids.map(|w| w.array().clone());
        let corruptor = &self.inner;
        let segments_of = |seq_lens: &Option<ArrayRef>| -> Result<Segmentation, TokenmillError> {
            seq_lens
                .as_ref()
                .map(|array| {
                    let (values, offsets) = token_lists("seq_lens", array.as_ref())?;
                    let first = offsets[0] as usize;
                    let last = offsets[offsets.len() - 1] as usize;
                    Ok((
                        values[first..last].to_vec(),
                        offsets.iter().map(|&o| o as usize - first).collect(),
                    ))
                })
                .transpose()
        };
        let run = |values: &[u32],
                   offsets: &[usize],
                   segments: Segmentation,
                   hashed_keys: Option<Vec<u64>>| {
            let keys = given_keys
                .clone()
                .or(hashed_keys)
                .unwrap_or_else(|| corrupt::row_keys_from_tokens(values, offsets));
            if keys.len() != offsets.len() - 1 {
                return Err(config_error(
                    format!("{} row keys for {} rows", keys.len(), offsets.len() - 1),
                    "pass one row key per row",
                ));
            }
            if let Some((_, o)) = &segments {
                if o.len() != offsets.len() {
                    return Err(config_error(
                        format!(
                            "seq_lens has {} rows, the tokens {}",
                            o.len() - 1,
                            offsets.len() - 1
                        ),
                        "pass the seq_lens column of the same rows",
                    ));
                }
            }
            let words = word_ids
                .as_ref()
                .map(|w| aligned_word_ids(w.as_ref(), offsets, values.len()))
                .transpose()?;
            let rows = TokenRows {
                values,
                offsets,
                segments: segments
                    .as_ref()
                    .map(|(lengths, offsets)| Segments { lengths, offsets }),
                word_ids: words.as_deref(),
            };
            corruptor.corrupt(&rows, &keys, seed, epoch)
        };
        if let Ok(array) = tokens.cast::<PyUntypedArray>() {
            let (width, lengths) = matrix_rows(array, lengths)?;
            // Borrow the buffer and cut rows without the GIL; the collators
            // hand over C-contiguous arrays, anything else is copied first.
            macro_rules! cut_and_run {
                ($t:ty) => {
                    if let Ok(typed) = array.cast::<numpy::PyArray2<$t>>() {
                        let readonly = typed.readonly();
                        let owned;
                        // `as_slice` also accepts Fortran order, which
                        // would read columns as rows.
                        let c_order = typed.is_c_contiguous();
                        let data: &[$t] = match readonly.as_slice() {
                            Ok(slice) if c_order => slice,
                            _ => {
                                owned = readonly.as_array().iter().copied().collect::<Vec<_>>();
                                &owned
                            }
                        };
                        let work = || {
                            let mut keys = Vec::new();
                            let hash = given_keys.is_none().then_some(&mut keys);
                            let (values, offsets) = cut_rows(data, width, &lengths, hash)?;
                            let hashed = given_keys.is_none().then_some(keys);
                            Ok(run(&values, &offsets, segments_of(&seq_lens)?, hashed)?)
                        };
                        return if data.len() < corrupt::PARALLEL_MIN_TOKENS {
                            detach_inline(py, work)
                        } else {
                            detach(py, work)
                        };
                    }
                };
            }
            cut_and_run!(i64);
            cut_and_run!(i32);
            cut_and_run!(u32);
            return Err(config_error(
                format!(
                    "token arrays must hold int64, int32 or uint32, not {}",
                    array.dtype()
                ),
                "convert the array with .astype(numpy.int64)",
            )
            .into());
        }
        let array = tokens.extract::<PyArray>()?.array().clone();
        let work = || {
            let (values, offsets) = token_lists(column, array.as_ref())?;
            let offsets: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
            Ok(run(values, &offsets, segments_of(&seq_lens)?, None)?)
        };
        // A collator's batch runs where it is; a stage's batch goes to the pool.
        let tokens = array.to_data().child_data().first().map_or(0, |c| c.len());
        if tokens < corrupt::PARALLEL_MIN_TOKENS {
            detach_inline(py, work)
        } else {
            detach(py, work)
        }
    }
}

#[pymethods]
impl PyCorruptor {
    /// BERT masking: `probability` of non-special tokens chosen, then
    /// `mask_rate` masked, `random_rate` random, the rest kept; with `span`,
    /// SpanBERT spans of geometric(`span_p`) words up to `span_max`.
    #[staticmethod]
    #[pyo3(signature = (vocab, mask_id, *, probability = 0.15, mask_rate = 0.8, random_rate = 0.1, whole_word = false, span = false, span_p = 0.2, span_max = 10))]
    #[allow(clippy::too_many_arguments)]
    fn mlm(
        vocab: &PyVocab,
        mask_id: u32,
        probability: f64,
        mask_rate: f64,
        random_rate: f64,
        whole_word: bool,
        span: bool,
        span_p: f64,
        span_max: u32,
    ) -> BindingResult<Self> {
        let options = MlmOptions {
            mask_id,
            probability,
            mask_rate,
            random_rate,
            whole_word,
            span: span.then_some(SpanLengths {
                p: span_p,
                max: span_max,
            }),
        };
        build(Mode::Mlm(options), vocab)
    }

    /// T5 span corruption with the given sentinels (`<extra_id_0>` first).
    #[staticmethod]
    #[pyo3(signature = (vocab, sentinels, *, noise_density = 0.15, mean_span = 3.0, eos_id = None))]
    fn span(
        vocab: &PyVocab,
        sentinels: Vec<u32>,
        noise_density: f64,
        mean_span: f64,
        eos_id: Option<u32>,
    ) -> BindingResult<Self> {
        let options = SpanOptions {
            noise_density,
            mean_span,
            sentinels,
            eos: eos_id,
        };
        build(Mode::Span(options), vocab)
    }

    /// fairseq's BART noise; the defaults are `bart.large`'s.
    #[staticmethod]
    #[pyo3(signature = (vocab, mask_id, *, sentence_ends = Vec::new(), mask_ratio = 0.3, random_ratio = 0.1, insert_ratio = 0.0, rotate_ratio = 0.0, permute_sentence_ratio = 1.0, delete_ratio = 0.0, poisson_lambda = 3.5, mask_length = "span-poisson", replace_length = 1))]
    #[allow(clippy::too_many_arguments)]
    fn bart(
        vocab: &PyVocab,
        mask_id: u32,
        sentence_ends: Vec<u32>,
        mask_ratio: f64,
        random_ratio: f64,
        insert_ratio: f64,
        rotate_ratio: f64,
        permute_sentence_ratio: f64,
        delete_ratio: f64,
        poisson_lambda: f64,
        mask_length: &str,
        replace_length: i8,
    ) -> BindingResult<Self> {
        let mask_length = match mask_length {
            "subword" => MaskLength::Subword,
            "word" => MaskLength::Word,
            "span-poisson" => MaskLength::SpanPoisson,
            other => {
                return Err(config_error(
                    format!("mask length '{other}' is not subword, word or span-poisson"),
                    "pass --mask-length subword, word or span-poisson",
                )
                .into())
            }
        };
        let options = BartOptions {
            mask_id,
            mask_ratio,
            random_ratio,
            insert_ratio,
            rotate_ratio,
            permute_sentence_ratio,
            delete_ratio,
            poisson_lambda,
            mask_length,
            replace_length,
            sentence_ends,
        };
        build(Mode::Bart(options), vocab)
    }

    /// Prefix LM: `ratio=None` splits uniformly, else at that share.
    #[staticmethod]
    #[pyo3(signature = (vocab, *, ratio = None, layout = "decoder", eos_id = None))]
    fn prefix(
        vocab: &PyVocab,
        ratio: Option<f64>,
        layout: &str,
        eos_id: Option<u32>,
    ) -> BindingResult<Self> {
        let layout = match layout {
            "decoder" => PrefixLayout::Decoder,
            "encoder-decoder" => PrefixLayout::EncoderDecoder,
            other => {
                return Err(config_error(
                    format!("layout '{other}' is not decoder or encoder-decoder"),
                    "pass --layout decoder or --layout encoder-decoder",
                )
                .into())
            }
        };
        let options = PrefixOptions {
            split: ratio.map_or(PrefixSplit::Uniform, PrefixSplit::Ratio),
            layout,
            eos: eos_id,
        };
        build(Mode::Prefix(options), vocab)
    }

    /// UL2's mixture. `denoisers` holds `(kind, density, mean_span, mode_id,
    /// weight)` with kind "span" or "prefix"; None gives the paper's seven
    /// with `mode_ids` = ([NLU], [NLG], [S2S]).
    #[staticmethod]
    #[pyo3(signature = (vocab, sentinels, *, mode_ids = None, denoisers = None, eos_id = None))]
    fn ul2(
        vocab: &PyVocab,
        sentinels: Vec<u32>,
        mode_ids: Option<(u32, u32, u32)>,
        denoisers: Option<Vec<DenoiserSpec>>,
        eos_id: Option<u32>,
    ) -> BindingResult<Self> {
        let span = SpanOptions {
            noise_density: 0.15,
            mean_span: 3.0,
            sentinels,
            eos: eos_id,
        };
        let options = match (denoisers, mode_ids) {
            (Some(list), _) => Ul2Options {
                span,
                denoisers: list
                    .into_iter()
                    .map(|(kind, density, mean_span, token, weight)| {
                        let denoiser = match kind.as_str() {
                            "span" => Denoiser::Span { density, mean_span },
                            "prefix" => Denoiser::Prefix,
                            other => {
                                return Err(config_error(
                                    format!("denoiser kind '{other}' is not span or prefix"),
                                    "give each denoiser the kind span or prefix",
                                ))
                            }
                        };
                        Ok((denoiser, token, weight))
                    })
                    .collect::<Result<_, _>>()?,
            },
            (None, Some((nlu, nlg, s2s))) => Ul2Options::paper(span, nlu, nlg, s2s),
            (None, None) => {
                return Err(config_error(
                    "UL2 needs its mode tokens".to_owned(),
                    "pass mode_ids=([NLU], [NLG], [S2S]) ids, or the denoisers",
                )
                .into())
            }
        };
        build(Mode::Ul2(options), vocab)
    }

    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode().name()
    }

    #[getter]
    fn vocab(&self) -> PyVocab {
        PyVocab {
            inner: self.inner.vocab().clone(),
        }
    }

    /// Corrupts a `list<uint32>` array (or a 2-D integer array cut at
    /// `lengths`), row `i` drawing from `keys[i]` (None: a hash of the
    /// row's tokens, so a row's corruption follows its content); returns pyarrow arrays `input_ids`, `labels`, and
    /// `prefix_lens` / `denoiser` where the mode makes them.
    #[pyo3(signature = (tokens, keys = None, *, seed, epoch = 0, lengths = None, seq_lens = None, word_ids = None, column = "input_ids"))]
    #[allow(clippy::too_many_arguments)]
    fn corrupt<'py>(
        &self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        keys: Option<PyReadonlyArray1<'py, u64>>,
        seed: u64,
        epoch: u64,
        lengths: Option<Vec<i64>>,
        seq_lens: Option<PyArray>,
        word_ids: Option<PyArray>,
        column: &str,
    ) -> BindingResult<Bound<'py, PyDict>> {
        let out = self.run(
            py, tokens, keys, seed, epoch, lengths, seq_lens, word_ids, column,
        )?;
        let dict = PyDict::new(py);
        let inputs =
            list_of::<UInt32Type>(out.inputs.values, &out.inputs.offsets, DataType::UInt32);
        let labels = list_of::<Int32Type>(out.labels.values, &out.labels.offsets, DataType::Int32);
        dict.set_item("input_ids", to_pyarrow(py, inputs)?)?;
        dict.set_item("labels", to_pyarrow(py, labels)?)?;
        if matches!(self.inner.mode(), Mode::Prefix(_) | Mode::Ul2(_)) {
            let prefix = list_of::<UInt32Type>(
                out.prefix_lens.values,
                &out.prefix_lens.offsets,
                DataType::UInt32,
            );
            dict.set_item("prefix_lens", to_pyarrow(py, prefix)?)?;
        }
        if matches!(self.inner.mode(), Mode::Ul2(_)) {
            let denoiser: ArrayRef = Arc::new(UInt8Array::from(out.denoiser));
            dict.set_item("denoiser", to_pyarrow(py, denoiser)?)?;
        }
        Ok(dict)
    }

    /// As `corrupt`, padded into int64 numpy arrays ready for a model:
    /// `input_ids` and `attention_mask` (padded with `pad_id` and 0),
    /// `labels` (padded with -100), `decoder_input_ids` when
    /// `decoder_start_id` is given (labels shifted right), `prefix_lens`
    /// `[batch, documents]` and `denoiser` where the mode makes them.
    /// `attention_mask=False` leaves the mask out.
    #[pyo3(signature = (tokens, keys = None, *, seed, epoch = 0, lengths = None, seq_lens = None, word_ids = None, column = "input_ids", pad_id = 0, pad_to_multiple_of = 1, decoder_start_id = None, attention_mask = true))]
    #[allow(clippy::too_many_arguments)]
    fn corrupt_padded<'py>(
        &self,
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        keys: Option<PyReadonlyArray1<'py, u64>>,
        seed: u64,
        epoch: u64,
        lengths: Option<Vec<i64>>,
        seq_lens: Option<PyArray>,
        word_ids: Option<PyArray>,
        column: &str,
        pad_id: i64,
        pad_to_multiple_of: usize,
        decoder_start_id: Option<i64>,
        attention_mask: bool,
    ) -> BindingResult<Bound<'py, PyDict>> {
        let layout = Layout {
            pad_id,
            pad_to_multiple_of,
            decoder_start_id,
            attention_mask,
        };
        let plain_rows = lengths.is_none() && seq_lens.is_none() && word_ids.is_none();
        if plain_rows {
            if let Some(dense) = self.span_dense(py, tokens, keys.as_ref(), seed, epoch)? {
                return dense_batch(py, dense, &layout);
            }
        }
        let out = self.run(
            py, tokens, keys, seed, epoch, lengths, seq_lens, word_ids, column,
        )?;
        let rows = out.rows();
        let with_prefix = matches!(self.inner.mode(), Mode::Prefix(_) | Mode::Ul2(_));
        let with_denoiser = matches!(self.inner.mode(), Mode::Ul2(_));
        let (batch, prefix_width, prefix) = py.detach(|| {
            let width = round_up(out.inputs.max_len(), pad_to_multiple_of);
            let label_width = round_up(out.labels.max_len(), pad_to_multiple_of);
            let inputs = padded(&out.inputs, width, pad_id);
            let labels = padded(&out.labels, label_width, i64::from(corrupt::IGNORE_INDEX));
            let shape = (rows, width, label_width);
            let batch = Padded::new(&layout, shape, inputs, labels, |r| out.inputs.row(r).len());
            let prefix_width = out.prefix_lens.max_len();
            let prefix = padded(&out.prefix_lens, prefix_width, 0);
            (batch, prefix_width, prefix)
        });
        let dict = batch.into_dict(py)?;
        if with_prefix {
            dict.set_item("prefix_lens", array2(py, rows, prefix_width, prefix))?;
        }
        if with_denoiser {
            let denoiser: Vec<i64> = out.denoiser.iter().map(|&d| i64::from(d)).collect();
            dict.set_item("denoiser", denoiser.into_pyarray(py))?;
        }
        Ok(dict)
    }
}

/// Token rows given as Python lists of ints, read straight into a
/// `list<uint32>` array: about three times faster than pyarrow's generic
/// converter, which bounded collators fed lists of dicts.
#[pyfunction]
fn token_lists_from_python<'py>(
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

/// T5's length helper: the raw row length that span-corrupts into exactly
/// `inputs_length` inputs, and the targets' length.
#[pyfunction]
#[pyo3(signature = (inputs_length, *, noise_density = 0.15, mean_span = 3.0))]
fn t5_input_and_target_lengths(
    inputs_length: usize,
    noise_density: f64,
    mean_span: f64,
) -> BindingResult<(usize, usize)> {
    Ok(corrupt::t5_input_and_target_lengths(
        inputs_length,
        noise_density,
        mean_span,
    )?)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyVocab>()?;
    module.add_class::<PyCorruptor>()?;
    module.add_function(wrap_pyfunction!(t5_input_and_target_lengths, module)?)?;
    module.add_function(wrap_pyfunction!(token_lists_from_python, module)?)?;
    Ok(())
}
