//! Tokenizer loading, batch tokenization and BPE training.

use std::path::PathBuf;

use pyo3::prelude::*;
use tokenmill_core::bpe::{self, WordCounts};
use tokenmill_core::columns::TextColumn;
use tokenmill_core::tokenize::{self, TokenizeOptions, Tokenizer};

use crate::error::BindingResult;
use crate::utils::{arrow_input, detach, to_pyarrow};

/// A Hugging Face tokenizer, run by tokenmill's Rust core.
#[pyclass(name = "Tokenizer", module = "tokenmill._core", frozen)]
pub struct PyTokenizer {
    inner: Tokenizer,
}

impl PyTokenizer {
    pub fn core(&self) -> &Tokenizer {
        &self.inner
    }
}

#[pymethods]
impl PyTokenizer {
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> BindingResult<Self> {
        let inner = detach(py, || Ok(Tokenizer::from_file(&path)?))?;
        Ok(Self { inner })
    }

    #[staticmethod]
    fn from_str(json: &str) -> BindingResult<Self> {
        Ok(Self {
            inner: Tokenizer::from_json(json.as_bytes())?,
        })
    }

    #[pyo3(signature = (pretty = true))]
    fn to_str(&self, pretty: bool) -> BindingResult<String> {
        Ok(self.inner.to_json(pretty)?)
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn decode(&self, ids: Vec<u32>, skip_special_tokens: bool) -> BindingResult<String> {
        Ok(self.inner.decode(&ids, skip_special_tokens)?)
    }

    /// Token ids of one text; for batches use `tokenize`.
    #[pyo3(signature = (text, add_special_tokens = false))]
    fn encode(&self, text: &str, add_special_tokens: bool) -> BindingResult<Vec<u32>> {
        let mut ids = Vec::new();
        self.inner
            .encode_into(text, add_special_tokens, &mut ids, None)
            .map_err(|err| tokenmill_core::TokenmillError::data(0, err, "check the text"))?;
        Ok(ids)
    }

    /// Which encoder this tokenizer's text goes through: `"fast: ..."`
    /// (tokenmill's exact fast encoder) or `"exact: ..."` (the `tokenizers`
    /// crate, with the reason the fast path does not take the file).
    #[getter]
    fn encoder(&self) -> String {
        match self.inner.encoder_path() {
            tokenize::EncoderPath::Fast(how) | tokenize::EncoderPath::Exact(how) => how,
        }
    }

    /// The same tokenizer with every text encoded by the `tokenizers` crate,
    /// to check or time the fast path against.
    fn exact(&self) -> Self {
        Self {
            inner: self.inner.without_fast_path(),
        }
    }

    /// Encodes an Arrow string array into a `list<uint32>` pyarrow array.
    #[pyo3(signature = (texts, *, column = "text", add_special_tokens = false, eos_id = None))]
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        column: &str,
        add_special_tokens: bool,
        eos_id: Option<u32>,
    ) -> BindingResult<Bound<'py, PyAny>> {
        let options = TokenizeOptions {
            add_special_tokens,
            eos_id,
            word_ids: false,
        };
        let array = arrow_input(texts, column)?;
        let ids = detach(py, || {
            let column = TextColumn::try_new(column, array.as_ref())?;
            Ok(tokenize::tokenize(&self.inner, &column, &options)?)
        })?;
        Ok(to_pyarrow(py, std::sync::Arc::new(ids))?)
    }

    /// As `tokenize`, also returning each token's word index in its
    /// document (`list<int32>`, -1 for special tokens and the EOS).
    #[pyo3(signature = (texts, *, column = "text", add_special_tokens = false, eos_id = None))]
    fn tokenize_words<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        column: &str,
        add_special_tokens: bool,
        eos_id: Option<u32>,
    ) -> BindingResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let options = TokenizeOptions {
            add_special_tokens,
            eos_id,
            word_ids: true,
        };
        let array = arrow_input(texts, column)?;
        let tokenized = detach(py, || {
            let column = TextColumn::try_new(column, array.as_ref())?;
            Ok(tokenize::tokenize_words(&self.inner, &column, &options)?)
        })?;
        let words = tokenized.word_ids.expect("asked for word ids");
        Ok((
            to_pyarrow(py, std::sync::Arc::new(tokenized.ids))?,
            to_pyarrow(py, std::sync::Arc::new(words))?,
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(vocab_size={}, encoder={:?})",
            self.inner.vocab_size(),
            self.encoder()
        )
    }
}

/// Streams text into word counts, then trains a byte-level BPE.
#[pyclass(name = "BpeTrainer", module = "tokenmill._core")]
pub struct PyBpeTrainer {
    counts: WordCounts,
}

#[pymethods]
impl PyBpeTrainer {
    #[new]
    fn new() -> Self {
        Self {
            counts: WordCounts::default(),
        }
    }

    #[pyo3(signature = (texts, *, column = "text"))]
    fn add(&mut self, py: Python<'_>, texts: &Bound<'_, PyAny>, column: &str) -> BindingResult<()> {
        let array = arrow_input(texts, column)?;
        let counts = &mut self.counts;
        detach(py, || {
            let column = TextColumn::try_new(column, array.as_ref())?;
            Ok(counts.add(&column)?)
        })
    }

    #[getter]
    fn documents(&self) -> u64 {
        self.counts.documents()
    }

    #[getter]
    fn distinct_words(&self) -> usize {
        self.counts.distinct_words()
    }

    #[pyo3(signature = (vocab_size, *, min_frequency = 2))]
    fn train(
        &self,
        py: Python<'_>,
        vocab_size: usize,
        min_frequency: u64,
    ) -> BindingResult<PyTokenizer> {
        let counts = &self.counts;
        let inner = detach(py, || Ok(counts.train(vocab_size, min_frequency)?))?;
        Ok(PyTokenizer { inner })
    }
}

#[pyfunction]
pub fn special_tokens() -> Vec<String> {
    bpe::special_tokens()
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyTokenizer>()?;
    module.add_class::<PyBpeTrainer>()?;
    module.add_function(wrap_pyfunction!(special_tokens, module)?)?;
    Ok(())
}
