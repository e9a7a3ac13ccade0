//! Reading input: files read in chunks cut only where cutting cannot change the pieces, the
//! places text may be cut, and why reading (or the work fed by it) stopped.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::pipeline::{Pull, Source};
use crate::pretok::{is_safe_cut, Pattern};
use crate::specials::SpecialSplitter;

/// Why work on input (counting or encoding a file or texts) stopped early.
#[derive(Debug)]
pub enum InputError {
    /// Reading failed (missing file, a directory, permissions...).
    Io(io::Error),
    /// The file is not UTF-8: the byte offset of the first invalid sequence.
    InvalidUtf8 { offset: u64 },
    /// Writing the output failed (encoding a file).
    Write(io::Error),
    /// The progress hook asked to stop (Ctrl-C).
    Interrupted,
    /// A thread of the work panicked (a bug): which stage it was.
    Panicked(Panicked),
}

impl From<io::Error> for InputError {
    fn from(e: io::Error) -> Self {
        InputError::Io(e)
    }
}

impl From<Interrupted> for InputError {
    fn from(_: Interrupted) -> Self {
        InputError::Interrupted
    }
}

impl From<Panicked> for InputError {
    fn from(p: Panicked) -> Self {
        InputError::Panicked(p)
    }
}

/// Marker returned by a progress hook that wants the work to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// A thread panicked: the stage it ran (`"reading"`, `"encoding"`, `"writing"`...) and the work
/// it was part of (`"encode_file"`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked {
    pub work: &'static str,
    pub stage: &'static str,
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {} thread of {} panicked (a bug in fastbpe; please report it)",
            self.stage, self.work
        )
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
    let lo = from.saturating_sub(specials.max_len());
    specials.settled_ends(buf.get(lo..)?).last().map(|e| lo + e)
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
    cuts.extend(specials.settled_ends(buf));
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
    let limit = first_special.min(buf.len().saturating_sub(specials.max_len()));
    pattern.last_split_cut(text.get(..first_special)?, limit)
}

/// Opens a file for reading, refusing directories with `IsADirectory`.
pub(crate) fn open_file(path: &Path) -> Result<File, InputError> {
    if std::fs::metadata(path)?.is_dir() {
        return Err(InputError::Io(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        )));
    }
    Ok(File::open(path)?)
}

/// The length of `file` where it is a regular file (None for a pipe, a device...).
pub(crate) fn file_length(file: &File) -> io::Result<Option<u64>> {
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some(meta.len()))
}

/// Err unless a file whose length was `len` when it was opened gave `read` bytes by its end:
/// it was truncated or written to while being read, and the ids of what was read would be those
/// of no version of it. `len` is None where the length says nothing (not a regular file, or an
/// empty one: files in /proc report 0).
pub(crate) fn check_read_whole(len: Option<u64>, read: u64) -> io::Result<()> {
    match len.filter(|&n| n > 0) {
        Some(n) if n != read => Err(io::Error::other(format!(
            "the file changed while it was read ({n} bytes when opened, {read} at its end); \
             encode a copy that nothing writes to"
        ))),
        _ => Ok(()),
    }
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
    /// The file's length when opened, where it is a regular file.
    size: Option<u64>,
    /// The workers the chunks go to (`spread_over`).
    workers: usize,
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
    ) -> Result<Self, InputError> {
        let block = block.max(1);
        let file = open_file(path)?;
        let size = file_length(&file)?;
        Ok(ChunkReader {
            file,
            pattern,
            specials,
            block,
            size,
            workers: 1,
            buf: Vec::with_capacity(block * 2),
            offset: 0,
            read_total: 0,
            split_at: block * 2,
            eof: false,
        })
    }

    /// Chunks for `workers` workers: smaller ones towards the end of the file (down to
    /// `TAIL_BLOCK`), so that the workers finish together instead of all but one waiting
    /// while the last full chunk is encoded.
    pub fn spread_over(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The smallest chunk read towards the end of a file (`spread_over`).
    const TAIL_BLOCK: usize = 1 << 16;

    /// How much to read next: `block`; for several workers, `TAIL_BLOCK` first, so that the
    /// first starts within a short read of the call's start and the second reads while it
    /// works, and towards the end of a file a share of what is left (a file that grew, or one
    /// of unknown length, is read in whole blocks).
    fn next_block(&self) -> usize {
        if self.workers < 2 {
            return self.block;
        }
        if self.read_total == 0 {
            return Self::TAIL_BLOCK.min(self.block);
        }
        let left = self.size.map_or(0, |s| s.saturating_sub(self.read_total));
        if left == 0 {
            return self.block;
        }
        let share = left / (2 * self.workers as u64);
        usize::try_from(share)
            .unwrap_or(usize::MAX)
            .clamp(Self::TAIL_BLOCK.min(self.block), self.block)
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
    ) -> Result<Option<(u64, Vec<u8>)>, InputError> {
        while !self.eof {
            let old_len = self.buf.len();
            let want = self.next_block();
            let n = read_more(&mut self.file, &mut self.buf, want)?;
            self.read_total += n as u64;
            self.eof = n == 0;
            if self.eof {
                check_read_whole(self.size, self.read_total)?;
            }
            hook(self.read_total)?;
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

/// A `ChunkReader` as a pipeline's source: `hook(bytes_read)` runs after every block read and
/// while the pipeline waits, and may stop the work.
pub struct HookedReader<'r, 'a> {
    pub reader: &'r mut ChunkReader<'a>,
    pub hook: &'r mut dyn FnMut(u64) -> Result<(), Interrupted>,
}

impl Source for HookedReader<'_, '_> {
    type Item = (u64, Vec<u8>);
    type Error = InputError;

    fn next(&mut self) -> Result<Option<Self::Item>, InputError> {
        self.reader.next_chunk(self.hook)
    }

    fn idle(&mut self) -> Result<(), Interrupted> {
        (self.hook)(self.reader.bytes_read())
    }
}

impl Pull for ChunkReader<'_> {
    type Item = (u64, Vec<u8>);
    type Error = InputError;

    fn next(
        &mut self,
        poll: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Option<Self::Item>, InputError> {
        self.next_chunk(poll)
    }
}

/// The text of a chunk read at file offset `offset`, or where its first invalid UTF-8 byte is.
pub fn chunk_text(offset: u64, chunk: &[u8]) -> Result<&str, InputError> {
    // The SIMD check says only whether the chunk is valid; std's finds where it is not.
    if let Ok(text) = simdutf8::basic::from_utf8(chunk) {
        return Ok(text);
    }
    std::str::from_utf8(chunk).map_err(|e| InputError::InvalidUtf8 {
        offset: offset + e.valid_up_to() as u64,
    })
}

/// Appends the next `n` bytes of `file` to `buf` (fewer where the file ends) and returns how
/// many; the new bytes are read straight into `buf`'s spare room, never first set to zero.
pub(crate) fn read_more(file: &mut File, buf: &mut Vec<u8>, n: usize) -> io::Result<usize> {
    buf.try_reserve(n)
        .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
    // `read_to_end` reads on after an interrupted read, as a loop of reads would.
    file.take(n as u64).read_to_end(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_sizes(text: &str, pattern: Pattern, specials: &[&str]) -> Vec<usize> {
        spread_chunks(text, pattern, specials, 1 << 16, 1)
    }

    /// The sizes of the chunks of `text` read in blocks of `block` for `workers` workers,
    /// checked to be the text, in order.
    fn spread_chunks(
        text: &str,
        pattern: Pattern,
        specials: &[&str],
        block: usize,
        workers: usize,
    ) -> Vec<usize> {
        let dir = std::env::temp_dir().join(format!("fastbpe_chunks_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{pattern:?}_{block}_{workers}.txt"));
        std::fs::write(&path, text).unwrap();
        let sp = SpecialSplitter::new(specials).unwrap();
        let mut reader = ChunkReader::open(&path, pattern, &sp, block)
            .unwrap()
            .spread_over(workers);
        let (mut sizes, mut whole) = (Vec::new(), Vec::new());
        while let Some((offset, chunk)) = reader.next_chunk(&mut |_| Ok(())).unwrap() {
            assert_eq!(offset, whole.len() as u64);
            sizes.push(chunk.len());
            whole.extend_from_slice(&chunk);
        }
        std::fs::remove_file(&path).unwrap();
        assert!(whole == text.as_bytes());
        sizes
    }

    #[test]
    fn a_file_that_changes_while_it_is_read_is_an_error() {
        let dir = std::env::temp_dir().join(format!("fastbpe-changed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("text.txt");
        let text = "The cat sat on the mat.\n".repeat(20_000); // 480 KB
        let specials = SpecialSplitter::new::<&str>(&[]).unwrap();
        let read_all = |change: &dyn Fn()| {
            std::fs::write(&path, &text).unwrap();
            let mut reader = ChunkReader::open(&path, Pattern::Gpt2, &specials, 1 << 16).unwrap();
            change();
            let mut total = 0;
            loop {
                match reader.next_chunk(&mut |_| Ok(())) {
                    Ok(Some((_, chunk))) => total += chunk.len(),
                    Ok(None) => return Ok(total),
                    Err(InputError::Io(e)) => return Err(e.to_string()),
                    Err(e) => panic!("{e:?}"),
                }
            }
        };
        assert_eq!(read_all(&|| ()), Ok(text.len()));
        let file = || std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let shorter = || file().set_len(100_000).unwrap();
        let empty = || file().set_len(0).unwrap();
        let longer = || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"more\n").unwrap();
        };
        let changes: [&dyn Fn(); 3] = [&shorter, &empty, &longer];
        for change in changes {
            let e = read_all(change).unwrap_err();
            assert!(e.contains("changed while it was read"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chunk_text_names_the_first_invalid_byte_wherever_it_is() {
        // Text of one- to four-byte characters, so that the SIMD check's blocks end inside
        // characters; each invalid byte in turn, and its offset in the file.
        let text = "ab\u{e9}\u{4e2d}\u{1f600} ".repeat(40);
        assert_eq!(chunk_text(7, text.as_bytes()).ok(), Some(text.as_str()));
        for at in 0..text.len() {
            for bad in [0x80u8, 0xc0, 0xff] {
                let mut bytes = text.clone().into_bytes();
                bytes[at] = bad;
                let want = std::str::from_utf8(&bytes)
                    .err()
                    .map(|e| 7 + e.valid_up_to() as u64);
                match chunk_text(7, &bytes) {
                    Ok(t) => assert_eq!((want, t.as_bytes()), (None, &bytes[..])),
                    Err(InputError::InvalidUtf8 { offset }) => assert_eq!(Some(offset), want),
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
    }

    #[test]
    fn chunks_shrink_towards_the_end_when_spread_over_workers() {
        let text = "The cat sat on the mat.\n".repeat(400_000); // 9.6 MB
        let block = 1 << 20;
        let one = spread_chunks(&text, Pattern::Gpt2, &[], block, 1);
        // One worker: whole blocks, but for what the last read leaves.
        let short = one.iter().filter(|&&n| n < block - 30).count();
        assert!(short <= 2, "{one:?}");
        let two = spread_chunks(&text, Pattern::Gpt2, &[], block, 2);
        // The tail block, then whole blocks while a quarter of what is left is more, then a
        // quarter of what is left, down to the tail block.
        let tail = ChunkReader::TAIL_BLOCK;
        assert!(two.len() > one.len() + 4, "{two:?}");
        assert!(two[0] <= tail && two[0] > tail - 30, "{two:?}");
        assert!(two[1] > block - 30 && two[1] <= block + 30, "{two:?}");
        assert!(
            two[1..].windows(2).rev().skip(1).all(|w| w[1] <= w[0] + 30),
            "{two:?}"
        );
        assert!(two.iter().rev().skip(2).all(|&n| n + 30 > tail), "{two:?}");
        assert!(two.iter().any(|&n| n < 2 * tail), "{two:?}");
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
}
