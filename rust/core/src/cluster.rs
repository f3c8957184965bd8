//! From LSH buckets to clusters: candidate pairs, verification, union-find.
//!
//! Bucket records `(key, doc)` are grouped by key in memory when they fit the
//! budget, else hash-partitioned into files on disk and grouped one partition
//! at a time. Within a bucket every similar pair ends up connected, whatever
//! order buckets come in, so clusters never depend on the thread count.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rayon::slice::ParallelSliceMut;

use crate::error::{reserve, Result, TokenmillError};

/// Disjoint sets over document indices; a set's root is its smallest member.
pub struct UnionFind {
    parent: Vec<u64>,
}

impl UnionFind {
    pub fn new(n: u64) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    /// As [`UnionFind::new`], for a count that comes from a caller rather
    /// than from data already in memory.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Config`] when `n` sets do not fit in memory.
    pub fn try_new(n: u64) -> Result<Self> {
        let mut parent = reserve(usize::try_from(n).unwrap_or(usize::MAX), "documents")?;
        parent.extend(0..n);
        Ok(Self { parent })
    }

    pub fn find(&mut self, mut x: u64) -> u64 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns whether they were apart.
    pub fn union(&mut self, a: u64, b: u64) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[high as usize] = low;
        true
    }

    /// Each document's cluster id: the smallest document index in its set.
    pub fn into_roots(mut self) -> Vec<u64> {
        for x in 0..self.parent.len() as u64 {
            let root = self.find(x);
            self.parent[x as usize] = root;
        }
        self.parent
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Buckets holding two or more documents.
    pub shared_buckets: u64,
    /// Pairs compared by the verifier.
    pub pairs_checked: u64,
    /// Pairs that passed and joined two clusters.
    pub pairs_joined: u64,
    /// Partitions spilled to disk (0 when everything fit in memory).
    pub spilled_partitions: u64,
}

/// More partition files than this would exhaust file handles; the budget
/// must grow instead.
const MAX_PARTITIONS: u64 = 4096;

/// Clusters `n_docs` documents from bucket records.
///
/// `verify(a, b)` says whether two documents that share a bucket are similar
/// enough to join. `expected_records` sizes the partitions: when
/// `expected_records * 16` exceeds `memory_budget`, records go to
/// `scratch_dir` in as many partition files as it takes.
///
/// # Errors
///
/// I/O errors from the record source or the scratch files.
pub fn cluster_buckets<I, V>(
    n_docs: u64,
    records: I,
    expected_records: u64,
    verify: V,
    memory_budget: usize,
    scratch_dir: &Path,
) -> Result<(Vec<u64>, ClusterStats)>
where
    I: Iterator<Item = Result<(u64, u64)>>,
    V: Fn(u64, u64) -> bool,
{
    let mut sets = UnionFind::new(n_docs);
    let mut stats = ClusterStats::default();
    let partitions = (expected_records.saturating_mul(16))
        .div_ceil(memory_budget.max(16) as u64)
        .max(1);
    if partitions > MAX_PARTITIONS {
        let needed = expected_records.saturating_mul(16).div_ceil(MAX_PARTITIONS) >> 20;
        return Err(TokenmillError::config(
            format!("{expected_records} bucket records would need {partitions} spill files"),
            format!("raise --memory-budget to at least {} MiB", needed + 1),
        ));
    }
    if partitions == 1 {
        let mut all: Vec<(u64, u64)> = records.collect::<Result<_>>()?;
        group_partition(&mut all, &mut sets, &verify, &mut stats);
    } else {
        std::fs::create_dir_all(scratch_dir)?;
        let paths: Vec<_> = (0..partitions)
            .map(|p| scratch_dir.join(format!("buckets-{p:05}.bin")))
            .collect();
        {
            let mut writers = paths
                .iter()
                .map(|p| File::create(p).map(|f| BufWriter::with_capacity(1 << 16, f)))
                .collect::<std::io::Result<Vec<_>>>()?;
            for record in records {
                let (key, doc) = record?;
                let writer = &mut writers[(key % partitions) as usize];
                writer.write_all(&key.to_le_bytes())?;
                writer.write_all(&doc.to_le_bytes())?;
            }
            for writer in &mut writers {
                writer.flush()?;
            }
        }
        stats.spilled_partitions = partitions;
        for path in &paths {
            let mut bytes = Vec::new();
            BufReader::new(File::open(path)?).read_to_end(&mut bytes)?;
            std::fs::remove_file(path)?;
            let mut part: Vec<(u64, u64)> = bytes
                .chunks_exact(16)
                .map(|r| {
                    let (key, doc) = r.split_at(8);
                    (
                        u64::from_le_bytes(key.try_into().expect("8 bytes")),
                        u64::from_le_bytes(doc.try_into().expect("8 bytes")),
                    )
                })
                .collect();
            drop(bytes);
            group_partition(&mut part, &mut sets, &verify, &mut stats);
        }
    }
    Ok((sets.into_roots(), stats))
}

fn group_partition<V: Fn(u64, u64) -> bool>(
    records: &mut [(u64, u64)],
    sets: &mut UnionFind,
    verify: &V,
    stats: &mut ClusterStats,
) {
    records.par_sort_unstable();
    let mut members = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let key = records[start].0;
        let end = start + records[start..].partition_point(|r| r.0 == key);
        if end - start > 1 {
            stats.shared_buckets += 1;
            members.clear();
            members.extend(records[start..end].iter().map(|r| r.1));
            members.dedup();
            join_bucket(&members, sets, verify, stats);
        }
        start = end;
    }
}

/// Connects every similar pair of one bucket's members (sorted by index).
fn join_bucket<V: Fn(u64, u64) -> bool>(
    members: &[u64],
    sets: &mut UnionFind,
    verify: &V,
    stats: &mut ClusterStats,
) {
    let mut groups: Vec<Vec<u64>> = Vec::new();
    for &doc in members {
        let mut linked = Vec::new();
        for (index, group) in groups.iter().enumerate() {
            if sets.find(group[0]) == sets.find(doc) {
                linked.push(index);
                continue;
            }
            // Every member is probed until one matches: a cap would make the
            // pairs that get checked, and so the clusters, depend on the order
            // buckets arrive in. A bucket of m mutually dissimilar documents
            // costs m^2/2 checks; LSH keeps such buckets rare.
            for &other in group {
                stats.pairs_checked += 1;
                if verify(doc, other) {
                    if sets.union(doc, other) {
                        stats.pairs_joined += 1;
                    }
                    linked.push(index);
                    break;
                }
            }
        }
        match linked.split_first() {
            None => groups.push(vec![doc]),
            Some((&keep, rest)) => {
                for &index in rest.iter().rev() {
                    let absorbed = groups.remove(index);
                    groups[keep].extend(absorbed);
                }
                groups[keep].push(doc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cluster(
        n: u64,
        records: &[(u64, u64)],
        similar: &[(u64, u64)],
        budget: usize,
    ) -> (Vec<u64>, ClusterStats) {
        let dir = std::env::temp_dir().join(format!("tm-cluster-{}-{budget}", std::process::id()));
        let verify = |a: u64, b: u64| similar.contains(&(a.min(b), a.max(b)));
        let result = cluster_buckets(
            n,
            records.iter().map(|&r| Ok(r)),
            records.len() as u64,
            verify,
            budget,
            &dir,
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[test]
    fn only_verified_pairs_in_shared_buckets_join() {
        // Bucket 7 holds 0, 1, 2; bucket 9 holds 2, 3. 0~1 and 2~3 are similar,
        // 0~2 is not; 4 is alone.
        let records = [(7, 0), (7, 1), (7, 2), (9, 2), (9, 3), (11, 4)];
        let (roots, stats) = cluster(5, &records, &[(0, 1), (2, 3)], 1 << 20);
        assert_eq!(roots, vec![0, 0, 2, 2, 4]);
        assert_eq!(stats.pairs_joined, 2);
        assert_eq!(stats.shared_buckets, 2);
    }

    #[test]
    fn a_union_find_beyond_memory_is_refused() {
        assert_eq!(UnionFind::try_new(3).unwrap().into_roots(), vec![0, 1, 2]);
        for n in [1 << 60, u64::MAX] {
            assert!(matches!(
                UnionFind::try_new(n),
                Err(TokenmillError::Config { .. })
            ));
        }
    }

    #[test]
    fn transitive_links_form_one_cluster() {
        let records = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)];
        let (roots, _) = cluster(4, &records, &[(0, 1), (1, 2), (2, 3)], 1 << 20);
        assert_eq!(roots, vec![0, 0, 0, 0]);
    }

    #[test]
    fn large_buckets_cluster_the_same_in_any_order() {
        // One bucket of 300 documents where only documents 150 apart are similar:
        // every member must be probed, however groups formed before.
        let records: Vec<(u64, u64)> = (0..300)
            .map(|d| (5, d))
            .chain((0..300).map(|d| (6, 299 - d)))
            .collect();
        let similar: Vec<(u64, u64)> = (0..150).map(|d| (d, d + 150)).collect();
        let (in_memory, _) = cluster(300, &records, &similar, 1 << 20);
        let (spilled, stats) = cluster(300, &records, &similar, 256);
        assert!(stats.spilled_partitions > 1);
        assert_eq!(in_memory, spilled);
        for d in 0..150 {
            assert_eq!(in_memory[d as usize + 150], d);
        }
    }

    proptest! {
        // Spilling to disk, and the order records arrive in, change nothing.
        #[test]
        fn clusters_do_not_depend_on_order_or_spilling(
            records in proptest::collection::vec((0u64..12, 0u64..40), 0..120),
            similar in proptest::collection::vec((0u64..40, 0u64..40), 0..60),
        ) {
            let similar: Vec<(u64, u64)> = similar.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect();
            let (in_memory, _) = cluster(40, &records, &similar, 1 << 20);
            let mut reversed = records.clone();
            reversed.reverse();
            let (spilled, stats) = cluster(40, &reversed, &similar, 64);
            prop_assert_eq!(&in_memory, &spilled);
            prop_assert!(records.len() < 5 || stats.spilled_partitions > 1);
            // Every similar pair that shares a bucket is connected.
            for &(a, b) in &similar {
                let shared = records.iter().any(|&(k, d)| d == a && records.contains(&(k, b)));
                if shared {
                    prop_assert_eq!(in_memory[a as usize], in_memory[b as usize]);
                }
            }
        }
    }
}
