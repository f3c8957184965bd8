//! MinHash signatures and LSH banding for near-duplicate detection.
//!
//! A document becomes a set of shingles (word or character n-grams, each
//! hashed to 64 bits with XXH3); permutation `i` maps a shingle hash `h` to
//! `a_i * h + b_i (mod 2^64)` with odd `a_i`, and the signature keeps the
//! minimum per permutation. Two signatures agree in a fraction of positions
//! that estimates the Jaccard similarity of the shingle sets, with standard
//! error about `1/sqrt(num_perm)`.

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::columns::TextColumn;
use crate::error::{Result, TokenmillError};
use crate::normalize::Normalization;
use crate::rng::StreamKey;

/// What a shingle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shingling {
    /// `n` consecutive whitespace-separated words.
    Words(usize),
    /// `n` consecutive characters.
    Chars(usize),
}

/// The most permutations a signature may have. Dedup uses 64 to 512; far
/// more buys no accuracy, and `num_perm` values sized like a byte count
/// would fill memory (and `optimal_bands`' search grows as `n log n`).
pub const MAX_NUM_PERM: usize = 8192;

fn check_num_perm(num_perm: usize) -> Result<()> {
    if num_perm == 0 || num_perm > MAX_NUM_PERM {
        return Err(TokenmillError::config(
            format!("--num-perm {num_perm} is outside [1, {MAX_NUM_PERM}]"),
            "use 128, the default",
        ));
    }
    Ok(())
}

/// Reusable buffers of one worker.
#[derive(Default)]
pub struct Scratch {
    normalized: String,
    word_hashes: Vec<u64>,
    boundaries: Vec<usize>,
    shingles: Vec<u64>,
}

/// Computes MinHash signatures with a fixed set of permutations.
#[derive(Clone, Debug)]
pub struct MinHasher {
    multipliers: Vec<u64>,
    offsets: Vec<u64>,
    shingling: Shingling,
    normalization: Normalization,
}

impl MinHasher {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for zero permutations or more than
    /// [`MAX_NUM_PERM`], or a zero-length shingle.
    pub fn new(
        num_perm: usize,
        seed: u64,
        shingling: Shingling,
        normalization: Normalization,
    ) -> Result<Self> {
        check_num_perm(num_perm)?;
        let (Shingling::Words(n) | Shingling::Chars(n)) = shingling;
        if n == 0 {
            return Err(TokenmillError::config(
                "--ngram must be at least 1",
                "use 5, the default",
            ));
        }
        let mut rng = StreamKey::new(seed, "minhash-permutations", 0).row(0);
        let multipliers = (0..num_perm).map(|_| rng.next_u64() | 1).collect();
        let offsets = (0..num_perm).map(|_| rng.next_u64()).collect();
        Ok(Self {
            multipliers,
            offsets,
            shingling,
            normalization,
        })
    }

    pub fn num_perm(&self) -> usize {
        self.multipliers.len()
    }

    /// The 64-bit hashes of the document's shingles, in text order (with repeats).
    pub fn shingle_hashes<'s>(&self, text: &str, scratch: &'s mut Scratch) -> &'s [u64] {
        let Scratch {
            normalized,
            word_hashes,
            boundaries,
            shingles,
        } = scratch;
        shingles.clear();
        match self.shingling {
            Shingling::Words(n) => {
                // Normalizing changes no word boundary, so each word is
                // normalized on its own, and only when it needs it.
                word_hashes.clear();
                let norm = self.normalization;
                for_each_word(text, |word, classes| {
                    let word = if classes & NOT_ASCII != 0
                        || (norm.strip_punctuation && classes & NOT_ALPHANUMERIC != 0)
                    {
                        norm.apply(word, normalized)
                    } else if norm.lowercase && classes & UPPER != 0 {
                        // The common case, an ASCII word with capitals: fold in place.
                        normalized.clear();
                        normalized.push_str(word);
                        normalized.make_ascii_lowercase();
                        normalized.as_str()
                    } else {
                        word
                    };
                    if !word.is_empty() {
                        word_hashes.push(xxh3_64(word.as_bytes()));
                    }
                });
                rolling_shingles(word_hashes, n, shingles);
            }
            Shingling::Chars(n) => {
                let text = self.normalization.apply(text, normalized);
                boundaries.clear();
                boundaries.extend(text.char_indices().map(|(i, _)| i));
                boundaries.push(text.len());
                let raw = text.as_bytes();
                for start in 0..boundaries.len().saturating_sub(n) {
                    shingles.push(xxh3_64(&raw[boundaries[start]..boundaries[start + n]]));
                }
            }
        }
        shingles
    }

    /// Writes the signature of `text` into `signature` (length `num_perm`).
    /// Returns `false`, leaving every value at `u64::MAX`, for a text shorter
    /// than one shingle.
    pub fn signature_into(&self, text: &str, signature: &mut [u64], scratch: &mut Scratch) -> bool {
        signature.fill(u64::MAX);
        let count = self.shingle_hashes(text, scratch).len();
        if count == 0 {
            return false;
        }
        min_update(
            signature,
            &self.multipliers,
            &self.offsets,
            &scratch.shingles,
        );
        true
    }

    /// Signatures of every row, row-major `[rows, num_perm]`, and which rows
    /// were too short for one shingle (their signature is all `u64::MAX`).
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Data`] for a row that is not valid UTF-8.
    pub fn signatures(&self, texts: &TextColumn) -> Result<(Vec<u64>, Vec<bool>)> {
        let rows = texts.len();
        let width = self.num_perm();
        let mut signatures = vec![0u64; rows * width];
        let mut too_short = vec![false; rows];
        let chunk = rows.div_ceil(rayon::current_num_threads() * 8).max(1);
        signatures
            .par_chunks_mut(chunk * width)
            .zip(too_short.par_chunks_mut(chunk))
            .enumerate()
            .try_for_each(|(index, (block, short))| -> Result<()> {
                let mut scratch = Scratch::default();
                for (offset, (signature, flag)) in
                    block.chunks_mut(width).zip(short.iter_mut()).enumerate()
                {
                    let row = index * chunk + offset;
                    *flag = !self.signature_into(texts.get(row)?, signature, &mut scratch);
                }
                Ok(())
            })
            .map_err(|err| first_bad_row(texts, err))?;
        Ok((signatures, too_short))
    }
}

const SPACE: u8 = 1;
const UPPER: u8 = 2;
const NOT_ALPHANUMERIC: u8 = 4;
const NOT_ASCII: u8 = 8;

/// What each ASCII byte is, for the word scanner.
static ASCII_CLASS: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let byte = b as u8;
        if matches!(byte, b' ' | b'\t'..=b'\r') {
            table[b] = SPACE;
        } else {
            if byte.is_ascii_uppercase() {
                table[b] |= UPPER;
            }
            if !byte.is_ascii_alphanumeric() {
                table[b] |= NOT_ALPHANUMERIC;
            }
        }
        b += 1;
    }
    table
};

/// Calls `visit` with each whitespace-separated word of `text` (as
/// `str::split_whitespace` splits) and the union of its bytes' classes.
/// ASCII bytes are classified by table, without decoding.
fn for_each_word(text: &str, mut visit: impl FnMut(&str, u8)) {
    let bytes = text.as_bytes();
    let len = bytes.len();
    let char_at = |at: usize| text[at..].chars().next().expect("a char starts here");
    let mut at = 0;
    loop {
        while at < len {
            let byte = bytes[at];
            if byte < 0x80 {
                if ASCII_CLASS[byte as usize] != SPACE {
                    break;
                }
                at += 1;
            } else {
                let c = char_at(at);
                if !c.is_whitespace() {
                    break;
                }
                at += c.len_utf8();
            }
        }
        if at >= len {
            return;
        }
        let start = at;
        let mut classes = 0u8;
        while at < len {
            let byte = bytes[at];
            if byte < 0x80 {
                let class = ASCII_CLASS[byte as usize];
                if class == SPACE {
                    break;
                }
                classes |= class;
                at += 1;
            } else {
                let c = char_at(at);
                if c.is_whitespace() {
                    break;
                }
                classes |= NOT_ASCII;
                at += c.len_utf8();
            }
        }
        visit(&text[start..at], classes);
    }
}

/// Hashes of every window of `n` word hashes: a polynomial over the window,
/// rolled in O(1) per word, then mixed, so no window is hashed from scratch.
fn rolling_shingles(words: &[u64], n: usize, out: &mut Vec<u64>) {
    const BASE: u64 = 0x9E37_79B9_7F4A_7C15;
    if words.len() < n {
        return;
    }
    let leading = BASE.wrapping_pow((n - 1) as u32);
    let mut window = words[..n]
        .iter()
        .fold(0u64, |h, &w| h.wrapping_mul(BASE).wrapping_add(w));
    out.push(mix64(window));
    for i in n..words.len() {
        window = window
            .wrapping_sub(words[i - n].wrapping_mul(leading))
            .wrapping_mul(BASE)
            .wrapping_add(words[i]);
        out.push(mix64(window));
    }
}

/// MurmurHash3's 64-bit finalizer: every input bit flips each output bit
/// with probability close to 1/2.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Parallel workers may fail on different rows; report the first, so the
/// error does not depend on the thread count.
fn first_bad_row(texts: &TextColumn, err: TokenmillError) -> TokenmillError {
    (0..texts.len())
        .find_map(|row| texts.get(row).err())
        .unwrap_or(err)
}

#[inline(always)]
fn min_update_generic(
    signature: &mut [u64],
    multipliers: &[u64],
    offsets: &[u64],
    shingles: &[u64],
) {
    for &h in shingles {
        for ((slot, &a), &b) in signature.iter_mut().zip(multipliers).zip(offsets) {
            *slot = (*slot).min(a.wrapping_mul(h).wrapping_add(b));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn min_update_avx2(signature: &mut [u64], multipliers: &[u64], offsets: &[u64], shingles: &[u64]) {
    min_update_generic(signature, multipliers, offsets, shingles);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
fn min_update_avx512(
    signature: &mut [u64],
    multipliers: &[u64],
    offsets: &[u64],
    shingles: &[u64],
) {
    min_update_generic(signature, multipliers, offsets, shingles);
}

/// The same loop compiled for the widest vector unit the CPU has.
fn min_update(signature: &mut [u64], multipliers: &[u64], offsets: &[u64], shingles: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU was just checked for every feature the function enables.
            return unsafe { min_update_avx512(signature, multipliers, offsets, shingles) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { min_update_avx2(signature, multipliers, offsets, shingles) };
        }
    }
    min_update_generic(signature, multipliers, offsets, shingles);
}

/// The fraction of positions where two signatures agree.
///
/// # Panics
///
/// Panics if the signatures differ in length.
pub fn estimate_jaccard(a: &[u64], b: &[u64]) -> f64 {
    assert_eq!(a.len(), b.len(), "signatures of different lengths");
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Exact Jaccard similarity of two sorted, deduplicated sets.
pub fn exact_jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both) as f64
}

/// One key per band: the hash of that band's `rows` signature values.
/// Band `j` uses seed `j`, so equal values in different bands never share a bucket.
pub fn band_keys(signature: &[u64], bands: usize, rows: usize, out: &mut Vec<u64>) {
    let mut bytes = Vec::with_capacity(rows * 8);
    for band in 0..bands {
        bytes.clear();
        for value in &signature[band * rows..(band + 1) * rows] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        out.push(xxh3_64_with_seed(&bytes, band as u64));
    }
}

/// Bands and rows for `threshold`: the `(b, r)` with `b * r <= num_perm`
/// minimizing the weighted areas under the false-positive curve (below the
/// threshold) and the false-negative curve (above it), as datasketch does.
///
/// # Errors
///
/// [`TokenmillError::Config`] for a threshold outside (0, 1), a `num_perm`
/// outside [1, [`MAX_NUM_PERM`]], or weights that are not finite,
/// non-negative and not both zero.
pub fn optimal_bands(
    threshold: f64,
    num_perm: usize,
    false_positive_weight: f64,
    false_negative_weight: f64,
) -> Result<(usize, usize)> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(TokenmillError::config(
            format!("threshold {threshold} is outside (0, 1)"),
            "pass --threshold between 0 and 1, e.g. 0.8",
        ));
    }
    check_num_perm(num_perm)?;
    let weight = |w: f64| w.is_finite() && w >= 0.0;
    if !(weight(false_positive_weight)
        && weight(false_negative_weight)
        && false_positive_weight + false_negative_weight > 0.0)
    {
        return Err(TokenmillError::config(
            format!(
                "false-positive weight {false_positive_weight} and false-negative weight \
                 {false_negative_weight} are not two non-negative numbers, not both 0"
            ),
            "use the defaults, 0.5 and 0.5",
        ));
    }
    let candidate = |s: f64, b: usize, r: usize| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
    let mut best = (1, 1);
    let mut best_error = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let false_positive = integrate(|s| candidate(s, b, r), 0.0, threshold);
            let false_negative = integrate(|s| 1.0 - candidate(s, b, r), threshold, 1.0);
            let error =
                false_positive * false_positive_weight + false_negative * false_negative_weight;
            if error < best_error {
                best_error = error;
                best = (b, r);
            }
        }
    }
    Ok(best)
}

/// Composite Simpson's rule; the integrands are smooth polynomials.
fn integrate(f: impl Fn(f64) -> f64, lo: f64, hi: f64) -> f64 {
    const STEPS: usize = 256;
    let h = (hi - lo) / STEPS as f64;
    let mut sum = f(lo) + f(hi);
    for i in 1..STEPS {
        sum += f(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hasher(num_perm: usize) -> MinHasher {
        MinHasher::new(num_perm, 1, Shingling::Words(3), Normalization::default()).unwrap()
    }

    fn shingle_set(h: &MinHasher, text: &str) -> Vec<u64> {
        let mut scratch = Scratch::default();
        let mut set = h.shingle_hashes(text, &mut scratch).to_vec();
        set.sort_unstable();
        set.dedup();
        set
    }

    #[test]
    fn shorter_than_one_shingle() {
        let h = hasher(16);
        let mut signature = vec![0; 16];
        let mut scratch = Scratch::default();
        assert!(!h.signature_into("two words", &mut signature, &mut scratch));
        assert!(signature.iter().all(|&v| v == u64::MAX));
        assert!(h.signature_into("now three words", &mut signature, &mut scratch));
    }

    #[test]
    fn estimates_track_exact_jaccard() {
        let h = hasher(256);
        let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
        let mut scratch = Scratch::default();
        for overlap in [50, 200, 300, 380] {
            let a = words[..overlap + 10].join(" ");
            let b = words[10..].join(" ");
            let exact = exact_jaccard(&shingle_set(&h, &a), &shingle_set(&h, &b));
            let mut sa = vec![0; 256];
            let mut sb = vec![0; 256];
            h.signature_into(&a, &mut sa, &mut scratch);
            h.signature_into(&b, &mut sb, &mut scratch);
            let estimate = estimate_jaccard(&sa, &sb);
            // Four standard errors of a binomial proportion at 256 permutations.
            let tolerance = 4.0 * (exact * (1.0 - exact) / 256.0).sqrt() + 0.01;
            assert!(
                (estimate - exact).abs() < tolerance,
                "exact {exact} estimate {estimate}"
            );
        }
    }

    #[test]
    fn char_shingles_respect_character_boundaries() {
        let h = MinHasher::new(8, 0, Shingling::Chars(2), Normalization::default()).unwrap();
        let mut scratch = Scratch::default();
        assert_eq!(h.shingle_hashes("héé", &mut scratch).len(), 2);
        assert_eq!(h.shingle_hashes("é", &mut scratch).len(), 0);
    }

    #[test]
    fn optimal_bands_for_common_thresholds() {
        // What datasketch's MinHashLSH picks at threshold 0.8 (tests/ compare more).
        assert_eq!(optimal_bands(0.8, 128, 0.5, 0.5).unwrap(), (9, 13));
        assert!(optimal_bands(1.0, 128, 0.5, 0.5).is_err());
        assert!(optimal_bands(0.0, 128, 0.5, 0.5).is_err());
    }

    #[test]
    fn optimal_bands_refuses_what_it_cannot_weigh() {
        // 0 permutations once gave (1, 1), a band wider than the signature;
        // NaN weights made every error NaN and (1, 1) won silently.
        for (num_perm, fp, fn_) in [
            (0, 0.5, 0.5),
            (MAX_NUM_PERM + 1, 0.5, 0.5),
            (usize::MAX, 0.5, 0.5),
            (128, f64::NAN, 0.5),
            (128, -1.0, 0.5),
            (128, f64::INFINITY, 0.5),
            (128, 0.0, 0.0),
        ] {
            let err = optimal_bands(0.8, num_perm, fp, fn_).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
        assert_eq!(optimal_bands(0.5, 1, 1.0, 0.0).unwrap(), (1, 1));
    }

    #[test]
    fn a_hasher_refuses_more_permutations_than_memory_should_hold() {
        let words = Shingling::Words(3);
        assert!(MinHasher::new(MAX_NUM_PERM, 0, words, Normalization::default()).is_ok());
        for num_perm in [0, MAX_NUM_PERM + 1, 1 << 40, usize::MAX] {
            let err = MinHasher::new(num_perm, 0, words, Normalization::default()).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn rolling_windows_equal_windows_hashed_from_scratch() {
        let words: Vec<u64> = (0..20)
            .map(|i| xxh3_64(format!("w{i}").as_bytes()))
            .collect();
        for n in 1..6 {
            let mut rolled = Vec::new();
            rolling_shingles(&words, n, &mut rolled);
            let direct: Vec<u64> = words
                .windows(n)
                .map(|w| {
                    mix64(w.iter().fold(0u64, |h, &x| {
                        h.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(x)
                    }))
                })
                .collect();
            assert_eq!(rolled, direct);
        }
    }

    proptest! {
        #[test]
        fn words_split_like_split_whitespace(text in "[ a-zA-Z\t\n\u{a0}\u{2003}é漢]{0,40}") {
            let mut words = Vec::new();
            for_each_word(&text, |w, classes| words.push((w.to_owned(), classes & NOT_ASCII == 0)));
            let expected: Vec<(String, bool)> =
                text.split_whitespace().map(|w| (w.to_owned(), w.is_ascii())).collect();
            prop_assert_eq!(words, expected);
        }
    }

    #[test]
    fn words_normalize_like_the_whole_text() {
        let n = Normalization {
            lowercase: true,
            collapse_whitespace: true,
            strip_punctuation: true,
        };
        let per_word = MinHasher::new(4, 0, Shingling::Words(2), n).unwrap();
        let plain = MinHasher::new(4, 0, Shingling::Words(2), Normalization::default()).unwrap();
        let text = "Don't PANIC - it's Ünïcode, ok?  yes";
        let mut buffer = String::new();
        let normalized = n.apply(text, &mut buffer).to_owned();
        let (mut a, mut b) = (Scratch::default(), Scratch::default());
        assert_eq!(
            per_word.shingle_hashes(text, &mut a),
            plain.shingle_hashes(&normalized, &mut b)
        );
    }

    proptest! {
        #[test]
        fn identical_sets_have_identical_signatures(words in proptest::collection::vec("[a-z]{1,6}", 3..40)) {
            let h = hasher(32);
            let text = words.join(" ");
            let spaced = words.join("  \n ");
            let mut scratch = Scratch::default();
            let (mut a, mut b) = (vec![0; 32], vec![0; 32]);
            h.signature_into(&text, &mut a, &mut scratch);
            h.signature_into(&spaced, &mut b, &mut scratch);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn exact_jaccard_is_symmetric_and_bounded(
            a in proptest::collection::btree_set(0u64..50, 0..30),
            b in proptest::collection::btree_set(0u64..50, 0..30),
        ) {
            let a: Vec<u64> = a.into_iter().collect();
            let b: Vec<u64> = b.into_iter().collect();
            let j = exact_jaccard(&a, &b);
            prop_assert!((0.0..=1.0).contains(&j));
            prop_assert_eq!(j, exact_jaccard(&b, &a));
        }
    }
}
