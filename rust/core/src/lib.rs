//! tokenmill's pure-Rust kernels. No Python here: the `tokenmill-py` crate
//! binds these to Python, and any Rust program can call them directly.
//!
//! Kernels take Arrow arrays and options and return a [`Result`]; randomness
//! comes from [`rng`], keyed per row, so the output never depends on how rows
//! are batched or how many threads run.

pub mod bm25;
pub mod bpe;
pub mod checksum;
pub mod cluster;
pub mod columns;
pub mod corrupt;
pub mod dedup;
pub mod encode;
pub mod error;
pub mod minhash;
pub mod negatives;
pub mod normalize;
pub mod pack;
pub mod pairs;
pub mod rng;
pub mod sample;
pub mod tokenize;

pub use error::{Result, TokenmillError};
