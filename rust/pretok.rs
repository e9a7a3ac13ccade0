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
            Pattern::Gpt2 => window_pieces::<Gpt2Windows, E>(text, f),
            Pattern::Cl100k => window_pieces::<Cl100kWindows, E>(text, f),
            Pattern::O200k => window_pieces::<O200kWindows, E>(text, f),
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
// Splitting ASCII text 64 bytes at a time.
//
// A window of 64 bytes starting at a piece start is classified into one bit mask per class
// (bit i: byte i), and the piece starts in it are computed for the whole window with bit
// operations (`gpt2_starts`, `cl100k_starts`, `o200k_starts`), following the alternatives of
// each pattern on ASCII text. Since no pattern looks behind, the pieces from a piece start on
// are those of the text from there: the window is split as if the text began at its first
// byte. Each start depends on the bytes before it and on at most two bytes after it, except
// inside a run of whitespace (which may end in a piece holding a newline further on), so the
// starts are trusted up to `trusted_end`; the pieces between trusted starts are emitted and the
// next window starts at the last of them. Windows whose ASCII prefix is short go to the
// per-piece splitters (`*_piece_end`) until past their last non-ASCII byte.

/// Bytes per window.
const WIN: usize = 64;

/// A window's bytes by class, one bit per byte. `letter`, `upper`, `digit`, `space`, ...
/// are ASCII only (a non-ASCII byte is in none of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes {
    /// Bytes >= 0x80.
    nonascii: u64,
    /// `[A-Za-z]`.
    letter: u64,
    /// `[A-Z]`.
    upper: u64,
    /// `[0-9]`.
    digit: u64,
    /// `\s` in ASCII: `\t`, `\n`, `\v`, `\f`, `\r` and ` ` (not U+001C-U+001F).
    space: u64,
    /// `\r`, `\n`.
    newline: u64,
    /// ` `.
    blank: u64,
    /// `'`.
    apostrophe: u64,
    /// `/`.
    slash: u64,
}

impl Classes {
    /// The classes of the bytes below `valid` only (bit i of `valid` set: byte i kept).
    #[inline(always)]
    fn masked(self, valid: u64) -> Classes {
        Classes {
            nonascii: self.nonascii & valid,
            letter: self.letter & valid,
            upper: self.upper & valid,
            digit: self.digit & valid,
            space: self.space & valid,
            newline: self.newline & valid,
            blank: self.blank & valid,
            apostrophe: self.apostrophe & valid,
            slash: self.slash & valid,
        }
    }
}

/// Classes of a window, a byte at a time from the generated tables (the reference for
/// `classify`, and what it is on other CPUs).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_scalar(w: &[u8; WIN]) -> Classes {
    let mut c = Classes::default();
    for (i, &b) in w.iter().enumerate() {
        let bit = 1u64 << i;
        let set = |m: &mut u64, yes: bool| *m |= if yes { bit } else { 0 };
        if b >= 0x80 {
            c.nonascii |= bit;
            continue;
        }
        let k = ASCII_COARSE[b as usize];
        set(&mut c.letter, k == Coarse::Letter);
        set(&mut c.upper, ASCII_CLASS[b as usize] == LU);
        set(&mut c.digit, k == Coarse::Number);
        set(&mut c.space, k == Coarse::Space);
        set(&mut c.newline, b == b'\r' || b == b'\n');
        set(&mut c.blank, b == b' ');
        set(&mut c.apostrophe, b == b'\'');
        set(&mut c.slash, b == b'/');
    }
    c
}

/// Which SIMD instructions classify the windows (`classify`): `SSE2` (part of the x86_64
/// baseline, else `classify_scalar`) or `AVX2` (when the CPU has it; AVX-512 measured no
/// faster).
const SSE2: u8 = 0;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const AVX2: u8 = 1;

/// The best level this CPU runs: AVX2 with every feature `window_pieces_avx2` enables
/// (`is_x86_feature_detected!` caches what it finds).
#[inline(always)]
fn simd_level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("bmi1")
            && is_x86_feature_detected!("bmi2")
            && is_x86_feature_detected!("lzcnt")
            && is_x86_feature_detected!("popcnt");
        if avx2 {
            return AVX2;
        }
    }
    SSE2
}

/// Classes of a window with the instructions of `LEVEL`, which the caller makes sure the CPU
/// has (`window_pieces`).
#[inline(always)]
fn classify<const LEVEL: u8>(w: &[u8; WIN]) -> Classes {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `window_pieces` only runs this with a level `simd_level` found.
        match LEVEL {
            AVX2 => unsafe { classify_avx2(w) },
            _ => classify_sse2(w),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        classify_scalar(w)
    }
}

/// As `classify_sse2`, 32 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn classify_avx2(w: &[u8; WIN]) -> Classes {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm256_sub_epi8,
    };
    #[inline(always)]
    fn set1(b: u8) -> __m256i {
        // SAFETY: only reached from `classify_avx2`, with AVX2.
        unsafe { _mm256_set1_epi8(b as i8) }
    }
    let mut c = Classes::default();
    for (k, chunk) in w.chunks_exact(32).enumerate() {
        // SAFETY: `chunk` is 32 readable bytes (an unaligned load is allowed).
        let v = _mm256_loadu_si256(chunk.as_ptr().cast());
        let within = |x: __m256i, lo: u8, n: u8| {
            let d = _mm256_sub_epi8(x, set1(lo));
            _mm256_cmpeq_epi8(_mm256_min_epu8(d, set1(n)), d)
        };
        let eq = |b: u8| _mm256_cmpeq_epi8(v, set1(b));
        let blank = eq(b' ');
        let bits = |m: __m256i| (_mm256_movemask_epi8(m) as u32 as u64) << (32 * k);
        c.nonascii |= bits(v);
        c.letter |= bits(within(_mm256_or_si256(v, set1(0x20)), b'a', 25));
        c.upper |= bits(within(v, b'A', 25));
        c.digit |= bits(within(v, b'0', 9));
        c.space |= bits(_mm256_or_si256(within(v, b'\t', 4), blank));
        c.newline |= bits(_mm256_or_si256(eq(b'\n'), eq(b'\r')));
        c.blank |= bits(blank);
        c.apostrophe |= bits(eq(b'\''));
        c.slash |= bits(eq(b'/'));
    }
    c
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify_sse2(w: &[u8; WIN]) -> Classes {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_sub_epi8,
    };
    let mut c = Classes::default();
    for (k, chunk) in w.chunks_exact(16).enumerate() {
        // SAFETY: `chunk` is 16 readable bytes (an unaligned load is allowed); SSE2 is part of
        // the x86_64 baseline.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let set1 = |b: u8| _mm_set1_epi8(b as i8);
            // Bytes in `lo..=lo + n`: `x - lo` (wrapping) is at most `n`.
            let within = |x: __m128i, lo: u8, n: u8| {
                let d = _mm_sub_epi8(x, set1(lo));
                _mm_cmpeq_epi8(_mm_min_epu8(d, set1(n)), d)
            };
            let eq = |b: u8| _mm_cmpeq_epi8(v, set1(b));
            let blank = eq(b' ');
            let bits = |m: __m128i| (_mm_movemask_epi8(m) as u16 as u64) << (16 * k);
            c.nonascii |= bits(v);
            c.letter |= bits(within(_mm_or_si128(v, set1(0x20)), b'a', 25));
            c.upper |= bits(within(v, b'A', 25));
            c.digit |= bits(within(v, b'0', 9));
            c.space |= bits(_mm_or_si128(within(v, b'\t', 4), blank));
            c.newline |= bits(_mm_or_si128(eq(b'\n'), eq(b'\r')));
            c.blank |= bits(blank);
            c.apostrophe |= bits(eq(b'\''));
            c.slash |= bits(eq(b'/'));
        }
    }
    c
}

/// Bits `0..n` (`n <= 64`).
#[inline(always)]
fn low_bits(n: u32) -> u64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// The first byte of each run of `x`.
#[inline(always)]
fn run_starts(x: u64) -> u64 {
    x & !(x << 1)
}

/// The bits of `m` from which a run of `m` leads, without a gap, to a bit of `seed` (at or
/// after them): filling each run of `m` backwards from its seeds, in six doubling steps.
#[inline(always)]
fn fill_back(seed: u64, m: u64) -> u64 {
    let (mut x, mut m) = (seed & m, m);
    for step in [1, 2, 4, 8, 16, 32] {
        x |= (x >> step) & m;
        m &= m >> step;
    }
    x
}

/// `\p{N}{1,3}`: the starts of the groups of three digits (and the last, shorter one) that
/// cut each run of digits, counted from its first digit.
#[inline(always)]
fn digit_groups(digit: u64) -> u64 {
    let three = digit & (digit << 1) & (digit << 2); // a digit after two digits
    let mut x = run_starts(digit);
    let mut groups = x;
    loop {
        x = (x << 3) & three;
        if x == 0 {
            return groups;
        }
        groups |= x;
    }
}

/// Length of `'(?:[sdmt]|ll|ve|re)` at byte `e` of the window (which holds `'`) within its
/// first `v` bytes, in any case when `fold`, or 0. ASCII only: `ſ` (cl100k, o200k) is not
/// ASCII, so never in a window's trusted part.
#[inline(always)]
fn window_contraction_len(w: &[u8; WIN], v: usize, e: usize, fold: bool) -> usize {
    let lower = |i: usize| {
        let b = if i < v {
            w.get(i).copied().unwrap_or(0)
        } else {
            0
        };
        if fold && b.is_ascii_uppercase() {
            b | 0x20
        } else {
            b
        }
    };
    match (lower(e + 1), lower(e + 2)) {
        (b's' | b'd' | b'm' | b't', _) => 2,
        (b'l', b'l') | (b'v', b'e') | (b'r', b'e') => 3,
        _ => 0,
    }
}

/// The contractions starting at a bit of `cand` (an apostrophe), by
/// `window_contraction_len`: (their apostrophes, their other bytes, the bits after them).
/// `fold`: in any case. `after_word`: the candidates are apostrophes after a letter (o200k's
/// contractions end a word), so one right after another contraction is none (that letter
/// ends no word).
#[inline(always)]
fn contractions(
    w: &[u8; WIN],
    v: u32,
    mut cand: u64,
    fold: bool,
    after_word: bool,
) -> (u64, u64, u64) {
    let (mut hit, mut inside, mut after) = (0u64, 0u64, 0u64);
    while cand != 0 {
        let e = cand.trailing_zeros();
        cand &= cand - 1;
        if after_word && (after >> e) & 1 != 0 {
            continue;
        }
        let n = window_contraction_len(w, v as usize, e as usize, fold) as u32;
        if n > 0 {
            hit |= 1 << e;
            inside |= low_bits(n - 1) << (e + 1);
            after |= 1u64.checked_shl(e + n).unwrap_or(0);
        }
    }
    (hit, inside, after)
}

/// The piece starts of GPT-2's pattern in a window whose first `v` bytes are ASCII (the bits
/// of `c`), besides bit 0. `end`: the text ends after them.
///
/// A run of letters, numbers or punctuation starts a piece, or the space before it does
/// (` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`). A run of whitespace starts one, and so
/// does its last character when something other than whitespace follows (`\s+(?!\S)` gives
/// it back; `\s` takes it when the run is that character only). An apostrophe that starts a
/// piece and a contraction after it make one piece, and the letters after it start the next.
#[inline(always)]
fn gpt2_starts(c: &Classes, w: &[u8; WIN], v: u32, _end: bool) -> u64 {
    let valid = low_bits(v);
    let punct = valid & !(c.letter | c.digit | c.space);
    let runs = (run_starts(c.letter) | run_starts(c.digit) | run_starts(punct)) & !(c.blank << 1);
    let space_last = c.space & !(c.space >> 1) & (valid >> 1);
    let (_, inside, after) =
        contractions(w, v, c.apostrophe & runs & (c.letter >> 1), false, false);
    ((runs | run_starts(c.space) | space_last) & !inside) | after
}

/// What cl100k and o200k do with whitespace: a run of whitespace starts a piece, except the
/// `\r`, `\n` (and `/`) that the punctuation before it takes (`consumed`). In a run holding
/// `\r` or `\n`, a piece ends after the last of them (`\s*[\r\n]`, `\s*[\r\n]+`), and when
/// something other than whitespace follows, the last character of the run starts a piece
/// (`\s+(?!\S)` gives it back, then `\s` takes it, or it leads a word, or a space leads
/// punctuation). With `end` and `keep_final` (cl100k's `\s++$`), a run that ends the text is
/// one piece.
#[inline(always)]
fn whitespace_starts(c: &Classes, v: u32, consumed: u64, end: bool, keep_final: bool) -> u64 {
    let valid = low_bits(v);
    let space = c.space & !consumed;
    let other = c.space & !c.newline;
    let mut starts = run_starts(space) | (other & !(c.space >> 1) & (valid >> 1));
    let newlines = c.newline & space;
    if newlines != 0 {
        let upto_newline = fill_back(newlines, space);
        starts |= space & !upto_newline & (upto_newline << 1);
    }
    if end && keep_final && v > 0 && (space >> (v - 1)) & 1 != 0 {
        // The run of whitespace that ends the text is one piece from its first character.
        let before = !space & low_bits(v - 1);
        let first = if before == 0 {
            0
        } else {
            64 - before.leading_zeros()
        };
        starts &= low_bits(first + 1);
    }
    starts
}

/// The piece starts of cl100k's pattern in a window, as `gpt2_starts`.
///
/// A run of letters starts a piece unless the character before it does: any one character
/// but `\r`, `\n`, a letter or a number (`[^\r\n\p{L}\p{N}]?+\p{L}++`) that starts a piece:
/// whitespace other than `\r`, `\n` always does there (see `whitespace_starts`), punctuation
/// when it is a run of one that starts a piece. A run of punctuation starts a piece unless a
/// space before it does (` ?[^\s\p{L}\p{N}]++`), and takes the `\r`, `\n` after it
/// (`[\r\n]*+`). Numbers start a piece every three digits. An apostrophe that starts a piece
/// and a contraction after it, in any case, make one piece.
#[inline(always)]
fn cl100k_starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64 {
    let valid = low_bits(v);
    let punct = valid & !(c.letter | c.digit | c.space);
    // The run of \r, \n right after punctuation: it starts there, so adding its first bit
    // clears it.
    let consumed = c.newline & !c.newline.wrapping_add(c.newline & (punct << 1));
    let punct_piece = run_starts(punct) & !(c.blank << 1);
    let lead = punct_piece & !(punct >> 1) & (c.letter >> 1);
    let other_space = c.space & !c.newline;
    let letters = run_starts(c.letter) & !((other_space | lead) << 1);
    let (_, inside, after) = contractions(w, v, lead & c.apostrophe, true, false);
    let starts = letters
        | punct_piece
        | digit_groups(c.digit)
        | whitespace_starts(c, v, consumed, end, true);
    (starts & !inside) | after
}

/// The piece starts of o200k's pattern in a window, as `gpt2_starts`.
///
/// As cl100k's, except: a word also starts at a capital after a lower case letter (capitals
/// then lower case letters, `[\p{Lu}...]*[\p{Ll}...]+`, or capitals only); a contraction, in
/// any case, goes with the word before it (an apostrophe after a letter), and an apostrophe
/// that starts a piece leads a word like any punctuation; punctuation takes `\r`, `\n` and `/`
/// after it (`[\r\n/]*`); a run of whitespace that ends the text is cut after its last newline
/// like any other.
#[inline(always)]
fn o200k_starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64 {
    let valid = low_bits(v);
    let raw_punct = valid & !(c.letter | c.digit | c.space);
    // The runs of \r, \n, / from a \r or \n right after punctuation, one at a time from the
    // first (a / taken is punctuation, and the \r, \n after it are in the same run).
    let takes = c.newline | c.slash;
    let mut seeds = c.newline & (raw_punct << 1);
    let mut consumed = 0u64;
    while seeds != 0 {
        let run = takes & !takes.wrapping_add(seeds & seeds.wrapping_neg());
        consumed |= run;
        seeds &= !run;
    }
    let punct = raw_punct & !consumed;
    let punct_piece = run_starts(punct) & !(c.blank << 1);
    let lead = punct_piece & !(punct >> 1) & (c.letter >> 1);
    let other_space = c.space & !c.newline;
    let lower = c.letter & !c.upper;
    let words = (run_starts(c.letter) & !((other_space | lead) << 1)) | (c.upper & (lower << 1));
    let (hit, inside, after) = contractions(w, v, c.apostrophe & (c.letter << 1), true, true);
    let starts =
        words | punct_piece | digit_groups(c.digit) | whitespace_starts(c, v, consumed, end, false);
    (starts & !(hit | inside)) | after
}

/// Where the starts found in a window of `v` ASCII bytes are trusted (`trusted_end`): all of
/// them when the text ends there (`end`), else those at least three bytes before the first
/// unknown byte (none depends on more than two bytes after it) and not inside the run of
/// whitespace that reaches it (its pieces depend on whether a newline follows).
#[inline(always)]
fn trusted_end(c: &Classes, v: u32, end: bool) -> u32 {
    if end {
        return v;
    }
    // One past the last byte that is not whitespace (0 if none), without branching: where the
    // run of whitespace that reaches the end of the window starts, or the end.
    let run = 64 - (!c.space & low_bits(v)).leading_zeros();
    v.saturating_sub(3).min(run + 1)
}

/// A window needs this many ASCII bytes at its start to be split by bit masks; shorter ones go
/// to the per-piece splitter.
const MIN_ASCII: u32 = 16;

/// A pattern's window splitter: the piece starts in a window (`gpt2_starts`...) and the
/// per-piece splitter for the rest (`gpt2_piece_end`...), both inlined into the window loop.
trait Windows {
    fn starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64;
    fn piece_end(s: &[u8], pos: usize) -> usize;
}

struct Gpt2Windows;
struct Cl100kWindows;
struct O200kWindows;

impl Windows for Gpt2Windows {
    #[inline(always)]
    fn starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64 {
        gpt2_starts(c, w, v, end)
    }
    #[inline(always)]
    fn piece_end(s: &[u8], pos: usize) -> usize {
        gpt2_piece_end(s, pos)
    }
}

impl Windows for Cl100kWindows {
    #[inline(always)]
    fn starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64 {
        cl100k_starts(c, w, v, end)
    }
    #[inline(always)]
    fn piece_end(s: &[u8], pos: usize) -> usize {
        cl100k_piece_end(s, pos)
    }
}

impl Windows for O200kWindows {
    #[inline(always)]
    fn starts(c: &Classes, w: &[u8; WIN], v: u32, end: bool) -> u64 {
        o200k_starts(c, w, v, end)
    }
    #[inline(always)]
    fn piece_end(s: &[u8], pos: usize) -> usize {
        o200k_piece_end(s, pos)
    }
}

/// Calls `f` with each piece of `text`, 64 bytes at a time where they are ASCII (`W::starts`),
/// else piece by piece (`W::piece_end`, which gives the same), until `f` fails; the windows
/// classified with the best instructions the CPU has.
#[inline(always)]
fn window_pieces<'a, W: Windows, E>(
    text: &'a str,
    f: impl FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    #[cfg(target_arch = "x86_64")]
    if simd_level() == AVX2 {
        // SAFETY: the CPU has the instructions this enables (`simd_level`).
        return unsafe { window_pieces_avx2::<W, E>(text, f) };
    }
    window_pieces_at::<W, SSE2, E>(text, f)
}

/// `window_pieces_at` compiled for AVX2 (with BMI1 for counting trailing zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn window_pieces_avx2<'a, W: Windows, E>(
    text: &'a str,
    f: impl FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    window_pieces_at::<W, AVX2, E>(text, f)
}

/// `window_pieces` with the windows classified at `LEVEL`, which the CPU must have.
#[inline(always)]
fn window_pieces_at<'a, W: Windows, const LEVEL: u8, E>(
    text: &'a str,
    mut f: impl FnMut(&'a str) -> Result<(), E>,
) -> Result<(), E> {
    let s = text.as_bytes();
    let mut pos = 0;
    let mut tail;
    let mut backoff = 0;
    while pos < s.len() {
        let rest = &s[pos..];
        let (w, in_text) = match rest.first_chunk::<WIN>() {
            Some(w) => (w, WIN as u32),
            None => {
                tail = [0u8; WIN];
                tail[..rest.len()].copy_from_slice(rest);
                (&tail, rest.len() as u32)
            }
        };
        let c = classify::<LEVEL>(w);
        let v = c.nonascii.trailing_zeros().min(in_text);
        let end = v == in_text && (in_text as usize) == rest.len();
        if end || v >= MIN_ASCII {
            let c = c.masked(low_bits(v));
            let t = trusted_end(&c, v, end);
            let mut cuts = W::starts(&c, w, v, end) & low_bits(t) & !1;
            if cuts != 0 || end {
                let mut start = pos;
                while cuts != 0 {
                    let e = pos + cuts.trailing_zeros() as usize;
                    cuts &= cuts - 1;
                    // SAFETY: `pos <= start < e < pos + v <= text.len()`, and the bytes from
                    // `pos` to `pos + v` are ASCII, so each of these is a character boundary.
                    f(unsafe { text.get_unchecked(start..e) })?;
                    start = e;
                }
                if end {
                    f(&text[start..])?;
                    start = s.len();
                }
                pos = start;
                backoff = 0;
                continue;
            }
        }
        // Piece by piece past the window's last non-ASCII byte (or one piece, a long one), and
        // further after windows mostly not ASCII (Cyrillic, CJK...), more so after several in
        // a row, so that the windows of such text cost little.
        backoff = if c.nonascii.count_ones() >= 16 {
            (backoff + 1).min(4)
        } else {
            0
        };
        let past = (64 - c.nonascii.leading_zeros()) as usize;
        let stop = pos + past.max(1).max((32 << backoff) & !32);
        while pos < stop && pos < s.len() {
            let e = W::piece_end(s, pos);
            f(&text[pos..e])?;
            pos = e;
        }
    }
    Ok(())
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
        // Each level of SIMD instructions the CPU has, as `window_pieces` runs them.
        fn count<W: Windows>(level: u8, text: &str) -> usize {
            let mut n = 0usize;
            let f = |piece: &str| {
                n += std::hint::black_box(piece).len() & 1;
                Ok::<(), ()>(())
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: only levels `simd_level` found.
            let _ = match level {
                AVX2 => unsafe { window_pieces_avx2::<W, ()>(text, f) },
                _ => window_pieces_at::<W, SSE2, ()>(text, f),
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = window_pieces_at::<W, SSE2, ()>(text, f);
            n
        }
        for level in (SSE2..=simd_level()).rev() {
            for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    let text = std::hint::black_box(&text);
                    std::hint::black_box(match p {
                        Pattern::Gpt2 => count::<Gpt2Windows>(level, text),
                        Pattern::Cl100k => count::<Cl100kWindows>(level, text),
                        _ => count::<O200kWindows>(level, text),
                    });
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let mb = text.len() as f64 / 1e6;
                println!("  level {level} {p:?}: {:.0} MB/s", mb / best);
            }
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
    fn window_classes_equal_the_tables() {
        // Every byte value at every position of a window (the SIMD code works on 16 bytes).
        for shift in 0..WIN {
            let mut w = [0u8; WIN];
            for b in 0..=255u8 {
                for (i, x) in w.iter_mut().enumerate() {
                    *x = b.wrapping_add(((i + shift) * 37) as u8);
                }
                let want = classify_scalar(&w);
                assert_eq!(classify::<SSE2>(&w), want);
                if simd_level() >= AVX2 {
                    assert_eq!(classify::<AVX2>(&w), want);
                }
            }
        }
        // The tables' ASCII whitespace is what the window code assumes.
        let w: [u8; WIN] = std::array::from_fn(|i| i as u8);
        let c = classify_scalar(&w);
        assert_eq!(c.space, (0b11111 << 9) | (1 << 32));
        assert_eq!(
            c.letter | c.digit | c.space | c.nonascii,
            c.letter ^ c.digit ^ c.space
        );
    }

    /// Texts built from the pieces the windows find hardest, cut by a xorshift generator.
    fn window_texts(n: usize) -> Vec<String> {
        const PARTS: &[&str] = &[
            " ",
            "  ",
            "   ",
            "\t",
            " \t",
            "\n",
            " \n",
            "\n ",
            " \n  ",
            "\r\n",
            "\n\n",
            "\r",
            "\x0b",
            "'",
            "''",
            "'s",
            "'S",
            "'t",
            "'ll",
            "'LL",
            "'lL",
            "'l",
            "'re",
            "'Ve",
            "'d",
            "'M",
            "'x",
            ".",
            ",",
            "!",
            "(",
            "-",
            "/",
            "!\n/",
            ".\n",
            "!\r\n/\n",
            "\x1c",
            "a",
            "Z",
            "the",
            "The",
            "THE",
            "camelCase",
            "HTTPServer",
            "don't",
            "I'M",
            "x'sy",
            "A'S'SA",
            "1",
            "12",
            "123",
            "1234",
            "12345",
            "1234567",
            "é",
            "中",
            "\u{a0}",
            "\u{85}",
            "ſ",
            "\u{301}",
            "١",
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..n)
            .map(|_| {
                let mut t = "x".repeat((next() % 70) as usize);
                let ascii_only = next() % 2 == 0;
                for _ in 0..next() % 120 {
                    let part = PARTS[(next() % PARTS.len() as u64) as usize];
                    if !ascii_only || part.is_ascii() {
                        t.push_str(part);
                    }
                }
                t
            })
            .collect()
    }

    /// The pieces of `text` split with the windows classified at `LEVEL`.
    fn split_at<const LEVEL: u8>(p: Pattern, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let push = |piece| {
            out.push(piece);
            Ok::<(), ()>(())
        };
        let _ = match p {
            Pattern::Gpt2 => window_pieces_at::<Gpt2Windows, LEVEL, ()>(text, push),
            Pattern::Cl100k => window_pieces_at::<Cl100kWindows, LEVEL, ()>(text, push),
            Pattern::O200k => window_pieces_at::<O200kWindows, LEVEL, ()>(text, push),
            Pattern::Whole => unreachable!(),
        };
        out
    }

    #[test]
    fn windows_equal_the_general_code() {
        for text in window_texts(20_000) {
            for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::O200k] {
                let want = p.split_reference(&text);
                assert_eq!(p.split(&text), want, "{p:?} {text:?}");
                assert_eq!(split_at::<SSE2>(p, &text), want, "{p:?} {text:?}");
                if simd_level() >= AVX2 {
                    assert_eq!(split_at::<AVX2>(p, &text), want, "{p:?} {text:?}");
                }
            }
        }
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
