//! Text normalization before hashing: what "the same document" means.

/// Which differences between two texts dedup ignores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normalization {
    /// Case-fold (Unicode lowercase).
    pub lowercase: bool,
    /// Turn every run of whitespace into one space and trim both ends.
    pub collapse_whitespace: bool,
    /// Drop every character that is neither alphanumeric nor whitespace.
    pub strip_punctuation: bool,
}

/// For each combination of options (bit 0 lowercase, 1 collapse, 2 strip),
/// which bytes pass through unchanged: ASCII that no option touches.
static PLAIN: [[bool; 256]; 8] = plain_tables();

const fn plain_tables() -> [[bool; 256]; 8] {
    let mut tables = [[false; 256]; 8];
    let mut options = 0;
    while options < 8 {
        let mut byte = 0;
        while byte < 0x80 {
            let b = byte as u8;
            let whitespace = matches!(b, b' ' | b'\t'..=b'\r');
            let changed = (options & 1 != 0 && b.is_ascii_uppercase())
                || (options & 4 != 0 && !b.is_ascii_alphanumeric());
            // Whitespace is kept as is unless collapsed (stripping treats it as changed).
            tables[options][byte] = !(changed || (whitespace && options & 2 != 0));
            byte += 1;
        }
        options += 1;
    }
    tables
}

impl Normalization {
    fn table_index(&self) -> usize {
        usize::from(self.lowercase)
            | usize::from(self.collapse_whitespace) << 1
            | usize::from(self.strip_punctuation) << 2
    }

    pub fn is_identity(&self) -> bool {
        !(self.lowercase || self.collapse_whitespace || self.strip_punctuation)
    }

    /// The normalized text: `text` itself when nothing changes it, else
    /// written into `buffer` (reused across calls to spare allocations).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokenmill_core::normalize::Normalization;
    /// let all = Normalization { lowercase: true, collapse_whitespace: true, strip_punctuation: true };
    /// let mut buffer = String::new();
    /// assert_eq!(all.apply("  Hello,\n\tWORLD!  ", &mut buffer), "hello world");
    /// ```
    pub fn apply<'a>(&self, text: &'a str, buffer: &'a mut String) -> &'a str {
        if self.is_identity() {
            return text;
        }
        let mut out = std::mem::take(buffer).into_bytes();
        out.clear();
        out.reserve(text.len());
        let bytes = text.as_bytes();
        let copies_as_is = &PLAIN[self.table_index()];
        let mut pending_space = false;
        let mut at = 0;
        while at < bytes.len() {
            // Most text is runs of bytes that stay as they are: copy each run whole.
            let run = at;
            while at < bytes.len() && copies_as_is[bytes[at] as usize] {
                at += 1;
            }
            if at > run {
                if pending_space {
                    out.push(b' ');
                    pending_space = false;
                }
                out.extend_from_slice(&bytes[run..at]);
                if at == bytes.len() {
                    break;
                }
            }
            let byte = bytes[at];
            if byte < 0x80 {
                at += 1;
                if matches!(byte, b' ' | b'\t'..=b'\r') {
                    if self.collapse_whitespace {
                        pending_space = !out.is_empty();
                    } else {
                        out.push(byte);
                    }
                    continue;
                }
                let folded = if self.lowercase {
                    byte.to_ascii_lowercase()
                } else {
                    byte
                };
                if self.strip_punctuation && !folded.is_ascii_alphanumeric() {
                    continue;
                }
                if pending_space {
                    out.push(b' ');
                    pending_space = false;
                }
                out.push(folded);
                continue;
            }
            let c = text[at..].chars().next().expect("a char starts here");
            at += c.len_utf8();
            if c.is_whitespace() {
                if self.collapse_whitespace {
                    pending_space = !out.is_empty();
                } else {
                    push_char(&mut out, c);
                }
                continue;
            }
            // Strip after case-folding: a lowercase form can hold marks
            // ('İ' folds to 'i' and a combining dot), and normalizing twice
            // must change nothing.
            let mut push = |folded: char| {
                if self.strip_punctuation && !folded.is_alphanumeric() {
                    return;
                }
                if pending_space {
                    out.push(b' ');
                    pending_space = false;
                }
                push_char(&mut out, folded);
            };
            if self.lowercase {
                c.to_lowercase().for_each(&mut push);
            } else {
                push(c);
            }
        }
        // SAFETY: `out` holds whole ASCII bytes and whole encoded chars only.
        *buffer = unsafe { String::from_utf8_unchecked(out) };
        buffer.as_str()
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut encoded = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut encoded).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_option_alone() {
        let mut buffer = String::new();
        let lower = Normalization {
            lowercase: true,
            ..Default::default()
        };
        assert_eq!(lower.apply("ÄB c", &mut buffer), "äb c");
        let spaces = Normalization {
            collapse_whitespace: true,
            ..Default::default()
        };
        assert_eq!(spaces.apply(" a \n\n b ", &mut buffer), "a b");
        let punct = Normalization {
            strip_punctuation: true,
            ..Default::default()
        };
        assert_eq!(punct.apply("a-b, c! ©", &mut buffer), "ab c ");
        assert_eq!(
            Normalization::default().apply("As Is.", &mut buffer),
            "As Is."
        );
    }

    /// The definition, one `char` at a time, that the fast path must equal.
    fn reference(n: &Normalization, text: &str) -> String {
        let mut out = String::new();
        let mut pending_space = false;
        for c in text.chars() {
            if c.is_whitespace() {
                if n.collapse_whitespace {
                    pending_space = !out.is_empty();
                } else {
                    out.push(c);
                }
                continue;
            }
            let folded: Vec<char> = if n.lowercase {
                c.to_lowercase().collect()
            } else {
                vec![c]
            };
            for f in folded {
                if n.strip_punctuation && !f.is_alphanumeric() {
                    continue;
                }
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(f);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn fast_path_equals_the_definition(
            text in "[ -~\t\n\r\x0bÀ-ɏİ\u{a0}\u{2028}]{0,60}",
            lowercase: bool, collapse_whitespace: bool, strip_punctuation: bool,
        ) {
            let n = Normalization { lowercase, collapse_whitespace, strip_punctuation };
            let mut buffer = String::new();
            prop_assert_eq!(n.apply(&text, &mut buffer), reference(&n, &text));
        }

        #[test]
        fn normalizing_twice_changes_nothing(text in ".{0,60}") {
            let all = Normalization { lowercase: true, collapse_whitespace: true, strip_punctuation: true };
            let mut first = String::new();
            let once = all.apply(&text, &mut first).to_owned();
            let mut second = String::new();
            prop_assert_eq!(all.apply(&once, &mut second), once.as_str());
        }
    }
}
