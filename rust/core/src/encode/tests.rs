//! The fast encoder against the `tokenizers` crate it must equal, and its
//! Unicode tables against the regex engine they were read from.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

use crate::tokenize::{EncoderPath, Tokenizer};

#[path = "../../examples/unicode_oracle.rs"]
mod oracle;

#[test]
fn unicode_tables_match_oniguruma() {
    let classes = oracle::classes();
    assert_eq!(
        oracle::ranges(&classes).as_slice(),
        super::unicode_tables::RANGES.as_slice(),
        "regenerate with `cargo run -p tokenmill-core --example unicode_oracle`"
    );
    for (code, &class) in classes.iter().enumerate() {
        assert_eq!(
            super::unicode::class_of(code as u32) as u8,
            class,
            "U+{code:04X}"
        );
    }
    let folds = oracle::contraction_folds();
    for (letter, chars) in &folds {
        for code in 0..=0x10FFFFu32 {
            let expected = char::from_u32(code).is_some_and(|c| chars.contains(&c));
            assert_eq!(
                super::unicode::folds_to(code, *letter as u8),
                expected,
                "U+{code:04X}"
            );
        }
    }
}

fn shared_tokenizers() -> PathBuf {
    std::env::var_os("TOKENMILL_TOKENIZERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tokenizers")
        })
}

/// Every shared tokenizer file, loaded once.
fn tokenizers() -> &'static [(String, Tokenizer)] {
    static ALL: OnceLock<Vec<(String, Tokenizer)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let folder = shared_tokenizers();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap_or_else(|err| {
                panic!(
                    "{}: {err}; the parity tests read the shared tokenizer files \
                     (set TOKENMILL_TOKENIZERS to their folder)",
                    folder.display()
                )
            })
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(files.len() >= 4, "expected the four shared tokenizer files");
        files
            .into_iter()
            .map(|path| {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                (name, Tokenizer::from_file(&path).unwrap())
            })
            .collect()
    })
}

fn assert_same(name: &str, tokenizer: &Tokenizer, text: &str) {
    for add_special_tokens in [false, true] {
        let expected = tokenizer
            .inner()
            .encode_fast(text, add_special_tokens)
            .unwrap();
        // `encode_fast` leaves word ids out; `encode` gives the same ids with them.
        let expected_words: Vec<i32> = tokenizer
            .inner()
            .encode(text, add_special_tokens)
            .unwrap()
            .get_word_ids()
            .iter()
            .map(|w| w.map_or(-1, |w| w as i32))
            .collect();
        let (mut ids, mut words) = (Vec::new(), Vec::new());
        tokenizer
            .encode_into(text, add_special_tokens, &mut ids, Some(&mut words))
            .unwrap();
        assert_eq!(
            ids,
            expected.get_ids(),
            "{name}, add_special_tokens={add_special_tokens}: {text:?}"
        );
        assert_eq!(words, expected_words, "{name}: word ids of {text:?}");
    }
}

#[test]
fn every_shared_tokenizer_takes_the_fast_path() {
    for (name, tokenizer) in tokenizers() {
        assert!(
            matches!(tokenizer.encoder_path(), EncoderPath::Fast(_)),
            "{name}: {:?}",
            tokenizer.encoder_path()
        );
    }
}

const ADVERSARIAL: &[&str] = &[
    "",
    " ",
    "'s at the start",
    "don't\n've\n'LL\n'Re 'ſ 'ſt 'S",
    "line\r\nbreaks\r\n\r\n  \n\t\n",
    "tabs\t\tand\u{3000}ideographic\u{a0}nbsp\u{2009}thin\u{200b}zero-width\u{85}nel",
    "trailing spaces   ",
    "trailing newline spaces \n   ",
    "digits 1 12 123 1234 12345678901234567890 ٣٤٥ ⅷ ²",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 family",
    "combining e\u{301} a\u{308}\u{301} ̀leading mark",
    "mixed Ελληνικά русский 中文字符 日本語のテキスト 한국어 العربية हिन्दी",
    "CamelCase HTTPServer iPhone ǅungla ᾈ titlecase",
    "special<|endoftext|>touching<|endoftext|><|endoftext|>",
    "[CLS] bert [MASK] tokens [SEP][PAD]",
    "code: fn main() { println!(\"{x}\"); } // a/b//c\n\t\treturn x;",
    "path/to//file.txt https://example.com/a?b=c&d=e",
    "\u{1c}\u{1d}\u{1e}\u{1f} control \u{0} nul \u{fffd} replacement \u{7f}",
    "ﬁ ligature Ⅻ ｆｕｌｌｗｉｄｔｈ ㍿ NFKC",
    "Ǆ ǅ ǆ ß ẞ İ ı ﬀ",
    "a\u{300}\u{301}\u{302}b\u{0488}\u{20dd}",
];

#[test]
fn adversarial_cases_match_tokenizers() {
    for (name, tokenizer) in tokenizers() {
        for text in ADVERSARIAL {
            assert_same(name, tokenizer, text);
        }
        let long_run = "a".repeat(1 << 20);
        assert_same(name, tokenizer, &long_run);
        assert_same(name, tokenizer, &" ".repeat(10_000));
        assert_same(name, tokenizer, &"\n".repeat(10_000));
    }
}

#[test]
fn a_long_text_cut_into_parts_matches_tokenizers_whatever_the_threads() {
    // Lines that end in every way a cut must see through: whitespace runs
    // before the newline, CRLF, a letter, a symbol.
    let mut text = String::new();
    let mut line = 0usize;
    while text.len() < super::LONG_TEXT + (1 << 17) {
        let case = ADVERSARIAL[line % ADVERSARIAL.len()];
        let ending = ["\n", "  \n", "\r\n", "x\n", "!\n", "\t\n", " \n\n"][line % 7];
        text.push_str(case);
        text.push_str(ending);
        text.push_str("word's ");
        line += 1;
    }
    for (name, tokenizer) in tokenizers() {
        let crate::tokenize::EncoderPath::Fast(_) = tokenizer.encoder_path() else {
            unreachable!()
        };
        let expected = tokenizer.inner().encode(text.as_str(), true).unwrap();
        let expected_words: Vec<i32> = expected
            .get_word_ids()
            .iter()
            .map(|w| w.map_or(-1, |w| w as i32))
            .collect();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut ids, mut words) = (Vec::new(), Vec::new());
            pool.install(|| {
                tokenizer
                    .encode_into(&text, true, &mut ids, Some(&mut words))
                    .unwrap()
            });
            assert!(
                ids == expected.get_ids(),
                "{name}, {threads} threads: ids differ"
            );
            assert!(
                words == expected_words,
                "{name}, {threads} threads: word ids differ"
            );
        }
    }
}

#[test]
fn long_texts_are_cut_where_no_piece_crosses() {
    let (_, gpt2) = tokenizers()
        .iter()
        .find(|(name, _)| name == "gpt2")
        .unwrap();
    let fast = gpt2.fast_encoder().unwrap();
    let text = "line\n".repeat(super::LONG_TEXT / 4);
    let cuts = fast.cut_points(&text);
    assert!(cuts.len() > 2, "a long text is cut");
    for &cut in &cuts[1..cuts.len() - 1] {
        assert_eq!(&text[cut - 2..cut + 1], "e\nl");
    }
    assert_eq!(fast.cut_points("short\ntext"), [0, 10]);
}

/// Characters the patterns treat differently, often.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            ' ', ' ', '\n', '\r', '\t', '\u{a0}', '\u{3000}', '\u{85}', '\u{b}', '\u{c}',
            '\'', '\'', 's', 'S', 't', 'l', 'L', 'd', 'r', 'e', 'v', 'm', 'ſ',
            '/', '.', ',', '!', '<', '|', '>', '[', ']', '-', '_',
            '0', '7', '٣', '²', 'Ⅻ',
            'a', 'Z', 'é', 'ǅ', 'ʰ', 'ß', '中', 'ア', '한', 'ا',
            '\u{301}', '\u{308}', '\u{94d}', '\u{200d}', '\u{fe0f}', '👍', '🏽',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(tricky_char(), 0..48).prop_map(|c| c.into_iter().collect()),
        1 => prop::collection::vec(
            prop::sample::select(vec![
                "<|endoftext|>", "[MASK]", "[CLS]", "'s", " 's", "\r\n", "  ", "123", "ab", "CD",
            ]),
            0..8,
        ).prop_map(|parts| parts.concat()),
        1 => "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    // The scan over pair ranks merges as `tokenizers`' queue does.
    #[test]
    fn short_merges_equal_the_queue(piece in prop::collection::vec(
        prop_oneof![4 => prop::sample::select(b" etaoinshrdlu\n.,'".to_vec()), 1 => any::<u8>()],
        0..64,
    )) {
        for (name, tokenizer) in tokenizers() {
            if let Some(bpe) = tokenizer.fast_encoder().and_then(|f| f.byte_level_bpe()) {
                prop_assert_eq!(bpe.merge_short(&piece), bpe.merge_queued(&piece), "{}", name);
            }
        }
    }

    // Long enough for the 64-byte ASCII windows, mostly ASCII so they are taken.
    #[test]
    fn random_ascii_runs_match_tokenizers(text in prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(
                b" \n\r\t\x0b\x0c'sStTlLdDrReEvVmMaZ09/.,!<|>-_ ".to_vec()
            ).prop_map(|b| char::from(b).to_string()),
            3 => prop::sample::select(vec![
                "'ll", "'LL", "'re", "'Ve", "'s", "'d", "'m", "'t", " 's", "''s",
                "\r\n", " \n", "  ", "\n\n", "123456", "Ab", "aB", "ABC", "//", "a/b",
            ]).prop_map(str::to_owned),
            1 => tricky_char().prop_map(|c| c.to_string()),
        ],
        40..200,
    ).prop_map(|parts| parts.concat())) {
        for (name, tokenizer) in tokenizers() {
            assert_same(name, tokenizer, &text);
        }
    }

    #[test]
    fn random_text_matches_tokenizers(text in tricky_text()) {
        for (name, tokenizer) in tokenizers() {
            assert_same(name, tokenizer, &text);
        }
    }
}
