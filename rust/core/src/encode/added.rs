//! Added tokens (`<|endoftext|>`, `[MASK]`...) found inside text, as
//! `tokenizers`' `AddedVocabulary` finds them: leftmost-longest, first the
//! tokens matched on the raw text, then, in the stretches between them
//! once normalized, the tokens matched on normalized text.

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

/// A stretch of text, or an added token's id.
pub enum Part<'a> {
    Text(&'a str),
    Token(u32),
}

/// One automaton over some added tokens' texts.
struct Matcher {
    automaton: AhoCorasick,
    ids: Vec<u32>,
    has_newline: bool,
}

impl Matcher {
    fn new(tokens: Vec<(String, u32)>) -> Result<Option<Self>, String> {
        if tokens.is_empty() {
            return Ok(None);
        }
        let mut patterns: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
        patterns.sort_unstable();
        if patterns.windows(2).any(|w| w[0] == w[1]) || patterns.first() == Some(&"") {
            return Err("two added tokens with one text, or an empty one".into());
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|(t, _)| t.as_str()))
            .map_err(|err| format!("the added tokens do not build an automaton ({err})"))?;
        Ok(Some(Self {
            automaton,
            ids: tokens.iter().map(|(_, id)| *id).collect(),
            has_newline: tokens.iter().any(|(t, _)| t.contains('\n')),
        }))
    }

    fn split<'a>(&self, text: &'a str, mut each: impl FnMut(Part<'a>)) {
        let mut start = 0;
        for found in self.automaton.find_iter(text) {
            if start < found.start() {
                each(Part::Text(&text[start..found.start()]));
            }
            each(Part::Token(self.ids[found.pattern().as_usize()]));
            start = found.end();
        }
        if start < text.len() {
            each(Part::Text(&text[start..]));
        }
    }
}

/// The added tokens of a tokenizer, split by where they are matched.
pub struct AddedTokens {
    raw: Option<Matcher>,
    normalized: Option<Matcher>,
}

impl AddedTokens {
    /// From the `added_tokens` list of a `tokenizer.json`; `normalize`
    /// gives a normalized token's text as the normalizer leaves it.
    ///
    /// # Errors
    ///
    /// A reason for the exact path: a token with `single_word`, `lstrip` or
    /// `rstrip`, whose matching rules the fast path does not implement.
    pub fn from_json(tokens: &Value, normalize: impl Fn(&str) -> String) -> Result<Self, String> {
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for token in tokens.as_array().map(Vec::as_slice).unwrap_or_default() {
            let flag = |key: &str| token.get(key).and_then(Value::as_bool).unwrap_or(false);
            let content = token
                .get("content")
                .and_then(Value::as_str)
                .ok_or("an added token without content")?;
            let id = token
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or("an added token without an id")?;
            for rule in ["single_word", "lstrip", "rstrip"] {
                if flag(rule) {
                    return Err(format!("the added token {content:?} has {rule} set"));
                }
            }
            if flag("normalized") {
                normalized.push((normalize(content), id));
            } else {
                raw.push((content.to_owned(), id));
            }
        }
        Ok(Self {
            raw: Matcher::new(raw)?,
            normalized: Matcher::new(normalized)?,
        })
    }

    /// Whether a token's text holds a newline (and so could span a line start).
    pub fn has_newline(&self) -> bool {
        [&self.raw, &self.normalized]
            .iter()
            .any(|m| m.as_ref().is_some_and(|m| m.has_newline))
    }

    /// Splits raw text on the tokens matched before normalization.
    #[inline]
    pub fn split_raw<'a>(&self, text: &'a str, mut each: impl FnMut(Part<'a>)) {
        match &self.raw {
            Some(matcher) => matcher.split(text, each),
            None if !text.is_empty() => each(Part::Text(text)),
            None => {}
        }
    }

    /// Splits normalized text on the tokens matched after normalization.
    #[inline]
    pub fn split_normalized<'a>(&self, text: &'a str, mut each: impl FnMut(Part<'a>)) {
        match &self.normalized {
            Some(matcher) => matcher.split(text, each),
            None if !text.is_empty() => each(Part::Text(text)),
            None => {}
        }
    }
}
