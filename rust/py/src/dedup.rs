//! MinHash, LSH and exact-hash kernels for the dedup stage and the Python API.

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenmill_core::cluster::{ClusterStats, UnionFind};
use tokenmill_core::columns::TextColumn;
use tokenmill_core::dedup::{self, LshOptions, ShardSignatures, Verification};
use tokenmill_core::minhash::{self, MinHasher, Scratch, Shingling};
use tokenmill_core::normalize::Normalization;
use tokenmill_core::TokenmillError;

use crate::conversion::{Named, ShingleKind};
use crate::error::BindingResult;
use crate::utils::{arrow_input, detach};

/// Signatures `[rows, num_perm]` and the too-short flag of each row.
type SignaturesAndShort<'py> = (Bound<'py, PyArray2<u64>>, Bound<'py, PyArray1<bool>>);
/// Flat sorted shingle sets and the `rows + 1` offsets into them.
type ValuesAndOffsets<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u64>>);

fn shingling(kind: ShingleKind, ngram: usize) -> Shingling {
    match kind {
        ShingleKind::Word => Shingling::Words(ngram),
        ShingleKind::Char => Shingling::Chars(ngram),
    }
}

fn normalization(
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
) -> Normalization {
    Normalization {
        lowercase,
        collapse_whitespace,
        strip_punctuation,
    }
}

fn hasher(
    num_perm: usize,
    ngram: usize,
    shingle: &str,
    seed: u64,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
) -> BindingResult<MinHasher> {
    Ok(MinHasher::new(
        num_perm,
        seed,
        shingling(ShingleKind::from_name(shingle)?, ngram),
        normalization(lowercase, collapse_whitespace, strip_punctuation),
    )?)
}

/// MinHash signatures `[rows, num_perm]` of a text array, and which rows were
/// too short for one shingle.
#[pyfunction]
#[pyo3(signature = (texts, *, num_perm = 128, ngram = 5, shingle = "word", seed = 0,
    lowercase = true, collapse_whitespace = true, strip_punctuation = false, column = "text"))]
#[allow(clippy::too_many_arguments)]
fn minhash_signatures<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    num_perm: usize,
    ngram: usize,
    shingle: &str,
    seed: u64,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
    column: &str,
) -> BindingResult<SignaturesAndShort<'py>> {
    let hasher = hasher(
        num_perm,
        ngram,
        shingle,
        seed,
        lowercase,
        collapse_whitespace,
        strip_punctuation,
    )?;
    let array = arrow_input(texts, column)?;
    let (signatures, too_short) = detach(py, || {
        let column = TextColumn::try_new(column, array.as_ref())?;
        Ok(hasher.signatures(&column)?)
    })?;
    let rows = too_short.len();
    let signatures =
        Array2::from_shape_vec((rows, num_perm), signatures).expect("rows * num_perm values");
    Ok((signatures.into_pyarray(py), too_short.into_pyarray(py)))
}

/// The 64-bit shingle hashes of one text, sorted and deduplicated.
#[pyfunction]
#[pyo3(signature = (text, *, ngram = 5, shingle = "word",
    lowercase = true, collapse_whitespace = true, strip_punctuation = false))]
fn shingle_set<'py>(
    py: Python<'py>,
    text: &str,
    ngram: usize,
    shingle: &str,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let hasher = hasher(
        1,
        ngram,
        shingle,
        0,
        lowercase,
        collapse_whitespace,
        strip_punctuation,
    )?;
    let mut scratch = Scratch::default();
    let mut set = hasher.shingle_hashes(text, &mut scratch).to_vec();
    set.sort_unstable();
    set.dedup();
    Ok(set.into_pyarray(py))
}

/// Sorted shingle sets of every row, flat, with `rows + 1` offsets.
#[pyfunction]
#[pyo3(signature = (texts, *, ngram = 5, shingle = "word",
    lowercase = true, collapse_whitespace = true, strip_punctuation = false, column = "text"))]
#[allow(clippy::too_many_arguments)]
fn shingle_sets<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    ngram: usize,
    shingle: &str,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
    column: &str,
) -> BindingResult<ValuesAndOffsets<'py>> {
    let hasher = hasher(
        1,
        ngram,
        shingle,
        0,
        lowercase,
        collapse_whitespace,
        strip_punctuation,
    )?;
    let array = arrow_input(texts, column)?;
    let (values, offsets) = detach(py, || {
        let column = TextColumn::try_new(column, array.as_ref())?;
        let mut scratch = Scratch::default();
        let mut values = Vec::new();
        let mut offsets = vec![0u64];
        for row in 0..column.len() {
            let mut set = hasher
                .shingle_hashes(column.get(row)?, &mut scratch)
                .to_vec();
            set.sort_unstable();
            set.dedup();
            values.extend(set);
            offsets.push(values.len() as u64);
        }
        Ok((values, offsets))
    })?;
    Ok((values.into_pyarray(py), offsets.into_pyarray(py)))
}

/// Band keys `[rows, bands]` of signatures `[rows, bands * rows_per_band...]`.
#[pyfunction]
fn band_keys<'py>(
    py: Python<'py>,
    signatures: PyReadonlyArray2<'py, u64>,
    bands: usize,
    rows: usize,
) -> BindingResult<Bound<'py, PyArray2<u64>>> {
    let view = signatures.as_array();
    let (n, width) = view.dim();
    if bands == 0 || rows == 0 {
        return Err(TokenmillError::config(
            format!("{bands} bands of {rows} rows make no band key"),
            "pass at least one band of at least one row, e.g. from optimal_bands",
        )
        .into());
    }
    if bands.checked_mul(rows).is_none_or(|needed| needed > width) {
        return Err(TokenmillError::config(
            format!(
                "{bands} bands of {rows} rows need more permutations than the {width} the signatures have"
            ),
            "use fewer bands or rows, or more permutations",
        )
        .into());
    }
    let signatures: Vec<u64> = view.iter().copied().collect();
    let keys = detach(py, || {
        use rayon::prelude::*;
        Ok(signatures
            .par_chunks(width.max(1))
            .flat_map_iter(|signature| {
                let mut keys = Vec::with_capacity(bands);
                minhash::band_keys(signature, bands, rows, &mut keys);
                keys
            })
            .collect::<Vec<u64>>())
    })?;
    Ok(Array2::from_shape_vec((n, bands), keys)
        .expect("n * bands keys")
        .into_pyarray(py))
}

/// Every pair `[k, 2]` (smaller index first, sorted) of documents that share
/// a bucket in some band, given band keys `[rows, bands]`.
#[pyfunction]
fn lsh_candidate_pairs<'py>(
    py: Python<'py>,
    band_keys: PyReadonlyArray2<'py, u64>,
) -> BindingResult<Bound<'py, PyArray2<u64>>> {
    let view = band_keys.as_array();
    let mut records: Vec<(u64, u64)> = view
        .rows()
        .into_iter()
        .enumerate()
        .flat_map(|(doc, keys)| {
            keys.iter()
                .map(move |&key| (key, doc as u64))
                .collect::<Vec<_>>()
        })
        .collect();
    let pairs = detach(py, || {
        use rayon::slice::ParallelSliceMut;
        records.par_sort_unstable();
        let mut pairs = Vec::new();
        for bucket in records.chunk_by(|a, b| a.0 == b.0) {
            for (i, &(_, a)) in bucket.iter().enumerate() {
                for &(_, b) in &bucket[i + 1..] {
                    if a != b {
                        pairs.push((a.min(b), a.max(b)));
                    }
                }
            }
        }
        pairs.par_sort_unstable();
        pairs.dedup();
        Ok(pairs)
    })?;
    let flat: Vec<u64> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    Ok(Array2::from_shape_vec((pairs.len(), 2), flat)
        .expect("two per pair")
        .into_pyarray(py))
}

/// `(bands, rows)` minimizing weighted false-positive and false-negative areas.
#[pyfunction]
#[pyo3(signature = (threshold, num_perm = 128, false_positive_weight = 0.5, false_negative_weight = 0.5))]
fn optimal_bands(
    threshold: f64,
    num_perm: usize,
    false_positive_weight: f64,
    false_negative_weight: f64,
) -> BindingResult<(usize, usize)> {
    Ok(minhash::optimal_bands(
        threshold,
        num_perm,
        false_positive_weight,
        false_negative_weight,
    )?)
}

/// Cluster id of each of `n` documents, given similar pairs `[k, 2]`: the
/// smallest document index of its connected component.
#[pyfunction]
fn connected_components<'py>(
    py: Python<'py>,
    n: u64,
    pairs: PyReadonlyArray2<'py, u64>,
) -> BindingResult<Bound<'py, PyArray1<u64>>> {
    let view = pairs.as_array();
    if view.ncols() != 2 && view.nrows() > 0 {
        return Err(TokenmillError::config(
            format!("pairs of shape {:?} are not [k, 2]", view.dim()),
            "pass one (a, b) row per similar pair",
        )
        .into());
    }
    let mut sets = UnionFind::try_new(n)?;
    for pair in view.rows() {
        let (a, b) = (pair[0], pair[1]);
        if a >= n || b >= n {
            return Err(TokenmillError::config(
                format!("pair ({a}, {b}) names a document beyond the {n} there are"),
                "pass pairs of indices below n",
            )
            .into());
        }
        sets.union(a, b);
    }
    Ok(sets.into_roots().into_pyarray(py))
}

fn stats_dict<'py>(py: Python<'py>, stats: &ClusterStats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("shared_buckets", stats.shared_buckets)?;
    dict.set_item("pairs_checked", stats.pairs_checked)?;
    dict.set_item("pairs_joined", stats.pairs_joined)?;
    dict.set_item("spilled_partitions", stats.spilled_partitions)?;
    Ok(dict)
}

/// Clusters the documents of shard work files; see `tokenmill.dedup`.
#[pyfunction]
#[pyo3(signature = (signature_files, band_files, *, num_perm, bands, threshold, scratch_dir,
    memory_budget = 1 << 30, shingle_files = None, offset_files = None))]
#[allow(clippy::too_many_arguments)]
fn cluster_minhash_files<'py>(
    py: Python<'py>,
    signature_files: Vec<PathBuf>,
    band_files: Vec<PathBuf>,
    num_perm: usize,
    bands: usize,
    threshold: f64,
    scratch_dir: PathBuf,
    memory_budget: usize,
    shingle_files: Option<Vec<PathBuf>>,
    offset_files: Option<Vec<PathBuf>>,
) -> BindingResult<(Bound<'py, PyArray1<u64>>, Bound<'py, PyDict>)> {
    if signature_files.len() != band_files.len() {
        return Err(TokenmillError::config(
            format!(
                "{} signature files but {} band files",
                signature_files.len(),
                band_files.len()
            ),
            "pass one of each per shard",
        )
        .into());
    }
    let shards: Vec<ShardSignatures> = signature_files
        .into_iter()
        .zip(band_files)
        .map(|(signatures, band_keys)| ShardSignatures {
            signatures,
            band_keys,
        })
        .collect();
    let verification = match (shingle_files, offset_files) {
        (Some(shingles), Some(offsets))
            if shingles.len() == shards.len() && offsets.len() == shards.len() =>
        {
            Verification::Exact { shingles, offsets }
        }
        (None, None) => Verification::Estimated,
        _ => {
            return Err(TokenmillError::config(
                "exact verification needs one shingle file and one offset file per shard",
                "pass both lists, each as long as the signature files",
            )
            .into())
        }
    };
    let options = LshOptions {
        num_perm,
        bands,
        threshold,
        memory_budget,
    };
    let (clusters, stats) = detach(py, || {
        Ok(dedup::cluster_minhash(
            &shards,
            &options,
            &verification,
            &scratch_dir,
        )?)
    })?;
    Ok((clusters.into_pyarray(py), stats_dict(py, &stats)?))
}

fn split_hashes(hashes: Vec<u128>) -> Array2<u64> {
    let rows = hashes.len();
    let flat: Vec<u64> = hashes
        .into_iter()
        .flat_map(|h| [(h >> 64) as u64, h as u64])
        .collect();
    Array2::from_shape_vec((rows, 2), flat).expect("two halves per hash")
}

/// XXH3-128 of each normalized text, as `[rows, 2]` (high, low) halves.
#[pyfunction]
#[pyo3(signature = (texts, *, lowercase = true, collapse_whitespace = true, strip_punctuation = false, column = "text"))]
fn text_hashes<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    lowercase: bool,
    collapse_whitespace: bool,
    strip_punctuation: bool,
    column: &str,
) -> BindingResult<Bound<'py, PyArray2<u64>>> {
    let array = arrow_input(texts, column)?;
    let normalization = normalization(lowercase, collapse_whitespace, strip_punctuation);
    let hashes = detach(py, || {
        let column = TextColumn::try_new(column, array.as_ref())?;
        Ok(dedup::text_hashes(&column, normalization)?)
    })?;
    Ok(split_hashes(hashes).into_pyarray(py))
}

/// XXH3-128 of each row's token ids, as `[rows, 2]` (high, low) halves.
#[pyfunction]
#[pyo3(signature = (tokens, *, column = "input_ids"))]
fn token_hashes<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    column: &str,
) -> BindingResult<Bound<'py, PyArray2<u64>>> {
    let array = arrow_input(tokens, column)?;
    let hashes = detach(py, || Ok(dedup::token_hashes(column, array.as_ref())?))?;
    Ok(split_hashes(hashes).into_pyarray(py))
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(minhash_signatures, module)?)?;
    module.add_function(wrap_pyfunction!(shingle_set, module)?)?;
    module.add_function(wrap_pyfunction!(shingle_sets, module)?)?;
    module.add_function(wrap_pyfunction!(band_keys, module)?)?;
    module.add_function(wrap_pyfunction!(optimal_bands, module)?)?;
    module.add_function(wrap_pyfunction!(lsh_candidate_pairs, module)?)?;
    module.add_function(wrap_pyfunction!(connected_components, module)?)?;
    module.add_function(wrap_pyfunction!(cluster_minhash_files, module)?)?;
    module.add_function(wrap_pyfunction!(text_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(token_hashes, module)?)?;
    Ok(())
}
