//! Kernel throughput: `cargo bench -p tokenmill-core`.

use arrow_array::StringArray;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tokenmill_core::bpe::WordCounts;
use tokenmill_core::columns::TextColumn;
use tokenmill_core::corrupt::{
    self, BartOptions, Corruptor, MlmOptions, Mode, PrefixOptions, SpanLengths, SpanOptions,
    TokenRows, Ul2Options,
};
use tokenmill_core::rng::StreamKey;
use tokenmill_core::sample::keep_mask;
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
        eos_id: Some(2),
        ..TokenizeOptions::default()
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

/// Synthetic token rows for the corruption benches: ids uniform over a
/// 32,000-token vocabulary whose first 109 ids are special (as tokenmill's
/// tokenizers place `<pad>`.. and the 100 sentinels), about one token in
/// three continuing a word, and a sentence end every ~20 tokens.
fn synthetic_rows(rows: usize, width: usize) -> (Vec<u32>, Vec<usize>, Vec<u64>) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let values = (0..rows * width)
        .map(|_| match next() % 20 {
            0 => SENTENCE_END,
            _ => 109 + (next() % (VOCAB as u64 - 109)) as u32,
        })
        .collect();
    let offsets = (0..=rows).map(|r| r * width).collect();
    let keys = (0..rows as u64).collect();
    (values, offsets, keys)
}

const VOCAB: u32 = 32_000;
const SENTENCE_END: u32 = 1_000;

fn corruption(c: &mut Criterion) {
    let special: Vec<u32> = (0..109).collect();
    let starts: Vec<bool> = (0..VOCAB).map(|id| id < 109 || id % 3 != 0).collect();
    let vocab = corrupt::Vocab::new(VOCAB, &special)
        .unwrap()
        .with_word_starts(&starts)
        .unwrap();
    let sentinels: Vec<u32> = (9..109).collect();
    let span = SpanOptions {
        sentinels: sentinels.clone(),
        eos: Some(2),
        ..SpanOptions::default()
    };
    let whole_word = MlmOptions {
        whole_word: true,
        ..MlmOptions::new(3)
    };
    let span_bert = MlmOptions {
        whole_word: true,
        span: Some(SpanLengths::default()),
        ..MlmOptions::new(3)
    };
    let prefix = PrefixOptions::default();
    // (name, mode, row width): T5 rows of 568 span-corrupt into 512 inputs.
    let modes = [
        ("mlm", Mode::Mlm(MlmOptions::new(3)), 512),
        ("mlm whole-word", Mode::Mlm(whole_word), 512),
        ("mlm span (SpanBERT)", Mode::Mlm(span_bert), 512),
        ("span (T5)", Mode::Span(span.clone()), 568),
        (
            "bart",
            Mode::Bart(BartOptions::new(3, vec![SENTENCE_END])),
            512,
        ),
        ("prefix", Mode::Prefix(prefix), 512),
        ("ul2", Mode::Ul2(Ul2Options::paper(span, 6, 8, 7)), 512),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("corrupt");
    group.sample_size(20);
    for (name, mode, width) in modes {
        let rows = (1 << 20) / width;
        let (values, offsets, keys) = synthetic_rows(rows, width);
        let batch = TokenRows {
            values: &values,
            offsets: &offsets,
            segments: None,
            word_ids: None,
        };
        let corruptor = Corruptor::new(mode, vocab.clone()).unwrap();
        group.throughput(Throughput::Elements(values.len() as u64));
        group.bench_function(format!("{name}, one thread"), |b| {
            b.iter(|| pool.install(|| corruptor.corrupt(black_box(&batch), &keys, 0, 0).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, rng, tokenization, corruption);
criterion_main!(benches);
