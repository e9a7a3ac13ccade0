//! Pre-tokenization: splitting text into the pieces BPE works inside.
//!
//! The named patterns are hand-written state machines that return exactly the pieces Python's
//! `regex.findall(PATTERN, text)` returns (the Python tests check this on random Unicode text).
//! They classify characters with tables generated from the `regex` module itself
//! (`scripts/gen_unicode_tables.py`), so `\s`, `\p{L}` and `\p{N}` mean what they mean there.

use crate::unicode_tables::{CLASS_BLOCKS, CLASS_INDEX, LL, LM, LO, LT, LU, M, N, OTHER, WS};

/// GPT-2's pattern, as tiktoken's `gpt2`/`r50k_base` encodings write it (equivalent to
/// GPT-2's encoder.py: `'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
/// These constants are the patterns' only spelling: `fastbpe.patterns` reads them from
/// `fastbpe._core.PATTERNS`.
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// tiktoken's `cl100k_base` pattern (GPT-3.5/GPT-4).
pub const CL100K_PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+",
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
);

/// tiktoken's `o200k_base` pattern (GPT-4o).
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+"
);

/// How a segment of text is cut into pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2's regex (`GPT2_PATTERN`).
    Gpt2,
    /// cl100k_base's regex (`CL100K_PATTERN`).
    Cl100k,
    /// o200k_base's regex (`O200K_PATTERN`).
    O200k,
    /// No pre-tokenization: the whole segment is one piece.
    Whole,
}

impl Pattern {
    /// Calls `f` with each piece of `text`, in order; the pieces concatenate to `text`.
    #[inline]
    pub fn for_each_piece<'a>(self, text: &'a str, mut f: impl FnMut(&'a str)) {
        let done: Result<(), std::convert::Infallible> = self.try_for_each_piece(text, |p| {
            f(p);
            Ok(())
        });
        match done {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }

    /// Like `for_each_piece`, stopping at the first error `f` returns.
    #[inline]
    pub fn try_for_each_piece<'a, E>(
        self,
        text: &'a str,
        f: impl FnMut(&'a str) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Pattern::Gpt2 => pieces(text, gpt2_piece_end, f),
            Pattern::Cl100k => pieces(text, cl100k_piece_end, f),
            Pattern::O200k => pieces(text, o200k_piece_end, f),
            Pattern::Whole if text.is_empty() => Ok(()),
            Pattern::Whole => {
                let mut f = f;
                f(text)
            }
        }
    }

    /// The end of the last piece boundary of `text` found by splitting it that holds whatever
    /// follows `text` and ends at most at `limit`, if any (None for `Whole`).
    ///
    /// A boundary `q` qualifies when the piece before it holds a character that is not
    /// whitespace and `q + SPLIT_MARGIN <= limit`, `limit <= text.len()`. Why this holds: each
    /// splitter decides a piece from the bytes it reads, and reads past the piece's end only to
    /// find where a run stops, to test a lookahead or a contraction. A piece that holds a
    /// character that is not whitespace is not one of the whitespace alternatives (whose pieces
    /// are all whitespace, and which read a whole run of whitespace and the character after it),
    /// and every other alternative reads at most three characters past its end (o200k's
    /// contraction after a letter run: `'` and two letters; a run of letters, numbers,
    /// punctuation or cl100k's and o200k's `[\r\n]*` after punctuation reads one). The
    /// whitespace runs that earlier pieces read end at or before that character. So no decision
    /// up to `q` reads past `q + 12 < limit`: the pieces up to `q` are the same whatever comes
    /// after `limit`, and the pieces from `q` on are those of the text from `q` (no lookbehind).
    pub fn last_split_cut(self, text: &str, limit: usize) -> Option<usize> {
        if self == Pattern::Whole {
            return None;
        }
        let limit = limit.min(text.len());
        let mut best = None;
        let mut end = 0;
        let _ = self.try_for_each_piece(text, |piece| {
            end += piece.len();
            if end + SPLIT_MARGIN > limit {
                return Err(());
            }
            if piece.chars().any(|c| class_of(u32::from(c)) != WS) {
                best = Some(end);
            }
            Ok(())
        });
        best
    }

    /// The pieces of `text` found without the ASCII fast paths (for tests checking them).
    pub fn split_reference(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let _ = match self {
            Pattern::Gpt2 => pieces(text, gpt2_piece_end_general, |p| {
                out.push(p);
                Ok::<(), ()>(())
            }),
            Pattern::Cl100k => pieces(text, cl100k_piece_end_general, |p| {
                out.push(p);
                Ok(())
            }),
            Pattern::O200k => pieces(text, o200k_piece_end_general, |p| {
                out.push(p);
                Ok(())
            }),
            _ => {
                out = self.split(text);
                Ok(())
            }
        };
        out
    }

    /// The pieces of `text` as a vector (tests and small inputs; hot paths use `for_each_piece`).
    pub fn split(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }
}

/// Calls `f` with each piece of `text`, cut where `piece_end` says, until `f` fails.
#[inline(always)]
fn pieces<'a, E>(
    text: &'a str,
    piece_end: impl Fn(&[u8], usize) -> usize,
    mut f: impl FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    let s = text.as_bytes();
    let mut pos = 0;
    while pos < s.len() {
        let end = piece_end(s, pos);
        debug_assert!(end > pos && text.is_char_boundary(end));
        f(&text[pos..end])?;
        pos = end;
    }
    Ok(())
}

/// Class code of a character (see `unicode_tables`).
#[inline(always)]
fn class_of(c: u32) -> u8 {
    CLASS_BLOCKS[CLASS_INDEX[(c >> 8) as usize] as usize][(c & 0xff) as usize]
}

/// Decodes the character starting at byte `i` of valid UTF-8: (code point, byte length).
#[inline(always)]
fn char_at(s: &[u8], i: usize) -> (u32, usize) {
    let b0 = s[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F),
            4,
        )
    }
}

/// The coarse classes GPT-2's pattern distinguishes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coarse {
    Letter,
    Number,
    Space,
    Punct,
}

/// Coarse class of a class code from the generated tables.
const fn coarse_of_class(k: u8) -> Coarse {
    match k {
        LU | LL | LT | LM | LO => Coarse::Letter,
        N => Coarse::Number,
        WS => Coarse::Space,
        _ => Coarse::Punct, // marks and everything else
    }
}

/// Coarse class for every ASCII byte (from the same tables), so the common case is one load.
static ASCII_COARSE: [Coarse; 128] = {
    let mut t = [Coarse::Punct; 128];
    let block = &CLASS_BLOCKS[CLASS_INDEX[0] as usize];
    let mut i = 0;
    while i < 128 {
        t[i] = coarse_of_class(block[i]);
        i += 1;
    }
    t
};

#[inline(always)]
fn coarse(c: u32) -> Coarse {
    if c < 128 {
        return ASCII_COARSE[c as usize];
    }
    coarse_of_class(class_of(c))
}

/// Byte index where the run of characters of class `k` starting at `i` ends.
#[inline(always)]
fn run_end(s: &[u8], mut i: usize, k: Coarse) -> usize {
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            if ASCII_COARSE[b as usize] != k {
                break;
            }
            i += 1;
        } else {
            let (c, n) = char_at(s, i);
            if coarse(c) != k {
                break;
            }
            i += n;
        }
    }
    i
}

/// Index of the first byte at or after `i` that is not an ASCII letter (`s.len()` if none):
/// 16 bytes at a time with SSE2, which every x86_64 CPU has (so no runtime detection), else
/// a byte at a time (`ascii_letters_end_scalar`, which the tests check it against).
#[inline(always)]
fn ascii_letters_end(s: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        ascii_run_end_sse2::<0x20>(s, i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        ascii_letters_end_scalar(s, i)
    }
}

#[inline(always)]
fn ascii_letters_end_scalar(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|b| b.is_ascii_alphabetic()) {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not an ASCII lower case letter, as
/// `ascii_letters_end` (checked against `ascii_lower_end_scalar`).
#[inline(always)]
fn ascii_lower_end(s: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        ascii_run_end_sse2::<0>(s, i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        ascii_lower_end_scalar(s, i)
    }
}

#[inline(always)]
fn ascii_lower_end_scalar(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|b| b.is_ascii_lowercase()) {
        i += 1;
    }
    i
}

/// The run of ASCII letters (`FOLD` = 0x20) or lower case letters (`FOLD` = 0) from `i`. A
/// byte `b` is in it when `(b | FOLD) - b'a'` (wrapping) is at most 25: setting bit 5 lowers
/// upper case and maps no other byte into `a..=z`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ascii_run_end_sse2<const FOLD: i8>(s: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_sub_epi8,
    };
    while let Some(chunk) = s.get(i..i + 16) {
        // SAFETY: `chunk` is 16 readable bytes (an unaligned load is allowed); SSE2 is part of
        // the x86_64 baseline.
        let letters = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let x = _mm_sub_epi8(
                _mm_or_si128(v, _mm_set1_epi8(FOLD)),
                _mm_set1_epi8(b'a' as i8),
            );
            _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(25)), x))
        } as u32;
        if letters != 0xFFFF {
            return i + (!letters).trailing_zeros() as usize;
        }
        i += 16;
    }
    if FOLD == 0 {
        ascii_lower_end_scalar(s, i)
    } else {
        ascii_letters_end_scalar(s, i)
    }
}

/// `gpt2_piece_end_general` with ASCII fast paths for the commonest pieces: a run of
/// letters, numbers or punctuation, with or without one space before it (alternatives 2-4;
/// the run goes on through non-ASCII characters of its class). A piece that starts with `'`
/// (a contraction, maybe) or whitespace other than a space before such a run goes the general way.
#[inline]
fn gpt2_piece_end(s: &[u8], pos: usize) -> usize {
    let b = s[pos];
    let i = pos + (b == b' ') as usize;
    if let Some(&c) = s.get(i) {
        if c.is_ascii_alphabetic() {
            let end = ascii_letters_end(s, i + 1);
            return if s.get(end).is_some_and(|&b| b >= 0x80) {
                run_end(s, end, Coarse::Letter)
            } else {
                end
            };
        }
        if c < 0x80 && (c != b'\'' || i > pos) {
            match ASCII_COARSE[c as usize] {
                Coarse::Number => return run_end(s, i + 1, Coarse::Number),
                Coarse::Punct => return run_end(s, i + 1, Coarse::Punct),
                _ => {}
            }
        }
    }
    gpt2_piece_end_general(s, pos)
}

/// End of the GPT-2 piece that starts at byte `pos` of `s` (valid UTF-8, `pos < s.len()`).
///
/// Alternatives, tried in order as the regex engine does:
/// 1. `'(?:[sdmt]|ll|ve|re)`  2. ` ?\p{L}+`  3. ` ?\p{N}+`  4. ` ?[^\s\p{L}\p{N}]+`
/// 5. `\s+(?!\S)`  6. `\s+`
#[inline]
fn gpt2_piece_end_general(s: &[u8], pos: usize) -> usize {
    let b = s[pos];
    if b == b'\'' {
        if let Some(&n1) = s.get(pos + 1) {
            if matches!(n1, b's' | b'd' | b'm' | b't') {
                return pos + 2;
            }
            if let Some(&n2) = s.get(pos + 2) {
                if matches!((n1, n2), (b'l', b'l') | (b'v', b'e') | (b'r', b'e')) {
                    return pos + 3;
                }
            }
        }
        return run_end(s, pos + 1, Coarse::Punct);
    }
    let (c, n) = char_at(s, pos);
    let k = coarse(c);
    if b == b' ' {
        // Alternatives 2-4 may take one leading space before a letter, number or punct run.
        if pos + 1 < s.len() {
            let (c2, n2) = char_at(s, pos + 1);
            let k2 = coarse(c2);
            if k2 != Coarse::Space {
                return run_end(s, pos + 1 + n2, k2);
            }
        }
    } else if k != Coarse::Space {
        return run_end(s, pos + n, k);
    }
    // A run of whitespace. `\s+(?!\S)` backs off one character when the run is followed by a
    // non-space, leaving that last space to start the next piece; a run of one character
    // followed by a non-space is taken whole by `\s+`.
    let mut end = pos + n;
    let mut last_start = pos;
    while end < s.len() {
        let (c, n) = char_at(s, end);
        if coarse(c) != Coarse::Space {
            return if last_start > pos { last_start } else { end };
        }
        last_start = end;
        end += n;
    }
    end
}

// ---------------------------------------------------------------------------------------------
// cl100k_base and o200k_base.
//
// These distinguish more classes than GPT-2's pattern (o200k tells letter cases apart, and
// marks are letters there but not in cl100k), so they work with sets of class codes: bit `k`
// of a `Set` stands for class code `k` of `unicode_tables`.

type Set = u16;

const fn bit(k: u8) -> Set {
    1 << k
}

/// `\p{L}`.
const LETTER: Set = bit(LU) | bit(LL) | bit(LT) | bit(LM) | bit(LO);
/// `[^\s\p{L}\p{N}]`: punctuation, symbols, controls that are not `\s`, marks, unassigned.
const PUNCT: Set = bit(OTHER) | bit(M);
/// o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` ("upper": may start a word).
const UPPER: Set = bit(LU) | bit(LT) | bit(LM) | bit(LO) | bit(M);
/// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` ("lower").
const LOWER: Set = bit(LL) | bit(LM) | bit(LO) | bit(M);
/// Classes in both `UPPER` and `LOWER`.
const BOTH: Set = UPPER & LOWER;

#[inline(always)]
fn is_in(k: u8, set: Set) -> bool {
    (set >> k) & 1 != 0
}

/// Class code for every ASCII byte (from the generated tables).
static ASCII_CLASS: [u8; 128] = {
    let mut t = [OTHER; 128];
    let block = &CLASS_BLOCKS[CLASS_INDEX[0] as usize];
    let mut i = 0;
    while i < 128 {
        t[i] = block[i];
        i += 1;
    }
    t
};

/// Class code and byte length of the character starting at byte `i` (`i < s.len()`).
#[inline(always)]
fn class_at(s: &[u8], i: usize) -> (u8, usize) {
    let b = s[i];
    if b < 0x80 {
        (ASCII_CLASS[b as usize], 1)
    } else {
        let (c, n) = char_at(s, i);
        (class_of(c), n)
    }
}

/// Class code of the character at byte `i`, or None at the end of `s`.
#[inline(always)]
fn class_at_opt(s: &[u8], i: usize) -> Option<(u8, usize)> {
    if i < s.len() {
        Some(class_at(s, i))
    } else {
        None
    }
}

/// Byte index where the run of characters whose class is in `set` starting at `i` ends.
#[inline(always)]
fn run_end_in(s: &[u8], mut i: usize, set: Set) -> usize {
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            if !is_in(ASCII_CLASS[b as usize], set) {
                break;
            }
            i += 1;
        } else {
            let (c, n) = char_at(s, i);
            if !is_in(class_of(c), set) {
                break;
            }
            i += n;
        }
    }
    i
}

/// Byte index after at most three characters of `\p{N}` starting at `i` (the first one is
/// known to be a number and is `n` bytes long).
#[inline(always)]
fn numbers_end(s: &[u8], i: usize, n: usize) -> usize {
    let mut end = i + n;
    for _ in 0..2 {
        match class_at_opt(s, end) {
            Some((N, n)) => end += n,
            _ => break,
        }
    }
    end
}

/// Length of the contraction `'s|'t|'re|'ve|'m|'ll|'d` matched case-insensitively at byte `i`
/// (which holds `'`), or 0. `regex` folds case simply: the only non-ASCII character that
/// matches one of these letters is U+017F LATIN SMALL LETTER LONG S (ſ), which matches `s`
/// (the Kelvin sign U+212A folds to `k`, which no contraction has).
#[inline(always)]
fn contraction_len(s: &[u8], i: usize) -> usize {
    let b1 = match s.get(i + 1) {
        Some(&b) => b | 0x20, // ASCII lower case (non-letters never match below)
        None => return 0,
    };
    match b1 {
        b's' | b't' | b'm' | b'd' => return 2,
        b'l' | b'v' | b'r' => {
            let want = if b1 == b'l' { b'l' } else { b'e' };
            return match s.get(i + 2) {
                Some(&b2) if b2 | 0x20 == want => 3,
                _ => 0,
            };
        }
        _ => {}
    }
    // ſ is C5 BF in UTF-8 (and `| 0x20` leaves 0xC5 as 0xE5).
    if s[i + 1] == 0xC5 && s.get(i + 2) == Some(&0xBF) {
        return 3;
    }
    0
}

/// End of the cl100k_base piece that starts at byte `pos` of `s` (valid UTF-8, `pos < s.len()`).
///
/// Alternatives, tried in order as the regex engine does:
/// 1. `'(?i:[sdmt]|ll|ve|re)`  2. `[^\r\n\p{L}\p{N}]?+\p{L}++`  3. `\p{N}{1,3}+`
/// 4. ` ?[^\s\p{L}\p{N}]++[\r\n]*+`  5. `\s++$`  6. `\s*[\r\n]`  7. `\s+(?!\S)`  8. `\s`
///
/// None of the possessive quantifiers changes what matches here: each is followed by something
/// its own characters could not match anyway, except `\s++$`, see below.
#[inline]
fn cl100k_piece_end(s: &[u8], pos: usize) -> usize {
    let b = s[pos];
    // Fast path for the commonest pieces, ASCII words with or without a space before them
    // (alternative 2, the run going on through non-ASCII letters); `cl100k_piece_end_general`
    // gives the same.
    let i = pos + (b == b' ') as usize;
    if s.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
        let end = ascii_letters_end(s, i + 1);
        return if s.get(end).is_some_and(|&b| b >= 0x80) {
            run_end_in(s, end, LETTER)
        } else {
            end
        };
    }
    cl100k_piece_end_general(s, pos)
}

/// End of the cl100k_base piece that starts at byte `pos` of `s`, as `cl100k_piece_end`
/// without its fast path.
#[inline]
fn cl100k_piece_end_general(s: &[u8], pos: usize) -> usize {
    let b = s[pos];
    // 1. A contraction, in any case ("'S", "'Ll", also "'ſ").
    if b == b'\'' {
        let n = contraction_len(s, pos);
        if n > 0 {
            return pos + n;
        }
    }
    let (k, n) = class_at(s, pos);
    let next = pos + n;
    if is_in(k, LETTER) {
        // 2. with the optional character absent: a run of letters.
        return run_end_in(s, next, LETTER);
    }
    if k == N {
        // 3. One to three numbers.
        return numbers_end(s, pos, n);
    }
    // 2. Any character but \r, \n, a letter or a number (a space, tab, U+00A0, a mark,
    // punctuation...) right before a run of letters is taken with it. Marks are not \p{L}:
    // "e\u{301}x" is "e", "\u{301}x".
    let after = class_at_opt(s, next);
    if b != b'\r' && b != b'\n' {
        if let Some((k2, n2)) = after {
            if is_in(k2, LETTER) {
                return run_end_in(s, next + n2, LETTER);
            }
        }
    }
    // 4, else a run of whitespace.
    let run = match punct_or_space(s, (pos, next), b, k, after, false) {
        Tail::Punct(end) => return end,
        Tail::Space(run) => run,
    };
    if run.end == s.len() {
        // 5. `\s++$`: the run reaches the end of the text. (`$` also matches before a final
        // "\n", but the possessive `\s++` has taken that "\n" already and never gives it back.)
        run.end
    } else if run.after_newline != 0 {
        // 6. `\s*[\r\n]`: backtracks to the last \r or \n of the run.
        run.after_newline
    } else if run.last_start > pos {
        // 7. `\s+(?!\S)`: backs off one character, leaving the last space of the run to start
        // the next piece (usually " word").
        run.last_start
    } else {
        // 8. A single whitespace character before a non-space.
        run.end
    }
}

/// How a cl100k or o200k piece ends once neither a letter nor a number alternative matched.
enum Tail {
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*` (`[\r\n/]*` for o200k) matched; the piece ends here.
    Punct(usize),
    /// A run of whitespace; each pattern decides where in it the piece ends.
    Space(WhitespaceRun),
}

/// A run of whitespace [pos, end): `last_start` is where its last character starts,
/// `after_newline` is just past its last \r or \n (0: none).
struct WhitespaceRun {
    end: usize,
    last_start: usize,
    after_newline: usize,
}

/// The tail shared by cl100k and o200k at `pos`, whose first byte is `b`, whose character has
/// class `k` and ends at `next`, and `after` the class and length of the character there.
/// `slash`: `/` joins the newline run.
#[inline(always)]
fn punct_or_space(
    s: &[u8],
    (pos, next): (usize, usize),
    b: u8,
    k: u8,
    after: Option<(u8, usize)>,
    slash: bool,
) -> Tail {
    if k != WS {
        // 4. without the space: a run of punctuation (marks included), then any \r, \n (and /).
        let end = run_end_in(s, next, PUNCT);
        return Tail::Punct(newlines_end(s, end, slash));
    }
    if b == b' ' {
        if let Some((k2, n2)) = after {
            if is_in(k2, PUNCT) {
                // 4. with the space.
                let end = run_end_in(s, next + n2, PUNCT);
                return Tail::Punct(newlines_end(s, end, slash));
            }
        }
    }
    let mut end = next;
    let mut last_start = pos;
    let mut after_newline = if b == b'\r' || b == b'\n' { next } else { 0 };
    while end < s.len() {
        let (k, n) = class_at(s, end);
        if k != WS {
            break;
        }
        if s[end] == b'\r' || s[end] == b'\n' {
            after_newline = end + 1;
        }
        last_start = end;
        end += n;
    }
    Tail::Space(WhitespaceRun {
        end,
        last_start,
        after_newline,
    })
}

/// Byte index after the run of `\r`, `\n` (and `/` when `slash`) starting at `i`.
#[inline(always)]
fn newlines_end(s: &[u8], mut i: usize, slash: bool) -> usize {
    while i < s.len() && (s[i] == b'\r' || s[i] == b'\n' || (slash && s[i] == b'/')) {
        i += 1;
    }
    i
}

/// End of o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+`, falling back to
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*`, from byte `i`, where a
/// character of `UPPER | LOWER` (a letter or a mark) starts.
///
/// The first form backtracks: its greedy upper run [i, ue) gives back characters until a lower
/// one can follow. If the character at `ue` is `Ll`, the whole upper run is kept and the lower
/// run from `ue` follows ("HELLOworld" is one piece). Otherwise the lower run must start inside
/// the upper run, at its last character in both sets (`Lm`, `Lo` or a mark), and it is that
/// one character, since the next one is `Lu`/`Lt` or not lower ("中文ABC" is "中文", "ABC";
/// "Aʰ" + "B"). With no such character the first form fails, and the second takes the upper
/// run, whose lower run is then empty (the character at `ue` is not `Ll`): "HELLO".
#[inline(always)]
fn o200k_letters_end(s: &[u8], i: usize) -> usize {
    let mut ue = i;
    let mut last_both_end = 0; // 0: no character of BOTH in the upper run
    while ue < s.len() {
        let (k, n) = class_at(s, ue);
        if !is_in(k, UPPER) {
            if k == LL {
                return run_end_in(s, ue + n, LOWER);
            }
            break;
        }
        ue += n;
        if is_in(k, BOTH) {
            last_both_end = ue;
        }
    }
    if last_both_end != 0 {
        last_both_end
    } else {
        ue
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at byte `i`.
#[inline(always)]
fn o200k_contraction_end(s: &[u8], i: usize) -> usize {
    if s.get(i) == Some(&b'\'') {
        i + contraction_len(s, i)
    } else {
        i
    }
}

/// End of the o200k_base piece that starts at byte `pos` of `s` (valid UTF-8, `pos < s.len()`).
///
/// Alternatives, tried in order as the regex engine does (none is possessive):
/// 1. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
/// 2. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
/// 3. `\p{N}{1,3}`  4. ` ?[^\s\p{L}\p{N}]+[\r\n/]*`  5. `\s*[\r\n]+`  6. `\s+(?!\S)`  7. `\s+`
#[inline]
fn o200k_piece_end(s: &[u8], pos: usize) -> usize {
    o200k_ascii_word_end(s, pos).unwrap_or_else(|| o200k_piece_end_general(s, pos))
}

/// Fast path of `o200k_piece_end` for the commonest pieces: an ASCII word, with or without one
/// ASCII character of `[^\r\n\p{L}\p{N}]` (a space, `(`, `'`...) before it. With `U` the run
/// of ASCII capitals from the word's start and `l` the run of ASCII lower case letters after
/// it: if `l` is not empty, the word is alternative 1 with `U` as its upper run (an `Ll`
/// follows `U`, so no backtracking), going on through any non-ASCII lower run. If `l` is empty
/// and the byte after `U` is ASCII (or the end), it is neither a letter nor a mark, and no
/// capital is in both sets, so 1 fails and 2 takes exactly `U`. Then the optional contraction.
/// None (the general code decides) when `U` is followed by a non-ASCII character, which may
/// go on the upper run.
#[inline(always)]
fn o200k_ascii_word_end(s: &[u8], pos: usize) -> Option<usize> {
    let b = s[pos];
    let i = if b.is_ascii_alphabetic() {
        pos
    } else if b < 0x80 && !b.is_ascii_digit() && b != b'\r' && b != b'\n' {
        pos + 1
    } else {
        return None;
    };
    if !s.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    let mut u = i;
    while s.get(u).is_some_and(|b| b.is_ascii_uppercase()) {
        u += 1;
    }
    let mut end = ascii_lower_end(s, u);
    if end > u {
        if s.get(end).is_some_and(|&b| b >= 0x80) {
            end = run_end_in(s, end, LOWER);
        }
    } else if s.get(end).is_some_and(|&b| b >= 0x80) {
        return None;
    }
    Some(o200k_contraction_end(s, end))
}

/// End of the o200k_base piece that starts at byte `pos` of `s`, as `o200k_piece_end` without
/// its fast path.
#[inline]
fn o200k_piece_end_general(s: &[u8], pos: usize) -> usize {
    let b = s[pos];
    let (k, n) = class_at(s, pos);
    let next = pos + n;
    if is_in(k, UPPER | LOWER) {
        // 1-2 without the optional leading character (always so for a letter, which it
        // excludes). A mark is also `[^\r\n\p{L}\p{N}]`, so 1 first tries it as the leading
        // character; if 1 then fails on the rest, it retries with the mark as the start of the
        // upper run, which then always succeeds, and where the first try succeeded the second
        // one ends at the same place (same upper run end, same last `BOTH` character or
        // following lower run). So a mark starts a letter run like a letter: "\u{301}A!" is
        // "\u{301}", "A", "!", and never reaches alternative 2 as a leading character.
        let end = o200k_letters_end(s, pos);
        return o200k_contraction_end(s, end);
    }
    if k == N {
        // 3.
        return numbers_end(s, pos, n);
    }
    // 1-2 with the optional leading character: anything but \r, \n, a letter or a number (a
    // space, a tab, U+0085, punctuation...), when a letter or a mark follows (then 1 or 2
    // matches: 1 unless the upper run has no `BOTH` character and no `Ll` follows it).
    let after = class_at_opt(s, next);
    if b != b'\r' && b != b'\n' {
        if let Some((k2, _)) = after {
            if is_in(k2, UPPER | LOWER) {
                let end = o200k_letters_end(s, next);
                return o200k_contraction_end(s, end);
            }
        }
    }
    // 4, else a run of whitespace.
    let run = match punct_or_space(s, (pos, next), b, k, after, true) {
        Tail::Punct(end) => return end,
        Tail::Space(run) => run,
    };
    if run.after_newline != 0 {
        // 5. `\s*[\r\n]+`: `\s*` backtracks to the last \r or \n of the run, which `[\r\n]+`
        // then takes (the character after it is not \r or \n). Unlike cl100k there is no
        // `\s++$`, so "  \n  " at the end of the text is "  \n", "  ".
        run.after_newline
    } else if run.end == s.len() || run.last_start == pos {
        // 6 at the end of the text, or 7 for a single whitespace character before a non-space.
        run.end
    } else {
        // 6. `\s+(?!\S)`: backs off one character.
        run.last_start
    }
}

// ---------------------------------------------------------------------------------------------
// Safe cuts: places where a text can be cut so that splitting the two parts separately gives
// exactly the pieces of the whole, whatever text follows. Files are read, and streams
// encoded, in parts cut at such places, so memory does not grow with the input.

/// True when byte `i` of `s` is a piece boundary under all three named patterns whatever
/// follows, so that splitting `s[..i]` and the text from `i` on separately gives the pieces of
/// the whole. Decided by the character `c` that ends at `i` and the character `d` that starts
/// there (and, after a newline, the character before it); `s` need not be valid UTF-8 past
/// them, and anything that does not decode is no cut. Classes are those of the `regex` module
/// (`\s`, `\p{L}`, `\p{N}`, `\p{M}`; "punctuation" is everything else: `[^\s\p{L}\p{N}]`
/// minus marks).
///
/// The cuts, with `c` never whitespace:
/// 1. `c` a letter, `d` a number, whitespace or punctuation other than `'`.
/// 2. `c` a number, `d` anything but a number.
/// 3. `c` a mark or punctuation, `d` a number or whitespace other than `\r`, `\n`.
/// 4. `c` = `\n` after a character that is not whitespace, `d` neither whitespace nor `/`.
///
/// Why. The splitters decide each piece from the text at and after its start only (no
/// pattern looks behind), so the pieces from `i` on are those of the second part alone as
/// soon as a piece of the whole ends at `i`; and the pieces before `i` are those of the first
/// part alone when every decision made before `i` treats the character `d` as it treats the
/// end of the text. (The matches also cover the text: every character is in some piece, so
/// the piece holding `c` ends exactly at `i` once it cannot take `d`.) For 1-3, every
/// alternative of the three patterns that has consumed `c` looks at `d` in one of these ways
/// only, and each sees `d` as it sees the end:
/// - a run of letters (GPT-2's and cl100k's `\p{L}+`; o200k's upper/lower runs, which also
///   take marks and, after an upper run, a lower case letter) asks whether `d` is a letter
///   (or a mark): not in 1; then o200k's optional contraction asks whether `d` is `'`: not in
///   1. A number run (`\p{N}+`, `\p{N}{1,3}`) asks whether `d` is a number: not in 2.
/// - a punctuation run (`[^\s\p{L}\p{N}]+`, marks included in GPT-2 and cl100k) asks whether
///   `d` is punctuation or a mark, then cl100k's `[\r\n]*` and o200k's `[\r\n/]*` whether
///   it is `\r`, `\n` (or `/`): none is in 3. o200k's runs take marks as letters: for a
///   mark `c` they ask whether `d` is a letter, a mark or `'`: not in 3.
/// - `c` as the optional leading character of cl100k's and o200k's letter alternatives
///   (`[^\r\n\p{L}\p{N}]`: punctuation or a mark) asks whether `d` is a letter (or a mark):
///   not in 3. GPT-2's optional ` ` and the whitespace alternatives never take a `c` that is
///   not whitespace; a whitespace run before `c` ends before `c`, so its lookahead (`(?!\S)`)
///   and `$` are decided at or before `c`.
/// - a contraction: GPT-2's and cl100k's `'(?:...)` starting at `c` = `'` asks whether `d` is
///   one of its letters: not in 3; one that ends at `c` reads no further.
///
/// For 4 (`x`, `\n`, `d`): the piece holding `x` ends at the `\n` or takes it (cl100k's and
/// o200k's punctuation with `[\r\n]*`, `[\r\n/]*`), and then asks whether `d` is `\r`,
/// `\n` (or `/`): never. Otherwise the `\n` starts a whitespace run that is just `\n` (`d`
/// is not whitespace), and every pattern makes that run the one piece `\n` whether `d` or the
/// end follows (GPT-2: `\s+(?!\S)` at the end, else `\s+`; cl100k: `\s++$` at the end, else
/// `\s*[\r\n]`; o200k: `\s*[\r\n]+`). A whitespace `x` would not do: GPT-2 makes " \n" one
/// piece at the end but " ", "\n" before a letter.
///
/// `tests/python/test_faults_core.py` checks every cut against `regex.findall` on adversarial
/// text, with special tokens.
pub fn is_safe_cut(s: &[u8], i: usize) -> bool {
    let Some((d, _)) = char_from(s, i) else {
        return false;
    };
    let Some((c, c_start)) = char_before(s, i) else {
        return false;
    };
    let (kc, kd) = (class_of(c), class_of(d));
    match kc {
        LU | LL | LT | LM | LO => !is_in(kd, LETTER | bit(M)) && d != u32::from(b'\''),
        N => kd != N,
        M | OTHER => kd == N || (kd == WS && d != u32::from(b'\r') && d != u32::from(b'\n')),
        _ if c == u32::from(b'\n') => {
            kd != WS
                && d != u32::from(b'/')
                && matches!(char_before(s, c_start), Some((x, _)) if class_of(x) != WS)
        }
        _ => false,
    }
}

/// The character starting at byte `i` of `s` and its length, if a whole valid one is there.
#[inline(always)]
fn char_from(s: &[u8], i: usize) -> Option<(u32, usize)> {
    let b = *s.get(i)?;
    if b < 0x80 {
        return Some((u32::from(b), 1));
    }
    let n = match b {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(s.get(i..i + n)?).ok()?.chars().next()?;
    Some((u32::from(c), n))
}

/// The character ending at byte `i` of `s` and the byte where it starts, if a whole valid one
/// is there.
#[inline(always)]
fn char_before(s: &[u8], i: usize) -> Option<(u32, usize)> {
    let b = *s.get(i.checked_sub(1)?)?;
    if b < 0x80 {
        return Some((u32::from(b), i - 1));
    }
    // Back over continuation bytes to the first byte of the character.
    let start = (1..=4)
        .filter_map(|n| i.checked_sub(n))
        .find(|&j| s.get(j).is_some_and(|&b| b & 0xC0 != 0x80))?;
    match char_from(s, start) {
        Some((c, n)) if start + n == i => Some((c, start)),
        _ => None,
    }
}

/// Bytes that must follow a boundary found by `Pattern::last_split_cut` (three characters
/// of up to four bytes, rounded up).
pub const SPLIT_MARGIN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_basic() {
        let p = Pattern::Gpt2;
        assert_eq!(p.split("Hello world"), vec!["Hello", " world"]);
        assert_eq!(p.split("I'm 42!!"), vec!["I", "'m", " 42", "!!"]);
        assert_eq!(p.split("a  b"), vec!["a", " ", " b"]);
        assert_eq!(p.split("a \n"), vec!["a", " \n"]);
        assert_eq!(p.split("\n\nhi"), vec!["\n", "\n", "hi"]);
        assert_eq!(p.split(" \nhi"), vec![" ", "\n", "hi"]);
        assert_eq!(p.split("they'll've"), vec!["they", "'ll", "'ve"]);
        assert_eq!(p.split("'''s"), vec!["'''", "s"]);
        assert_eq!(p.split("THEY'LL"), vec!["THEY", "'", "LL"]);
        assert_eq!(p.split("héllo wörld"), vec!["héllo", " wörld"]);
        // `regex`'s \s excludes U+001C-U+001F (Python's str.isspace() includes them).
        assert_eq!(p.split("x\u{1c}y"), vec!["x", "\u{1c}", "y"]);
        assert_eq!(p.split("x \u{1c}y"), vec!["x", " \u{1c}", "y"]);
        assert_eq!(p.split("x \u{85}y"), vec!["x", " ", "\u{85}", "y"]);
        assert_eq!(p.split(""), Vec::<&str>::new());
    }

    #[test]
    fn cl100k_basic() {
        let p = Pattern::Cl100k;
        assert_eq!(p.split("Hello world"), vec!["Hello", " world"]);
        assert_eq!(
            p.split("I'm 12345!!\n\nok"),
            vec!["I", "'m", " ", "123", "45", "!!\n\n", "ok"]
        );
        assert_eq!(p.split("THEY'LL 'Ve"), vec!["THEY", "'LL", " '", "Ve"]);
        assert_eq!(p.split("it'\u{17f}"), vec!["it", "'\u{17f}"]); // ſ folds to s
        assert_eq!(p.split("'sup"), vec!["'s", "up"]);
        assert_eq!(p.split("'hello"), vec!["'hello"]);
        assert_eq!(p.split("a  b"), vec!["a", " ", " b"]);
        assert_eq!(
            p.split("a\tb\u{a0}c\u{85}d"),
            vec!["a", "\tb", "\u{a0}c", "\u{85}d"]
        );
        assert_eq!(p.split("a\nb"), vec!["a", "\n", "b"]);
        assert_eq!(p.split("a \n \n  b"), vec!["a", " \n \n", " ", " b"]);
        assert_eq!(p.split("a  \n  "), vec!["a", "  \n  "]); // \s++$
        assert_eq!(p.split("a \n"), vec!["a", " \n"]);
        assert_eq!(p.split("e\u{301}x"), vec!["e", "\u{301}x"]); // marks are not \p{L}
        assert_eq!(p.split(" !?\r\n\r\nx"), vec![" !?\r\n\r\n", "x"]);
        assert_eq!(p.split("!\n/\n/x"), vec!["!\n", "/\n", "/x"]);
        assert_eq!(p.split(""), Vec::<&str>::new());
    }

    #[test]
    fn o200k_basic() {
        let p = Pattern::O200k;
        assert_eq!(p.split("Hello world"), vec!["Hello", " world"]);
        assert_eq!(
            p.split("helloWorld HELLOworld"),
            vec!["hello", "World", " HELLOworld"]
        );
        assert_eq!(
            p.split("DON'T don't it'\u{17f}"),
            vec!["DON'T", " don't", " it'\u{17f}"]
        );
        assert_eq!(p.split("12345"), vec!["123", "45"]);
        assert_eq!(
            p.split("\u{4e2d}\u{6587}ABC"),
            vec!["\u{4e2d}\u{6587}", "ABC"]
        );
        assert_eq!(p.split("A\u{2b0}B"), vec!["A\u{2b0}", "B"]); // ʰ is Lm
        assert_eq!(p.split("\u{301}A!"), vec!["\u{301}", "A", "!"]);
        assert_eq!(p.split(" \u{301}a"), vec![" \u{301}a"]);
        assert_eq!(p.split("e\u{301}x"), vec!["e\u{301}x"]);
        assert_eq!(p.split("!\n/\n/x"), vec!["!\n/\n/", "x"]);
        assert_eq!(p.split("a  \n  "), vec!["a", "  \n", "  "]);
        assert_eq!(p.split("a  b  "), vec!["a", " ", " b", "  "]);
        assert_eq!(p.split("a\r\n\r\n b"), vec!["a", "\r\n\r\n", " b"]);
        assert_eq!(p.split(""), Vec::<&str>::new());
    }

    /// Splitting speed on a UTF-8 file:
    /// `FASTBPE_BENCH_FILE=text.txt cargo test --release throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let path = std::env::var("FASTBPE_BENCH_FILE").expect("set FASTBPE_BENCH_FILE");
        let text = std::fs::read_to_string(path).unwrap();
        for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
            let mut best = f64::INFINITY;
            let mut n = 0usize;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                n = 0;
                p.for_each_piece(std::hint::black_box(&text), |piece| {
                    n += std::hint::black_box(piece).len() & 1;
                });
                best = best.min(t.elapsed().as_secs_f64());
            }
            let mb = text.len() as f64 / 1e6;
            println!("{p:?}: {:.0} MB/s ({mb:.1} MB, {n})", mb / best);
        }
    }

    #[test]
    fn safe_cuts() {
        let cuts = |t: &str| -> Vec<usize> {
            (1..t.len())
                .filter(|&i| is_safe_cut(t.as_bytes(), i))
                .collect()
        };
        assert_eq!(cuts("The cat."), vec![3, 7]); // "The| cat|."
        assert_eq!(cuts("a1b"), vec![1, 2]);
        assert_eq!(cuts("a'b !1!a"), vec![3, 5, 6]); // not around ', not after ! before a letter
        assert_eq!(cuts("x.\ny"), vec![1, 3]); // "x|.\n|y"
        assert_eq!(cuts(" \ny"), Vec::<usize>::new()); // GPT-2: " \n" at the end, " ", "\n" here
        assert_eq!(cuts("!\n/"), Vec::<usize>::new()); // o200k: "!\n/" is one piece
        assert_eq!(cuts("中文。"), vec![6]);
        // Cut characters in half or invalid: no cut.
        assert!(!is_safe_cut("é ".as_bytes(), 1));
        assert!(!is_safe_cut(b"a\xff ", 2));
        // The last boundary 16 bytes before the limit after a piece that is not all whitespace:
        // "|---|" in GPT-2, "|---|\r\n" in the others.
        let text = "|---|\r\n".repeat(10);
        assert_eq!(Pattern::Gpt2.last_split_cut(&text, 70), Some(54));
        assert_eq!(Pattern::Cl100k.last_split_cut(&text, 70), Some(49));
        assert_eq!(Pattern::O200k.last_split_cut(&text, 70), Some(49));
        assert_eq!(
            Pattern::Whole.last_split_cut("a b c d e f g h i j k l m n o p", 40),
            None
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn sse2_letter_runs_equal_scalar() {
        // Runs around the 16-byte blocks, ended by each byte value, at several offsets; mixed
        // case (every third letter a capital) or lower case only.
        let mut checked = 0;
        for run in 0..70 {
            for stop in 0..=255u8 {
                for lead in 0..3 {
                    for capitals in [true, false] {
                        let mut s: Vec<u8> = b"!? ".iter().take(lead).copied().collect();
                        s.extend((0..run).map(|k| {
                            if capitals && k % 3 == 0 {
                                b'A' + (k % 26) as u8
                            } else {
                                b'z' - (k % 26) as u8
                            }
                        }));
                        s.push(stop);
                        s.extend_from_slice(b"abc");
                        for i in 0..=lead {
                            assert_eq!(
                                ascii_run_end_sse2::<0x20>(&s, i),
                                ascii_letters_end_scalar(&s, i)
                            );
                            assert_eq!(
                                ascii_run_end_sse2::<0>(&s, i),
                                ascii_lower_end_scalar(&s, i)
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn fast_paths_equal_the_general_code() {
        let text = "The quick  brown fox's 12345 jumps!!  Über naïve café \u{1c}x \t\n\n Ünï 'll x'LL ١٢٣ \u{301}a ";
        for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
            assert_eq!(p.split(text), p.split_reference(text), "{p:?}");
        }
    }

    #[test]
    fn pieces_concatenate_to_input() {
        let text = "Mixed: 中文, русский, ١٢٣ and emoji 🎉🎉 \t\n\u{85}\u{a0} end  ";
        for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
            assert_eq!(p.split(text).concat(), text);
        }
    }
}
