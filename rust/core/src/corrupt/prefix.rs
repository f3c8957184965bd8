//! Prefix LM: split each document into a prefix the model reads both ways
//! and a target it predicts.

use super::{check_rate, Corrupted, IGNORE_INDEX};
use crate::error::{Result, TokenmillError};
use crate::rng::RowRng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrefixSplit {
    /// The prefix length is uniform in `[1, length - 1]`.
    Uniform,
    /// The prefix is this share of the document, rounded, within `[1, length - 1]`.
    Ratio(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixLayout {
    /// One sequence: `input_ids` is the row, `labels` are -100 on the
    /// prefix, and `prefix_lens` holds each document's prefix length.
    Decoder,
    /// `input_ids` is the prefix, `labels` the rest (one document per row).
    EncoderDecoder,
}

/// Where prefix LM splits rows and how it lays them out.
///
/// [`Default`] splits uniformly in the decoder layout, without EOS.
///
/// # Examples
///
/// ```
/// use tokenmill_core::corrupt::{PrefixLayout, PrefixOptions, PrefixSplit};
/// let halves = PrefixOptions {
///     split: PrefixSplit::Ratio(0.5),
///     ..PrefixOptions::default()
/// };
/// assert_eq!(halves.layout, PrefixLayout::Decoder);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixOptions {
    pub split: PrefixSplit,
    pub layout: PrefixLayout,
    /// Appended to the targets of the encoder-decoder layout when set.
    pub eos: Option<u32>,
}

impl Default for PrefixOptions {
    fn default() -> Self {
        Self {
            split: PrefixSplit::Uniform,
            layout: PrefixLayout::Decoder,
            eos: None,
        }
    }
}

impl PrefixOptions {
    pub(super) fn validate(&self) -> Result<()> {
        if let PrefixSplit::Ratio(r) = self.split {
            check_rate("the prefix ratio", r)?;
        }
        Ok(())
    }
}

/// The prefix length of one document of `length >= 2` tokens.
pub(super) fn split_point(split: PrefixSplit, length: usize, rng: &mut RowRng) -> usize {
    match split {
        PrefixSplit::Uniform => 1 + rng.below(length as u32 - 1) as usize,
        PrefixSplit::Ratio(r) => {
            ((length as f64 * r).round_ties_even() as usize).clamp(1, length - 1)
        }
    }
}

fn too_short(length: usize) -> TokenmillError {
    TokenmillError::data(
        0,
        format!("the row holds {length} token(s); a prefix and a target need at least 2"),
        "drop rows shorter than 2 tokens before this stage",
    )
}

pub(super) fn corrupt(
    options: &PrefixOptions,
    row: &[u32],
    segments: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    match options.layout {
        PrefixLayout::Decoder => {
            if segments.len() == 1 && row.len() < 2 {
                return Err(too_short(row.len()));
            }
            out.inputs.values.extend_from_slice(row);
            let mut start = 0usize;
            for &length in segments {
                let length = length as usize;
                // A packed document under 2 tokens has no target: all prefix.
                let prefix = if length < 2 {
                    length
                } else {
                    split_point(options.split, length, rng)
                };
                out.labels
                    .values
                    .extend(std::iter::repeat_n(IGNORE_INDEX, prefix));
                out.labels.values.extend(
                    row[start + prefix..start + length]
                        .iter()
                        .map(|&t| t as i32),
                );
                out.prefix_lens.values.push(prefix as u32);
                start += length;
            }
        }
        PrefixLayout::EncoderDecoder => {
            if segments.len() != 1 {
                return Err(TokenmillError::data(
                    0,
                    format!("the row packs {} documents", segments.len()),
                    "the encoder-decoder layout splits one document per row; use --layout decoder for packed rows",
                ));
            }
            split_encoder_decoder(options.split, options.eos, row, rng, out)?;
        }
    }
    Ok(())
}

/// Inputs are the prefix, labels the rest (UL2's S-denoiser shares this).
pub(super) fn split_encoder_decoder(
    split: PrefixSplit,
    eos: Option<u32>,
    row: &[u32],
    rng: &mut RowRng,
    out: &mut Corrupted,
) -> Result<()> {
    if row.len() < 2 {
        return Err(too_short(row.len()));
    }
    let prefix = split_point(split, row.len(), rng);
    out.inputs.values.extend_from_slice(&row[..prefix]);
    out.labels
        .values
        .extend(row[prefix..].iter().map(|&t| t as i32));
    if let Some(eos) = eos {
        out.labels.values.push(eos as i32);
    }
    out.prefix_lens.values.push(prefix as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Corruptor, Mode, Segments, TokenRows, Vocab};
    use super::*;

    #[test]
    fn decoder_layout_per_document() {
        let options = PrefixOptions {
            split: PrefixSplit::Ratio(0.5),
            ..PrefixOptions::default()
        };
        let corruptor =
            Corruptor::new(Mode::Prefix(options), Vocab::new(100, &[0]).unwrap()).unwrap();
        let values: Vec<u32> = (10..20).collect();
        let lengths = [4u32, 6];
        let batch = TokenRows {
            values: &values,
            offsets: &[0, 10],
            segments: Some(Segments {
                lengths: &lengths,
                offsets: &[0, 2],
            }),
            word_ids: None,
        };
        let out = corruptor.corrupt(&batch, &[1], 0, 0).unwrap();
        assert_eq!(out.inputs.row(0), values.as_slice());
        assert_eq!(out.prefix_lens.row(0), &[2, 3]);
        assert_eq!(
            out.labels.row(0),
            &[-100, -100, 12, 13, -100, -100, -100, 17, 18, 19]
        );
    }

    #[test]
    fn uniform_split_covers_every_point() {
        let options = PrefixOptions {
            split: PrefixSplit::Uniform,
            layout: PrefixLayout::EncoderDecoder,
            eos: Some(1),
        };
        let corruptor =
            Corruptor::new(Mode::Prefix(options), Vocab::new(100, &[0, 1]).unwrap()).unwrap();
        let values: Vec<u32> = (10..15).collect();
        let mut seen = [0usize; 5];
        for key in 0..4000u64 {
            let batch = TokenRows {
                values: &values,
                offsets: &[0, 5],
                segments: None,
                word_ids: None,
            };
            let out = corruptor.corrupt(&batch, &[key], 0, 0).unwrap();
            let prefix = out.inputs.row(0).len();
            let mut joined: Vec<i32> = out.inputs.row(0).iter().map(|&t| t as i32).collect();
            joined.extend_from_slice(out.labels.row(0));
            assert_eq!(joined, vec![10, 11, 12, 13, 14, 1]);
            seen[prefix] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(
            seen[1..]
                .iter()
                .all(|&n| (n as f64 / 1000.0 - 1.0).abs() < 0.1),
            "{seen:?}"
        );
    }
}
