//! Code point classes for the pre-tokenizer scanners, from the table
//! Oniguruma itself produced (`unicode_tables.rs`), so `\p{L}`, `\p{N}` and
//! `\s` mean here exactly what they mean in `tokenizers`' patterns.

use std::sync::OnceLock;

use super::unicode_tables::{CONTRACTION_FOLDS, RANGES};

/// A code point's class; the discriminants are the generated table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    Lu = 0,
    Ll = 1,
    Lt = 2,
    Lm = 3,
    Lo = 4,
    Mark = 5,
    Number = 6,
    Space = 7,
    Other = 8,
}

impl Class {
    const ALL: [Class; 9] = [
        Class::Lu,
        Class::Ll,
        Class::Lt,
        Class::Lm,
        Class::Lo,
        Class::Mark,
        Class::Number,
        Class::Space,
        Class::Other,
    ];

    /// `\p{L}`.
    #[inline]
    pub fn is_letter(self) -> bool {
        (self as u8) <= Class::Lo as u8
    }

    /// `[^\s\p{L}\p{N}]`: marks belong here too, being neither letters nor numbers.
    #[inline]
    pub fn is_symbol(self) -> bool {
        matches!(self, Class::Mark | Class::Other)
    }

    /// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` (o200k's upper half of a word).
    #[inline]
    pub fn is_upper_word(self) -> bool {
        matches!(
            self,
            Class::Lu | Class::Lt | Class::Lm | Class::Lo | Class::Mark
        )
    }

    /// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` (o200k's lower half of a word).
    #[inline]
    pub fn is_lower_word(self) -> bool {
        matches!(self, Class::Ll | Class::Lm | Class::Lo | Class::Mark)
    }
}

const BLOCK_BITS: u32 = 8;
const BLOCKS: usize = (0x110000 >> BLOCK_BITS) as usize;

/// Two-level lookup: a block index per 256 code points, then the block.
struct Table {
    index: Vec<u16>,
    blocks: Vec<[Class; 1 << BLOCK_BITS]>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut flat = vec![Class::Other; 0x110000];
        for &(first, last, class) in RANGES.iter() {
            for slot in &mut flat[first as usize..=last as usize] {
                *slot = Class::ALL[class as usize];
            }
        }
        let mut index = Vec::with_capacity(BLOCKS);
        let mut blocks: Vec<[Class; 1 << BLOCK_BITS]> = Vec::new();
        let mut seen = ahash::AHashMap::new();
        for chunk in flat.chunks_exact(1 << BLOCK_BITS) {
            let block: [Class; 1 << BLOCK_BITS] = chunk.try_into().expect("exact chunks");
            let key: Vec<u8> = block.iter().map(|c| *c as u8).collect();
            let next = blocks.len() as u16;
            let id = *seen.entry(key).or_insert_with(|| {
                blocks.push(block);
                next
            });
            index.push(id);
        }
        Table { index, blocks }
    })
}

const ASCII: [Class; 128] = {
    let mut classes = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        classes[i] = if b.is_ascii_uppercase() {
            Class::Lu
        } else if b.is_ascii_lowercase() {
            Class::Ll
        } else if b.is_ascii_digit() {
            Class::Number
        } else if (b >= 0x09 && b <= 0x0D) || b == b' ' {
            Class::Space
        } else {
            Class::Other
        };
        i += 1;
    }
    classes
};

/// The class of a code point.
#[inline]
pub fn class_of(code: u32) -> Class {
    if code < 128 {
        return ASCII[code as usize];
    }
    let table = table();
    table.blocks[table.index[(code >> BLOCK_BITS) as usize] as usize]
        [(code & ((1 << BLOCK_BITS) - 1)) as usize]
}

/// The code point starting at `at` and its length in bytes.
///
/// `text` must be valid UTF-8 and `at` a character boundary.
#[inline]
pub fn decode(text: &[u8], at: usize) -> (u32, usize) {
    let b0 = text[at] as u32;
    if b0 < 0x80 {
        return (b0, 1);
    }
    let cont = |k: usize| (text[at + k] & 0x3F) as u32;
    if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | cont(1), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2), 3)
    } else {
        (
            ((b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
            4,
        )
    }
}

/// The class and byte length of the character at `at`.
#[inline]
pub fn class_at(text: &[u8], at: usize) -> (Class, usize) {
    let b0 = text[at];
    if b0 < 0x80 {
        return (ASCII[b0 as usize], 1);
    }
    let (code, len) = decode(text, at);
    (class_of(code), len)
}

/// Whether `code` matches `letter` under `(?i:...)` (an ASCII lowercase letter of the contractions).
#[inline]
pub fn folds_to(code: u32, letter: u8) -> bool {
    if code < 128 {
        return (code as u8).to_ascii_lowercase() == letter;
    }
    CONTRACTION_FOLDS
        .iter()
        .find(|(l, _)| *l as u32 == letter as u32)
        .is_some_and(|(_, chars)| chars.iter().any(|&c| c as u32 == code))
}
