//! Hand-written scanners for the pre-tokenizer patterns of the byte-level
//! BPE families, each giving exactly the pieces Oniguruma's leftmost-first,
//! backtracking search gives for that pattern, without a regex engine.
//!
//! Every scanner answers one question: where does the piece starting at
//! `at` end? A piece depends only on the text from `at` on (the patterns
//! look ahead, never behind), which is what lets a long document be cut at
//! a piece boundary and scanned in parts.

use super::unicode::{class_at, decode, folds_to, Class};

/// GPT-2's pattern, which `ByteLevel { use_regex: true }` applies.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// cl100k_base's, which Llama 3 also uses.
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: cl100k's with single digits.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// o200k_base's.
pub const O200K_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer pattern the fast path scans by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Gpt2,
    /// cl100k's family; `max_digits` is 3 for cl100k and Llama 3, 1 for Qwen 2.
    Cl100k {
        max_digits: usize,
    },
    O200k,
}

impl Pattern {
    /// The scanner for a pattern string, when one of the known ones.
    pub fn from_regex(regex: &str) -> Option<Self> {
        match regex {
            GPT2_PATTERN => Some(Self::Gpt2),
            CL100K_PATTERN => Some(Self::Cl100k { max_digits: 3 }),
            QWEN2_PATTERN => Some(Self::Cl100k { max_digits: 1 }),
            O200K_PATTERN => Some(Self::O200k),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gpt2 => "gpt2",
            Self::Cl100k { max_digits: 3 } => "cl100k",
            Self::Cl100k { .. } => "qwen2",
            Self::O200k => "o200k",
        }
    }

    /// Where the piece that starts at `at` ends (`at < text.len()`).
    #[inline]
    pub fn piece_end(self, text: &[u8], at: usize) -> usize {
        match self {
            Self::Gpt2 => gpt2(text, at),
            Self::Cl100k { max_digits } => cl100k(text, at, max_digits),
            Self::O200k => o200k(text, at),
        }
    }

    /// Calls `each` with every piece of `text`, in order.
    #[inline]
    pub fn for_each_piece<'t>(self, text: &'t [u8], mut each: impl FnMut(&'t [u8])) {
        let mut at = 0;
        while at < text.len() {
            let window = match self {
                Self::Gpt2 => gpt2_ascii_window(text, at, &mut each),
                _ => walk_ascii_window(self, text, at, &mut each),
            };
            if let Some(next) = window {
                at = next;
                continue;
            }
            let end = self.piece_end(text, at);
            each(&text[at..end]);
            at = end;
        }
    }
}

const WINDOW: usize = 64;
/// Starts at or past this offset may still change with bytes past the
/// window (a contraction or a whitespace run looks up to three ahead).
const SETTLED: u32 = (WINDOW - 4) as u32;

/// GPT-2's pieces over the 64 ASCII bytes from `at` (a piece start), all at
/// once: where pieces start follows from each byte and its neighbours, so
/// bit masks find every start without walking the pieces one by one.
/// Emits the pieces that end by the settled part of the window and
/// returns where the next one starts; `None` when the window is not ASCII
/// or settles no piece (a run longer than the window).
#[inline]
fn gpt2_ascii_window<'t>(
    text: &'t [u8],
    at: usize,
    each: &mut impl FnMut(&'t [u8]),
) -> Option<usize> {
    let window: &'t [u8; WINDOW] = text.get(at..at + WINDOW)?.try_into().ok()?;
    let Masks {
        letter,
        number,
        space,
        blank,
        apostrophe,
        ..
    } = ascii_masks(window)?;
    let symbol = !(letter | number | space);
    let class_change =
        (letter ^ (letter << 1)) | (number ^ (number << 1)) | (symbol ^ (symbol << 1)) | 1;
    // A run after a single space takes the space: it starts one earlier.
    let absorbed = class_change & !space & (blank << 1);
    // The last whitespace before anything else starts a piece of its own
    // (or the run after it, when it is a space).
    let last_space = space & !(space >> 1) & !(1u64 << 63);
    let mut starts = (class_change & !absorbed) | last_space;
    // `'s|'t|'re|'ve|'m|'ll|'d` where a piece starts at an apostrophe.
    let mut candidates = apostrophe & starts & ((1u64 << SETTLED) - 1);
    while candidates != 0 {
        let c = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        let length = match (window[c + 1], window[c + 2]) {
            (b's' | b't' | b'm' | b'd', _) => 2,
            (b'r' | b'v', b'e') | (b'l', b'l') => 3,
            _ => continue,
        };
        let inside = ((1u64 << length) - 2) << c;
        starts = (starts & !inside) | (1u64 << (c + length));
    }
    let settled = starts & ((1u64 << SETTLED) - 1);
    if settled.count_ones() < 2 {
        return None;
    }
    let mut rest = settled & (settled - 1); // the first start is `at` itself
    let mut piece_start = 0usize;
    while rest != 0 {
        let next = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        each(&window[piece_start..next]);
        piece_start = next;
    }
    Some(at + piece_start)
}

/// ASCII bytes by what the patterns ask of them, so runs of ASCII need no
/// class lookup.
const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;
const SYMBOL: u8 = 8;
const ASCII_FLAGS: [u8; 128] = {
    let mut flags = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        flags[i] = if b.is_ascii_alphabetic() {
            LETTER
        } else if b.is_ascii_digit() {
            NUMBER
        } else if (b >= 0x09 && b <= 0x0D) || b == b' ' {
            SPACE
        } else {
            SYMBOL
        };
        i += 1;
    }
    flags
};

/// The end of the run of characters from `at` whose class satisfies `keep`
/// (ASCII bytes: whose flags meet `ascii`, which must agree with `keep`).
#[inline(always)]
fn run_of(text: &[u8], mut at: usize, ascii: u8, keep: impl Fn(Class) -> bool) -> usize {
    while at < text.len() {
        let byte = text[at];
        if byte < 0x80 {
            if ASCII_FLAGS[byte as usize] & ascii == 0 {
                break;
            }
            at += 1;
            continue;
        }
        let (class, len) = class_at(text, at);
        if !keep(class) {
            break;
        }
        at += len;
    }
    at
}

#[inline(always)]
fn letters(text: &[u8], at: usize) -> usize {
    run_of(text, at, LETTER, Class::is_letter)
}

#[inline(always)]
fn numbers(text: &[u8], at: usize) -> usize {
    run_of(text, at, NUMBER, |c| c == Class::Number)
}

#[inline(always)]
fn symbol_run(text: &[u8], at: usize) -> usize {
    run_of(text, at, SYMBOL, Class::is_symbol)
}

/// The end of the run of characters from `at` whose class satisfies `keep`.
#[inline(always)]
fn run(text: &[u8], mut at: usize, keep: impl Fn(Class) -> bool) -> usize {
    while at < text.len() {
        let (class, len) = class_at(text, at);
        if !keep(class) {
            break;
        }
        at += len;
    }
    at
}

#[inline(always)]
fn is_cr_lf(byte: u8) -> bool {
    byte == b'\r' || byte == b'\n'
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at `at` (which holds `'`), case-sensitively or
/// as `(?i:...)` does; the end of the match.
#[inline]
fn contraction(text: &[u8], at: usize, ignore_case: bool) -> Option<usize> {
    let letter_at = |pos: usize, letter: u8| -> Option<usize> {
        if pos >= text.len() {
            return None;
        }
        if !ignore_case {
            return (text[pos] == letter).then_some(pos + 1);
        }
        let (code, len) = decode(text, pos);
        folds_to(code, letter).then_some(pos + len)
    };
    // In the pattern's order; no two share a first letter, so the first to match is the match.
    const CONTRACTIONS: [&[u8]; 7] = [b"s", b"t", b"re", b"ve", b"m", b"ll", b"d"];
    CONTRACTIONS.iter().find_map(|letters| {
        letters
            .iter()
            .try_fold(at + 1, |pos, &letter| letter_at(pos, letter))
    })
}

/// The whitespace run at `at`, in one pass.
struct WhitespaceRun {
    end: usize,
    /// Where its last character starts.
    last_start: usize,
    /// The end of its last `\r` or `\n`, if it holds one.
    newline_end: Option<usize>,
}

#[inline]
fn whitespace_run(text: &[u8], at: usize) -> WhitespaceRun {
    let mut run = WhitespaceRun {
        end: at,
        last_start: at,
        newline_end: None,
    };
    while run.end < text.len() {
        let (class, len) = class_at(text, run.end);
        if class != Class::Space {
            break;
        }
        if is_cr_lf(text[run.end]) {
            run.newline_end = Some(run.end + 1);
        }
        run.last_start = run.end;
        run.end += len;
    }
    run
}

/// `\s+(?!\S)|\s+` at a whitespace character: the whole run at the end of
/// the text, else all of it but its last character (which then starts the
/// next piece), else a single character.
#[inline]
fn whitespace(text: &[u8], at: usize, run: &WhitespaceRun) -> usize {
    if run.end == text.len() || run.last_start == at {
        run.end
    } else {
        run.last_start
    }
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+`: up to the run's last `\r`/`\n`, else as
/// [`whitespace`].
#[inline]
fn whitespace_to_newline(text: &[u8], at: usize) -> usize {
    let run = whitespace_run(text, at);
    run.newline_end
        .unwrap_or_else(|| whitespace(text, at, &run))
}

fn gpt2(text: &[u8], at: usize) -> usize {
    let byte = text[at];
    if byte == b'\'' {
        if let Some(end) = contraction(text, at, false) {
            return end;
        }
    }
    // ` ?X+`: a space joins the run of letters, numbers or symbols after it.
    let start = if byte == b' ' && at + 1 < text.len() {
        at + 1
    } else {
        at
    };
    let (class, _) = class_at(text, start);
    if class.is_letter() {
        letters(text, start)
    } else if class == Class::Number {
        numbers(text, start)
    } else if class.is_symbol() {
        symbol_run(text, start)
    } else {
        whitespace(text, at, &whitespace_run(text, at))
    }
}

fn cl100k(text: &[u8], at: usize, max_digits: usize) -> usize {
    let byte = text[at];
    if byte == b'\'' {
        if let Some(end) = contraction(text, at, true) {
            return end;
        }
    }
    let (class, len) = class_at(text, at);
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if class.is_letter() {
        return letters(text, at + len);
    }
    if class != Class::Number && !is_cr_lf(byte) && at + len < text.len() {
        let (next, next_len) = class_at(text, at + len);
        if next.is_letter() {
            return letters(text, at + len + next_len);
        }
    }
    // `\p{N}{1,3}`
    if class == Class::Number {
        return digits(text, at + len, max_digits - 1);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    if let Some(end) = symbols(text, at, class, is_cr_lf) {
        return end;
    }
    whitespace_to_newline(text, at)
}

/// Up to `more` further numbers from `at`: the rest of `\p{N}{1,n}`.
#[inline]
fn digits(text: &[u8], mut at: usize, more: usize) -> usize {
    for _ in 0..more {
        if at >= text.len() {
            break;
        }
        let (next, next_len) = class_at(text, at);
        if next != Class::Number {
            break;
        }
        at += next_len;
    }
    at
}

/// ` ?[^\s\p{L}\p{N}]+` and then a run of the bytes `tail` accepts.
#[inline]
fn symbols(text: &[u8], at: usize, class: Class, tail: impl Fn(u8) -> bool) -> Option<usize> {
    let start = if class.is_symbol() {
        at
    } else if text[at] == b' ' && at + 1 < text.len() && class_at(text, at + 1).0.is_symbol() {
        at + 1
    } else {
        return None;
    };
    let mut end = symbol_run(text, start);
    while end < text.len() && tail(text[end]) {
        end += 1;
    }
    Some(end)
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+` from `at`.
#[inline]
fn upper_then_lower(text: &[u8], at: usize) -> Option<usize> {
    let mut end = at;
    // Where the greedy upper run could give back characters the lower run takes.
    let mut last_lower_end = None;
    while end < text.len() {
        let (class, len) = class_at(text, end);
        if !class.is_upper_word() {
            if class.is_lower_word() {
                return Some(run(text, end, Class::is_lower_word));
            }
            break;
        }
        end += len;
        if class.is_lower_word() {
            last_lower_end = Some(end);
        }
    }
    last_lower_end
}

/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*` from `at`.
#[inline]
fn upper_run_then_lower(text: &[u8], at: usize) -> Option<usize> {
    if at >= text.len() || !class_at(text, at).0.is_upper_word() {
        return None;
    }
    let end = run(text, at, Class::is_upper_word);
    Some(run(text, end, Class::is_lower_word))
}

fn o200k(text: &[u8], at: usize) -> usize {
    let byte = text[at];
    let (class, len) = class_at(text, at);
    // `[^\r\n\p{L}\p{N}]?` is tried taken first, then left out.
    let optional_first = !class.is_letter() && class != Class::Number && !is_cr_lf(byte);
    let with_contraction = |end: usize| {
        if end < text.len() && text[end] == b'\'' {
            contraction(text, end, true).unwrap_or(end)
        } else {
            end
        }
    };
    for word in [upper_then_lower, upper_run_then_lower] {
        if optional_first {
            if let Some(end) = word(text, at + len) {
                return with_contraction(end);
            }
        }
        if let Some(end) = word(text, at) {
            return with_contraction(end);
        }
    }
    if class == Class::Number {
        return digits(text, at + len, 2);
    }
    if let Some(end) = symbols(text, at, class, |b| is_cr_lf(b) || b == b'/') {
        return end;
    }
    whitespace_to_newline(text, at)
}

/// cl100k's and o200k's pieces over the 64 ASCII bytes from `at` (a piece
/// start), walked piece by piece as the scalar scanners do, but each run
/// found with one bit scan over the window's masks instead of a loop over
/// its bytes. Emits the pieces that end by the settled part of the window
/// and returns where the next starts; `None` when the window is not ASCII
/// or settles no piece.
#[inline]
fn walk_ascii_window<'t>(
    pattern: Pattern,
    text: &'t [u8],
    at: usize,
    each: &mut impl FnMut(&'t [u8]),
) -> Option<usize> {
    let window: &'t [u8; WINDOW] = text.get(at..at + WINDOW)?.try_into().ok()?;
    let m = ascii_masks(window)?;
    let mut pos = 0usize;
    while let Some(end) = match pattern {
        Pattern::Cl100k { max_digits } => cl100k_masked(window, &m, pos, max_digits),
        Pattern::O200k => o200k_masked(window, &m, pos),
        Pattern::Gpt2 => None,
    } {
        if end > SETTLED as usize {
            break;
        }
        each(&window[pos..end]);
        pos = end;
    }
    (pos > 0).then_some(at + pos)
}

/// Whether bit `i` of `mask` is set (false past the window).
#[inline(always)]
fn bit(mask: u64, i: usize) -> bool {
    i < WINDOW && mask >> i & 1 == 1
}

/// The end of the run of set bits of `mask` from `i` (the window's end
/// when it runs off it, which the caller treats as unsettled).
#[inline(always)]
fn run_end(mask: u64, i: usize) -> usize {
    if i >= WINDOW {
        return WINDOW;
    }
    (i + (!mask >> i).trailing_zeros() as usize).min(WINDOW)
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `pos` over ASCII: its end.
#[inline(always)]
fn ascii_contraction(window: &[u8; WINDOW], pos: usize) -> Option<usize> {
    if pos + 3 > WINDOW || window[pos] != b'\'' {
        return None;
    }
    let (a, b) = (window[pos + 1] | 0x20, window[pos + 2] | 0x20);
    match (a, b) {
        (b's' | b't' | b'm' | b'd', _) => Some(pos + 2),
        (b'r' | b'v', b'e') | (b'l', b'l') => Some(pos + 3),
        _ => None,
    }
}

/// The whitespace alternatives `\s*[\r\n]+|\s+(?!\S)|\s+` at `pos`.
#[inline(always)]
fn masked_whitespace(m: &Masks, pos: usize) -> usize {
    let end = run_end(m.space, pos);
    if end >= WINDOW {
        return WINDOW;
    }
    let run = (!0u64 >> (WINDOW - (end - pos))) << pos;
    let newlines = m.newline & run;
    if newlines != 0 {
        return WINDOW - newlines.leading_zeros() as usize;
    }
    if end - pos >= 2 {
        end - 1
    } else {
        end
    }
}

/// ` ?[^\s\p{L}\p{N}]+` at `pos`, then the run of bytes in `tail`: its end.
#[inline(always)]
fn masked_symbols(window: &[u8; WINDOW], m: &Masks, pos: usize, tail: u64) -> Option<usize> {
    let symbol = !(m.letter | m.number | m.space);
    let start = if bit(symbol, pos) {
        pos
    } else if window[pos] == b' ' && bit(symbol, pos + 1) {
        pos + 1
    } else {
        return None;
    };
    Some(run_end(tail, run_end(symbol, start)))
}

fn cl100k_masked(window: &[u8; WINDOW], m: &Masks, pos: usize, max_digits: usize) -> Option<usize> {
    if pos + 3 >= WINDOW {
        return None;
    }
    if let Some(end) = ascii_contraction(window, pos) {
        return Some(end);
    }
    if bit(m.letter, pos) {
        return Some(run_end(m.letter, pos));
    }
    if !bit(m.number, pos) && !bit(m.newline, pos) && bit(m.letter, pos + 1) {
        return Some(run_end(m.letter, pos + 1));
    }
    if bit(m.number, pos) {
        return Some(run_end(m.number, pos).min(pos + max_digits));
    }
    masked_symbols(window, m, pos, m.newline).or_else(|| Some(masked_whitespace(m, pos)))
}

fn o200k_masked(window: &[u8; WINDOW], m: &Masks, pos: usize) -> Option<usize> {
    if pos + 3 >= WINDOW {
        return None;
    }
    let lower = m.letter & !m.upper;
    let with_contraction = |end: usize| ascii_contraction(window, end).unwrap_or(end);
    // `[^\r\n\p{L}\p{N}]?` taken first: in ASCII the only way a word
    // follows it, as no ASCII character is both that and part of a word.
    let optional = !bit(m.letter, pos) && !bit(m.number, pos) && !bit(m.newline, pos);
    let start = if optional { pos + 1 } else { pos };
    // `[\p{Lu}...]*[\p{Ll}...]+`, then `[\p{Lu}...]+[\p{Ll}...]*`.
    let upper_end = run_end(m.upper, start);
    if bit(lower, upper_end) {
        return Some(with_contraction(run_end(lower, upper_end)));
    }
    if upper_end > start {
        return Some(with_contraction(upper_end));
    }
    if bit(m.number, pos) {
        return Some(run_end(m.number, pos).min(pos + 3));
    }
    masked_symbols(window, m, pos, m.newline | m.slash).or_else(|| Some(masked_whitespace(m, pos)))
}

/// One bit per byte of a window: which bytes are ASCII letters, digits,
/// whitespace, spaces and apostrophes.
struct Masks {
    letter: u64,
    number: u64,
    space: u64,
    blank: u64,
    apostrophe: u64,
    upper: u64,
    newline: u64,
    slash: u64,
}

/// The window's masks, or `None` when it holds a byte past ASCII.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ascii_masks(window: &[u8; WINDOW]) -> Option<Masks> {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, and every load reads 16
    // bytes inside `window`.
    unsafe {
        let (mut non_ascii, mut masks) = (0u64, [0u64; 8]);
        for chunk in 0..WINDOW / 16 {
            let v = _mm_loadu_si128(window.as_ptr().add(chunk * 16).cast());
            // `x - lo` below `n` unsigned, as a signed compare after a bias.
            let below = |x: __m128i, lo: u8, n: u8| {
                let biased = _mm_add_epi8(x, _mm_set1_epi8(128u8.wrapping_sub(lo) as i8));
                _mm_cmplt_epi8(biased, _mm_set1_epi8(128u8.wrapping_add(n) as i8))
            };
            let letter = below(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', 26);
            let digit = below(v, b'0', 10);
            let blank = _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8));
            let space = _mm_or_si128(blank, below(v, 0x09, 5));
            let apostrophe = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\'' as i8));
            let upper = below(v, b'A', 26);
            let newline = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\r' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)),
            );
            let slash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'/' as i8));
            let shift = chunk * 16;
            let bits = |m: __m128i| (_mm_movemask_epi8(m) as u32 as u64) << shift;
            non_ascii |= bits(v);
            for (slot, m) in masks.iter_mut().zip([
                letter, digit, space, blank, apostrophe, upper, newline, slash,
            ]) {
                *slot |= bits(m);
            }
        }
        (non_ascii == 0).then_some(Masks {
            letter: masks[0],
            number: masks[1],
            space: masks[2],
            blank: masks[3],
            apostrophe: masks[4],
            upper: masks[5],
            newline: masks[6],
            slash: masks[7],
        })
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn ascii_masks(window: &[u8; WINDOW]) -> Option<Masks> {
    if window.iter().any(|b| !b.is_ascii()) {
        return None;
    }
    let mut m = Masks {
        letter: 0,
        number: 0,
        space: 0,
        blank: 0,
        apostrophe: 0,
        upper: 0,
        newline: 0,
        slash: 0,
    };
    for (i, &byte) in window.iter().enumerate() {
        let flags = ASCII_FLAGS[byte as usize];
        m.letter |= ((flags & LETTER != 0) as u64) << i;
        m.number |= ((flags & NUMBER != 0) as u64) << i;
        m.space |= ((flags & SPACE != 0) as u64) << i;
        m.blank |= ((byte == b' ') as u64) << i;
        m.apostrophe |= ((byte == b'\'') as u64) << i;
        m.upper |= (byte.is_ascii_uppercase() as u64) << i;
        m.newline |= ((byte == b'\r' || byte == b'\n') as u64) << i;
        m.slash |= ((byte == b'/') as u64) << i;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pattern: Pattern, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let end = pattern.piece_end(text.as_bytes(), at);
            out.push(&text[at..end]);
            at = end;
        }
        out
    }

    #[test]
    fn gpt2_small_cases() {
        let p = Pattern::Gpt2;
        assert_eq!(pieces(p, "Hello world"), ["Hello", " world"]);
        assert_eq!(
            pieces(p, "don't  stop\n"),
            ["don", "'t", " ", " stop", "\n"]
        );
        assert_eq!(pieces(p, "a   b"), ["a", "  ", " b"]);
        assert_eq!(pieces(p, "x\n\ny"), ["x", "\n", "\n", "y"]);
        assert_eq!(pieces(p, "123abc!!"), ["123", "abc", "!!"]);
        assert_eq!(pieces(p, "'S"), ["'", "S"]);
        assert_eq!(pieces(p, "end  "), ["end", "  "]);
    }

    #[test]
    fn cl100k_small_cases() {
        let p = Pattern::Cl100k { max_digits: 3 };
        assert_eq!(pieces(p, "I'M 12345"), ["I", "'M", " ", "123", "45"]);
        assert_eq!(pieces(p, ".Net\tx"), [".Net", "\tx"]);
        assert_eq!(pieces(p, "a;\r\n\n  b"), ["a", ";\r\n\n", " ", " b"]);
        assert_eq!(pieces(p, "x \n  y"), ["x", " \n", " ", " y"]);
    }

    #[test]
    fn o200k_small_cases() {
        let p = Pattern::O200k;
        assert_eq!(pieces(p, "HelloWORLD's"), ["Hello", "WORLD's"]);
        assert_eq!(pieces(p, "a/b\n//"), ["a", "/b", "\n", "//"]);
    }
}
