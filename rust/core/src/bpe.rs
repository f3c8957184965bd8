//! Byte-level BPE training over streamed text, with tokenmill's special tokens.
//!
//! Words are counted batch by batch as shards stream past, so memory holds the
//! word-count table, never the corpus.

use ahash::AHashMap;
use compact_str::CompactString;
use rayon::prelude::*;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::columns::TextColumn;
use crate::error::{Result, TokenmillError};
use crate::tokenize::Tokenizer;

pub const PAD: &str = "<pad>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const MASK: &str = "<mask>";
pub const CLS: &str = "<cls>";
pub const SEP: &str = "<sep>";
/// UL2's paradigm tokens: regular, sequential and extreme denoising.
pub const MODE_TOKENS: [&str; 3] = ["[NLU]", "[S2S]", "[NLG]"];
pub const NUM_SENTINELS: usize = 100;

/// The special tokens every objective needs, in id order from 0: pad, bos,
/// eos, mask, cls, sep, the three UL2 mode tokens, then `<extra_id_0>` ..
/// `<extra_id_99>` with consecutive ids.
pub fn special_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = [PAD, BOS, EOS, MASK, CLS, SEP]
        .iter()
        .chain(MODE_TOKENS.iter())
        .map(|t| (*t).to_owned())
        .collect();
    tokens.extend((0..NUM_SENTINELS).map(|i| format!("<extra_id_{i}>")));
    tokens
}

/// Word frequencies of a corpus, as byte-level BPE pre-tokenizes it.
pub struct WordCounts {
    pre_tokenizer: ByteLevel,
    counts: AHashMap<CompactString, u64>,
    documents: u64,
}

impl Default for WordCounts {
    fn default() -> Self {
        Self {
            pre_tokenizer: byte_level(),
            counts: AHashMap::new(),
            documents: 0,
        }
    }
}

fn byte_level() -> ByteLevel {
    ByteLevel::new(false, true, true)
}

impl WordCounts {
    /// Counts the words of every row, in parallel.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Data`] for a row that is not valid UTF-8.
    pub fn add(&mut self, texts: &TextColumn) -> Result<()> {
        let rows = texts.len();
        let chunk = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        let partials: Vec<Result<AHashMap<CompactString, u64>>> = (0..rows)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let mut local = AHashMap::new();
                for row in start..(start + chunk).min(rows) {
                    self.count_into(texts.get(row)?, &mut local)
                        .map_err(|err| err.offset_row(row))?;
                }
                Ok(local)
            })
            .collect();
        for partial in partials {
            for (word, count) in partial? {
                *self.counts.entry(word).or_default() += count;
            }
        }
        self.documents += rows as u64;
        Ok(())
    }

    fn count_into(&self, text: &str, counts: &mut AHashMap<CompactString, u64>) -> Result<()> {
        let mut pretokenized = PreTokenizedString::from(text);
        self.pre_tokenizer
            .pre_tokenize(&mut pretokenized)
            .map_err(|err| TokenmillError::data(0, err.to_string(), "check the input text"))?;
        for (word, _, _) in pretokenized.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *counts.entry(CompactString::from(word)).or_default() += 1;
        }
        Ok(())
    }

    pub fn documents(&self) -> u64 {
        self.documents
    }

    pub fn distinct_words(&self) -> usize {
        self.counts.len()
    }

    /// Learns merges until the vocabulary holds `vocab_size` tokens, special
    /// tokens and the 256 byte symbols included.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Config`] when `vocab_size` cannot hold the special
    /// tokens and the byte alphabet, or nothing was counted.
    pub fn train(&self, vocab_size: usize, min_frequency: u64) -> Result<Tokenizer> {
        let specials = special_tokens();
        let floor = specials.len() + 256;
        if vocab_size < floor {
            return Err(TokenmillError::config(
                format!(
                    "--vocab-size {vocab_size} cannot hold the {} special tokens and 256 bytes",
                    specials.len()
                ),
                format!("use --vocab-size {floor} or more"),
            ));
        }
        if self.counts.is_empty() {
            return Err(TokenmillError::config(
                "the corpus holds no text to train on",
                "point the trainer at a dataset with non-empty documents",
            ));
        }
        // Each merge shortens some word by a symbol, so no corpus yields more
        // tokens than this; the trainer reserves room for `vocab_size` up
        // front, and a huge request would abort on that allocation.
        let reachable = self
            .counts
            .keys()
            .map(|word| word.chars().count().saturating_sub(1))
            .fold(floor, usize::saturating_add);
        let vocab_size = vocab_size.min(reachable);
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(added)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut model = BPE::default();
        let special = trainer.do_train(&self.counts, &mut model).map_err(|err| {
            TokenmillError::config(format!("BPE training failed: {err}"), "check the corpus")
        })?;
        let mut tokenizer = tokenizers::Tokenizer::new(model);
        tokenizer
            .with_pre_tokenizer(Some(byte_level()))
            .with_decoder(Some(byte_level()));
        tokenizer.add_special_tokens(special).map_err(|err| {
            TokenmillError::tokenizer(
                format!("cannot add special tokens: {err}"),
                "report this as a bug",
            )
        })?;
        Ok(Tokenizer::new(tokenizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;

    fn trained(texts: &[&str], vocab_size: usize) -> Tokenizer {
        let array = StringArray::from(texts.to_vec());
        let mut counts = WordCounts::default();
        counts
            .add(&TextColumn::try_new("text", &array).unwrap())
            .unwrap();
        counts.train(vocab_size, 1).unwrap()
    }

    #[test]
    fn special_tokens_take_the_first_ids_in_order() {
        let tokenizer = trained(&["the cat sat on the mat"], 400);
        for (id, token) in special_tokens().iter().enumerate() {
            assert_eq!(tokenizer.token_to_id(token), Some(id as u32), "{token}");
        }
        let first_sentinel = tokenizer.token_to_id("<extra_id_0>").unwrap();
        assert_eq!(
            tokenizer.token_to_id("<extra_id_99>"),
            Some(first_sentinel + 99)
        );
    }

    #[test]
    fn any_text_round_trips_through_the_byte_alphabet() {
        let tokenizer = trained(&["plain ascii only"], 400);
        let text = "naïve café — 漢字 🙂 tabs\tand\nnewlines";
        let encoding = tokenizer.inner().encode(text, false).unwrap();
        assert_eq!(tokenizer.decode(encoding.get_ids(), false).unwrap(), text);
    }

    #[test]
    fn frequent_words_become_single_tokens() {
        let corpus = vec!["tokenmill tokenmill tokenmill"; 50];
        let tokenizer = trained(&corpus, 600);
        let ids = tokenizer.inner().encode(" tokenmill", false).unwrap();
        assert_eq!(ids.get_ids().len(), 1);
    }

    #[test]
    fn a_vocabulary_beyond_what_the_corpus_can_merge_trains_as_the_largest_one() {
        let array = StringArray::from(vec!["the cat sat on the mat", "a cat"]);
        let mut counts = WordCounts::default();
        counts
            .add(&TextColumn::try_new("text", &array).unwrap())
            .unwrap();
        let json = |size| counts.train(size, 1).unwrap().to_json(false).unwrap();
        // Sizes a trainer once tried to reserve memory for, and aborted.
        assert_eq!(json(usize::MAX), json(10_000));
        assert_eq!(json(1 << 40), json(10_000));
    }

    #[test]
    fn too_small_a_vocabulary_is_a_config_error() {
        let array = StringArray::from(vec!["text"]);
        let mut counts = WordCounts::default();
        counts
            .add(&TextColumn::try_new("text", &array).unwrap())
            .unwrap();
        let err = counts.train(300, 1).err().unwrap();
        assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
    }
}
