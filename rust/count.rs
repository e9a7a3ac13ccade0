//! Counting pre-tokens: text -> special-token split -> pieces -> `piece bytes -> count`.
//!
//! Files are read in chunks cut only where cutting cannot change the pieces, and the chunks are
//! counted in parallel, each worker in its own map; the maps are merged once at the end.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;

use crate::pretok::Pattern;

/// A map from piece bytes to the number of times the piece occurs.
pub type Counts = FxHashMap<Vec<u8>, u64>;

/// Why counting stopped early.
#[derive(Debug)]
pub enum CountError {
    /// Reading failed (missing file, a directory, permissions...).
    Io(io::Error),
    /// The file is not UTF-8: the byte offset of the first invalid sequence.
    InvalidUtf8 { offset: u64 },
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
    /// True when some special token contains a newline, which rules out newline cuts.
    has_newline: bool,
    /// Length in bytes of the longest special token.
    max_len: usize,
}

impl SpecialSplitter {
    pub fn new<S: AsRef<str>>(specials: &[S]) -> Self {
        let specials: Vec<&str> = specials
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| !s.is_empty())
            .collect();
        let matcher = if specials.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&specials)
                .ok()
        };
        let has_newline = specials.iter().any(|s| s.contains('\n'));
        let max_len = specials.iter().map(|s| s.len()).max().unwrap_or(0);
        SpecialSplitter {
            matcher,
            has_newline,
            max_len,
        }
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
    /// `new`, empty strings left out).
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

/// Where a buffer can be cut so that counting the two parts separately gives the same pieces
/// as counting the whole: just after a special token, or (for regex patterns) just after a
/// newline that has an ASCII letter or digit on both sides. Around such a newline every named
/// pattern ends a piece before and after it, whatever comes further on.
///
/// Why, for "x\ny" (x, y ASCII letters or digits), pattern by pattern:
/// - No piece holds x and the "\n": letter and number runs stop at "\n", contractions end in
///   a letter, and the pieces that take newlines after other characters (cl100k's
///   `[^\s\p{L}\p{N}]++[\r\n]*+`, o200k's `[^\s\p{L}\p{N}]+[\r\n/]*`, the whitespace
///   alternatives) cannot hold a letter or digit. So a piece ends just before the "\n".
/// - The piece starting at the "\n" is "\n" alone: the only alternatives that take a character
///   before letters (`[^\r\n\p{L}\p{N}]` in cl100k and o200k, ` ` in GPT-2) exclude "\n", and
///   a whitespace run starting there is just "\n" (y is not `\s`). In the whole text GPT-2
///   and o200k take it with `\s+` / `\s*[\r\n]+`, cl100k with `\s*[\r\n]` (its `\s++$`
///   fails on y). At the end of the first part GPT-2's `\s+(?!\S)`, cl100k's `\s++$` (`$` at
///   the very end; it can never stop before a final "\n", which the possessive `\s++` has
///   taken) and o200k's `\s*[\r\n]+` all take the same "\n".
/// - Every match attempt starting before the "\n" reads at most up to it: the alternatives scan
///   runs of one kind of character and then look at most one character further (a lookahead,
///   `$`, a contraction's next letter), and x ends every run but a letter or number run, which
///   the "\n" ends. So the pieces before the cut are the same in both, and the second part
///   starts a piece at y, as the whole text does.
///
/// Only cuts at or after `from` are looked for (earlier ones were looked for before).
pub(crate) fn last_safe_cut(
    buf: &[u8],
    from: usize,
    pattern: Pattern,
    specials: &SpecialSplitter,
) -> Option<usize> {
    if pattern != Pattern::Whole && !specials.has_newline {
        let lo = from.saturating_sub(2);
        let found = buf[lo..].windows(3).rposition(|w| {
            w[1] == b'\n' && w[0].is_ascii_alphanumeric() && w[2].is_ascii_alphanumeric()
        });
        if let Some(i) = found {
            return Some(lo + i + 2);
        }
    }
    let lo = from.saturating_sub(specials.max_len);
    specials.last_special_end(&buf[lo..]).map(|e| lo + e)
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

/// Reads a file in chunks of about `block` bytes cut only at safe places (`last_safe_cut`) and
/// hands each to `send(file offset, chunk)`, in order; `send` returns false to stop early.
/// `hook(bytes_read)` runs after every block and may stop the reading.
pub fn read_chunks(
    path: &Path,
    pattern: Pattern,
    specials: &SpecialSplitter,
    block: usize,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    mut send: impl FnMut(u64, Vec<u8>) -> bool,
) -> Result<(), CountError> {
    let mut file = open_file(path)?;
    let mut buf: Vec<u8> = Vec::with_capacity(block * 2);
    let mut offset = 0u64; // file offset of buf[0]
    let mut read_total = 0u64;
    loop {
        let old_len = buf.len();
        buf.resize(old_len + block, 0);
        let n = read_full(&mut file, &mut buf[old_len..])?;
        buf.truncate(old_len + n);
        read_total += n as u64;
        let eof = n == 0;
        let cut = if eof {
            Some(buf.len())
        } else {
            last_safe_cut(&buf, old_len, pattern, specials)
        };
        if let Some(cut) = cut.filter(|&c| c > 0) {
            let rest = buf.split_off(cut);
            let chunk = std::mem::replace(&mut buf, rest);
            let len = chunk.len() as u64;
            if !send(offset, chunk) {
                return Ok(());
            }
            offset += len;
        }
        if eof {
            return Ok(());
        }
        hook(read_total).map_err(|_| CountError::Interrupted)?;
    }
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
    let num_threads = num_threads.max(1);
    // Offset of the first invalid UTF-8 byte seen by any worker (u64::MAX: none yet).
    let first_bad = AtomicU64::new(u64::MAX);
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(num_threads);
    let rx = Mutex::new(rx);

    let result: Result<Vec<Counts>, CountError> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..num_threads)
            .map(|_| {
                let rx = &rx;
                let first_bad = &first_bad;
                scope.spawn(move || {
                    let mut counts = Counts::default();
                    // The lock is held only while waiting for the next chunk.
                    while let Some((offset, chunk)) = recv_shared(rx) {
                        match std::str::from_utf8(&chunk) {
                            Ok(text) => count_text(text, pattern, specials, &mut counts),
                            Err(e) => {
                                let at = offset + e.valid_up_to() as u64;
                                first_bad.fetch_min(at, Ordering::Relaxed);
                            }
                        }
                    }
                    counts
                })
            })
            .collect();
        let read_result = read_chunks(
            path,
            pattern,
            specials,
            COUNT_BLOCK,
            hook,
            |offset, chunk| {
                first_bad.load(Ordering::Relaxed) == u64::MAX && tx.send((offset, chunk)).is_ok()
            },
        );
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
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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
    let num_threads = num_threads.max(1).min(texts.len().max(1));
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
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                scope.spawn(move || {
                    let mut counts = Counts::default();
                    for t in g {
                        count_text(t.as_ref(), pattern, specials, &mut counts);
                    }
                    counts
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| worker_panicked()))
            .collect::<Result<Vec<Counts>, CountError>>()
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
        count_text(text, Pattern::Gpt2, &SpecialSplitter::new(specials), &mut c);
        c
    }

    #[test]
    fn specials_split_longest_first() {
        let sp = SpecialSplitter::new(&["<|a|>", "<|a|><|a|>"]);
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
        let sp = SpecialSplitter::new(&["<|endoftext|>"]);
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
        let sp = SpecialSplitter::new::<&str>(&[]);
        match count_file(&path, Pattern::Gpt2, &sp, 2, &mut |_| Ok(())) {
            Err(CountError::InvalidUtf8 { offset }) => assert_eq!(offset, 6),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
