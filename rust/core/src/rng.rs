//! Counter-based, stateless randomness.
//!
//! Every random choice in tokenmill is a pure function of
//! `(seed, stage, epoch, row key, draw index)`. There is no generator state to
//! carry between rows, batches, shards, threads or processes, so the same seed
//! gives the same bytes however the work is split, and a resumed run needs no
//! saved RNG state.
//!
//! The block function is Philox4x32-10 (Salmon et al., "Parallel random
//! numbers: as easy as 1, 2, 3", SC'11), the generator behind cuRAND's and
//! JAX's counter-based streams: ten rounds pass BigCrush, and a block is a
//! handful of multiplies, so drawing per row costs nothing next to the work.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: 128 random bits for a 128-bit counter under a 64-bit key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut ctr = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = u64::from(PHILOX_M0) * u64::from(ctr[0]);
        let p1 = u64::from(PHILOX_M1) * u64::from(ctr[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ k[0], lo1, hi0 ^ ctr[3] ^ k[1], lo0];
    }
    ctr
}

/// Four Philox4x32-10 blocks at once: `counters[word][lane]` in, the blocks'
/// words out in the same layout.
#[inline]
fn philox4x32_10_x4(counters: [[u32; 4]; 4], key: [u32; 2]) -> [[u32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86-64 baseline; every x86-64 CPU has it.
        unsafe { sse2::philox4x32_10_x4(counters, key) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [[0u32; 4]; 4];
        for lane in 0..4 {
            let block = philox4x32_10(counters.map(|word| word[lane]), key);
            for word in 0..4 {
                out[word][lane] = block[word];
            }
        }
        out
    }
}

/// Philox across four counters in SSE2 lanes (every x86-64 has SSE2).
/// Compilers leave the scalar rounds unvectorized: the 32x32->64 multiplies
/// need `pmuludq`, which takes lanes 0 and 2, with the odd lanes shifted down.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_mul_epu32, _mm_or_si128, _mm_set1_epi32, _mm_set1_epi64x,
        _mm_slli_epi64, _mm_srli_epi64, _mm_xor_si128,
    };

    /// The high and low 32-bit halves of `a * m` in each of the four lanes.
    ///
    /// # Safety
    ///
    /// The CPU must have SSE2 (every x86-64 does). `unsafe fn` rather than
    /// a safe `#[target_feature]` fn keeps this building on Rust 1.85.
    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn mul_hi_lo(a: __m128i, m: __m128i) -> (__m128i, __m128i) {
        let even = _mm_mul_epu32(a, m);
        let odd = _mm_mul_epu32(_mm_srli_epi64::<32>(a), m);
        let low_half = _mm_set1_epi64x(0xFFFF_FFFF);
        let hi = _mm_or_si128(
            _mm_srli_epi64::<32>(even),
            _mm_and_si128(odd, _mm_slli_epi64::<32>(low_half)),
        );
        let lo = _mm_or_si128(_mm_and_si128(even, low_half), _mm_slli_epi64::<32>(odd));
        (hi, lo)
    }

    fn load(words: [u32; 4]) -> __m128i {
        // SAFETY: [u32; 4] and __m128i have the same size, any bits are valid.
        unsafe { std::mem::transmute::<[u32; 4], __m128i>(words) }
    }

    fn store(vector: __m128i) -> [u32; 4] {
        // SAFETY: as in `load`.
        unsafe { std::mem::transmute::<__m128i, [u32; 4]>(vector) }
    }

    /// # Safety
    ///
    /// As [`mul_hi_lo`].
    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn philox4x32_10_x4(counters: [[u32; 4]; 4], key: [u32; 2]) -> [[u32; 4]; 4] {
        let [mut c0, mut c1, mut c2, mut c3] = counters.map(load);
        let m0 = _mm_set1_epi32(PHILOX_M0 as i32);
        let m1 = _mm_set1_epi32(PHILOX_M1 as i32);
        let mut k = key;
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(PHILOX_W0);
                k[1] = k[1].wrapping_add(PHILOX_W1);
            }
            let (hi0, lo0) = mul_hi_lo(c0, m0);
            let (hi1, lo1) = mul_hi_lo(c2, m1);
            let k0 = _mm_set1_epi32(k[0] as i32);
            let k1 = _mm_set1_epi32(k[1] as i32);
            c0 = _mm_xor_si128(_mm_xor_si128(hi1, c1), k0);
            c1 = lo1;
            c2 = _mm_xor_si128(_mm_xor_si128(hi0, c3), k1);
            c3 = lo0;
        }
        [c0, c1, c2, c3].map(store)
    }
}

/// Identifies one random stream family: a seed, the stage or objective that
/// draws from it, and the epoch. Two stages with the same seed never share draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    key: [u32; 2],
}

impl StreamKey {
    /// # Examples
    ///
    /// ```
    /// use tokenmill_core::rng::StreamKey;
    /// let mlm = StreamKey::new(42, "mlm", 0);
    /// assert_ne!(mlm, StreamKey::new(42, "span", 0));
    /// assert_ne!(mlm, StreamKey::new(42, "mlm", 1));
    /// ```
    pub fn new(seed: u64, stage: &str, epoch: u64) -> Self {
        let mut material = Vec::with_capacity(stage.len() + 9);
        material.extend_from_slice(stage.as_bytes());
        material.push(0);
        material.extend_from_slice(&epoch.to_le_bytes());
        let mixed = xxh3_64_with_seed(&material, seed);
        Self {
            key: [mixed as u32, (mixed >> 32) as u32],
        }
    }

    /// The generator for one row. Cheap: no hashing, no allocation.
    #[inline]
    pub fn row(&self, row_key: u64) -> RowRng {
        RowRng::new(self.key, row_key)
    }
}

/// The random stream of one row: draw `i` is a pure function of the key, the
/// row key and `i`, so draws can also be taken out of order with [`RowRng::seek`].
#[derive(Clone, Debug)]
pub struct RowRng {
    key: [u32; 2],
    row_key: u64,
    /// The next group of [`GROUP_BLOCKS`] blocks to generate.
    group: u64,
    buffer: [u32; GROUP_WORDS],
    used: usize,
}

/// Blocks are made four at a time, one per SIMD lane: a group costs about
/// what 1.3 blocks made one by one do.
const GROUP_BLOCKS: u64 = 4;
const GROUP_WORDS: usize = 16;

impl RowRng {
    fn new(key: [u32; 2], row_key: u64) -> Self {
        Self {
            key,
            row_key,
            group: 0,
            buffer: [0; GROUP_WORDS],
            used: GROUP_WORDS,
        }
    }

    /// Positions the stream at 32-bit draw number `draw`.
    pub fn seek(&mut self, draw: u64) {
        self.group = draw / GROUP_WORDS as u64;
        self.used = GROUP_WORDS;
        let skip = (draw % GROUP_WORDS as u64) as usize;
        if skip > 0 {
            self.refill();
            self.used = skip;
        }
    }

    // Out of line: the draw's fast path stays a load and an increment, and
    // the Philox rounds are not copied into every caller.
    #[inline(never)]
    fn refill(&mut self) {
        let block = |lane: usize| self.group * GROUP_BLOCKS + lane as u64;
        let counters = [
            [self.row_key as u32; 4],
            [(self.row_key >> 32) as u32; 4],
            std::array::from_fn(|lane| block(lane) as u32),
            std::array::from_fn(|lane| (block(lane) >> 32) as u32),
        ];
        let words = philox4x32_10_x4(counters, self.key);
        // Draw 4b + w is word w of block b, as if blocks were made one by one.
        for (lane, block) in self.buffer.chunks_exact_mut(4).enumerate() {
            for (word, slot) in block.iter_mut().enumerate() {
                *slot = words[word][lane];
            }
        }
        self.group += 1;
        self.used = 0;
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == GROUP_WORDS {
            self.refill();
        }
        let value = self.buffer[self.used];
        self.used += 1;
        value
    }

    /// Sixteen draws at once, for loops that vectorize over them: the next
    /// whole group of blocks. Draws left in the current group are skipped,
    /// so the stream stays a pure function of the calls made on it.
    #[inline]
    pub fn next_16(&mut self) -> [u32; 16] {
        self.refill();
        self.used = GROUP_WORDS;
        self.buffer
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let lo = u64::from(self.next_u32());
        let hi = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`, without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    ///
    /// Panics if `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        bounded(n, || self.next_u32())
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// A row's draws taken sixteen at a time into a local buffer, for hot loops:
/// the buffer's position then lives in a register, where [`RowRng`]'s own
/// must go back to memory around every possible refill. Its first draw
/// skips what is left of the stream's current group, as
/// [`RowRng::next_16`] does.
pub struct Draws<'a> {
    rng: &'a mut RowRng,
    block: [u32; GROUP_WORDS],
    used: usize,
}

impl<'a> Draws<'a> {
    pub fn new(rng: &'a mut RowRng) -> Self {
        Self {
            rng,
            block: [0; GROUP_WORDS],
            used: GROUP_WORDS,
        }
    }

    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == GROUP_WORDS {
            self.block = self.rng.next_16();
            self.used = 0;
        }
        let value = self.block[self.used];
        self.used += 1;
        value
    }

    /// Uniform in `[0, n)`, as [`RowRng::below`].
    ///
    /// # Panics
    ///
    /// Panics if `n == 0`.
    #[inline(always)]
    pub fn below(&mut self, n: u32) -> u32 {
        bounded(n, || self.next_u32())
    }
}

/// Uniform in `[0, n)` from uniform 32-bit draws, without modulo bias
/// (Lemire's multiply-and-reject).
#[inline(always)]
fn bounded(n: u32, mut draw: impl FnMut() -> u32) -> u32 {
    assert!(n > 0, "below(0) has no value to return");
    let mut product = u64::from(draw()) * u64::from(n);
    // The rejection threshold `2^32 mod n` is below n, so a low half of at
    // least n is always accepted; only the rare rest pays for the division.
    if (product as u32) < n {
        let threshold = n.wrapping_neg() % n;
        while (product as u32) < threshold {
            product = u64::from(draw()) * u64::from(n);
        }
    }
    (product >> 32) as u32
}

/// Row key of a document id given as bytes (a string id column).
#[inline]
pub fn row_key_from_bytes(id: &[u8]) -> u64 {
    xxh3_64_with_seed(id, 0x746f_6b65_6e6d_696c)
}

/// Row key of an integer document id. Integer and string ids live in
/// different domains, so `7` and `"7"` do not collide by construction of the seed.
#[inline]
pub fn row_key_from_int(id: i128) -> u64 {
    xxh3_64_with_seed(&id.to_le_bytes(), 0x6964_5f69_6e74_6567)
}

/// Row key of a row without an id column: its shard name and index in the shard.
pub fn row_key_from_position(shard: &str, index: u64) -> u64 {
    let shard_hash = xxh3_64(shard.as_bytes());
    let mut material = [0u8; 16];
    material[..8].copy_from_slice(&shard_hash.to_le_bytes());
    material[8..].copy_from_slice(&index.to_le_bytes());
    xxh3_64_with_seed(&material, 0x706f_7369_7469_6f6e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sixteen_at_once_are_the_next_group() {
        let stream = StreamKey::new(5, "t", 2);
        let mut one_by_one = stream.row(77);
        one_by_one.next_u32(); // part of group 0, which next_16 skips
        let mut batched = one_by_one.clone();
        one_by_one.seek(16);
        let expected: Vec<u32> = (0..16).map(|_| one_by_one.next_u32()).collect();
        assert_eq!(batched.next_16().to_vec(), expected);
        assert_eq!(batched.next_u32(), one_by_one.next_u32());
    }

    // Known-answer vectors of the Random123 reference implementation
    // (kat_vectors, philox4x32 with 10 rounds).
    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn draws_are_consecutive_blocks() {
        // The stream is blocks 0, 1, 2, ... of the row's counter, however
        // many blocks a refill computes.
        let stream = StreamKey::new(9, "blocks", 3);
        let row_key = 0x0123_4567_89ab_cdef_u64;
        let mut rng = stream.row(row_key);
        for block in 0..20u32 {
            let expected = philox4x32_10(
                [row_key as u32, (row_key >> 32) as u32, block, 0],
                stream.key,
            );
            let drawn = [
                rng.next_u32(),
                rng.next_u32(),
                rng.next_u32(),
                rng.next_u32(),
            ];
            assert_eq!(drawn, expected, "block {block}");
        }
    }

    #[test]
    fn uniform_draws_have_the_right_moments() {
        let stream = StreamKey::new(1, "test", 0);
        let n = 200_000;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for row in 0..n {
            let x = stream.row(row).next_f64();
            sum += x;
            sum_sq += x * x;
        }
        let mean = sum / n as f64;
        let var = sum_sq / n as f64 - mean * mean;
        // Standard error of the mean is sqrt(1/12 / n) ~ 0.00065.
        assert!((mean - 0.5).abs() < 0.004, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn below_is_unbiased_over_small_ranges() {
        let mut rng = StreamKey::new(9, "below", 0).row(3);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        for count in counts {
            assert!((9_500..10_500).contains(&count), "{counts:?}");
        }
    }

    proptest! {
        // Draws depend on nothing but (key, row, index): seeking to any draw
        // gives the value a sequential reader sees there.
        #[test]
        fn seek_agrees_with_sequential_reads(seed: u64, row: u64, target in 0u64..64) {
            let stream = StreamKey::new(seed, "seek", 0);
            let mut sequential = stream.row(row);
            for _ in 0..target {
                sequential.next_u32();
            }
            let mut sought = stream.row(row);
            sought.seek(target);
            prop_assert_eq!(sequential.next_u32(), sought.next_u32());
        }

        // Lemire's method as first written (the threshold computed on every
        // call): the division-free path must accept exactly the same draws,
        // here with n up to 2^31 + 1, where half of all draws are rejected.
        #[test]
        fn below_accepts_the_draws_the_textbook_loop_does(
            seed: u64,
            n in prop_oneof![1u32..100, 1u32..=(1 << 31) + 1],
        ) {
            let stream = StreamKey::new(seed, "lemire", 0);
            let (mut fast, mut reference, mut grouped) =
                (stream.row(1), stream.row(1), stream.row(1));
            let mut draws = Draws::new(&mut grouped);
            for _ in 0..64 {
                let threshold = n.wrapping_neg() % n;
                let expected = loop {
                    let product = u64::from(reference.next_u32()) * u64::from(n);
                    if (product as u32) >= threshold {
                        break (product >> 32) as u32;
                    }
                };
                prop_assert_eq!(fast.below(n), expected);
                // A fresh stream starts on a group boundary, so the grouped
                // reader sees the same draws.
                prop_assert_eq!(draws.below(n), expected);
            }
        }

        #[test]
        fn below_stays_in_range(seed: u64, n in 1u32..1_000_000) {
            let mut rng = StreamKey::new(seed, "range", 0).row(0);
            for _ in 0..16 {
                prop_assert!(rng.below(n) < n);
            }
        }

        #[test]
        fn distinct_rows_get_distinct_streams(seed: u64, a: u64, b: u64) {
            prop_assume!(a != b);
            let stream = StreamKey::new(seed, "rows", 0);
            prop_assert_ne!(stream.row(a).next_u64(), stream.row(b).next_u64());
        }
    }
}
