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

/// The raw bytes a byte-level token stands for, or `None` when it holds a
/// character outside the byte alphabet (an added token's text, say).
pub fn token_bytes(token: &str, char_to_byte: &AHashMap<char, u8>) -> Option<Vec<u8>> {
    token
        .chars()
        .map(|c| char_to_byte.get(&c).copied())
        .collect()
}

/// Merges already made, piece bytes to ids; bounded, cleared when full.
#[derive(Default)]
pub struct PieceCache {
    pieces: AHashMap<Box<[u8]>, Box<[u32]>>,
}

/// Pieces longer than this are merged every time: caching them would let
/// one long run of a letter fill the cache.
const MAX_CACHED_PIECE: usize = 256;
const MAX_CACHED_PIECES: usize = 1 << 20;

impl PieceCache {
    pub(crate) fn get(&self, piece: &[u8]) -> Option<&[u32]> {
        self.pieces.get(piece).map(|ids| &ids[..])
    }

    pub(crate) fn insert(&mut self, piece: &[u8], ids: &[u32]) {
        if piece.len() > MAX_CACHED_PIECE {
            return;
        }
        if self.pieces.len() >= MAX_CACHED_PIECES {
            self.pieces.clear();
        }
        self.pieces.insert(piece.into(), ids.into());
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
        vocab: &AHashMap<String, u32>,
        merges: &[(String, String)],
        ignore_merges: bool,
    ) -> Result<Self, String> {
        let byte_chars = byte_to_char();
        let mut byte_ids = [0u32; 256];
        for (byte, c) in byte_chars.iter().enumerate() {
            byte_ids[byte] = *vocab.get(&c.to_string()).ok_or_else(|| {
                format!(
                    "the byte 0x{byte:02X} has no token, so BPE would need its unknown-token rules"
                )
            })?;
        }
        let mut merge_map = AHashMap::with_capacity(merges.len());
        for (rank, (left, right)) in merges.iter().enumerate() {
            let id = |token: &str| {
                vocab.get(token).copied().ok_or_else(|| {
                    format!("the merge {left:?} {right:?} names a token outside the vocabulary")
                })
            };
            let merged = id(&format!("{left}{right}"))?;
            merge_map.insert((id(left)?, id(right)?), (rank as u32, merged));
        }
        let mut model = Self {
            byte_ids,
            merges: merge_map,
            whole: WholeTable::default(),
        };
        let char_to_byte: AHashMap<char, u8> = byte_chars
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let candidates: Vec<(Vec<u8>, u32)> = vocab
            .iter()
            .filter_map(|(token, &id)| Some((token_bytes(token, &char_to_byte)?, id)))
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
        let piece = &text[start..end];
        if let Some(ids) = cache.get(piece) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge(piece);
        cache.insert(piece, &ids);
        out.extend_from_slice(&ids);
    }

    /// The merge loop of `tokenizers`' `Word::merge_all`, over raw bytes.
    pub fn merge(&self, piece: &[u8]) -> Vec<u32> {
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
/// touches one cache line and calls no `memcmp`.
#[derive(Default)]
struct WholeTable {
    slots: Vec<Slot>,
    mask: usize,
    long: AHashMap<Box<[u8]>, u32>,
    len: usize,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: [u64; 2],
    /// The piece's length; 0 marks an empty slot (pieces are never empty).
    len: u32,
    id: u32,
}

const INLINE_KEY: usize = 16;

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

#[inline(always)]
fn slot_hash(key: [u64; 2], len: usize) -> usize {
    let product = ((key[0] ^ 0x9E37_79B9_7F4A_7C15) as u128)
        .wrapping_mul((key[1] ^ len as u64 ^ 0xD6E8_FEB8_6659_FD93) as u128);
    ((product as u64) ^ ((product >> 64) as u64)) as usize
}

impl WholeTable {
    fn new(tokens: &[(Vec<u8>, u32)]) -> Self {
        let capacity = (tokens.len() * 2).next_power_of_two().max(16);
        let mut table = Self {
            slots: vec![Slot::default(); capacity],
            mask: capacity - 1,
            long: AHashMap::new(),
            len: tokens.len(),
        };
        for (bytes, id) in tokens {
            if bytes.len() > INLINE_KEY || bytes.is_empty() {
                table.long.insert(bytes.clone().into_boxed_slice(), *id);
                continue;
            }
            let key = inline_key(bytes);
            let mut at = slot_hash(key, bytes.len()) & table.mask;
            while table.slots[at].len != 0 {
                at = (at + 1) & table.mask;
            }
            table.slots[at] = Slot {
                key,
                len: bytes.len() as u32,
                id: *id,
            };
        }
        table
    }

    /// The token answering `text[start..start + len]` whole, if any.
    #[inline(always)]
    fn get_in(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        if len > INLINE_KEY {
            return self.long.get(&text[start..start + len]).copied();
        }
        if self.slots.is_empty() || len == 0 {
            return None;
        }
        let key = inline_key_in(text, start, len);
        let mut at = slot_hash(key, len) & self.mask;
        loop {
            let slot = &self.slots[at];
            if slot.len as usize == len && slot.key == key {
                return Some(slot.id);
            }
            if slot.len == 0 {
                return None;
            }
            at = (at + 1) & self.mask;
        }
    }
}
