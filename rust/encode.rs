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

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashMap;

use crate::input::{chunk_text, ChunkReader, InputError, Interrupted, Panicked};
use crate::packed;
use crate::pipeline::{self, Done, Halt, Stages};
use crate::pretok::{is_safe_cut, Pattern};
use crate::shared_table::SharedTable;
use crate::specials::{SpecialError, SpecialSplitter};

/// Why an encoder could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A merge part is not a token: (merge index, the part).
    MergePartMissing(usize, Vec<u8>),
    /// A merge result is not a token: (merge index, the bytes).
    MergeResultMissing(usize, Vec<u8>),
    /// Byte value with no single-byte token.
    ByteMissing(u8),
    /// A token with no bytes (its id): BPE could never produce it, and no text is empty.
    EmptyToken(u32),
    /// Two tokens (or special tokens) given the same id.
    DuplicateId(u32),
    /// A special token given the id of a vocabulary token: (special token, id).
    SpecialIdTaken(String, u32),
    /// The special tokens were refused.
    Specials(SpecialError),
    /// More merges than ranks fit in u32.
    TooManyMerges(usize),
}

type Pair = (u32, u32);

/// Pieces at most this long (in bytes) use the quadratic loop; longer ones the heap.
const SMALL: usize = 64;

/// How many pieces `encode_segment` finds before it looks them up: the loop that finds pieces
/// does nothing else, so its state stays in registers. (Asking for each piece's cache slot
/// when it was found, a batch ahead, cost more than it saved: new pieces' BPE tables were
/// pushed out of the core's cache. A 20 MB GPT-2 text from a tokenizer warmed on other text
/// took 73.5 ms against 68.5 on one thread, and its `encode_file` 48.5 against 44 on two;
/// with every piece cached it made no difference.)
const BATCH: usize = 256;
/// How many lookups ahead the slot is asked for, into the first-level cache: far enough for a
/// slot that comes from memory rather than another cache (with 16, every piece cached, 20 MB
/// of GPT-2 took about 1.15x as long; 64 measured 1.03x slower than 48).
const AHEAD: usize = 48;

/// A piece waiting in `encode_segment`: it starts at `window[at]` and ends where the next one
/// starts; its packed key (`Queued::LONG` for a piece too long to pack) and the key's hash, in
/// 32 bytes.
#[derive(Clone, Copy, Default)]
struct Queued {
    key: u128,
    hash: u64,
    at: usize,
}

impl Queued {
    /// No packed key is this (a packed key's top byte is its length, at most 15).
    const LONG: u128 = u128::MAX;
}

/// Token bytes by id. Ids are any u32; a vector holds the ids below twice the number of
/// tokens (so every id of a vocabulary numbered 0..n) and a map the others, so a sparse id far
/// above the rest (10^9, say) costs one map entry, not a table of that size.
struct TokenTable {
    /// Empty for ids without a token (no token is empty).
    dense: Vec<Vec<u8>>,
    sparse: FxHashMap<u32, Vec<u8>>,
    count: usize,
    max_id: Option<u32>,
}

impl TokenTable {
    /// From (id, bytes) pairs, refusing empty tokens and repeated ids.
    fn new(tokens_by_id: &[(u32, &[u8])]) -> Result<Self, BuildError> {
        let mut table = TokenTable {
            dense: Vec::new(),
            sparse: FxHashMap::default(),
            count: 0,
            max_id: None,
        };
        let max_id = tokens_by_id.iter().map(|(i, _)| *i as usize).max();
        let dense_len = max_id.map_or(0, |m| (m + 1).min(Self::dense_bound(tokens_by_id.len())));
        table.dense.resize(dense_len, Vec::new());
        for &(id, t) in tokens_by_id {
            table.insert(id, t)?;
        }
        Ok(table)
    }

    /// How many ids the vector may cover for `count` tokens.
    fn dense_bound(count: usize) -> usize {
        count.saturating_mul(2).saturating_add(256)
    }

    fn insert(&mut self, id: u32, bytes: &[u8]) -> Result<(), BuildError> {
        if bytes.is_empty() {
            return Err(BuildError::EmptyToken(id));
        }
        if self.get(id).is_some() {
            return Err(BuildError::DuplicateId(id));
        }
        self.count += 1;
        let i = id as usize;
        if i >= self.dense.len() && i < Self::dense_bound(self.count) {
            self.dense.resize(i + 1, Vec::new()); // special tokens just after the vocabulary
        }
        match self.dense.get_mut(i) {
            Some(slot) => *slot = bytes.to_vec(),
            None => {
                self.sparse.insert(id, bytes.to_vec());
            }
        }
        self.max_id = self.max_id.max(Some(id));
        Ok(())
    }

    #[inline]
    fn get(&self, id: u32) -> Option<&[u8]> {
        match self.dense.get(id as usize) {
            Some(t) if !t.is_empty() => Some(t),
            Some(_) => None,
            None => self.sparse.get(&id).map(|t| &t[..]),
        }
    }
}

/// The pairs of `pairs` that BPE can ever merge, the others left out (a smaller table, whose
/// lookups more often find it in the CPU's caches): of each token, only the pair that BPE on
/// the token's own bytes merges last, and none where that BPE does not end in the token.
/// `from_ranks` needs it: it enters every way of cutting a token in two (cl100k: 233,000
/// pairs for 100,000 tokens); a merge list has one pair per merge already.
///
/// Why no other pair ever merges: a part that BPE forms in a piece is, at every step, what BPE
/// on the part's own bytes gives. No merge inside its span has involved bytes outside it (parts
/// only grow), so the merges inside the span came in the order of their ranks (leftmost first
/// among equals) among the span's own pairs: the merges BPE on the span alone makes, in the same
/// order. So a pair (a, b) that merges into token t is the last merge of BPE on t's bytes. A
/// pair that never merges is never the lowest-ranked when it is looked up, so leaving it out
/// changes no choice: every piece encodes to the same ids.
fn mergeable_pairs(
    pairs: &FxHashMap<Pair, (u32, u32)>,
    tokens: &TokenTable,
    byte_ids: &[u32; 256],
) -> FxHashMap<Pair, (u32, u32)> {
    let mut last_merge: FxHashMap<u32, Option<Pair>> = FxHashMap::default();
    let mut kept = FxHashMap::default();
    for (&pair, &(rank, merged)) in pairs {
        let last = *last_merge.entry(merged).or_insert_with(|| {
            let bytes = tokens.get(merged).unwrap_or_default();
            last_bpe_merge(pairs, byte_ids, bytes)
        });
        if last == Some(pair) {
            kept.insert(pair, (rank, merged));
        }
    }
    kept
}

/// BPE on `bytes` with `pairs` (the plain quadratic loop): the pair merged last, if the bytes
/// end as one part.
fn last_bpe_merge(
    pairs: &FxHashMap<Pair, (u32, u32)>,
    byte_ids: &[u32; 256],
    bytes: &[u8],
) -> Option<Pair> {
    let mut ids: Vec<u32> = bytes.iter().map(|&b| byte_ids[usize::from(b)]).collect();
    let mut last = None;
    while ids.len() > 1 {
        let best = ids
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| {
                let pair = (w[0], w[1]);
                pairs
                    .get(&pair)
                    .map(|&(rank, merged)| (rank, i, pair, merged))
            })
            .min();
        let (_, i, pair, merged) = best?;
        ids.splice(i..i + 2, [merged]);
        last = Some(pair);
    }
    last
}

/// The key (`pair_keys`) of every pair of ids below `SmallPairs::IDS` in a plain array: the
/// pairs BPE looks up most (the bytes of a new word, and the first merges, which make the
/// commonest tokens), found by indexing instead of hashing. In a hash map those lookups land
/// anywhere in the table; here the few rows that letters and their first merges use stay in
/// the core's cache while the piece cache streams past. Measured on 20 MB of English, one
/// thread, from a new tokenizer warmed on other text: cl100k 84 ms against 87, GPT-2 77.5
/// against 78.5; cl100k's first 20 MB 106.5 against 117.5 (medians of 6-8 alternating
/// processes, with 8-byte cells of rank and merged id). 1 MB of memory in 4-byte keys; 1,024 ids
/// measured no better, 256 ids slower (cl100k, 1.05x the time).
struct SmallPairs {
    /// Row `a`, column `b`: the pair's key (`Encoder::pairs`), `NO_MERGE` where it does not
    /// merge.
    cells: Vec<u32>,
}

impl SmallPairs {
    const IDS: u32 = 512;

    fn new(pairs: &FxHashMap<Pair, u32>) -> Self {
        let mut cells = vec![NO_MERGE; (Self::IDS * Self::IDS) as usize];
        for (&(a, b), &key) in pairs {
            if a < Self::IDS && b < Self::IDS {
                cells[(a * Self::IDS + b) as usize] = key;
            }
        }
        SmallPairs { cells }
    }

    /// Some(the pair's key, or `NO_MERGE`) for a pair of small ids; None for others.
    #[inline(always)]
    fn get(&self, a: u32, b: u32) -> Option<u32> {
        if a >= Self::IDS || b >= Self::IDS {
            return None;
        }
        self.cells.get((a * Self::IDS + b) as usize).copied()
    }
}

/// The key of a pair that does not merge: above every pair's (`pair_keys`).
const NO_MERGE: u32 = u32::MAX;

/// What BPE compares to pick the next merge, one `u32` a pair, lower first (the lowest rank,
/// leftmost among equals): where merged ids rise with rank (GPT-2's merges, whose results
/// are numbered in merge order; tiktoken's ranks, where the rank is the id) the merged id
/// itself, so that the key is also the merge's result; otherwise the place of the pair's
/// rank among the distinct ranks, with the merged id of each place in the vector returned.
/// Four bytes a pair instead of eight (rank and result) halve the array of small pairs and
/// shrink the map, which BPE reads while the piece cache pushes them out of the core's cache
/// (GPT-2, 20 MB after 20 MB of other text, one thread: 0.95x the time). Every key is below
/// `NO_MERGE`, even for a rank or id of `u32::MAX`.
fn pair_keys(pairs: FxHashMap<Pair, (u32, u32)>) -> (FxHashMap<Pair, u32>, Option<Vec<u32>>) {
    let mut by_rank: Vec<(u32, u32)> = pairs.values().copied().collect();
    by_rank.sort_unstable();
    by_rank.dedup();
    let rising = by_rank
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        && by_rank.last().is_none_or(|&(_, merged)| merged < NO_MERGE);
    if rising {
        let keys = pairs
            .into_iter()
            .map(|(pair, (_, merged))| (pair, merged))
            .collect();
        return (keys, None);
    }
    // A rank has one result (`from_merges` gives each merge its own rank; in `from_ranks` the
    // rank is the result's), so the first of each rank's entries is its only one.
    by_rank.dedup_by_key(|&mut (rank, _)| rank);
    let place: FxHashMap<u32, u32> = by_rank
        .iter()
        .zip(0u32..)
        .map(|(&(rank, _), place)| (rank, place))
        .collect();
    let keys = pairs
        .into_iter()
        .map(|(pair, (rank, _))| (pair, place.get(&rank).copied().unwrap_or(NO_MERGE)))
        .collect();
    (
        keys,
        Some(by_rank.into_iter().map(|(_, merged)| merged).collect()),
    )
}

pub struct Encoder {
    tokens: TokenTable,
    /// The id of each single byte.
    byte_ids: [u32; 256],
    /// (left id, right id) -> the pair's key (`pair_keys`).
    pairs: FxHashMap<Pair, u32>,
    /// The same for the pairs of small ids, looked up most.
    small_pairs: SmallPairs,
    /// The merged id of each key where keys are not merged ids themselves (`pair_keys`).
    merged_ids: Option<Vec<u32>>,
    /// Token bytes -> id, for pieces that encode to exactly one token.
    whole: WholeTokens,
    specials: SpecialSplitter,
    special_ids: Vec<u32>,
    pub pattern: Pattern,
    /// Names this encoder's pieces in a thread's `PieceCache` (`with_thread_cache`); no two
    /// encoders, nor one before and after `ignore_merges`, share it.
    cache_owner: u64,
    /// The piece caches of the batch and file paths' workers once a call is over, for the next
    /// call's workers (`lend_cache`): a tokenizer that encodes file after file, or batch after
    /// batch, keeps the pieces it has seen, as `encode` does with its thread's cache.
    spare_caches: Mutex<Vec<PieceCache>>,
    /// The pieces the workers of batch and file calls share (`lend_cache`), made at the first
    /// such call; None inside when the memory could not be had.
    shared: OnceLock<Option<Arc<SharedTable>>>,
}

/// Where `encode_segment` hands its ids after each window of text (then clearing them), if
/// anywhere; None keeps them all in the output vector.
type Drain<'a> = Option<&'a mut dyn FnMut(&[u32])>;

/// The source of `Encoder::cache_owner`.
static NEXT_CACHE_OWNER: AtomicU64 = AtomicU64::new(1);

fn new_cache_owner() -> u64 {
    NEXT_CACHE_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// A thread's piece cache and the encoder whose pieces it holds.
#[derive(Default)]
struct ThreadCache {
    owner: u64,
    cache: PieceCache,
}

thread_local! {
    /// Kept from one `encode` call to the next on the same thread: text encoded call by call
    /// (documents, lines, chat turns) finds the words earlier calls put through BPE.
    static THREAD_CACHE: RefCell<ThreadCache> = RefCell::default();
}

impl Encoder {
    /// The token table and bytes -> id (the lowest id where two ids share bytes).
    fn base(
        tokens_by_id: &[(u32, &[u8])],
    ) -> Result<(TokenTable, FxHashMap<Vec<u8>, u32>), BuildError> {
        let tokens = TokenTable::new(tokens_by_id)?;
        let mut sorted: Vec<&(u32, &[u8])> = tokens_by_id.iter().collect();
        sorted.sort_by_key(|(i, _)| *i);
        let mut ids: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        for (i, t) in sorted {
            ids.entry(t.to_vec()).or_insert(*i);
        }
        Ok((tokens, ids))
    }

    fn byte_ids(ids: &FxHashMap<Vec<u8>, u32>) -> Result<[u32; 256], BuildError> {
        let mut byte_ids = [0u32; 256];
        for (b, slot) in (0..=255u8).zip(byte_ids.iter_mut()) {
            *slot = *ids.get(&[b][..]).ok_or(BuildError::ByteMissing(b))?;
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
        let by_id: Vec<(u32, &[u8])> = vocab.iter().map(|(i, t)| (*i, &t[..])).collect();
        let (tokens, ids) = Self::base(&by_id)?;
        let byte_ids = Self::byte_ids(&ids)?;
        let mut pairs: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
        for (n, (a, b)) in merges.iter().enumerate() {
            let rank = u32::try_from(n).map_err(|_| BuildError::TooManyMerges(merges.len()))?;
            let ia = *ids
                .get(a)
                .ok_or_else(|| BuildError::MergePartMissing(n, a.clone()))?;
            let ib = *ids
                .get(b)
                .ok_or_else(|| BuildError::MergePartMissing(n, b.clone()))?;
            let ab = [&a[..], &b[..]].concat();
            let iab = *ids.get(&ab).ok_or(BuildError::MergeResultMissing(n, ab))?;
            // A pair listed twice keeps its first (highest-priority) rank.
            pairs.entry((ia, ib)).or_insert((rank, iab));
        }
        let (pairs, merged_ids) = pair_keys(pairs);
        let mut enc = Encoder {
            tokens,
            byte_ids,
            small_pairs: SmallPairs::new(&pairs),
            pairs,
            merged_ids,
            whole: WholeTokens::default(),
            specials: SpecialSplitter::none(),
            special_ids: Vec::new(),
            pattern,
            cache_owner: new_cache_owner(),
            spare_caches: Mutex::default(),
            shared: OnceLock::new(),
        };
        // Whole-piece lookup only for tokens that BPE rebuilds as themselves.
        let mut whole = WholeTokens::default();
        let mut out = Vec::new();
        for (bytes, &id) in &ids {
            out.clear();
            enc.encode_piece(bytes, &mut out);
            if out.len() == 1 && out[0] == id {
                whole.insert(bytes, id);
            }
        }
        enc.whole = whole;
        enc.set_specials(specials)?;
        Ok(enc)
    }

    /// Hugging Face's `ignore_merges`: a piece whose bytes are one of `vocab`'s tokens (the
    /// vocabulary given to `from_merges`) becomes that token's id without BPE; other pieces
    /// merge as before. Where two ids share bytes the lowest wins, as in `base`.
    pub fn ignore_merges(&mut self, vocab: &[(u32, Vec<u8>)]) {
        let mut by_id: Vec<&(u32, Vec<u8>)> = vocab.iter().collect();
        by_id.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (id, bytes) in by_id {
            if bytes.len() > 1 {
                self.whole.insert(bytes, *id);
            }
        }
        self.cache_owner = new_cache_owner();
        if let Ok(spare) = self.spare_caches.get_mut() {
            spare.clear();
        }
        self.shared = OnceLock::new();
    }

    /// From tiktoken-style ranks (token bytes -> rank, the rank also being the id).
    pub fn from_ranks(
        ranks: &[(Vec<u8>, u32)],
        specials: &[(String, u32)],
        pattern: Pattern,
    ) -> Result<Self, BuildError> {
        let by_id: Vec<(u32, &[u8])> = ranks.iter().map(|(t, r)| (*r, &t[..])).collect();
        let (tokens, ids) = Self::base(&by_id)?;
        let byte_ids = Self::byte_ids(&ids)?;
        let mut pairs: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
        for (t, r) in ranks {
            let Some(&merged) = ids.get(t) else { continue };
            for k in 1..t.len() {
                if let (Some(&ia), Some(&ib)) = (ids.get(&t[..k]), ids.get(&t[k..])) {
                    pairs.insert((ia, ib), (*r, merged));
                }
            }
        }
        let pairs = mergeable_pairs(&pairs, &tokens, &byte_ids);
        // tiktoken looks every piece up whole first.
        let mut whole = WholeTokens::default();
        for (t, &id) in &ids {
            whole.insert(t, id);
        }
        let (pairs, merged_ids) = pair_keys(pairs);
        let mut enc = Encoder {
            tokens,
            byte_ids,
            small_pairs: SmallPairs::new(&pairs),
            pairs,
            merged_ids,
            whole,
            specials: SpecialSplitter::none(),
            special_ids: Vec::new(),
            pattern,
            cache_owner: new_cache_owner(),
            spare_caches: Mutex::default(),
            shared: OnceLock::new(),
        };
        enc.set_specials(specials)?;
        Ok(enc)
    }

    /// Special tokens (string -> id), non-empty. A special token may take the id of a vocabulary
    /// token with the same bytes (the token keeps its place in BPE), and special tokens may share
    /// an id (tiktoken's o200k_harmony does; the id decodes as the first of them); any other id
    /// already in the vocabulary is refused.
    fn set_specials(&mut self, specials: &[(String, u32)]) -> Result<(), BuildError> {
        for (s, id) in specials {
            match self.tokens.get(*id) {
                Some(t) if t == s.as_bytes() || self.special_ids.contains(id) => {}
                Some(_) => return Err(BuildError::SpecialIdTaken(s.clone(), *id)),
                None if !s.is_empty() => self.tokens.insert(*id, s.as_bytes())?,
                None => {}
            }
            self.special_ids.push(*id);
        }
        let names: Vec<&str> = specials.iter().map(|(s, _)| s.as_str()).collect();
        self.specials = SpecialSplitter::new(&names).map_err(BuildError::Specials)?;
        Ok(())
    }

    /// The special-token matcher (custom-regex encoding, `regex_encode.rs`).
    pub(crate) fn special_splitter(&self) -> &SpecialSplitter {
        &self.specials
    }

    /// The id of each special token, in the matcher's order.
    pub(crate) fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// One piece found by a custom regex (`regex_encode.rs`), encoded as `encode_segment`
    /// encodes each piece.
    #[inline]
    pub(crate) fn encode_found_piece(
        &self,
        piece: &[u8],
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        budget: &mut Budget,
    ) -> Result<(), Interrupted> {
        if let [b] = piece {
            out.push(self.byte_ids[usize::from(*b)]);
            Ok(())
        } else {
            let key = packed::pack(piece);
            let hash = key.map_or(0, packed::hash);
            self.encode_cached_piece(piece, key, hash, out, cache, budget)
        }
    }

    /// One piece of two bytes or more: the cache, else the whole-token table, else BPE; the
    /// result goes into the cache, so a piece seen before costs one lookup. A piece whose BPE
    /// was stopped midway is not kept. `hash` is `packed::hash(key)` (anything for None).
    #[inline(always)]
    fn encode_cached_piece(
        &self,
        piece: &[u8],
        key: Option<u128>,
        hash: u64,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        budget: &mut Budget,
    ) -> Result<(), Interrupted> {
        if cache.extend_hashed(key, hash, piece, out) {
            return Ok(());
        }
        self.encode_new_piece(piece, key, hash, out, cache, budget)
    }

    /// `encode_cached_piece` for a piece the cache does not have.
    #[cold]
    #[inline(never)]
    fn encode_new_piece(
        &self,
        piece: &[u8],
        key: Option<u128>,
        hash: u64,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        budget: &mut Budget,
    ) -> Result<(), Interrupted> {
        if let Some(&id) = self.whole.get_keyed(key, hash, piece) {
            out.push(id);
            cache.insert(key, piece, &[id]);
            return Ok(());
        }
        let at = out.len();
        self.bpe(piece, out, budget)?;
        cache.insert(key, piece, out.get(at..).unwrap_or_default());
        Ok(())
    }

    /// The largest id (None for an empty vocabulary, which `from_*` never build).
    pub fn max_id(&self) -> Option<u32> {
        self.tokens.max_id
    }

    /// Ids below this are kept in a vector (the ids of a vocabulary numbered from 0); larger
    /// ones are sparse.
    pub fn dense_ids(&self) -> usize {
        self.tokens.dense.len()
    }

    /// Whether every id fits in `width` bytes (2 or 4).
    pub fn ids_fit(&self, width: usize) -> bool {
        width >= 4
            || self
                .max_id()
                .is_none_or(|m| u64::from(m) < 1 << (8 * width))
    }

    /// The bytes of token `id`, if it exists.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id)
    }

    /// BPE on one piece, appending ids to `out` (an empty piece adds nothing).
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&b) = piece.first().filter(|_| piece.len() == 1) {
            out.push(self.byte_ids[usize::from(b)]);
            return;
        }
        if let Some(&id) = self.whole.get(piece) {
            out.push(id);
            return;
        }
        // Never stops: a budget without a poll is never exhausted.
        let _ = self.bpe(piece, out, &mut Budget::never());
    }

    /// The key of the pair (a, b) (`pair_keys`), `NO_MERGE` if it does not merge.
    #[inline(always)]
    fn key(&self, a: u32, b: u32) -> u32 {
        match self.small_pairs.get(a, b) {
            Some(key) => key,
            None => self.pairs.get(&(a, b)).copied().unwrap_or(NO_MERGE),
        }
    }

    /// The id a merge of key `key` makes.
    #[inline(always)]
    fn merged(&self, key: u32) -> u32 {
        match &self.merged_ids {
            None => key,
            Some(ids) => ids.get(key as usize).copied().unwrap_or(NO_MERGE),
        }
    }

    /// The merge loop itself (no whole-piece lookup); an empty piece adds nothing.
    fn bpe(
        &self,
        piece: &[u8],
        out: &mut Vec<u32>,
        budget: &mut Budget,
    ) -> Result<(), Interrupted> {
        match piece.len() {
            0 => Ok(()),
            1..=SMALL => {
                self.bpe_small(piece, out);
                Ok(())
            }
            _ => self.bpe_large(piece, out, budget),
        }
    }

    /// Quadratic in the worst case but branch-light: parts and their right-pair keys in arrays.
    /// Sized by the piece: a merge moves the `N` entries after it, and the arrays are set up
    /// whole, so a 17-byte word in arrays for 64 bytes paid for moving 64 entries per merge.
    fn bpe_small(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0..=16 => self.bpe_small_n::<16, 32>(piece, out),
            17..=32 => self.bpe_small_n::<32, 64>(piece, out),
            _ => self.bpe_small_n::<SMALL, { 2 * SMALL }>(piece, out),
        }
    }

    /// `bpe_small` for pieces of 1 to `N` bytes; `W` is `2 * N`, so that removing a part moves
    /// a fixed `N` entries (a few vector moves) instead of calling `memmove` for the rest.
    #[inline(always)]
    fn bpe_small_n<const N: usize, const W: usize>(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len().min(N);
        let mut ids = [0u32; W];
        // keys[i]: the key of the pair (ids[i], ids[i+1]), NO_MERGE if none.
        let mut keys = [NO_MERGE; W];
        for (id, &b) in ids.iter_mut().zip(&piece[..n]) {
            *id = self.byte_ids[usize::from(b)];
        }
        let mut len = n;
        for i in 0..len - 1 {
            keys[i] = self.key(ids[i], ids[i + 1]);
        }
        while len > 1 {
            let mut best = NO_MERGE;
            let mut at = 0;
            for (i, &k) in keys[..len - 1].iter().enumerate() {
                if k < best {
                    best = k;
                    at = i;
                }
            }
            if best == NO_MERGE {
                break;
            }
            ids[at] = self.merged(best);
            // Remove ids[at + 1]: the N entries after it move one place left (past `len`
            // they are unused).
            let (ids_tail, keys_tail) = (&mut ids[at + 1..], &mut keys[at + 1..]);
            let ids_from: [u32; N] = ids_tail[1..=N].try_into().unwrap_or([0; N]);
            let keys_from: [u32; N] = keys_tail[1..=N].try_into().unwrap_or([NO_MERGE; N]);
            ids_tail[..N].copy_from_slice(&ids_from);
            keys_tail[..N].copy_from_slice(&keys_from);
            len -= 1;
            keys[at] = if at + 1 < len {
                self.key(ids[at], ids[at + 1])
            } else {
                NO_MERGE
            };
            if at > 0 {
                keys[at - 1] = self.key(ids[at - 1], ids[at]);
            }
        }
        out.extend_from_slice(&ids[..len]);
    }

    /// O(n log n): a doubly linked list of parts and a min-heap of (key, position) with stale
    /// entries skipped. The budget is charged per merge, so a huge piece (pattern None) can be
    /// stopped.
    fn bpe_large(
        &self,
        piece: &[u8],
        out: &mut Vec<u32>,
        budget: &mut Budget,
    ) -> Result<(), Interrupted> {
        let n = piece.len();
        let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            budget.spend(1)?;
            let key = self.key(ids[i], ids[i + 1]);
            if key != NO_MERGE {
                heap.push(Reverse((key, i, ids[i], ids[i + 1])));
            }
        }
        // A pair's key follows from its two ids, so an entry whose parts are unchanged is
        // current.
        while let Some(Reverse((key, i, a, b))) = heap.pop() {
            budget.spend(MERGE_COST)?;
            // Stale unless both parts are still there, unchanged, and adjacent.
            if !alive[i] || ids[i] != a {
                continue;
            }
            let j = next[i];
            if j >= n || ids[j] != b {
                continue;
            }
            let merged = self.merged(key);
            ids[i] = merged;
            alive[j] = false;
            let k = next[j];
            next[i] = k;
            if k < n {
                prev[k] = i;
                let key = self.key(merged, ids[k]);
                if key != NO_MERGE {
                    heap.push(Reverse((key, i, merged, ids[k])));
                }
            }
            let p = prev[i];
            if p < n {
                let key = self.key(ids[p], merged);
                if key != NO_MERGE {
                    heap.push(Reverse((key, p, ids[p], merged)));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(ids[i]);
            i = next[i];
        }
        Ok(())
    }

    /// Encodes the pieces of a stretch of text, remembering the pieces that needed BPE. The
    /// stretch is encoded in windows of about `POLL_BYTES` cut where cutting changes no piece,
    /// each charged to the budget, so the loop over pieces itself carries no check.
    fn encode_segment(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        budget: &mut Budget,
        drain: &mut Drain,
    ) -> Result<(), Interrupted> {
        // The batch lives in the cache from call to call: a short text then does not clear a
        // whole batch (that took a sixth of a 44-byte `encode`).
        let mut batch = cache
            .batch
            .take()
            .unwrap_or_else(|| Box::new([Queued::default(); BATCH + AHEAD]));
        let mut windows = || -> Result<(), Interrupted> {
            let mut start = 0;
            while start < text.len() {
                let end = self.window_end(text, start);
                budget.spend(end - start)?;
                let window = text.get(start..end).unwrap_or_default();
                let bytes = window.as_bytes();
                // The pieces are found a batch at a time, then looked up (`encode_pieces`); the
                // entries past a full batch are for `encode_pieces`' look ahead. The pieces tile
                // the window (every pattern splits all of its text), so each ends where the next
                // starts.
                let mut n = 0;
                self.pattern.for_each_piece(window, |p| {
                    let piece = p.as_bytes();
                    // The piece lies in `window`: pack it from there, without branching on its
                    // length.
                    let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
                    let (key, hash) = match packed::pack_within(bytes, at, piece.len()) {
                        Some(k) => (k, packed::hash(k)),
                        None => (Queued::LONG, 0),
                    };
                    if let Some(q) = batch.get_mut(n) {
                        *q = Queued { key, hash, at };
                    }
                    n += 1;
                    if n == BATCH {
                        self.encode_pieces(bytes, &batch, n, at + piece.len(), out, cache, budget);
                        n = 0;
                    }
                });
                self.encode_pieces(bytes, &batch, n, bytes.len(), out, cache, budget);
                budget.check()?;
                if let Some(d) = drain {
                    d(out);
                    out.clear();
                }
                start = end;
            }
            Ok(())
        };
        let done = windows();
        cache.batch = Some(batch);
        done
    }

    /// The first `n` pieces of `batch`, found by `encode_segment` in `window`; the last one ends
    /// at `end`.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn encode_pieces(
        &self,
        window: &[u8],
        batch: &[Queued; BATCH + AHEAD],
        n: usize,
        end: usize,
        out: &mut Vec<u32>,
        cache: &mut PieceCache,
        budget: &mut Budget,
    ) {
        let n = n.min(BATCH);
        for q in &batch[..n.min(AHEAD)] {
            cache.prefetch(q.hash);
        }
        // Room for three ids per piece, so that a hit writes its ids through a pointer and a
        // length held in registers (`Vec::push` reloads and checks both every time); only the
        // pieces that miss their home slot go through `out` itself.
        out.reserve(INLINE as usize * n);
        let (mut len, mut dst) = (out.len(), out.as_mut_ptr());
        for i in 0..n {
            // Past the batch's `n` pieces the entries are earlier batches' (or empty): asking
            // for their slots costs nothing wrong.
            cache.prefetch(batch[i + AHEAD].hash);
            let q = batch[i];
            if let Some(c) = cache.home_hit(q.key, q.hash) {
                // SAFETY: `out` has room for three ids per piece left from `len` on (reserved
                // above, and again after every piece that missed), and `len` grows by one to
                // three (`home_hit` gives only those counts); an id written past it is dropped.
                unsafe {
                    dst.add(len).write(c.a);
                    dst.add(len + 1).write(c.b);
                    dst.add(len + 2).write(c.c);
                }
                len += c.n.min(INLINE) as usize;
                continue;
            }
            // A piece not in its home slot is most often new: its word of the whole-token
            // filter is asked for while the rest of the lookup runs.
            self.whole.prefetch(q.hash);
            // SAFETY: the ids below `len` were all written, and `len` is within the capacity.
            unsafe { out.set_len(len) };
            let stop = if i + 1 < n { batch[i + 1].at } else { end };
            // Single bytes too go through the cache (where the few there are stay in the
            // core's own cache): one path for every piece, with no branch on its length.
            if let Some(piece) = window.get(q.at..stop) {
                let key = Some(q.key).filter(|&k| k != Queued::LONG);
                // Stopped midway, the budget says so to `encode_segment`.
                let _ = self.encode_cached_piece(piece, key, q.hash, out, cache, budget);
            }
            out.reserve(INLINE as usize * (n - i));
            (len, dst) = (out.len(), out.as_mut_ptr());
        }
        // SAFETY: as above.
        unsafe { out.set_len(len) };
    }

    /// Where the window of `text` (a stretch without special tokens) that starts at `start`
    /// ends: a safe cut before `start + POLL_BYTES` (`pretok::is_safe_cut`), else a boundary
    /// found by splitting (`Pattern::last_split_cut`), else the end (one long piece, whose
    /// BPE charges the budget itself).
    fn window_end(&self, text: &str, start: usize) -> usize {
        let s = text.as_bytes();
        let limit = start + POLL_BYTES;
        if limit >= s.len() || self.pattern == Pattern::Whole {
            return s.len();
        }
        if let Some(cut) = (start + 1..=limit).rev().find(|&i| is_safe_cut(s, i)) {
            return cut;
        }
        text.get(start..)
            .and_then(|rest| self.pattern.last_split_cut(rest, POLL_BYTES))
            .map_or(s.len(), |cut| start + cut)
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
        budget: &mut Budget,
        drain: &mut Drain,
    ) -> Result<(), Interrupted> {
        if !with_specials {
            return self.encode_segment(text, out, cache, budget, drain);
        }
        let mut last = 0;
        for (start, end, k) in self.specials.matches(text) {
            self.encode_segment(&text[last..start], out, cache, budget, drain)?;
            out.push(self.special_ids[k]);
            last = end;
        }
        self.encode_segment(&text[last..], out, cache, budget, drain)
    }

    /// `encode` with special tokens, `encode_ordinary` without; stops early when `budget`'s
    /// poll asks.
    pub fn encode_with_budget(
        &self,
        text: &str,
        with_specials: bool,
        budget: &mut Budget,
    ) -> Result<Vec<u32>, Interrupted> {
        // Room for the three ids per piece that `encode_pieces` asks for (English has about
        // a piece in 4.5 bytes; a short text would otherwise grow it once); only what is
        // written is backed by memory. From malloc, not `with_huge_pages`: memory that earlier
        // calls freed comes back already backed (a new encoder's first 20 MB encode ran 132
        // MB/s against 111 in fresh 2 MB pages). Past glibc's largest size for reusing freed
        // memory (32 MB, 11 MB of text) it is new from the system on every call, though, and
        // the advice below has it faulted in 2 MB at a time rather than 4 KB (cl100k, 20 MB
        // to a list, one process alternating builds: 0.869x the time cold, 0.904x warm).
        // At most 64 MB up front, though: a larger room is only reserved, not backed, but a
        // system that does not overcommit may refuse it (and a refused allocation aborts),
        // so the ids of a text past 22 MB grow the vector as they come.
        let mut out: Vec<u32> = Vec::with_capacity((text.len() * 3 / 4 + 3).min(1 << 24));
        advise_huge_pages(out.as_ptr() as usize, out.capacity() * 4);
        self.with_thread_cache(|cache| {
            cache.reserve_for(text.len());
            self.encode_cached(text, with_specials, &mut out, cache, budget, &mut None)
        })?;
        Ok(out)
    }

    /// `encode_with_budget`, the ids handed to `sink` about a megabyte of text at a time
    /// instead of gathered: a caller that converts them (a numpy array of 2-byte ids) then
    /// never holds them all twice, and reads each batch back from the core's cache.
    pub fn encode_to_sink(
        &self,
        text: &str,
        with_specials: bool,
        budget: &mut Budget,
        sink: &mut dyn FnMut(&[u32]),
    ) -> Result<(), Interrupted> {
        let mut out = Vec::with_capacity(text.len().min(POLL_BYTES) / 2 + 1);
        self.with_thread_cache(|cache| {
            cache.reserve_for(text.len());
            self.encode_cached(
                text,
                with_specials,
                &mut out,
                cache,
                budget,
                &mut Some(&mut *sink),
            )
        })?;
        sink(&out);
        Ok(())
    }

    /// Runs `f` with this thread's piece cache for this encoder (a fresh one where the thread's
    /// cache held another encoder's pieces). A nested call (a poll that encodes) or one during
    /// the thread's exit gets a cache of its own.
    fn with_thread_cache<R>(&self, mut f: impl FnMut(&mut PieceCache) -> R) -> R {
        let shared = THREAD_CACHE.try_with(|cell| {
            let mut held = cell.try_borrow_mut().ok()?;
            if held.owner != self.cache_owner {
                *held = ThreadCache {
                    owner: self.cache_owner,
                    cache: PieceCache::default(),
                };
            }
            Some(f(&mut held.cache))
        });
        match shared {
            Ok(Some(r)) => r,
            _ => f(&mut PieceCache::default()),
        }
    }

    /// A piece cache for one worker of a batch or file call: one an earlier call's worker gave
    /// back, else a new one. It goes back when the worker is done with it (`LentCache`'s drop).
    /// `large`: the call will put many pieces in the shared table, whose memory is then backed
    /// at once (`SharedTable::populate`).
    pub(crate) fn lend_cache(&self, large: bool) -> LentCache<'_> {
        let spare = self.spare_caches.lock().ok().and_then(|mut s| s.pop());
        let mut cache = spare.unwrap_or_default();
        let shared = self.shared.get_or_init(|| SharedTable::new().map(Arc::new));
        if let Some(table) = shared.as_ref().filter(|_| large) {
            table.populate();
        }
        cache.shared = shared.clone();
        LentCache {
            cache,
            home: &self.spare_caches,
        }
    }

    /// `encode` with special tokens, `encode_ordinary` without.
    pub fn encode_with(&self, text: &str, with_specials: bool) -> Vec<u32> {
        // A budget without a poll never stops the work, so this is always Ok.
        self.encode_with_budget(text, with_specials, &mut Budget::never())
            .unwrap_or_default()
    }

    /// Encodes text; special tokens in it become their ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, true)
    }

    /// Encodes text without special-token handling.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, false)
    }

    /// Encodes many texts on `num_threads` threads (results in input order).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        num_threads: usize,
        with_specials: bool,
    ) -> Result<Vec<Vec<u32>>, Panicked> {
        let mut all = Vec::with_capacity(texts.len());
        self.encode_batch_in_order(
            texts,
            num_threads,
            with_specials,
            |take| take(),
            &|| Ok(()),
            |ids| {
                all.push(ids.to_vec());
                Ok(())
            },
        )?;
        Ok(all)
    }

    /// Encodes many texts on `num_threads` threads and hands each result to `sink` on the
    /// calling thread, in input order, as soon as it and all before it are done
    /// (`pipeline::ordered_groups`, which says what `wait` and `poll` are for). An error from
    /// `poll` or `sink` stops the workers and is returned.
    pub fn encode_batch_in_order<S, W, E>(
        &self,
        texts: &[S],
        num_threads: usize,
        with_specials: bool,
        wait: W,
        poll: &(dyn Fn() -> Result<(), E> + Sync),
        mut sink: impl FnMut(&[u32]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        S: AsRef<str> + Sync,
        W: FnMut(&(dyn Fn() -> Option<Done<Group>> + Sync)) -> Option<Done<Group>>,
        E: Send + From<Panicked>,
    {
        let large = texts.iter().map(|t| t.as_ref().len()).sum::<usize>() >= PREFAULT_BYTES;
        pipeline::ordered_groups(
            ENCODE_BATCH,
            texts,
            num_threads,
            || self.lend_cache(large),
            |cache, part: &[S], poll| {
                let mut budget = Budget::new(poll);
                let bytes: usize = part.iter().map(|t| t.as_ref().len()).sum();
                let mut done = Group {
                    ids: Vec::with_capacity(bytes / 4 + 1),
                    ends: Vec::with_capacity(part.len()),
                };
                for t in part {
                    let r = self.encode_cached(
                        t.as_ref(),
                        with_specials,
                        &mut done.ids,
                        cache,
                        &mut budget,
                        &mut None,
                    );
                    r.map_err(|Interrupted| Halt::Stopped)?;
                    done.ends.push(done.ids.len());
                }
                Ok(done)
            },
            wait,
            poll,
            |done| {
                let mut from = 0;
                for &end in &done.ends {
                    sink(done.ids.get(from..end).unwrap_or_default())?;
                    from = end;
                }
                Ok(())
            },
        )
    }

    /// Byte length of the longest prefix of `text` that can be encoded now without knowing what
    /// follows (streaming): it ends at a safe cut, so encoding the prefix and the rest apart
    /// gives the ids of the whole. Where no cheap cut exists, a piece boundary found by
    /// splitting (see `input::split_cut`; linear in `text`, so callers should ask again only
    /// after the text has grown by a good part).
    pub fn safe_prefix_len(&self, text: &str) -> usize {
        let s = text.as_bytes();
        crate::input::last_safe_cut(s, 0, self.pattern, &self.specials)
            .or_else(|| crate::input::split_cut(s, self.pattern, &self.specials))
            .unwrap_or(0)
    }

    /// Encodes a UTF-8 file into a flat array of little-endian ids (`width` bytes each: 2 or 4)
    /// written to `out`, chunks encoded on `num_threads` threads and written in order with at
    /// most a few chunks in memory (`pipeline::ordered`). Returns the number of tokens and the
    /// file's checksum.
    /// `hook(bytes_read)` runs on the calling thread every `pipeline::WAIT_POLL` and at the
    /// end, and may stop the work, which then ends within a chunk.
    pub fn encode_file(
        &self,
        path: &Path,
        out: &Path,
        width: usize,
        num_threads: usize,
        hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Written, InputError> {
        let mut writer = IdsFile::create(out, width, self)?;
        let mut reader = ChunkReader::open(path, self.pattern, &self.specials, FILE_BLOCK)?
            .spread_over(pipeline::thread_count(num_threads));
        pipeline::ordered(
            ENCODE_FILE,
            num_threads,
            &mut reader,
            hook,
            // A file is taken for a corpus, however small: its call backs the shared table in
            // full, as a batch of `PREFAULT_BYTES` does.
            || self.lend_cache(true),
            |cache, (offset, chunk), stop| {
                let text = chunk_text(offset, &chunk)?;
                let mut ids = Vec::with_capacity(text.len() / 4 + 1);
                let mut stopped = || stop.is_set();
                let mut budget = Budget::new(&mut stopped);
                self.encode_cached(text, true, &mut ids, cache, &mut budget, &mut None)?;
                Ok(ids)
            },
            |ids| writer.write(&ids),
        )?;
        writer.finish()
    }

    /// The bytes of `ids` concatenated; Err(DecodeError::Unknown(id)) for the first unknown
    /// id, Err(DecodeError::TooLarge(bytes)) when the memory for the result cannot be had.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, DecodeError> {
        let mut total = 0usize;
        for &id in ids {
            let t = self.token(id).ok_or(DecodeError::Unknown(id))?;
            total = total.saturating_add(t.len());
        }
        let mut out = Vec::new();
        out.try_reserve_exact(total)
            .map_err(|_| DecodeError::TooLarge(total))?;
        for &id in ids {
            out.extend_from_slice(self.token(id).unwrap_or_default());
        }
        Ok(out)
    }
}

/// Why ids could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// An id that is not in the vocabulary.
    Unknown(u32),
    /// The result's size in bytes, which could not be allocated.
    TooLarge(usize),
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
    /// The value of `bytes`, whose packed key (`packed::pack`) is `key`.
    #[inline(always)]
    fn get_keyed(&self, key: Option<u128>, bytes: &[u8]) -> Option<&V> {
        match key {
            Some(k) => self.short.get(&k),
            None => self.long.get(bytes),
        }
    }

    fn insert(&mut self, key: &[u8], value: V) {
        match packed::pack(key) {
            Some(k) => self.short.insert(k, value),
            None => self.long.insert(key.to_vec(), value),
        };
    }
}

/// The pieces that encode to exactly one token (bytes -> id), with a filter in front: nearly
/// every piece that reaches this lookup is new to the piece cache and not a token (in 20 MB of
/// English after 20 MB of other text, 73,700 of 76,500), and the filter, a few bits per token
/// in a table small enough to stay near the core, answers "not a token" for almost all of
/// them without the map's two reads of memory.
#[derive(Default)]
struct WholeTokens {
    map: BytesMap<u32>,
    /// A Bloom filter of the packed tokens (`packed::pack`; longer ones are not in it): for
    /// each, two bits in one word, both picked by the top bits of `packed::hash`. A key whose
    /// bits are not both set is not in `map.short`; one whose bits are may be.
    filter: Vec<u64>,
    /// log2 of `filter.len()`.
    filter_bits: u32,
}

impl WholeTokens {
    /// Tokens per word of the filter: 8 bits a token let about one key in 16 that is not a
    /// token through to the map's lookup, in a filter small enough to stay in the core's
    /// second-level cache more often (64 KB for GPT-2, 128 KB for cl100k; at 16 bits a token
    /// a warm 20 MB encode took 1% longer).
    const PER_WORD: usize = 8;

    /// The word of the filter and the two bits in it for a key whose hash is `hash`.
    #[inline(always)]
    fn place(&self, hash: u64) -> (usize, u64) {
        let word = (hash >> 32 >> (32 - self.filter_bits)) as usize;
        let rest = hash << self.filter_bits;
        (word, 1u64 << (rest >> 58) | 1u64 << ((rest >> 52) & 63))
    }

    /// Starts loading the word of the filter that `may_hold(hash)` reads.
    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        packed::prefetch(self.filter.as_ptr().wrapping_add(self.place(hash).0));
    }

    /// Whether the packed key whose hash is `hash` may be a token.
    #[inline(always)]
    fn may_hold(&self, hash: u64) -> bool {
        let (word, bits) = self.place(hash);
        self.filter.get(word).is_some_and(|w| w & bits == bits)
    }

    fn insert(&mut self, bytes: &[u8], id: u32) {
        self.map.insert(bytes, id);
        if let Some(key) = packed::pack(bytes) {
            if self.map.short.len() > self.filter.len() * Self::PER_WORD {
                self.rebuild();
            } else {
                self.mark(packed::hash(key));
            }
        }
    }

    fn mark(&mut self, hash: u64) {
        let (word, bits) = self.place(hash);
        if let Some(w) = self.filter.get_mut(word) {
            *w |= bits;
        }
    }

    /// A filter sized for the tokens held (and twice as many more), every token marked again.
    #[cold]
    fn rebuild(&mut self) {
        let words = (2 * self.map.short.len() / Self::PER_WORD + 1).next_power_of_two();
        self.filter_bits = words.trailing_zeros();
        self.filter = vec![0; words];
        let keys: Vec<u128> = self.map.short.keys().copied().collect();
        for key in keys {
            self.mark(packed::hash(key));
        }
    }

    /// The id of the token `bytes`, whose packed key is `key` and its hash `hash` (anything
    /// for None).
    #[inline(always)]
    fn get_keyed(&self, key: Option<u128>, hash: u64, bytes: &[u8]) -> Option<&u32> {
        if key.is_some() && !self.may_hold(hash) {
            return None;
        }
        self.map.get_keyed(key, bytes)
    }

    #[inline]
    fn get(&self, bytes: &[u8]) -> Option<&u32> {
        let key = packed::pack(bytes);
        self.get_keyed(key, key.map_or(0, packed::hash), bytes)
    }
}

/// The ids of pieces seen before, whole tokens and pieces that went through BPE alike: text
/// repeats its words, and one lookup here costs less than the whole-token table followed by BPE.
/// `encode` keeps one per thread from call to call (`Encoder::with_thread_cache`); the batch and
/// file paths one per worker, kept by the encoder from call to call (`Encoder::lend_cache`).
#[derive(Default)]
pub(crate) struct PieceCache {
    /// The pieces shared with the other workers of the same encoder, looked up first and
    /// filled while it has room (batch and file calls; see `shared_table`).
    shared: Option<Arc<SharedTable>>,
    /// Pieces of at most 15 bytes (nearly all), by `packed::pack`.
    short: PackedTable,
    long: FxHashMap<Vec<u8>, Cached>,
    /// The ids of pieces of more than `INLINE` ids.
    ids: Vec<u32>,
    /// Where `encode_segment` gathers the pieces it has found and not yet looked up, kept from
    /// call to call (taken out while a call runs).
    batch: Option<Box<[Queued; BATCH + AHEAD]>>,
}

/// A piece cache lent to a worker by `Encoder::lend_cache`; dropped, it goes back to the
/// encoder's spares, of which at most `MAX_SPARE_CACHES` are kept (each holds up to about 16 MB).
pub(crate) struct LentCache<'a> {
    cache: PieceCache,
    home: &'a Mutex<Vec<PieceCache>>,
}

/// Batches from this size on put enough pieces in a new shared table to touch most of its pages
/// (about 8,000 distinct pieces a megabyte of English, over 4,096 pages of 4 KB).
const PREFAULT_BYTES: usize = 1 << 20;

/// Spare caches an encoder keeps between calls: enough for the workers of a machine of this
/// size without holding hundreds of megabytes on one with many cores.
const MAX_SPARE_CACHES: usize = 8;

impl std::ops::Deref for LentCache<'_> {
    type Target = PieceCache;
    fn deref(&self) -> &PieceCache {
        &self.cache
    }
}

impl std::ops::DerefMut for LentCache<'_> {
    fn deref_mut(&mut self) -> &mut PieceCache {
        &mut self.cache
    }
}

impl Drop for LentCache<'_> {
    fn drop(&mut self) {
        if let Ok(mut spare) = self.home.lock() {
            if spare.len() < MAX_SPARE_CACHES {
                spare.push(std::mem::take(&mut self.cache));
            }
        }
    }
}

/// A piece's ids: `n` of them, held in `a`, `b` and `c` when there are at most `INLINE`
/// (nearly always, so the lookup touches no other memory), else from `ids[a]` on.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cached {
    pub(crate) n: u32,
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) c: u32,
}

/// The most ids a cache entry holds in itself: three fill a 32-byte slot with its 16-byte key.
/// A piece of three ids (a rare word of English, about one piece in 60) was looked up the
/// whole way and its ids copied from elsewhere on every occurrence (a warm 20 MB encode spent
/// 4% of its time in that copy alone).
pub(crate) const INLINE: u32 = 3;

impl Cached {
    /// The entry of `n` ids kept elsewhere, from `at` on.
    pub(crate) fn stored_at(n: u32, at: u32) -> Cached {
        Cached {
            n,
            a: at,
            ..Cached::default()
        }
    }

    /// The entry of `ids` if it holds them in itself (one to `INLINE` ids).
    pub(crate) fn inline(ids: &[u32]) -> Option<Cached> {
        let n = u32::try_from(ids.len()).ok()?;
        match *ids {
            [a] => Some(Cached { n, a, b: 0, c: 0 }),
            [a, b] => Some(Cached { n, a, b, c: 0 }),
            [a, b, c] => Some(Cached { n, a, b, c }),
            _ => None,
        }
    }
}

impl PieceCache {
    /// Entries kept before the cache starts over (bounds its memory on huge inputs, to about
    /// 16 MB of table): 20 MB of English has about 110,000 distinct pieces that are not tokens,
    /// and a cache that starts over before holding them redoes their BPE.
    const LIMIT: usize = 1 << 18;
    /// Ids kept before the cache starts over, and the longest piece worth keeping: both bound
    /// its memory when pieces are long (pattern None).
    const MAX_IDS: usize = 1 << 22;
    const MAX_PIECE: usize = 1 << 12;

    fn len(&self) -> usize {
        self.short.len + self.long.len()
    }

    /// Makes room at once for the distinct pieces of a text of `text_len` bytes (English has
    /// about one in 128 bytes), so that a long text's pieces do not grow the table step by
    /// step. A table that holds pieces from earlier texts grows as it needs.
    pub(crate) fn reserve_for(&mut self, text_len: usize) {
        self.short.reserve((text_len / 128).min(Self::LIMIT));
    }

    /// Starts loading what a lookup of the key whose hash is `hash` will read (`encode_pieces`
    /// asks a few pieces ahead).
    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        match &self.shared {
            Some(shared) if !shared.is_full() => shared.prefetch(hash),
            Some(shared) => {
                shared.prefetch(hash);
                self.short.prefetch(hash);
            }
            None => self.short.prefetch(hash),
        }
    }

    /// Appends the ids of `piece` to `out` and returns true if the cache has them; `key` is
    /// `packed::pack(piece)`.
    #[cfg(test)]
    fn extend(&self, key: Option<u128>, piece: &[u8], out: &mut Vec<u32>) -> bool {
        self.extend_hashed(key, key.map_or(0, packed::hash), piece, out)
    }

    /// The one to `INLINE` ids of the piece whose packed key is `key` (`Queued::LONG` finds
    /// nothing) if the first slot its lookup reads holds them: nearly every piece seen before,
    /// found with no branch but this one. None sends the piece the whole way (`extend_hashed`).
    #[inline(always)]
    fn home_hit(&self, key: u128, hash: u64) -> Option<Cached> {
        match &self.shared {
            Some(shared) => shared.home_hit(key, hash),
            None => self.short.home_hit(key, hash),
        }
    }

    /// `extend` given the key's hash (`packed::hash`; anything for None).
    #[inline(always)]
    fn extend_hashed(
        &self,
        key: Option<u128>,
        hash: u64,
        piece: &[u8],
        out: &mut Vec<u32>,
    ) -> bool {
        if let (Some(shared), Some(k)) = (&self.shared, key) {
            if let Some(e) = shared.get_hashed(k, hash) {
                shared.push_ids(e, out);
                return true;
            }
        }
        let found = match key {
            Some(k) => self.short.get_hashed(k, hash),
            None => self.long.get(piece),
        };
        let Some(&c) = found else {
            return false;
        };
        if c.n <= INLINE {
            push_inline(out, c);
        } else {
            out.extend_from_slice(
                self.ids
                    .get(c.a as usize..c.a as usize + c.n as usize)
                    .unwrap_or_default(),
            );
        }
        true
    }

    #[inline]
    fn insert(&mut self, key: Option<u128>, piece: &[u8], ids: &[u32]) {
        if piece.len() > Self::MAX_PIECE {
            return;
        }
        if let (Some(shared), Some(k)) = (&self.shared, key) {
            if shared.insert(k, ids) {
                return;
            }
        }
        if self.len() >= Self::LIMIT || self.ids.len() + ids.len() > Self::MAX_IDS {
            self.short.clear();
            self.long.clear();
            self.ids.clear();
        }
        // Both fit: the cache holds at most MAX_IDS ids.
        let (Ok(at), Ok(n)) = (u32::try_from(self.ids.len()), u32::try_from(ids.len())) else {
            return;
        };
        let entry = Cached::inline(ids).unwrap_or_else(|| {
            self.ids.extend_from_slice(ids);
            Cached::stored_at(n, at)
        });
        match key {
            Some(k) => self.short.insert(k, entry),
            None => {
                self.long.insert(piece.to_vec(), entry);
            }
        }
    }
}

/// Appends the first `e.n` (at most `INLINE`) of `e.a`, `e.b`, `e.c`: all three are written and
/// the length moves by `n`, so there is no branch on how many, which the text makes
/// unpredictable (a piece of one token or of two; mispredicting that cost a tenth of a cached
/// encode).
#[inline(always)]
pub(crate) fn push_inline(out: &mut Vec<u32>, e: Cached) {
    out.reserve(3);
    let len = out.len();
    if let [x, y, z, ..] = out.spare_capacity_mut() {
        x.write(e.a);
        y.write(e.b);
        z.write(e.c);
        // SAFETY: the first `n` (at most 3) of the spare slots were just written, and `reserve`
        // made room for three.
        unsafe { out.set_len(len + e.n.min(INLINE) as usize) };
    }
}

/// A hash table of packed pieces (`packed::pack`) -> `Cached`: open addressing with linear
/// probing over 32-byte slots, at most half full. A lookup reads one slot, nearly always the
/// one the key hashes to, so `prefetch` can load it ahead; in a general hash map (hashbrown's)
/// a lookup reads a control group and then the slot it points to.
struct PackedTable {
    /// A power of two of them, at least `MIN_SLOTS`; `EMPTY` keys where no entry is.
    slots: Vec<Slot>,
    /// Entries held.
    len: usize,
    /// 64 minus log2 of the number of slots: a key's first slot is the top bits of its hash.
    shift: u32,
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    key: u128,
    value: Cached,
}

/// Two slots a cache line: a lookup reads one line.
const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Default for PackedTable {
    fn default() -> Self {
        Self::with_slots(Self::MIN_SLOTS)
    }
}

impl PackedTable {
    /// No packed key is this (a packed key's top byte is its length, at most 15).
    const EMPTY: u128 = u128::MAX;
    const MIN_SLOTS: usize = 64;

    fn with_slots(n: usize) -> Self {
        let empty = Slot {
            key: Self::EMPTY,
            value: Cached::default(),
        };
        let mut slots = with_huge_pages(n);
        slots.resize(n, empty);
        PackedTable {
            slots,
            len: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// The slot where `key`'s probe starts.
    #[inline(always)]
    fn home(&self, key: u128) -> usize {
        self.home_of(packed::hash(key))
    }

    /// The slot where the probe of a key whose hash is `hash` starts.
    #[inline(always)]
    fn home_of(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        packed::prefetch(self.slots.as_ptr().wrapping_add(self.home_of(hash)));
    }

    #[cfg(test)]
    fn get(&self, key: u128) -> Option<&Cached> {
        self.get_hashed(key, packed::hash(key))
    }

    /// The entry of `key` if it is in its home slot with one to `INLINE` ids
    /// (`PieceCache::home_hit`; an empty slot has none).
    #[inline(always)]
    fn home_hit(&self, key: u128, hash: u64) -> Option<Cached> {
        let slot = self.slots.get(self.home_of(hash))?;
        let hit = (slot.key == key) & (slot.value.n.wrapping_sub(1) < INLINE);
        hit.then_some(slot.value)
    }

    /// `get` given `packed::hash(key)`.
    #[inline(always)]
    fn get_hashed(&self, key: u128, hash: u64) -> Option<&Cached> {
        let mask = self.slots.len() - 1;
        let mut i = self.home_of(hash);
        // Ends: at most half the slots are taken.
        loop {
            let slot = self.slots.get(i)?;
            if slot.key == key {
                return Some(&slot.value);
            }
            if slot.key == Self::EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: u128, value: Cached) {
        if self.len + 1 > Self::capacity(self.slots.len()) {
            self.grow(self.slots.len() * 2);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while let Some(slot) = self.slots.get_mut(i) {
            if slot.key == Self::EMPTY {
                self.len += 1;
                *slot = Slot { key, value };
                return;
            }
            if slot.key == key {
                slot.value = value;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Entries that `slots` slots take.
    fn capacity(slots: usize) -> usize {
        slots / 2
    }

    /// Makes room for `entries` entries at once (a long text's distinct pieces, so that the
    /// table does not grow step by step while they come).
    fn reserve(&mut self, entries: usize) {
        let mut slots = self.slots.len();
        while Self::capacity(slots) < entries {
            slots *= 2;
        }
        if slots > self.slots.len() {
            self.grow(slots);
        }
    }

    /// `slots` slots, the entries put again.
    #[cold]
    fn grow(&mut self, slots: usize) {
        let old = std::mem::replace(self, Self::with_slots(slots));
        for slot in old.slots {
            if slot.key != Self::EMPTY {
                self.insert(slot.key, slot.value);
            }
        }
    }

    fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.key = Self::EMPTY;
        }
        self.len = 0;
    }
}

/// An empty vector with room for `n` items, its memory in 2 MB pages where the system gives
/// them on request (Linux's transparent huge pages set to `madvise`, as is common): a large
/// table or output then costs one page fault per 2 MB instead of per 4 KB when first written,
/// and random lookups in it miss the TLB less.
fn with_huge_pages<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    advise_huge_pages(
        v.as_ptr() as usize,
        n.saturating_mul(std::mem::size_of::<T>()),
    );
    v
}

/// The size of the huge pages the tables ask for.
pub(crate) const HUGE: usize = 1 << 21;

/// Asks for the whole 2 MB pages within `len` bytes from address `start`, memory of this
/// process's own allocation (its own or the interpreter's objects), to be backed by huge pages
/// (see `with_huge_pages`).
pub(crate) fn advise_huge_pages(start: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let first = start.next_multiple_of(HUGE);
        let end = start.saturating_add(len) / HUGE * HUGE;
        if len >= 2 * HUGE && end > first {
            // SAFETY: the caller's range is memory it owns; the advice changes no memory,
            // only how the kernel backs it.
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len);
}

/// The ids of a run of consecutive texts of a batch, one after another; the run's text `i`
/// ends at `ends[i]`.
pub struct Group {
    ids: Vec<u32>,
    ends: Vec<usize>,
}

/// What the threads of encoding do, for the message of a panic.
const ENCODE_FILE: Stages = Stages {
    work: "encode_file",
    producer: "reading",
    worker: "encoding",
    consumer: "writing",
};
const ENCODE_BATCH: Stages = Stages {
    work: "encode_batch",
    ..ENCODE_FILE
};

/// Bytes per chunk of a file being encoded: small enough that a 20 MB file still spreads
/// evenly over the threads (each worker's `PieceCache` carries over from chunk to chunk).
const FILE_BLOCK: usize = 1 << 20;

/// Bytes of text (or merge steps of a long piece, at `MERGE_COST` bytes each) between two
/// polls of a `Budget`: a few milliseconds of work.
const POLL_BYTES: usize = 1 << 20;
const MERGE_COST: usize = 16;

/// Lets long work be stopped: the work charges the text it has handled, and every
/// `POLL_BYTES` asks `poll` whether to stop (true: it returns `Interrupted`, and so does every
/// later charge).
pub struct Budget<'a> {
    left: usize,
    poll: Option<&'a mut dyn FnMut() -> bool>,
    stopped: bool,
}

impl<'a> Budget<'a> {
    /// A budget that never stops the work.
    pub fn never() -> Self {
        Budget {
            left: usize::MAX,
            poll: None,
            stopped: false,
        }
    }

    pub fn new(poll: &'a mut dyn FnMut() -> bool) -> Self {
        Budget {
            left: POLL_BYTES,
            poll: Some(poll),
            stopped: false,
        }
    }

    #[inline(always)]
    pub(crate) fn spend(&mut self, n: usize) -> Result<(), Interrupted> {
        if n < self.left {
            self.left -= n;
            return Ok(());
        }
        self.refill()
    }

    #[cold]
    fn refill(&mut self) -> Result<(), Interrupted> {
        match &mut self.poll {
            _ if self.stopped => {}
            None => self.left = usize::MAX,
            Some(poll) => {
                self.left = POLL_BYTES;
                self.stopped = poll();
            }
        }
        self.check()
    }

    /// Err once the poll has asked to stop.
    pub(crate) fn check(&self) -> Result<(), Interrupted> {
        if self.stopped {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}

/// What a token file received: its number of ids and the CRC-32 (zlib's) of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub tokens: u64,
    pub crc32: u32,
}

/// A file of token ids being written (`encode_file`): little-endian integers of `width` bytes
/// (2 or 4), appended as they come, checksummed on the way (the file's sidecar records the
/// checksum, and the file need not be read back for it).
pub(crate) struct IdsFile {
    file: std::fs::File,
    width: usize,
    bytes: Vec<u8>,
    tokens: u64,
    crc: crc32fast::Hasher,
    /// Bytes written, and those whose writing to disk has been started.
    written: u64,
    started: u64,
}

impl IdsFile {
    /// Bytes written between two requests that the system start writing them to disk: the
    /// final `sync_all` then waits for the last megabyte only, not for the whole file (9 MB of
    /// ids: 0.6-1.0 ms against 2.2-3.2 with requests every 4 MB).
    const WRITEBACK: u64 = 1 << 20;
    /// Bytes gathered before a write (a file call's chunks give about 0.5 MB of ids each).
    const BUFFER: usize = 1 << 18;

    /// Creates (or empties) `out` for `enc`'s ids; refused when they do not fit in `width`
    /// bytes.
    pub(crate) fn create(out: &Path, width: usize, enc: &Encoder) -> Result<Self, InputError> {
        if !enc.ids_fit(width) {
            return Err(InputError::Write(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ids up to {:?} do not fit in {width} bytes", enc.max_id()),
            )));
        }
        Ok(IdsFile {
            file: std::fs::File::create(out).map_err(InputError::Write)?,
            width,
            bytes: Vec::new(),
            tokens: 0,
            crc: crc32fast::Hasher::new(),
            written: 0,
            started: 0,
        })
    }

    /// Appends `ids`, written out once `BUFFER` bytes have gathered.
    pub(crate) fn write(&mut self, ids: &[u32]) -> Result<(), InputError> {
        ids_to_le_bytes(ids, self.width, &mut self.bytes);
        self.tokens += ids.len() as u64;
        if self.bytes.len() >= Self::BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), InputError> {
        self.crc.update(&self.bytes);
        self.file
            .write_all(&self.bytes)
            .map_err(InputError::Write)?;
        self.written += self.bytes.len() as u64;
        self.bytes.clear();
        if self.written - self.started >= Self::WRITEBACK {
            self.start_writeback();
        }
        Ok(())
    }

    /// Asks the system to start writing to disk what was written since the last such request.
    /// Only advice (the final `sync_all` reports any error), so its result is not looked at.
    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let from = i64::try_from(self.started).unwrap_or(i64::MAX);
            let len = i64::try_from(self.written - self.started).unwrap_or(0);
            // SAFETY: a system call on this file's own descriptor, with no memory passed.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.started = self.written;
    }

    /// Waits until the file is on disk; returns what it holds.
    pub(crate) fn finish(mut self) -> Result<Written, InputError> {
        self.flush()?;
        self.file.sync_all().map_err(InputError::Write)?;
        Ok(Written {
            tokens: self.tokens,
            crc32: self.crc.finalize(),
        })
    }
}

/// Appends ids as little-endian integers of `width` bytes (2: the caller has checked with
/// `Encoder::ids_fit` that every id of the vocabulary fits, so the cast keeps every bit).
pub fn ids_to_le_bytes(ids: &[u32], width: usize, out: &mut Vec<u8>) {
    let n = ids.len() * width;
    out.reserve(n);
    let written = write_le_ids(ids, width, out.spare_capacity_mut());
    // SAFETY: `reserve` made room for `n` more bytes, all of which `write_le_ids` wrote.
    if written == n {
        unsafe { out.set_len(out.len() + n) };
    }
}

/// Writes ids as little-endian integers of `width` bytes (2 or 4, as in `ids_to_le_bytes`)
/// at the start of `out`, memory that need not have been written before (a buffer made for
/// them, so the ids are copied once and nothing is zeroed first); returns the bytes written,
/// `ids.len() * width` where `out` has room.
pub fn write_le_ids(ids: &[u32], width: usize, out: &mut [MaybeUninit<u8>]) -> usize {
    let mut written = 0;
    if width == 2 {
        for (o, &i) in out.chunks_exact_mut(2).zip(ids) {
            o.copy_from_slice(&(i as u16).to_le_bytes().map(MaybeUninit::new));
            written += 2;
        }
    } else {
        for (o, &i) in out.chunks_exact_mut(4).zip(ids) {
            o.copy_from_slice(&i.to_le_bytes().map(MaybeUninit::new));
            written += 4;
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

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
    fn whole_tokens_filter_never_hides_a_token() {
        // Keys of every length 1..=20 (long ones bypass the filter), inserted one by one so
        // the filter is rebuilt several times on the way; each lookup must equal the map's.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let keys: Vec<Vec<u8>> = (0..30_000)
            .map(|_| {
                let n = 1 + (next() % 20) as usize;
                (0..n).map(|_| next() as u8 % 6 + b'a').collect()
            })
            .collect();
        let mut whole = WholeTokens::default();
        let mut want: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                whole.insert(k, i as u32);
                want.insert(k.clone(), i as u32);
            }
            // Everything inserted so far is still found, as the filter grows.
            if i % 997 == 0 {
                for (k, &id) in &want {
                    assert_eq!(whole.get(k), Some(&id), "{k:?}");
                }
            }
        }
        let (mut passed, mut tried) = (0, 0);
        for k in &keys {
            assert_eq!(whole.get(k), want.get(k), "{k:?}");
            if let Some(key) = packed::pack(k).filter(|_| !want.contains_key(k)) {
                tried += 1;
                passed += usize::from(whole.may_hold(packed::hash(key)));
            }
        }
        // The filter turns away most keys that are not tokens (here about 8,500, of which
        // about 1% pass).
        assert!(
            tried > 5000 && passed * 20 < tried,
            "{passed} of {tried} keys that are not tokens passed the filter"
        );
    }

    #[test]
    fn small_and_large_agree() {
        let e = toy();
        for n in [1usize, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 1001] {
            let piece: Vec<u8> = b"abcaab".iter().cycle().take(n).copied().collect();
            let (mut s, mut l) = (Vec::new(), Vec::new());
            if n <= SMALL {
                e.bpe_small(&piece, &mut s);
            } else {
                s = e.bpe_reference(&piece);
            }
            e.bpe_large(&piece, &mut l, &mut Budget::never()).unwrap();
            assert_eq!(s, l, "n={n}");
        }
    }

    impl Encoder {
        /// Plain quadratic loop over a Vec, for checking the fast ones.
        fn bpe_reference(&self, piece: &[u8]) -> Vec<u32> {
            let mut ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
            loop {
                let best = (0..ids.len().saturating_sub(1))
                    .map(|i| (self.key(ids[i], ids[i + 1]), i))
                    .filter(|&(k, _)| k != NO_MERGE)
                    .map(|(k, i)| (k, i, self.merged(k)))
                    .min();
                let Some((_, i, m)) = best else { break };
                ids[i] = m;
                ids.remove(i + 1);
            }
            ids
        }
    }

    /// The same bytes as `toy`, merged in the other order: "aab" is "aa" "b" here, "a" "ab" there.
    fn toy_reversed() -> Encoder {
        let mut vocab = bytes_vocab();
        let merges = vec![
            (b"a".to_vec(), b"a".to_vec()),
            (b"a".to_vec(), b"b".to_vec()),
        ];
        vocab.push((256, b"aa".to_vec()));
        vocab.push((257, b"ab".to_vec()));
        Encoder::from_merges(&vocab, &merges, &[], Pattern::Gpt2).unwrap()
    }

    #[test]
    fn each_encoder_has_its_own_thread_cache() {
        let (a, b) = (toy(), toy_reversed());
        let text = "aab aab xaab";
        for _ in 0..3 {
            assert_eq!(a.encode(text), vec![97, 256, 32, 97, 256, 32, 120, 97, 256]);
            assert_eq!(b.encode(text), vec![256, 98, 32, 256, 98, 32, 120, 256, 98]);
        }
        // ignore_merges changes what a piece encodes to, so its cache starts over.
        let mut c = toy();
        assert_eq!(c.encode("abc"), vec![257]);
        let mut v = bytes_vocab();
        v.push((300, b"aab".to_vec()));
        assert_eq!(c.encode("aab"), vec![97, 256]);
        c.ignore_merges(&v);
        assert_eq!(c.encode("aab"), vec![300]);
    }

    #[test]
    fn an_encode_inside_a_poll_gets_its_own_cache() {
        let (a, b) = (toy(), toy_reversed());
        let text = "aab ".repeat(POLL_BYTES / 2);
        let mut inner = Vec::new();
        let mut poll = || {
            inner.push(b.encode("aab"));
            inner.push(a.encode("aab"));
            false
        };
        let ids = a
            .encode_with_budget(&text, true, &mut Budget::new(&mut poll))
            .unwrap();
        assert_eq!(ids, a.encode(&text));
        assert!(!inner.is_empty());
        for pair in inner.chunks(2) {
            assert_eq!(pair, [vec![256, 98], vec![97, 256]]);
        }
    }

    #[test]
    fn the_cache_returns_what_was_put_in() {
        let mut cache = PieceCache::default();
        let key = packed::pack;
        let data: Vec<u8> = (0..40u8).map(|b| b.wrapping_mul(37) | 1).collect();
        let ids_for = |len: usize, k: usize| -> Vec<u32> {
            (0..k).map(|i| (len * 7 + i) as u32 | 0xF000_0000).collect()
        };
        // Pieces of 0 to 40 bytes (15, 16 and 17 among them), with 0 to 5 ids each.
        for len in 0..=40 {
            cache.insert(key(&data[..len]), &data[..len], &ids_for(len, len % 6));
        }
        for len in 0..=40 {
            let mut out = vec![9];
            assert!(
                cache.extend(key(&data[..len]), &data[..len], &mut out),
                "length {len}"
            );
            assert_eq!(out[1..], ids_for(len, len % 6), "length {len}");
        }
        assert!(!cache.extend(key(b"zz"), b"zz", &mut Vec::new()));
        // Past its limit the cache starts over: what it still holds is right.
        let piece = |i: usize| format!("p{i}").into_bytes();
        for i in 0..PieceCache::LIMIT + 10 {
            cache.insert(key(&piece(i)), &piece(i), &[i as u32, 1, 2][..1 + i % 3]);
        }
        assert!(cache.len() <= PieceCache::LIMIT);
        let mut held = 0;
        for i in 0..PieceCache::LIMIT + 10 {
            let mut out = Vec::new();
            if cache.extend(key(&piece(i)), &piece(i), &mut out) {
                assert_eq!(out, [i as u32, 1, 2][..1 + i % 3]);
                held += 1;
            }
        }
        assert!(held > 0);
    }

    #[test]
    fn inline_ids_append_whatever_the_room() {
        let mut out: Vec<u32> = Vec::new();
        let mut want = Vec::new();
        for i in 0..1000u32 {
            // Lengths that meet the capacity exactly, and past it.
            if i % 97 == 0 {
                out.shrink_to_fit();
            }
            let ids = [i, !i, i ^ 0x5555][..1 + i as usize % 3].to_vec();
            push_inline(&mut out, Cached::inline(&ids).unwrap());
            want.extend_from_slice(&ids);
            assert_eq!(out, want, "{i}");
        }
        assert!(Cached::inline(&[]).is_none() && Cached::inline(&[1, 2, 3, 4]).is_none());
    }

    #[test]
    fn ids_append_as_little_endian_bytes() {
        let ids = [1u32, 0x1234, 0xfffe, 70_000];
        let mut out = vec![9u8];
        ids_to_le_bytes(&ids[..3], 2, &mut out);
        assert_eq!(out, [9, 1, 0, 0x34, 0x12, 0xfe, 0xff]);
        let mut out = vec![9u8];
        ids_to_le_bytes(&ids, 4, &mut out);
        let want: Vec<u8> = std::iter::once(9)
            .chain(ids.iter().flat_map(|i| i.to_le_bytes()))
            .collect();
        assert_eq!(out, want);
        ids_to_le_bytes(&[], 4, &mut out);
        assert_eq!(out, want);
    }

    /// zlib's CRC-32, one bit at a time: the readable definition.
    fn crc32_bit_by_bit(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32_bit_by_bit_is_zlibs() {
        assert_eq!(crc32_bit_by_bit(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_bit_by_bit(b""), 0);
    }

    #[test]
    fn an_ids_file_holds_every_write_in_order() {
        let e = toy();
        let path = std::env::temp_dir().join(format!("fastbpe_ids_{}.bin", std::process::id()));
        let mut f = IdsFile::create(&path, 2, &e).unwrap();
        let mut rng = Rng(5);
        let mut all = Vec::new();
        // Small writes that gather, writes larger than the buffer, and enough for writeback.
        for round in 0..60 {
            let n = if round % 7 == 0 {
                300_000
            } else {
                rng.below(5000)
            };
            let ids: Vec<u32> = (0..n).map(|_| rng.below(260) as u32).collect();
            f.write(&ids).unwrap();
            all.extend(ids);
        }
        let written = f.finish().unwrap();
        let mut want = Vec::new();
        ids_to_le_bytes(&all, 2, &mut want);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(written.tokens, all.len() as u64);
        assert_eq!(written.crc32, crc32_bit_by_bit(&want));
        std::fs::remove_file(&path).unwrap();
        // Ids that do not fit are refused before the file is made.
        let mut ranks: Vec<(Vec<u8>, u32)> = (0..=255u8).map(|b| (vec![b], u32::from(b))).collect();
        ranks.push((b"ab".to_vec(), 70_000));
        let wide = Encoder::from_ranks(&ranks, &[], Pattern::Whole).unwrap();
        assert!(IdsFile::create(&path, 2, &wide).is_err());
        assert!(!path.exists());
        let empty = IdsFile::create(&path, 4, &wide).unwrap().finish().unwrap();
        assert_eq!((empty.tokens, empty.crc32), (0, 0));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_small_loop_agrees_with_the_plain_one_at_every_length() {
        let e = toy();
        let mut rng = Rng(99);
        for n in 1..=SMALL {
            for _ in 0..50 {
                let piece: Vec<u8> = (0..n).map(|_| b"abcx"[rng.below(4)]).collect();
                let mut got = Vec::new();
                e.bpe_small(&piece, &mut got);
                assert_eq!(
                    got,
                    e.bpe_reference(&piece),
                    "{:?}",
                    String::from_utf8_lossy(&piece)
                );
            }
        }
    }

    #[test]
    fn the_packed_table_agrees_with_a_hash_map() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut table = PackedTable::default();
        let mut want: std::collections::HashMap<u128, u32> = Default::default();
        let value = |v: u32| Cached {
            n: 1,
            a: v,
            b: !v,
            c: v ^ 1,
        };
        // Keys of 0 to 15 bytes from a small alphabet: many share their bytes but not their
        // length, and the table grows from its smallest size, its probes wrapping at its end.
        for step in 0..20_000u32 {
            let len = rng.below(16);
            let bytes: Vec<u8> = (0..len).map(|_| b"ab\0\xff"[rng.below(4)]).collect();
            let key = packed::pack(&bytes).unwrap();
            if rng.below(3) == 0 {
                let got = table.get(key).map(|c| (c.a, c.b));
                assert_eq!(got, want.get(&key).map(|&v| (v, !v)), "step {step}");
            } else {
                table.insert(key, value(step));
                want.insert(key, step);
            }
            assert_eq!(table.len, want.len());
            assert!(table.len <= PackedTable::capacity(table.slots.len()));
        }
        for (&key, &v) in &want {
            assert_eq!(table.get(key).map(|c| c.a), Some(v));
        }
        table.reserve(100_000);
        assert!(PackedTable::capacity(table.slots.len()) >= 100_000);
        for (&key, &v) in &want {
            assert_eq!(table.get(key).map(|c| c.a), Some(v));
        }
        table.clear();
        assert_eq!(table.len, 0);
        for &key in want.keys() {
            assert!(table.get(key).is_none());
        }
    }

    /// Text of `words` random words over a few letters (some non-ASCII), digits, spaces and
    /// punctuation: pieces of 1 to about 40 bytes, many repeated.
    fn random_text(rng: &mut Rng, words: usize) -> String {
        let letters = ["a", "b", "c", "a", "b", "\u{e9}", "\u{4e2d}", "1", "2"];
        let mut text = String::new();
        for _ in 0..words {
            let len = if rng.below(10) == 0 {
                10 + rng.below(30)
            } else {
                1 + rng.below(8)
            };
            for _ in 0..len {
                text.push_str(letters[rng.below(letters.len())]);
            }
            text.push_str([" ", " ", "  ", ".", "\n", "!? "][rng.below(6)]);
        }
        text
    }

    #[test]
    fn encoding_with_the_cache_gives_the_ids_of_each_piece_alone() {
        let mut rng = Rng(12345);
        let e = toy();
        // Over a million bytes: several windows of `encode_segment`, each ending with a batch
        // of pieces found and not yet looked up (`encode_pieces`).
        let text = random_text(&mut rng, 300_000);
        assert!(text.len() > 2 * POLL_BYTES);
        let mut want = Vec::new();
        e.pattern.for_each_piece(&text, |p| {
            want.extend(e.bpe_reference(p.as_bytes()));
        });
        assert_eq!(e.encode_ordinary(&text), want);
        // Again with the cache full of these pieces, and on a text with special tokens.
        assert_eq!(e.encode_ordinary(&text), want);
        let short = &text[..text.floor_char_boundary(5000)];
        let with_special = format!("{short}<|e|>{short}");
        let mut want = e.encode_ordinary(short);
        want.push(259);
        want.extend(e.encode_ordinary(short));
        assert_eq!(e.encode(&with_special), want);
    }

    /// BPE with every pair of `pairs`, none left out.
    fn bpe_with_all_pairs(
        pairs: &FxHashMap<Pair, (u32, u32)>,
        byte_ids: &[u32; 256],
        piece: &[u8],
    ) -> Vec<u32> {
        let mut ids: Vec<u32> = piece.iter().map(|&b| byte_ids[b as usize]).collect();
        loop {
            let best = (0..ids.len().saturating_sub(1))
                .filter_map(|i| pairs.get(&(ids[i], ids[i + 1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, m)) = best else { break };
            ids[i] = m;
            ids.remove(i + 1);
        }
        ids
    }

    #[test]
    fn leaving_out_the_pairs_that_never_merge_changes_no_ids() {
        let mut rng = Rng(777);
        for round in 0..20 {
            // Random tokens over three letters, ranked at random: most have several ways of
            // being cut into two tokens, and some are not what BPE makes of their bytes.
            let vocab = random_vocab(&mut rng, 256..456, b"abc");
            let ranks: Vec<(Vec<u8>, u32)> = vocab.iter().map(|(i, t)| (t.clone(), *i)).collect();
            let e = Encoder::from_ranks(&ranks, &[], Pattern::Whole).unwrap();
            // The pairs before any is left out, as `from_ranks` makes them.
            let by_bytes: FxHashMap<&[u8], u32> = vocab.iter().map(|(i, t)| (&t[..], *i)).collect();
            let mut all: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
            for (t, r) in &ranks {
                for k in 1..t.len() {
                    if let (Some(&a), Some(&b)) = (by_bytes.get(&t[..k]), by_bytes.get(&t[k..])) {
                        all.insert((a, b), (*r, by_bytes[&t[..]]));
                    }
                }
            }
            assert!(e.pairs.len() < all.len(), "round {round}: nothing left out");
            for n in [2usize, 3, 5, 8, 13, 40, 64, 65, 100] {
                for _ in 0..30 {
                    let piece: Vec<u8> = (0..n).map(|_| b"abc"[rng.below(3)]).collect();
                    let mut got = Vec::new();
                    e.bpe(&piece, &mut got, &mut Budget::never()).unwrap();
                    let want = bpe_with_all_pairs(&all, &e.byte_ids, &piece);
                    assert_eq!(
                        got,
                        want,
                        "round {round}, piece {:?}",
                        String::from_utf8_lossy(&piece)
                    );
                }
            }
        }
    }

    #[test]
    fn small_pairs_answer_as_the_map_does() {
        // Ids on both sides of `SmallPairs::IDS`, ranked at random.
        let vocab = random_vocab(&mut Rng(31337), 256..1200, b"abcd");
        let ranks: Vec<(Vec<u8>, u32)> = vocab.iter().map(|(i, t)| (t.clone(), *i)).collect();
        let e = Encoder::from_ranks(&ranks, &[], Pattern::Whole).unwrap();
        // tiktoken's ranks are the ids: the keys are the merged ids.
        assert!(e.merged_ids.is_none());
        let small = e
            .pairs
            .keys()
            .filter(|&&(a, b)| a.max(b) < SmallPairs::IDS)
            .count();
        assert!(small > 0 && small < e.pairs.len());
        for (&pair, &key) in &e.pairs {
            assert_eq!(e.key(pair.0, pair.1), key, "{pair:?}");
        }
        for a in 0..1200 {
            for b in [0, 97, 100, 255, 256, 511, 512, 513, 1199, a] {
                let want = e.pairs.get(&(a, b)).copied().unwrap_or(NO_MERGE);
                assert_eq!(e.key(a, b), want, "({a}, {b})");
            }
        }
    }

    #[test]
    fn a_rank_or_id_of_u32_max_still_merges() {
        // The id (and rank) u32::MAX is allowed; "no merge" is told apart from it.
        let mut ranks = bytes_vocab()
            .into_iter()
            .map(|(i, t)| (t, i))
            .collect::<Vec<_>>();
        ranks.push((b"ab".to_vec(), u32::MAX));
        ranks.push((b"ba".to_vec(), 300));
        let e = Encoder::from_ranks(&ranks, &[], Pattern::Whole).unwrap();
        assert!(e.merged_ids.is_some());
        assert_ne!(e.key(97, 98), NO_MERGE);
        assert_eq!(e.key(98, 98), NO_MERGE);
        for (piece, want) in [
            (&b"abcab"[..], vec![u32::MAX, 99, u32::MAX]),
            (b"abab", vec![97, 300, 98]),
            (b"aba", vec![97, 300]),
            (b"abb", vec![u32::MAX, 98]),
        ] {
            let mut got = Vec::new();
            e.bpe(piece, &mut got, &mut Budget::never()).unwrap();
            assert_eq!(got, want, "{piece:?}");
            let mut large = Vec::new();
            e.bpe_large(piece, &mut large, &mut Budget::never())
                .unwrap();
            assert_eq!(large, want, "{piece:?}");
        }
    }

    #[test]
    fn random_merge_lists_encode_as_the_plain_loop_says() {
        let mut rng = Rng(4242);
        // Lists where a token is built twice rank apart from the ids (`pair_keys`).
        let mut ranked_apart = 0;
        for _ in 0..20 {
            // Random merges of tokens made so far, some listed twice or building a token that
            // an earlier merge already built another way.
            let mut vocab = bytes_vocab();
            let mut by_bytes: FxHashMap<Vec<u8>, u32> =
                vocab.iter().map(|(i, t)| (t.clone(), *i)).collect();
            let mut merges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut made: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
            for _ in 0..120 {
                let a = made[rng.below(made.len())].clone();
                let b = made[rng.below(made.len())].clone();
                let ab = [&a[..], &b[..]].concat();
                if ab.len() > 8 {
                    continue;
                }
                if !by_bytes.contains_key(&ab) {
                    let id = vocab.len() as u32;
                    by_bytes.insert(ab.clone(), id);
                    vocab.push((id, ab.clone()));
                    made.push(ab);
                }
                merges.push((a, b));
            }
            let e = Encoder::from_merges(&vocab, &merges, &[], Pattern::Whole).unwrap();
            ranked_apart += usize::from(e.merged_ids.is_some());
            let mut all: FxHashMap<Pair, (u32, u32)> = FxHashMap::default();
            for (n, (a, b)) in merges.iter().enumerate() {
                let ab = [&a[..], &b[..]].concat();
                all.entry((by_bytes[a], by_bytes[b]))
                    .or_insert((n as u32, by_bytes[&ab]));
            }
            for n in [2usize, 3, 7, 16, 64, 65, 90] {
                for _ in 0..30 {
                    let piece: Vec<u8> = (0..n).map(|_| b"abc"[rng.below(3)]).collect();
                    let mut got = Vec::new();
                    e.bpe(&piece, &mut got, &mut Budget::never()).unwrap();
                    assert_eq!(got, bpe_with_all_pairs(&all, &e.byte_ids, &piece));
                }
            }
        }
        assert!(ranked_apart > 0);
    }

    #[test]
    fn a_warm_cache_gives_the_ids_of_a_cold_one() {
        let e = toy();
        let mut x = 7u64;
        let mut text = String::new();
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 59) as usize + 1; // 1 to 32 letters
            let word: String = (0..len)
                .map(|i| ['a', 'b', 'c'][(x >> (i % 50)) as usize % 3])
                .collect();
            text.push_str(&word);
            text.push(' ');
        }
        let mut want = Vec::new();
        e.pattern
            .for_each_piece(&text, |p| want.extend(e.bpe_reference(p.as_bytes())));
        for _ in 0..3 {
            assert_eq!(e.encode(&text), want);
        }
    }

    #[test]
    fn ignore_merges_takes_whole_tokens() {
        // "abc" is a token that the merges do not build (they build "ab" + "c" -> no "abc").
        let mut v = bytes_vocab();
        v.push((256, b"ab".to_vec()));
        v.push((257, b"abc".to_vec()));
        let merges = vec![(b"a".to_vec(), b"b".to_vec())];
        let mut e = Encoder::from_merges(&v, &merges, &[], Pattern::Whole).unwrap();
        assert_eq!(e.encode("abc"), vec![256, u32::from(b'c')]);
        e.ignore_merges(&v);
        assert_eq!(e.encode("abc"), vec![257]);
        assert_eq!(
            e.encode("abcd"),
            vec![256, u32::from(b'c'), u32::from(b'd')]
        );
    }

    #[test]
    fn decode_round_trip() {
        let e = toy();
        let text = "abc aab <|e|> zz";
        assert_eq!(e.decode_bytes(&e.encode(text)).unwrap(), text.as_bytes());
        assert_eq!(
            e.decode_bytes(&[1_000_000]),
            Err(DecodeError::Unknown(1_000_000))
        );
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
                e.encode_batch(&texts, threads, true).unwrap(),
                want,
                "threads={threads}"
            );
        }
        let ordinary: Vec<Vec<u32>> = texts.iter().map(|t| e.encode_ordinary(t)).collect();
        assert_eq!(e.encode_batch(&texts, 2, false).unwrap(), ordinary);
        assert!(e.encode_batch::<&str>(&[], 2, true).unwrap().is_empty());
    }

    fn spare_entries(e: &Encoder) -> Vec<usize> {
        let spare = e.spare_caches.lock().unwrap();
        spare.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn batch_workers_keep_their_caches_from_call_to_call() {
        let e = toy();
        let texts: Vec<String> = (0..200).map(|i| format!("ab{i} aab abc{i}")).collect();
        let first = e.encode_batch(&texts, 3, true).unwrap();
        let held = spare_entries(&e);
        assert!(!held.is_empty() && held.len() <= 3, "{held:?}");
        // Short pieces go to the table the workers share, long ones to their own caches.
        let shared = e.shared.get().unwrap().as_ref().unwrap();
        let pieces = (10..200)
            .map(|i| i.to_string())
            .chain(["ab", " aab", " abc"].map(String::from));
        for p in pieces {
            let key = packed::pack(p.as_bytes()).unwrap();
            assert!(
                shared.get(key).is_some(),
                "the workers' piece {p:?} was kept"
            );
        }
        assert!(held.iter().all(|&n| n == 0), "{held:?}");
        // The next call's workers start from those caches, and the ids do not change.
        assert_eq!(e.encode_batch(&texts, 3, true).unwrap(), first);
        // (How many workers took a cache depends on timing: the calling thread takes one
        // only if it found work.)
        let again = spare_entries(&e);
        assert!(!again.is_empty() && again.len() <= 3, "{again:?}");
        // No more than MAX_SPARE_CACHES are kept, however many workers ran.
        e.encode_batch(&texts, 2 * MAX_SPARE_CACHES, true).unwrap();
        assert!(spare_entries(&e).len() <= MAX_SPARE_CACHES);
    }

    #[test]
    fn ignore_merges_forgets_the_pieces_batch_calls_kept() {
        let mut v = bytes_vocab();
        v.push((256, b"ab".to_vec()));
        v.push((257, b"abc".to_vec()));
        let merges = vec![(b"a".to_vec(), b"b".to_vec())];
        let mut e = Encoder::from_merges(&v, &merges, &[], Pattern::Whole).unwrap();
        let texts = vec!["abc"; 64];
        let before = e.encode_batch(&texts, 2, true).unwrap();
        assert_eq!(before[0], vec![256, u32::from(b'c')]);
        e.ignore_merges(&v);
        assert!(e
            .encode_batch(&texts, 2, true)
            .unwrap()
            .iter()
            .all(|ids| ids == &[257]));
    }

    fn bytes_vocab() -> Vec<(u32, Vec<u8>)> {
        (0..=255u8).map(|b| (b as u32, vec![b])).collect()
    }

    /// The bytes, then tokens of 2 to 6 of `letters` with the `ids` in random order (a token
    /// drawn twice is kept once).
    fn random_vocab(
        rng: &mut Rng,
        ids: std::ops::Range<u32>,
        letters: &[u8],
    ) -> Vec<(u32, Vec<u8>)> {
        let mut vocab = bytes_vocab();
        let mut seen: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut ids: Vec<u32> = ids.collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        for &id in &ids {
            let len = 2 + rng.below(5);
            let t: Vec<u8> = (0..len)
                .map(|_| letters[rng.below(letters.len())])
                .collect();
            if seen.insert(t.clone()) {
                vocab.push((id, t));
            }
        }
        vocab
    }

    #[test]
    fn empty_and_repeated_tokens_are_refused() {
        let mut v = bytes_vocab();
        v.push((256, Vec::new()));
        let e = Encoder::from_merges(&v, &[], &[], Pattern::Gpt2).err();
        assert_eq!(e, Some(BuildError::EmptyToken(256)));
        let mut v = bytes_vocab();
        v.push((97, b"ab".to_vec()));
        let e = Encoder::from_merges(&v, &[], &[], Pattern::Gpt2).err();
        assert_eq!(e, Some(BuildError::DuplicateId(97)));
        let e = Encoder::from_merges(&bytes_vocab(), &[], &[("".into(), 300)], Pattern::Gpt2);
        assert_eq!(e.err(), Some(BuildError::Specials(SpecialError::Empty(0))));
        let e = Encoder::from_merges(&bytes_vocab(), &[], &[("<|x|>".into(), 97)], Pattern::Gpt2);
        assert_eq!(
            e.err(),
            Some(BuildError::SpecialIdTaken("<|x|>".into(), 97))
        );
        // The id of a token with the same bytes, and an id shared with another special token.
        let same = [
            ("a".to_string(), 97),
            ("<|x|>".into(), 300),
            ("<|y|>".into(), 300),
        ];
        let enc = Encoder::from_merges(&bytes_vocab(), &[], &same, Pattern::Gpt2);
        assert!(enc.is_ok());
    }

    #[test]
    fn sparse_ids_cost_no_table_of_their_size() {
        let mut v = bytes_vocab();
        v.push((u32::MAX - 1, b"ab".to_vec()));
        let merges = [(b"a".to_vec(), b"b".to_vec())];
        let e = Encoder::from_merges(&v, &merges, &[("<|e|>".into(), 256)], Pattern::Gpt2).unwrap();
        assert!(e.dense_ids() <= 2 * 258 + 256);
        assert_eq!(e.encode("ab<|e|>"), vec![u32::MAX - 1, 256]);
        assert_eq!(e.decode_bytes(&[u32::MAX - 1, 256]).unwrap(), b"ab<|e|>");
        assert_eq!(e.max_id(), Some(u32::MAX - 1));
        assert!(e.ids_fit(4) && !e.ids_fit(2));
    }

    #[test]
    fn empty_pieces_add_nothing() {
        let e = toy();
        let mut out = Vec::new();
        e.encode_piece(b"", &mut out);
        e.encode_piece(b"abc", &mut out);
        assert_eq!(out, vec![257]);
    }

    #[test]
    fn a_budget_stops_a_long_piece() {
        let e = toy();
        let piece = b"ab".repeat(4 << 20);
        let mut polls = 0;
        let mut poll = || {
            polls += 1;
            polls == 3
        };
        let mut out = Vec::new();
        let r = e.bpe(&piece, &mut out, &mut Budget::new(&mut poll));
        assert_eq!((r, polls), (Err(Interrupted), 3));
        let text = "ab ".repeat(4 << 20);
        let r = e.encode_with_budget(&text, true, &mut Budget::new(&mut || true));
        assert_eq!(r, Err(Interrupted));
    }

    #[derive(Debug, PartialEq)]
    enum SinkError {
        Full,
        Panicked(Panicked),
    }

    impl From<Panicked> for SinkError {
        fn from(p: Panicked) -> Self {
            SinkError::Panicked(p)
        }
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
            &|| Ok(()),
            |ids| {
                assert_eq!(ids, [257]);
                seen += 1;
                if seen == 1234 {
                    Err(SinkError::Full)
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!((r, seen), (Err(SinkError::Full), 1234));
    }
}

#[cfg(test)]
mod bpe_timing {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// BPE alone on pieces (the distinct pieces of a text that are not tokens):
    /// `FASTBPE_BPE_DIR=dir cargo test --release bpe_throughput -- --ignored --nocapture`, the
    /// folder holding pieces.txt (hex, one per line) and either ranks.txt ("rank hex", a
    /// tiktoken vocabulary, split as cl100k) or vocab.txt ("id hex") and merges.txt ("hex hex").
    #[test]
    #[ignore]
    fn bpe_throughput() {
        let dir = std::path::PathBuf::from(std::env::var("FASTBPE_BPE_DIR").unwrap());
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let split = |l: &str| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        };
        let e = if dir.join("ranks.txt").exists() {
            let ranks: Vec<(Vec<u8>, u32)> = read("ranks.txt")
                .lines()
                .map(split)
                .map(|(i, h)| (unhex(&h), i.parse().unwrap()))
                .collect();
            Encoder::from_ranks(&ranks, &[], Pattern::Cl100k).unwrap()
        } else {
            let vocab: Vec<(u32, Vec<u8>)> = read("vocab.txt")
                .lines()
                .map(split)
                .map(|(i, h)| (i.parse().unwrap(), unhex(&h)))
                .collect();
            let merges: Vec<(Vec<u8>, Vec<u8>)> = read("merges.txt")
                .lines()
                .map(split)
                .map(|(a, b)| (unhex(&a), unhex(&b)))
                .collect();
            Encoder::from_merges(&vocab, &merges, &[], Pattern::Gpt2).unwrap()
        };
        let pieces: Vec<Vec<u8>> = read("pieces.txt").lines().map(unhex).collect();
        let mut best = f64::INFINITY;
        let mut out = Vec::new();
        for _ in 0..7 {
            out.clear();
            let t = std::time::Instant::now();
            for p in &pieces {
                let _ = e.bpe(p, &mut out, &mut Budget::never());
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{} pieces, {} ids: {:.1} ns per piece",
            pieces.len(),
            out.len(),
            best * 1e9 / pieces.len() as f64
        );
    }
}
