//! Counting pre-tokens: text -> special-token split -> pieces -> `piece bytes -> count`.
//!
//! Files are read in chunks cut only where cutting cannot change the pieces, and the chunks are
//! counted in parallel, each worker in its own map; the maps are merged once at the end.

use std::path::Path;

use rustc_hash::FxHashMap;

use crate::input::{chunk_text, ChunkReader, HookedReader, InputError, Interrupted};
use crate::packed;
use crate::pipeline::{self, thread_count, Batches, Stages};
use crate::pretok::Pattern;
use crate::specials::SpecialSplitter;

/// Size of the blocks read from a file when counting; each chunk handed to a worker is about
/// this big (every worker keeps its own counts, so bigger chunks cost nothing).
const COUNT_BLOCK: usize = 4 << 20;

/// A map from piece bytes to the number of times the piece occurs.
///
/// Pieces of 1 to 15 bytes (nearly all) are keyed by their packed bytes (`packed::pack`),
/// stored in the table itself (`ShortTable`): counting a piece then hashes and compares one
/// integer and allocates nothing, where a `Vec<u8>` key costs a pointer to follow, a memory
/// compare and an allocation per distinct piece. Other pieces are keyed by their bytes.
#[derive(Default, Clone)]
pub struct Counts {
    short: ShortTable,
    long: FxHashMap<Vec<u8>, u64>,
}

/// An open-addressing table (linear probing) of packed pieces and their counts. A packed piece
/// of at least one byte is never 0 (its length is in the top byte), so 0 marks an empty slot.
#[derive(Default, Clone)]
struct ShortTable {
    /// A power of two long (or empty).
    slots: Vec<Slot>,
    len: usize,
}

#[cfg(test)]
thread_local! {
    /// Slots `ShortTable::find` has looked at on this thread (tests check that probes stay
    /// short).
    static PROBES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The packed piece as bytes: 24 bytes, 8-byte aligned (a u128 would make it 32), and the
/// piece's bytes can be lent out as a slice.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: [u8; 16],
    count: u64,
}

impl Slot {
    #[inline(always)]
    fn packed(&self) -> u128 {
        u128::from_le_bytes(self.key)
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.packed() == 0
    }

    /// The piece's bytes (the first `len` of the key, `len` in its top byte).
    fn bytes(&self) -> &[u8] {
        let n = usize::from(self.key[15]).min(packed::MAX_PACKED);
        self.key.get(..n).unwrap_or_default()
    }
}

/// The hash of a packed piece: both halves multiplied together (128-bit product, halves
/// folded), so every input bit reaches the low bits that pick the slot, in one multiplication.
/// Neither factor can be zero: the high half's top byte is the length (at most 15), and the
/// low half would have to be the bytes d3 08 a3 85 88 6a 3f 24, which are not UTF-8.
#[inline(always)]
fn hash(key: u128) -> u64 {
    let lo = (key as u64) ^ 0x243f_6a88_85a3_08d3;
    let hi = ((key >> 64) as u64) ^ 0xff51_afd7_ed55_8ccd;
    let m = u128::from(lo) * u128::from(hi);
    (m as u64) ^ ((m >> 64) as u64)
}

impl ShortTable {
    /// Slots in a new table: 2^16 (1.5 MB), about what a few MB of text fills.
    const FIRST: usize = 1 << 16;

    fn len(&self) -> usize {
        self.len
    }

    /// The slot of `key` (a nonzero packed piece): where it is, or the empty one where it
    /// would go. None only in a table without slots.
    #[inline(always)]
    fn find(&self, key: u128, h: u64) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = h as usize & mask;
        // The table is never full (`add` grows it at 3/4), so an empty slot ends the probe.
        loop {
            #[cfg(test)]
            PROBES.with(|p| p.set(p.get() + 1));
            let s = self.slots.get(i)?;
            let k = s.packed();
            if k == key || k == 0 {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn get(&self, key: u128) -> Option<u64> {
        let i = self.find(key, hash(key))?;
        self.slots.get(i).filter(|s| !s.is_empty()).map(|s| s.count)
    }

    /// Asks the CPU to load the slot where `key`'s probe starts (`h` its hash).
    #[inline(always)]
    fn prefetch(&self, h: u64) {
        let mask = self.slots.len().wrapping_sub(1);
        packed::prefetch(self.slots.as_ptr().wrapping_add(h as usize & mask));
    }

    /// Adds `n` to the count of `key` (a nonzero packed piece), `h` its hash; `set` replaces
    /// the count instead.
    #[inline(always)]
    fn add(&mut self, key: u128, h: u64, n: u64, set: bool) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let Some(slot) = self.find(key, h).and_then(|i| self.slots.get_mut(i)) else {
            return; // never: grown above
        };
        if slot.is_empty() {
            slot.key = key.to_le_bytes();
            self.len += 1;
        }
        slot.count = if set { n } else { slot.count + n };
    }

    /// Twice the slots (or the first ones), every entry moved to its new place.
    #[cold]
    fn grow(&mut self) {
        self.grow_to((self.slots.len() * 2).max(Self::FIRST));
    }

    /// Room for `entries` entries without growing.
    fn reserve(&mut self, entries: usize) {
        let mut size = self.slots.len().max(Self::FIRST);
        while (entries + 1).saturating_mul(4) > size.saturating_mul(3) {
            size *= 2;
        }
        if size > self.slots.len() {
            self.grow_to(size);
        }
    }

    /// `size` slots (a power of two, more than the entries), every entry moved to its place.
    #[cold]
    fn grow_to(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            let key = s.packed();
            if let Some(slot) = self
                .find(key, hash(key))
                .and_then(|i| self.slots.get_mut(i))
            {
                *slot = s;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter().filter(|s| !s.is_empty())
    }
}

/// Pieces whose slots were asked for and are not counted yet: counting each a few pieces
/// after asking lets the table's memory arrive meanwhile, where counting at once would wait
/// on every slot not in cache (the table of a large text is far larger than the cache).
struct Ahead {
    keys: [(u128, u64); Ahead::DEPTH],
    n: usize,
}

impl Ahead {
    const DEPTH: usize = 16;

    fn new() -> Self {
        Ahead {
            keys: [(0, 0); Ahead::DEPTH],
            n: 0,
        }
    }
}

impl Counts {
    /// Distinct pieces.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The count of `piece`, if it was counted.
    pub fn get(&self, piece: &[u8]) -> Option<u64> {
        match packed::pack(piece).filter(|&k| k != 0) {
            Some(k) => self.short.get(k),
            None => self.long.get(piece).copied(),
        }
    }

    /// Sets the count of `piece`.
    pub fn insert(&mut self, piece: &[u8], count: u64) {
        match packed::pack(piece).filter(|&k| k != 0) {
            Some(k) => self.short.add(k, hash(k), count, true),
            None => {
                self.long.insert(piece.to_vec(), count);
            }
        }
    }

    /// Adds `n` to the count of `piece`, whose key is `key` (`packed::pack(piece)`).
    #[inline(always)]
    fn add_keyed(&mut self, key: Option<u128>, piece: &[u8], n: u64) {
        match key.filter(|&k| k != 0) {
            Some(k) => self.short.add(k, hash(k), n, false),
            None => self.add_long(piece, n),
        }
    }

    fn add_long(&mut self, piece: &[u8], n: u64) {
        if let Some(c) = self.long.get_mut(piece) {
            *c += n;
        } else {
            self.long.insert(piece.to_vec(), n);
        }
    }

    /// Counts once the piece `text[at..end]` (nothing if that is not within `text`); the
    /// bytes after it make the key one load.
    #[inline(always)]
    pub fn add_within(&mut self, text: &[u8], at: usize, end: usize) {
        if let Some(piece) = text.get(at..end) {
            self.add_keyed(packed::pack_within(text, at, piece.len()), piece, 1);
        }
    }

    /// `add_within`, the count of a short piece made a few pieces later (`Ahead`); `finish`
    /// makes the rest.
    #[inline(always)]
    fn add_within_ahead(&mut self, text: &[u8], at: usize, end: usize, ahead: &mut Ahead) {
        let Some(piece) = text.get(at..end) else {
            return;
        };
        match packed::pack_within(text, at, piece.len()).filter(|&k| k != 0) {
            Some(k) => {
                let h = hash(k);
                self.short.prefetch(h);
                let i = ahead.n % Ahead::DEPTH;
                if let Some(slot) = ahead.keys.get_mut(i) {
                    let (old, old_h) = std::mem::replace(slot, (k, h));
                    if ahead.n >= Ahead::DEPTH {
                        self.short.add(old, old_h, 1, false);
                    }
                }
                ahead.n += 1;
            }
            None => self.add_long(piece, 1),
        }
    }

    /// Counts the pieces `ahead` still holds.
    fn finish(&mut self, ahead: Ahead) {
        let pending = ahead.n.min(Ahead::DEPTH);
        for &(k, h) in ahead.keys.iter().take(pending) {
            self.short.add(k, h, 1, false);
        }
    }

    /// Adds `n` to the count of `piece`.
    pub fn add(&mut self, piece: &[u8], n: u64) {
        self.add_keyed(packed::pack(piece), piece, n);
    }

    /// Every piece and its count, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let short = self.short.iter().map(|s| (s.bytes(), s.count));
        short.chain(self.long.iter().map(|(k, &c)| (&k[..], c)))
    }
}

impl PartialEq for Counts {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, c)| other.get(k) == Some(c))
    }
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, c)| (String::from_utf8_lossy(k), c)))
            .finish()
    }
}

/// Counts the pieces of `text` into `counts`.
pub fn count_text(text: &str, pattern: Pattern, specials: &SpecialSplitter, counts: &mut Counts) {
    let bytes = text.as_bytes();
    let mut ahead = Ahead::new();
    specials.for_each_segment(text, |segment| {
        pattern.for_each_piece(segment, |piece| {
            // The piece lies in `text`: pack it from there with one load.
            let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
            counts.add_within_ahead(bytes, at, at + piece.len(), &mut ahead);
        })
    });
    counts.finish(ahead);
}

/// Adds every count of `src` into `dst` (iterating the smaller map).
pub fn merge_counts(dst: &mut Counts, mut src: Counts) {
    if src.len() > dst.len() {
        std::mem::swap(dst, &mut src);
    }
    // Room for both first. `src` comes in the order of its slots, that is of its keys' hashes:
    // into a table of the same size, filling up as they come, they would meet `dst`'s own
    // entries slot after slot and pile into one cluster that every later key walks (two
    // threads' counts of 30 MB of distinct words took 13 s to merge, not 0.1). Made room for,
    // they come in two sweeps of `dst`'s memory, which the CPU reads ahead. The room is for
    // both lengths, so where the threads saw mostly the same pieces the table may be twice the
    // size its entries need (a hash seed per table would avoid both the cluster and that, but
    // every insert would then land at random in `dst`).
    dst.short.reserve(dst.short.len() + src.short.len());
    for s in src.short.iter() {
        let key = s.packed();
        dst.short.add(key, hash(key), s.count, false);
    }
    for (k, v) in src.long {
        *dst.long.entry(k).or_insert(0) += v;
    }
}

/// What the threads of counting do, for the message of a panic.
const COUNT_FILE: Stages = Stages {
    work: "count_file",
    producer: "reading",
    worker: "counting",
    consumer: "merging",
};
const COUNT_TEXTS: Stages = Stages {
    work: "count_texts",
    ..COUNT_FILE
};

/// Counts the pieces of a UTF-8 file on `num_threads` threads.
///
/// `hook(bytes_read)` is called from the calling thread after every block and while it waits;
/// it returns `Err(Interrupted)` to stop early.
pub fn count_file(
    path: &Path,
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Counts, InputError> {
    let mut reader = ChunkReader::open(path, pattern, specials, COUNT_BLOCK)?
        .spread_over(thread_count(num_threads));
    let maps = pipeline::unordered(
        COUNT_FILE,
        num_threads,
        &mut HookedReader {
            reader: &mut reader,
            hook,
        },
        Counts::default,
        |counts, (offset, chunk), _| {
            count_text(chunk_text(offset, &chunk)?, pattern, specials, counts);
            Ok(())
        },
    )?;
    Ok(merge_all(maps))
}

/// Counts the pieces of many texts on `num_threads` threads (each text on its own: pieces
/// never span two texts).
pub fn count_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
) -> Result<Counts, InputError> {
    let threads = thread_count(num_threads).min(texts.len().max(1));
    let maps = pipeline::unordered(
        COUNT_TEXTS,
        threads,
        &mut Batches::<_, InputError>::new(texts, threads, 4),
        Counts::default,
        |counts, run: &[S], _| {
            for t in run {
                count_text(t.as_ref(), pattern, specials, counts);
            }
            Ok(())
        },
    )?;
    Ok(merge_all(maps))
}

/// The counts of several maps added together.
pub fn merge_all(maps: Vec<Counts>) -> Counts {
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use std::io::Write;

    fn count_str(text: &str, specials: &[&str]) -> Counts {
        let mut c = Counts::default();
        count_text(
            text,
            Pattern::Gpt2,
            &SpecialSplitter::new(specials).unwrap(),
            &mut c,
        );
        c
    }

    #[test]
    fn counts_pieces() {
        let c = count_str("the cat the<|endoftext|> cat", &["<|endoftext|>"]);
        assert_eq!(c.get(b"the"), Some(1));
        assert_eq!(c.get(b" the"), Some(1));
        assert_eq!(c.get(b" cat"), Some(2));
        assert!(!c.iter().any(|(k, _)| k.windows(2).any(|w| w == b"<|")));
    }

    #[test]
    fn merging_two_large_counts_keeps_probes_short() {
        // Two tables about 70% full (180,000 keys in 262,144 slots), mostly different keys.
        let numbered = |from: u32| {
            let mut c = Counts::default();
            for i in from..from + 180_000 {
                c.add(format!("w{i}").as_bytes(), 1);
            }
            c
        };
        let (mut a, b) = (numbered(0), numbered(150_000));
        assert_eq!(a.short.slots.len(), 1 << 18);
        PROBES.with(|p| p.set(0));
        merge_counts(&mut a, b);
        assert_eq!(a.len(), 330_000);
        assert_eq!(a.get(b"w160000"), Some(2));
        assert_eq!(a.get(b"w329999"), Some(1));
        // Keys that come in the order of the other table's slots, put into a table of the same
        // size as it fills, once piled into one cluster that each walked: thousands of slots
        // a key instead of one or two.
        let probes = PROBES.with(|p| p.get());
        let per_key = probes as f64 / 180_000.0;
        assert!(per_key < 4.0, "{per_key:.1} slots looked at per key merged");
    }

    /// Random pieces around the packed keys' limit (15 bytes), ASCII and not, empty ones too.
    fn random_pieces(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng(seed | 1);
        let mut next = move |m: u64| rng.below(m as usize) as u64;
        let alphabet: [&[u8]; 6] = [b"a", b"b", b" ", b"\xc3\xa9", b"\xe2\x82\xac", b"\0"];
        (0..n)
            .map(|_| {
                let len = [0, 1, 2, 7, 8, 14, 15, 16, 17, 30][next(10) as usize];
                let mut p = Vec::new();
                while p.len() < len {
                    p.extend_from_slice(alphabet[next(6) as usize]);
                }
                p
            })
            .collect()
    }

    #[test]
    fn counts_equal_a_plain_map() {
        for seed in 1..40u64 {
            let pieces = random_pieces(seed * 0x9E37_79B9, 600);
            let mut plain: std::collections::HashMap<Vec<u8>, u64> = Default::default();
            let (mut a, mut b) = (Counts::default(), Counts::default());
            // Each piece also lies inside a text, as the counting loop sees it: followed by
            // other bytes (which the one-load key masks off) or at the very end.
            let text: Vec<u8> = pieces.concat();
            let mut at = 0;
            for (i, p) in pieces.iter().enumerate() {
                *plain.entry(p.clone()).or_insert(0) += 1 + i as u64 % 3;
                let half = if i % 2 == 0 { &mut a } else { &mut b };
                half.add_within(&text, at, at + p.len());
                half.add(p, i as u64 % 3);
                at += p.len();
            }
            merge_counts(&mut a, b);
            assert_eq!(a.len(), plain.len());
            for (k, v) in &plain {
                assert_eq!(a.get(k), Some(*v), "{k:?}");
            }
            let mut listed: Vec<(Vec<u8>, u64)> = a.iter().map(|(k, v)| (k.to_vec(), v)).collect();
            let mut want: Vec<(Vec<u8>, u64)> = plain.into_iter().collect();
            listed.sort();
            want.sort();
            assert_eq!(listed, want);
            assert_eq!(a.get(b"not counted"), None);
        }
    }

    #[test]
    fn text_counts_equal_a_plain_map_of_the_pieces() {
        // Enough distinct pieces that the table grows several times, of every length around
        // the packed keys' limit, ASCII and not; the last piece at the very end of the text.
        let mut rng = Rng(0x2545_F491_4F6C_DD1Du64);
        let mut next = move |m: u64| rng.below(m as usize) as u64;
        let letters = ["a", "b", "q", "\u{e9}", "\u{20ac}", "z"];
        let mut text = String::new();
        for i in 0..300_000 {
            let len = 1 + next(18);
            for _ in 0..len {
                text.push_str(letters[next(6) as usize]);
            }
            text.push_str(if i % 50 == 0 { "<|e|>" } else { " " });
        }
        text.push_str("tail");
        let sp = SpecialSplitter::new(&["<|e|>"]).unwrap();
        let mut counts = Counts::default();
        count_text(&text, Pattern::Gpt2, &sp, &mut counts);
        let mut plain: std::collections::HashMap<&[u8], u64> = Default::default();
        sp.for_each_segment(&text, |segment| {
            for piece in Pattern::Gpt2.split(segment) {
                *plain.entry(piece.as_bytes()).or_insert(0) += 1;
            }
        });
        assert!(plain.len() > 100_000, "{}", plain.len());
        assert_eq!(counts.len(), plain.len());
        for (k, v) in &plain {
            assert_eq!(counts.get(k), Some(*v), "{k:?}");
        }
        // Setting a count replaces it, for short and long pieces alike.
        for piece in [&b"ab"[..], b"a piece of more than fifteen bytes"] {
            counts.insert(piece, 7);
            assert_eq!(counts.get(piece), Some(7));
        }
    }

    #[test]
    fn file_in_chunks_equals_whole_text() {
        // Many lines so the file is cut into several chunks.
        let mut text = String::new();
        for i in 0..400_000 {
            text.push_str(&format!("line {i} of text, 'quoted'  \n"));
            if i % 1000 == 0 {
                text.push_str("<|endoftext|>");
            }
            if i % 777 == 0 {
                text.push_str("\n\n  \nA");
            }
        }
        let dir = std::env::temp_dir().join(format!("fastbpe_count_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.txt");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let sp = SpecialSplitter::new(&["<|endoftext|>"]).unwrap();
        let from_file = count_file(&path, Pattern::Gpt2, &sp, 3, &mut |_| Ok(())).unwrap();
        let mut whole = Counts::default();
        count_text(&text, Pattern::Gpt2, &sp, &mut whole);
        assert_eq!(from_file, whole);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_utf8_reports_offset() {
        let dir = std::env::temp_dir().join(format!("fastbpe_utf8_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.txt");
        std::fs::write(&path, b"hello \xff world").unwrap();
        let sp = SpecialSplitter::none();
        match count_file(&path, Pattern::Gpt2, &sp, 2, &mut |_| Ok(())) {
            Err(InputError::InvalidUtf8 { offset }) => assert_eq!(offset, 6),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
