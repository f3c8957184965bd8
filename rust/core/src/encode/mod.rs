//! The fast exact encoder: text to the ids Hugging Face `tokenizers` gives
//! for the same `tokenizer.json`, without its general machinery.
//!
//! [`FastEncoder::from_tokenizer`] reads the tokenizer's own serialized
//! configuration and takes it only when every part is one it implements
//! exactly: byte-level BPE (after the GPT-2, cl100k, Qwen 2 or o200k
//! pre-tokenizer pattern) or WordPiece (after BERT's normalizer and
//! pre-tokenizer), no normalizer or NFC/NFKC, added tokens without
//! stripping rules, and a post-processor that only adds tokens around the
//! text. Anything else (an unknown pattern, a normalizer or model it does
//! not implement, an option it does not know) returns the reason, and the
//! caller encodes with the `tokenizers` crate instead: never an
//! approximation.
//!
//! Parity with `tokenizers` is tested on the shared corpora with every
//! shared tokenizer file, on an adversarial suite and on random Unicode.

mod added;
mod byte_bpe;
mod pretokenize;
mod unicode;
#[rustfmt::skip]
mod unicode_tables;
mod wordpiece;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::AHashMap;
use serde_json::Value;
use unicode_normalization_alignments::UnicodeNormalization;

pub use byte_bpe::PieceCache;
pub use pretokenize::Pattern;

use added::AddedTokens;
use byte_bpe::ByteLevelBpe;
use wordpiece::{BertNormalizer, WordPiece};

/// A normalizer the fast path applies exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Normalizer {
    Nfc,
    Nfkc,
    Bert(BertNormalizer),
}

impl Normalizer {
    fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self {
            // ASCII is already in every normalization form.
            Self::Nfc | Self::Nfkc if text.is_ascii() => Cow::Borrowed(text),
            Self::Nfc => Cow::Owned(text.nfc().map(|(c, _)| c).collect()),
            Self::Nfkc => Cow::Owned(text.nfkc().map(|(c, _)| c).collect()),
            Self::Bert(bert) => bert.apply(text),
        }
    }
}

enum Model {
    ByteLevel {
        bpe: Box<ByteLevelBpe>,
        pattern: Pattern,
        add_prefix_space: bool,
    },
    WordPiece(WordPiece),
}

/// An exact fast encoder for one tokenizer.
pub struct FastEncoder {
    id: u64,
    normalizer: Option<Normalizer>,
    added: AddedTokens,
    model: Model,
    special_prefix: Vec<u32>,
    special_suffix: Vec<u32>,
    description: String,
}

/// Per-thread state an encoder reuses between calls: the merges already
/// made. Held per thread so a warm pool needs no locks.
pub struct EncodeState {
    pieces: PieceCache,
}

impl EncodeState {
    fn new() -> Self {
        Self {
            pieces: PieceCache::default(),
        }
    }
}

/// Texts from this many bytes on are cut into parts encoded in parallel.
const LONG_TEXT: usize = 1 << 20;

/// How many encoders' caches a thread keeps; the oldest goes first.
const CACHES_PER_THREAD: usize = 4;

thread_local! {
    static STATES: RefCell<Vec<(u64, EncodeState)>> = const { RefCell::new(Vec::new()) };
}

fn value_str<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

impl FastEncoder {
    /// The fast encoder for `tokenizer`, or why it cannot take it.
    ///
    /// # Errors
    ///
    /// A sentence naming the part of the tokenizer the fast path does not
    /// implement exactly.
    pub fn from_tokenizer(tokenizer: &tokenizers::Tokenizer) -> Result<Self, String> {
        let json = tokenizer
            .to_string(false)
            .map_err(|err| format!("the tokenizer does not serialize ({err})"))?;
        let config: Value =
            serde_json::from_str(&json).map_err(|err| format!("the tokenizer's JSON ({err})"))?;

        let normalizer = match config.get("normalizer") {
            None | Some(Value::Null) => None,
            Some(n) => Some(match value_str(n, "type") {
                Some("NFC") => Normalizer::Nfc,
                Some("NFKC") => Normalizer::Nfkc,
                Some("BertNormalizer") => Normalizer::Bert(BertNormalizer::from_json(n)?),
                other => return Err(format!("the normalizer {}", other.unwrap_or("?"))),
            }),
        };
        let model_json = config.get("model").ok_or("the tokenizer has no model")?;
        let pre_tokenizer = config.get("pre_tokenizer").unwrap_or(&Value::Null);
        let model = match value_str(model_json, "type") {
            Some("BPE") => byte_level_model(model_json, pre_tokenizer)?,
            Some("WordPiece") => {
                if value_str(pre_tokenizer, "type") != Some("BertPreTokenizer") {
                    return Err(format!(
                        "WordPiece after the pre-tokenizer {}",
                        describe(pre_tokenizer)
                    ));
                }
                if !matches!(normalizer, Some(Normalizer::Bert(_))) {
                    return Err("WordPiece without BERT's normalizer".into());
                }
                Model::WordPiece(WordPiece::from_json(model_json)?)
            }
            other => return Err(format!("the model {}", other.unwrap_or("?"))),
        };

        let added =
            AddedTokens::from_json(config.get("added_tokens").unwrap_or(&Value::Null), |text| {
                normalizer.map_or(text.to_owned(), |n| n.apply(text).into_owned())
            })?;
        let (special_prefix, special_suffix) = special_tokens_around(tokenizer, &config)?;

        let description = match &model {
            Model::ByteLevel { pattern, bpe, .. } => format!(
                "fast: byte-level BPE, {} pre-tokenizer, {} of {} tokens answered whole",
                pattern.name(),
                bpe.whole_tokens(),
                tokenizer.get_vocab_size(false)
            ),
            Model::WordPiece(_) => "fast: WordPiece after BERT's normalizer".to_owned(),
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            normalizer,
            added,
            model,
            special_prefix,
            special_suffix,
            description,
        })
    }

    #[cfg(test)]
    fn byte_level_bpe(&self) -> Option<&ByteLevelBpe> {
        match &self.model {
            Model::ByteLevel { bpe, .. } => Some(bpe),
            Model::WordPiece(_) => None,
        }
    }

    /// Which path this tokenizer takes and why, for `inspect` and the CLI.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Appends the ids of `text` to `ids` (and each token's word index to
    /// `words`, -1 for tokens the post-processor adds), as `tokenizers`'
    /// `encode(text, add_special_tokens)` would.
    ///
    /// A text of a megabyte or more is cut at line starts where no piece
    /// can cross (see [`FastEncoder::cut_points`]) and its parts encoded in
    /// parallel on the current rayon pool, so one long document uses every
    /// core; the ids do not depend on the number of threads.
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
        ids: &mut Vec<u32>,
        mut words: Option<&mut Vec<i32>>,
    ) {
        if add_special_tokens {
            ids.extend_from_slice(&self.special_prefix);
            if let Some(words) = words.as_deref_mut() {
                words.extend(std::iter::repeat_n(-1, self.special_prefix.len()));
            }
        }
        let cuts = self.cut_points(text);
        if cuts.len() <= 2 {
            self.with_state(|state| self.encode_part(text, ids, words.as_deref_mut(), 0, state));
        } else {
            self.encode_parts(text, &cuts, ids, words.as_deref_mut());
        }
        if add_special_tokens {
            ids.extend_from_slice(&self.special_suffix);
            if let Some(words) = words {
                words.extend(std::iter::repeat_n(-1, self.special_suffix.len()));
            }
        }
    }

    /// Where a long text may be cut, first and last offsets included: at a
    /// line start that begins with an ASCII letter after a line that ends
    /// in something other than whitespace. Every pattern ends a piece
    /// there, the same whether the text goes on or ends (a longer
    /// whitespace run would split differently before the end of the text),
    /// none of the normalizers joins across it, and cutting is off when
    /// something else could cross it (an added token holding a newline, a
    /// prefix space, which would be added to every part).
    fn cut_points(&self, text: &str) -> Vec<usize> {
        let bytes = text.as_bytes();
        let prefix_space = matches!(
            self.model,
            Model::ByteLevel {
                add_prefix_space: true,
                ..
            }
        );
        if bytes.len() < LONG_TEXT || prefix_space || self.added.has_newline() {
            return vec![0, bytes.len()];
        }
        let parts = (rayon::current_num_threads() * 4).max(1);
        let step = (bytes.len() / parts).max(LONG_TEXT / 4);
        let mut cuts = vec![0];
        let mut next = step;
        while next < bytes.len() {
            // `x\na`, x ASCII and not whitespace: the newline is a piece of its
            // own whether a letter or the end of the text follows it.
            let found = bytes[next..].windows(3).position(|w| {
                w[0].is_ascii()
                    && !(w[0] == b' ' || (0x09..=0x0D).contains(&w[0]))
                    && w[1] == b'\n'
                    && w[2].is_ascii_alphabetic()
            });
            match found {
                Some(offset) => {
                    let cut = next + offset + 2;
                    cuts.push(cut);
                    next = cut + step;
                }
                None => break,
            }
        }
        cuts.push(bytes.len());
        cuts
    }

    fn encode_parts(
        &self,
        text: &str,
        cuts: &[usize],
        ids: &mut Vec<u32>,
        words: Option<&mut Vec<i32>>,
    ) {
        use rayon::prelude::*;
        let want_words = words.is_some();
        let parts: Vec<(Vec<u32>, Vec<i32>, i32)> = cuts
            .par_windows(2)
            .map(|w| {
                let (mut part_ids, mut part_words) = (Vec::new(), Vec::new());
                let count = self.with_state(|state| {
                    self.encode_part(
                        &text[w[0]..w[1]],
                        &mut part_ids,
                        want_words.then_some(&mut part_words),
                        0,
                        state,
                    )
                });
                (part_ids, part_words, count)
            })
            .collect();
        let mut first_word = 0;
        match words {
            None => parts.iter().for_each(|(p, _, _)| ids.extend_from_slice(p)),
            Some(words) => {
                for (part_ids, part_words, count) in parts {
                    ids.extend_from_slice(&part_ids);
                    words.extend(part_words.iter().map(|w| w + first_word));
                    first_word += count;
                }
            }
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut EncodeState) -> R) -> R {
        STATES.with(|states| {
            let mut states = states.borrow_mut();
            let index = match states.iter().position(|(id, _)| *id == self.id) {
                Some(index) => index,
                None => {
                    if states.len() >= CACHES_PER_THREAD {
                        states.remove(0);
                    }
                    states.push((self.id, EncodeState::new()));
                    states.len() - 1
                }
            };
            f(&mut states[index].1)
        })
    }

    /// Encodes a text or a part of one, its words numbered from
    /// `first_word`; returns the number of words after the part.
    fn encode_part(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        mut words: Option<&mut Vec<i32>>,
        first_word: i32,
        state: &mut EncodeState,
    ) -> i32 {
        let mut word = first_word;
        self.added.split_raw(text, |part| match part {
            added::Part::Token(id) => {
                push_word(ids, words.as_deref_mut(), &[id], &mut word);
            }
            added::Part::Text(raw) => {
                let normalized = match &self.normalizer {
                    Some(n) => n.apply(raw),
                    None => Cow::Borrowed(raw),
                };
                self.added.split_normalized(&normalized, |part| match part {
                    added::Part::Token(id) => {
                        push_word(ids, words.as_deref_mut(), &[id], &mut word);
                    }
                    added::Part::Text(piece) => {
                        self.encode_text(piece, ids, words.as_deref_mut(), &mut word, state);
                    }
                });
            }
        });
        word
    }

    /// One stretch of normalized text between added tokens.
    fn encode_text(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        mut words: Option<&mut Vec<i32>>,
        word: &mut i32,
        state: &mut EncodeState,
    ) {
        if text.is_empty() {
            return;
        }
        match &self.model {
            Model::ByteLevel {
                bpe,
                pattern,
                add_prefix_space,
            } => {
                let prefixed;
                let text = if *add_prefix_space && !text.starts_with(' ') {
                    prefixed = format!(" {text}");
                    prefixed.as_str()
                } else {
                    text
                };
                let bytes = text.as_bytes();
                // Pieces are slices of `bytes`; the model reads past a short
                // piece's end (within `bytes`) to key it without a copy.
                let start_of = |piece: &[u8]| piece.as_ptr() as usize - bytes.as_ptr() as usize;
                match words {
                    None => pattern.for_each_piece(bytes, |piece| {
                        let start = start_of(piece);
                        bpe.encode_piece(bytes, start, start + piece.len(), ids, &mut state.pieces);
                    }),
                    Some(words) => pattern.for_each_piece(bytes, |piece| {
                        let before = ids.len();
                        let start = start_of(piece);
                        bpe.encode_piece(bytes, start, start + piece.len(), ids, &mut state.pieces);
                        words.extend(std::iter::repeat_n(*word, ids.len() - before));
                        *word += 1;
                    }),
                }
            }
            Model::WordPiece(model) => {
                let bytes = text.as_bytes();
                wordpiece::for_each_word(text, |piece| {
                    let before = ids.len();
                    let start = piece.as_ptr() as usize - bytes.as_ptr() as usize;
                    match state.pieces.get_in(bytes, start, piece.len()) {
                        Some(cached) => ids.extend_from_slice(cached),
                        None => {
                            model.encode_word(piece, ids);
                            state.pieces.insert(piece.as_bytes(), &ids[before..]);
                        }
                    }
                    if let Some(words) = words.as_deref_mut() {
                        words.extend(std::iter::repeat_n(*word, ids.len() - before));
                    }
                    *word += 1;
                });
            }
        }
    }
}

fn push_word(ids: &mut Vec<u32>, words: Option<&mut Vec<i32>>, piece: &[u32], word: &mut i32) {
    ids.extend_from_slice(piece);
    if let Some(words) = words {
        words.extend(std::iter::repeat_n(*word, piece.len()));
    }
    *word += 1;
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "none".to_owned(),
        other => value_str(other, "type").unwrap_or("?").to_owned(),
    }
}

/// The byte-level model behind a pre-tokenizer the fast path scans.
fn byte_level_model(model: &Value, pre_tokenizer: &Value) -> Result<Model, String> {
    for (key, wanted) in [
        ("dropout", Value::Null),
        ("continuing_subword_prefix", Value::Null),
        ("end_of_word_suffix", Value::Null),
    ] {
        let value = model.get(key).unwrap_or(&Value::Null);
        if *value != wanted {
            return Err(format!("BPE with {key} = {value}"));
        }
    }
    let (pattern, add_prefix_space) = byte_level_pre_tokenizer(pre_tokenizer)?;
    let vocab: AHashMap<&str, u32> = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or("BPE without a vocabulary")?
        .iter()
        .map(|(token, id)| {
            let id = id.as_u64().and_then(|id| u32::try_from(id).ok());
            id.map(|id| (token.as_str(), id))
                .ok_or_else(|| format!("the token {token:?} has no valid id"))
        })
        .collect::<Result<_, String>>()?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("BPE without merges")?
        .iter()
        .map(|merge| match merge {
            Value::String(s) => s
                .split_once(' ')
                .ok_or_else(|| format!("the merge {s:?} is not two tokens")),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok((a.as_str(), b.as_str())),
                _ => Err(format!("the merge {merge} is not two tokens")),
            },
            _ => Err(format!("the merge {merge} is not two tokens")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let ignore_merges = model
        .get("ignore_merges")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let bpe = Box::new(ByteLevelBpe::new(&vocab, &merges, ignore_merges)?);
    Ok(Model::ByteLevel {
        bpe,
        pattern,
        add_prefix_space,
    })
}

/// `ByteLevel { use_regex: true }`, or a `Split` on a known pattern
/// (isolated) followed by `ByteLevel { use_regex: false }`.
fn byte_level_pre_tokenizer(pre: &Value) -> Result<(Pattern, bool), String> {
    let unknown = || format!("the pre-tokenizer {pre}");
    let byte_level = |value: &Value, use_regex: bool| -> Option<bool> {
        (value_str(value, "type") == Some("ByteLevel")
            && value.get("use_regex").and_then(Value::as_bool) == Some(use_regex))
        .then(|| value.get("add_prefix_space").and_then(Value::as_bool))
        .flatten()
    };
    if let Some(add_prefix_space) = byte_level(pre, true) {
        return Ok((Pattern::Gpt2, add_prefix_space));
    }
    if value_str(pre, "type") != Some("Sequence") {
        return Err(unknown());
    }
    let steps = pre
        .get("pretokenizers")
        .and_then(Value::as_array)
        .ok_or_else(unknown)?;
    match steps.as_slice() {
        [only] => byte_level(only, true)
            .map(|prefix| (Pattern::Gpt2, prefix))
            .ok_or_else(unknown),
        [split, last] => {
            let regex = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Value::as_str);
            let isolated = value_str(split, "type") == Some("Split")
                && value_str(split, "behavior") == Some("Isolated")
                && split.get("invert").and_then(Value::as_bool) == Some(false);
            let pattern = regex.and_then(Pattern::from_regex).filter(|_| isolated);
            // A prefix space would be added to every split piece; no known file does that.
            match (pattern, byte_level(last, false)) {
                (Some(pattern), Some(false)) => Ok((pattern, false)),
                _ => Err(unknown()),
            }
        }
        _ => Err(unknown()),
    }
}

/// The ids the post-processor puts before and after a single sequence,
/// read from the post-processor itself: it is run on a one-token encoding.
fn special_tokens_around(
    tokenizer: &tokenizers::Tokenizer,
    config: &Value,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    const ADDS_ONLY: [&str; 5] = [
        "ByteLevel",
        "TemplateProcessing",
        "BertProcessing",
        "RobertaProcessing",
        "Sequence",
    ];
    let processor = config.get("post_processor").unwrap_or(&Value::Null);
    let supported = |p: &Value| ADDS_ONLY.contains(&value_str(p, "type").unwrap_or(""));
    match processor {
        Value::Null => return Ok((Vec::new(), Vec::new())),
        p if !supported(p) => return Err(format!("the post-processor {}", describe(p))),
        p => {
            let steps = p.get("processors").and_then(Value::as_array);
            if steps.is_some_and(|steps| !steps.iter().all(supported)) {
                return Err("a post-processor sequence with an unknown step".into());
            }
        }
    }
    const PROBE: u32 = u32::MAX - 7;
    let probe = tokenizers::Encoding::from_tokens(
        vec![tokenizers::Token::new(PROBE, "x".into(), (0, 1))],
        0,
    );
    let processed = tokenizer
        .post_process(probe, None, true)
        .map_err(|err| format!("the post-processor failed on a probe ({err})"))?;
    let ids = processed.get_ids();
    let at = ids
        .iter()
        .position(|&id| id == PROBE)
        .filter(|&at| ids.iter().filter(|&&id| id == PROBE).count() == 1 && at < ids.len())
        .ok_or("the post-processor rewrites the text's own tokens")?;
    Ok((ids[..at].to_vec(), ids[at + 1..].to_vec()))
}

#[cfg(test)]
mod tests;
