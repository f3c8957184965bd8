//! Text to token ids with a Hugging Face `tokenizer.json`, in parallel, in
//! row order.

use std::path::Path;
use std::sync::Arc;

use arrow_array::ListArray;
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use rayon::prelude::*;

use crate::columns::{list_of_u32, TextColumn};
use crate::encode::FastEncoder;
use crate::error::{Result, TokenmillError};

/// A loaded tokenizer. Cheap to share between threads.
///
/// Text is encoded by tokenmill's exact fast encoder when it takes the
/// file ([`Tokenizer::encoder_path`] says), else by the `tokenizers` crate.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    fast: Result<Arc<FastEncoder>, Arc<str>>,
}

/// Which encoder a tokenizer's text goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncoderPath {
    /// tokenmill's fast encoder; the description names the model and pattern.
    Fast(String),
    /// The `tokenizers` crate, for the reason given.
    Exact(String),
}

const TOKENIZER_FIX: &str =
    "pass a Hugging Face tokenizer.json (save one with `tokenmill tokenizer train` or tokenizer.save())";

impl Tokenizer {
    /// Truncation and padding saved in the file are switched off: a stage
    /// must never cut or pad a document silently (packing does that, on purpose).
    pub fn new(mut inner: tokenizers::Tokenizer) -> Self {
        inner.with_padding(None);
        // Switching truncation off cannot fail; only invalid settings can.
        let _ = inner.with_truncation(None);
        let fast = FastEncoder::from_tokenizer(&inner)
            .map(Arc::new)
            .map_err(Arc::from);
        Self {
            inner: Arc::new(inner),
            fast,
        }
    }

    /// The same tokenizer encoding everything with the `tokenizers` crate,
    /// for checking the fast path against it.
    pub fn without_fast_path(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            fast: Err(Arc::from("the fast path was switched off")),
        }
    }

    /// The fast encoder, when it takes this tokenizer.
    pub fn fast_encoder(&self) -> Option<&FastEncoder> {
        self.fast.as_deref().ok()
    }

    /// Whether text goes through the fast encoder, and why not when it does not.
    pub fn encoder_path(&self) -> EncoderPath {
        match &self.fast {
            Ok(fast) => EncoderPath::Fast(fast.description().to_owned()),
            Err(reason) => EncoderPath::Exact(format!(
                "exact: the tokenizers crate, since the fast path does not implement {reason}"
            )),
        }
    }

    /// Appends the ids of one text (and word indices when asked) to `ids`,
    /// as `tokenizers`' `encode_fast` gives them.
    ///
    /// # Errors
    ///
    /// The `tokenizers` crate's message, on the exact path only.
    pub fn encode_into(
        &self,
        text: &str,
        add_special_tokens: bool,
        ids: &mut Vec<u32>,
        words: Option<&mut Vec<i32>>,
    ) -> std::result::Result<(), String> {
        if let Ok(fast) = &self.fast {
            fast.encode(text, add_special_tokens, ids, words);
            return Ok(());
        }
        // `encode_fast` skips word ids; `encode` gives the same ids with them.
        let encoding = if words.is_some() {
            self.inner.encode(text, add_special_tokens)
        } else {
            self.inner.encode_fast(text, add_special_tokens)
        }
        .map_err(|err| err.to_string())?;
        ids.extend_from_slice(encoding.get_ids());
        if let Some(words) = words {
            words.extend(
                encoding
                    .get_word_ids()
                    .iter()
                    .map(|w| w.and_then(|w| i32::try_from(w).ok()).unwrap_or(-1)),
            );
        }
        Ok(())
    }

    /// # Errors
    ///
    /// [`TokenmillError::Tokenizer`] when the file is missing or does not parse.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|err| {
            TokenmillError::tokenizer(
                format!("cannot read {}: {err}", path.display()),
                TOKENIZER_FIX,
            )
        })?;
        Self::from_json(&bytes).map_err(|err| match err {
            TokenmillError::Tokenizer { problem, fix } => {
                TokenmillError::tokenizer(format!("{}: {problem}", path.display()), fix)
            }
            other => other,
        })
    }

    /// # Errors
    ///
    /// [`TokenmillError::Tokenizer`] when the JSON is not a tokenizer.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        tokenizers::Tokenizer::from_bytes(json)
            .map(Self::new)
            .map_err(|err| {
                TokenmillError::tokenizer(format!("does not parse ({err})"), TOKENIZER_FIX)
            })
    }

    /// # Errors
    ///
    /// [`TokenmillError::Tokenizer`] if serialization fails.
    pub fn to_json(&self, pretty: bool) -> Result<String> {
        self.inner
            .to_string(pretty)
            .map_err(|err| TokenmillError::tokenizer(err.to_string(), TOKENIZER_FIX))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added and special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Ids of the tokens the tokenizer marks special (`<s>`, `<mask>`,
    /// sentinels...), which corruption never chooses, moves or draws.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How the vocabulary marks words, read from its own tokens: a WordPiece
    /// model's continuation prefix (`##`); else byte-level BPE's `Ġ` (and
    /// `Ċ`, a newline) or SentencePiece's `▁` at word starts; else a `</w>`
    /// suffix at word ends; else no marks, every token a word of its own (a
    /// word-level vocabulary). Special tokens count as starts and ends.
    pub fn word_marks(&self) -> crate::corrupt::WordMarks {
        use crate::corrupt::WordMarks;
        let special = self.special_ids();
        let tokens: Vec<Option<String>> = (0..self.vocab_size() as u32)
            .map(|id| {
                let special = special.binary_search(&id).is_ok();
                self.id_to_token(id).filter(|_| !special)
            })
            .collect();
        let flags = |mark: &dyn Fn(&str) -> bool| -> Vec<bool> {
            tokens
                .iter()
                .map(|t| t.as_deref().is_none_or(mark))
                .collect()
        };
        if let tokenizers::models::ModelWrapper::WordPiece(model) = self.inner.get_model() {
            let prefix = model.continuing_subword_prefix.clone();
            return WordMarks::Starts(flags(&|t| !t.starts_with(prefix.as_str())));
        }
        let any = |mark: &dyn Fn(&str) -> bool| tokens.iter().flatten().any(|t| mark(t));
        let starts = |t: &str| t.starts_with(['\u{120}', '\u{10A}', '\u{2581}']);
        if any(&starts) {
            return WordMarks::Starts(flags(&starts));
        }
        let ends = |t: &str| t.ends_with("</w>");
        if any(&ends) {
            return WordMarks::Ends(flags(&ends));
        }
        WordMarks::EveryToken
    }

    /// # Errors
    ///
    /// [`TokenmillError::Data`] for an id the vocabulary does not hold.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(position) = ids.iter().position(|&id| id as usize >= vocab) {
            return Err(TokenmillError::tokenizer(
                format!(
                    "token id {} (at position {position}) is outside the vocabulary of {vocab}",
                    ids[position]
                ),
                "decode with the tokenizer that produced these ids",
            ));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|err| TokenmillError::tokenizer(err.to_string(), TOKENIZER_FIX))
    }
}

/// How [`tokenize`] turns each document into ids.
#[derive(Clone, Debug, Default)]
pub struct TokenizeOptions {
    /// Run the tokenizer's post-processor (BERT's `[CLS] ... [SEP]`, say).
    pub add_special_tokens: bool,
    /// Appended to every document, so documents stay apart once packed.
    pub eos_id: Option<u32>,
    /// Also return each token's word index in its document (-1 for tokens
    /// of no word: special tokens and the EOS), for whole-word masking.
    pub word_ids: bool,
}

/// Token ids and, when asked for, the word index of every token.
pub struct Tokenized {
    pub ids: ListArray,
    pub word_ids: Option<ListArray>,
}

/// Encodes every row of `texts` into a `list<uint32>` array, row for row.
///
/// Rows are split into contiguous chunks encoded in parallel on the current
/// rayon pool; the output does not depend on the number of threads.
///
/// # Errors
///
/// [`TokenmillError::Data`] naming the first bad row (non-UTF-8 bytes in a
/// binary column, a tokenizer failure), or a batch holding more than
/// `i32::MAX` tokens; [`TokenmillError::Config`] for an EOS id outside the
/// vocabulary.
///
/// # Examples
///
/// ```no_run
/// # use tokenmill_core::tokenize::{tokenize, Tokenizer, TokenizeOptions};
/// # use tokenmill_core::columns::TextColumn;
/// # use arrow_array::Array;
/// let tokenizer = Tokenizer::from_file("tokenizer.json".as_ref()).unwrap();
/// let texts = arrow_array::StringArray::from(vec!["hello world"]);
/// let column = TextColumn::try_new("text", &texts).unwrap();
/// let ids = tokenize(&tokenizer, &column, &TokenizeOptions::default()).unwrap();
/// assert_eq!(ids.len(), 1);
/// ```
pub fn tokenize(
    tokenizer: &Tokenizer,
    texts: &TextColumn,
    options: &TokenizeOptions,
) -> Result<ListArray> {
    let options = TokenizeOptions {
        word_ids: false,
        ..*options
    };
    Ok(tokenize_words(tokenizer, texts, &options)?.ids)
}

/// As [`tokenize`], with each token's word index when `options.word_ids`.
///
/// # Errors
///
/// As [`tokenize`].
pub fn tokenize_words(
    tokenizer: &Tokenizer,
    texts: &TextColumn,
    options: &TokenizeOptions,
) -> Result<Tokenized> {
    if let Some(eos) = options.eos_id {
        if tokenizer.id_to_token(eos).is_none() {
            return Err(TokenmillError::config(
                format!(
                    "the end-of-sequence id {eos} is outside the vocabulary of {}",
                    tokenizer.vocab_size()
                ),
                "name the EOS by its token (--eos-token), or pass --no-eos",
            ));
        }
    }
    let rows = texts.len();
    let chunk_rows = chunk_size(rows);
    let chunks: Vec<Result<Encoded>> = (0..rows)
        .step_by(chunk_rows.max(1))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            encode_rows(
                tokenizer,
                texts,
                start..(start + chunk_rows).min(rows),
                options,
            )
        })
        .collect();

    let mut values = Vec::new();
    let mut words = Vec::new();
    let mut lengths = Vec::with_capacity(rows);
    for chunk in chunks {
        let chunk = chunk?;
        if values.is_empty() {
            values = chunk.ids;
            words = chunk.word_ids;
        } else {
            values.extend_from_slice(&chunk.ids);
            words.extend_from_slice(&chunk.word_ids);
        }
        lengths.extend(chunk.lengths);
    }
    let word_ids = if options.word_ids {
        let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
        Some(ListArray::try_new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(arrow_array::Int32Array::new(
                ScalarBuffer::from(words),
                None,
            )),
            None,
        )?)
    } else {
        None
    };
    Ok(Tokenized {
        ids: list_of_u32(values, &lengths)?,
        word_ids,
    })
}

/// One chunk of rows, encoded.
struct Encoded {
    ids: Vec<u32>,
    word_ids: Vec<i32>,
    lengths: Vec<usize>,
}

fn chunk_size(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 8).max(1)
}

fn encode_rows(
    tokenizer: &Tokenizer,
    texts: &TextColumn,
    rows: std::ops::Range<usize>,
    options: &TokenizeOptions,
) -> Result<Encoded> {
    // Text runs 3-5 bytes a token: sized for 4, the ids rarely move as they grow.
    let text_bytes: usize = rows.clone().map(|row| texts.bytes(row).len()).sum();
    let mut values = Vec::with_capacity(text_bytes / 4 + rows.len());
    let mut words = Vec::new();
    let mut lengths = Vec::with_capacity(rows.len());
    for row in rows {
        let text = texts.get(row)?;
        let before = values.len();
        // Even the empty document is encoded: a post-processor may add tokens to it.
        tokenizer
            .encode_into(
                text,
                options.add_special_tokens,
                &mut values,
                options.word_ids.then_some(&mut words),
            )
            .map_err(|err| {
                TokenmillError::data(
                    row,
                    format!("the tokenizer failed: {err}"),
                    "check that the tokenizer fits this text",
                )
            })?;
        if let Some(eos) = options.eos_id {
            values.push(eos);
            if options.word_ids {
                words.push(-1);
            }
        }
        lengths.push(values.len() - before);
    }
    Ok(Encoded {
        ids: values,
        word_ids: words,
        lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpe::WordCounts;
    use arrow_array::{Array, StringArray, UInt32Array};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn tokenizer() -> &'static Tokenizer {
        static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(|| {
            let corpus = StringArray::from(vec![
                "The stage runner streams record batches shard by shard.",
                "Every random choice is a pure function of the seed and the row key.",
                "fn main() { println!(\"hello\"); }",
            ]);
            let mut counts = WordCounts::default();
            counts
                .add(&TextColumn::try_new("text", &corpus).unwrap())
                .unwrap();
            counts.train(500, 1).unwrap()
        })
    }

    fn ids_with_threads(texts: &StringArray, threads: usize) -> ListArray {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let column = TextColumn::try_new("text", texts).unwrap();
        let options = TokenizeOptions {
            eos_id: Some(2),
            ..TokenizeOptions::default()
        };
        pool.install(|| tokenize(tokenizer(), &column, &options).unwrap())
    }

    #[test]
    fn an_eos_outside_the_vocabulary_is_refused_not_appended() {
        let texts = StringArray::from(vec!["a b"]);
        let column = TextColumn::try_new("text", &texts).unwrap();
        for eos in [500, u32::MAX] {
            let options = TokenizeOptions {
                eos_id: Some(eos),
                ..TokenizeOptions::default()
            };
            let err = tokenize(tokenizer(), &column, &options).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn output_is_row_for_row_whatever_the_thread_count() {
        let texts: StringArray = (0..257)
            .map(|i| Some(format!("row {i}: the seed {}", i * 7)))
            .collect();
        let one = ids_with_threads(&texts, 1);
        assert_eq!(one, ids_with_threads(&texts, 3));
        for row in 0..texts.len() {
            let expected = tokenizer().inner().encode(texts.value(row), false).unwrap();
            let got = one.value(row);
            let got = got.as_any().downcast_ref::<UInt32Array>().unwrap().values();
            assert_eq!(&got[..got.len() - 1], expected.get_ids());
            assert_eq!(got[got.len() - 1], 2);
        }
    }

    #[test]
    fn nulls_are_empty_documents() {
        let texts = StringArray::from(vec![Some("a"), None]);
        let ids = ids_with_threads(&texts, 1);
        assert_eq!(
            ids.value_length(1),
            1,
            "a null document holds only its end marker"
        );
    }

    proptest! {
        // Byte-level BPE loses nothing: decoding the ids gives back the text.
        #[test]
        fn any_text_round_trips(texts in proptest::collection::vec(".{0,40}", 1..8)) {
            let array = StringArray::from(texts.clone());
            let column = TextColumn::try_new("text", &array).unwrap();
            let ids = tokenize(tokenizer(), &column, &TokenizeOptions::default()).unwrap();
            for (row, text) in texts.iter().enumerate() {
                let row_ids = ids.value(row);
                let row_ids = row_ids.as_any().downcast_ref::<UInt32Array>().unwrap().values();
                prop_assert_eq!(&tokenizer().decode(row_ids, false).unwrap(), text);
            }
        }
    }
}
