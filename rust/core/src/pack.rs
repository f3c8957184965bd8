//! Packing documents into fixed-length rows for causal-LM training.
//!
//! Two strategies, both streaming over a shard's documents in order:
//! - best-fit decreasing (`Bfd`) over a bounded window of documents: each
//!   document goes to the open row with the least room that still fits it;
//!   a document longer than the row is cut into row-sized pieces, and
//!   nothing else is cut;
//! - concatenate-and-chunk (`Concat`), as Megatron and Hugging Face's
//!   `group_texts` do: one stream, cut every `seq_len` tokens, the last
//!   partial row dropped.
//!
//! Every row records its segments (source document, offset in it, length),
//! so rows can be unpacked back into the documents and models can keep
//! documents apart.

use crate::error::{Result, TokenmillError};

/// One stretch of one document inside a packed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The document's row index in its shard.
    pub doc: u64,
    /// Where in the document the stretch starts.
    pub offset: u32,
    pub len: u32,
}

/// Best-fit decreasing: bins (in creation order) of item indices (in
/// insertion order). Items sort by length, longest first, ties by index, so
/// the result is a pure function of `lengths`.
///
/// Finding the best open bin is a scan for the first set bit at or above the
/// item's length in a bitset over remaining capacities: O(capacity / 64).
/// Past [`DENSE_ROOMS`] that bitset would be larger than the work, so the
/// open bins go in a sorted map instead; both pick the same bins.
///
/// # Panics
///
/// Panics if an item is longer than `capacity`.
///
/// # Examples
///
/// ```
/// use tokenmill_core::pack::best_fit_decreasing;
/// // 7 opens a row, 5 fits nowhere and opens another, 5 fills it, 3 fills the first.
/// assert_eq!(best_fit_decreasing(&[3, 7, 5, 5], 10), vec![vec![1, 0], vec![2, 3]]);
/// ```
pub fn best_fit_decreasing(lengths: &[u32], capacity: u32) -> Vec<Vec<usize>> {
    best_fit_decreasing_in(lengths, capacity, Rooms::new(capacity))
}

fn best_fit_decreasing_in(lengths: &[u32], capacity: u32, mut rooms: Rooms) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    for item in order {
        let len = lengths[item];
        assert!(
            len <= capacity,
            "item of {len} exceeds bin capacity {capacity}"
        );
        let (bin, room) = rooms.take(len).unwrap_or_else(|| {
            bins.push(Vec::new());
            (bins.len() - 1, capacity)
        });
        bins[bin].push(item);
        let left = room - len;
        if left > 0 {
            rooms.put(left, bin);
        }
    }
    bins
}

/// The largest bin capacity whose open bins [`best_fit_decreasing`] keeps
/// in a bitset over every possible room (a slot per room: 1.5 MiB here).
pub const DENSE_ROOMS: u32 = 1 << 16;

/// Open bins by the room left in them; of several with the same room, the
/// one left last is taken first.
enum Rooms {
    Dense {
        open_with_room: Vec<Vec<usize>>,
        has_room: Vec<u64>,
    },
    Sparse(std::collections::BTreeMap<u32, Vec<usize>>),
}

impl Rooms {
    fn new(capacity: u32) -> Self {
        if capacity > DENSE_ROOMS {
            return Self::Sparse(std::collections::BTreeMap::new());
        }
        let slots = capacity as usize + 1;
        Self::Dense {
            open_with_room: vec![Vec::new(); slots],
            has_room: vec![0u64; slots.div_ceil(64)],
        }
    }

    /// The bin with the least room that still fits `len`, and that room.
    fn take(&mut self, len: u32) -> Option<(usize, u32)> {
        match self {
            Self::Dense {
                open_with_room,
                has_room,
            } => {
                let room = first_set_at_or_above(has_room, len as usize)?;
                let bin = open_with_room[room]
                    .pop()
                    .expect("bit set means a bin is there");
                if open_with_room[room].is_empty() {
                    has_room[room / 64] &= !(1 << (room % 64));
                }
                Some((bin, room as u32))
            }
            Self::Sparse(open) => {
                let (&room, bins) = open.range_mut(len..).next()?;
                let bin = bins.pop().expect("rooms without bins are removed");
                if bins.is_empty() {
                    open.remove(&room);
                }
                Some((bin, room))
            }
        }
    }

    fn put(&mut self, room: u32, bin: usize) {
        match self {
            Self::Dense {
                open_with_room,
                has_room,
            } => {
                let room = room as usize;
                open_with_room[room].push(bin);
                has_room[room / 64] |= 1 << (room % 64);
            }
            Self::Sparse(open) => open.entry(room).or_default().push(bin),
        }
    }
}

fn first_set_at_or_above(bits: &[u64], from: usize) -> Option<usize> {
    let mut word = from / 64;
    if word >= bits.len() {
        return None;
    }
    let mut current = bits[word] & (u64::MAX << (from % 64));
    loop {
        if current != 0 {
            return Some(word * 64 + current.trailing_zeros() as usize);
        }
        word += 1;
        if word == bits.len() {
            return None;
        }
        current = bits[word];
    }
}

/// How rows are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackStrategy {
    /// Best-fit decreasing over windows of `buffer` documents.
    Bfd { buffer: usize },
    /// One stream cut into rows of `seq_len` tokens; with `overlap`, each row
    /// starts with the previous row's last token (Megatron's windows of
    /// L + 1 tokens at stride L, so no input-target pair is lost).
    Concat { overlap: bool },
}

/// What packing did, for the manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    pub documents: u64,
    pub empty_documents: u64,
    pub documents_split: u64,
    pub rows: u64,
    pub tokens: u64,
    pub tokens_truncated: u64,
}

/// Rows of packed tokens, flat: `tokens` with `row_offsets`, and the segments
/// of each row with `segment_offsets` (both `rows + 1` long).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PackedRows {
    pub tokens: Vec<u32>,
    pub row_offsets: Vec<usize>,
    pub segments: Vec<Segment>,
    pub segment_offsets: Vec<usize>,
}

impl PackedRows {
    fn new() -> Self {
        Self {
            row_offsets: vec![0],
            segment_offsets: vec![0],
            ..Self::default()
        }
    }

    pub fn rows(&self) -> usize {
        self.row_offsets.len() - 1
    }

    fn push_row<'a>(&mut self, segments: impl IntoIterator<Item = (Segment, &'a [u32])>) {
        for (segment, tokens) in segments {
            self.tokens.extend_from_slice(tokens);
            self.segments.push(segment);
        }
        self.row_offsets.push(self.tokens.len());
        self.segment_offsets.push(self.segments.len());
    }

    /// Moves the rows of `other` after these.
    fn append(&mut self, other: &mut Self) {
        if self.rows() == 0 {
            std::mem::swap(self, other);
            *other = Self::new();
            return;
        }
        let (tokens, segments) = (self.tokens.len(), self.segments.len());
        self.tokens.append(&mut other.tokens);
        self.segments.append(&mut other.segments);
        self.row_offsets
            .extend(other.row_offsets[1..].iter().map(|o| o + tokens));
        self.segment_offsets
            .extend(other.segment_offsets[1..].iter().map(|o| o + segments));
        *other = Self::new();
    }
}

/// Packs the documents of one shard, fed in order, batch by batch. The rows
/// depend only on the documents, never on how they were batched.
///
/// A document's tokens are copied once, into the rows; only what is still
/// to be placed is kept between batches: for best-fit, the tails (shorter
/// than a row) of the current window's documents and the full rows cut from
/// them, for concatenation the partial row. One long document thus costs
/// its rows and nothing more.
pub struct Packer {
    seq_len: u32,
    strategy: PackStrategy,
    /// Bfd: the tails of the current window's documents, flat; each
    /// document's start there and its tail's offset in the document.
    /// Concat: the tokens of the row being filled.
    pending: Vec<u32>,
    pending_starts: Vec<usize>,
    pending_offsets: Vec<u32>,
    pending_first_doc: u64,
    /// Bfd: the full rows cut from the current window's documents, which
    /// precede the window's packed rows; and the window's tokens.
    window_rows: PackedRows,
    window_tokens: u64,
    /// Concat only: the segments of the row being filled (its tokens are
    /// `pending`).
    partial: Vec<Segment>,
    /// Concat with overlap: whether the partial row opens with a carried token.
    carried: bool,
    stats: PackStats,
}

impl Packer {
    /// # Errors
    ///
    /// [`TokenmillError::Config`] for a zero `seq_len` or buffer, or
    /// overlapping rows of a single token.
    pub fn new(seq_len: u32, strategy: PackStrategy) -> Result<Self> {
        if seq_len == 0 {
            return Err(TokenmillError::config(
                "--seq-len must be positive",
                "pass e.g. --seq-len 2048",
            ));
        }
        if let PackStrategy::Bfd { buffer: 0 } = strategy {
            return Err(TokenmillError::config(
                "--buffer must be positive",
                "pass e.g. --buffer 10000",
            ));
        }
        if let (PackStrategy::Concat { overlap: true }, 0..=1) = (strategy, seq_len) {
            // Each row would be the carried token alone: no row ever advances.
            return Err(TokenmillError::config(
                "overlapping rows need at least 2 tokens",
                "pass a row length of 2 or more",
            ));
        }
        Ok(Self {
            seq_len,
            strategy,
            pending: Vec::new(),
            pending_starts: Vec::new(),
            pending_offsets: Vec::new(),
            pending_first_doc: 0,
            window_rows: PackedRows::new(),
            window_tokens: 0,
            partial: Vec::new(),
            carried: false,
            stats: PackStats::default(),
        })
    }

    pub fn stats(&self) -> PackStats {
        self.stats
    }

    /// Adds documents `first_doc, first_doc + 1, ...` (their token ids, flat,
    /// with `offsets` of length `documents + 1`) and returns the rows completed.
    /// While documents are pending, new ones number on from them.
    ///
    /// # Errors
    ///
    /// [`TokenmillError::Config`] when document numbers would pass `u64::MAX`.
    pub fn push(
        &mut self,
        values: &[u32],
        offsets: &[usize],
        first_doc: u64,
    ) -> Result<PackedRows> {
        let first = if self.pending_starts.is_empty() {
            first_doc
        } else {
            self.pending_first_doc
        };
        let documents = self.pending_starts.len() + offsets.len().saturating_sub(1);
        if documents > 0 && first.checked_add(documents as u64 - 1).is_none() {
            return Err(TokenmillError::config(
                format!(
                    "{documents} documents from document {first} run past {}",
                    u64::MAX
                ),
                "number documents from 0 within each shard",
            ));
        }
        self.pending_first_doc = first;
        self.stats.documents += offsets.len().saturating_sub(1) as u64;
        let mut rows = PackedRows::new();
        match self.strategy {
            PackStrategy::Bfd { buffer } => {
                for window in offsets.windows(2) {
                    self.add_bfd(&values[window[0]..window[1]]);
                    if self.pending_starts.len() == buffer {
                        self.pack_window(&mut rows);
                    }
                }
            }
            PackStrategy::Concat { .. } => {
                for (index, window) in offsets.windows(2).enumerate() {
                    let doc = self.pending_first_doc + index as u64;
                    self.add_concat(doc, &values[window[0]..window[1]], &mut rows);
                }
            }
        }
        Ok(rows)
    }

    /// Packs what is left at the end of the shard.
    pub fn finish(&mut self) -> PackedRows {
        let mut rows = PackedRows::new();
        match self.strategy {
            PackStrategy::Bfd { .. } => {
                if !self.pending_starts.is_empty() {
                    self.pack_window(&mut rows);
                }
            }
            PackStrategy::Concat { .. } => {
                // A carried token was already counted in the row it ended.
                let filled = self.pending.len();
                let carried = usize::from(self.carried && filled > 0);
                self.stats.tokens_truncated += (filled - carried) as u64;
                self.partial.clear();
                self.pending.clear();
            }
        }
        rows
    }

    /// Best-fit: the document's full rows go to the window's rows, its tail
    /// (shorter than a row) waits for the window to be packed.
    fn add_bfd(&mut self, document: &[u32]) {
        let capacity = self.seq_len as usize;
        let doc = self.pending_first_doc + self.pending_starts.len() as u64;
        if document.is_empty() {
            self.stats.empty_documents += 1;
        } else if document.len() > capacity {
            self.stats.documents_split += 1;
        }
        let full = document.len() / capacity * capacity;
        for (piece, tokens) in document[..full].chunks_exact(capacity).enumerate() {
            // A full piece is a row by itself; no need to search for it.
            let segment = Segment {
                doc,
                offset: (piece * capacity) as u32,
                len: capacity as u32,
            };
            self.window_rows.push_row([(segment, tokens)]);
            self.stats.rows += 1;
        }
        self.pending_starts.push(self.pending.len());
        self.pending_offsets.push(full as u32);
        self.pending.extend_from_slice(&document[full..]);
        self.window_tokens += document.len() as u64;
    }

    /// Where pending document `index`'s tail lies in `pending`.
    fn tail(&self, index: usize) -> std::ops::Range<usize> {
        let start = self.pending_starts[index];
        let end = self
            .pending_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.pending.len());
        start..end
    }

    /// Packs the current window into `rows`: its full rows, in document
    /// order, then the best-fit bins of its tails.
    fn pack_window(&mut self, rows: &mut PackedRows) {
        rows.append(&mut self.window_rows);
        let mut pieces: Vec<(Segment, std::ops::Range<usize>)> = Vec::new();
        for index in 0..self.pending_starts.len() {
            let range = self.tail(index);
            if !range.is_empty() {
                let segment = Segment {
                    doc: self.pending_first_doc + index as u64,
                    offset: self.pending_offsets[index],
                    len: range.len() as u32,
                };
                pieces.push((segment, range));
            }
        }
        let lengths: Vec<u32> = pieces.iter().map(|(s, _)| s.len).collect();
        for bin in best_fit_decreasing(&lengths, self.seq_len) {
            rows.push_row(bin.iter().map(|&i| {
                let (segment, range) = &pieces[i];
                (*segment, &self.pending[range.clone()])
            }));
            self.stats.rows += 1;
        }
        self.stats.tokens += self.window_tokens;
        self.window_tokens = 0;
        // Past the last document this is the next number, which `push`
        // checks before use.
        self.pending_first_doc = self
            .pending_first_doc
            .wrapping_add(self.pending_starts.len() as u64);
        self.pending.clear();
        self.pending_starts.clear();
        self.pending_offsets.clear();
    }

    /// Concatenation: the document continues the stream; every row it
    /// completes goes to `rows`.
    fn add_concat(&mut self, doc: u64, document: &[u32], rows: &mut PackedRows) {
        let capacity = self.seq_len as usize;
        if document.is_empty() {
            self.stats.empty_documents += 1;
            return;
        }
        let mut offset = 0;
        while offset < document.len() {
            let len = (capacity - self.pending.len()).min(document.len() - offset);
            let segment = Segment {
                doc,
                offset: offset as u32,
                len: len as u32,
            };
            let tokens = &document[offset..offset + len];
            offset += len;
            if len == capacity {
                // A whole row of this document: straight into the rows.
                rows.push_row([(segment, tokens)]);
            } else {
                self.partial.push(segment);
                self.pending.extend_from_slice(tokens);
                if self.pending.len() < capacity {
                    continue;
                }
                let mut at = 0;
                rows.push_row(self.partial.iter().map(|s| {
                    let piece = &self.pending[at..at + s.len as usize];
                    at += s.len as usize;
                    (*s, piece)
                }));
            }
            self.stats.rows += 1;
            self.stats.tokens += capacity as u64;
            let last = self.partial.last().copied().unwrap_or(segment);
            let last_token = tokens[tokens.len() - 1];
            self.partial.clear();
            self.pending.clear();
            if let PackStrategy::Concat { overlap: true } = self.strategy {
                self.partial.push(Segment {
                    doc: last.doc,
                    offset: last.offset + last.len - 1,
                    len: 1,
                });
                self.pending.push(last_token);
                self.carried = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack_all(
        docs: &[Vec<u32>],
        seq_len: u32,
        strategy: PackStrategy,
        batch: usize,
    ) -> (PackedRows, PackStats) {
        let mut packer = Packer::new(seq_len, strategy).unwrap();
        let mut all = PackedRows::new();
        let append = |rows: PackedRows, all: &mut PackedRows| {
            for r in 0..rows.rows() {
                let segments =
                    rows.segments[rows.segment_offsets[r]..rows.segment_offsets[r + 1]].to_vec();
                let tokens = &rows.tokens[rows.row_offsets[r]..rows.row_offsets[r + 1]];
                let mut at = 0;
                let parts: Vec<_> = segments
                    .iter()
                    .map(|s| {
                        let piece = &tokens[at..at + s.len as usize];
                        at += s.len as usize;
                        (*s, piece)
                    })
                    .collect();
                all.push_row(parts);
            }
        };
        for (chunk_index, chunk) in docs.chunks(batch.max(1)).enumerate() {
            let values: Vec<u32> = chunk.iter().flatten().copied().collect();
            let mut offsets = vec![0];
            for d in chunk {
                offsets.push(offsets.last().unwrap() + d.len());
            }
            let rows = packer
                .push(&values, &offsets, (chunk_index * batch.max(1)) as u64)
                .unwrap();
            append(rows, &mut all);
        }
        let rows = packer.finish();
        append(rows, &mut all);
        (all, packer.stats())
    }

    fn unpack(rows: &PackedRows, documents: usize) -> Vec<Vec<u32>> {
        let mut pieces: Vec<(u64, u32, Vec<u32>)> = Vec::new();
        for r in 0..rows.rows() {
            let mut at = rows.row_offsets[r];
            for s in &rows.segments[rows.segment_offsets[r]..rows.segment_offsets[r + 1]] {
                pieces.push((
                    s.doc,
                    s.offset,
                    rows.tokens[at..at + s.len as usize].to_vec(),
                ));
                at += s.len as usize;
            }
        }
        pieces.sort();
        let mut docs = vec![Vec::new(); documents];
        for (doc, offset, tokens) in pieces {
            assert_eq!(docs[doc as usize].len(), offset as usize);
            docs[doc as usize].extend(tokens);
        }
        docs
    }

    #[test]
    fn bfd_small_case() {
        let docs = vec![
            vec![1; 3],
            vec![2; 7],
            vec![3; 5],
            vec![4; 5],
            vec![],
            vec![6; 12],
        ];
        let (rows, stats) = pack_all(&docs, 10, PackStrategy::Bfd { buffer: 100 }, 2);
        // The 12-token document fills a row alone; then 7 + 3 and 5 + 5 fill two
        // more, and the 2-token tail opens the last.
        let lengths: Vec<usize> = (0..rows.rows())
            .map(|r| rows.row_offsets[r + 1] - rows.row_offsets[r])
            .collect();
        assert_eq!(lengths, vec![10, 10, 10, 2]);
        assert_eq!(stats.documents_split, 1);
        assert_eq!(stats.empty_documents, 1);
        assert_eq!(stats.tokens, 32);
        assert_eq!(unpack(&rows, docs.len()), docs);
    }

    #[test]
    fn concat_cuts_one_stream_and_drops_the_tail() {
        let docs = vec![vec![1, 2, 3], vec![4, 5, 6, 7, 8], vec![9]];
        let (rows, stats) = pack_all(&docs, 4, PackStrategy::Concat { overlap: false }, 1);
        assert_eq!(rows.tokens, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(rows.rows(), 2);
        assert_eq!(stats.tokens_truncated, 1);
        let second: Vec<Segment> = rows.segments[rows.segment_offsets[1]..].to_vec();
        assert_eq!(
            second,
            vec![Segment {
                doc: 1,
                offset: 1,
                len: 4
            }]
        );
    }

    #[test]
    fn overlapping_windows_lose_no_input_target_pair() {
        let docs = vec![vec![1, 2, 3], vec![4, 5, 6, 7, 8], vec![9]];
        let (rows, stats) = pack_all(&docs, 4, PackStrategy::Concat { overlap: true }, 2);
        // Windows of 4 at stride 3: 1234, 4567, 789 (dropped, 2 new tokens).
        assert_eq!(rows.tokens, vec![1, 2, 3, 4, 4, 5, 6, 7]);
        assert_eq!(stats.tokens_truncated, 2);
        let second = &rows.segments[rows.segment_offsets[1]..rows.segment_offsets[2]];
        assert_eq!(
            second[0],
            Segment {
                doc: 1,
                offset: 0,
                len: 1
            }
        );
    }

    #[test]
    fn overlapping_rows_of_one_token_are_refused() {
        let refused = Packer::new(1, PackStrategy::Concat { overlap: true });
        assert!(matches!(refused, Err(TokenmillError::Config { .. })));
        assert!(Packer::new(1, PackStrategy::Concat { overlap: false }).is_ok());
    }

    #[test]
    fn a_long_document_keeps_only_its_tail_between_batches() {
        let long: Vec<u32> = (0..25).collect();
        let mut packer = Packer::new(10, PackStrategy::Bfd { buffer: 2 }).unwrap();
        assert_eq!(packer.push(&long, &[0, 25], 0).unwrap().rows(), 0);
        assert_eq!((packer.pending.len(), packer.window_rows.rows()), (5, 2));
        let rows = packer.push(&[7, 7, 7], &[0, 3], 1).unwrap();
        // The full rows first, then the bin of both tails.
        assert_eq!(rows.row_offsets, vec![0, 10, 20, 28]);
        assert_eq!(&rows.tokens[20..], &[20, 21, 22, 23, 24, 7, 7, 7]);
        assert!(packer.pending.is_empty());
        let mut concat = Packer::new(10, PackStrategy::Concat { overlap: false }).unwrap();
        assert_eq!(concat.push(&long, &[0, 25], 0).unwrap().rows(), 2);
        assert_eq!(concat.pending, vec![20, 21, 22, 23, 24]);
    }

    proptest! {
        #[test]
        fn bfd_unpacks_to_the_documents_whatever_the_batching(
            docs in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..40), 0..60),
            seq_len in 1u32..32, buffer in 1usize..20, batch in 1usize..10,
        ) {
            let (rows, stats) = pack_all(&docs, seq_len, PackStrategy::Bfd { buffer }, batch);
            prop_assert_eq!(unpack(&rows, docs.len()), docs.clone());
            let (again, _) = pack_all(&docs, seq_len, PackStrategy::Bfd { buffer }, batch + 3);
            prop_assert_eq!(&rows, &again);
            for r in 0..rows.rows() {
                prop_assert!(rows.row_offsets[r + 1] - rows.row_offsets[r] <= seq_len as usize);
            }
            prop_assert_eq!(stats.tokens, docs.iter().map(|d| d.len() as u64).sum::<u64>());
        }

        #[test]
        fn concat_rows_are_full_and_in_order(
            docs in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..40), 0..60),
            seq_len in 1u32..32, batch in 1usize..10,
        ) {
            let (rows, stats) = pack_all(&docs, seq_len, PackStrategy::Concat { overlap: false }, batch);
            let stream: Vec<u32> = docs.iter().flatten().copied().collect();
            let kept = stream.len() / seq_len as usize * seq_len as usize;
            prop_assert_eq!(&rows.tokens[..], &stream[..kept]);
            prop_assert_eq!(stats.tokens_truncated as usize, stream.len() - kept);
        }

        #[test]
        fn best_fit_never_overfills_and_places_everything(
            lengths in proptest::collection::vec(1u32..50, 0..200), extra in 0u32..20,
        ) {
            let capacity = 50 + extra;
            let bins = best_fit_decreasing(&lengths, capacity);
            let mut seen: Vec<usize> = bins.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for bin in &bins {
                prop_assert!(bin.iter().map(|&i| lengths[i]).sum::<u32>() <= capacity);
            }
        }

        #[test]
        fn the_sorted_map_of_rooms_picks_the_bins_the_bitset_picks(
            lengths in proptest::collection::vec(0u32..70, 0..200), capacity in 1u32..70,
        ) {
            let lengths: Vec<u32> = lengths.into_iter().map(|l| l.min(capacity)).collect();
            let sparse = Rooms::Sparse(std::collections::BTreeMap::new());
            prop_assert_eq!(
                best_fit_decreasing_in(&lengths, capacity, sparse),
                best_fit_decreasing(&lengths, capacity)
            );
        }
    }

    #[test]
    fn rows_of_billions_of_tokens_cost_no_more_than_their_documents() {
        // A bitset over every room of a u32::MAX row once took 100 GB.
        let lengths = [u32::MAX, 5, u32::MAX - 5, 3, 2];
        let bins = best_fit_decreasing(&lengths, u32::MAX);
        assert_eq!(bins, vec![vec![0], vec![2, 1], vec![3, 4]]);
        let mut packer = Packer::new(u32::MAX, PackStrategy::Bfd { buffer: 2 }).unwrap();
        let rows = packer.push(&[1, 2, 3], &[0, 2, 3], 0).unwrap();
        assert_eq!(rows.tokens, vec![1, 2, 3]);
    }

    #[test]
    fn overlapping_rows_need_room_for_more_than_the_carried_token() {
        // A row of one token holds only the token carried from the row
        // before: packing never moved on, and filled memory.
        let err = Packer::new(1, PackStrategy::Concat { overlap: true })
            .err()
            .unwrap();
        assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        let mut packer = Packer::new(2, PackStrategy::Concat { overlap: true }).unwrap();
        let rows = packer.push(&[1, 2, 3, 4], &[0, 4], 0).unwrap();
        assert_eq!(rows.tokens, vec![1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn document_numbers_past_u64_max_are_refused() {
        let mut packer = Packer::new(4, PackStrategy::Bfd { buffer: 8 }).unwrap();
        assert!(packer.push(&[1, 2], &[0, 1, 2], u64::MAX - 1).is_ok());
        let err = packer.push(&[1], &[0, 1], 0).unwrap_err();
        assert!(matches!(err, TokenmillError::Config { .. }), "{err}");
        let mut fresh = Packer::new(4, PackStrategy::Bfd { buffer: 8 }).unwrap();
        assert!(fresh.push(&[1, 2, 3], &[0, 1, 2, 3], u64::MAX - 1).is_err());
    }
}
