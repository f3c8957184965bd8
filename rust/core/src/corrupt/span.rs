//! T5 span corruption (`random_spans_noise_mask` and its sentinel layout).

use super::{apportion, check_id, check_rate, random_segmentation, Corrupted, Vocab};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

#[derive(Clone, Debug, PartialEq)]
pub struct SpanOptions {
    /// Share of tokens turned into noise (T5: 0.15).
    pub noise_density: f64,
    /// Mean noise span length in tokens (T5: 3).
    pub mean_span: f64,
    /// Sentinel ids in order: `<extra_id_0>`, `<extra_id_1>`, ...
    pub sentinels: Vec<u32>,
    /// Appended to inputs and targets when set.
    pub eos: Option<u32>,
}

impl SpanOptions {
    pub(super) fn validate(&self, vocab: &Vocab) -> Result<()> {
        check_rate("the noise density", self.noise_density)?;
        if self.mean_span.is_nan() || self.mean_span < 1.0 {
            return Err(TokenmillError::config(
                format!("the mean span length {} is below 1", self.mean_span),
                "pass a mean span length of at least 1 token, e.g. T5's 3",
            ));
        }
        if self.sentinels.is_empty() {
            return Err(TokenmillError::tokenizer(
                "span corruption needs sentinel tokens and none were given",
                "use a tokenizer with <extra_id_0>, <extra_id_1>, ... or count sentinels down from the top of the vocabulary",
            ));
        }
        for &id in &self.sentinels {
            check_id("sentinel", id, vocab)?;
        }
        if let Some(eos) = self.eos {
            check_id("end-of-sequence", eos, vocab)?;
        }
        Ok(())
    }
}

/// T5's length helper (`compute_input_and_target_lengths`): the raw length
/// that span-corrupts into exactly `inputs_length` inputs (EOS included),
/// and the targets' length. 512 at density 0.15, mean 3 gives (568, 114).
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::t5_input_and_target_lengths;
/// assert_eq!(t5_input_and_target_lengths(512, 0.15, 3.0), (568, 114));
/// ```
pub fn t5_input_and_target_lengths(
    inputs_length: usize,
    noise_density: f64,
    mean_span: f64,
) -> (usize, usize) {
    let lengths = |tokens: usize| {
        let noise = (tokens as f64 * noise_density).round_ties_even() as usize;
        let nonnoise = tokens - noise;
        let spans = (noise as f64 / mean_span).round_ties_even() as usize;
        (nonnoise + spans + 1, noise + spans + 1)
    };
    let mut tokens = inputs_length;
    while lengths(tokens + 1).0 <= inputs_length {
        tokens += 1;
    }
    let (_, mut targets) = lengths(tokens);
    // T5 keeps targets no longer than inputs at density 0.5.
    if noise_density == 0.5 && targets > inputs_length {
        tokens -= 1;
        targets -= 1;
    }
    (tokens, targets)
}

/// How many noise tokens and spans one row gets, T5's way.
fn noise_budget(length: usize, density: f64, mean_span: f64) -> (usize, usize) {
    let noise = ((length as f64 * density).round_ties_even() as usize).clamp(1, length - 1);
    let spans = ((noise as f64 / mean_span).round_ties_even() as usize).max(1);
    (noise, spans)
}

/// Noise tokens and spans per document of a packed row: the row's budget is
/// T5's for the whole row (so output lengths stay static), shared out by
/// length; each document keeps at least one clean token before its first
/// span, and no span crosses into the next document.
fn budgets(segments: &[u32], density: f64, mean_span: f64) -> Vec<(usize, usize)> {
    let lengths: Vec<usize> = segments.iter().map(|&l| l as usize).collect();
    if lengths.len() == 1 {
        return vec![noise_budget(lengths[0], density, mean_span)];
    }
    let total: usize = lengths.iter().sum();
    let (noise, spans) = noise_budget(total, density, mean_span);
    let zeros = vec![0; lengths.len()];
    let capacity: Vec<usize> = lengths.iter().map(|&l| l.saturating_sub(1)).collect();
    let (noise_parts, noise) = apportion(noise, &lengths, &zeros, &capacity);
    let low: Vec<usize> = noise_parts.iter().map(|&n| usize::from(n > 0)).collect();
    let high: Vec<usize> = noise_parts
        .iter()
        .zip(&lengths)
        .map(|(&n, &l)| n.min(l - n))
        .collect();
    let spans = spans.min(noise);
    let (span_parts, _) = apportion(spans, &noise_parts, &low, &high);
    noise_parts.into_iter().zip(span_parts).collect()
}

pub(super) fn corrupt(
    options: &SpanOptions,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    corrupt_with(
        options,
        options.noise_density,
        options.mean_span,
        row,
        segments,
        rng,
        out,
    )
}

/// Span corruption at a given density and mean span (UL2's R and X
/// denoisers call this with their own settings).
pub(super) fn corrupt_with(
    options: &SpanOptions,
    density: f64,
    mean_span: f64,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    if row.len() < 2 {
        return Err(TokenmillError::data(
            0,
            format!(
                "the row holds {} token(s); span corruption needs at least 2",
                row.len()
            ),
            "drop rows shorter than 2 tokens, or concatenate rows with --input-length",
        ));
    }
    let mut noise_lengths = Vec::new();
    let mut clean_lengths = Vec::new();
    let mut sentinel = 0usize;
    let mut start = 0usize;
    for (&length, (noise, spans)) in segments.iter().zip(budgets(segments, density, mean_span)) {
        let document = &row[start..start + length as usize];
        start += length as usize;
        if noise == 0 {
            out.inputs.values.extend_from_slice(document);
            continue;
        }
        // As `random_spans_noise_mask`: spans can be no more than the clean
        // stretches that separate them.
        let spans = spans.min(document.len() - noise);
        random_segmentation(noise, spans, rng, &mut noise_lengths);
        random_segmentation(document.len() - noise, spans, rng, &mut clean_lengths);
        if sentinel + spans > options.sentinels.len() {
            return Err(TokenmillError::data(
                0,
                format!(
                    "the row needs at least {} sentinels but the tokenizer has {}",
                    sentinel + spans,
                    options.sentinels.len()
                ),
                "lower the noise density, raise the mean span length, shorten the rows, or add sentinel tokens",
            ));
        }
        let mut at = 0usize;
        for (&clean, &noisy) in clean_lengths.iter().zip(&noise_lengths) {
            let id = options.sentinels[sentinel];
            sentinel += 1;
            out.inputs
                .values
                .extend_from_slice(&document[at..at + clean]);
            out.inputs.values.push(id);
            at += clean;
            out.labels.values.push(id as i32);
            out.labels
                .values
                .extend(document[at..at + noisy].iter().map(|&t| t as i32));
            at += noisy;
        }
    }
    if let Some(eos) = options.eos {
        out.inputs.values.push(eos);
        out.labels.values.push(eos as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, Segments, TokenRows, Vocab};
    use super::*;
    use proptest::prelude::*;

    const SENTINEL_BASE: u32 = 1000;

    fn options() -> SpanOptions {
        SpanOptions {
            noise_density: 0.15,
            mean_span: 3.0,
            sentinels: (0..100).map(|i| SENTINEL_BASE + 99 - i).collect(),
            eos: Some(1),
        }
    }

    fn corrupt_rows(
        options: SpanOptions,
        rows: &[Vec<u32>],
        segments: Option<&[Vec<u32>]>,
    ) -> Result<Corrupted> {
        let vocab = Vocab::new(SENTINEL_BASE + 100, &[0, 1]).unwrap();
        let corruptor = Corruptor::new(Mode::Span(options), vocab).unwrap();
        let values: Vec<u32> = rows.concat();
        let mut offsets = vec![0];
        for r in rows {
            offsets.push(offsets.last().unwrap() + r.len());
        }
        let (lengths, seg_offsets): (Vec<u32>, Vec<usize>) = match segments {
            Some(s) => {
                let mut o = vec![0];
                for r in s {
                    o.push(o.last().unwrap() + r.len());
                }
                (s.concat(), o)
            }
            None => (Vec::new(), Vec::new()),
        };
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: segments.map(|_| Segments {
                lengths: &lengths,
                offsets: &seg_offsets,
            }),
        };
        let keys: Vec<u64> = (0..rows.len() as u64).collect();
        corruptor.corrupt(&batch, &keys, 5, 0)
    }

    /// Puts the noise back where the sentinels are.
    fn uncorrupt(inputs: &[u32], labels: &[i32]) -> Vec<u32> {
        let is_sentinel = |t: u32| t >= SENTINEL_BASE;
        let mut spans = std::collections::HashMap::new();
        let mut current = None;
        for &t in &labels[..labels.len() - 1] {
            let t = t as u32;
            if is_sentinel(t) {
                current = Some(t);
                spans.insert(t, Vec::new());
            } else {
                spans.get_mut(&current.unwrap()).unwrap().push(t);
            }
        }
        let mut original = Vec::new();
        for &t in &inputs[..inputs.len() - 1] {
            if is_sentinel(t) {
                original.extend_from_slice(&spans[&t]);
            } else {
                original.push(t);
            }
        }
        original
    }

    #[test]
    fn t5_length_helper_matches_t5() {
        assert_eq!(t5_input_and_target_lengths(512, 0.15, 3.0), (568, 114));
        assert_eq!(t5_input_and_target_lengths(128, 0.15, 3.0), (141, 29));
        assert_eq!(t5_input_and_target_lengths(512, 0.5, 3.0).1, 512);
    }

    #[test]
    fn static_shapes_at_the_t5_length() {
        let rows: Vec<Vec<u32>> = (0..50)
            .map(|r| (0..568).map(|i| 2 + (r + i) % 900).collect())
            .collect();
        let out = corrupt_rows(options(), &rows, None).unwrap();
        for i in 0..50 {
            assert_eq!(out.inputs.row(i).len(), 512);
            assert_eq!(out.labels.row(i).len(), 114);
            assert_eq!(out.inputs.row(i)[1], out.inputs.row(i)[1]);
            // Sentinels count up from <extra_id_0>, the top id, in both.
            assert_eq!(out.labels.row(i)[0] as u32, SENTINEL_BASE + 99);
        }
    }

    #[test]
    fn small_exact_case() {
        let out = corrupt_rows(options(), &[(10..30).collect()], None).unwrap();
        // 20 tokens: 3 noise tokens in 1 span.
        assert_eq!(out.labels.row(0).len(), 1 + 3 + 1);
        assert_eq!(out.inputs.row(0).len(), 17 + 1 + 1);
        assert_eq!(
            uncorrupt(out.inputs.row(0), out.labels.row(0)),
            (10..30).collect::<Vec<_>>()
        );
    }

    #[test]
    fn running_out_of_sentinels_is_an_error() {
        let mut few = options();
        few.sentinels.truncate(3);
        let err = corrupt_rows(
            few,
            &[vec![5; 20], (0..400).map(|i| 2 + i % 700).collect()],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("row 1: the row needs at least"),
            "{err}"
        );
    }

    #[test]
    fn spans_stay_inside_documents() {
        // Documents use disjoint id ranges, so a span's tokens must share one.
        let docs = [40usize, 3, 100, 1, 57];
        let mut row = Vec::new();
        for (d, &len) in docs.iter().enumerate() {
            row.extend((0..len).map(|i| (100 * d + 2 + i % 90) as u32));
        }
        let segments = vec![docs.iter().map(|&d| d as u32).collect::<Vec<_>>()];
        for key in 0..20u64 {
            let _ = key;
            let out = corrupt_rows(options(), &[row.clone()], Some(&segments)).unwrap();
            let labels = out.labels.row(0);
            let mut doc_of_span: Option<u32> = None;
            for &t in &labels[..labels.len() - 1] {
                let t = t as u32;
                if t >= SENTINEL_BASE {
                    doc_of_span = None;
                } else {
                    let doc = t / 100;
                    assert!(
                        doc_of_span.is_none_or(|d| d == doc),
                        "span crosses documents"
                    );
                    doc_of_span = Some(doc);
                }
            }
            assert_eq!(uncorrupt(out.inputs.row(0), labels), row);
            // The whole row's T5 budget: round(201 * 0.15) = 30 noise tokens.
            assert_eq!(
                labels
                    .iter()
                    .filter(|&&t| (t as u32) < SENTINEL_BASE)
                    .count()
                    - 1,
                30
            );
        }
    }

    #[test]
    fn statistics_over_a_million_tokens() {
        let rows: Vec<Vec<u32>> = (0..2000)
            .map(|r| (0..568).map(|i| 2 + (r + i) % 900).collect())
            .collect();
        let out = corrupt_rows(options(), &rows, None).unwrap();
        let (mut noise, mut spans) = (0usize, 0usize);
        for i in 0..rows.len() {
            let labels = out.labels.row(i);
            spans += labels
                .iter()
                .filter(|&&t| t as u32 >= SENTINEL_BASE)
                .count();
            noise += labels.len()
                - 1
                - labels
                    .iter()
                    .filter(|&&t| t as u32 >= SENTINEL_BASE)
                    .count();
        }
        let density = noise as f64 / (rows.len() * 568) as f64;
        assert!((density - 0.15).abs() < 0.005, "density {density}");
        let mean = noise as f64 / spans as f64;
        assert!((mean / 3.0 - 1.0).abs() < 0.03, "mean span {mean}");
    }

    proptest! {
        #[test]
        fn uncorrupting_restores_the_row(len in 2usize..700, key: u64, density in 0.01f64..0.9, mean in 1.0f64..10.0) {
            let row: Vec<u32> = (0..len).map(|i| 2 + (i as u32 * 7919 + key as u32) % 900).collect();
            let options = SpanOptions { noise_density: density, mean_span: mean, ..options() };
            let vocab = Vocab::new(SENTINEL_BASE + 100, &[0, 1]).unwrap();
            let corruptor = Corruptor::new(Mode::Span(options), vocab).unwrap();
            let offsets = [0, len];
            let batch = TokenRows { values: &row, offsets: &offsets, segments: None };
            match corruptor.corrupt(&batch, &[key], 1, 0) {
                Ok(out) => prop_assert_eq!(uncorrupt(out.inputs.row(0), out.labels.row(0)), row),
                Err(e) => prop_assert!(e.to_string().contains("sentinels")),
            }
        }
    }
}
