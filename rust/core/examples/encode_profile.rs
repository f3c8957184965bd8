//! Times the fast encoder's parts on a JSON list of texts, one thread:
//! `cargo run --release -p tokenmill-core --example encode_profile -- tokenizer.json texts.json`
use std::time::Instant;
use tokenmill_core::encode::Pattern;
use tokenmill_core::tokenize::Tokenizer;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokenizer = Tokenizer::from_file(args[1].as_ref()).unwrap();
    let texts: Vec<String> = serde_json::from_slice(&std::fs::read(&args[2]).unwrap()).unwrap();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mb = bytes as f64 / 1e6;
    let pattern = match args.get(3).map(String::as_str) {
        Some("cl100k") => Pattern::Cl100k { max_digits: 3 },
        Some("o200k") => Pattern::O200k,
        _ => Pattern::Gpt2,
    };
    for _ in 0..3 {
        let start = Instant::now();
        let mut pieces = 0usize;
        for text in &texts {
            pattern.for_each_piece(text.as_bytes(), |_| pieces += 1);
        }
        let scan = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut ids = Vec::new();
        for text in &texts {
            ids.clear();
            tokenizer.encode_into(text, false, &mut ids, None).unwrap();
        }
        let full = start.elapsed().as_secs_f64();
        let mut all: Vec<&[u8]> = Vec::new();
        for text in &texts {
            pattern.for_each_piece(text.as_bytes(), |p| all.push(p));
        }
        let start = Instant::now();
        let mut ids = Vec::new();
        for p in &all {
            tokenizer
                .encode_into(std::str::from_utf8(p).unwrap(), false, &mut ids, None)
                .unwrap();
        }
        let each = start.elapsed().as_secs_f64();
        println!(
            "per-piece encode_into {:.1} ns/piece",
            each * 1e9 / all.len() as f64
        );
        println!(
            "scan {:.0} MB/s ({pieces} pieces), encode {:.0} MB/s",
            mb / scan,
            mb / full
        );
    }
}
