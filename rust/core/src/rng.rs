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
    block: u64,
    buffer: [u32; 4],
    used: usize,
}

impl RowRng {
    fn new(key: [u32; 2], row_key: u64) -> Self {
        Self {
            key,
            row_key,
            block: 0,
            buffer: [0; 4],
            used: 4,
        }
    }

    /// Positions the stream at 32-bit draw number `draw`.
    pub fn seek(&mut self, draw: u64) {
        self.block = draw / 4;
        self.used = 4;
        let skip = (draw % 4) as usize;
        if skip > 0 {
            self.refill();
            self.used = skip;
        }
    }

    #[inline]
    fn refill(&mut self) {
        let counter = [
            self.row_key as u32,
            (self.row_key >> 32) as u32,
            self.block as u32,
            (self.block >> 32) as u32,
        ];
        self.buffer = philox4x32_10(counter, self.key);
        self.block += 1;
        self.used = 0;
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.refill();
        }
        let value = self.buffer[self.used];
        self.used += 1;
        value
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
        assert!(n > 0, "below(0) has no value to return");
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u64::from(self.next_u32()) * u64::from(n);
            if (product as u32) >= threshold {
                return (product >> 32) as u32;
            }
        }
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
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
