//! Masked LM: BERT's 80/10/10 over tokens or whole words, or SpanBERT spans.

use super::{
    check_id, check_rate, random_subset_sorted, threshold, word_starts, Corrupted, Vocab,
    IGNORE_INDEX,
};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

/// SpanBERT's span lengths: geometric with parameter `p`, truncated at `max`
/// and renormalized (mean 3.8 words at the paper's p = 0.2, max = 10).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLengths {
    pub p: f64,
    pub max: u32,
}

impl Default for SpanLengths {
    /// SpanBERT's `p = 0.2`, `max = 10`.
    fn default() -> Self {
        Self { p: 0.2, max: 10 }
    }
}

/// How masked-LM corruption chooses and replaces tokens.
///
/// [`Default`] is BERT's recipe (15% of tokens, 80% mask / 10% random / 10%
/// kept, token by token) with `mask_id` 0: the caller must set the mask id
/// of its vocabulary, which no default can know.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::{MlmOptions, SpanLengths};
/// let span_bert = MlmOptions {
///     mask_id: 4,
///     whole_word: true,
///     span: Some(SpanLengths::default()),
///     ..MlmOptions::default()
/// };
/// assert_eq!(span_bert.probability, 0.15);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MlmOptions {
    /// The mask token's id; the caller must set it (the default 0 is a placeholder).
    pub mask_id: u32,
    /// Share of (non-special) tokens chosen for prediction.
    pub probability: f64,
    /// Of the chosen tokens, the share replaced by the mask token...
    pub mask_rate: f64,
    /// ...and the share replaced by a random non-special token; the rest stay.
    pub random_rate: f64,
    /// Choose whole words: a word's tokens are chosen together.
    pub whole_word: bool,
    /// Choose SpanBERT spans (in words when `whole_word`, else tokens).
    pub span: Option<SpanLengths>,
    /// At most this many chosen tokens per row (BERT's
    /// `max_predictions_per_seq`, 20 at 128 tokens): past it, chosen words
    /// (or spans) are let go at random until the rest fit. `None`: no cap.
    pub max_predictions: Option<u32>,
}

impl Default for MlmOptions {
    fn default() -> Self {
        Self {
            mask_id: 0,
            probability: 0.15,
            mask_rate: 0.8,
            random_rate: 0.1,
            whole_word: false,
            span: None,
            max_predictions: None,
        }
    }
}

impl MlmOptions {
    /// BERT's recipe (the [`Default`]) with this mask id.
    pub fn new(mask_id: u32) -> Self {
        Self {
            mask_id,
            ..Self::default()
        }
    }

    pub(super) fn validate(&self, vocab: &Vocab) -> Result<()> {
        check_rate("the masking probability", self.probability)?;
        check_rate("the mask rate", self.mask_rate)?;
        check_rate("the random rate", self.random_rate)?;
        check_id("mask token", self.mask_id, vocab)?;
        if self.mask_rate + self.random_rate > 1.0 + 1e-12 {
            return Err(TokenmillError::config(
                format!(
                    "the mask rate {} and random rate {} add up to more than 1",
                    self.mask_rate, self.random_rate
                ),
                "the share kept unchanged is 1 - mask rate - random rate; lower one of them",
            ));
        }
        if self.max_predictions == Some(0) {
            return Err(TokenmillError::config(
                "max predictions 0 would choose no token".to_owned(),
                "pass a cap of at least 1 (BERT: 20 at 128 tokens), or none",
            ));
        }
        if let Some(span) = &self.span {
            if !(span.p > 0.0 && span.p <= 1.0) || span.max == 0 {
                return Err(TokenmillError::config(
                    format!(
                        "span length p={} max={} is not a distribution",
                        span.p, span.max
                    ),
                    "pass 0 < p <= 1 and max >= 1, e.g. SpanBERT's p=0.2 max=10",
                ));
            }
        }
        Ok(())
    }

    fn replacement_thresholds(&self) -> (u64, u64) {
        let mask = threshold(self.mask_rate);
        (mask, threshold(self.mask_rate + self.random_rate).max(mask))
    }
}

/// Gaps between successes of independent Bernoulli(p) trials, drawn by
/// inversion: `floor(ln(u) / ln(1 - p))` is geometric on {0, 1, ...}.
///
/// Gaps are made [`GAP_BLOCK`] at a time: the log of a block of uniforms is
/// straight-line float arithmetic the compiler turns into SIMD, where a libm
/// call per gap was the masking loop's largest cost.
struct GeometricGaps {
    inverse_log_q: f32,
    p: f64,
    block: [u32; GAP_BLOCK],
    /// With [`GeometricGaps::paired`], one more uniform per gap, drawn in
    /// the same refill, for the decision the chosen trial needs.
    draws: Option<[u32; GAP_BLOCK]>,
    used: usize,
}

const GAP_BLOCK: usize = 16;

impl GeometricGaps {
    fn new(p: f64) -> Self {
        Self {
            // ln_1p keeps ln(1 - p) exact for tiny p, where 1.0 - p rounds to 1.
            inverse_log_q: (1.0 / (-p).ln_1p()) as f32,
            p,
            block: [0; GAP_BLOCK],
            draws: None,
            used: GAP_BLOCK,
        }
    }

    /// Gaps that each come with a uniform 32-bit draw.
    fn paired(p: f64) -> Self {
        Self {
            draws: Some([0; GAP_BLOCK]),
            ..Self::new(p)
        }
    }

    /// The next gap and its draw (see [`GeometricGaps::paired`]).
    #[inline(always)]
    fn next_with_draw(&mut self, rng: &mut RowRng) -> (usize, u32) {
        let gap = self.next(rng);
        if gap == usize::MAX {
            return (gap, 0);
        }
        let draws = self.draws.as_ref().expect("paired gaps");
        (gap, draws[self.used - 1])
    }

    /// Trials to skip before the next success (`usize::MAX`: never).
    #[inline(always)]
    fn next(&mut self, rng: &mut RowRng) -> usize {
        // p = 1 needs no case of its own: ln(1 - p) = -inf makes every gap 0.
        if self.p <= 0.0 {
            return usize::MAX;
        }
        if self.used == GAP_BLOCK {
            self.refill(rng);
        }
        let gap = self.block[self.used];
        self.used += 1;
        gap as usize
    }

    #[inline(never)]
    fn refill(&mut self, rng: &mut RowRng) {
        let uniforms = rng.next_16();
        if let Some(draws) = &mut self.draws {
            *draws = rng.next_16();
        }
        for (gap, &bits) in self.block.iter_mut().zip(&uniforms) {
            // 23 random bits as an odd multiple of 2^-24: exactly an f32 (and
            // from a signed int, a conversion SIMD has), strictly inside
            // (0, 1). The smallest u caps a gap at 17.3 / p trials, a cut of
            // the tail's e^-17.3 = 3e-8 of mass; with a log good to ~1e-7,
            // the distribution moves far less than any test's tolerance.
            let u = (((bits >> 9) as i32 * 2 + 1) as f32) * (1.0 / 16_777_216.0);
            // ln(u) < 0 and the inverse < 0 (-inf for p below f64's reach),
            // so the product is positive or +inf; f32 max and min drop a NaN
            // operand, so whatever it is lands in [0, MAX_GAP].
            #[allow(clippy::manual_clamp)] // clamp would keep a NaN
            let trials = (ln_unit(u) * self.inverse_log_q).max(0.0).min(MAX_GAP);
            // SAFETY: `trials` is finite and within [0, 2^30], inside i32.
            *gap = unsafe { trials.to_int_unchecked::<i32>() } as u32;
        }
        self.used = 0;
    }
}

/// Where a row's random replacement ids start in its stream: past any
/// number of draws the gaps could take.
const REPLACEMENT_DRAWS: u64 = 1 << 40;

/// A gap past any row (rows are far shorter than 2^30 tokens).
const MAX_GAP: f32 = 1_073_741_824.0;

/// Natural log of `x` in (0, 1], to about 1e-7 relative: Cephes' `logf`
/// reduction and polynomial, branch-free so a loop over it vectorizes.
#[inline(always)]
fn ln_unit(x: f32) -> f32 {
    // x = 2^e * m with m in [sqrt(1/2), sqrt(2)): shift the exponent field
    // by the bits of sqrt(1/2) so the split lands there.
    let bits = x.to_bits();
    let e = (bits.wrapping_sub(0x3f35_04f3) as i32) >> 23;
    let m = f32::from_bits(bits.wrapping_sub((e as u32) << 23));
    let z = m - 1.0;
    let zz = z * z;
    let mut poly = 7.037_683_6e-2_f32;
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        poly = poly * z + c;
    }
    let e = e as f32;
    let tail = z * zz * poly - 2.121_944_4e-4 * e - 0.5 * zz;
    z + tail + 0.693_359_4 * e
}

/// Replaces a chosen token 80/10/10 by the uniform 32-bit `draw`.
#[inline]
fn replace(
    token: u32,
    draw: u32,
    thresholds: (u64, u64),
    options: &MlmOptions,
    vocab: &Vocab,
    rng: &mut RowRng,
) -> u32 {
    let draw = u64::from(draw);
    if draw < thresholds.0 {
        options.mask_id
    } else if draw < thresholds.1 {
        vocab.random_ordinary(rng)
    } else {
        token
    }
}

pub(super) fn corrupt(
    options: &MlmOptions,
    vocab: &Vocab,
    row: &[u32],
    segments: &[u32],
    word_ids: Option<&[i32]>,
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    let thresholds = options.replacement_thresholds();
    if options.span.is_none() && !options.whole_word && options.max_predictions.is_none() {
        // The hot path: copy the row, then visit only the chosen positions.
        // Each position is chosen independently with probability p, so the
        // gaps between chosen ones are geometric: one draw per chosen token
        // instead of one per token. A chosen special token is passed over,
        // which leaves every other token's chance at exactly p.
        let first = out.inputs.values.len();
        out.inputs.values.extend_from_slice(row);
        let label_first = out.labels.values.len();
        out.labels
            .values
            .resize(label_first + row.len(), IGNORE_INDEX);
        let mut gaps = GeometricGaps::paired(options.probability);
        // Random replacement ids come from a far region of the row's stream:
        // drawn between the gaps' refills, each would open a group of blocks
        // that the next refill skips.
        let mut replacements = rng.clone();
        replacements.seek(REPLACEMENT_DRAWS);
        let (mut i, mut draw) = gaps.next_with_draw(rng);
        while i < row.len() {
            let token = row[i];
            if !vocab.is_special(token) {
                out.inputs.values[first + i] =
                    replace(token, draw, thresholds, options, vocab, &mut replacements);
                out.labels.values[label_first + i] = token as i32;
            }
            let (gap, next_draw) = gaps.next_with_draw(rng);
            i = i.saturating_add(1).saturating_add(gap);
            draw = next_draw;
        }
        return Ok(());
    }
    // Word-level choice: find each document's words, choose some, then apply
    // 80/10/10 per token of the chosen words, as BERT's whole-word masking
    // does; SpanBERT decides once per span.
    let starts = if options.whole_word {
        word_starts(vocab, row, word_ids)
    } else {
        vec![true; row.len()]
    };
    // Chosen words (span None) or spans, as token ranges in row order.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut start = 0usize;
    for &length in segments {
        let document = start..start + length as usize;
        words.clear();
        collect_words(vocab, row, &starts, document.clone(), &mut words);
        match &options.span {
            None => {
                let mut gaps = GeometricGaps::new(options.probability);
                let mut w = gaps.next(rng);
                while w < words.len() {
                    spans.push(words[w]);
                    w = w.saturating_add(1).saturating_add(gaps.next(rng));
                }
            }
            Some(lengths) => choose_spans(options.probability, lengths, &words, rng, &mut spans),
        }
        start = document.end;
    }
    if let Some(cap) = options.max_predictions {
        cap_predictions(&mut spans, cap as usize, rng);
    }
    let mut chosen = vec![false; row.len()];
    if options.span.is_none() {
        for &(a, b) in &spans {
            chosen[a..b].fill(true);
        }
    }
    out.inputs.values.extend_from_slice(row);
    out.labels.values.reserve(row.len());
    let first = out.inputs.values.len() - row.len();
    if options.span.is_none() {
        for (i, (&token, &pick)) in row.iter().zip(&chosen).enumerate() {
            if pick {
                out.inputs.values[first + i] =
                    replace(token, rng.next_u32(), thresholds, options, vocab, rng);
                out.labels.values.push(token as i32);
            } else {
                out.labels.values.push(IGNORE_INDEX);
            }
        }
        return Ok(());
    }
    out.labels
        .values
        .extend(std::iter::repeat_n(IGNORE_INDEX, row.len()));
    let label_first = out.labels.values.len() - row.len();
    for (a, b) in spans {
        let draw = u64::from(rng.next_u32());
        for (i, &token) in row.iter().enumerate().take(b).skip(a) {
            out.labels.values[label_first + i] = token as i32;
            out.inputs.values[first + i] = if draw < thresholds.0 {
                options.mask_id
            } else if draw < thresholds.1 {
                vocab.random_ordinary(rng)
            } else {
                token
            };
        }
    }
    Ok(())
}

/// Keeps chosen ranges (words or spans, in row order) of at most `cap`
/// tokens in all: when they hold more, they are visited in a random order
/// and each is kept while it still fits, as BERT's `max_predictions_per_seq`
/// skips a word that would pass it. The kept ones stay in row order.
fn cap_predictions(ranges: &mut Vec<(usize, usize)>, cap: usize, rng: &mut RowRng) {
    let total: usize = ranges.iter().map(|(a, b)| b - a).sum();
    if total <= cap {
        return;
    }
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    for i in (1..order.len()).rev() {
        // Fisher-Yates; rows hold far fewer than 2^32 ranges.
        order.swap(i, rng.below(i as u32 + 1) as usize);
    }
    let mut keep = vec![false; ranges.len()];
    let mut kept = 0usize;
    for i in order {
        let (a, b) = ranges[i];
        if kept + (b - a) <= cap {
            keep[i] = true;
            kept += b - a;
        }
    }
    let mut index = 0;
    ranges.retain(|_| {
        index += 1;
        keep[index - 1]
    });
}

/// The words of one document as token ranges, special tokens excluded. A word
/// starts where `starts` says, after a special token and at the document's
/// start.
fn collect_words(
    vocab: &Vocab,
    row: &[u32],
    starts: &[bool],
    document: std::ops::Range<usize>,
    words: &mut Vec<(usize, usize)>,
) {
    let mut open: Option<usize> = None;
    for i in document.clone() {
        let token = row[i];
        if vocab.is_special(token) {
            if let Some(a) = open.take() {
                words.push((a, i));
            }
            continue;
        }
        if open.is_none() || starts[i] {
            if let Some(a) = open.replace(i) {
                words.push((a, i));
            }
        }
    }
    if let Some(a) = open {
        words.push((a, document.end));
    }
}

/// Draws one SpanBERT span length.
fn span_length(lengths: &SpanLengths, rng: &mut RowRng) -> usize {
    // Inverse CDF of the truncated geometric: P(l) ∝ p (1 - p)^(l - 1), l <= max.
    let q = 1.0 - lengths.p;
    let total = 1.0 - q.powi(lengths.max as i32);
    let u = rng.next_f64() * total;
    let mut cumulative = 0.0;
    let mut mass = lengths.p;
    for l in 1..=lengths.max as usize {
        cumulative += mass;
        if u < cumulative {
            return l;
        }
        mass *= q;
    }
    lengths.max as usize
}

/// Chooses spans of words (as token ranges) covering `round(words *
/// probability)` words: span
/// lengths are drawn until the budget is spent (the last one cut to fit, as
/// SpanBERT does), then placed left to right in drawn order with uniformly
/// random gaps of at least one word, so spans never touch or overlap.
fn choose_spans(
    probability: f64,
    lengths: &SpanLengths,
    words: &[(usize, usize)],
    rng: &mut RowRng,
    chosen: &mut Vec<(usize, usize)>,
) {
    let n = words.len();
    let budget = (n as f64 * probability).round_ties_even() as usize;
    if budget == 0 {
        return;
    }
    let mut spans = Vec::new();
    let mut covered = 0usize;
    while covered < budget {
        let l = span_length(lengths, rng).min(budget - covered);
        // Spans need a free word between them; stop when no room is left.
        if covered + l + spans.len() > n {
            break;
        }
        spans.push(l);
        covered += l;
    }
    let k = spans.len();
    if k == 0 {
        return;
    }
    // Gaps g_0..g_k with g_1..g_{k-1} >= 1: put the k - 1 forced words aside
    // and split the rest into k + 1 parts, each >= 0, uniformly.
    let free = n - covered - (k - 1);
    let bars = random_subset_sorted(free + k, k, rng);
    let mut word = 0usize;
    let mut previous: Option<usize> = None;
    for (&length, &bar) in spans.iter().zip(&bars) {
        // The free words before this span, plus the forced separator after
        // the previous one.
        word += match previous {
            None => bar,
            Some(p) => bar - p,
        };
        previous = Some(bar);
        let (first, _) = words[word];
        let (_, last) = words[word + length - 1];
        chosen.push((first, last));
        word += length;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, TokenRows};
    use super::*;

    fn run(options: MlmOptions, vocab: Vocab, rows: &[Vec<u32>], seed: u64) -> Corrupted {
        let values: Vec<u32> = rows.concat();
        let mut offsets = vec![0];
        for r in rows {
            offsets.push(offsets.last().unwrap() + r.len());
        }
        let keys: Vec<u64> = (0..rows.len() as u64).collect();
        let corruptor = Corruptor::new(Mode::Mlm(options), vocab).unwrap();
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: None,
        };
        corruptor.corrupt(&batch, &keys, seed, 0).unwrap()
    }

    #[test]
    fn probability_one_chooses_every_ordinary_token_and_no_special() {
        let vocab = Vocab::new(50, &[0, 1, 2]).unwrap();
        let mut options = MlmOptions::new(2);
        options.probability = 1.0;
        options.mask_rate = 1.0;
        options.random_rate = 0.0;
        let out = run(options, vocab, &[vec![0, 10, 11, 1, 12]], 3);
        assert_eq!(out.inputs.row(0), &[0, 2, 2, 1, 2]);
        assert_eq!(out.labels.row(0), &[-100, 10, 11, -100, 12]);
    }

    #[test]
    fn rates_match_bert_over_a_million_tokens() {
        let vocab = Vocab::new(1000, &[0, 1, 2, 3]).unwrap();
        let rows: Vec<Vec<u32>> = (0..2000)
            .map(|r| {
                (0..512)
                    .map(|i| 4 + ((r * 31 + i * 7) % 996) as u32)
                    .collect()
            })
            .collect();
        let out = run(MlmOptions::new(3), vocab, &rows, 11);
        let (mut chosen, mut masked, mut random, mut kept) = (0, 0, 0, 0);
        for (&input, &label) in out.inputs.values.iter().zip(&out.labels.values) {
            if label == IGNORE_INDEX {
                continue;
            }
            chosen += 1;
            if input == 3 {
                masked += 1;
            } else if input as i32 == label {
                kept += 1;
            } else {
                random += 1;
            }
        }
        let total = out.inputs.values.len() as f64;
        assert!((chosen as f64 / total - 0.15).abs() < 0.005);
        assert!((masked as f64 / chosen as f64 - 0.8).abs() < 0.005);
        // A random draw equal to the original counts as kept, 1/996 of them.
        assert!((random as f64 / chosen as f64 - 0.1).abs() < 0.005);
        assert!((kept as f64 / chosen as f64 - 0.1).abs() < 0.005);
    }

    #[test]
    fn max_predictions_caps_each_row_at_random_and_keeps_words_whole() {
        let vocab = Vocab::new(1000, &[0, 1, 2, 3]).unwrap();
        let rows: Vec<Vec<u32>> = (0..400)
            .map(|r| {
                (0..128)
                    .map(|i| 4 + ((r * 31 + i * 7) % 996) as u32)
                    .collect()
            })
            .collect();
        let chosen = |out: &Corrupted, r: usize| -> Vec<usize> {
            let labels = out.labels.row(r);
            (0..labels.len())
                .filter(|&i| labels[i] != IGNORE_INDEX)
                .collect()
        };
        let uncapped = MlmOptions {
            mask_id: 3,
            probability: 0.3,
            ..MlmOptions::default()
        };
        let capped = MlmOptions {
            max_predictions: Some(38),
            ..uncapped.clone()
        };
        let free = run(uncapped, vocab.clone(), &rows, 5);
        let out = run(capped, vocab.clone(), &rows, 5);
        let (mut full, mut position_sum, mut positions) = (0, 0usize, 0usize);
        for r in 0..rows.len() {
            let picked = chosen(&out, r);
            assert!(picked.len() <= 38, "row {r}: {} chosen", picked.len());
            // A token path row holds the cap exactly when its draws chose more.
            let free_count = chosen(&free, r).len();
            if free_count >= 38 {
                full += 1;
            }
            if picked.len() == 38 {
                position_sum += picked.iter().sum::<usize>();
                positions += picked.len();
            }
        }
        // 0.3 of 128 is 38.4 on average: about half the rows reach the cap.
        assert!((100..300).contains(&full), "{full} rows at the cap");
        // What is let go is chosen at random, not from the row's end: the
        // capped rows' chosen positions still centre on the middle (63.5).
        let mean = position_sum as f64 / positions as f64;
        assert!((mean - 63.5).abs() < 3.0, "mean position {mean}");
        // Whole words are kept or let go whole.
        let words = MlmOptions {
            mask_id: 3,
            probability: 0.5,
            whole_word: true,
            max_predictions: Some(5),
            ..MlmOptions::default()
        };
        let word_ids: Vec<i32> = (0..128).map(|i| i / 3).collect();
        let values: Vec<u32> = rows[0].clone();
        let batch = TokenRows {
            values: &values,
            offsets: &[0, 128],
            segments: None,
            word_ids: Some(&word_ids),
        };
        let corruptor = Corruptor::new(Mode::Mlm(words), vocab.clone()).unwrap();
        let out = corruptor.corrupt(&batch, &[7], 1, 0).unwrap();
        let picked = chosen(&out, 0);
        assert!(picked.len() <= 5 && !picked.is_empty());
        for &i in &picked {
            let word = i / 3;
            assert!(
                (word * 3..(word * 3 + 3).min(128)).all(|j| picked.contains(&j)),
                "{i}"
            );
        }
        let zero = MlmOptions {
            max_predictions: Some(0),
            ..MlmOptions::new(3)
        };
        assert!(Corruptor::new(Mode::Mlm(zero), vocab).is_err());
    }

    #[test]
    fn saved_word_ids_group_tokens_into_words() {
        let vocab = Vocab::new(50, &[0, 1]).unwrap();
        let options = MlmOptions {
            whole_word: true,
            probability: 0.5,
            mask_rate: 1.0,
            random_rate: 0.0,
            ..MlmOptions::new(1)
        };
        let corruptor = Corruptor::new(Mode::Mlm(options), vocab).unwrap();
        let row = [10u32, 11, 12, 13, 14, 0, 15];
        let words = [0i32, 0, 0, 1, 1, -1, 2];
        let rows = 400;
        let values: Vec<u32> = row.repeat(rows);
        let word_ids: Vec<i32> = words.repeat(rows);
        let offsets: Vec<usize> = (0..=rows).map(|r| r * row.len()).collect();
        let keys: Vec<u64> = (0..rows as u64).collect();
        let mut batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: Some(&word_ids),
        };
        let out = corruptor.corrupt(&batch, &keys, 0, 0).unwrap();
        let mut patterns = std::collections::HashSet::new();
        for r in 0..rows {
            let chosen: Vec<bool> = out
                .labels
                .row(r)
                .iter()
                .map(|&l| l != IGNORE_INDEX)
                .collect();
            assert!(chosen[0] == chosen[1] && chosen[1] == chosen[2]);
            assert_eq!(chosen[3], chosen[4]);
            assert!(!chosen[5], "a special token was chosen");
            patterns.insert((chosen[0], chosen[3], chosen[6]));
        }
        assert_eq!(
            patterns.len(),
            8,
            "every combination of the three words occurs"
        );
        // Without saved word ids, a vocabulary without word marks cannot say.
        batch.word_ids = None;
        let err = corruptor.corrupt(&batch, &keys, 0, 0).unwrap_err();
        assert!(err.to_string().contains("where words start"), "{err}");
    }

    #[test]
    fn chosen_rate_follows_p_at_every_position_and_tiny_p_chooses_nothing() {
        let vocab = Vocab::new(1000, &[0, 1, 2, 3]).unwrap();
        let rows: Vec<Vec<u32>> = (0..4000)
            .map(|r| {
                (0..64)
                    .map(|i| 4 + ((r * 31 + i * 7) % 996) as u32)
                    .collect()
            })
            .collect();
        for p in [0.01, 0.15, 0.9] {
            let options = MlmOptions {
                probability: p,
                ..MlmOptions::new(3)
            };
            let out = run(options, vocab.clone(), &rows, 5);
            let chosen = |i: usize| {
                (0..rows.len())
                    .filter(|&r| out.labels.row(r)[i] != IGNORE_INDEX)
                    .count() as f64
                    / rows.len() as f64
            };
            let all = out
                .labels
                .values
                .iter()
                .filter(|&&l| l != IGNORE_INDEX)
                .count() as f64
                / out.labels.values.len() as f64;
            // 256k trials: 5 standard deviations of the overall rate; the
            // first and last positions see 4000 trials each.
            let sd = (p * (1.0 - p) / out.labels.values.len() as f64).sqrt();
            assert!((all - p).abs() < 5.0 * sd, "p={p}: rate {all}");
            let sd_one = (p * (1.0 - p) / rows.len() as f64).sqrt();
            for i in [0, 63] {
                assert!((chosen(i) - p).abs() < 5.0 * sd_one, "p={p} position {i}");
            }
        }
        let options = MlmOptions {
            probability: 1e-20,
            ..MlmOptions::new(3)
        };
        let out = run(options, vocab, &rows, 5);
        assert!(out.labels.values.iter().all(|&l| l == IGNORE_INDEX));
    }

    #[test]
    fn ln_unit_matches_the_standard_log() {
        let mut worst = 0f64;
        for i in 0..=200_000u32 {
            // Spread over (0, 1], many decades down, through the reduction's seams.
            let x = (i as f32 / 200_000.0).powi(9).max(f32::MIN_POSITIVE);
            let exact = f64::from(x).ln();
            let relative = (f64::from(ln_unit(x)) - exact).abs() / exact.abs().max(1e-30);
            if x < 1.0 {
                worst = worst.max(relative);
            }
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(ln_unit(1.0), 0.0);
    }

    #[test]
    fn span_lengths_follow_spanbert() {
        // The paper's p = 0.2, max = 10 are the default.
        let lengths = SpanLengths { p: 0.2, max: 10 };
        assert_eq!(lengths, SpanLengths::default());
        let stream = crate::rng::StreamKey::new(0, "t", 0);
        let mut rng = stream.row(1);
        let draws = 200_000;
        let mean = (0..draws)
            .map(|_| span_length(&lengths, &mut rng))
            .sum::<usize>() as f64
            / draws as f64;
        assert!((mean - 3.8).abs() < 0.03, "mean span {mean}");
    }
}
