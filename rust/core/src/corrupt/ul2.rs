//! UL2's mixture of denoisers: each row draws one R, S or X denoiser, whose
//! mode token leads the inputs.

use super::prefix::{split_encoder_decoder, PrefixSplit};
use super::span::{corrupt_with, SpanOptions};
use super::{check_id, check_rate, Corrupted, Vocab};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

#[derive(Clone, Debug, PartialEq)]
pub enum Denoiser {
    /// T5 span corruption at this density and mean span (R and X denoisers).
    Span { density: f64, mean_span: f64 },
    /// Prefix LM: a uniform split, the rest as target (the S-denoiser).
    Prefix,
}

/// UL2's mixture: the denoisers, their mode tokens and weights.
///
/// [`Default`] is [`Ul2Options::paper`] over [`SpanOptions::default`] with
/// mode token 0 for all three modes: placeholders the caller must replace
/// with its vocabulary's sentinels (validation refuses none) and `[NLU]`,
/// `[NLG]`, `[S2S]` ids.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::{SpanOptions, Ul2Options};
/// let span = SpanOptions {
///     sentinels: (100..200).rev().collect(),
///     ..SpanOptions::default()
/// };
/// let ul2 = Ul2Options::paper(span, 5, 6, 7);
/// assert_eq!(ul2.denoisers.len(), Ul2Options::default().denoisers.len());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Ul2Options {
    /// Sentinels and EOS as for span corruption (its density and mean span
    /// are unused: each span denoiser carries its own).
    pub span: SpanOptions,
    /// `(denoiser, mode token id, weight)`.
    pub denoisers: Vec<(Denoiser, u32, f64)>,
}

impl Default for Ul2Options {
    fn default() -> Self {
        Self::paper(SpanOptions::default(), 0, 0, 0)
    }
}

impl Ul2Options {
    /// The UL2 paper's seven denoisers, equally weighted: R (mean 3 and 8,
    /// 15%) with `[NLU]`, X (mean 3 and 8 at 50%, mean 64 at 15% and 50%)
    /// with `[NLG]`, and S (prefix LM) with `[S2S]`.
    pub fn paper(span: SpanOptions, nlu: u32, nlg: u32, s2s: u32) -> Self {
        let r = |density, mean_span| (Denoiser::Span { density, mean_span }, nlu, 1.0);
        let x = |density, mean_span| (Denoiser::Span { density, mean_span }, nlg, 1.0);
        Self {
            span,
            denoisers: vec![
                r(0.15, 3.0),
                r(0.15, 8.0),
                x(0.5, 3.0),
                x(0.5, 8.0),
                x(0.15, 64.0),
                x(0.5, 64.0),
                (Denoiser::Prefix, s2s, 1.0),
            ],
        }
    }

    pub(super) fn validate(&self, vocab: &Vocab) -> Result<()> {
        self.span.validate(vocab)?;
        if self.denoisers.is_empty() || self.denoisers.len() > 255 {
            return Err(TokenmillError::config(
                format!("{} denoisers in the mixture", self.denoisers.len()),
                "give between 1 and 255 denoisers",
            ));
        }
        for (denoiser, token, weight) in &self.denoisers {
            check_id("mode token", *token, vocab)?;
            if !(weight.is_finite() && *weight >= 0.0) {
                return Err(TokenmillError::config(
                    format!("denoiser weight {weight} is negative"),
                    "give every denoiser a weight of 0 or more",
                ));
            }
            if let Denoiser::Span { density, mean_span } = denoiser {
                check_rate("a denoiser's density", *density)?;
                if !(mean_span.is_finite() && *mean_span >= 1.0) {
                    return Err(TokenmillError::config(
                        format!("a denoiser's mean span {mean_span} is below 1"),
                        "give mean spans of at least 1 token",
                    ));
                }
            }
        }
        if self.denoisers.iter().map(|d| d.2).sum::<f64>() <= 0.0 {
            return Err(TokenmillError::config(
                "every denoiser weight is 0",
                "give at least one denoiser a positive weight",
            ));
        }
        Ok(())
    }

    fn choose(&self, rng: &mut RowRng) -> usize {
        let total: f64 = self.denoisers.iter().map(|d| d.2).sum();
        let mut u = rng.next_f64() * total;
        for (i, d) in self.denoisers.iter().enumerate() {
            if u < d.2 {
                return i;
            }
            u -= d.2;
        }
        self.denoisers.iter().rposition(|d| d.2 > 0.0).unwrap_or(0)
    }
}

pub(super) fn corrupt(
    options: &Ul2Options,
    _vocab: &Vocab,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    // The row's first draw picks its denoiser, so the choice is a pure
    // function of the row key.
    let chosen = options.choose(rng);
    let (denoiser, token, _) = &options.denoisers[chosen];
    out.denoiser.push(chosen as u8);
    out.inputs.values.push(*token);
    match denoiser {
        Denoiser::Span { density, mean_span } => corrupt_with(
            false,
            &options.span,
            *density,
            *mean_span,
            row,
            segments,
            rng,
            &mut out.inputs.values,
            &mut out.labels.values,
        ),
        Denoiser::Prefix => {
            // One cut per row, as T5's `prefix_lm` cuts concatenated inputs:
            // a cut is not a span, so it may fall in any document of a packed row.
            split_encoder_decoder(PrefixSplit::Uniform, options.span.eos, row, rng, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, TokenRows, Vocab};
    use super::*;

    #[test]
    fn mixture_follows_weights_and_mode_tokens_lead() {
        let span = SpanOptions {
            sentinels: (0..100).map(|i| 999 - i).collect(),
            eos: Some(1),
            ..SpanOptions::default()
        };
        let options = Ul2Options::paper(span, 5, 6, 7);
        let corruptor = Corruptor::new(
            Mode::Ul2(options.clone()),
            Vocab::new(1000, &[0, 1, 5, 6, 7]).unwrap(),
        )
        .unwrap();
        let rows = 7000;
        let values: Vec<u32> = (0..rows * 200).map(|i| 10 + (i % 800) as u32).collect();
        let offsets: Vec<usize> = (0..=rows).map(|r| r * 200).collect();
        let keys: Vec<u64> = (0..rows as u64).collect();
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: None,
        };
        let out = corruptor.corrupt(&batch, &keys, 3, 0).unwrap();
        let mut counts = [0usize; 7];
        for i in 0..rows {
            let d = out.denoiser[i] as usize;
            counts[d] += 1;
            assert_eq!(out.inputs.row(i)[0], options.denoisers[d].1);
        }
        for c in counts {
            assert!((c as f64 / 1000.0 - 1.0).abs() < 0.1, "{counts:?}");
        }
    }
}
