//! Encoding text to token ids with a fixed vocabulary.
//!
//! Semantics: split on special tokens (leftmost, longest), pre-tokenize each stretch, and within
//! each piece start from single bytes and repeatedly merge the adjacent pair of lowest rank
//! (leftmost first among equals) until no mergeable pair is left. This is tiktoken's and HF's
//! BPE; for a merge list in creation order it equals applying the merges one after another.
//!
//! Where the pairs come from:
//! - `from_merges`: the pairs are exactly the merges, ranked by position (CS336, GPT-2's files).
//! - `from_ranks`: tiktoken's rank files; any two adjacent parts merge when their concatenation
//!   is a token, ranked by that token's rank. Every way of cutting a token into two tokens is
//!   entered as a pair, which makes this the same loop.
//!
//! Speed: a piece that is itself a token (and that BPE would rebuild as itself) is looked up
//! whole; short pieces use a small quadratic loop over a stack array; long pieces a heap over a
//! linked list, so a piece of a million bytes is O(n log n), never quadratic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;

use crate::count::{
    read_chunks, recv_shared, worker_panicked, CountError, Interrupted, SpecialSplitter,
};
use crate::pretok::Pattern;

/// Why an encoder could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A merge part is not a token: (merge index, the part).
    MergePartMissing(usize, Vec<u8>),
    /// A merge result is not a token: (merge index, the bytes).
    MergeResultMissing(usize, Vec<u8>),
    /// Byte value with no single-byte token.
    ByteMissing(u8),
}

type Pair = (u32, u32);

/// Pieces at most this long (in bytes) use the quadratic loop; longer ones the heap.
const SMALL: usize = 64;

pub struct Encoder {
    /// Token bytes by id (empty for ids that do not exist).
    tokens: Vec<Vec<u8>>,
    /// The id of each single byte.
    byte_ids: [u32; 256],
    /// (left id, right id) -> (rank, merged id).
    pairs: FxHashMap<Pair, (u32, u32)>,
    /// Token bytes -> id, for pieces that encode to exactly one token.
    whole: BytesMap<u32>,
    specials: SpecialSplitter,
    special_ids: Vec<u32>,
    pub pattern: Pattern,
}

impl Encoder {
    fn base(tokens_by_id: &[(u32, Vec<u8>)]) -> (Vec<Vec<u8>>, FxHashMap<Vec<u8>, u32>) {
        let n = tokens_by_id
            .iter()
            .map(|(i, _)| *i as usize + 1)
            .max()
            .unwrap_or(0);
        let mut tokens = vec![Vec::new(); n];
        let mut ids: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        // The lowest id wins when two ids share bytes.
        let mut sorted: Vec<&(u32, Vec<u8>)> = tokens_by_id.iter().collect();
        sorted.sort_by_key(|(i, _)| *i);
        for (i, t) in sorted {
            tokens[*i as usize] = t.clone();
            ids.entry(t.clone()).or_insert(*i);
        }
        (tokens, ids)
    }

    fn byte_ids(ids: &FxHashMap<Vec<u8>, u32>) -> Result<[u32; 256], BuildError> {
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *ids.get(&vec![b]).ok_or(BuildError::ByteMissing(b))?;
        }
        Ok(byte_ids)
    }

    /// From a vocabulary (without special tokens) and merges in priority order.
    pub fn from_merges(
        vocab: &[(u32, Vec<u8>)],
        merges: &[(Vec<u8>, Vec<u8>)],
        specials: &[(String, u32)],
        pattern: Pattern,
    ) -> Result<Self, BuildError> {
        let (tokens, ids) = Self::base(vocab);
        let byte_ids = Self::byte_ids(&ids)?;
        let mut pairs: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
        for (rank, (a, b)) in merges.iter().enumerate() {
            let ia = *ids
                .get(a)
                .ok_or_else(|| BuildError::MergePartMissing(rank, a.clone()))?;
            let ib = *ids
                .get(b)
                .ok_or_else(|| BuildError::MergePartMissing(rank, b.clone()))?;
            let ab = [&a[..], &b[..]].concat();
            let iab = *ids
                .get(&ab)
                .ok_or(BuildError::MergeResultMissing(rank, ab))?;
            // A pair listed twice keeps its first (highest-priority) rank.
            pairs.entry((ia, ib)).or_insert((rank as u32, iab));
        }
        let mut enc = Encoder {
            tokens,
            byte_ids,
            pairs,
            whole: BytesMap::default(),
            specials: SpecialSplitter::new::<&str>(&[]),
            special_ids: Vec::new(),
            pattern,
        };
        // Whole-piece lookup only for tokens that BPE rebuilds as themselves.
        let mut whole = BytesMap::default();
        let mut out = Vec::new();
        for (bytes, &id) in &ids {
            out.clear();
            enc.bpe(bytes, &mut out);
            if out.len() == 1 && out[0] == id {
                whole.insert(bytes, id);
            }
        }
        enc.whole = whole;
        enc.set_specials(specials);
        Ok(enc)
    }

    /// From tiktoken-style ranks (token bytes -> rank, the rank also being the id).
    pub fn from_ranks(
        ranks: &[(Vec<u8>, u32)],
        specials: &[(String, u32)],
        pattern: Pattern,
    ) -> Result<Self, BuildError> {
        let vocab: Vec<(u32, Vec<u8>)> = ranks.iter().map(|(t, r)| (*r, t.clone())).collect();
        let (tokens, ids) = Self::base(&vocab);
        let byte_ids = Self::byte_ids(&ids)?;
        let mut pairs: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
        for (t, r) in ranks {
            let r = *r;
            for k in 1..t.len() {
                if let (Some(&ia), Some(&ib)) = (ids.get(&t[..k]), ids.get(&t[k..])) {
                    pairs.insert((ia, ib), (r, ids[t]));
                }
            }
        }
        // tiktoken looks every piece up whole first.
        let mut whole = BytesMap::default();
        for (t, &id) in &ids {
            whole.insert(t, id);
        }
        let mut enc = Encoder {
            tokens,
            byte_ids,
            pairs,
            whole,
            specials: SpecialSplitter::new::<&str>(&[]),
            special_ids: Vec::new(),
            pattern,
        };
        enc.set_specials(specials);
        Ok(enc)
    }

    fn set_specials(&mut self, specials: &[(String, u32)]) {
        let specials: Vec<&(String, u32)> =
            specials.iter().filter(|(s, _)| !s.is_empty()).collect();
        for (s, id) in &specials {
            let i = *id as usize;
            if i >= self.tokens.len() {
                self.tokens.resize(i + 1, Vec::new());
            }
            self.tokens[i] = s.as_bytes().to_vec();
        }
        self.special_ids = specials.iter().map(|(_, id)| *id).collect();
        let names: Vec<&str> = specials.iter().map(|(s, _)| s.as_str()).collect();
        self.specials = SpecialSplitter::new(&names);
    }

    /// Longest special token, in bytes (0 without special tokens).
    pub fn special_max_len(&self) -> usize {
        self.specials.max_len()
    }

    /// One more than the largest id.
    pub fn id_limit(&self) -> usize {
        self.tokens.len()
    }

    /// The bytes of token `id`, if it exists.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.tokens
            .get(id as usize)
            .filter(|t| !t.is_empty())
            .map(|t| &t[..])
    }

    /// BPE on one piece, appending ids to `out`.
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() == 1 {
            out.push(self.byte_ids[piece[0] as usize]);
            return;
        }
        if let Some(&id) = self.whole.get(piece) {
            out.push(id);
            return;
        }
        self.bpe(piece, out);
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.pairs.get(&(a, b)).copied()
    }

    /// The merge loop itself (no whole-piece lookup).
    fn bpe(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() <= SMALL {
            self.bpe_small(piece, out)
        } else {
            self.bpe_large(piece, out)
        }
    }

    /// Quadratic in the worst case but branch-light: parts and their right-pair ranks in arrays.
    fn bpe_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        let mut ids = [0u32; SMALL];
        // ranks[i]: (rank, merged id) of the pair (ids[i], ids[i+1]); u32::MAX if none.
        let mut ranks = [(u32::MAX, 0u32); SMALL];
        for i in 0..n {
            ids[i] = self.byte_ids[piece[i] as usize];
        }
        let mut len = n;
        for i in 0..len - 1 {
            ranks[i] = self.rank(ids[i], ids[i + 1]).unwrap_or((u32::MAX, 0));
        }
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, r) in ranks[..len - 1].iter().enumerate() {
                if r.0 < best {
                    best = r.0;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            ids[at] = ranks[at].1;
            // Remove ids[at + 1].
            ids.copy_within(at + 2..len, at + 1);
            ranks.copy_within(at + 2..len, at + 1);
            len -= 1;
            if at + 1 < len {
                ranks[at] = self.rank(ids[at], ids[at + 1]).unwrap_or((u32::MAX, 0));
            } else {
                ranks[at] = (u32::MAX, 0);
            }
            if at > 0 {
                ranks[at - 1] = self.rank(ids[at - 1], ids[at]).unwrap_or((u32::MAX, 0));
            }
            if len == 1 {
                break;
            }
        }
        out.extend_from_slice(&ids[..len]);
    }

    /// O(n log n): a doubly linked list of parts and a min-heap of (rank, position) with stale
    /// entries skipped.
    fn bpe_large(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((r, _)) = self.rank(ids[i], ids[i + 1]) {
                heap.push(Reverse((r, i, ids[i], ids[i + 1])));
            }
        }
        while let Some(Reverse((r, i, a, b))) = heap.pop() {
            // Stale unless both parts are still there, unchanged, and adjacent.
            if !alive[i] || ids[i] != a {
                continue;
            }
            let j = next[i];
            if j >= n || ids[j] != b {
                continue;
            }
            let Some((rank, merged)) = self.rank(a, b) else {
                continue;
            };
            if rank != r {
                continue;
            }
            ids[i] = merged;
            alive[j] = false;
            let k = next[j];
            next[i] = k;
            if k < n {
                prev[k] = i;
                if let Some((r2, _)) = self.rank(merged, ids[k]) {
                    heap.push(Reverse((r2, i, merged, ids[k])));
                }
            }
            let p = prev[i];
            if p < n {
                if let Some((r2, _)) = self.rank(ids[p], merged) {
                    heap.push(Reverse((r2, p, ids[p], merged)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(ids[i]);
            i = next[i];
        }
    }

    /// Encodes the pieces of a stretch of text, remembering the pieces that needed BPE.
    fn encode_segment(&self, text: &str, out: &mut Vec<u32>, cache: &mut PieceCache) {
        self.pattern.for_each_piece(text, |p| {
            let piece = p.as_bytes();
            if piece.len() == 1 {
                out.push(self.byte_ids[piece[0] as usize]);
            } else if let Some(&id) = self.whole.get(piece) {
                out.push(id);
            } else if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
            } else {
                let at = out.len();
                self.bpe(piece, out);
                cache.insert(piece, &out[at..]);
            }
        });
    }

    /// Encodes `text` into `out`; with `with_specials`, special tokens in it become their ids,
    /// otherwise they are plain text. The cache may outlive the call: a thread encoding many
    /// texts keeps one, so short texts still find their words.
    fn encode_cached(
        &self,
        text: &str,
        with_specials: bool,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
    ) {
        if !with_specials {
            return self.encode_segment(text, out, cache);
        }
        let mut last = 0;
        for (start, end, k) in self.specials.matches(text) {
            self.encode_segment(&text[last..start], out, cache);
            out.push(self.special_ids[k]);
            last = end;
        }
        self.encode_segment(&text[last..], out, cache);
    }

    /// `encode` with special tokens, `encode_ordinary` without.
    pub fn encode_with(&self, text: &str, with_specials: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_cached(text, with_specials, &mut out, &mut PieceCache::default());
        out
    }

    /// Encodes text; special tokens in it become their ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, true)
    }

    /// Encodes text without special-token handling.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, false)
    }

    /// Special-token matches in `text` as (start, end, id).
    pub fn special_matches(&self, text: &str) -> Vec<(usize, usize, u32)> {
        self.specials
            .matches(text)
            .map(|(s, e, k)| (s, e, self.special_ids[k]))
            .collect()
    }

    /// Encodes many texts on `num_threads` threads (results in input order).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        num_threads: usize,
        with_specials: bool,
    ) -> Vec<Vec<u32>> {
        let mut all = Vec::with_capacity(texts.len());
        let done: Result<(), std::convert::Infallible> = self.encode_batch_in_order(
            texts,
            num_threads,
            with_specials,
            |take| take(),
            |ids| {
                all.push(ids.to_vec());
                Ok(())
            },
        );
        match done {
            Ok(()) => all,
            Err(never) => match never {},
        }
    }

    /// Encodes many texts on `num_threads` threads and hands each result to `sink` on the
    /// calling thread, in input order, as soon as it and all before it are done: the caller
    /// converts early results (into Python lists, say) while later texts are still encoding.
    /// The calling thread's own encoding and its waits for other threads' results run inside
    /// `wait` (the Python binding releases the GIL there); `sink` runs outside it. An error from
    /// `sink` stops the workers and is returned.
    pub fn encode_batch_in_order<S, W, E>(
        &self,
        texts: &[S],
        num_threads: usize,
        with_specials: bool,
        mut wait: W,
        mut sink: impl FnMut(&[u32]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        S: AsRef<str> + Sync,
        W: FnMut(&(dyn Fn() -> Option<Group> + Sync)) -> Option<Group>,
    {
        let threads = num_threads.clamp(1, texts.len().max(1));
        // Texts are handed out in small groups from a shared counter, so long and short texts
        // balance across threads; finished groups wait in `ready` until their turn. The calling
        // thread is one of the `threads` (with one, the only one): it turns finished groups into
        // results in order, and when the next one is not finished it encodes a group itself.
        let group = (texts.len() / (threads * 16)).clamp(1, 256);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let ready: Mutex<FxHashMap<usize, Group>> = Mutex::default();
        let arrived = Condvar::new();
        let running = AtomicUsize::new(threads - 1);
        // Claims the next group and encodes it; None when every group has been claimed.
        let encode_next = |cache: &mut PieceCache| -> Option<Group> {
            let start = next.fetch_add(group, Ordering::Relaxed);
            if start >= texts.len() || stop.load(Ordering::Relaxed) {
                return None;
            }
            let part = &texts[start..(start + group).min(texts.len())];
            let bytes: usize = part.iter().map(|t| t.as_ref().len()).sum();
            let mut done = Group {
                start,
                ids: Vec::with_capacity(bytes / 4 + 1),
                ends: Vec::with_capacity(part.len()),
            };
            for t in part {
                self.encode_cached(t.as_ref(), with_specials, &mut done.ids, cache);
                done.ends.push(done.ids.len());
            }
            Some(done)
        };
        // Counts a worker out however it ends, so a panic cannot leave the caller waiting.
        struct Exit<'a>(
            &'a AtomicUsize,
            &'a Mutex<FxHashMap<usize, Group>>,
            &'a Condvar,
        );
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                let _held = lock(self.1);
                self.0.fetch_sub(1, Ordering::SeqCst);
                self.2.notify_all();
            }
        }
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|| {
                    let _exit = Exit(&running, &ready, &arrived);
                    let mut cache = PieceCache::default();
                    while let Some(done) = encode_next(&mut cache) {
                        lock(&ready).insert(done.start, done);
                        arrived.notify_all();
                    }
                });
            }
            // Waits for the group at `start` from the workers. None: every worker has ended
            // without producing it (a panic, which the scope then passes on).
            let take = |start: usize| {
                let mut map = lock(&ready);
                loop {
                    if let Some(done) = map.remove(&start) {
                        return Some(done);
                    }
                    if running.load(Ordering::SeqCst) == 0 {
                        return None;
                    }
                    map = arrived.wait(map).unwrap_or_else(PoisonError::into_inner);
                }
            };
            let own_cache = Mutex::new(PieceCache::default());
            let mut start = 0;
            while start < texts.len() {
                let ready_now = lock(&ready).remove(&start);
                let done = match ready_now {
                    Some(done) => done,
                    None => match wait(&|| encode_next(&mut lock(&own_cache))) {
                        Some(done) if done.start == start => done,
                        Some(done) => {
                            lock(&ready).insert(done.start, done);
                            continue;
                        }
                        None => match wait(&|| take(start)) {
                            Some(done) => done,
                            None => break,
                        },
                    },
                };
                start += done.ends.len();
                let mut from = 0;
                for &end in &done.ends {
                    if let Err(e) = sink(&done.ids[from..end]) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    from = end;
                }
            }
            Ok(())
        })
    }

    /// Byte length of the longest prefix of `text` that can be encoded now without knowing what
    /// follows (streaming): it ends at a safe cut, so encoding the prefix and the rest apart
    /// gives the ids of the whole.
    pub fn safe_prefix_len(&self, text: &str) -> usize {
        crate::count::last_safe_cut(text.as_bytes(), 0, self.pattern, &self.specials).unwrap_or(0)
    }

    /// Encodes a UTF-8 file into a flat array of little-endian ids (`width` bytes each: 2 or 4)
    /// written to `out`, chunks encoded on `num_threads` threads and written in order with at
    /// most a few chunks in memory. Returns the number of tokens.
    pub fn encode_file(
        &self,
        path: &Path,
        out: &Path,
        width: usize,
        num_threads: usize,
        hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<u64, CountError> {
        let num_threads = num_threads.max(1);
        let file = std::fs::File::create(out)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        // Chunks in flight (read, encoding, or waiting to be written) are bounded by tickets.
        let in_flight = num_threads * 2 + 2;
        let (ticket_tx, ticket_rx) = mpsc::sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = ticket_tx.send(());
        }
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, u64, Vec<u8>)>(in_flight);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<Vec<u32>, u64>)>();
        std::thread::scope(|scope| {
            for _ in 0..num_threads {
                let done_tx = done_tx.clone();
                let work_rx = &work_rx;
                scope.spawn(move || {
                    let mut cache = PieceCache::default();
                    while let Some((seq, offset, chunk)) = recv_shared(work_rx) {
                        let r = match std::str::from_utf8(&chunk) {
                            Ok(text) => {
                                let mut ids = Vec::with_capacity(text.len() / 4 + 1);
                                self.encode_cached(text, true, &mut ids, &mut cache);
                                Ok(ids)
                            }
                            Err(e) => Err(offset + e.valid_up_to() as u64),
                        };
                        if done_tx.send((seq, r)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            // The writer: puts encoded chunks in file order, returns a ticket per chunk.
            let writer_thread = scope.spawn(move || -> Result<u64, CountError> {
                let mut pending: std::collections::BTreeMap<usize, Result<Vec<u32>, u64>> =
                    Default::default();
                let mut next = 0usize;
                let mut total = 0u64;
                let mut buf: Vec<u8> = Vec::new();
                for (seq, r) in done_rx {
                    pending.insert(seq, r);
                    // In file order, so the first invalid byte reported is the first in the file.
                    while let Some(r) = pending.remove(&next) {
                        let ids = r.map_err(|offset| CountError::InvalidUtf8 { offset })?;
                        buf.clear();
                        ids_to_le_bytes(&ids, width, &mut buf);
                        writer.write_all(&buf)?;
                        total += ids.len() as u64;
                        next += 1;
                        let _ = ticket_tx.send(());
                    }
                }
                writer.flush()?;
                writer.get_ref().sync_all()?;
                Ok(total)
            });
            let mut seq = 0usize;
            let read = read_chunks(
                path,
                self.pattern,
                &self.specials,
                FILE_BLOCK,
                hook,
                |offset, chunk| {
                    if ticket_rx.recv().is_err() {
                        return false;
                    }
                    let ok = work_tx.send((seq, offset, chunk)).is_ok();
                    seq += 1;
                    ok
                },
            );
            drop(work_tx);
            drop(ticket_rx);
            let written = writer_thread.join().map_err(|_| worker_panicked())?;
            read?;
            written
        })
    }

    /// The bytes of `ids` concatenated; Err(id) for the first unknown id.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, u32> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.token(id) {
                Some(t) => out.extend_from_slice(t),
                None => return Err(id),
            }
        }
        Ok(out)
    }
}

/// A map keyed by byte strings. Strings of at most 15 bytes (nearly every piece) are packed
/// with their length into one u128, so a lookup is a multiply and an integer compare rather
/// than hashing and comparing memory.
struct BytesMap<V> {
    short: FxHashMap<u128, V>,
    long: FxHashMap<Vec<u8>, V>,
}

impl<V> Default for BytesMap<V> {
    fn default() -> Self {
        BytesMap {
            short: FxHashMap::default(),
            long: FxHashMap::default(),
        }
    }
}

impl<V> BytesMap<V> {
    /// The bytes of `key` (little-endian) with its length in the top byte; None past 15 bytes.
    /// Two overlapping loads cover any length without a variable-length copy: the bytes they
    /// share are equal, so OR-ing them changes nothing.
    #[inline(always)]
    fn pack(key: &[u8]) -> Option<u128> {
        let n = key.len();
        let bytes = match n {
            0 => 0,
            1..=3 => {
                key[0] as u128
                    | (key[n / 2] as u128) << (8 * (n / 2))
                    | (key[n - 1] as u128) << (8 * (n - 1))
            }
            4..=7 => {
                let lo = u32::from_le_bytes([key[0], key[1], key[2], key[3]]) as u128;
                let hi =
                    u32::from_le_bytes([key[n - 4], key[n - 3], key[n - 2], key[n - 1]]) as u128;
                lo | hi << (8 * (n - 4))
            }
            8..=15 => {
                let lo = u64::from_le_bytes(key[..8].try_into().ok()?) as u128;
                let hi = u64::from_le_bytes(key[n - 8..].try_into().ok()?) as u128;
                lo | hi << (8 * (n - 8))
            }
            _ => return None,
        };
        Some(bytes | (n as u128) << 120)
    }

    #[inline]
    fn get(&self, key: &[u8]) -> Option<&V> {
        match Self::pack(key) {
            Some(k) => self.short.get(&k),
            None => self.long.get(key),
        }
    }

    fn insert(&mut self, key: &[u8], value: V) {
        match Self::pack(key) {
            Some(k) => self.short.insert(k, value),
            None => self.long.insert(key.to_vec(), value),
        };
    }

    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn clear(&mut self) {
        self.short.clear();
        self.long.clear();
    }
}

/// Ids of pieces that went through BPE, for the length of one encode call: words that are not
/// tokens themselves recur (names, inflections), and a lookup is much cheaper than BPE.
#[derive(Default)]
struct PieceCache {
    map: BytesMap<(u32, u32)>,
    ids: Vec<u32>,
}

impl PieceCache {
    /// Entries kept before the cache starts over (bounds its memory on huge inputs).
    const LIMIT: usize = 1 << 16;

    #[inline]
    fn get(&self, piece: &[u8]) -> Option<&[u32]> {
        self.map
            .get(piece)
            .map(|&(s, n)| &self.ids[s as usize..(s + n) as usize])
    }

    #[inline]
    fn insert(&mut self, piece: &[u8], ids: &[u32]) {
        if self.map.len() >= Self::LIMIT {
            self.map.clear();
            self.ids.clear();
        }
        self.map
            .insert(piece, (self.ids.len() as u32, ids.len() as u32));
        self.ids.extend_from_slice(ids);
    }
}

/// The ids of a run of consecutive texts of a batch, the first being text `start`, one after
/// another; text `start + i` ends at `ends[i]`.
pub struct Group {
    start: usize,
    ids: Vec<u32>,
    ends: Vec<usize>,
}

/// Bytes per chunk of a file being encoded: small enough that a 20 MB file still spreads
/// evenly over the threads (each worker's `PieceCache` carries over from chunk to chunk).
const FILE_BLOCK: usize = 1 << 20;

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends ids as little-endian integers of `width` bytes (2: the caller knows they fit).
pub fn ids_to_le_bytes(ids: &[u32], width: usize, out: &mut Vec<u8>) {
    out.reserve(ids.len() * width);
    if width == 2 {
        out.extend(ids.iter().flat_map(|&i| (i as u16).to_le_bytes()));
    } else {
        out.extend(ids.iter().flat_map(|&i| i.to_le_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_equals_the_bytes_and_length() {
        let data: Vec<u8> = (1..=20u8).map(|b| b.wrapping_mul(37)).collect();
        for n in 0..=15 {
            let mut want = [0u8; 16];
            want[..n].copy_from_slice(&data[..n]);
            want[15] = n as u8;
            let got = BytesMap::<()>::pack(&data[..n]);
            assert_eq!(got, Some(u128::from_le_bytes(want)), "length {n}");
        }
        assert_eq!(BytesMap::<()>::pack(&data[..16]), None);
    }

    fn toy() -> Encoder {
        let mut vocab: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (b as u32, vec![b])).collect();
        let merges: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"a".to_vec(), b"b".to_vec()),
            (b"ab".to_vec(), b"c".to_vec()),
            (b"a".to_vec(), b"a".to_vec()),
        ];
        for (i, (a, b)) in merges.iter().enumerate() {
            vocab.push((256 + i as u32, [&a[..], &b[..]].concat()));
        }
        Encoder::from_merges(&vocab, &merges, &[("<|e|>".into(), 259)], Pattern::Gpt2).unwrap()
    }

    #[test]
    fn merges_by_rank() {
        let e = toy();
        assert_eq!(e.encode("abc"), vec![257]);
        assert_eq!(e.encode("aaa"), vec![258, 97]);
        assert_eq!(e.encode("abab"), vec![256, 256]);
        assert_eq!(e.encode("x<|e|>abc"), vec![120, 259, 257]);
        assert_eq!(e.encode_ordinary("<|e|>").len(), 5);
    }

    #[test]
    fn small_and_large_agree() {
        let e = toy();
        for n in [1usize, 2, 3, 63, 64, 65, 200, 1001] {
            let piece: Vec<u8> = b"abcaab".iter().cycle().take(n).copied().collect();
            let (mut s, mut l) = (Vec::new(), Vec::new());
            if n <= SMALL {
                e.bpe_small(&piece, &mut s);
            } else {
                s = e.bpe_reference(&piece);
            }
            e.bpe_large(&piece, &mut l);
            assert_eq!(s, l, "n={n}");
        }
    }

    impl Encoder {
        /// Plain quadratic loop over a Vec, for checking the fast ones.
        fn bpe_reference(&self, piece: &[u8]) -> Vec<u32> {
            let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
            loop {
                let best = (0..ids.len().saturating_sub(1))
                    .filter_map(|i| self.rank(ids[i], ids[i + 1]).map(|(r, m)| (r, i, m)))
                    .min();
                let Some((_, i, m)) = best else { break };
                ids[i] = m;
                ids.remove(i + 1);
            }
            ids
        }
    }

    #[test]
    fn decode_round_trip() {
        let e = toy();
        let text = "abc aab <|e|> zz";
        assert_eq!(e.decode_bytes(&e.encode(text)).unwrap(), text.as_bytes());
        assert_eq!(e.decode_bytes(&[1_000_000]), Err(1_000_000));
    }

    #[test]
    fn batch_in_input_order_on_any_thread_count() {
        let e = toy();
        let texts: Vec<String> = (0..5000)
            .map(|i| "ab c aab<|e|>".repeat(i % 7) + &"x".repeat(i % 13))
            .collect();
        let want: Vec<Vec<u32>> = texts.iter().map(|t| e.encode(t)).collect();
        for threads in [1, 2, 3, 8] {
            assert_eq!(
                e.encode_batch(&texts, threads, true),
                want,
                "threads={threads}"
            );
        }
        let ordinary: Vec<Vec<u32>> = texts.iter().map(|t| e.encode_ordinary(t)).collect();
        assert_eq!(e.encode_batch(&texts, 2, false), ordinary);
        assert!(e.encode_batch::<&str>(&[], 2, true).is_empty());
    }

    #[test]
    fn batch_sink_error_stops_and_is_returned() {
        let e = toy();
        let texts = vec!["abc"; 10_000];
        let mut seen = 0;
        let r = e.encode_batch_in_order(
            &texts,
            2,
            true,
            |take| take(),
            |ids| {
                assert_eq!(ids, [257]);
                seen += 1;
                if seen == 1234 {
                    Err("full")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!((r, seen), (Err("full"), 1234));
    }
}
