//! Kernel throughput: `cargo bench -p tokenmill-core`.

use arrow_array::StringArray;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tokenmill_core::bpe::WordCounts;
use tokenmill_core::rng::StreamKey;
use tokenmill_core::sample::keep_mask;
use tokenmill_core::text::TextColumn;
use tokenmill_core::tokenize::{tokenize, TokenizeOptions};

fn rng(c: &mut Criterion) {
    let stream = StreamKey::new(0, "bench", 0);
    let mut group = c.benchmark_group("rng");
    group.throughput(Throughput::Elements(1 << 16));
    group.bench_function("philox u32 draws", |b| {
        b.iter(|| {
            let mut rng = stream.row(black_box(7));
            (0..1 << 16).fold(0u32, |acc, _| acc ^ rng.next_u32())
        })
    });
    let keys: Vec<u64> = (0..1 << 16).collect();
    group.bench_function("keep_mask per row", |b| {
        b.iter(|| keep_mask(&stream, black_box(&keys), 0.5, false).unwrap())
    });
    group.finish();
}

fn tokenization(c: &mut Criterion) {
    let sentences = [
        "The runner writes each output shard under a temporary name and renames it into place.",
        "def process(self, batch, ctx):\n    return batch.filter(mask)\n",
        "Deterministic, stateless randomness: every choice is a function of the row key.",
    ];
    let documents: Vec<String> = (0..2_000)
        .map(|i| sentences[i % 3].repeat(1 + i % 7))
        .collect();
    let texts = StringArray::from(documents);
    let column = TextColumn::try_new("text", &texts).unwrap();
    let mut counts = WordCounts::default();
    counts.add(&column).unwrap();
    let tokenizer = counts.train(2_000, 1).unwrap();
    let bytes: usize = (0..column.len()).map(|i| column.bytes(i).len()).sum();
    let options = TokenizeOptions {
        add_special_tokens: false,
        eos_id: Some(2),
    };
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("byte-level BPE, one thread", |b| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        b.iter(|| pool.install(|| tokenize(&tokenizer, &column, &options).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, rng, tokenization);
criterion_main!(benches);
