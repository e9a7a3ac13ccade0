//! The BPE merge loop.
//!
//! Semantics (the same as `fastbpe.reference.train_bpe`): a token is its byte string; each step
//! merges, in every word, the adjacent pair with the highest count over all word occurrences,
//! ties going to the greatest `(left bytes, right bytes)`. Occurrences are merged left to right
//! without overlap.
//!
//! Speed: pair counts are kept up to date incrementally (only words that contain the merged pair
//! are touched, and only around each occurrence) and the best pair comes from a max-heap whose
//! stale entries are skipped when popped.

use std::cmp::Ordering;
use std::collections::hash_map::Entry as MapEntry;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::input::Interrupted;
use crate::packed::prefetch;

type Pair = (u32, u32);

/// A max-heap of pairs with their counts when pushed, ordered by count and then by the pair's
/// bytes (`above`). Entries are 16 bytes (the bytes are looked up only when counts tie), so a
/// pop, which walks the heap from top to bottom, touches a third of the memory that entries
/// holding the bytes would.
struct PairHeap {
    items: Vec<(i64, Pair)>,
}

/// Whether `x` comes before `y`: the greater count, then the greater (left bytes, right bytes).
#[inline(always)]
fn above(x: &(i64, Pair), y: &(i64, Pair), tokens: &[Rc<[u8]>]) -> bool {
    match x.0.cmp(&y.0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => {
            let bytes = |id: u32| tokens.get(id as usize).map_or(&[][..], |t| &t[..]);
            (bytes(x.1 .0), bytes(x.1 .1)) > (bytes(y.1 .0), bytes(y.1 .1))
        }
    }
}

impl PairHeap {
    /// A heap of `items`, in O(n).
    fn new(items: Vec<(i64, Pair)>, tokens: &[Rc<[u8]>]) -> Self {
        let mut heap = PairHeap { items };
        for i in (0..heap.items.len() / 2).rev() {
            heap.sift_down(i, tokens);
        }
        heap
    }

    fn push(&mut self, item: (i64, Pair), tokens: &[Rc<[u8]>]) {
        let mut i = self.items.len();
        self.items.push(item);
        while i > 0 {
            let parent = (i - 1) / 2;
            match self.items.get(parent) {
                Some(p) if above(&item, p, tokens) => {
                    self.items.swap(i, parent);
                    i = parent;
                }
                _ => break,
            }
        }
    }

    fn pop(&mut self, tokens: &[Rc<[u8]>]) -> Option<(i64, Pair)> {
        let last = self.items.pop()?;
        let Some(top) = self.items.first_mut() else {
            return Some(last);
        };
        let top = std::mem::replace(top, last);
        self.sift_down(0, tokens);
        Some(top)
    }

    /// Moves the item at `i` down until neither child comes before it.
    fn sift_down(&mut self, mut i: usize, tokens: &[Rc<[u8]>]) {
        let items = &mut self.items;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let Some(left) = items.get(l) else { break };
            let child = match items.get(r) {
                Some(right) if above(right, left, tokens) => r,
                _ => l,
            };
            match (items.get(child), items.get(i)) {
                (Some(c), Some(x)) if above(c, x, tokens) => {
                    items.swap(i, child);
                    i = child;
                }
                _ => break,
            }
        }
    }
}

/// Symbols a word holds in its own record; longer words (few) keep theirs in an arena.
const INLINE: usize = 13;

/// A word: its count, its length and its symbols, or where they start in the arena when there
/// are more than `INLINE`. One cache line: the merge loop visits words scattered over memory
/// and waits on each word's memory, so a word is one wait, not one for the record and one for
/// its symbols.
#[repr(C, align(64))]
struct Word {
    count: i64,
    len: u32,
    /// The symbols if `len <= INLINE`, else the arena offset (low half, high half).
    syms: [u32; INLINE],
}

const _: () = assert!(std::mem::size_of::<Word>() == 64);

impl Word {
    /// A word of the symbols `bytes` (at least two, fewer than 2^32), longer ones put in `arena`.
    fn new(bytes: &[u8], count: i64, arena: &mut Vec<u32>) -> Word {
        let mut syms = [0u32; INLINE];
        if bytes.len() <= INLINE {
            for (s, &b) in syms.iter_mut().zip(bytes) {
                *s = u32::from(b);
            }
        } else {
            let start = arena.len() as u64;
            (syms[0], syms[1]) = (start as u32, (start >> 32) as u32);
            arena.extend(bytes.iter().map(|&b| u32::from(b)));
        }
        Word {
            count,
            len: bytes.len() as u32,
            syms,
        }
    }

    /// Where the symbols start in the arena (words longer than `INLINE`).
    #[inline(always)]
    fn start(&self) -> usize {
        (self.syms[0] as usize) | (self.syms[1] as usize) << 32
    }

    #[inline(always)]
    fn symbols<'w>(&'w self, arena: &'w [u32]) -> &'w [u32] {
        let n = self.len as usize;
        let syms = if n <= INLINE {
            self.syms.get(..n)
        } else {
            arena.get(self.start()..self.start() + n)
        };
        syms.unwrap_or_default()
    }

    #[inline(always)]
    fn symbols_mut<'w>(&'w mut self, arena: &'w mut [u32]) -> &'w mut [u32] {
        let n = self.len as usize;
        let start = self.start();
        let syms = if n <= INLINE {
            self.syms.get_mut(..n)
        } else {
            arena.get_mut(start..start + n)
        };
        syms.unwrap_or_default()
    }

    /// The word is now its first `n` symbols (a merge shortened it); they move into the record
    /// once they fit.
    #[inline(always)]
    fn shorten(&mut self, n: usize, arena: &[u32]) {
        if self.len as usize > INLINE && n <= INLINE {
            let start = self.start();
            if let (Some(to), Some(from)) = (self.syms.get_mut(..n), arena.get(start..start + n)) {
                to.copy_from_slice(from);
            }
        }
        // Merging only shortens a word, whose length fits in u32.
        self.len = n as u32;
    }
}

/// Merges in priority order, each as (left bytes, right bytes).
pub type Merges = Vec<(Vec<u8>, Vec<u8>)>;

/// Why training stopped without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainError {
    /// The hook asked to stop (Ctrl-C).
    Interrupted,
    /// The counts are beyond what the merge loop's integers hold (what, and the limit).
    TooLarge(String),
}

impl From<Interrupted> for TrainError {
    fn from(_: Interrupted) -> Self {
        TrainError::Interrupted
    }
}

/// Symbols processed between two calls of the hook: a few milliseconds of work, so that even
/// a merge over huge words (pattern None) stops promptly when asked.
const HOOK_EVERY: usize = 1 << 20;

/// Learns up to `num_merges` merges from words (piece bytes) and their counts.
///
/// Returns the merges as `(left bytes, right bytes)` in creation order; fewer than `num_merges`
/// when no pair is left (so any `num_merges`, however large, is fine: nothing is sized by it).
/// `hook(merges_done)` is called every few milliseconds of work and may stop it.
///
/// Limits: each word under 2^32 bytes, fewer than 2^32 distinct words, and the sum over words
/// of count times length under 2^63 (no pair count can then overflow).
pub fn train<'a, I>(
    words: I,
    num_merges: usize,
    hook: &mut dyn FnMut(usize) -> Result<(), Interrupted>,
) -> Result<Merges, TrainError>
where
    I: IntoIterator<Item = (&'a [u8], u64)>,
{
    // Token id -> bytes. Ids are canonical: one id per distinct byte string.
    let mut tokens: Vec<Rc<[u8]>> = (0..=255u8).map(|b| Rc::from(&[b][..])).collect();
    let mut token_ids: FxHashMap<Rc<[u8]>, u32> = FxHashMap::default();
    for (i, t) in (0u32..).zip(tokens.iter()) {
        token_ids.insert(t.clone(), i);
    }

    // The symbols of words longer than `INLINE`, one after another (one allocation per word
    // would scatter them).
    let mut syms: Vec<u32> = Vec::new();
    let words = words.into_iter();
    let mut words_at: Vec<Word> = Vec::with_capacity(words.size_hint().0);
    let mut weight: u128 = 0; // sum of count * length: bounds every pair count
    for (bytes, count) in words {
        if bytes.len() >= 2 {
            let too_large = |what: String| TrainError::TooLarge(what);
            let len = u32::try_from(bytes.len()).map_err(|_| {
                too_large(format!(
                    "a piece of {} bytes (the limit is 2^32 - 1)",
                    bytes.len()
                ))
            })?;
            if u32::try_from(words_at.len()).is_err() {
                return Err(too_large("more than 2^32 distinct pieces".into()));
            }
            weight += u128::from(count) * u128::from(len);
            let count = i64::try_from(count)
                .ok()
                .filter(|_| weight <= i64::MAX as u128);
            let Some(count) = count else {
                return Err(too_large(
                    "piece counts whose sum times the pieces' lengths reaches 2^63".into(),
                ));
            };
            words_at.push(Word::new(bytes, count, &mut syms));
        }
    }

    // Pair -> total count, and pair -> words that (may) contain it. Every word is still bytes,
    // so these start as tables indexed by the two bytes (no hashing per pair), moved into the
    // maps once.
    let mut byte_pair_counts = vec![0i64; 1 << 16];
    let mut byte_pair_words: Vec<Vec<u32>> = vec![Vec::new(); 1 << 16];
    let mut work = 0usize;
    for (wi, word) in (0u32..).zip(&words_at) {
        let w = word.symbols(&syms);
        let c = word.count;
        // In parts of HOOK_EVERY pairs (one part but for huge words), the hook between them.
        for (k, part) in w.chunks(HOOK_EVERY).enumerate() {
            if k > 0 {
                hook(0)?;
            }
            // The pairs that start in this part (the last one ends in the next).
            let end = (k * HOOK_EVERY + part.len() + 1).min(w.len());
            for p in w[k * HOOK_EVERY..end].windows(2) {
                // Symbols are bytes here: the index is below 2^16.
                let i = (p[0] as usize) << 8 | (p[1] as usize & 0xff);
                if let (Some(count), Some(list)) =
                    (byte_pair_counts.get_mut(i), byte_pair_words.get_mut(i))
                {
                    *count += c;
                    if list.last() != Some(&wi) {
                        list.push(wi);
                    }
                }
            }
        }
        work += w.len();
        if work >= HOOK_EVERY {
            work = 0;
            hook(0)?;
        }
    }
    let mut pair_counts: FxHashMap<Pair, i64> = FxHashMap::default();
    let mut where_: FxHashMap<Pair, Words> = FxHashMap::default();
    let mut runs: Vec<u32> = Vec::new();
    for (i, (count, list)) in (0u32..).zip(byte_pair_counts.into_iter().zip(byte_pair_words)) {
        if count > 0 {
            pair_counts.insert((i >> 8, i & 0xff), count);
            where_.insert((i >> 8, i & 0xff), Words::Own(list));
        }
    }
    let firsts = pair_counts.iter().map(|(&p, &c)| (c, p)).collect();
    let mut heap = PairHeap::new(firsts, &tokens);

    // Not sized by `num_merges`, which may be far more than the words allow.
    let mut merges = Vec::new();
    // What one merge changes, gathered while its words are rewritten and applied after.
    let mut changes = Changes::default();
    let mut deltas: FxHashMap<Pair, i64> = FxHashMap::default();
    while merges.len() < num_merges {
        let Some((top_count, top_pair)) = heap.pop(&tokens) else {
            break;
        };
        let current = pair_counts.get(&top_pair).copied().unwrap_or(0);
        if current != top_count {
            // Stale. A pair's entry is pushed when its count rises, not when it falls, so the
            // heap holds, for every pair, an entry at least its count: a fallen count goes
            // back in at its value; a risen one already has its own entry.
            if 0 < current && current < top_count {
                heap.push((current, top_pair), &tokens);
            }
            continue;
        }
        if current <= 0 {
            break;
        }
        let (a, b) = top_pair;
        let (Some(left), Some(right)) = (tokens.get(a as usize), tokens.get(b as usize)) else {
            break; // never: pairs are of tokens made
        };
        let (left, right) = (left.clone(), right.clone());
        let merged: Rc<[u8]> = Rc::from([&left[..], &right[..]].concat());
        let new_id = match token_ids.get(&merged) {
            Some(&id) => id,
            None => {
                let Ok(id) = u32::try_from(tokens.len()) else {
                    return Err(TrainError::TooLarge("more than 2^32 tokens".into()));
                };
                tokens.push(merged.clone());
                token_ids.insert(merged.clone(), id);
                id
            }
        };
        merges.push((left.to_vec(), right.to_vec()));

        let affected = match where_.remove(&top_pair) {
            Some(words) => words.into_vec(&runs),
            None => Vec::new(),
        };
        let done = merges.len();
        for (k, &wi) in affected.iter().enumerate() {
            // The words are scattered: start loading those a few steps ahead.
            if let Some(&ahead) = affected.get(k + PREFETCH_AHEAD) {
                prefetch(words_at.as_ptr().wrapping_add(ahead as usize));
            }
            let Some(word) = words_at.get_mut(wi as usize) else {
                continue; // never: ids come from the loop above
            };
            let count = word.count;
            let w = word.symbols_mut(&mut syms);
            work += w.len();
            let merged = if w.len() <= HOOK_EVERY {
                merge_word(w, (a, b), new_id, count, &mut changes, || Ok(()))
            } else {
                merge_word(w, (a, b), new_id, count, &mut changes, || hook(done))
            };
            let Some(new_len) = merged? else {
                continue;
            };
            if work >= HOOK_EVERY {
                work = 0;
                hook(done)?;
            }
            word.shorten(new_len, &syms);
            let w = word.symbols(&syms);
            // Register the word under every pair that now contains the new token.
            for p in w.windows(2) {
                let list = if p[1] == new_id {
                    changes.words_left.at(p[0])
                } else if p[0] == new_id {
                    changes.words_right.at(p[1])
                } else {
                    None
                };
                let Some(list) = list else { continue };
                if list.last() != Some(&wi) {
                    list.push(wi);
                }
            }
        }
        changes.pair_deltas((a, b), new_id, &mut deltas);
        for (pair, d) in deltas.drain() {
            if d == 0 {
                continue;
            }
            let c = pair_counts.entry(pair).or_insert(0);
            *c += d;
            let c = *c;
            if c > 0 {
                // Only a rise needs an entry (see the stale check above).
                if d > 0 {
                    heap.push((c, pair), &tokens);
                }
            } else {
                pair_counts.remove(&pair);
            }
        }
        let mut register = |pair: Pair, list: &mut Vec<u32>| {
            match where_.entry(pair) {
                MapEntry::Occupied(mut e) => e.get_mut().extend(list, &runs),
                MapEntry::Vacant(e) => {
                    e.insert(Words::run(list, &mut runs));
                }
            }
            list.clear();
        };
        changes
            .words_left
            .drain_with(|x, list| register((x, new_id), list));
        changes
            .words_right
            .drain_with(|x, list| register((new_id, x), list));
        if merges.len() % 64 == 0 || work >= HOOK_EVERY {
            work = 0;
            hook(merges.len())?;
        }
    }
    hook(merges.len())?;
    Ok(merges)
}

/// How many words ahead the merge loop asks for a word's memory.
const PREFETCH_AHEAD: usize = 12;

/// The words that (may) hold a pair: nearly every pair's are the words one merge gave it,
/// kept as a run in one array shared by all pairs (a list of its own for each of the
/// 10^5-10^6 pairs would cost an allocation and a free each).
enum Words {
    /// `runs[start..start + len]`: ascending, no repeats.
    Run { start: usize, len: usize },
    /// Any order, repeats possible.
    Own(Vec<u32>),
}

impl Words {
    /// A run of `list` (ascending, no repeats) appended to `runs`.
    fn run(list: &[u32], runs: &mut Vec<u32>) -> Words {
        let start = runs.len();
        runs.extend_from_slice(list);
        Words::Run {
            start,
            len: list.len(),
        }
    }

    /// The words, sorted and without repeats.
    fn into_vec(self, runs: &[u32]) -> Vec<u32> {
        match self {
            Words::Run { start, len } => runs.get(start..start + len).unwrap_or_default().to_vec(),
            Words::Own(mut list) => {
                list.sort_unstable();
                list.dedup();
                list
            }
        }
    }

    /// Adds `more` (a pair made again, by a merge whose result was already a token).
    fn extend(&mut self, more: &[u32], runs: &[u32]) {
        if let Words::Run { start, len } = *self {
            *self = Words::Own(runs.get(start..start + len).unwrap_or_default().to_vec());
        }
        if let Words::Own(list) = self {
            list.extend_from_slice(more);
        }
    }
}

/// What one merge of `(a, b)` into `new` changes, by the token beside each occurrence: the
/// merge loop adds to plain arrays indexed by token id where a map entry per occurrence would
/// cost a hash each, and turns them into pair count changes once per merge.
#[derive(Default)]
struct Changes {
    /// Occurrences merged, times their word's count: the change of `(a, b)`, negated.
    merged: i64,
    /// By the token `x` left of an occurrence: `(x, a)` falls and `(x, new)` rises by this.
    left: Beside<i64>,
    /// By the token `x` right of an occurrence: `(b, x)` falls and `(new, x)` rises by this.
    right: Beside<i64>,
    /// The words that now hold `(x, new)`, by `x`.
    words_left: Beside<Vec<u32>>,
    /// The words that now hold `(new, x)`, by `x` (`(new, new)` is under `words_left`).
    words_right: Beside<Vec<u32>>,
}

impl Changes {
    /// Puts the count changes into `deltas` (pairs that change twice once, with the sum) and
    /// starts over.
    fn pair_deltas(&mut self, (a, b): Pair, new: u32, deltas: &mut FxHashMap<Pair, i64>) {
        let mut add = |pair: Pair, d: i64| *deltas.entry(pair).or_insert(0) += d;
        add((a, b), -std::mem::take(&mut self.merged));
        self.left.drain(|x, d| {
            add((x, a), -d);
            add((x, new), d);
        });
        self.right.drain(|x, d| {
            add((b, x), -d);
            add((new, x), d);
        });
    }
}

/// Values by token id, and the ids touched since the last `drain`.
#[derive(Default)]
struct Beside<T> {
    by_id: Vec<T>,
    touched: Vec<u32>,
    seen: Vec<bool>,
}

impl<T: Default> Beside<T> {
    /// The value of `id`, which counts as touched (always Some: the table grows to hold it).
    #[inline(always)]
    fn at(&mut self, id: u32) -> Option<&mut T> {
        let i = id as usize;
        if i >= self.by_id.len() {
            // Ids are tokens made so far: this grows with the vocabulary, a few times.
            let len = (i + 1).next_power_of_two().max(512);
            self.by_id.resize_with(len, T::default);
            self.seen.resize(len, false);
        }
        let (seen, v) = (self.seen.get_mut(i)?, self.by_id.get_mut(i)?);
        if !*seen {
            *seen = true;
            self.touched.push(id);
        }
        Some(v)
    }

    /// Hands out every touched id with its value, left as `f` leaves it.
    fn drain_with(&mut self, mut f: impl FnMut(u32, &mut T)) {
        for id in self.touched.drain(..) {
            let i = id as usize;
            if let (Some(seen), Some(v)) = (self.seen.get_mut(i), self.by_id.get_mut(i)) {
                *seen = false;
                f(id, v);
            }
        }
    }

    /// Hands out every touched id with its value, leaving the default in its place.
    fn drain(&mut self, mut f: impl FnMut(u32, T)) {
        for id in self.touched.drain(..) {
            let i = id as usize;
            if let (Some(seen), Some(v)) = (self.seen.get_mut(i), self.by_id.get_mut(i)) {
                *seen = false;
                f(id, std::mem::take(v));
            }
        }
    }
}

/// Merges every non-overlapping occurrence of `(a, b)` in `w`, left to right and in place,
/// recording the change of each neighbouring pair's count (times the word's `count`) in
/// `changes`. Returns the new length if the word changed. `check` runs after every
/// `HOOK_EVERY` symbols of a long word and may stop the work.
#[inline]
fn merge_word(
    w: &mut [u32],
    (a, b): Pair,
    new_id: u32,
    count: i64,
    changes: &mut Changes,
    mut check: impl FnMut() -> Result<(), Interrupted>,
) -> Result<Option<usize>, Interrupted> {
    let n = w.len();
    // w[..out] holds the merged prefix; w[i..] is still to be read (out <= i).
    let mut out = 0;
    let mut i = 0;
    let mut changed = false;
    while i < n {
        let block_end = n.min(i + HOOK_EVERY);
        while i < block_end {
            if i + 1 < n && w[i] == a && w[i + 1] == b {
                changed = true;
                changes.merged += count;
                if out > 0 {
                    // The token now left of the merge (possibly merged itself just now): the
                    // pair it formed with `a` is gone and one with the new token appears.
                    if let Some(d) = changes.left.at(w[out - 1]) {
                        *d += count;
                    }
                }
                if i + 2 < n {
                    // Likewise on the right: (b, next) is gone, (new, next) appears.
                    if let Some(d) = changes.right.at(w[i + 2]) {
                        *d += count;
                    }
                }
                w[out] = new_id;
                i += 2;
            } else {
                w[out] = w[i];
                i += 1;
            }
            out += 1;
        }
        if i < n {
            check()?;
        }
    }
    Ok(changed.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn run(words: &[(&str, u64)], n: usize) -> Vec<(String, String)> {
        let ws = words.iter().map(|(w, c)| (w.as_bytes(), *c));
        train(ws, n, &mut |_| Ok(()))
            .unwrap()
            .into_iter()
            .map(|(l, r)| (String::from_utf8(l).unwrap(), String::from_utf8(r).unwrap()))
            .collect()
    }

    fn pair(l: &str, r: &str) -> (String, String) {
        (l.to_string(), r.to_string())
    }

    #[test]
    fn ties_go_to_the_greatest_pair() {
        // Pairs ("A","B"), ("A","C"), ("B","ZZ"), ("BA","A") all occur once at the end.
        let m = run(
            &[
                ("ZZ", 10),
                ("BA", 10),
                ("AB", 1),
                ("AC", 1),
                ("BZZ", 1),
                ("BAA", 1),
            ],
            3,
        );
        assert_eq!(m[0], pair("Z", "Z"));
        assert_eq!(m[1], pair("B", "A"));
        // Now ("BA","A"), ("A","B"), ("A","C"), ("B","ZZ") each count 1: ("BA","A") wins.
        assert_eq!(m[2], pair("BA", "A"));
    }

    /// The rule, readably: recount every pair, take the greatest (count, left, right), merge it
    /// left to right in every word.
    fn naive(words: &[(Vec<u8>, u64)], n: usize) -> Merges {
        let mut ws: Vec<(Vec<Vec<u8>>, u64)> = words
            .iter()
            .map(|(w, c)| (w.iter().map(|&b| vec![b]).collect(), *c))
            .collect();
        let mut merges = Merges::new();
        while merges.len() < n {
            let mut counts: std::collections::BTreeMap<(Vec<u8>, Vec<u8>), u64> =
                Default::default();
            for (w, c) in &ws {
                for p in w.windows(2) {
                    *counts.entry((p[0].clone(), p[1].clone())).or_insert(0) += c;
                }
            }
            let Some((best, _)) = counts
                .into_iter()
                .max_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)))
            else {
                break;
            };
            for (w, _) in &mut ws {
                let mut out: Vec<Vec<u8>> = Vec::new();
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && w[i] == best.0 && w[i + 1] == best.1 {
                        out.push([&best.0[..], &best.1[..]].concat());
                        i += 2;
                    } else {
                        out.push(w[i].clone());
                        i += 1;
                    }
                }
                *w = out;
            }
            merges.push(best);
        }
        merges
    }

    #[test]
    fn equals_the_readable_rule_on_random_words() {
        // Few letters and small counts: many ties, and counts that fall and rise again.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15u64);
        let mut next = move |n: u64| rng.below(n as usize) as u64;
        for _ in 0..30 {
            let words: Vec<(Vec<u8>, u64)> = (0..1 + next(40))
                .map(|_| {
                    let w = (0..1 + next(12))
                        .map(|_| b"abc\xe9"[next(4) as usize])
                        .collect();
                    (w, 1 + next(4))
                })
                .collect();
            let fast = train(words.iter().map(|(w, c)| (&w[..], *c)), 60, &mut |_| Ok(())).unwrap();
            assert_eq!(fast, naive(&words, 60), "{words:?}");
        }
    }

    #[test]
    fn equals_the_readable_rule_when_tokens_recur() {
        // Runs of two or three symbols (a token is often next to itself, and the same bytes
        // are made by two merges, "ab"+"a" and "a"+"ba"), bytes 0 and 255 at the ends of the
        // byte-pair tables, and one word far more frequent than the rest.
        let mut rng = Rng(0x2545_F491_4F6C_DD1Du64);
        let mut next = move |n: u64| rng.below(n as usize) as u64;
        for round in 0..150 {
            let alphabet: &[u8] = if round % 2 == 0 { b"ab" } else { b"\0\xff\x80" };
            let words: Vec<(Vec<u8>, u64)> = (0..1 + next(30))
                .map(|_| {
                    let w = (0..1 + next(20))
                        .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                        .collect();
                    let count = if next(10) == 0 { 1000 } else { 1 + next(3) };
                    (w, count)
                })
                .collect();
            let fast = train(words.iter().map(|(w, c)| (&w[..], *c)), 80, &mut |_| Ok(())).unwrap();
            assert_eq!(fast, naive(&words, 80), "{words:?}");
        }
    }

    #[test]
    fn word_lists_in_runs_and_their_own() {
        let mut runs = vec![9, 9];
        let a = Words::run(&[1, 4, 7], &mut runs);
        let b = Words::run(&[2, 3], &mut runs);
        assert_eq!(runs, [9, 9, 1, 4, 7, 2, 3]);
        // A pair made again gets a list of its own, sorted and without repeats when used.
        let mut c = Words::run(&[5, 8], &mut runs);
        c.extend(&[3, 8, 2], &runs);
        c.extend(&[1], &runs);
        assert_eq!(a.into_vec(&runs), [1, 4, 7]);
        assert_eq!(b.into_vec(&runs), [2, 3]);
        assert_eq!(c.into_vec(&runs), [1, 2, 3, 5, 8]);
        assert_eq!(Words::Own(vec![4, 4, 1]).into_vec(&runs), [1, 4]);
    }

    #[test]
    fn lecture_example() {
        // The lecture's `train_bpe("the cat in the hat", 3)` on raw bytes.
        let m = run(&[("the cat in the hat", 1)], 3);
        assert_eq!(m, vec![pair("t", "h"), pair("th", "e"), pair("the", " ")]);
    }

    #[test]
    fn overlapping_runs_merge_left_to_right() {
        let m = run(&[("aaaa", 1), ("aaa", 1)], 3);
        // aaaa: 3 (a,a); aaa: 2 -> merge (a,a): aaaa -> [aa,aa], aaa -> [aa,a]
        assert_eq!(m, vec![pair("a", "a"), pair("aa", "aa"), pair("aa", "a")]);
    }

    #[test]
    fn stops_when_no_pair_is_left() {
        let m = run(&[("ab", 5)], 10);
        assert_eq!(m, vec![pair("a", "b")]);
        // Nothing is sized by the number of merges asked for.
        let m = run(&[("ab", 5)], usize::MAX);
        assert_eq!(m, vec![pair("a", "b")]);
    }

    #[test]
    fn the_hook_runs_within_one_huge_word() {
        let word = "abcdefgh".repeat(1 << 20);
        let mut calls = 0;
        let r = train([(word.as_bytes(), 1)], 3, &mut |_| {
            calls += 1;
            if calls == 5 {
                Err(Interrupted)
            } else {
                Ok(())
            }
        });
        // Before the first merge is done: the pair counting and the merge check as they go.
        assert_eq!((r, calls), (Err(TrainError::Interrupted), 5));
    }

    #[test]
    fn counts_beyond_the_loop_integers_are_refused() {
        let r = train([(&b"ab"[..], u64::MAX)], 1, &mut |_| Ok(()));
        assert!(matches!(r, Err(TrainError::TooLarge(_))));
        let r = train(
            [(&b"ab"[..], 1 << 61), (&b"cd"[..], 1 << 61)],
            1,
            &mut |_| Ok(()),
        );
        assert!(matches!(r, Err(TrainError::TooLarge(_))));
    }
}
