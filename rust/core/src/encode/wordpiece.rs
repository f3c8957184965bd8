//! WordPiece after BERT's normalizer and pre-tokenizer, as `tokenizers`
//! runs them: the same character tests (from the same Unicode crates), the
//! same order of steps, the same greedy longest-match-first.

use std::borrow::Cow;

use ahash::AHashMap;
use serde_json::Value;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// `BertNormalizer`'s four switches, `strip_accents` resolved (it follows
/// `lowercase` when unset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertNormalizer {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    /// What the four steps make of each ASCII byte (`REMOVED`: nothing).
    ascii: [u8; 128],
}

fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_bert_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

impl BertNormalizer {
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let flag = |key: &str, default: bool| -> Result<bool, String> {
            match value.get(key) {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!("BertNormalizer's {key} = {other}")),
            }
        };
        let lowercase = flag("lowercase", true)?;
        let strip_accents = match value.get("strip_accents") {
            None | Some(Value::Null) => lowercase,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("BertNormalizer's strip_accents = {other}")),
        };
        let mut normalizer = Self {
            clean_text: flag("clean_text", true)?,
            handle_chinese_chars: flag("handle_chinese_chars", true)?,
            strip_accents,
            lowercase,
            ascii: [0; 128],
        };
        normalizer.ascii = normalizer.ascii_table();
        Ok(normalizer)
    }

    /// The text as the normalizer leaves it.
    ///
    /// Every step acts on one character at a time except NFD's reordering
    /// of combining marks, which never moves a mark across an ASCII
    /// character (a starter): so ASCII runs take the fast path and only
    /// the runs between them the full one, with the same result.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text.is_ascii() {
            return self.apply_ascii(text);
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len() + text.len() / 8);
        let mut start = 0;
        while start < bytes.len() {
            let ascii = bytes[start].is_ascii();
            let end = bytes[start..]
                .iter()
                .position(|b| b.is_ascii() != ascii)
                .map_or(bytes.len(), |n| start + n);
            let run = &text[start..end];
            if ascii {
                out.push_str(&self.apply_ascii(run));
            } else {
                out.push_str(&self.apply_any(run));
            }
            start = end;
        }
        Cow::Owned(out)
    }

    fn apply_any(&self, text: &str) -> String {
        let mut chars: Vec<char> = text
            .chars()
            .filter(|&c| !self.clean_text || !(c == '\0' || c == '\u{FFFD}' || is_bert_control(c)))
            .map(|c| {
                if self.clean_text && is_bert_whitespace(c) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        if self.handle_chinese_chars && chars.iter().any(|&c| is_chinese_char(c)) {
            chars = chars
                .into_iter()
                .flat_map(|c| {
                    if is_chinese_char(c) {
                        [Some(' '), Some(c), Some(' ')]
                    } else {
                        [Some(c), None, None]
                    }
                })
                .flatten()
                .collect();
        }
        let mut out: String = chars.into_iter().collect();
        if self.strip_accents {
            out = out
                .nfd()
                .map(|(c, _)| c)
                .filter(|c| !c.is_mark_nonspacing())
                .collect();
        }
        if self.lowercase {
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }

    /// ASCII needs no decomposition and no Chinese spacing: each byte maps
    /// to one byte, or to none, by table.
    fn apply_ascii<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let table = &self.ascii;
        let mut out = Vec::with_capacity(text.len());
        for &b in text.as_bytes() {
            let mapped = table[b as usize];
            if mapped != REMOVED {
                out.push(mapped);
            }
        }
        if out == text.as_bytes() {
            return Cow::Borrowed(text);
        }
        // SAFETY: every byte written is below 0x80, so `out` is ASCII.
        Cow::Owned(unsafe { String::from_utf8_unchecked(out) })
    }

    fn ascii_table(&self) -> [u8; 128] {
        let mut table = [0u8; 128];
        for (b, slot) in table.iter_mut().enumerate() {
            let mut c = b as u8 as char;
            if self.clean_text {
                if c == '\0' || is_bert_control(c) {
                    *slot = REMOVED;
                    continue;
                }
                if is_bert_whitespace(c) {
                    c = ' ';
                }
            }
            if self.lowercase {
                c = c.to_ascii_lowercase();
            }
            *slot = c as u8;
        }
        table
    }
}

const REMOVED: u8 = 0xFF;

/// `BertPreTokenizer`: words split at whitespace (dropped) and around each
/// punctuation character (kept as a word of its own). ASCII is classified
/// by table; other characters by the same tests `tokenizers` runs.
pub fn for_each_word<'t>(text: &'t str, mut each: impl FnMut(&'t str)) {
    let bytes = text.as_bytes();
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        let byte = bytes[at];
        let (len, kind) = if byte < 0x80 {
            (1, ASCII_KINDS[byte as usize])
        } else {
            let c = text[at..].chars().next().expect("a character starts here");
            let kind = if c.is_whitespace() {
                Kind::Space
            } else if is_bert_punctuation(c) {
                Kind::Punctuation
            } else {
                Kind::Word
            };
            (c.len_utf8(), kind)
        };
        match kind {
            Kind::Word => {}
            Kind::Space => {
                if start < at {
                    each(&text[start..at]);
                }
                start = at + len;
            }
            Kind::Punctuation => {
                if start < at {
                    each(&text[start..at]);
                }
                each(&text[at..at + len]);
                start = at + len;
            }
        }
        at += len;
    }
    if start < bytes.len() {
        each(&text[start..]);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Word,
    Space,
    Punctuation,
}

const ASCII_KINDS: [Kind; 128] = {
    let mut kinds = [Kind::Word; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        // `char::is_whitespace` on ASCII: tab to carriage return, and space.
        kinds[i] = if (b >= 0x09 && b <= 0x0D) || b == b' ' {
            Kind::Space
        } else if b.is_ascii_punctuation() {
            Kind::Punctuation
        } else {
            Kind::Word
        };
        i += 1;
    }
    kinds
};

/// A WordPiece vocabulary.
pub struct WordPiece {
    vocab: AHashMap<String, u32>,
    /// Continuations keyed without their prefix, so a lookup needs no new string.
    continuations: AHashMap<String, u32>,
    unk_id: u32,
    max_input_chars_per_word: usize,
}

impl WordPiece {
    pub fn from_json(model: &Value) -> Result<Self, String> {
        let vocab: AHashMap<String, u32> = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or("WordPiece without a vocabulary")?
            .iter()
            .map(|(token, id)| {
                id.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .map(|id| (token.clone(), id))
                    .ok_or_else(|| format!("the token {token:?} has no valid id"))
            })
            .collect::<Result<_, String>>()?;
        let prefix = model
            .get("continuing_subword_prefix")
            .and_then(Value::as_str)
            .unwrap_or("##");
        let unk = model
            .get("unk_token")
            .and_then(Value::as_str)
            .unwrap_or("[UNK]");
        let unk_id = *vocab
            .get(unk)
            .ok_or_else(|| format!("the unknown token {unk:?} is not in the vocabulary"))?;
        let max_input_chars_per_word = model
            .get("max_input_chars_per_word")
            .and_then(Value::as_u64)
            .unwrap_or(100) as usize;
        let continuations = vocab
            .iter()
            .filter_map(|(t, &id)| t.strip_prefix(prefix).map(|rest| (rest.to_owned(), id)))
            .collect();
        Ok(Self {
            vocab,
            continuations,
            unk_id,
            max_input_chars_per_word,
        })
    }

    /// Appends one word's ids: greedy longest match first, the whole word
    /// one unknown token when any part has no match.
    pub fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > self.max_input_chars_per_word {
            out.push(self.unk_id);
            return;
        }
        let before = out.len();
        let mut start = 0;
        while start < word.len() {
            let table = if start == 0 {
                &self.vocab
            } else {
                &self.continuations
            };
            let mut end = word.len();
            let found = loop {
                if let Some(&id) = table.get(&word[start..end]) {
                    break Some(id);
                }
                match word[start..end].chars().next_back() {
                    Some(last) if end - last.len_utf8() > start => end -= last.len_utf8(),
                    _ => break None,
                }
            };
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(before);
                    out.push(self.unk_id);
                    return;
                }
            }
        }
    }
}
