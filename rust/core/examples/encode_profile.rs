//! Times the fast encoder on a JSON list of texts, one thread: the
//! pre-tokenizer alone, then whole encoding on documents it has not seen
//! (after warming on the other half) and on ones it has.
//!
//! `cargo run --release -p tokenmill-core --example encode_profile -- tokenizer.json texts.json`
use std::time::Instant;
use tokenmill_core::encode::Pattern;
use tokenmill_core::tokenize::Tokenizer;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokenizer = Tokenizer::from_file(args[1].as_ref()).unwrap();
    let texts: Vec<String> = serde_json::from_slice(&std::fs::read(&args[2]).unwrap()).unwrap();
    let pattern = match args.get(3).map(String::as_str) {
        Some("cl100k") => Pattern::Cl100k { max_digits: 3 },
        Some("o200k") => Pattern::O200k,
        _ => Pattern::Gpt2,
    };
    let half = |parity: usize| -> Vec<&String> {
        texts
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, t)| t)
            .collect()
    };
    let (warm_on, fresh) = (half(0), half(1));
    let megabytes = |part: &[&String]| part.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let encode_all = |part: &[&String]| {
        let start = Instant::now();
        let mut ids = Vec::new();
        for text in part {
            ids.clear();
            tokenizer.encode_into(text, false, &mut ids, None).unwrap();
        }
        megabytes(part) / start.elapsed().as_secs_f64()
    };
    let start = Instant::now();
    let mut pieces = 0usize;
    for text in &texts {
        pattern.for_each_piece(text.as_bytes(), |_| pieces += 1);
    }
    let all: Vec<&String> = texts.iter().collect();
    let scan = megabytes(&all) / start.elapsed().as_secs_f64();
    println!("pre-tokenizer alone: {scan:.0} MB/s ({pieces} pieces)");
    encode_all(&warm_on);
    println!("unseen documents: {:.0} MB/s", encode_all(&fresh));
    println!("seen documents: {:.0} MB/s", encode_all(&fresh));
}
