//! Byte-level BPE with the merge order of Hugging Face `tokenizers`, made
//! fast by answering most pieces without merging at all.
//!
//! A piece goes, in order, to: the whole-piece table (every vocabulary
//! token whose own bytes BPE-encode to that single token, so a hit is the
//! merge result by construction); the caller's cache of earlier merges; and
//! only then the merge loop, which replays `tokenizers`' own priority queue
//! (lowest rank first, then leftmost, a queued merge still valid while the
//! pair it names would make the same token).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ahash::AHashMap;
use rayon::prelude::*;

/// GPT-2's byte-to-character map: printable Latin-1 bytes stand for
/// themselves, the rest for code points from 256 up, in byte order.
pub fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for (byte, slot) in map.iter_mut().enumerate() {
        let b = byte as u32;
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        *slot = if printable {
            char::from_u32(b).expect("Latin-1")
        } else {
            let c = char::from_u32(next).expect("below the surrogates");
            next += 1;
            c
        };
    }
    map
}

/// Merges already made, piece bytes to ids; bounded, cleared when full.
/// Keyed inline like [`WholeTable`] for pieces of up to 16 bytes, the ids
/// in one arena, so a hit costs no pointer chase and no `memcmp`.
#[derive(Default)]
pub struct PieceCache {
    /// `(first, count)` of each piece's ids in `ids`.
    slots: Slots<[u64; 2], (u32, u32)>,
    ids: Vec<u32>,
    long: AHashMap<Box<[u8]>, Box<[u32]>>,
}

/// Pieces up to this long are merged by scanning pair ranks, longer ones
/// through a priority queue.
const SHORT_MERGE: usize = 64;

/// Pieces longer than this are merged every time: caching them would let
/// one long run of a letter fill the cache.
const MAX_CACHED_PIECE: usize = 256;
const MAX_CACHED_PIECES: usize = 1 << 18;

impl PieceCache {
    /// The cached ids of `text[start..start + len]`.
    #[inline(always)]
    pub(crate) fn get_in(&self, text: &[u8], start: usize, len: usize) -> Option<&[u32]> {
        if len > INLINE_KEY {
            return self.long.get(&text[start..start + len]).map(|ids| &ids[..]);
        }
        if len == 0 {
            return None;
        }
        let (first, count) = self.slots.get(inline_key_in(text, start, len), len)?;
        Some(&self.ids[first as usize..][..count as usize])
    }

    pub(crate) fn insert(&mut self, piece: &[u8], ids: &[u32]) {
        if piece.is_empty() || piece.len() > MAX_CACHED_PIECE {
            return;
        }
        let entries = self.slots.len + self.long.len();
        if entries >= MAX_CACHED_PIECES || self.ids.len() + ids.len() > u32::MAX as usize {
            *self = Self::default();
        }
        if piece.len() > INLINE_KEY {
            self.long.insert(piece.into(), ids.into());
            return;
        }
        let place = (self.ids.len() as u32, ids.len() as u32);
        self.ids.extend_from_slice(ids);
        self.slots.insert(inline_key(piece), piece.len(), place);
    }
}

/// A byte-level BPE model ready to encode pieces.
pub struct ByteLevelBpe {
    byte_ids: [u32; 256],
    /// `(left, right) -> (rank, merged id)`, as `tokenizers` builds it (a
    /// pair listed twice keeps its later rank).
    merges: AHashMap<(u32, u32), (u32, u32)>,
    whole: WholeTable,
}

impl ByteLevelBpe {
    /// # Errors
    ///
    /// A reason the fast path cannot take this model: a byte without a
    /// token, or a merge naming a token the vocabulary lacks.
    pub fn new(
        vocab: &AHashMap<&str, u32>,
        merges: &[(&str, &str)],
        ignore_merges: bool,
    ) -> Result<Self, String> {
        let byte_chars = byte_to_char();
        let mut byte_ids = [0u32; 256];
        let mut buffer = [0u8; 4];
        for (byte, c) in byte_chars.iter().enumerate() {
            byte_ids[byte] = *vocab
                .get(c.encode_utf8(&mut buffer) as &str)
                .ok_or_else(|| {
                    format!(
                    "the byte 0x{byte:02X} has no token, so BPE would need its unknown-token rules"
                )
                })?;
        }
        let mut merge_map = AHashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let id = |token: &str| {
                vocab.get(token).copied().ok_or_else(|| {
                    format!("the merge {left:?} {right:?} names a token outside the vocabulary")
                })
            };
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = id(&joined)?;
            merge_map.insert((id(left)?, id(right)?), (rank as u32, merged));
        }
        let mut model = Self {
            byte_ids,
            merges: merge_map,
            whole: WholeTable::default(),
        };
        // Byte characters are all below U+0144: a table, not a map.
        let mut char_to_byte = [None; 0x144];
        for (byte, &c) in byte_chars.iter().enumerate() {
            char_to_byte[c as usize] = Some(byte as u8);
        }
        let candidates: Vec<(Vec<u8>, u32)> = vocab
            .iter()
            .filter_map(|(token, &id)| {
                let bytes = token
                    .chars()
                    .map(|c| char_to_byte.get(c as usize).copied().flatten())
                    .collect::<Option<Vec<u8>>>()?;
                Some((bytes, id))
            })
            .collect();
        let whole: Vec<(Vec<u8>, u32)> = candidates
            .into_par_iter()
            .filter(|(bytes, id)| ignore_merges || model.merge(bytes) == [*id])
            .collect();
        model.whole = WholeTable::new(&whole);
        Ok(model)
    }

    /// How many tokens answer a whole piece without merging.
    pub fn whole_tokens(&self) -> usize {
        self.whole.len
    }

    /// Appends the ids of the piece `text[start..end]` to `out`.
    #[inline]
    pub fn encode_piece(
        &self,
        text: &[u8],
        start: usize,
        end: usize,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
    ) {
        if let Some(id) = self.whole.get_in(text, start, end - start) {
            out.push(id);
            return;
        }
        if let Some(ids) = cache.get_in(text, start, end - start) {
            out.extend_from_slice(ids);
            return;
        }
        let piece = &text[start..end];
        let ids = self.merge(piece);
        cache.insert(piece, &ids);
        out.extend_from_slice(&ids);
    }

    /// The ids BPE makes of `piece`, merged as `tokenizers` merges.
    ///
    /// `tokenizers` pops its queue lowest rank first, then leftmost, and
    /// skips a queued merge unless the pair now at its place would make the
    /// same token. A pair at a place only ever grows by taking in its right
    /// neighbour, so a pair making the same token there is the same pair:
    /// the queue merges exactly the lowest-ranked, leftmost pair each time,
    /// which short pieces find by a scan over a rank per pair instead.
    pub fn merge(&self, piece: &[u8]) -> Vec<u32> {
        if piece.len() <= SHORT_MERGE {
            self.merge_short(piece)
        } else {
            self.merge_queued(piece)
        }
    }

    pub(crate) fn merge_short(&self, piece: &[u8]) -> Vec<u32> {
        let n = piece.len();
        let mut ids = [0u32; SHORT_MERGE];
        // The merge of (ids[i], ids[i + 1]): its rank (u32::MAX: none) and token.
        let mut ranks = [u32::MAX; SHORT_MERGE];
        let mut merged = [0u32; SHORT_MERGE];
        for (slot, &byte) in ids.iter_mut().zip(piece) {
            *slot = self.byte_ids[byte as usize];
        }
        let pair = |left: u32, right: u32| self.merges.get(&(left, right)).copied();
        for i in 0..n.saturating_sub(1) {
            if let Some((rank, id)) = pair(ids[i], ids[i + 1]) {
                ranks[i] = rank;
                merged[i] = id;
            }
        }
        let mut len = n;
        while len > 1 {
            let (at, &rank) = ranks[..len - 1]
                .iter()
                .enumerate()
                .min_by_key(|&(i, &r)| (r, i))
                .expect("two symbols make a pair");
            if rank == u32::MAX {
                break;
            }
            ids[at] = merged[at];
            ids.copy_within(at + 2..len, at + 1);
            ranks.copy_within(at + 2..len, at + 1);
            merged.copy_within(at + 2..len, at + 1);
            len -= 1;
            ranks[len - 1..].fill(u32::MAX);
            for i in [at.wrapping_sub(1), at] {
                if i < len - 1 {
                    (ranks[i], merged[i]) = pair(ids[i], ids[i + 1]).unwrap_or((u32::MAX, 0));
                }
            }
        }
        ids[..len].to_vec()
    }

    /// The merge loop of `tokenizers`' `Word::merge_all`, over raw bytes.
    pub(crate) fn merge_queued(&self, piece: &[u8]) -> Vec<u32> {
        #[derive(Clone, Copy)]
        struct Symbol {
            id: u32,
            prev: usize,
            next: usize,
            alive: bool,
        }
        const NONE: usize = usize::MAX;
        let n = piece.len();
        if n == 0 {
            return Vec::new();
        }
        let mut symbols: Vec<Symbol> = piece
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                id: self.byte_ids[b as usize],
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
                alive: true,
            })
            .collect();
        let mut queue: BinaryHeap<Merge> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merges
                    .get(&(w[0].id, w[1].id))
                    .map(|&(rank, new_id)| Merge { rank, pos, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let current = symbols[top.pos];
            if !current.alive || current.next == NONE {
                continue;
            }
            let right = symbols[current.next];
            match self.merges.get(&(current.id, right.id)) {
                Some(&(_, new_id)) if new_id == top.new_id => {}
                _ => continue,
            }
            symbols[top.pos].id = top.new_id;
            symbols[top.pos].next = right.next;
            symbols[current.next].alive = false;
            if right.next != NONE {
                symbols[right.next].prev = top.pos;
            }
            let merged = symbols[top.pos];
            if merged.prev != NONE {
                if let Some(&(rank, new_id)) =
                    self.merges.get(&(symbols[merged.prev].id, merged.id))
                {
                    queue.push(Merge {
                        rank,
                        pos: merged.prev,
                        new_id,
                    });
                }
            }
            if merged.next != NONE {
                if let Some(&(rank, new_id)) =
                    self.merges.get(&(merged.id, symbols[merged.next].id))
                {
                    queue.push(Merge {
                        rank,
                        pos: top.pos,
                        new_id,
                    });
                }
            }
        }
        symbols.iter().filter(|s| s.alive).map(|s| s.id).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Merge {
    rank: u32,
    pos: usize,
    new_id: u32,
}

impl Ord for Merge {
    /// The max-heap pops the lowest rank, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Piece bytes to the token that answers them whole. Pieces of up to 16
/// bytes (nearly all) are keyed inline in open-addressed slots, so a lookup
/// touches one cache line and calls no `memcmp`; those of up to 8 bytes
/// (most) in slots of 16 bytes, so the table stays in the core's L2 cache.
#[derive(Default)]
struct WholeTable {
    short: Slots<u64, u32>,
    medium: Slots<[u64; 2], u32>,
    long: AHashMap<Box<[u8]>, u32>,
    len: usize,
}

/// An open-addressed table of pieces keyed inline: `K` holds a piece's
/// bytes, zero past its end, so the length tells pieces ending in zeros
/// apart. Kept at most half full.
struct Slots<K, V> {
    slots: Vec<Slot<K, V>>,
    len: usize,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Slot<K, V> {
    key: K,
    /// The piece's length; 0 marks an empty slot (pieces are never empty).
    len: u32,
    value: V,
}

/// A key of up to 16 bytes: one word, or two.
trait SlotKey: Copy + Default + PartialEq {
    fn words(self) -> [u64; 2];
}

impl SlotKey for u64 {
    #[inline(always)]
    fn words(self) -> [u64; 2] {
        [self, 0]
    }
}

impl SlotKey for [u64; 2] {
    #[inline(always)]
    fn words(self) -> [u64; 2] {
        self
    }
}

#[inline(always)]
fn slot_hash(key: [u64; 2], len: usize) -> usize {
    let product = ((key[0] ^ 0x9E37_79B9_7F4A_7C15) as u128)
        .wrapping_mul((key[1] ^ len as u64 ^ 0xD6E8_FEB8_6659_FD93) as u128);
    ((product as u64) ^ ((product >> 64) as u64)) as usize
}

impl<K: SlotKey, V: Copy + Default> Slots<K, V> {
    #[inline(always)]
    fn get(&self, key: K, len: usize) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = slot_hash(key.words(), len) & mask;
        loop {
            let slot = &self.slots[at];
            if slot.len as usize == len && slot.key == key {
                return Some(slot.value);
            }
            if slot.len == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds a piece not yet in the table.
    fn insert(&mut self, key: K, len: usize, value: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            let capacity = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, vec![Slot::default(); capacity]);
            for slot in old.into_iter().filter(|s| s.len != 0) {
                self.place(slot);
            }
        }
        self.place(Slot {
            key,
            len: len as u32,
            value,
        });
        self.len += 1;
    }

    fn place(&mut self, slot: Slot<K, V>) {
        let mask = self.slots.len() - 1;
        let mut at = slot_hash(slot.key.words(), slot.len as usize) & mask;
        while self.slots[at].len != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }
}

const INLINE_KEY: usize = 16;
const SHORT_KEY: usize = 8;

/// Up to 16 bytes as two little-endian words, zero past the piece.
#[inline(always)]
fn inline_key(piece: &[u8]) -> [u64; 2] {
    let mut padded = [0u8; INLINE_KEY];
    padded[..piece.len()].copy_from_slice(piece);
    [
        u64::from_le_bytes(padded[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(padded[8..].try_into().expect("8 bytes")),
    ]
}

/// The same key as [`inline_key`] for `text[start..start + len]`, from two
/// plain loads and a mask when 16 bytes of `text` follow `start`: no copy
/// and no branch on the length.
#[inline(always)]
fn inline_key_in(text: &[u8], start: usize, len: usize) -> [u64; 2] {
    match text.get(start..start + INLINE_KEY) {
        Some(bytes) => {
            let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
            let [low, high] = KEY_MASKS[len];
            [word(0) & low, word(8) & high]
        }
        None => inline_key(&text[start..start + len]),
    }
}

/// For each length up to 16, the bits of the two key words it covers.
const KEY_MASKS: [[u64; 2]; INLINE_KEY + 1] = {
    let mut masks = [[0u64; 2]; INLINE_KEY + 1];
    let mut len = 0;
    while len <= INLINE_KEY {
        let low = if len >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * len)) - 1
        };
        let high = if len >= 16 {
            u64::MAX
        } else if len > 8 {
            (1u64 << (8 * (len - 8))) - 1
        } else {
            0
        };
        masks[len] = [low, high];
        len += 1;
    }
    masks
};

impl WholeTable {
    fn new(tokens: &[(Vec<u8>, u32)]) -> Self {
        let mut table = Self {
            len: tokens.len(),
            ..Self::default()
        };
        for (bytes, id) in tokens {
            match bytes.len() {
                0 => {}
                1..=SHORT_KEY => table.short.insert(inline_key(bytes)[0], bytes.len(), *id),
                len if len <= INLINE_KEY => table.medium.insert(inline_key(bytes), len, *id),
                _ => {
                    table.long.insert(bytes.clone().into_boxed_slice(), *id);
                }
            }
        }
        table
    }

    /// The token answering `text[start..start + len]` whole, if any.
    #[inline(always)]
    fn get_in(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        if len > INLINE_KEY {
            return self.long.get(&text[start..start + len]).copied();
        }
        if len == 0 {
            return None;
        }
        let key = inline_key_in(text, start, len);
        if len <= SHORT_KEY {
            self.short.get(key[0], len)
        } else {
            self.medium.get(key, len)
        }
    }
}
