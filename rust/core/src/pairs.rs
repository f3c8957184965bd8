//! Positive pairs from unlabeled documents, for contrastive pretraining.
//!
//! Two self-supervised recipes, both deterministic per row:
//!
//! - **Independent cropping** (Contriever, Izacard et al. 2022): the query and
//!   the positive are two spans of the same document, drawn independently,
//!   each `ratio * length` units long with `ratio ~ U(min_ratio, max_ratio)`
//!   and a uniform start, as Contriever's `randomcrop`. Units are
//!   whitespace-separated words for text and token ids for token lists.
//! - **Inverse cloze task** (ORQA, Lee et al. 2019): the query is one sentence
//!   of the passage, drawn uniformly; the positive is the rest of the passage,
//!   or, with probability `keep_probability` (ORQA: 0.1), the whole passage
//!   with the sentence left in, so the model also learns lexical matching.
//!
//! Every draw comes from [`StreamKey`]`(seed, "pairs", epoch).row(row_key)`,
//! so a row's pair depends on nothing but its key and its document.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, ListArray, UInt32Array};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use rayon::prelude::*;

use crate::columns::Documents;
use crate::error::{Result, TokenmillError};
use crate::rng::{RowRng, StreamKey};

/// The random stream family of this stage.
pub const STAGE: &str = "pairs";

/// How a document becomes a (query, positive) pair.
#[derive(Clone, Debug, PartialEq)]
pub enum PairMode {
    /// Two independent random spans, each a fraction of the document drawn
    /// uniformly from `[min_ratio, max_ratio]`.
    Crop { min_ratio: f64, max_ratio: f64 },
    /// One sentence against the rest of its passage. Token documents split
    /// into sentences after any id of `sentence_end_ids`.
    Ict {
        keep_probability: f64,
        sentence_end_ids: Vec<u32>,
    },
}

impl PairMode {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for ratios outside `(0, 1]` or in the wrong
    /// order, or a probability outside `[0, 1]`.
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Crop {
                min_ratio,
                max_ratio,
            } => {
                let inside = |r: f64| r > 0.0 && r <= 1.0;
                if !(inside(*min_ratio) && inside(*max_ratio) && min_ratio <= max_ratio) {
                    return Err(TokenmillError::config(
                        format!("crop ratios {min_ratio}..{max_ratio} are not 0 < min <= max <= 1"),
                        "pass e.g. --min-ratio 0.1 --max-ratio 0.5 (Contriever's)",
                    ));
                }
            }
            Self::Ict {
                keep_probability, ..
            } => {
                if !(0.0..=1.0).contains(keep_probability) {
                    return Err(TokenmillError::config(
                        format!("keep probability {keep_probability} is outside [0, 1]"),
                        "pass e.g. --keep-probability 0.1 (ORQA's)",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A pair inside one document: the query span, and the positive as up to
/// two spans joined (the second is empty unless ICT cut a sentence out of
/// the middle). Units are bytes for text and token positions for tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub query: Range<usize>,
    pub positive: [Range<usize>; 2],
}

/// Byte ranges of the whitespace-separated words of `text`.
pub fn word_spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

/// Byte ranges of the sentences of `text`, without surrounding whitespace.
///
/// A sentence ends at `.`, `!` or `?` followed by whitespace or the end of
/// the text, and at a blank line (so headings and list items stand alone).
/// Abbreviations such as "e.g. this" split too: a rule-based splitter's
/// usual trade, harmless for ICT, which only needs plausible sentences.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut content_end = 0;
    let mut newlines = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            if c == '\n' {
                newlines += 1;
                if newlines == 2 {
                    if let Some(s) = start.take() {
                        out.push(s..content_end);
                    }
                }
            }
            continue;
        }
        newlines = 0;
        start.get_or_insert(i);
        content_end = i + c.len_utf8();
        let next_is_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        if matches!(c, '.' | '!' | '?') && next_is_space {
            if let Some(s) = start.take() {
                out.push(s..content_end);
            }
        }
    }
    if let Some(s) = start {
        out.push(s..content_end);
    }
    out
}

/// Token ranges of the sentences of a token document: each ends after a
/// token of `ends`, or at the end of the document.
pub fn token_sentence_spans(tokens: &[u32], ends: &[u32]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if ends.contains(t) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < tokens.len() {
        out.push(start..tokens.len());
    }
    out
}

/// A random span of `n >= 1` units, as Contriever's `randomcrop`.
fn crop(n: usize, min_ratio: f64, max_ratio: f64, rng: &mut RowRng) -> Range<usize> {
    let ratio = min_ratio + (max_ratio - min_ratio) * rng.next_f64();
    let len = ((n as f64 * ratio) as usize).clamp(1, n);
    let starts = u32::try_from(n - len + 1).unwrap_or(u32::MAX);
    let start = rng.below(starts) as usize;
    start..start + len
}

/// The pair of one document of `units` units (words or tokens, as ranges in
/// the document) or `sentences`, depending on the mode. `units` and
/// `sentences` are computed lazily by the caller; only the one the mode
/// needs is asked for.
fn pair_of(
    row: usize,
    mode: &PairMode,
    units: impl FnOnce() -> Vec<Range<usize>>,
    sentences: impl FnOnce() -> Vec<Range<usize>>,
    rng: &mut RowRng,
) -> Result<Pair> {
    match mode {
        PairMode::Crop {
            min_ratio,
            max_ratio,
        } => {
            let units = units();
            if units.len() < 2 {
                return Err(TokenmillError::data(
                    row,
                    format!(
                        "the document has {} word(s) or token(s); cropping needs at least 2",
                        units.len()
                    ),
                    "drop documents this short before `pairs` (e.g. with a length filter)",
                ));
            }
            let q = crop(units.len(), *min_ratio, *max_ratio, rng);
            let p = crop(units.len(), *min_ratio, *max_ratio, rng);
            Ok(Pair {
                query: units[q.start].start..units[q.end - 1].end,
                positive: [units[p.start].start..units[p.end - 1].end, 0..0],
            })
        }
        PairMode::Ict {
            keep_probability, ..
        } => {
            let s = sentences();
            if s.len() < 2 {
                return Err(TokenmillError::data(
                    row,
                    format!(
                        "the document has {} sentence(s); the inverse cloze task needs at least 2",
                        s.len()
                    ),
                    "drop one-sentence documents before `pairs`, or use --mode crop",
                ));
            }
            let pick = rng.below(u32::try_from(s.len()).unwrap_or(u32::MAX)) as usize;
            let keep = rng.bernoulli(*keep_probability);
            let last = s.len() - 1;
            let whole = s[0].start..s[last].end;
            let positive = if keep {
                [whole, 0..0]
            } else if pick == 0 {
                [s[1].start..s[last].end, 0..0]
            } else if pick == last {
                [s[0].start..s[last - 1].end, 0..0]
            } else {
                // The text between the sentences before and after the one cut
                // out keeps its own separator: "A. B. C." gives "A. " + "C.".
                [s[0].start..s[pick].start, s[pick + 1].start..s[last].end]
            };
            Ok(Pair {
                query: s[pick].clone(),
                positive,
            })
        }
    }
}

/// The pair of every document of `array` (a text or token column), keyed by
/// `keys`, in parallel.
///
/// # Errors
///
/// [`TokenmillError::Config`] for bad options, [`TokenmillError::Schema`]
/// for a column that is neither text nor `list<uint32>`,
/// [`TokenmillError::Data`] for a document too short for the mode (the row
/// is the index in `array`) or text that is not UTF-8.
pub fn make_pairs(
    column: &str,
    array: &dyn Array,
    keys: &[u64],
    mode: &PairMode,
    seed: u64,
    epoch: u64,
) -> Result<Vec<Pair>> {
    mode.check()?;
    if keys.len() != array.len() {
        return Err(TokenmillError::config(
            format!("{} row keys for {} documents", keys.len(), array.len()),
            "pass one row key per document",
        ));
    }
    let stream = StreamKey::new(seed, STAGE, epoch);
    let fix = "name the document column with --text-column or --token-column";
    match Documents::try_new(column, array, fix)? {
        Documents::Tokens { ids, offsets } => {
            let ends: &[u32] = match mode {
                PairMode::Ict {
                    sentence_end_ids, ..
                } => {
                    if sentence_end_ids.is_empty() {
                        return Err(TokenmillError::config(
                            "the inverse cloze task on token ids needs the ids that end a sentence",
                            "pass --sentence-end-id for each (e.g. the ids of '.', '!', '?')",
                        ));
                    }
                    sentence_end_ids
                }
                PairMode::Crop { .. } => &[],
            };
            (0..keys.len())
                .into_par_iter()
                .map(|row| {
                    let doc = &ids[offsets.range(row)];
                    let mut rng = stream.row(keys[row]);
                    pair_of(
                        row,
                        mode,
                        || (0..doc.len()).map(|i| i..i + 1).collect(),
                        || token_sentence_spans(doc, ends),
                        &mut rng,
                    )
                })
                .collect()
        }
        Documents::Text(texts) => (0..keys.len())
            .into_par_iter()
            .map(|row| {
                let text = texts.get(row)?;
                let mut rng = stream.row(keys[row]);
                pair_of(
                    row,
                    mode,
                    || word_spans(text),
                    || sentence_spans(text),
                    &mut rng,
                )
            })
            .collect(),
    }
}

/// The query and positive columns of `pairs` over the documents of `array`:
/// strings for a text column, `list<uint32>` for a token column.
///
/// # Errors
///
/// As [`make_pairs`].
pub fn pair_columns(
    column: &str,
    array: &dyn Array,
    keys: &[u64],
    mode: &PairMode,
    seed: u64,
    epoch: u64,
) -> Result<(ArrayRef, ArrayRef)> {
    let pairs = make_pairs(column, array, keys, mode, seed, epoch)?;
    let texts = match Documents::try_new(column, array, "")? {
        Documents::Text(texts) => texts,
        Documents::Tokens { ids, offsets } => {
            let doc = |row: usize, r: &Range<usize>| {
                let base = offsets.range(row).start;
                &ids[base + r.start..base + r.end]
            };
            let query = token_column(pairs.iter().enumerate().map(|(row, p)| {
                let part: [&[u32]; 2] = [doc(row, &p.query), &[]];
                part
            }));
            let positive = token_column(
                pairs
                    .iter()
                    .enumerate()
                    .map(|(row, p)| [doc(row, &p.positive[0]), doc(row, &p.positive[1])]),
            );
            return Ok((query, positive));
        }
    };
    // Pair ranges fall on char boundaries of text checked by make_pairs.
    let part = |row: usize, r: &Range<usize>| &texts.bytes(row)[r.clone()];
    let mut query = StringBuilder::new();
    let mut positive = StringBuilder::new();
    for (row, p) in pairs.iter().enumerate() {
        query.append_value(as_str(part(row, &p.query)));
        let mut joined = String::with_capacity(p.positive[0].len() + p.positive[1].len());
        joined.push_str(as_str(part(row, &p.positive[0])));
        joined.push_str(as_str(part(row, &p.positive[1])));
        positive.append_value(joined);
    }
    Ok((Arc::new(query.finish()), Arc::new(positive.finish())))
}

fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("pair ranges fall on the char boundaries of valid UTF-8")
}

fn token_column<'a>(rows: impl Iterator<Item = [&'a [u32]; 2]>) -> ArrayRef {
    let mut values: Vec<u32> = Vec::new();
    let mut lengths: Vec<usize> = Vec::new();
    for parts in rows {
        lengths.push(parts[0].len() + parts[1].len());
        values.extend_from_slice(parts[0]);
        values.extend_from_slice(parts[1]);
    }
    let field = Arc::new(Field::new("item", DataType::UInt32, false));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::<i32>::from_lengths(lengths),
        Arc::new(UInt32Array::new(ScalarBuffer::from(values), None)),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::StringArray;
    use proptest::prelude::*;

    fn text_pairs(texts: &[&str], mode: &PairMode, seed: u64) -> Vec<(String, String)> {
        let array = StringArray::from(texts.to_vec());
        let keys: Vec<u64> = (0..texts.len() as u64).collect();
        let (q, p) = pair_columns("text", &array, &keys, mode, seed, 0).unwrap();
        let (q, p) = (q.as_string::<i32>(), p.as_string::<i32>());
        (0..texts.len())
            .map(|i| (q.value(i).to_owned(), p.value(i).to_owned()))
            .collect()
    }

    #[test]
    fn sentences_split_on_terminal_punctuation_and_blank_lines() {
        let text = "  One two. Three?  Four!\n\nHeading\nstill heading 3.14 pi. e.g.";
        let got: Vec<&str> = sentence_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(
            got,
            [
                "One two.",
                "Three?",
                "Four!",
                "Heading\nstill heading 3.14 pi.",
                "e.g."
            ]
        );
        assert_eq!(
            word_spans(" a  bc\td ")
                .into_iter()
                .map(|r| &" a  bc\td "[r])
                .collect::<Vec<_>>(),
            ["a", "bc", "d"]
        );
        assert_eq!(token_sentence_spans(&[1, 9, 2, 3, 9], &[9]), [0..2, 2..5]);
        assert_eq!(token_sentence_spans(&[1, 9, 2], &[9]), [0..2, 2..3]);
    }

    #[test]
    fn ict_cuts_the_sentence_out_of_its_passage() {
        let mode = PairMode::Ict {
            keep_probability: 0.0,
            sentence_end_ids: vec![],
        };
        let text = "A b. C d. E f.";
        // Whatever sentence is drawn, the positive is the passage without it.
        for seed in 0..20 {
            let (q, p) = &text_pairs(&[text], &mode, seed)[0];
            let expected = match q.as_str() {
                "A b." => "C d. E f.",
                "C d." => "A b. E f.",
                "E f." => "A b. C d.",
                other => panic!("query {other:?} is not a sentence"),
            };
            assert_eq!(p, expected);
        }
        let keep = PairMode::Ict {
            keep_probability: 1.0,
            sentence_end_ids: vec![],
        };
        let (q, p) = &text_pairs(&[text], &keep, 3)[0];
        assert!(text.contains(q.as_str()));
        assert_eq!(p, text);
    }

    #[test]
    fn ict_keeps_the_sentence_with_its_probability() {
        let mode = PairMode::Ict {
            keep_probability: 0.1,
            sentence_end_ids: vec![],
        };
        let texts = vec!["One. Two. Three. Four."; 4000];
        let kept = text_pairs(&texts, &mode, 7)
            .iter()
            .filter(|(q, p)| p.contains(q.as_str()))
            .count();
        // Binomial(4000, 0.1): mean 400, standard deviation 19.
        assert!((320..480).contains(&kept), "{kept}");
    }

    #[test]
    fn crop_of_two_words_and_token_ict() {
        let mode = PairMode::Crop {
            min_ratio: 0.5,
            max_ratio: 0.5,
        };
        // Half of two words is one word: each span is "x" or "y".
        for (q, p) in text_pairs(&["x y"; 8], &mode, 1) {
            assert!(q == "x" || q == "y");
            assert!(p == "x" || p == "y");
        }
        let tokens =
            ListArray::from_iter_primitive::<arrow_array::types::UInt32Type, _, _>(vec![Some(
                vec![Some(5), Some(0), Some(6), Some(7), Some(0)],
            )]);
        let ict = PairMode::Ict {
            keep_probability: 0.0,
            sentence_end_ids: vec![0],
        };
        let (q, p) = pair_columns("input_ids", &tokens, &[1], &ict, 0, 0).unwrap();
        let q = q.as_list::<i32>().value(0);
        let p = p.as_list::<i32>().value(0);
        let q: Vec<u32> = q
            .as_primitive::<arrow_array::types::UInt32Type>()
            .values()
            .to_vec();
        let p: Vec<u32> = p
            .as_primitive::<arrow_array::types::UInt32Type>()
            .values()
            .to_vec();
        assert!(
            (q == [5, 0] && p == [6, 7, 0]) || (q == [6, 7, 0] && p == [5, 0]),
            "{q:?} {p:?}"
        );
    }

    #[test]
    fn short_documents_and_bad_options_are_refused() {
        let crop = PairMode::Crop {
            min_ratio: 0.1,
            max_ratio: 0.5,
        };
        let array = StringArray::from(vec!["two words", "one"]);
        let err = make_pairs("text", &array, &[0, 1], &crop, 0, 0).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 1, .. }), "{err}");
        let ict = PairMode::Ict {
            keep_probability: 0.1,
            sentence_end_ids: vec![],
        };
        let err = make_pairs("text", &array, &[0, 1], &ict, 0, 0).unwrap_err();
        assert!(matches!(err, TokenmillError::Data { row: 0, .. }), "{err}");
        let bad = PairMode::Crop {
            min_ratio: 0.6,
            max_ratio: 0.5,
        };
        assert!(matches!(bad.check(), Err(TokenmillError::Config { .. })));
    }

    proptest! {
        // Crops are contiguous word runs of the document, of the drawn length.
        #[test]
        fn crops_are_spans_of_the_document(
            words in proptest::collection::vec("[a-z]{1,5}", 2..40),
            min in 0.05f64..1.0,
            extra in 0.0f64..1.0,
            seed: u64,
        ) {
            let max = (min + extra).min(1.0);
            let text = words.join(" ");
            let mode = PairMode::Crop { min_ratio: min, max_ratio: max };
            let (q, p) = text_pairs(&[&text], &mode, seed).remove(0);
            for span in [q, p] {
                let n = span.split(' ').count();
                prop_assert!(text.contains(&span));
                prop_assert!(n >= ((words.len() as f64 * min) as usize).max(1));
                prop_assert!(n <= ((words.len() as f64 * max) as usize).max(1));
            }
        }
    }
}
