//! BART's noise, as fairseq's `DenoisingDataset` applies it: sentence
//! permutation, masking (token, whole word, or Poisson-length text
//! infilling with zero-length insertions), token deletion, random insertion
//! and document rotation. Labels are the clean row.

use super::{check_id, check_rate, random_subset_sorted, shuffle, word_starts, Corrupted, Vocab};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

/// What one masking draw covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskLength {
    /// One token.
    Subword,
    /// One whole word.
    Word,
    /// Poisson(lambda) whole words; zero-length spans become insertions.
    SpanPoisson,
}

/// BART's noise functions and their rates.
///
/// [`Default`] is the BART paper's large-model recipe (fairseq's
/// `bart.large`): text infilling over 30% of words with Poisson(3.5) spans,
/// one mask per span, 10% random tokens, and every sentence permuted. Its
/// `mask_id` 0 and empty `sentence_ends` are placeholders: the caller must
/// set its vocabulary's mask id, and the sentence-end ids for sentence
/// permutation to find sentences.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::{BartOptions, MaskLength};
/// let token_masking = BartOptions {
///     mask_id: 4,
///     mask_length: MaskLength::Subword,
///     permute_sentence_ratio: 0.0,
///     ..BartOptions::default()
/// };
/// assert_eq!(token_masking.mask_ratio, 0.3);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BartOptions {
    /// The mask token's id; the caller must set it (the default 0 is a placeholder).
    pub mask_id: u32,
    /// Share of words (tokens for `Subword`) masked.
    pub mask_ratio: f64,
    /// Share of masks that become a random token instead.
    pub random_ratio: f64,
    /// Inserted noise tokens, as a share of the row.
    pub insert_ratio: f64,
    /// Probability of rotating a document.
    pub rotate_ratio: f64,
    /// Share of sentences permuted.
    pub permute_sentence_ratio: f64,
    /// Share of tokens deleted outright (BART's token deletion).
    pub delete_ratio: f64,
    pub poisson_lambda: f64,
    pub mask_length: MaskLength,
    /// -1: every masked token becomes a mask; 0: masked spans are deleted;
    /// 1: each masked span becomes one mask.
    pub replace_length: i8,
    /// Ids that end a sentence (for example `.`), for sentence permutation.
    pub sentence_ends: Vec<u32>,
}

impl Default for BartOptions {
    fn default() -> Self {
        Self {
            mask_id: 0,
            mask_ratio: 0.3,
            random_ratio: 0.1,
            insert_ratio: 0.0,
            rotate_ratio: 0.0,
            permute_sentence_ratio: 1.0,
            delete_ratio: 0.0,
            poisson_lambda: 3.5,
            mask_length: MaskLength::SpanPoisson,
            replace_length: 1,
            sentence_ends: Vec::new(),
        }
    }
}

impl BartOptions {
    /// The [`Default`] recipe with this mask id and these sentence ends.
    pub fn new(mask_id: u32, sentence_ends: Vec<u32>) -> Self {
        Self {
            mask_id,
            sentence_ends,
            ..Self::default()
        }
    }

    pub(super) fn validate(&self, vocab: &Vocab) -> Result<()> {
        check_rate("the mask ratio", self.mask_ratio)?;
        check_rate("the random ratio", self.random_ratio)?;
        check_rate("the insert ratio", self.insert_ratio)?;
        check_rate("the rotate ratio", self.rotate_ratio)?;
        check_rate("the permute-sentence ratio", self.permute_sentence_ratio)?;
        check_rate("the delete ratio", self.delete_ratio)?;
        check_id("mask token", self.mask_id, vocab)?;
        for &id in &self.sentence_ends {
            check_id("sentence-end", id, vocab)?;
        }
        // exp(-lambda) underflows past ~700; spans that long make no sense anyway.
        if !(self.poisson_lambda > 0.0 && self.poisson_lambda <= 100.0) {
            return Err(TokenmillError::config(
                format!(
                    "the Poisson lambda {} is outside (0, 100]",
                    self.poisson_lambda
                ),
                "pass a mean span length such as BART's 3.5",
            ));
        }
        if !(-1..=1).contains(&self.replace_length) {
            return Err(TokenmillError::config(
                format!("replace length {} is not -1, 0 or 1", self.replace_length),
                "pass -1 (a mask per token), 0 (delete spans) or 1 (a mask per span)",
            ));
        }
        Ok(())
    }
}

/// Poisson(lambda) by inversion; lambda is small (a few tokens).
fn poisson(lambda: f64, rng: &mut RowRng) -> usize {
    let u = rng.next_f64();
    let mut k = 0usize;
    let mut p = (-lambda).exp();
    let mut cumulative = p;
    while u >= cumulative && k < 10_000 {
        k += 1;
        p *= lambda / k as f64;
        cumulative += p;
    }
    k
}

pub(super) fn corrupt(
    options: &BartOptions,
    vocab: &Vocab,
    row: &[u32],
    segments: &[u32],
    word_ids: Option<&[i32]>,
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    out.labels.values.extend(row.iter().map(|&t| t as i32));
    let row_starts = word_starts(vocab, row, word_ids);
    let mut start = 0usize;
    let mut body = Vec::new();
    let mut starts = Vec::new();
    for &length in segments {
        let document = &row[start..start + length as usize];
        let document_starts = &row_starts[start..start + length as usize];
        start += length as usize;
        // Leading and trailing special tokens (BOS, EOS) stay in place, as
        // fairseq keeps a sample's first and last token.
        let head = document
            .iter()
            .take_while(|&&t| vocab.is_special(t))
            .count();
        let tail = document[head..]
            .iter()
            .rev()
            .take_while(|&&t| vocab.is_special(t))
            .count();
        out.inputs.values.extend_from_slice(&document[..head]);
        body.clear();
        body.extend_from_slice(&document[head..document.len() - tail]);
        starts.clear();
        starts.extend_from_slice(&document_starts[head..document.len() - tail]);
        noise_document(options, vocab, &mut body, &mut starts, rng);
        out.inputs.values.extend_from_slice(&body);
        out.inputs
            .values
            .extend_from_slice(&document[document.len() - tail..]);
    }
    Ok(())
}

/// Applies fairseq's noise steps, in fairseq's order, to one document body
/// whose word starts are `starts` (they move with their sentences).
fn noise_document(
    options: &BartOptions,
    vocab: &Vocab,
    body: &mut Vec<u32>,
    starts: &mut Vec<bool>,
    rng: &mut RowRng,
) {
    if body.is_empty() {
        return;
    }
    if options.permute_sentence_ratio > 0.0 {
        permute_sentences(options, body, starts, rng);
    }
    if options.mask_ratio > 0.0 {
        mask(options, vocab, body, starts, rng);
    }
    if options.delete_ratio > 0.0 {
        let t = super::threshold(options.delete_ratio);
        body.retain(|&token| vocab.is_special(token) || u64::from(rng.next_u32()) >= t);
    }
    if options.insert_ratio > 0.0 {
        let count = (body.len() as f64 * options.insert_ratio).ceil() as usize;
        insert(options, vocab, body, count, rng);
    }
    if options.rotate_ratio > 0.0 && rng.next_f64() < options.rotate_ratio && body.len() > 1 {
        let offset = rng.below(body.len() as u32) as usize;
        body.rotate_left(offset);
    }
}

/// Permutes `ceil(sentences * ratio)` of the document's sentences among
/// their places. A sentence ends after a run of sentence-end ids; the text
/// after the last end is a sentence too.
fn permute_sentences(
    options: &BartOptions,
    body: &mut Vec<u32>,
    starts: &mut Vec<bool>,
    rng: &mut RowRng,
) {
    let is_end = |t: u32| options.sentence_ends.contains(&t);
    let mut bounds = vec![0usize];
    for i in 0..body.len() {
        let ends_here = is_end(body[i]) && body.get(i + 1).is_none_or(|&next| !is_end(next));
        if ends_here && i + 1 < body.len() {
            bounds.push(i + 1);
        }
    }
    bounds.push(body.len());
    let sentences = bounds.len() - 1;
    let count = (sentences as f64 * options.permute_sentence_ratio).ceil() as usize;
    if sentences < 2 || count < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..sentences).collect();
    shuffle(&mut order, rng);
    let chosen = &order[..count];
    let mut moved = chosen.to_vec();
    shuffle(&mut moved, rng);
    let mut ordering: Vec<usize> = (0..sentences).collect();
    for (&slot, &sentence) in chosen.iter().zip(&moved) {
        ordering[slot] = sentence;
    }
    let original = std::mem::take(body);
    let original_starts = std::mem::take(starts);
    for s in ordering {
        body.extend_from_slice(&original[bounds[s]..bounds[s + 1]]);
        starts.extend_from_slice(&original_starts[bounds[s]..bounds[s + 1]]);
    }
}

/// fairseq's `add_whole_word_mask`: choose `ceil(words * ratio)` words' worth
/// of spans, starting at distinct random word starts; spans may overlap.
fn mask(
    options: &BartOptions,
    vocab: &Vocab,
    body: &mut Vec<u32>,
    starts: &[bool],
    rng: &mut RowRng,
) {
    let by_word = options.mask_length != MaskLength::Subword;
    // A word start is a non-special token that starts a word (or any
    // non-special token in subword mode); the body's end stops every span.
    let starts_word: Vec<bool> = body
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            !vocab.is_special(t)
                && (!by_word || i == 0 || vocab.is_special(body[i - 1]) || starts[i])
        })
        .collect();
    let word_starts: Vec<usize> = (0..body.len()).filter(|&i| starts_word[i]).collect();
    let mut to_mask = (word_starts.len() as f64 * options.mask_ratio).ceil() as usize;
    if to_mask == 0 {
        return;
    }
    let mut lengths: Vec<usize> = Vec::new();
    let mut inserts = 0usize;
    if options.mask_length == MaskLength::SpanPoisson {
        let mut covered = 0usize;
        while covered < to_mask {
            let l = poisson(options.poisson_lambda, rng).min(to_mask - covered);
            lengths.push(l);
            covered += l;
        }
        inserts = lengths.iter().filter(|&&l| l == 0).count();
        lengths.retain(|&l| l > 0);
        to_mask = lengths.len();
        if to_mask == 0 {
            let count = inserts.min(body.len() + inserts);
            insert(options, vocab, body, count, rng);
            return;
        }
    } else {
        lengths.resize(to_mask, 1);
    }
    let to_mask = to_mask.min(word_starts.len());
    // Distinct random word starts, in random order (fairseq's randperm[:n]).
    let mut picks: Vec<usize> = random_subset_sorted(word_starts.len(), to_mask, rng);
    shuffle(&mut picks, rng);
    let mut keep = vec![true; body.len()];
    let random_threshold = super::threshold(options.random_ratio);
    for (&pick, &length) in picks.iter().zip(&lengths) {
        let first = word_starts[pick];
        let random = u64::from(rng.next_u32()) < random_threshold;
        // As fairseq: a span marked random draws a fresh id per token.
        let replacement = |rng: &mut RowRng| {
            if random {
                vocab.random_ordinary(rng)
            } else {
                options.mask_id
            }
        };
        if options.replace_length == 0 {
            keep[first] = false;
        } else {
            body[first] = replacement(rng);
        }
        // Extend through the rest of the span's words.
        let mut words_left = length - 1;
        let mut i = first + 1;
        while i < body.len() {
            if starts_word[i] || vocab.is_special(body[i]) {
                if words_left == 0 || vocab.is_special(body[i]) {
                    break;
                }
                words_left -= 1;
            }
            if options.replace_length == -1 {
                body[i] = replacement(rng);
            } else {
                keep[i] = false;
            }
            i += 1;
        }
    }
    let mut index = 0;
    body.retain(|_| {
        index += 1;
        keep[index - 1]
    });
    if inserts > 0 {
        insert(options, vocab, body, inserts, rng);
    }
}

/// fairseq's `add_insertion_noise`: `count` new tokens at distinct random
/// places, the first `ceil(count * random_ratio)` random ids, the rest masks.
fn insert(
    options: &BartOptions,
    vocab: &Vocab,
    body: &mut Vec<u32>,
    count: usize,
    rng: &mut RowRng,
) {
    if count == 0 {
        return;
    }
    let total = body.len() + count;
    let mut places = random_subset_sorted(total, count, rng);
    let random = ((count as f64) * options.random_ratio).ceil() as usize;
    // Which of the places get random ids is itself random.
    let mut is_random = vec![false; count];
    is_random[..random.min(count)].fill(true);
    shuffle(&mut is_random, rng);
    let original = std::mem::take(body);
    body.reserve(total);
    let mut source = original.into_iter();
    let mut next_place = places.drain(..).zip(is_random).peekable();
    for position in 0..total {
        match next_place.peek() {
            Some(&(place, random)) if place == position => {
                next_place.next();
                body.push(if random {
                    vocab.random_ordinary(rng)
                } else {
                    options.mask_id
                });
            }
            _ => body.push(source.next().expect("one source token per free place")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, TokenRows, Vocab};
    use super::*;

    const MASK: u32 = 3;
    const DOT: u32 = 4;

    /// Ids 10.. are words; odd ids continue the previous word.
    fn vocab() -> Vocab {
        let starts: Vec<bool> = (0..1000u32).map(|id| id < 10 || id % 2 == 0).collect();
        Vocab::new(1000, &[0, 1, 2, 3])
            .unwrap()
            .with_word_starts(&starts)
            .unwrap()
    }

    fn run(options: BartOptions, rows: &[Vec<u32>]) -> Corrupted {
        let corruptor = Corruptor::new(Mode::Bart(options), vocab()).unwrap();
        let values: Vec<u32> = rows.concat();
        let mut offsets = vec![0];
        for r in rows {
            offsets.push(offsets.last().unwrap() + r.len());
        }
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: None,
        };
        let keys: Vec<u64> = (0..rows.len() as u64).collect();
        corruptor.corrupt(&batch, &keys, 9, 0).unwrap()
    }

    fn only(options: impl FnOnce(&mut BartOptions)) -> BartOptions {
        let mut o = BartOptions::new(MASK, vec![DOT]);
        o.mask_ratio = 0.0;
        o.random_ratio = 0.0;
        o.permute_sentence_ratio = 0.0;
        options(&mut o);
        o
    }

    #[test]
    fn permutation_keeps_sentences_whole_and_bos_eos_in_place() {
        let row = vec![0, 10, 11, DOT, 20, DOT, 30, 31, 32, DOT, 40, DOT, 2];
        let out = run(
            only(|o| o.permute_sentence_ratio = 1.0),
            std::slice::from_ref(&row),
        );
        let input = out.inputs.row(0);
        assert_eq!((input[0], input[input.len() - 1]), (0, 2));
        let mut sentences: Vec<Vec<u32>> = input[1..input.len() - 1]
            .split_inclusive(|&t| t == DOT)
            .map(<[u32]>::to_vec)
            .collect();
        sentences.sort();
        assert_eq!(
            sentences,
            vec![
                vec![10, 11, DOT],
                vec![20, DOT],
                vec![30, 31, 32, DOT],
                vec![40, DOT]
            ]
        );
        assert_eq!(
            out.labels.row(0),
            row.iter().map(|&t| t as i32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn infilling_restores_with_labels() {
        // Text infilling only: the input is the row with some word spans
        // replaced by one mask each and masks inserted; every run of
        // unmasked input appears in order in the original.
        let row: Vec<u32> = (0..400).map(|i| 10 + i).collect();
        let out = run(only(|o| o.mask_ratio = 0.3), std::slice::from_ref(&row));
        let input = out.inputs.row(0);
        let mut cursor = 0usize;
        for piece in input.split(|&t| t == MASK).filter(|p| !p.is_empty()) {
            let at = row[cursor..]
                .windows(piece.len())
                .position(|w| w == piece)
                .expect("in order");
            cursor += at + piece.len();
        }
        assert!(input.contains(&MASK));
        assert!(input.len() < row.len());
    }

    #[test]
    fn rates_over_a_million_tokens() {
        // Token masking (subword, one mask per token): 30% of tokens masked.
        let rows: Vec<Vec<u32>> = (0..2500)
            .map(|r| (0..400).map(|i| 10 + (r + i) % 980).collect())
            .collect();
        let out = run(
            only(|o| {
                o.mask_ratio = 0.3;
                o.mask_length = MaskLength::Subword;
            }),
            &rows,
        );
        let masks = out.inputs.values.iter().filter(|&&t| t == MASK).count();
        let rate = masks as f64 / out.labels.values.len() as f64;
        assert!((rate - 0.3).abs() < 0.005, "mask rate {rate}");

        // Poisson(3.5) infilling: mean span 3.5 words before trimming.
        let stream = crate::rng::StreamKey::new(0, "t", 0);
        let mut rng = stream.row(0);
        let mean = (0..200_000).map(|_| poisson(3.5, &mut rng)).sum::<usize>() as f64 / 200_000.0;
        assert!((mean / 3.5 - 1.0).abs() < 0.03, "poisson mean {mean}");

        // Deletion removes its share of tokens.
        let out = run(only(|o| o.delete_ratio = 0.2), &rows);
        let kept = out.inputs.values.len() as f64 / out.labels.values.len() as f64;
        assert!((kept - 0.8).abs() < 0.005, "kept {kept}");
    }

    #[test]
    fn packed_documents_keep_their_own_noise() {
        // Three documents with disjoint ids; full BART noise (permutation,
        // Poisson infilling, random tokens drawn from ids 900+ only).
        let mut row = Vec::new();
        let mut lengths = Vec::new();
        for d in 0..3u32 {
            let doc: Vec<u32> = (0..60)
                .map(|i| if i % 9 == 8 { DOT } else { 100 * (d + 1) + i })
                .collect();
            lengths.push(doc.len() as u32);
            row.extend(doc);
        }
        let starts: Vec<bool> = (0..1000u32).map(|id| id < 10 || id % 2 == 0).collect();
        let special: Vec<u32> = (0..900).filter(|id| !(5..400).contains(id)).collect();
        let vocab = Vocab::new(1000, &special)
            .unwrap()
            .with_word_starts(&starts)
            .unwrap();
        let mut options = BartOptions::new(MASK, vec![DOT]);
        options.random_ratio = 0.0;
        let corruptor = Corruptor::new(Mode::Bart(options), vocab).unwrap();
        for key in 0..50u64 {
            let batch = TokenRows {
                values: &row,
                offsets: &[0, row.len()],
                segments: Some(super::super::Segments {
                    lengths: &lengths,
                    offsets: &[0, 3],
                }),
                word_ids: None,
            };
            let out = corruptor.corrupt(&batch, &[key], 1, 0).unwrap();
            let documents: Vec<u32> = out
                .inputs
                .row(0)
                .iter()
                .filter(|&&t| t >= 100)
                .map(|&t| t / 100)
                .collect();
            assert!(
                documents.windows(2).all(|w| w[0] <= w[1]),
                "a document's tokens moved into another"
            );
            assert!(documents.contains(&1) && documents.contains(&3));
        }
    }

    #[test]
    fn insertion_and_rotation() {
        let row: Vec<u32> = (0..100).map(|i| 10 + i).collect();
        let out = run(only(|o| o.insert_ratio = 0.1), std::slice::from_ref(&row));
        let input = out.inputs.row(0);
        assert_eq!(input.len(), 110);
        assert_eq!(input.iter().filter(|&&t| t == MASK).count(), 10);
        assert_eq!(
            input
                .iter()
                .copied()
                .filter(|&t| t != MASK)
                .collect::<Vec<_>>(),
            row
        );

        let out = run(only(|o| o.rotate_ratio = 1.0), std::slice::from_ref(&row));
        let input = out.inputs.row(0).to_vec();
        let at = input.iter().position(|&t| t == 10).unwrap();
        let mut unrotated = input[at..].to_vec();
        unrotated.extend_from_slice(&input[..at]);
        assert_eq!(unrotated, row);
    }
}
