//! The corruption engine: masked LM, T5 span corruption, BART noise, prefix
//! LM and UL2's mixture of denoisers over token rows.
//!
//! Every mode is a pure function of (seed, mode, epoch, row key, row): the row
//! key picks a [`RowRng`] stream, so rows come out the same whatever the batch
//! size, thread count, or whether the CLI stage or a collator ran them. A row
//! may hold several documents (a packed row); its document lengths travel as
//! `segments`, and no span, masked word or permutation crosses from one
//! document into the next.

mod bart;
mod mlm;
mod prefix;
mod span;
mod ul2;

use rayon::prelude::*;

use crate::error::{Result, TokenmillError};
use crate::rng::{Draws, RowRng, StreamKey};

pub use bart::{BartOptions, MaskLength};
pub use mlm::{MlmOptions, SpanLengths};
pub use prefix::{PrefixLayout, PrefixOptions, PrefixSplit};
pub use span::{t5_input_and_target_lengths, SpanOptions};
pub use ul2::{Denoiser, Ul2Options};

/// Label value the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// What the engine needs to know about the vocabulary: its size, which ids
/// are special (never chosen, never moved), which ids begin a word, and the
/// ordinary ids random replacements are drawn from.
#[derive(Clone, Debug)]
pub struct Vocab {
    size: u32,
    special: Vec<u64>,
    words: Option<WordBits>,
    ordinary: Vec<u32>,
}

/// How a vocabulary marks words, one flag per id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WordMarks {
    /// Flagged ids begin a word (byte-level `Ġ`, SentencePiece `▁`, or any
    /// token but a WordPiece `##` continuation).
    Starts(Vec<bool>),
    /// Flagged ids end a word (a `</w>` suffix): the next token begins one.
    Ends(Vec<bool>),
    /// No marks: every token is a word of its own (word-level vocabularies).
    EveryToken,
}

#[derive(Clone, Debug)]
enum WordBits {
    Starts(Vec<u64>),
    Ends(Vec<u64>),
    EveryToken,
}

fn bit(bits: &[u64], id: u32) -> bool {
    bits.get(id as usize / 64)
        .is_some_and(|word| word >> (id % 64) & 1 == 1)
}

/// The largest vocabulary a [`Vocab`] takes, far above any tokenizer's
/// (the largest hold a few hundred thousand tokens): it keeps a table of
/// the ordinary ids, 4 bytes each, and a size of `u32::MAX` took 16 GiB.
pub const MAX_VOCAB_SIZE: u32 = 1 << 24;

impl Vocab {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] if `size` is 0 or above [`MAX_VOCAB_SIZE`],
    /// a special id is not below `size`, or every id is special (no token to
    /// draw random replacements from).
    pub fn new(size: u32, special_ids: &[u32]) -> Result<Self> {
        if size == 0 || size > MAX_VOCAB_SIZE {
            return Err(TokenmillError::config(
                format!("the vocabulary size {size} is outside [1, {MAX_VOCAB_SIZE}]"),
                "pass the tokenizer the data was tokenized with",
            ));
        }
        let mut special = vec![0u64; (size as usize).div_ceil(64)];
        for &id in special_ids {
            if id >= size {
                return Err(TokenmillError::config(
                    format!("special token id {id} is outside the vocabulary of {size}"),
                    "pass the tokenizer the data was tokenized with",
                ));
            }
            special[id as usize / 64] |= 1 << (id % 64);
        }
        let ordinary: Vec<u32> = (0..size).filter(|&id| !bit(&special, id)).collect();
        if ordinary.is_empty() {
            return Err(TokenmillError::config(
                "every token of the vocabulary is special",
                "pass the tokenizer the data was tokenized with",
            ));
        }
        Ok(Self {
            size,
            special,
            words: None,
            ordinary,
        })
    }

    /// Tells the vocabulary how its tokens mark words; whole-word modes
    /// group a word's tokens by it.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Config`] if the flags are not one per id.
    pub fn with_word_marks(mut self, marks: WordMarks) -> Result<Self> {
        let to_bits = |flags: &[bool]| -> Result<Vec<u64>> {
            if flags.len() != self.size as usize {
                return Err(TokenmillError::config(
                    format!(
                        "{} word flags for a vocabulary of {}",
                        flags.len(),
                        self.size
                    ),
                    "give one flag per token id",
                ));
            }
            let mut bits = vec![0u64; flags.len().div_ceil(64)];
            for (id, _) in flags.iter().enumerate().filter(|(_, &f)| f) {
                bits[id / 64] |= 1 << (id % 64);
            }
            Ok(bits)
        };
        self.words = Some(match marks {
            WordMarks::Starts(flags) => WordBits::Starts(to_bits(&flags)?),
            WordMarks::Ends(flags) => WordBits::Ends(to_bits(&flags)?),
            WordMarks::EveryToken => WordBits::EveryToken,
        });
        Ok(self)
    }

    /// [`Vocab::with_word_marks`] with the ids that begin a word.
    ///
    /// # Errors
    ///
    /// As [`Vocab::with_word_marks`].
    pub fn with_word_starts(self, starts: &[bool]) -> Result<Self> {
        self.with_word_marks(WordMarks::Starts(starts.to_vec()))
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether the vocabulary says how it marks words.
    pub fn has_word_marks(&self) -> bool {
        self.words.is_some()
    }

    #[inline]
    pub fn is_special(&self, id: u32) -> bool {
        bit(&self.special, id)
    }

    /// A uniformly drawn non-special id.
    #[inline]
    fn random_ordinary(&self, rng: &mut RowRng) -> u32 {
        self.ordinary[rng.below(self.ordinary.len() as u32) as usize]
    }
}

/// A batch of token rows: row `i` is `values[offsets[i]..offsets[i + 1]]`.
///
/// `segments`, when present, holds each row's document lengths (row `i`'s are
/// `lengths[segment_offsets[i]..segment_offsets[i + 1]]`), as `pack` writes
/// them in `seq_lens`; without it each row is one document. `word_ids`, when
/// present, holds each token's word index as `tokenize --word-ids` saves it
/// (aligned with `values`; -1 for tokens of no word), and then decides where
/// words start instead of the vocabulary's marks.
#[derive(Clone, Copy, Debug)]
pub struct TokenRows<'a> {
    pub values: &'a [u32],
    pub offsets: &'a [usize],
    pub segments: Option<Segments<'a>>,
    pub word_ids: Option<&'a [i32]>,
}

#[derive(Clone, Copy, Debug)]
pub struct Segments<'a> {
    pub lengths: &'a [u32],
    pub offsets: &'a [usize],
}

impl TokenRows<'_> {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn row(&self, i: usize) -> &[u32] {
        &self.values[self.offsets[i]..self.offsets[i + 1]]
    }

    fn row_word_ids(&self, i: usize) -> Option<&[i32]> {
        self.word_ids
            .map(|ids| &ids[self.offsets[i]..self.offsets[i + 1]])
    }
}

/// Whether each token of a row starts a word: from the row's saved word ids
/// when given, else from the vocabulary's marks. Callers add the starts that
/// documents and special tokens make.
fn word_starts(vocab: &Vocab, row: &[u32], word_ids: Option<&[i32]>) -> Vec<bool> {
    match (word_ids, &vocab.words) {
        (Some(ids), _) => (0..row.len())
            .map(|i| i == 0 || ids[i] < 0 || ids[i] != ids[i - 1])
            .collect(),
        (None, Some(WordBits::Starts(bits))) => row.iter().map(|&t| bit(bits, t)).collect(),
        (None, Some(WordBits::Ends(bits))) => (0..row.len())
            .map(|i| i == 0 || bit(bits, row[i - 1]))
            .collect(),
        (None, Some(WordBits::EveryToken) | None) => vec![true; row.len()],
    }
}

/// Growable Arrow-style lists: row `i` is `values[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lists<T> {
    pub values: Vec<T>,
    pub offsets: Vec<usize>,
}

impl<T: Copy> Lists<T> {
    fn with_capacity(rows: usize, values: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            values: Vec::with_capacity(values),
            offsets,
        }
    }

    fn close_row(&mut self) {
        self.offsets.push(self.values.len());
    }

    fn append(&mut self, other: &Self) {
        let base = self.values.len();
        self.values.extend_from_slice(&other.values);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn row(&self, i: usize) -> &[T] {
        &self.values[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The longest row, for padding.
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Rows corrupted into row-major int64 buffers of one width each (see
/// [`Corruptor::span_dense`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseCorrupted {
    pub rows: usize,
    /// `[rows, input_width]`, row-major.
    pub inputs: Vec<i64>,
    pub input_width: usize,
    /// `[rows, label_width]`, row-major.
    pub labels: Vec<i64>,
    pub label_width: usize,
}

/// The corrupted rows: model inputs, labels, and what some modes add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupted {
    /// Encoder (or decoder-only) inputs.
    pub inputs: Lists<u32>,
    /// Targets: original ids and [`IGNORE_INDEX`] (mlm, decoder prefix), or
    /// the decoder's target sequence (span, bart, encoder-decoder prefix, ul2).
    pub labels: Lists<i32>,
    /// Prefix lengths, one per document of the row (prefix mode, decoder
    /// layout, and ul2's S-denoiser); empty for the other modes.
    pub prefix_lens: Lists<u32>,
    /// Which denoiser of the mixture made each row (ul2); empty otherwise.
    pub denoiser: Vec<u8>,
}

impl Corrupted {
    fn with_capacity(rows: usize, tokens: usize) -> Self {
        Self {
            inputs: Lists::with_capacity(rows, tokens + rows),
            labels: Lists::with_capacity(rows, tokens + rows),
            prefix_lens: Lists::with_capacity(rows, rows),
            denoiser: Vec::new(),
        }
    }

    fn close_row(&mut self) {
        self.inputs.close_row();
        self.labels.close_row();
        self.prefix_lens.close_row();
    }

    fn append(&mut self, other: &Self) {
        self.inputs.append(&other.inputs);
        self.labels.append(&other.labels);
        self.prefix_lens.append(&other.prefix_lens);
        self.denoiser.extend_from_slice(&other.denoiser);
    }

    pub fn rows(&self) -> usize {
        self.inputs.rows()
    }
}

/// One corruption mode with its options.
#[derive(Clone, Debug)]
pub enum Mode {
    Mlm(MlmOptions),
    Span(SpanOptions),
    Bart(BartOptions),
    Prefix(PrefixOptions),
    Ul2(Ul2Options),
}

impl Mode {
    /// The mode's name, which is also its random stream's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mlm(_) => "mlm",
            Self::Span(_) => "span",
            Self::Bart(_) => "bart",
            Self::Prefix(_) => "prefix",
            Self::Ul2(_) => "ul2",
        }
    }
}

/// A validated mode bound to its vocabulary, ready to corrupt batches.
#[derive(Clone, Debug)]
pub struct Corruptor {
    mode: Mode,
    vocab: Vocab,
}

/// Below this many tokens a batch runs on the calling thread: a collator's
/// batch is done before rayon would have woken its workers.
pub const PARALLEL_MIN_TOKENS: usize = 1 << 16;

impl Corruptor {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for a rate outside `[0, 1]`, a mask or
    /// sentinel id outside the vocabulary, or options the mode cannot honour
    /// (for example whole-word masking without word starts).
    pub fn new(mode: Mode, vocab: Vocab) -> Result<Self> {
        match &mode {
            Mode::Mlm(o) => o.validate(&vocab)?,
            Mode::Span(o) => o.validate(&vocab)?,
            Mode::Bart(o) => o.validate(&vocab)?,
            Mode::Prefix(o) => o.validate()?,
            Mode::Ul2(o) => o.validate(&vocab)?,
        }
        Ok(Self { mode, vocab })
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Corrupts every row of `rows`; row `i` draws from `keys[i]`'s stream.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Data`] naming the first bad row: a token id outside
    /// the vocabulary, document lengths that do not add up to the row, a row
    /// too short for the mode, or more spans than sentinels.
    ///
    /// # Panics
    ///
    /// Panics if `keys` does not hold one key per row.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokenmill_core::corrupt::{Corruptor, MlmOptions, Mode, TokenRows, Vocab};
    /// let vocab = Vocab::new(100, &[0, 1]).unwrap();
    /// let mlm = Corruptor::new(Mode::Mlm(MlmOptions::new(1)), vocab).unwrap();
    /// let values: Vec<u32> = (10..20).collect();
    /// let rows = TokenRows { values: &values, offsets: &[0, 10], segments: None, word_ids: None };
    /// let out = mlm.corrupt(&rows, &[7], 42, 0).unwrap();
    /// assert_eq!(out.inputs.row(0).len(), 10);
    /// ```
    pub fn corrupt(
        &self,
        rows: &TokenRows<'_>,
        keys: &[u64],
        seed: u64,
        epoch: u64,
    ) -> Result<Corrupted> {
        assert_eq!(keys.len(), rows.len(), "one row key per row");
        if let Some(ids) = rows.word_ids {
            assert_eq!(ids.len(), rows.values.len(), "one word id per token");
        }
        let needs_words = match &self.mode {
            Mode::Mlm(o) => o.whole_word,
            Mode::Bart(o) => o.mask_length != MaskLength::Subword,
            _ => false,
        };
        if needs_words && !self.vocab.has_word_marks() && rows.word_ids.is_none() {
            return Err(TokenmillError::config(
                "whole-word masking needs to know where words start",
                "pass the tokenizer (its byte-level Ġ, SentencePiece ▁ or WordPiece ## marks them), or word ids saved by `tokenize --word-ids`",
            ));
        }
        let stream = StreamKey::new(seed, self.mode.name(), epoch);
        let tokens =
            rows.offsets.last().copied().unwrap_or(0) - rows.offsets.first().copied().unwrap_or(0);
        let threads = rayon::current_num_threads();
        if tokens < PARALLEL_MIN_TOKENS || threads == 1 || rows.len() < 2 {
            return self.corrupt_range(rows, keys, stream, 0..rows.len());
        }
        let chunks = (threads * 4).min(rows.len());
        let bounds: Vec<usize> = (0..=chunks).map(|c| c * rows.len() / chunks).collect();
        let parts = bounds
            .par_windows(2)
            .map(|w| self.corrupt_range(rows, keys, stream, w[0]..w[1]))
            .collect::<Vec<_>>();
        let mut out = Corrupted::with_capacity(rows.len(), tokens);
        for part in parts {
            out.append(&part?);
        }
        Ok(out)
    }

    /// Span corruption of a row-major `[rows, width]` batch (a 2-D array)
    /// straight into int64 buffers: T5's rows of one length all come out one
    /// length, so a collator needs neither intermediate lists nor a padding
    /// pass. Each row goes through the same code as in [`Corruptor::corrupt`]
    /// and is keyed the same way (`keys`, else its tokens hashed as
    /// [`row_keys_from_tokens`] does), so the rows are identical.
    ///
    /// Returns `Ok(None)` for modes other than span, or a batch large enough
    /// to be worth the thread pool: [`Corruptor::corrupt`] handles those.
    ///
    /// # Errors
    ///
    /// As [`Corruptor::corrupt`]: a token id that is negative or outside the
    /// vocabulary, a row under 2 tokens, too few sentinels for the row.
    ///
    /// # Panics
    ///
    /// Panics if `data.len()` is not a multiple of `width`, or `keys` does
    /// not hold one key per row.
    ///
    /// # Examples
    ///
    /// ```
    /// use tokenmill_core::corrupt::{Corruptor, Mode, SpanOptions, Vocab};
    /// let vocab = Vocab::new(200, &[0, 1]).unwrap();
    /// let span = SpanOptions {
    ///     sentinels: (100..200).rev().collect(),
    ///     eos: Some(1),
    ///     ..SpanOptions::default()
    /// };
    /// let corruptor = Corruptor::new(Mode::Span(span), vocab).unwrap();
    /// let batch: Vec<i64> = (0..2 * 40).map(|i| 2 + i % 90).collect();
    /// let dense = corruptor.span_dense(&batch, 40, None, 7, 0).unwrap().unwrap();
    /// assert_eq!((dense.rows, dense.input_width, dense.label_width), (2, 37, 9));
    /// ```
    pub fn span_dense<T: Copy + Into<i64>>(
        &self,
        data: &[T],
        width: usize,
        keys: Option<&[u64]>,
        seed: u64,
        epoch: u64,
    ) -> Result<Option<DenseCorrupted>> {
        let Mode::Span(options) = &self.mode else {
            return Ok(None);
        };
        let rows = data.len().checked_div(width).unwrap_or(0);
        assert_eq!(rows * width, data.len(), "a [rows, width] batch");
        if let Some(keys) = keys {
            assert_eq!(keys.len(), rows, "one row key per row");
        }
        if data.len() >= PARALLEL_MIN_TOKENS && rayon::current_num_threads() > 1 {
            return Ok(None);
        }
        let stream = StreamKey::new(seed, self.mode.name(), epoch);
        let mut dense = DenseCorrupted {
            rows,
            inputs: Vec::new(),
            input_width: 0,
            labels: Vec::new(),
            label_width: 0,
        };
        let segments = [width as u32];
        let mut row = Vec::with_capacity(width);
        // Each row is corrupted into small buffers (in L1), then widened in
        // one vectorized pass: copying spans straight into int64 was slower.
        let (mut row_inputs, mut row_labels) = (Vec::new(), Vec::new());
        for r in 0..rows {
            // Narrowed and checked into a buffer that stays in L1, where the
            // hash and the copies read it again.
            row.clear();
            let mut high_bits = 0u64;
            row.extend(data[r * width..(r + 1) * width].iter().map(|&v| {
                let v: i64 = v.into();
                high_bits |= v as u64 >> 32;
                v as u32
            }));
            let highest = row.iter().copied().max().unwrap_or(0);
            if high_bits != 0 || highest >= self.vocab.size {
                let bad = data[r * width..(r + 1) * width]
                    .iter()
                    .map(|&v| v.into())
                    .find(|&v: &i64| v < 0 || v >= i64::from(self.vocab.size))
                    .expect("a bad id");
                return Err(if bad < 0 {
                    TokenmillError::data(
                        r,
                        format!("token id {bad} is not a valid id"),
                        "pass non-negative token ids; padding belongs past each row's length",
                    )
                } else {
                    TokenmillError::data(
                        r,
                        format!(
                            "token id {bad} is outside the vocabulary of {}",
                            self.vocab.size
                        ),
                        "pass the tokenizer the data was tokenized with",
                    )
                });
            }
            let key = keys.map_or_else(|| row_key_from_tokens(&row), |keys| keys[r]);
            row_inputs.clear();
            row_labels.clear();
            span::corrupt_with(
                true,
                options,
                options.noise_density,
                options.mean_span,
                &row,
                &segments,
                &mut stream.row(key),
                &mut row_inputs,
                &mut row_labels,
            )
            .map_err(|e| e.offset_row(r))?;
            dense
                .inputs
                .extend(row_inputs.iter().map(|&t| i64::from(t)));
            dense
                .labels
                .extend(row_labels.iter().map(|&t| i64::from(t)));
            if r == 0 {
                dense.input_width = dense.inputs.len();
                dense.label_width = dense.labels.len();
                dense.inputs.reserve(rows * dense.input_width);
                dense.labels.reserve(rows * dense.label_width);
            }
        }
        debug_assert_eq!(dense.inputs.len(), rows * dense.input_width);
        debug_assert_eq!(dense.labels.len(), rows * dense.label_width);
        Ok(Some(dense))
    }

    fn corrupt_range(
        &self,
        rows: &TokenRows<'_>,
        keys: &[u64],
        stream: StreamKey,
        range: std::ops::Range<usize>,
    ) -> Result<Corrupted> {
        let tokens = rows.offsets[range.end] - rows.offsets[range.start];
        let mut out = Corrupted::with_capacity(range.len(), tokens);
        let mut whole = [0u32; 1];
        for i in range {
            let row = rows.row(i);
            let segments = match rows.segments {
                Some(s) => {
                    let lengths = &s.lengths[s.offsets[i]..s.offsets[i + 1]];
                    let total: u64 = lengths.iter().map(|&l| u64::from(l)).sum();
                    if total != row.len() as u64 {
                        return Err(TokenmillError::data(
                            i,
                            format!(
                                "document lengths add up to {total} but the row holds {} tokens",
                                row.len()
                            ),
                            "pass the seq_lens column `tokenmill pack` wrote for these rows",
                        ));
                    }
                    lengths
                }
                None => {
                    whole[0] = row.len() as u32;
                    &whole[..]
                }
            };
            // A branch-free maximum vectorizes where a search would not; the
            // search runs only to name the first bad id.
            let highest = row.iter().copied().max().unwrap_or(0);
            if highest >= self.vocab.size {
                let bad = row
                    .iter()
                    .find(|&&t| t >= self.vocab.size)
                    .expect("an id at or above the maximum");
                return Err(TokenmillError::data(
                    i,
                    format!(
                        "token id {bad} is outside the vocabulary of {}",
                        self.vocab.size
                    ),
                    "pass the tokenizer the data was tokenized with",
                ));
            }
            let mut rng = stream.row(keys[i]);
            let words = rows.row_word_ids(i);
            let row_out = match &self.mode {
                Mode::Mlm(o) => {
                    mlm::corrupt(o, &self.vocab, row, segments, words, &mut rng, &mut out)
                }
                Mode::Span(o) => span::corrupt(o, row, segments, &mut rng, &mut out),
                Mode::Bart(o) => {
                    bart::corrupt(o, &self.vocab, row, segments, words, &mut rng, &mut out)
                }
                Mode::Prefix(o) => prefix::corrupt(o, row, segments, &mut rng, &mut out),
                Mode::Ul2(o) => ul2::corrupt(o, &self.vocab, row, segments, &mut rng, &mut out),
            };
            row_out.map_err(|e| e.offset_row(i))?;
            out.close_row();
        }
        Ok(out)
    }
}

/// Row keys from the rows' own tokens, for callers whose rows carry no id
/// (a collator fed bare token lists): a row's draws then follow its content.
pub fn row_keys_from_tokens(values: &[u32], offsets: &[usize]) -> Vec<u64> {
    offsets
        .windows(2)
        .map(|w| row_key_from_tokens(&values[w[0]..w[1]]))
        .collect()
}

/// One row's key from its tokens (see [`row_keys_from_tokens`]).
#[inline]
pub fn row_key_from_tokens(tokens: &[u32]) -> u64 {
    crate::rng::row_key_from_bytes(le_bytes(tokens).as_ref())
}

/// The little-endian bytes of `tokens`, borrowed where memory already holds them so.
fn le_bytes(tokens: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: u32 has no padding and any byte pattern is a valid u8; the
        // length covers exactly the slice's memory.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(tokens.as_ptr().cast::<u8>(), std::mem::size_of_val(tokens))
        })
    } else {
        std::borrow::Cow::Owned(tokens.iter().flat_map(|t| t.to_le_bytes()).collect())
    }
}

/// Checks a rate option lies in `[0, 1]`.
fn check_rate(name: &str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(TokenmillError::config(
            format!("{name} is {value}, outside [0, 1]"),
            format!("pass a rate between 0 and 1 for {name}"),
        ))
    }
}

/// Checks a token id the mode inserts lies in the vocabulary.
fn check_id(name: &str, id: u32, vocab: &Vocab) -> Result<()> {
    if id < vocab.size {
        Ok(())
    } else {
        Err(TokenmillError::tokenizer(
            format!(
                "the {name} id {id} is outside the vocabulary of {}",
                vocab.size
            ),
            "pass the tokenizer the data was tokenized with",
        ))
    }
}

/// Threshold `t` such that `next_u32() < t` holds with probability `p`.
#[inline]
fn threshold(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64
}

/// `k` positive lengths adding up to `n`, uniform over all such
/// compositions (T5's `_random_segmentation`), in O(k + n / 64).
///
/// A composition is fixed by which `k - 1` of the `n - 1` gaps between items
/// are cuts; Floyd's algorithm draws that subset with exactly `k - 1` draws.
fn random_segmentation(n: usize, k: usize, rng: &mut RowRng, out: &mut Vec<usize>) {
    out.clear();
    debug_assert!(k >= 1 && k <= n, "{k} segments of {n} items");
    if k == 1 {
        out.push(n);
        return;
    }
    // Cut j (0-based) falls after item j + 1.
    let slots = n - 1;
    let mut draws = Draws::new(rng);
    // Floyd: for each j, draw t in [0, j]; take t, or j if t is taken. The
    // choice is branch-free, as whether t is taken is a coin flip to the
    // branch predictor.
    let mut push_cuts = |word: usize, mut bits: u64, previous: &mut usize| {
        while bits != 0 {
            let cut = word * 64 + bits.trailing_zeros() as usize + 1;
            out.push(cut - *previous);
            *previous = cut;
            bits &= bits - 1;
        }
    };
    let mut previous = 0;
    if slots <= 128 {
        // T5's noise segmentation, and most rows' clean one fit here: the set
        // stays in registers instead of a load and store per draw.
        let mut cuts = 0u128;
        for j in (slots - (k - 1))..slots {
            let t = draws.below(j as u32 + 1) as usize;
            let taken = (cuts >> t) as usize & 1;
            let pick = t + (j - t) * taken;
            cuts |= 1u128 << pick;
        }
        push_cuts(0, cuts as u64, &mut previous);
        push_cuts(1, (cuts >> 64) as u64, &mut previous);
    } else {
        // Rows of up to 4096 tokens keep the bitset on the stack (an
        // allocation per call cost as much as the draws), T5's 568 in eight
        // words that are cheap to clear.
        let (mut small, mut large, mut on_heap);
        let words = slots.div_ceil(64);
        let cuts: &mut [u64] = if words <= 8 {
            small = [0u64; 8];
            &mut small[..words]
        } else if words <= 64 {
            large = [0u64; 64];
            &mut large[..words]
        } else {
            on_heap = vec![0u64; words];
            &mut on_heap
        };
        for j in (slots - (k - 1))..slots {
            let t = draws.below(j as u32 + 1) as usize;
            let taken = (cuts[t / 64] >> (t % 64) & 1) as usize;
            let pick = t + (j - t) * taken;
            cuts[pick / 64] |= 1 << (pick % 64);
        }
        for (word, &bits) in cuts.iter().enumerate() {
            push_cuts(word, bits, &mut previous);
        }
    }
    out.push(n - previous);
}

/// `count` distinct values of `0..n` in increasing order, uniformly (Floyd).
fn random_subset_sorted(n: usize, count: usize, rng: &mut RowRng) -> Vec<usize> {
    debug_assert!(count <= n);
    let mut chosen = vec![0u64; n.div_ceil(64)];
    for j in (n - count)..n {
        let t = rng.below(j as u32 + 1) as usize;
        let pick = if chosen[t / 64] >> (t % 64) & 1 == 1 {
            j
        } else {
            t
        };
        chosen[pick / 64] |= 1 << (pick % 64);
    }
    let mut out = Vec::with_capacity(count);
    for (w, &word) in chosen.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            out.push(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    out
}

/// Fisher-Yates shuffle driven by the row's stream.
fn shuffle<T>(items: &mut [T], rng: &mut RowRng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        items.swap(i, j);
    }
}

/// Splits `total` into integer parts proportional to `weights`, each within
/// `[low[j], high[j]]` (largest remainder, ties to the earlier part), so a
/// packed row's noise budget is shared among its documents deterministically.
/// Returns the parts and their sum, which differs from `total` only when the
/// bounds cannot reach it.
fn apportion(
    total: usize,
    weights: &[usize],
    low: &[usize],
    high: &[usize],
) -> (Vec<usize>, usize) {
    let weight_sum: usize = weights.iter().sum();
    let mut parts: Vec<usize> = weights
        .iter()
        .zip(low.iter().zip(high))
        .map(|(&w, (&lo, &hi))| {
            let ideal = (total * w).checked_div(weight_sum).unwrap_or(0);
            ideal.clamp(lo, hi.max(lo))
        })
        .collect();
    let mut sum: usize = parts.iter().sum();
    // Rank parts by how far below (or above) their exact share they sit.
    let remainder = |j: usize, parts: &[usize]| -> f64 {
        let exact = if weight_sum == 0 {
            0.0
        } else {
            total as f64 * weights[j] as f64 / weight_sum as f64
        };
        exact - parts[j] as f64
    };
    while sum < total {
        let best = (0..parts.len())
            .filter(|&j| parts[j] < high[j])
            .max_by(|&a, &b| {
                remainder(a, &parts)
                    .total_cmp(&remainder(b, &parts))
                    .then(b.cmp(&a))
            });
        match best {
            Some(j) => {
                parts[j] += 1;
                sum += 1;
            }
            None => break,
        }
    }
    while sum > total {
        let best = (0..parts.len())
            .filter(|&j| parts[j] > low[j])
            .min_by(|&a, &b| {
                remainder(a, &parts)
                    .total_cmp(&remainder(b, &parts))
                    .then(a.cmp(&b))
            });
        match best {
            Some(j) => {
                parts[j] -= 1;
                sum -= 1;
            }
            None => break,
        }
    }
    (parts, sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn segmentation_is_uniform_over_compositions() {
        // 5 items in 3 positive parts: C(4, 2) = 6 compositions, each 1/6.
        let stream = StreamKey::new(1, "test", 0);
        let mut counts = std::collections::HashMap::new();
        let mut out = Vec::new();
        for key in 0..60_000u64 {
            random_segmentation(5, 3, &mut stream.row(key), &mut out);
            *counts.entry(out.clone()).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 6);
        for (parts, n) in counts {
            assert_eq!(parts.iter().sum::<usize>(), 5);
            assert!((n as f64 / 10_000.0 - 1.0).abs() < 0.05, "{parts:?}: {n}");
        }
    }

    #[test]
    fn a_vocabulary_past_any_tokenizers_is_refused() {
        assert!(Vocab::new(MAX_VOCAB_SIZE, &[0]).is_ok());
        // u32::MAX once built a 16 GiB table of ordinary ids.
        for size in [0, MAX_VOCAB_SIZE + 1, u32::MAX] {
            let err = Vocab::new(size, &[]).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn dense_span_rows_equal_the_general_path() {
        let vocab = Vocab::new(1100, &[0, 1]).unwrap();
        let options = SpanOptions {
            sentinels: (1000..1100).rev().collect(),
            eos: Some(1),
            ..SpanOptions::default()
        };
        let corruptor = Corruptor::new(Mode::Span(options), vocab).unwrap();
        let (rows, width) = (9, 120);
        let data: Vec<i64> = (0..rows * width)
            .map(|i| 2 + (i as i64 * 7919) % 990)
            .collect();
        let values: Vec<u32> = data.iter().map(|&v| v as u32).collect();
        let offsets: Vec<usize> = (0..=rows).map(|r| r * width).collect();
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: None,
        };
        for given in [None, Some((0..rows as u64).collect::<Vec<_>>())] {
            let keys = given
                .clone()
                .unwrap_or_else(|| row_keys_from_tokens(&values, &offsets));
            let lists = corruptor.corrupt(&batch, &keys, 3, 1).unwrap();
            let dense = corruptor
                .span_dense(&data, width, given.as_deref(), 3, 1)
                .unwrap()
                .unwrap();
            assert_eq!(dense.rows, rows);
            for r in 0..rows {
                let inputs = &dense.inputs[r * dense.input_width..(r + 1) * dense.input_width];
                let labels = &dense.labels[r * dense.label_width..(r + 1) * dense.label_width];
                let want: Vec<i64> = lists.inputs.row(r).iter().map(|&v| v.into()).collect();
                assert_eq!(inputs, want.as_slice());
                let want: Vec<i64> = lists.labels.row(r).iter().map(|&v| v.into()).collect();
                assert_eq!(labels, want.as_slice());
            }
        }
        let mut bad = data.clone();
        bad[width + 3] = 5000;
        let err = corruptor.span_dense(&bad, width, None, 3, 1).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        assert!(err.to_string().contains("5000"), "{err}");
        bad[width + 3] = -4;
        let err = corruptor.span_dense(&bad, width, None, 3, 1).unwrap_err();
        assert!(err.to_string().contains("-4"), "{err}");
        let mlm = Corruptor::new(Mode::Mlm(MlmOptions::new(1)), Vocab::new(10, &[0]).unwrap());
        assert!(mlm
            .unwrap()
            .span_dense(&[2i64, 3], 2, None, 0, 0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn apportion_respects_bounds_and_total() {
        assert_eq!(apportion(10, &[1, 1], &[0, 0], &[10, 10]), (vec![5, 5], 10));
        assert_eq!(apportion(3, &[1, 1], &[0, 0], &[10, 10]), (vec![2, 1], 3));
        assert_eq!(apportion(10, &[9, 1], &[0, 0], &[6, 10]), (vec![6, 4], 10));
        assert_eq!(apportion(10, &[1, 1], &[0, 0], &[2, 3]), (vec![2, 3], 5));
        assert_eq!(apportion(1, &[5, 5], &[1, 1], &[5, 5]), (vec![1, 1], 2));
    }

    proptest! {
        #[test]
        fn segmentation_parts_are_positive(n in 1usize..300, k_seed in 0usize..300, key: u64) {
            let k = 1 + k_seed % n;
            let mut out = Vec::new();
            random_segmentation(n, k, &mut StreamKey::new(0, "t", 0).row(key), &mut out);
            prop_assert_eq!(out.len(), k);
            prop_assert!(out.iter().all(|&p| p > 0));
            prop_assert_eq!(out.iter().sum::<usize>(), n);
        }

        #[test]
        fn subsets_are_sorted_and_distinct(n in 0usize..500, c_seed in 0usize..500, key: u64) {
            let count = if n == 0 { 0 } else { c_seed % (n + 1) };
            let subset = random_subset_sorted(n, count, &mut StreamKey::new(0, "t", 0).row(key));
            prop_assert_eq!(subset.len(), count);
            prop_assert!(subset.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(subset.iter().all(|&v| v < n));
        }
    }
}
