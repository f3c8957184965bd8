//! Document-level deduplication: exact content hashes, and MinHash-LSH
//! clustering over signature files written shard by shard.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::Array;
use memmap2::Mmap;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use crate::cluster::{cluster_buckets, ClusterStats};
use crate::columns::token_lists;
use crate::columns::TextColumn;
use crate::error::{Result, TokenmillError};
use crate::minhash::{estimate_jaccard, exact_jaccard};
use crate::normalize::Normalization;

/// XXH3-128 of each row's normalized text.
///
/// # Errors
///
/// [`TokenmillError::Data`] for the first row that is not valid UTF-8.
pub fn text_hashes(texts: &TextColumn, normalization: Normalization) -> Result<Vec<u128>> {
    let rows: Vec<usize> = (0..texts.len()).collect();
    let chunk = rows.len().div_ceil(rayon::current_num_threads() * 8).max(1);
    let hashes: Vec<Result<u128>> = rows
        .par_chunks(chunk)
        .flat_map_iter(|chunk| {
            let mut buffer = String::new();
            chunk
                .iter()
                .map(|&row| {
                    Ok(xxh3_128(
                        normalization.apply(texts.get(row)?, &mut buffer).as_bytes(),
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    hashes.into_iter().collect()
}

/// XXH3-128 of each row's token ids (as little-endian u32 bytes).
///
/// # Errors
///
/// [`TokenmillError::Schema`] when the column is not a list of uint32.
pub fn token_hashes(column: &str, tokens: &dyn Array) -> Result<Vec<u128>> {
    let (ids, offsets) = token_lists(column, tokens)?;
    Ok((0..offsets.len() - 1)
        .into_par_iter()
        .map(|row| {
            let row_ids = &ids[offsets[row] as usize..offsets[row + 1] as usize];
            let bytes: Vec<u8> = row_ids.iter().flat_map(|id| id.to_le_bytes()).collect();
            xxh3_128(&bytes)
        })
        .collect())
}

// Work files hold little-endian u64 values and are read by reinterpreting
// the mapped bytes, which is only right on a little-endian machine.
#[cfg(target_endian = "big")]
compile_error!("tokenmill's dedup work files assume a little-endian target");

/// A read-only array of little-endian u64 values on disk, memory-mapped so
/// the OS pages it in and out instead of the process holding it all.
pub struct U64File {
    map: Option<Mmap>,
}

impl U64File {
    /// # Errors
    ///
    /// I/O errors, or a file whose size is not a multiple of 8.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len % 8 != 0 {
            return Err(TokenmillError::config(
                format!(
                    "{} is {len} bytes, not a whole number of u64 values",
                    path.display()
                ),
                "delete the dedup work folder (.tokenmill/dedup) and rerun",
            ));
        }
        // SAFETY: the work files are written once, renamed into place and not
        // modified while a run reads them.
        let map = if len == 0 {
            None
        } else {
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(Self { map })
    }

    pub fn values(&self) -> &[u64] {
        match &self.map {
            None => &[],
            Some(map) => {
                // Page-aligned base, and the length was checked to be a multiple of 8.
                let (head, values, tail) = unsafe { map.align_to::<u64>() };
                assert!(head.is_empty() && tail.is_empty());
                values
            }
        }
    }
}

/// How candidate pairs are confirmed.
pub enum Verification {
    /// By the fraction of agreeing signature positions.
    Estimated,
    /// By the exact Jaccard similarity of the shingle sets: per shard, a file
    /// of sorted shingle hashes and a file of `rows + 1` offsets into it.
    Exact {
        shingles: Vec<PathBuf>,
        offsets: Vec<PathBuf>,
    },
}

/// The work files of one shard.
pub struct ShardSignatures {
    /// `rows * num_perm` values; a row of `u64::MAX` marks a document too short to sign.
    pub signatures: PathBuf,
    /// `rows * bands` band keys.
    pub band_keys: PathBuf,
}

/// How [`cluster_minhash`] joins signatures into clusters.
///
/// [`Default`] is 128 permutations at threshold 0.8 in the bands
/// [`minhash::optimal_bands`](crate::minhash::optimal_bands) picks for them
/// (equal false-positive and false-negative weights), with buckets spilled
/// to disk past 1 GiB. `num_perm` must match the signatures' width.
///
/// # Examples
///
/// ```
/// use tokenmill_core::dedup::LshOptions;
/// let options = LshOptions::default();
/// assert_eq!((options.num_perm, options.bands), (128, 9));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LshOptions {
    /// Values per signature.
    pub num_perm: usize,
    /// Bands the signatures are cut into; one shared band key makes a candidate pair.
    pub bands: usize,
    /// Estimated (or, verified, exact) Jaccard similarity from which a candidate pair joins.
    pub threshold: f64,
    /// Bytes of band buckets held in memory before they spill to disk.
    pub memory_budget: usize,
}

impl Default for LshOptions {
    fn default() -> Self {
        let (num_perm, threshold) = (128, 0.8);
        let (bands, _) = crate::minhash::optimal_bands(threshold, num_perm, 0.5, 0.5)
            .expect("the default threshold and num_perm are in range");
        Self {
            num_perm,
            bands,
            threshold,
            memory_budget: 1 << 30,
        }
    }
}

/// Clusters every document of every shard; cluster ids are global document
/// indices (shards in the given order, rows in shard order), each cluster
/// named by its first document.
///
/// # Errors
///
/// I/O errors, work files whose sizes or offsets disagree with the options,
/// or options outside their domain: no permutations, bands outside
/// `[1, num_perm]`, a threshold outside [0, 1].
pub fn cluster_minhash(
    shards: &[ShardSignatures],
    options: &LshOptions,
    verification: &Verification,
    scratch_dir: &Path,
) -> Result<(Vec<u64>, ClusterStats)> {
    if options.num_perm == 0 || options.bands == 0 || options.bands > options.num_perm {
        return Err(TokenmillError::config(
            format!(
                "{} bands over signatures of {} values",
                options.bands, options.num_perm
            ),
            "pass at least one permutation and between 1 and num_perm bands",
        ));
    }
    if !(0.0..=1.0).contains(&options.threshold) {
        return Err(TokenmillError::config(
            format!("threshold {} is outside [0, 1]", options.threshold),
            "pass --threshold between 0 and 1, e.g. 0.8",
        ));
    }
    let signatures: Vec<U64File> = shards
        .iter()
        .map(|s| U64File::open(&s.signatures))
        .collect::<Result<_>>()?;
    let width = options.num_perm;
    let mut starts = vec![0u64];
    for (shard, file) in shards.iter().zip(&signatures) {
        let values = file.values().len();
        if values % width != 0 {
            return Err(TokenmillError::config(
                format!(
                    "{} does not hold {width}-value signatures",
                    shard.signatures.display()
                ),
                "delete the dedup work folder (.tokenmill/dedup) and rerun",
            ));
        }
        starts.push(starts.last().copied().unwrap_or(0) + (values / width) as u64);
    }
    let total = *starts.last().unwrap_or(&0);
    let locate = |doc: u64| -> (usize, usize) {
        let shard = starts.partition_point(|&s| s <= doc) - 1;
        (shard, (doc - starts[shard]) as usize)
    };
    let signature = |doc: u64| -> &[u64] {
        let (shard, row) = locate(doc);
        &signatures[shard].values()[row * width..(row + 1) * width]
    };

    let exact_files = match verification {
        Verification::Estimated => None,
        Verification::Exact { shingles, offsets } => Some((
            shingles
                .iter()
                .map(|p| U64File::open(p))
                .collect::<Result<Vec<_>>>()?,
            offsets
                .iter()
                .map(|p| U64File::open(p))
                .collect::<Result<Vec<_>>>()?,
        )),
    };
    if let (Some((shingles, offsets)), Verification::Exact { offsets: paths, .. }) =
        (&exact_files, verification)
    {
        for (index, (offsets, shingles)) in offsets.iter().zip(shingles).enumerate() {
            let rows = starts[index + 1] - starts[index];
            let o = offsets.values();
            let indexes_its_shingles = o.len() as u64 == rows + 1
                && o.windows(2).all(|w| w[0] <= w[1])
                && o.last()
                    .is_some_and(|&end| end <= shingles.values().len() as u64);
            if !indexes_its_shingles {
                return Err(TokenmillError::config(
                    format!(
                        "{} does not hold {} ascending offsets into its shingles",
                        paths[index].display(),
                        rows + 1
                    ),
                    "delete the dedup work folder (.tokenmill/dedup) and rerun",
                ));
            }
        }
    }
    let verify = |a: u64, b: u64| -> bool {
        match &exact_files {
            None => estimate_jaccard(signature(a), signature(b)) >= options.threshold,
            Some((shingles, offsets)) => {
                let set = |doc: u64| {
                    let (shard, row) = locate(doc);
                    let o = offsets[shard].values();
                    &shingles[shard].values()[o[row] as usize..o[row + 1] as usize]
                };
                exact_jaccard(set(a), set(b)) >= options.threshold
            }
        }
    };

    let bands = options.bands;
    let mut failure = None;
    let iter = shards.iter().enumerate().flat_map(|(index, shard)| {
        let start = starts[index];
        let rows = starts[index + 1] - start;
        match BandReader::open(&shard.band_keys, bands, rows) {
            Ok(reader) => reader.with_docs(start, signatures[index].values(), width),
            Err(err) => {
                failure = Some(err);
                BandIter::empty()
            }
        }
    });
    let expected = total * bands as u64;
    let result = cluster_buckets(
        total,
        iter,
        expected,
        verify,
        options.memory_budget,
        scratch_dir,
    );
    if let Some(err) = failure {
        return Err(err);
    }
    result
}

struct BandReader {
    reader: BufReader<File>,
    bands: usize,
    rows: u64,
}

impl BandReader {
    fn open(path: &Path, bands: usize, rows: u64) -> Result<Self> {
        let file = File::open(path)?;
        let expected = rows * bands as u64 * 8;
        if file.metadata()?.len() != expected {
            return Err(TokenmillError::config(
                format!(
                    "{} does not hold {rows} rows of {bands} band keys",
                    path.display()
                ),
                "delete the dedup work folder (.tokenmill/dedup) and rerun",
            ));
        }
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            bands,
            rows,
        })
    }

    fn with_docs(self, first_doc: u64, signatures: &[u64], width: usize) -> BandIter<'_> {
        BandIter {
            source: Some(self),
            first_doc,
            row: 0,
            keys: Vec::new(),
            next_band: 0,
            signatures,
            width,
        }
    }
}

/// Yields `(band key, document)` for every band of every signed document;
/// documents too short to sign (signature of `u64::MAX`) take part in no bucket.
struct BandIter<'a> {
    source: Option<BandReader>,
    first_doc: u64,
    row: u64,
    keys: Vec<u64>,
    next_band: usize,
    signatures: &'a [u64],
    width: usize,
}

impl BandIter<'_> {
    fn empty() -> Self {
        BandIter {
            source: None,
            first_doc: 0,
            row: 0,
            keys: Vec::new(),
            next_band: 0,
            signatures: &[],
            width: 1,
        }
    }
}

impl Iterator for BandIter<'_> {
    type Item = Result<(u64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let source = self.source.as_mut()?;
            if self.next_band < self.keys.len() {
                let key = self.keys[self.next_band];
                self.next_band += 1;
                return Some(Ok((key, self.first_doc + self.row - 1)));
            }
            if self.row == source.rows {
                return None;
            }
            let mut bytes = vec![0u8; source.bands * 8];
            if let Err(err) = source.reader.read_exact(&mut bytes) {
                return Some(Err(err.into()));
            }
            let row = self.row as usize;
            self.row += 1;
            self.next_band = 0;
            self.keys.clear();
            if self.signatures[row * self.width] == u64::MAX {
                continue;
            }
            self.keys.extend(
                bytes
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, values: &[u64]) -> PathBuf {
        let path = dir.join(name);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn options_and_offsets_that_would_panic_are_refused() {
        let dir = std::env::temp_dir().join(format!("tm-dedup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two documents of two-value signatures sharing one band key.
        let shards = [ShardSignatures {
            signatures: write(&dir, "sig", &[1, 2, 1, 2]),
            band_keys: write(&dir, "bands", &[7, 7]),
        }];
        let options = |num_perm, bands, threshold| LshOptions {
            num_perm,
            bands,
            threshold,
            memory_budget: 1 << 20,
        };
        let cluster = |options: &LshOptions, verification: &Verification| {
            cluster_minhash(&shards, options, verification, &dir)
        };
        let (clusters, _) = cluster(&options(2, 1, 0.5), &Verification::Estimated).unwrap();
        assert_eq!(clusters, vec![0, 0]);
        // 0 permutations divided by zero; NaN joined nothing silently.
        for bad in [options(0, 1, 0.5), options(2, 0, 0.5), options(2, 3, 0.5)] {
            let err = cluster(&bad, &Verification::Estimated).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
        let err = cluster(&options(2, 1, f64::NAN), &Verification::Estimated).unwrap_err();
        assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        // Offsets past the shingles, descending or too few indexed out of bounds.
        let shingles = write(&dir, "shingles", &[5, 6]);
        for (name, offsets) in [
            ("past", &[0, 1, 9][..]),
            ("down", &[0, 2, 1]),
            ("few", &[0]),
        ] {
            let exact = Verification::Exact {
                shingles: vec![shingles.clone()],
                offsets: vec![write(&dir, name, offsets)],
            };
            let err = cluster(&options(2, 1, 0.5), &exact).unwrap_err();
            assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
