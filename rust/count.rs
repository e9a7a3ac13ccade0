//! Counting pre-tokens: text -> special-token split -> pieces -> `piece bytes -> count`.
//!
//! Files are read in chunks cut only where cutting cannot change the pieces, and the chunks are
//! counted in parallel, each worker in its own map; the maps are merged once at the end.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;

use crate::pretok::{is_safe_cut, Pattern};

/// A map from piece bytes to the number of times the piece occurs.
pub type Counts = FxHashMap<Vec<u8>, u64>;

/// Why counting stopped early.
#[derive(Debug)]
pub enum CountError {
    /// Reading failed (missing file, a directory, permissions...).
    Io(io::Error),
    /// The file is not UTF-8: the byte offset of the first invalid sequence.
    InvalidUtf8 { offset: u64 },
    /// Writing the output failed (encoding a file).
    Write(io::Error),
    /// The progress hook asked to stop (Ctrl-C).
    Interrupted,
}

impl From<io::Error> for CountError {
    fn from(e: io::Error) -> Self {
        CountError::Io(e)
    }
}

/// Marker returned by a progress hook that wants the work to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Splits text on special tokens, leftmost match first and the longest one at a position.
#[derive(Clone)]
pub struct SpecialSplitter {
    matcher: Option<AhoCorasick>,
    /// Byte pairs that occur inside some special token (bit `256 * a + b` for bytes `a`, `b`;
    /// empty without special tokens): a cut between two such bytes could split one.
    inner_pairs: Vec<u64>,
    /// Length in bytes of the longest special token.
    max_len: usize,
}

/// Why special tokens were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecialError {
    /// An empty string (index in the list): it would match everywhere.
    Empty(usize),
    /// The matcher could not be built (too many or too long special tokens).
    TooLarge(String),
}

impl SpecialSplitter {
    /// Without special tokens.
    pub fn none() -> Self {
        SpecialSplitter {
            matcher: None,
            inner_pairs: Vec::new(),
            max_len: 0,
        }
    }

    pub fn new<S: AsRef<str>>(specials: &[S]) -> Result<Self, SpecialError> {
        let specials: Vec<&str> = specials.iter().map(|s| s.as_ref()).collect();
        if let Some(i) = specials.iter().position(|s| s.is_empty()) {
            return Err(SpecialError::Empty(i));
        }
        if specials.is_empty() {
            return Ok(Self::none());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&specials)
            .map_err(|e| SpecialError::TooLarge(e.to_string()))?;
        let mut inner_pairs = vec![0u64; 65536 / 64];
        for s in &specials {
            for w in s.as_bytes().windows(2) {
                let k = usize::from(w[0]) << 8 | usize::from(w[1]);
                inner_pairs[k / 64] |= 1 << (k % 64);
            }
        }
        let max_len = specials.iter().map(|s| s.len()).max().unwrap_or(0);
        Ok(SpecialSplitter {
            matcher: Some(matcher),
            inner_pairs,
            max_len,
        })
    }

    /// True when a special token could hold both byte `i - 1` and byte `i` of `buf`.
    pub(crate) fn could_span(&self, buf: &[u8], i: usize) -> bool {
        if self.inner_pairs.is_empty() {
            return false;
        }
        let (Some(&a), Some(&b)) = (i.checked_sub(1).and_then(|j| buf.get(j)), buf.get(i)) else {
            return true;
        };
        let k = usize::from(a) << 8 | usize::from(b);
        self.inner_pairs
            .get(k / 64)
            .is_none_or(|w| w >> (k % 64) & 1 != 0)
    }

    /// Calls `f` with each stretch of ordinary text between special tokens (special tokens
    /// themselves are skipped: training never merges them).
    #[inline]
    pub fn for_each_segment<'a>(&self, text: &'a str, mut f: impl FnMut(&'a str)) {
        match &self.matcher {
            None => f(text),
            Some(m) => {
                let mut last = 0;
                for mat in m.find_iter(text) {
                    f(&text[last..mat.start()]);
                    last = mat.end();
                }
                f(&text[last..]);
            }
        }
    }

    /// Special-token matches in `text`: (start, end, index of the token in the list given to
    /// `new`).
    pub fn matches<'a>(
        &'a self,
        text: &'a str,
    ) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
        self.matcher
            .iter()
            .flat_map(move |m| m.find_iter(text))
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
    }

    /// Length in bytes of the longest special token (0 if none).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// End of the last special token in `buf` that no longer special token could extend past
    /// the end of `buf` (the text after `buf` is not known yet).
    fn last_special_end(&self, buf: &[u8]) -> Option<usize> {
        let m = self.matcher.as_ref()?;
        m.find_iter(buf)
            .filter(|m| m.start() + self.max_len <= buf.len())
            .last()
            .map(|m| m.end())
    }
}

/// Counts the pieces of `text` into `counts`.
pub fn count_text(text: &str, pattern: Pattern, specials: &SpecialSplitter, counts: &mut Counts) {
    specials.for_each_segment(text, |segment| {
        pattern.for_each_piece(segment, |piece| {
            if let Some(c) = counts.get_mut(piece.as_bytes()) {
                *c += 1;
            } else {
                counts.insert(piece.as_bytes().to_vec(), 1);
            }
        })
    });
}

/// Adds every count of `src` into `dst` (iterating the smaller map).
pub fn merge_counts(dst: &mut Counts, mut src: Counts) {
    if src.len() > dst.len() {
        std::mem::swap(dst, &mut src);
    }
    for (k, v) in src {
        *dst.entry(k).or_insert(0) += v;
    }
}

/// Where a buffer can be cut so that counting (or encoding) the two parts separately gives the
/// same pieces as the whole, whatever follows the buffer: for the named patterns the last
/// place `pretok::is_safe_cut` allows (between a word and a space, before a newline after a
/// letter or digit, after a newline before a letter...) that no special token could span, else
/// just after the last special token that no longer one could extend past the buffer's end.
///
/// Only cuts at or after `from` are looked for (earlier ones were looked for before).
pub(crate) fn last_safe_cut(
    buf: &[u8],
    from: usize,
    pattern: Pattern,
    specials: &SpecialSplitter,
) -> Option<usize> {
    if pattern != Pattern::Whole {
        // A cut at `i` reads at most the four bytes from `i` on: earlier ones were decided
        // when the buffer ended at `from`.
        let lo = from.saturating_sub(4).max(1);
        let found = (lo..buf.len())
            .rev()
            .find(|&i| is_safe_cut(buf, i) && !specials.could_span(buf, i));
        if found.is_some() {
            return found;
        }
    }
    let lo = from.saturating_sub(specials.max_len);
    specials.last_special_end(buf.get(lo..)?).map(|e| lo + e)
}

/// Every place `last_safe_cut` may cut `buf` at, in order (for tests): the safe cuts no
/// special token could span, and the ends of special tokens no longer one could extend.
pub fn safe_cuts(buf: &[u8], pattern: Pattern, specials: &SpecialSplitter) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    if pattern != Pattern::Whole {
        cuts.extend(
            (1..buf.len()).filter(|&i| is_safe_cut(buf, i) && !specials.could_span(buf, i)),
        );
    }
    if let Some(m) = &specials.matcher {
        cuts.extend(
            m.find_iter(buf)
                .filter(|m| m.start() + specials.max_len <= buf.len())
                .map(|m| m.end()),
        );
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// For text where `last_safe_cut` finds nothing (a long stretch without spaces or newlines in
/// the right places): a boundary between two pieces found by splitting the buffer
/// (`Pattern::last_split_cut`), before the first special token in it and at least the longest
/// special token's length before its end, so that no special token of the whole text starts
/// before the cut plus the margin the splitter reads (one that did would lie inside the buffer
/// and be the first match in it). None for `Whole`, and where the buffer is one piece.
pub(crate) fn split_cut(buf: &[u8], pattern: Pattern, specials: &SpecialSplitter) -> Option<usize> {
    let text = match std::str::from_utf8(buf) {
        Ok(t) => t,
        // The invalid byte is reported when its chunk is decoded; cut before it if possible.
        Err(e) => std::str::from_utf8(buf.get(..e.valid_up_to())?).ok()?,
    };
    let first_special = specials.matches(text).next().map_or(text.len(), |m| m.0);
    let limit = first_special.min(buf.len().saturating_sub(specials.max_len));
    pattern.last_split_cut(text.get(..first_special)?, limit)
}

/// Size of the blocks read from a file when counting; each chunk handed to a worker is about
/// this big (every worker keeps its own counts, so bigger chunks cost nothing).
const COUNT_BLOCK: usize = 4 << 20;

/// Opens a file for reading, refusing directories with `IsADirectory`.
fn open_file(path: &Path) -> Result<File, CountError> {
    if std::fs::metadata(path)?.is_dir() {
        return Err(CountError::Io(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        )));
    }
    Ok(File::open(path)?)
}

/// Reads a file in chunks of about `block` bytes cut only at safe places (`last_safe_cut`),
/// in order.
///
/// Memory: a chunk ends at the last safe cut; where the named patterns give none, at a piece
/// boundary found by splitting once the buffer holds twice `block` (`split_cut`, tried again
/// at twice the size while it finds none, so splitting stays linear). Only a single piece
/// longer than that (a run of letters, or with `Pattern::Whole` the text between special
/// tokens) makes a chunk longer.
pub struct ChunkReader<'a> {
    file: File,
    pattern: Pattern,
    specials: &'a SpecialSplitter,
    block: usize,
    buf: Vec<u8>,
    /// File offset of buf[0].
    offset: u64,
    read_total: u64,
    /// Buffer length from which `split_cut` is tried.
    split_at: usize,
    eof: bool,
}

impl<'a> ChunkReader<'a> {
    pub fn open(
        path: &Path,
        pattern: Pattern,
        specials: &'a SpecialSplitter,
        block: usize,
    ) -> Result<Self, CountError> {
        let block = block.max(1);
        Ok(ChunkReader {
            file: open_file(path)?,
            pattern,
            specials,
            block,
            buf: Vec::with_capacity(block * 2),
            offset: 0,
            read_total: 0,
            split_at: block * 2,
            eof: false,
        })
    }

    /// Bytes read from the file so far.
    pub fn bytes_read(&self) -> u64 {
        self.read_total
    }

    /// The next chunk and its file offset; None at the end. `hook(bytes_read)` runs after
    /// every block read and may stop the reading.
    pub fn next_chunk(
        &mut self,
        hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Option<(u64, Vec<u8>)>, CountError> {
        while !self.eof {
            let old_len = self.buf.len();
            self.buf.resize(old_len + self.block, 0);
            let n = read_full(&mut self.file, &mut self.buf[old_len..])?;
            self.buf.truncate(old_len + n);
            self.read_total += n as u64;
            self.eof = n == 0;
            hook(self.read_total).map_err(|_| CountError::Interrupted)?;
            let cut = if self.eof {
                Some(self.buf.len())
            } else {
                self.cut(old_len)
            };
            if let Some(cut) = cut.filter(|&c| c > 0) {
                let rest = self.buf.split_off(cut);
                let chunk = std::mem::replace(&mut self.buf, rest);
                let offset = self.offset;
                self.offset += chunk.len() as u64;
                self.split_at = self.block * 2;
                return Ok(Some((offset, chunk)));
            }
        }
        Ok(None)
    }

    /// Where to cut the buffer, whose bytes from `from` on are new.
    fn cut(&mut self, from: usize) -> Option<usize> {
        let (buf, pattern, specials) = (&self.buf, self.pattern, self.specials);
        if let Some(cut) = last_safe_cut(buf, from, pattern, specials) {
            return Some(cut);
        }
        if buf.len() < self.split_at {
            return None;
        }
        let found = split_cut(buf, pattern, specials);
        if found.is_none() {
            self.split_at = self.split_at.saturating_mul(2);
        }
        found
    }
}

/// The most threads one call starts: more than the machine has only adds overhead, and the
/// bound keeps a huge `num_threads` from exhausting memory.
pub const MAX_THREADS: usize = 256;

/// `num_threads` as used: at least 1, at most `MAX_THREADS`.
pub fn thread_count(num_threads: usize) -> usize {
    num_threads.clamp(1, MAX_THREADS)
}

/// Starts a scoped thread, or says why the system would not.
pub(crate) fn spawn<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new().spawn_scoped(scope, f)
}

/// Counts the pieces of a UTF-8 file on `num_threads` threads.
///
/// `hook(bytes_read)` is called from the calling thread after every block; it returns
/// `Err(Interrupted)` to stop early.
pub fn count_file(
    path: &Path,
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Counts, CountError> {
    let num_threads = thread_count(num_threads);
    let mut reader = ChunkReader::open(path, pattern, specials, COUNT_BLOCK)?;
    // Offset of the first invalid UTF-8 byte seen by any worker (u64::MAX: none yet).
    let first_bad = AtomicU64::new(u64::MAX);
    // Set when reading fails or is interrupted: the workers skip the chunks still queued.
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(num_threads);
    let rx = Mutex::new(rx);

    let result: Result<Vec<Counts>, CountError> = std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(num_threads);
        for _ in 0..num_threads {
            let (rx, first_bad, stop) = (&rx, &first_bad, &stop);
            let started = spawn(scope, move || {
                let mut counts = Counts::default();
                // The lock is held only while waiting for the next chunk.
                while let Some((offset, chunk)) = recv_shared(rx) {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    match std::str::from_utf8(&chunk) {
                        Ok(text) => count_text(text, pattern, specials, &mut counts),
                        Err(e) => {
                            let at = offset + e.valid_up_to() as u64;
                            first_bad.fetch_min(at, Ordering::Relaxed);
                        }
                    }
                }
                counts
            });
            match started {
                Ok(w) => workers.push(w),
                // Fewer threads than asked for still count everything.
                Err(_) if !workers.is_empty() => break,
                Err(e) => return Err(CountError::Io(e)),
            }
        }
        let mut read_all = || -> Result<(), CountError> {
            while let Some((offset, chunk)) = reader.next_chunk(hook)? {
                if first_bad.load(Ordering::Relaxed) != u64::MAX
                    || tx.send((offset, chunk)).is_err()
                {
                    break;
                }
            }
            Ok(())
        };
        let read_result = read_all();
        if read_result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(tx);
        let maps: Result<Vec<Counts>, CountError> = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| worker_panicked()))
            .collect();
        read_result.and(maps)
    });
    let maps = result?;
    let bad = first_bad.load(Ordering::Relaxed);
    if bad != u64::MAX {
        return Err(CountError::InvalidUtf8 { offset: bad });
    }
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    Ok(total)
}

/// Next message from a receiver shared by several workers; None when the sender is gone.
pub(crate) fn recv_shared<T>(rx: &Mutex<mpsc::Receiver<T>>) -> Option<T> {
    rx.lock().ok()?.recv().ok()
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
pub(crate) fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Counts the pieces of many texts on `num_threads` threads (each text on its own: pieces
/// never span two texts).
pub fn count_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
) -> Result<Counts, CountError> {
    let num_threads = thread_count(num_threads).min(texts.len().max(1));
    if num_threads == 1 {
        let mut counts = Counts::default();
        for t in texts {
            count_text(t.as_ref(), pattern, specials, &mut counts);
        }
        return Ok(counts);
    }
    // Split by total length so each thread gets about the same amount of text.
    let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
    let per = total / num_threads + 1;
    let mut groups: Vec<&[S]> = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, t) in texts.iter().enumerate() {
        acc += t.as_ref().len();
        if acc >= per {
            groups.push(&texts[start..=i]);
            start = i + 1;
            acc = 0;
        }
    }
    if start < texts.len() {
        groups.push(&texts[start..]);
    }
    let maps = std::thread::scope(|scope| {
        let count_group = move |g: &[S]| {
            let mut counts = Counts::default();
            for t in g {
                count_text(t.as_ref(), pattern, specials, &mut counts);
            }
            counts
        };
        let mut handles = Vec::with_capacity(groups.len());
        let mut here = Vec::new(); // groups no thread could be started for: counted here
        for g in groups {
            match spawn(scope, move || count_group(g)) {
                Ok(h) => handles.push(h),
                Err(_) => here.push(count_group(g)),
            }
        }
        let mut maps = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| worker_panicked()))
            .collect::<Result<Vec<Counts>, CountError>>()?;
        maps.extend(here);
        Ok::<_, CountError>(maps)
    })?;
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    Ok(total)
}

pub(crate) fn worker_panicked() -> CountError {
    CountError::Io(io::Error::other("a counting thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn specials_split_longest_first() {
        let sp = SpecialSplitter::new(&["<|a|>", "<|a|><|a|>"]).unwrap();
        let mut segs = Vec::new();
        sp.for_each_segment("x<|a|><|a|>y<|a|>z", |s| segs.push(s));
        assert_eq!(segs, vec!["x", "y", "z"]);
    }

    #[test]
    fn counts_pieces() {
        let c = count_str("the cat the<|endoftext|> cat", &["<|endoftext|>"]);
        assert_eq!(c[b"the".as_slice()], 1);
        assert_eq!(c[b" the".as_slice()], 1);
        assert_eq!(c[b" cat".as_slice()], 2);
        assert!(!c.keys().any(|k| k.windows(2).any(|w| w == b"<|")));
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

    fn chunk_sizes(text: &str, pattern: Pattern, specials: &[&str]) -> Vec<usize> {
        let dir = std::env::temp_dir().join(format!("fastbpe_chunks_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{pattern:?}.txt"));
        std::fs::write(&path, text).unwrap();
        let sp = SpecialSplitter::new(specials).unwrap();
        let mut reader = ChunkReader::open(&path, pattern, &sp, 1 << 16).unwrap();
        let mut sizes = Vec::new();
        while let Some((_, chunk)) = reader.next_chunk(&mut |_| Ok(())).unwrap() {
            sizes.push(chunk.len());
        }
        std::fs::remove_file(&path).unwrap();
        sizes
    }

    #[test]
    fn chunks_stay_small_without_newline_cuts() {
        // Spaces after words give cuts in every block.
        let sizes = chunk_sizes(
            &"The cat sat on the mat.\n".repeat(100_000),
            Pattern::Gpt2,
            &[],
        );
        assert!(
            sizes.len() > 30 && sizes.iter().all(|&n| n <= (1 << 16) + 24),
            "{sizes:?}"
        );
        // No cheap cut at all: a piece boundary found by splitting, at twice the block.
        let text = "|---|---|\r\n".repeat(100_000);
        for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
            let sizes = chunk_sizes(&text, p, &["<|e|>"]);
            assert!(
                sizes.len() > 5 && sizes.iter().all(|&n| n <= (2 << 16) + 24),
                "{p:?} {sizes:?}"
            );
        }
        // Without a pattern the text between special tokens is one piece.
        assert_eq!(chunk_sizes(&text, Pattern::Whole, &[]), vec![text.len()]);
    }

    #[test]
    fn empty_special_tokens_are_refused() {
        assert_eq!(
            SpecialSplitter::new(&["a", ""]).err(),
            Some(SpecialError::Empty(1))
        );
    }

    #[test]
    fn invalid_utf8_reports_offset() {
        let dir = std::env::temp_dir().join(format!("fastbpe_utf8_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.txt");
        std::fs::write(&path, b"hello \xff world").unwrap();
        let sp = SpecialSplitter::none();
        match count_file(&path, Pattern::Gpt2, &sp, 2, &mut |_| Ok(())) {
            Err(CountError::InvalidUtf8 { offset }) => assert_eq!(offset, 6),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
