//! The corruption engine: one `Corruptor` per mode, run by the `corrupt`
//! stage over Arrow batches and by the collators over padded batches.

use std::sync::Arc;

use arrow_array::types::{Int32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, UInt8Array};
use arrow_schema::DataType;
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::PyArray;
use tokenmill_core::columns::token_lists;
use tokenmill_core::corrupt::{
    self, BartOptions, Corrupted, Corruptor, Denoiser, DenseCorrupted, MlmOptions, Mode,
    PrefixOptions, PrefixSplit, Segments, SpanLengths, SpanOptions, TokenRows, Ul2Options,
};
use tokenmill_core::TokenmillError;

use crate::conversion::{apply_knobs, knob, knob_values, DenoiserKind, Knob, Wrap};
use crate::error::BindingResult;
use crate::tokenizer::PyTokenizer;
use crate::utils::{detach, detach_inline, list_of, to_pyarrow};

mod input;
mod output;

use input::{aligned_word_ids, cut_rows, matrix_rows, token_lists_from_python, Segmentation};
use output::{array2, dense_batch, padded, round_up, Layout, Padded};

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

/// A UL2 denoiser from Python: `(kind, density, mean_span, mode_id, weight)`.
type DenoiserSpec = (Wrap<DenoiserKind>, f64, f64, u32, f64);

/// Each mode's options as Python names them, each listed once: a knob reads
/// its keyword argument in the constructor and its default in
/// `corruption_defaults`, both from the Rust options struct. Options that
/// are ids of the caller's vocabulary (mask, sentinels, EOS) are
/// constructor arguments instead: no default fits every vocabulary.
const MLM: &[Knob<MlmOptions>] = &[
    knob!("probability" => probability),
    knob!("mask_rate" => mask_rate),
    knob!("random_rate" => random_rate),
    knob!("whole_word" => whole_word),
    // `span` first: `span_p` and `span_max` shape the spans it switches on.
    knob!("span" => |o| o.span.is_some(), |o, on: bool| o.span = on.then(|| span_lengths(o))),
    knob!("span_p" => |o| span_lengths(o).p,
        |o, p: f64| if let Some(s) = &mut o.span { s.p = p }),
    knob!("span_max" => |o| span_lengths(o).max,
        |o, max: u32| if let Some(s) = &mut o.span { s.max = max }),
    knob!("max_predictions" => max_predictions),
];

/// SpanBERT's lengths as MLM has them, or would once `span` switches them on.
fn span_lengths(options: &MlmOptions) -> SpanLengths {
    options.span.clone().unwrap_or_default()
}

const SPAN: &[Knob<SpanOptions>] = &[
    knob!("noise_density" => noise_density),
    knob!("mean_span" => mean_span),
];

const BART: &[Knob<BartOptions>] = &[
    knob!("mask_ratio" => mask_ratio),
    knob!("random_ratio" => random_ratio),
    knob!("insert_ratio" => insert_ratio),
    knob!("rotate_ratio" => rotate_ratio),
    knob!("permute_sentence_ratio" => permute_sentence_ratio),
    knob!("delete_ratio" => delete_ratio),
    knob!("poisson_lambda" => poisson_lambda),
    knob!("mask_length" => mask_length as Wrap),
    knob!("replace_length" => replace_length),
];

const PREFIX: &[Knob<PrefixOptions>] = &[
    // None: a uniform split.
    knob!("ratio" => |o| split_ratio(o.split), |o, r: Option<f64>| o.split = split_at(r)),
    knob!("layout" => layout as Wrap),
];

fn split_ratio(split: PrefixSplit) -> Option<f64> {
    match split {
        PrefixSplit::Uniform => None,
        PrefixSplit::Ratio(r) => Some(r),
    }
}

fn split_at(ratio: Option<f64>) -> PrefixSplit {
    ratio.map_or(PrefixSplit::Uniform, PrefixSplit::Ratio)
}

/// The Rust defaults of a corruption mode's options, by their Python names.
#[pyfunction]
fn corruption_defaults<'py>(py: Python<'py>, mode: &str) -> BindingResult<Bound<'py, PyDict>> {
    Ok(match mode {
        "mlm" => knob_values(py, &MlmOptions::default(), MLM)?,
        "span" => knob_values(py, &SpanOptions::default(), SPAN)?,
        "bart" => knob_values(py, &BartOptions::default(), BART)?,
        "prefix" => knob_values(py, &PrefixOptions::default(), PREFIX)?,
        // The mixture's options are its denoisers, given whole or as the paper's.
        "ul2" => PyDict::new(py),
        other => {
            return Err(config_error(
                format!("corruption mode '{other}' is not mlm, span, bart, prefix or ul2"),
                "pass one of mlm, span, bart, prefix, ul2",
            )
            .into())
        }
    })
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
    /// SpanBERT spans of geometric(`span_p`) words up to `span_max`. Options
    /// left out take `corruption_defaults("mlm")`.
    #[staticmethod]
    #[pyo3(signature = (vocab, mask_id, **options))]
    fn mlm(
        vocab: &PyVocab,
        mask_id: u32,
        options: Option<&Bound<'_, PyDict>>,
    ) -> BindingResult<Self> {
        let base = MlmOptions {
            mask_id,
            ..MlmOptions::default()
        };
        let options = apply_knobs("mlm", base, MLM, options)?;
        build(Mode::Mlm(options), vocab)
    }

    /// T5 span corruption with the given sentinels (`<extra_id_0>` first).
    #[staticmethod]
    #[pyo3(signature = (vocab, sentinels, *, eos_id = None, **options))]
    fn span(
        vocab: &PyVocab,
        sentinels: Vec<u32>,
        eos_id: Option<u32>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> BindingResult<Self> {
        let base = SpanOptions {
            sentinels,
            eos: eos_id,
            ..SpanOptions::default()
        };
        let options = apply_knobs("span", base, SPAN, options)?;
        build(Mode::Span(options), vocab)
    }

    /// fairseq's BART noise; the defaults are `bart.large`'s.
    #[staticmethod]
    #[pyo3(signature = (vocab, mask_id, *, sentence_ends = Vec::new(), **options))]
    fn bart(
        vocab: &PyVocab,
        mask_id: u32,
        sentence_ends: Vec<u32>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> BindingResult<Self> {
        let base = BartOptions {
            mask_id,
            sentence_ends,
            ..BartOptions::default()
        };
        let options = apply_knobs("bart", base, BART, options)?;
        build(Mode::Bart(options), vocab)
    }

    /// Prefix LM: `ratio=None` splits uniformly, else at that share.
    #[staticmethod]
    #[pyo3(signature = (vocab, *, eos_id = None, **options))]
    fn prefix(
        vocab: &PyVocab,
        eos_id: Option<u32>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> BindingResult<Self> {
        let base = PrefixOptions {
            eos: eos_id,
            ..PrefixOptions::default()
        };
        let options = apply_knobs("prefix", base, PREFIX, options)?;
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
        // Each span denoiser carries its density and mean span: the span
        // options give the mixture its sentinels and EOS only.
        let span = SpanOptions {
            sentinels,
            eos: eos_id,
            ..SpanOptions::default()
        };
        let options = match (denoisers, mode_ids) {
            (Some(list), _) => Ul2Options {
                span,
                denoisers: list
                    .into_iter()
                    .map(|(Wrap(kind), density, mean_span, token, weight)| {
                        let denoiser = match kind {
                            DenoiserKind::Span => Denoiser::Span { density, mean_span },
                            DenoiserKind::Prefix => Denoiser::Prefix,
                        };
                        (denoiser, token, weight)
                    })
                    .collect(),
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

/// T5's length helper: the raw row length that span-corrupts into exactly
/// `inputs_length` inputs, and the targets' length.
#[pyfunction]
#[pyo3(signature = (inputs_length, *, noise_density = None, mean_span = None))]
fn t5_input_and_target_lengths(
    inputs_length: usize,
    noise_density: Option<f64>,
    mean_span: Option<f64>,
) -> BindingResult<(usize, usize)> {
    let defaults = SpanOptions::default();
    Ok(corrupt::t5_input_and_target_lengths(
        inputs_length,
        noise_density.unwrap_or(defaults.noise_density),
        mean_span.unwrap_or(defaults.mean_span),
    )?)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyVocab>()?;
    module.add_class::<PyCorruptor>()?;
    module.add_function(wrap_pyfunction!(t5_input_and_target_lengths, module)?)?;
    module.add_function(wrap_pyfunction!(corruption_defaults, module)?)?;
    module.add_function(wrap_pyfunction!(token_lists_from_python, module)?)?;
    Ok(())
}
