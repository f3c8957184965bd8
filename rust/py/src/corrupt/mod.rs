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
    self, BartOptions, Corrupted, Corruptor, Denoiser, DenseCorrupted, MaskLength, MlmOptions,
    Mode, PrefixLayout, PrefixOptions, PrefixSplit, Segments, SpanLengths, SpanOptions, TokenRows,
    Ul2Options,
};
use tokenmill_core::TokenmillError;

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
type DenoiserSpec = (String, f64, f64, u32, f64);

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
