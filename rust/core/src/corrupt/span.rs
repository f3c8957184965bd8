//! T5 span corruption (`random_spans_noise_mask` and its sentinel layout).

use super::{apportion, check_id, check_rate, random_segmentation, Corrupted, Vocab};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

/// How T5 span corruption draws its noise spans.
///
/// [`Default`] is T5's (density 0.15, mean span 3, no EOS) with no
/// sentinels: the caller must give its vocabulary's sentinel ids, and a
/// [`Corruptor`](super::Corruptor) refuses options without them.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::{Corruptor, Mode, SpanOptions, Vocab};
/// let vocab = Vocab::new(200, &[0, 1]).unwrap();
/// assert!(Corruptor::new(Mode::Span(SpanOptions::default()), vocab.clone()).is_err());
/// let span = SpanOptions {
///     sentinels: (100..200).rev().collect(),
///     ..SpanOptions::default()
/// };
/// assert!(Corruptor::new(Mode::Span(span), vocab).is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SpanOptions {
    /// Share of tokens turned into noise (T5: 0.15).
    pub noise_density: f64,
    /// Mean noise span length in tokens (T5: 3).
    pub mean_span: f64,
    /// Sentinel ids in order: `<extra_id_0>`, `<extra_id_1>`, ...; the
    /// caller must set them (the default is empty, which validation refuses).
    pub sentinels: Vec<u32>,
    /// Appended to inputs and targets when set.
    pub eos: Option<u32>,
}

impl Default for SpanOptions {
    fn default() -> Self {
        Self {
            noise_density: 0.15,
            mean_span: 3.0,
            sentinels: Vec::new(),
            eos: None,
        }
    }
}

impl SpanOptions {
    pub(super) fn validate(&self, vocab: &Vocab) -> Result<()> {
        check_rate("the noise density", self.noise_density)?;
        if !(self.mean_span.is_finite() && self.mean_span >= 1.0) {
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
/// T5 walks up one raw token at a time; the inputs' length grows by 0 or 1
/// per raw token, so the same answer is found by bisection, which ends
/// for any length.
///
/// # Errors
///
/// [`TokenmillError::Config`] for a zero `inputs_length`, a density outside
/// [0, 1] or a mean span that is not a finite number of at least 1 (as
/// span corruption refuses them), or a raw length past `usize::MAX`.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::t5_input_and_target_lengths;
/// assert_eq!(t5_input_and_target_lengths(512, 0.15, 3.0).unwrap(), (568, 114));
/// ```
pub fn t5_input_and_target_lengths(
    inputs_length: usize,
    noise_density: f64,
    mean_span: f64,
) -> Result<(usize, usize)> {
    check_rate("the noise density", noise_density)?;
    if !(mean_span.is_finite() && mean_span >= 1.0) {
        return Err(TokenmillError::config(
            format!("the mean span length {mean_span} is below 1"),
            "pass a mean span length of at least 1 token, e.g. T5's 3",
        ));
    }
    if inputs_length == 0 {
        return Err(TokenmillError::config(
            "an input length of 0 holds not even the end-of-sequence token",
            "pass an input length of at least 2, e.g. T5's 512",
        ));
    }
    let lengths = |tokens: usize| {
        let noise = ((tokens as f64 * noise_density).round_ties_even() as usize).min(tokens);
        let nonnoise = tokens - noise;
        let spans = (noise as f64 / mean_span).round_ties_even() as usize;
        (
            nonnoise.saturating_add(spans).saturating_add(1),
            noise.saturating_add(spans).saturating_add(1),
        )
    };
    let fits = |tokens: usize| lengths(tokens).0 <= inputs_length;
    // The answer is `lo` or above and below `hi`, where nothing fits.
    let mut lo = inputs_length;
    let mut step = 1usize;
    let mut hi = lo.saturating_add(step);
    while fits(hi) && hi < usize::MAX {
        lo = hi;
        step = step.saturating_mul(2);
        hi = inputs_length.saturating_add(step);
    }
    if fits(hi) {
        return Err(TokenmillError::config(
            format!(
                "{inputs_length} inputs at noise density {noise_density} and mean span \
                 {mean_span} take more than {} raw tokens",
                usize::MAX
            ),
            "pass a shorter input length or a shorter mean span",
        ));
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut tokens = lo;
    let (_, mut targets) = lengths(tokens);
    // T5 keeps targets no longer than inputs at density 0.5.
    if noise_density == 0.5 && targets > inputs_length {
        tokens -= 1;
        targets -= 1;
    }
    Ok((tokens, targets))
}

/// How many noise tokens and spans one row gets, T5's way.
fn noise_budget(length: usize, density: f64, mean_span: f64) -> (usize, usize) {
    let noise = ((length as f64 * density).round_ties_even() as usize).clamp(1, length - 1);
    let spans = ((noise as f64 / mean_span).round_ties_even() as usize).max(1);
    (noise, spans)
}

/// Noise tokens and spans per document of a packed row: the row gets T5's
/// budget for its whole length, spans shared out first (a document of `l`
/// tokens holds at most `l / 2`, each after a clean token), then noise
/// tokens (at least one per span, leaving at least one clean token per
/// span), so no span crosses into the next document. A row under 2 tokens
/// gets no noise, as T5's mask gives it.
///
/// When the documents are too short to hold the noise in T5's span count,
/// `exact` (span mode: output lengths must stay static) makes it an error;
/// otherwise (UL2's long-span denoisers) spans are added until the noise
/// fits.
fn budgets(
    segments: &[u32],
    density: f64,
    mean_span: f64,
    exact: bool,
) -> Result<Vec<(usize, usize)>> {
    let lengths: Vec<usize> = segments.iter().map(|&l| l as usize).collect();
    let total: usize = lengths.iter().sum();
    if total < 2 {
        return Ok(vec![(0, 0); lengths.len()]);
    }
    let (noise, spans) = noise_budget(total, density, mean_span);
    if lengths.len() == 1 {
        return Ok(vec![(noise, spans)]);
    }
    let zeros = vec![0; lengths.len()];
    let span_capacity: Vec<usize> = lengths.iter().map(|&l| l / 2).collect();
    let most_spans: usize = span_capacity.iter().sum();
    let mut wanted = spans;
    loop {
        let (span_parts, spans) = apportion(wanted, &lengths, &zeros, &span_capacity);
        let noise_high: Vec<usize> = span_parts
            .iter()
            .zip(&lengths)
            .map(|(&s, &l)| if s == 0 { 0 } else { l - s })
            .collect();
        let (noise_parts, placed) = apportion(noise.max(spans), &lengths, &span_parts, &noise_high);
        if placed == noise || (!exact && wanted >= most_spans) {
            return Ok(noise_parts.into_iter().zip(span_parts).collect());
        }
        if exact {
            // Shapes would silently differ from T5's; better to say so.
            return Err(TokenmillError::data(
                0,
                format!(
                    "its {} documents are too short to hold {noise} noise tokens in {spans} \
                     spans without a span crossing a document boundary",
                    lengths.len()
                ),
                "pack longer documents together, or lower the noise density",
            ));
        }
        wanted += 1;
    }
}

pub(super) fn corrupt(
    options: &SpanOptions,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    corrupt_with(
        true,
        options,
        options.noise_density,
        options.mean_span,
        row,
        segments,
        rng,
        &mut out.inputs.values,
        &mut out.labels.values,
    )
}

/// Span corruption at a given density and mean span (UL2's R and X
/// denoisers call this with their own settings): one row's inputs and
/// targets appended to `inputs` and `labels`.
#[allow(clippy::too_many_arguments)]
pub(super) fn corrupt_with(
    exact: bool,
    options: &SpanOptions,
    density: f64,
    mean_span: f64,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    inputs: &mut Vec<u32>,
    labels: &mut Vec<i32>,
) -> Result<()> {
    if segments.len() == 1 && row.len() < 2 {
        // A lone row this short has nothing to corrupt; inside a packed row
        // such a fragment simply gets no noise.
        return Err(TokenmillError::data(
            0,
            format!(
                "the row holds {} token(s); span corruption needs at least 2",
                row.len()
            ),
            "drop rows shorter than 2 tokens, or concatenate rows with --input-length",
        ));
    }
    // Each row's span lengths go in buffers kept per thread: two fresh
    // vectors per row (and their growth) were a tenth of the row's time.
    SPAN_LENGTHS.with_borrow_mut(|(noise_lengths, clean_lengths)| {
        corrupt_document_spans(
            options,
            density,
            mean_span,
            exact,
            row,
            segments,
            rng,
            inputs,
            labels,
            noise_lengths,
            clean_lengths,
        )
    })?;
    if let Some(eos) = options.eos {
        inputs.push(eos);
        labels.push(eos as i32);
    }
    Ok(())
}

thread_local! {
    static SPAN_LENGTHS: std::cell::RefCell<(Vec<usize>, Vec<usize>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

#[allow(clippy::too_many_arguments)]
fn corrupt_document_spans(
    options: &SpanOptions,
    density: f64,
    mean_span: f64,
    exact: bool,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    inputs: &mut Vec<u32>,
    labels: &mut Vec<i32>,
    noise_lengths: &mut Vec<usize>,
    clean_lengths: &mut Vec<usize>,
) -> Result<()> {
    let mut sentinel = 0usize;
    let mut start = 0usize;
    // A lone document (the common case) needs no apportioning, nor its allocations.
    let (one, many);
    let parts: &[(usize, usize)] = match segments {
        [length] if *length >= 2 => {
            one = [noise_budget(*length as usize, density, mean_span)];
            &one
        }
        _ => {
            many = budgets(segments, density, mean_span, exact)?;
            &many
        }
    };
    for (&length, &(noise, spans)) in segments.iter().zip(parts) {
        let document = &row[start..start + length as usize];
        start += length as usize;
        if noise == 0 || spans == 0 {
            inputs.extend_from_slice(document);
            continue;
        }
        // As `random_spans_noise_mask`: spans can be no more than the clean
        // stretches that separate them.
        let spans = spans.min(document.len() - noise);
        random_segmentation(noise, spans, rng, noise_lengths);
        random_segmentation(document.len() - noise, spans, rng, clean_lengths);
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
        // Size the document's output once, then fill it: spans are a few
        // tokens, and a memcpy call per span cost more than its copying.
        let inputs_at = inputs.len();
        let labels_at = labels.len();
        inputs.resize(inputs_at + document.len() - noise + spans, 0);
        labels.resize(labels_at + noise + spans, 0);
        let inputs = &mut inputs[inputs_at..];
        let labels = &mut labels[labels_at..];
        let (mut at, mut written, mut labelled) = (0usize, 0usize, 0usize);
        for (&clean, &noisy) in clean_lengths.iter().zip(noise_lengths.iter()) {
            let id = options.sentinels[sentinel];
            sentinel += 1;
            copy_short(
                &mut inputs[written..written + clean],
                &document[at..at + clean],
            );
            inputs[written + clean] = id;
            written += clean + 1;
            at += clean;
            labels[labelled] = id as i32;
            copy_short(
                &mut labels[labelled + 1..=labelled + noisy],
                &document[at..at + noisy],
            );
            labelled += noisy + 1;
            at += noisy;
        }
    }
    Ok(())
}

/// `dst[i] = src[i] as D` for the short runs between spans: a few
/// overlapping fixed-size moves per size class, inlined, instead of a call
/// to memcpy, which loops and copies of more than 64 bytes turn into (and
/// which costs more than copying a span's few tokens).
#[inline]
fn copy_short<D: FromId>(dst: &mut [D], src: &[u32]) {
    #[inline(always)]
    fn block<const N: usize, D: FromId>(dst: &mut [D], src: &[u32]) {
        let (dst, src) = (&mut dst[..N], &src[..N]);
        for i in 0..N {
            dst[i] = D::from_id(src[i]);
        }
    }
    #[inline(always)]
    fn ends<const N: usize, D: FromId>(dst: &mut [D], src: &[u32]) {
        let n = src.len();
        block::<N, D>(dst, src);
        block::<N, D>(&mut dst[n - N..], &src[n - N..]);
    }
    debug_assert_eq!(dst.len(), src.len());
    match src.len() {
        0 => {}
        1 => dst[0] = D::from_id(src[0]),
        2..=3 => {
            let n = src.len();
            dst[0] = D::from_id(src[0]);
            dst[1] = D::from_id(src[1]);
            dst[n - 1] = D::from_id(src[n - 1]);
        }
        4..=7 => ends::<4, D>(dst, src),
        8..=15 => ends::<8, D>(dst, src),
        16..=31 => ends::<16, D>(dst, src),
        32..=63 => {
            ends::<16, D>(&mut dst[..32], &src[..32]);
            let n = src.len();
            ends::<16, D>(&mut dst[n - 32..], &src[n - 32..]);
        }
        _ => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = D::from_id(s);
            }
        }
    }
}

/// How an output buffer holds a token id: inputs as the id, labels as the
/// i32 the losses read (ids index a vocabulary, so they are below 2^31).
trait FromId: Copy {
    fn from_id(id: u32) -> Self;
}

impl FromId for u32 {
    #[inline(always)]
    fn from_id(id: u32) -> u32 {
        id
    }
}

impl FromId for i32 {
    #[inline(always)]
    fn from_id(id: u32) -> i32 {
        id as i32
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, Segments, TokenRows, Vocab};
    use super::*;
    use proptest::prelude::*;

    const SENTINEL_BASE: u32 = 1000;

    fn options() -> SpanOptions {
        SpanOptions {
            sentinels: (0..100).map(|i| SENTINEL_BASE + 99 - i).collect(),
            eos: Some(1),
            ..SpanOptions::default()
        }
    }

    fn corrupt_rows(
        options: SpanOptions,
        rows: &[Vec<u32>],
        segments: Option<&[Vec<u32>]>,
    ) -> Result<Corrupted> {
        corrupt_rows_seeded(options, rows, segments, 5)
    }

    fn corrupt_rows_seeded(
        options: SpanOptions,
        rows: &[Vec<u32>],
        segments: Option<&[Vec<u32>]>,
        seed: u64,
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
            word_ids: None,
        };
        let keys: Vec<u64> = (0..rows.len() as u64).collect();
        corruptor.corrupt(&batch, &keys, seed, 0)
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
        let lengths = |n, density, mean| t5_input_and_target_lengths(n, density, mean).unwrap();
        assert_eq!(lengths(512, 0.15, 3.0), (568, 114));
        assert_eq!(lengths(128, 0.15, 3.0), (141, 29));
        assert_eq!(lengths(512, 0.5, 3.0).1, 512);
    }

    /// T5's own search, one raw token at a time.
    fn t5_walk(inputs_length: usize, density: f64, mean: f64) -> (usize, usize) {
        let lengths = |tokens: usize| {
            let noise = (tokens as f64 * density).round_ties_even() as usize;
            let spans = (noise as f64 / mean).round_ties_even() as usize;
            (tokens - noise + spans + 1, noise + spans + 1)
        };
        let mut tokens = inputs_length;
        while lengths(tokens + 1).0 <= inputs_length {
            tokens += 1;
        }
        let (_, mut targets) = lengths(tokens);
        if density == 0.5 && targets > inputs_length {
            tokens -= 1;
            targets -= 1;
        }
        (tokens, targets)
    }

    #[test]
    fn t5_length_helper_bisects_to_t5s_walk_and_ends_for_any_length() {
        for n in 1..400 {
            for (density, mean) in [(0.0, 1.0), (0.15, 3.0), (0.5, 3.0), (0.9, 1.5), (1.0, 8.0)] {
                let got = t5_input_and_target_lengths(n, density, mean).unwrap();
                assert_eq!(got, t5_walk(n, density, mean), "{n} {density} {mean}");
            }
        }
        // T5's walk would take 2^62 steps here, and forever at density 1.
        let (raw, _) = t5_input_and_target_lengths(1 << 62, 0.15, 3.0).unwrap();
        assert!(raw > 1 << 62);
        // Past usize::MAX raw tokens there is no answer to give.
        for (n, mean) in [(usize::MAX, 3.0), (1415, 1e17)] {
            let err = t5_input_and_target_lengths(n, 1.0, mean).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn t5_length_helper_refuses_what_span_corruption_refuses() {
        for (n, density, mean) in [
            (512, f64::NAN, 3.0),
            (512, 1.5, 3.0),
            (512, -0.1, 3.0),
            (512, 0.15, 0.5),
            (512, 0.15, f64::INFINITY),
            (0, 0.5, 3.0),
        ] {
            let err = t5_input_and_target_lengths(n, density, mean).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
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
        for seed in 0..20u64 {
            let out =
                corrupt_rows_seeded(options(), &[row.clone()], Some(&segments), seed).unwrap();
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
    fn packed_short_documents_keep_t5_shapes() {
        // 568 tokens as many short documents still corrupt into 512 + 114.
        let too_short = [vec![3u32; 189], vec![1]].concat();
        let row: Vec<u32> = (0..568).map(|i| 2 + i % 900).collect();
        let err = corrupt_rows(options(), &[row], Some(&[too_short])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("too short to hold 85 noise tokens in 28 spans"),
            "{message}"
        );
        for docs in [
            [vec![14u32; 40], vec![8]].concat(),
            [vec![30u32; 18], vec![28]].concat(),
        ] {
            let mut row = Vec::new();
            for (d, &len) in docs.iter().enumerate() {
                row.extend((0..len).map(|i| 2 + ((d as u32) * 7 + i) % 900));
            }
            assert_eq!(row.len(), 568);
            for seed in 0..10 {
                let out = corrupt_rows_seeded(
                    options(),
                    &[row.clone()],
                    Some(std::slice::from_ref(&docs)),
                    seed,
                )
                .unwrap();
                assert_eq!(out.inputs.row(0).len(), 512);
                assert_eq!(out.labels.row(0).len(), 114);
                assert_eq!(uncorrupt(out.inputs.row(0), out.labels.row(0)), row);
            }
        }
    }

    #[test]
    fn short_rows_are_errors_and_short_packed_documents_get_no_noise() {
        let err = corrupt_rows(options(), &[vec![7, 8], vec![7]], None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("row 1: the row holds 1 token(s)"),
            "{err}"
        );
        let row: Vec<u32> = (0..21).map(|i| 10 + i).collect();
        let out =
            corrupt_rows(options(), std::slice::from_ref(&row), Some(&[vec![1, 20]])).unwrap();
        assert_eq!(
            out.inputs.row(0)[0],
            10,
            "the 1-token document is left as it is"
        );
        assert_eq!(uncorrupt(out.inputs.row(0), out.labels.row(0)), row);
    }

    #[test]
    fn long_spans_in_short_documents_add_spans_unless_exact() {
        // UL2's X denoiser (density 0.5, mean span 64) on 128 tokens in
        // three documents: one span cannot hold 64 noise tokens in any one.
        let parts = budgets(&[40, 40, 48], 0.5, 64.0, false).unwrap();
        assert_eq!(parts.iter().map(|p| p.0).sum::<usize>(), 64);
        for (&(noise, spans), l) in parts.iter().zip([40usize, 40, 48]) {
            assert!((noise == 0 && spans == 0) || (spans <= noise && noise + spans <= l));
        }
        assert!(budgets(&[40, 40, 48], 0.5, 64.0, true).is_err());
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

    #[test]
    fn short_copies_copy_every_length() {
        let src: Vec<u32> = (0..100).collect();
        for n in 0..100 {
            let mut dst = vec![u32::MAX; n];
            copy_short(&mut dst, &src[..n]);
            assert_eq!(dst, &src[..n]);
            let mut labels = vec![-1i32; n];
            copy_short(&mut labels, &src[..n]);
            assert!(labels.iter().zip(&src).all(|(&l, &s)| l == s as i32));
        }
    }

    proptest! {
        #[test]
        fn uncorrupting_restores_the_row(len in 2usize..700, key: u64, density in 0.01f64..0.9, mean in 1.0f64..10.0) {
            let row: Vec<u32> = (0..len)
                .map(|i| 2 + (i as u32).wrapping_mul(7919).wrapping_add(key as u32) % 900)
                .collect();
            let options = SpanOptions { noise_density: density, mean_span: mean, ..options() };
            let vocab = Vocab::new(SENTINEL_BASE + 100, &[0, 1]).unwrap();
            let corruptor = Corruptor::new(Mode::Span(options), vocab).unwrap();
            let offsets = [0, len];
            let batch = TokenRows { values: &row, offsets: &offsets, segments: None, word_ids: None };
            match corruptor.corrupt(&batch, &[key], 1, 0) {
                Ok(out) => prop_assert_eq!(uncorrupt(out.inputs.row(0), out.labels.row(0)), row),
                Err(e) => prop_assert!(e.to_string().contains("sentinels")),
            }
        }
    }
}
