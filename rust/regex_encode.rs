//! Encoding and counting with a custom regex (`regex_split::RegexSplitter`): texts in
//! parallel, and files cut into chunks that are split in parallel and stitched together
//! exactly.
//!
//! Where a file may be cut is not known for an arbitrary regex, so chunks are cut anywhere
//! (after a newline where one is near) and each worker splits its chunk from its first byte,
//! as if a piece began there, and on into the next chunk by up to `OVERLAP` bytes. A search
//! that starts at a given place gives the same matches whatever came before (the accepted
//! patterns do not look behind), so two splittings that pass through one common place (the
//! end of a piece in both, a "resume position") agree from there on. The stitcher follows the
//! splitting of the file from its start: in the overlap it finds the first resume position of
//! the previous chunk's splitting that is also one of the next chunk's, takes the previous
//! chunk's output up to there and the next one's from there. Where the two never meet in the
//! overlap (a piece longer than it), it splits again from the last place it knows, on one
//! thread. Near the end of what a worker was given, its last two matches are not trusted
//! (they might continue, or a look-ahead see other text), as in `fastbpe._stream.CustomStream`:
//! exact for patterns whose matches depend on at most the next two matches.

use std::io;
use std::path::Path;

use crate::count::{merge_all, Counts};
use crate::encode::{Budget, Encoder, IdsFile, PieceCache, Written};
use crate::input::{
    check_read_whole, file_length, open_file, read_more, InputError, Interrupted, Panicked,
};
use crate::pipeline::{self, thread_count, Batches, Halt, Pull, Stages};
use crate::regex_split::{RegexSplitter, SearchFailed};
use crate::specials::SpecialSplitter;

/// Bytes of a file per chunk.
pub const CHUNK: usize = 1 << 20;
/// Bytes of the next chunk a worker splits on into, where the two splittings should meet.
pub const OVERLAP: usize = 1 << 14;

/// What the threads of custom-regex work do, for the message of a panic.
const ENCODE_FILE: Stages = Stages {
    work: "encode_file (custom regex)",
    producer: "reading",
    worker: "splitting",
    consumer: "stitching",
};
const COUNT_FILE: Stages = Stages {
    work: "count_file (custom regex)",
    ..ENCODE_FILE
};
const ENCODE_BATCH: Stages = Stages {
    work: "encode_batch (custom regex)",
    ..ENCODE_FILE
};
const COUNT_TEXTS: Stages = Stages {
    work: "count_texts (custom regex)",
    producer: "batching",
    worker: "counting",
    consumer: "merging",
};

/// Why custom-regex work stopped.
#[derive(Debug)]
pub enum RegexError {
    /// fancy-regex gave up on a search: the caller uses the `regex` module instead.
    Search(SearchFailed),
    /// Reading or writing failed, the file is not UTF-8, or the hook asked to stop.
    File(InputError),
}

impl From<SearchFailed> for RegexError {
    fn from(e: SearchFailed) -> Self {
        RegexError::Search(e)
    }
}

impl From<Interrupted> for RegexError {
    fn from(_: Interrupted) -> Self {
        RegexError::File(InputError::Interrupted)
    }
}

impl From<Panicked> for RegexError {
    fn from(p: Panicked) -> Self {
        RegexError::File(InputError::Panicked(p))
    }
}

impl From<io::Error> for RegexError {
    fn from(e: io::Error) -> Self {
        RegexError::File(InputError::Io(e))
    }
}

impl From<InputError> for RegexError {
    fn from(e: InputError) -> Self {
        RegexError::File(e)
    }
}

/// What splitting produces: ids (encoding) or pieces (counting).
pub(crate) trait Output: Default + Send {
    fn len(&self) -> usize;
}

impl Output for Vec<u32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Pieces as byte ranges of the text they came from.
#[derive(Default)]
pub(crate) struct Pieces(Vec<(usize, usize)>);

impl Output for Pieces {
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// How pieces and special tokens turn into output.
pub(crate) trait Emit<O: Output> {
    /// The piece `stretch[a..b]`; the stretch starts at byte `offset` of the whole text.
    fn piece(
        &mut self,
        stretch: &str,
        a: usize,
        b: usize,
        offset: usize,
        out: &mut O,
    ) -> Result<(), Interrupted>;
    /// The special token with id `id`.
    fn special(&mut self, id: u32, out: &mut O);
}

/// Encoding: BPE on each piece.
pub(crate) struct EncodeEmit<'a, 'b> {
    enc: &'a Encoder,
    cache: PieceCache,
    budget: Budget<'b>,
}

impl Emit<Vec<u32>> for EncodeEmit<'_, '_> {
    #[inline]
    fn piece(
        &mut self,
        stretch: &str,
        a: usize,
        b: usize,
        _: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), Interrupted> {
        let piece = stretch.as_bytes().get(a..b).unwrap_or_default();
        self.budget.spend(piece.len())?;
        self.enc
            .encode_found_piece(piece, out, &mut self.cache, &mut self.budget)
    }

    fn special(&mut self, id: u32, out: &mut Vec<u32>) {
        out.push(id);
    }
}

/// Counting: the pieces' ranges in the whole text (special tokens are not pieces).
pub(crate) struct PieceEmit;

impl Emit<Pieces> for PieceEmit {
    #[inline]
    fn piece(
        &mut self,
        _: &str,
        a: usize,
        b: usize,
        offset: usize,
        out: &mut Pieces,
    ) -> Result<(), Interrupted> {
        out.0.push((offset + a, offset + b));
        Ok(())
    }

    fn special(&mut self, _: u32, _: &mut Pieces) {}
}

/// Special tokens: the matcher and the id of each of its tokens (none: not recognized).
#[derive(Clone, Copy)]
pub(crate) struct Specials<'a> {
    splitter: Option<&'a SpecialSplitter>,
    ids: &'a [u32],
}

impl<'a> Specials<'a> {
    fn of(enc: &'a Encoder, with_specials: bool) -> Self {
        Specials {
            splitter: with_specials.then(|| enc.special_splitter()),
            ids: enc.special_ids(),
        }
    }

    fn counting(splitter: &'a SpecialSplitter) -> Self {
        Specials {
            splitter: Some(splitter),
            ids: &[],
        }
    }

    /// The matches in `text`: (start, end, id).
    fn matches(self, text: &'a str) -> impl Iterator<Item = (usize, usize, u32)> + 'a {
        let ids = self.ids;
        self.splitter
            .into_iter()
            .flat_map(move |sp| sp.matches(text))
            .map(move |(s, e, k)| (s, e, ids.get(k).copied().unwrap_or(0)))
    }
}

/// Where a resume position is: a stretch's start, a match's end, or a stretch's end after text
/// no match covered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Start,
    Match,
    End,
}

/// Splits `text` (special tokens, then each stretch between them) into `out`; `mark(pos,
/// out_len, kind)` at every resume position (each stretch's start and end, and every match's
/// end), in order, with the length `out` had there.
fn split_text<O: Output>(
    re: &RegexSplitter,
    specials: Specials,
    text: &str,
    emit: &mut impl Emit<O>,
    out: &mut O,
    mark: &mut dyn FnMut(usize, usize, Mark),
) -> Result<(), RegexError> {
    let mut last = 0;
    for (start, end, id) in specials.matches(text) {
        split_stretch(re, text, last, start, emit, out, mark)?;
        emit.special(id, out);
        last = end;
    }
    split_stretch(re, text, last, text.len(), emit, out, mark)
}

/// Splits the stretch `text[from..to]` (what the pattern sees: its end is the text's end).
fn split_stretch<O: Output>(
    re: &RegexSplitter,
    text: &str,
    from: usize,
    to: usize,
    emit: &mut impl Emit<O>,
    out: &mut O,
    mark: &mut dyn FnMut(usize, usize, Mark),
) -> Result<(), RegexError> {
    let stretch = text.get(from..to).unwrap_or_default();
    mark(from, out.len(), Mark::Start);
    let mut at = 0;
    while at < stretch.len() {
        let Some((start, end)) = re.find_at(stretch, at)? else {
            break;
        };
        if end <= at {
            break; // no accepted pattern matches empty
        }
        if start > at {
            emit.piece(stretch, at, start, from, out)?;
        }
        emit.piece(stretch, start, end, from, out)?;
        at = end;
        mark(from + at, out.len(), Mark::Match);
    }
    if at < stretch.len() {
        emit.piece(stretch, at, stretch.len(), from, out)?;
        mark(to, out.len(), Mark::End);
    }
    Ok(())
}

// ---- texts -----------------------------------------------------------------------------------

/// The ids of `text`; with `with_specials`, special tokens become their ids.
pub fn encode_text(
    enc: &Encoder,
    re: &RegexSplitter,
    text: &str,
    with_specials: bool,
    budget: Budget,
) -> Result<Vec<u32>, RegexError> {
    let mut emit = EncodeEmit {
        enc,
        cache: PieceCache::default(),
        budget,
    };
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    let specials = Specials::of(enc, with_specials);
    split_text(re, specials, text, &mut emit, &mut out, &mut |_, _, _| {})?;
    emit.budget.check()?;
    Ok(out)
}

/// The ids of each text, on `num_threads` threads.
pub fn encode_batch<S: AsRef<str> + Sync>(
    enc: &Encoder,
    re: &RegexSplitter,
    texts: &[S],
    with_specials: bool,
    num_threads: usize,
) -> Result<Vec<Vec<u32>>, RegexError> {
    let mut all = Vec::with_capacity(texts.len());
    let sink = |ids: &[u32]| {
        all.push(ids.to_vec());
        Ok::<(), RegexError>(())
    };
    let wait = |take: &(dyn Fn() -> Option<_> + Sync)| take();
    encode_batch_in_order(
        enc,
        re,
        texts,
        with_specials,
        num_threads,
        wait,
        &|| Ok(()),
        sink,
    )?;
    Ok(all)
}

/// The ids of each text, on `num_threads` threads, handed to `sink` on the calling thread in
/// input order as `Encoder::encode_batch_in_order` does (`wait` and `poll` as there).
#[allow(clippy::too_many_arguments)]
pub fn encode_batch_in_order<S, W, E>(
    enc: &Encoder,
    re: &RegexSplitter,
    texts: &[S],
    with_specials: bool,
    num_threads: usize,
    wait: W,
    poll: &(dyn Fn() -> Result<(), E> + Sync),
    mut sink: impl FnMut(&[u32]) -> Result<(), E>,
) -> Result<(), E>
where
    S: AsRef<str> + Sync,
    W: FnMut(
        &(dyn Fn() -> Option<pipeline::Done<Vec<Vec<u32>>>> + Sync),
    ) -> Option<pipeline::Done<Vec<Vec<u32>>>>,
    E: Send + From<Panicked> + From<RegexError>,
{
    let specials = Specials::of(enc, with_specials);
    pipeline::ordered_groups(
        ENCODE_BATCH,
        texts,
        num_threads,
        PieceCache::default,
        |cache, part: &[S], poll| {
            let mut emit = EncodeEmit {
                enc,
                cache: std::mem::take(cache),
                budget: Budget::new(poll),
            };
            let mut all = Vec::with_capacity(part.len());
            let mut r = Ok(());
            for text in part {
                let text = text.as_ref();
                let mut out = Vec::with_capacity(text.len() / 4 + 1);
                r = split_text(re, specials, text, &mut emit, &mut out, &mut |_, _, _| {})
                    .and_then(|()| emit.budget.check().map_err(RegexError::from));
                if r.is_err() {
                    break;
                }
                all.push(out);
            }
            *cache = emit.cache;
            match r {
                Ok(()) => Ok(all),
                Err(RegexError::File(InputError::Interrupted)) => Err(Halt::Stopped),
                Err(e) => Err(Halt::Failed(e.into())),
            }
        },
        wait,
        poll,
        |all| all.iter().try_for_each(|ids| sink(ids)),
    )
}

/// Counts the pieces of each text (special tokens split them and are not counted) on
/// `num_threads` threads.
pub fn count_texts<S: AsRef<str> + Sync>(
    re: &RegexSplitter,
    specials: &SpecialSplitter,
    texts: &[S],
    num_threads: usize,
) -> Result<Counts, RegexError> {
    let threads = thread_count(num_threads).min(texts.len().max(1));
    let specials = Specials::counting(specials);
    let maps = pipeline::unordered(
        COUNT_TEXTS,
        threads,
        &mut Batches::<_, RegexError>::new(texts, threads, 16),
        || (Counts::default(), Pieces::default()),
        |(counts, pieces), run: &[S], _| {
            for text in run {
                let text = text.as_ref();
                pieces.0.clear();
                split_text(
                    re,
                    specials,
                    text,
                    &mut PieceEmit,
                    pieces,
                    &mut |_, _, _| {},
                )?;
                add_pieces(text.as_bytes(), &pieces.0, counts);
            }
            Ok(())
        },
    )?;
    Ok(merge_all(maps.into_iter().map(|(c, _)| c).collect()))
}

fn add_pieces(text: &[u8], pieces: &[(usize, usize)], counts: &mut Counts) {
    for &(a, b) in pieces {
        counts.add_within(text, a, b);
    }
}

// ---- files -----------------------------------------------------------------------------------

/// A part of a file handed to a worker: `buf` holds the chunk (`..end`) and the overlap after
/// it (`end..`); `ext_is_end`: the overlap ends where a stretch ends (a special token, or the
/// end of the file), so nothing after it can change its splitting.
struct Chunk {
    base: usize,
    buf: Vec<u8>,
    end: usize,
    ext_is_end: bool,
}

/// A chunk split: its output, and the resume positions (relative to `base`, with the output's
/// length there) near its start (`head`) and from its end on (`tail`), trusted ones only.
struct Done<O> {
    base: usize,
    buf: Vec<u8>,
    end: usize,
    ext_is_end: bool,
    out: O,
    head: Vec<(usize, usize)>,
    tail: Vec<(usize, usize)>,
}

/// How a file is cut (tests use small chunks to put cuts everywhere).
#[derive(Clone, Copy)]
pub struct Cutting {
    pub chunk: usize,
    pub overlap: usize,
}

impl Default for Cutting {
    fn default() -> Self {
        Cutting {
            chunk: CHUNK,
            overlap: OVERLAP,
        }
    }
}

/// Splits a chunk; `Err(offset)` for invalid UTF-8 in the chunk itself.
fn split_chunk<O: Output>(
    re: &RegexSplitter,
    specials: Specials,
    chunk: Chunk,
    overlap: usize,
    emit: &mut impl Emit<O>,
) -> Result<Done<O>, RegexError> {
    let Chunk {
        base,
        mut buf,
        end,
        mut ext_is_end,
    } = chunk;
    if let Err(e) = std::str::from_utf8(buf.get(..end).unwrap_or_default()) {
        return Err(InputError::InvalidUtf8 {
            offset: (base + e.valid_up_to()) as u64,
        }
        .into());
    }
    if let Err(e) = std::str::from_utf8(buf.get(end..).unwrap_or_default()) {
        // Reported with the next chunk; this one's splitting stops before it.
        buf.truncate(end + e.valid_up_to());
        ext_is_end = false;
    }
    let text = std::str::from_utf8(&buf).unwrap_or_default();
    let mut out = O::default();
    let mut marks: Vec<(usize, usize)> = Vec::new();
    // The last stretch's start and its last three match ends (a ring), for the trusted end.
    let mut stretch_start = 0;
    let mut last_ends = [0usize; 3];
    let mut matches = 0usize;
    let mut record = |pos: usize, len: usize, kind: Mark| {
        if pos <= overlap || pos >= end {
            marks.push((pos, len));
        }
        match kind {
            Mark::Start => (stretch_start, matches) = (pos, 0),
            Mark::Match => {
                last_ends[matches % 3] = pos;
                matches += 1;
            }
            Mark::End => {}
        }
    };
    split_text(re, specials, text, emit, &mut out, &mut record)?;
    // Where what follows is unknown, the last two matches are not trusted (they might
    // continue, or a look-ahead see other text): the resume positions after the end of the
    // third last match of the last stretch are dropped.
    let trusted = if ext_is_end {
        text.len()
    } else if matches >= 3 {
        last_ends[matches % 3]
    } else {
        stretch_start
    };
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    for &(pos, len) in marks.iter().filter(|m| m.0 <= trusted) {
        if pos <= overlap {
            head.push((pos, len));
        }
        if pos >= end {
            tail.push((pos, len));
        }
    }
    Ok(Done {
        base,
        buf,
        end,
        ext_is_end,
        out,
        head,
        tail,
    })
}

/// Reads `path` and hands chunks to `num_threads` workers (`pipeline::ordered`); `sink(done,
/// range)` gets, in file order, each chunk's output range that belongs to the splitting of the
/// whole file.
#[allow(clippy::too_many_arguments)]
fn run_file<'e, O: Output>(
    stages: Stages,
    path: &Path,
    re: &RegexSplitter,
    specials: Specials,
    num_threads: usize,
    cutting: Cutting,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    make_emit: &(dyn Fn() -> Box<dyn Emit<O> + 'e> + Sync),
    mut sink: impl FnMut(&Done<O>, std::ops::Range<usize>) -> Result<(), RegexError> + Send,
) -> Result<(), RegexError> {
    let chunk = cutting.chunk.max(16);
    let overlap = cutting.overlap.clamp(4, chunk / 4);
    let mut file = open_file(path)?;
    let mut source = Reader {
        len: file_length(&file).map_err(InputError::Io)?,
        file: &mut file,
        buf: Vec::new(),
        base: 0,
        read: 0,
        eof: false,
        chunk,
        overlap,
        max_special: specials.splitter.map_or(0, |s| s.max_len()),
        specials: specials.splitter,
    };
    // The splitting of the file so far: the chunk it is in, where it is (file offset) and the
    // length the chunk's output had there.
    let mut cur: Option<(Done<O>, usize, usize)> = None;
    pipeline::ordered(
        stages,
        num_threads,
        &mut source,
        hook,
        make_emit,
        |emit, c, _| split_chunk(re, specials, c, overlap, emit),
        |nxt| {
            cur = Some(match cur.take() {
                None => (nxt, 0, 0),
                Some((c, at, from)) => match sync(&c, at, &nxt) {
                    Some((pos, upto, resume)) => {
                        sink(&c, from..upto)?;
                        (nxt, pos, resume)
                    }
                    None => {
                        // Rare (a piece longer than the overlap): a fresh emitter will do.
                        let again = resplit(re, specials, &c, at, nxt, overlap, &mut make_emit())?;
                        (again, at, 0)
                    }
                },
            });
            Ok(())
        },
    )?;
    if let Some((c, _, from)) = cur {
        let n = c.out.len();
        sink(&c, from..n)?;
    }
    Ok(())
}

impl Pull for Reader<'_> {
    type Item = Chunk;
    type Error = RegexError;

    fn next(
        &mut self,
        poll: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Option<Chunk>, RegexError> {
        self.next_chunk(poll)
    }
}

/// The first resume position of `cur`'s splitting at or after file offset `at` that is also
/// one of `nxt`'s: (the offset, `cur`'s output length there, `nxt`'s).
fn sync<O>(cur: &Done<O>, at: usize, nxt: &Done<O>) -> Option<(usize, usize, usize)> {
    cur.tail.iter().find_map(|&(pos, upto)| {
        let abs = cur.base + pos;
        let rel = abs.checked_sub(nxt.base).filter(|_| abs >= at)?;
        let k = nxt.head.binary_search_by_key(&rel, |m| m.0).ok()?;
        Some((abs, upto, nxt.head.get(k)?.1))
    })
}

/// Splits again from file offset `at` (a resume position of the file's splitting, in `cur`)
/// through the end of `nxt`, on this thread: where the two chunks' splittings do not meet.
fn resplit<O: Output>(
    re: &RegexSplitter,
    specials: Specials,
    cur: &Done<O>,
    at: usize,
    nxt: Done<O>,
    overlap: usize,
    emit: &mut impl Emit<O>,
) -> Result<Done<O>, RegexError> {
    let mut buf = Vec::new();
    if at < nxt.base {
        buf.extend_from_slice(
            cur.buf
                .get(at.saturating_sub(cur.base)..nxt.base.saturating_sub(cur.base))
                .unwrap_or_default(),
        );
        buf.extend_from_slice(&nxt.buf);
    } else {
        buf.extend_from_slice(
            nxt.buf
                .get(at.saturating_sub(nxt.base)..)
                .unwrap_or_default(),
        );
    }
    let end = (nxt.base + nxt.end).saturating_sub(at);
    let chunk = Chunk {
        base: at,
        buf,
        end,
        ext_is_end: nxt.ext_is_end,
    };
    split_chunk(re, specials, chunk, overlap, emit)
}

/// Reads a file into chunks: each about `chunk` bytes, cut after a newline where there is one
/// in its second half and never inside a special token, with up to `overlap` bytes after it.
struct Reader<'a> {
    /// The file's length when opened (`input::check_read_whole`).
    len: Option<u64>,
    file: &'a mut std::fs::File,
    buf: Vec<u8>,
    base: usize,
    read: u64,
    eof: bool,
    chunk: usize,
    overlap: usize,
    max_special: usize,
    specials: Option<&'a SpecialSplitter>,
}

impl Reader<'_> {
    /// Appends the next `chunk` bytes of the file (fewer at its end) and tells `hook` how far
    /// the reading has come.
    fn read_block(
        &mut self,
        hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<(), RegexError> {
        let n = read_more(self.file, &mut self.buf, self.chunk).map_err(InputError::Io)?;
        self.read += n as u64;
        self.eof = n == 0;
        if self.eof {
            check_read_whole(self.len, self.read).map_err(InputError::Io)?;
        }
        hook(self.read)?;
        Ok(())
    }

    fn next_chunk(
        &mut self,
        hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Option<Chunk>, RegexError> {
        let want = self.chunk + self.overlap + self.max_special + 4;
        loop {
            while !self.eof && self.buf.len() < want {
                self.read_block(hook)?;
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            let (end, x, ext_is_end) = if self.eof && self.buf.len() <= self.chunk + self.overlap {
                (self.buf.len(), self.buf.len(), true)
            } else {
                match self.cut() {
                    Some(c) => c,
                    None if self.eof => (self.buf.len(), self.buf.len(), true),
                    None => {
                        // No place to cut yet (a special token's bytes throughout): read on.
                        self.read_block(hook)?;
                        continue;
                    }
                }
            };
            let chunk = Chunk {
                base: self.base,
                buf: self.buf.get(..x).unwrap_or_default().to_vec(),
                end,
                ext_is_end,
            };
            self.buf.drain(..end);
            self.base += end;
            return Ok(Some(chunk));
        }
    }

    /// A place no special token spans: between two bytes no special token holds together, at
    /// a character boundary.
    fn clean(&self, i: usize) -> bool {
        let b = &self.buf;
        i > 0
            && i < b.len()
            && b.get(i).is_some_and(|&c| (c as i8) >= -0x40)
            && !self.specials.is_some_and(|s| s.could_span(b, i))
    }

    /// (chunk end, overlap end, whether the overlap ends a stretch).
    fn cut(&self) -> Option<(usize, usize, bool)> {
        let b = &self.buf;
        let hi = self
            .chunk
            .min(b.len().saturating_sub(self.overlap + self.max_special + 1));
        let lo = hi / 2;
        let end = (lo..=hi)
            .rev()
            .find(|&i| b.get(i.wrapping_sub(1)) == Some(&b'\n') && self.clean(i))
            .or_else(|| (lo..=hi).rev().find(|&i| self.clean(i)))
            .or_else(|| (1..lo).rev().find(|&i| self.clean(i)))?;
        // The overlap ends at the first special token in it, else about `overlap` bytes on.
        let window_end = (end + self.overlap + self.max_special).min(b.len());
        let window = b.get(end..window_end).unwrap_or_default();
        let first_special = self.specials.and_then(|s| {
            let text = match std::str::from_utf8(window) {
                Ok(t) => t,
                Err(e) => std::str::from_utf8(window.get(..e.valid_up_to())?).ok()?,
            };
            s.matches(text).next().map(|m| m.0)
        });
        if let Some(a) = first_special.filter(|&a| a < self.overlap) {
            return Some((end, end + a, true));
        }
        let mut x = (end + self.overlap).min(b.len());
        while x > end && !(x == b.len() || self.clean(x)) {
            x -= 1;
        }
        Some((end, x, self.eof && x == b.len()))
    }
}

/// Encodes a UTF-8 file into little-endian ids (`width` bytes each) written to `out`; returns
/// the number of tokens and the file's checksum. Special tokens become their ids.
#[allow(clippy::too_many_arguments)]
pub fn encode_file(
    enc: &Encoder,
    re: &RegexSplitter,
    path: &Path,
    out: &Path,
    width: usize,
    num_threads: usize,
    cutting: Cutting,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Written, RegexError> {
    let mut writer = IdsFile::create(out, width, enc)?;
    let make = || -> Box<dyn Emit<Vec<u32>> + '_> {
        Box::new(EncodeEmit {
            enc,
            cache: PieceCache::default(),
            budget: Budget::never(),
        })
    };
    run_file(
        ENCODE_FILE,
        path,
        re,
        Specials::of(enc, true),
        num_threads,
        cutting,
        hook,
        &make,
        |done, range| Ok(writer.write(done.out.get(range).unwrap_or_default())?),
    )?;
    Ok(writer.finish()?)
}

/// Counts the pieces of a UTF-8 file (special tokens split it and are not counted).
pub fn count_file(
    re: &RegexSplitter,
    specials: &SpecialSplitter,
    path: &Path,
    num_threads: usize,
    cutting: Cutting,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Counts, RegexError> {
    let mut counts = Counts::default();
    let make = || -> Box<dyn Emit<Pieces>> { Box::new(PieceEmit) };
    run_file(
        COUNT_FILE,
        path,
        re,
        Specials::counting(specials),
        num_threads,
        cutting,
        hook,
        &make,
        |done, range| {
            add_pieces(
                &done.buf,
                done.out.0.get(range).unwrap_or_default(),
                &mut counts,
            );
            Ok(())
        },
    )?;
    Ok(counts)
}

impl<O: Output, E: Emit<O> + ?Sized> Emit<O> for Box<E> {
    #[inline]
    fn piece(
        &mut self,
        stretch: &str,
        a: usize,
        b: usize,
        offset: usize,
        out: &mut O,
    ) -> Result<(), Interrupted> {
        (**self).piece(stretch, a, b, offset, out)
    }

    fn special(&mut self, id: u32, out: &mut O) {
        (**self).special(id, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    #[test]
    fn file_counts_equal_the_whole_text_for_any_chunk_size() {
        let re = RegexSplitter::new(LLAMA3).unwrap();
        let sp = SpecialSplitter::new(&["<|e|>"]).unwrap();
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&format!("word{i} it's  {} \n\n", "x".repeat(i % 97)));
            text.push_str(&" ".repeat(i % 53));
            if i % 7 == 0 {
                text.push_str("<|e|>é中");
            }
        }
        let whole = count_texts(&re, &sp, &[text.as_str()], 1).unwrap();
        let dir = std::env::temp_dir().join(format!("fastbpe_regex_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        std::fs::write(&path, &text).unwrap();
        for chunk in [16, 33, 64, 257, 1000, 1 << 20] {
            let cutting = Cutting {
                chunk,
                overlap: chunk / 4,
            };
            let got = count_file(&re, &sp, &path, 3, cutting, &mut |_| Ok(())).unwrap();
            assert_eq!(got, whole, "chunk {chunk}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_while_it_is_read_is_an_error() {
        let dir =
            std::env::temp_dir().join(format!("fastbpe_regex_changed_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        std::fs::write(&path, "word it's  x\n\n".repeat(10_000)).unwrap();
        let mut file = open_file(&path).unwrap();
        let mut reader = Reader {
            len: Some(file.metadata().unwrap().len()),
            file: &mut file,
            buf: Vec::new(),
            base: 0,
            read: 0,
            eof: false,
            chunk: 4096,
            overlap: 1024,
            max_special: 0,
            specials: None,
        };
        let first = reader.next_chunk(&mut |_| Ok(()));
        assert!(matches!(first, Ok(Some(_))));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(50_000)
            .unwrap();
        let end = loop {
            match reader.next_chunk(&mut |_| Ok(())) {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        match end {
            Err(RegexError::File(InputError::Io(e))) => {
                assert!(e.to_string().contains("changed while it was read"), "{e}")
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("read to the end"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batches_equal_one_text_at_a_time_on_any_thread_count() {
        let re = RegexSplitter::new(LLAMA3).unwrap();
        let mut vocab: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (b as u32, vec![b])).collect();
        let merges = [(b"a".to_vec(), b"b".to_vec())];
        vocab.push((256, b"ab".to_vec()));
        let specials = [("<|e|>".to_string(), 257)];
        let enc =
            Encoder::from_merges(&vocab, &merges, &specials, crate::pretok::Pattern::Gpt2).unwrap();
        let texts: Vec<String> = (0..3000)
            .map(|i| format!("ab{} it's<|e|> {}", "x".repeat(i % 11), "ab ".repeat(i % 5)))
            .collect();
        let one = |t: &String| encode_text(&enc, &re, t, true, Budget::never()).unwrap();
        let want: Vec<Vec<u32>> = texts.iter().map(one).collect();
        let sp = SpecialSplitter::new(&["<|e|>"]).unwrap();
        let counts = count_texts(&re, &sp, &texts, 1).unwrap();
        for threads in [1, 2, 5] {
            let got = encode_batch(&enc, &re, &texts, true, threads).unwrap();
            assert_eq!(got, want, "threads={threads}");
            assert_eq!(count_texts(&re, &sp, &texts, threads).unwrap(), counts);
        }
        assert_eq!(counts.get(b" it"), Some(3000));
    }
}
