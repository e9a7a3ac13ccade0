//! Pre-tokenization: splitting text into the pieces BPE works inside.
//!
//! The named patterns are hand-written state machines that return exactly the pieces Python's
//! `regex.findall(PATTERN, text)` returns (the Python tests check this on random Unicode text).
//! They classify characters with tables generated from the `regex` module itself
//! (`scripts/gen_unicode_tables.py`), so `\s`, `\p{L}` and `\p{N}` mean what they mean there.

use crate::unicode_tables::{CLASS_BLOCKS, CLASS_INDEX, LL, LM, LO, LT, LU, N, WS};

/// GPT-2's pattern, as tiktoken's `gpt2`/`r50k_base` encodings write it.
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// How a segment of text is cut into pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2's regex (`GPT2_PATTERN`).
    Gpt2,
    /// No pre-tokenization: the whole segment is one piece.
    Whole,
}

impl Pattern {
    /// Calls `f` with each piece of `text`, in order; the pieces concatenate to `text`.
    #[inline]
    pub fn for_each_piece<'a>(self, text: &'a str, mut f: impl FnMut(&'a str)) {
        match self {
            Pattern::Gpt2 => {
                let mut pos = 0;
                while pos < text.len() {
                    let end = gpt2_piece_end(text.as_bytes(), pos);
                    f(&text[pos..end]);
                    pos = end;
                }
            }
            Pattern::Whole => {
                if !text.is_empty() {
                    f(text)
                }
            }
        }
    }

    /// The pieces of `text` as a vector (tests and small inputs; hot paths use `for_each_piece`).
    pub fn split(self, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p));
        out
    }
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

/// End of the GPT-2 piece that starts at byte `pos` of `s` (valid UTF-8, `pos < s.len()`).
///
/// Alternatives, tried in order as the regex engine does:
/// 1. `'(?:[sdmt]|ll|ve|re)`  2. ` ?\p{L}+`  3. ` ?\p{N}+`  4. ` ?[^\s\p{L}\p{N}]+`
/// 5. `\s+(?!\S)`  6. `\s+`
#[inline]
fn gpt2_piece_end(s: &[u8], pos: usize) -> usize {
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
    fn pieces_concatenate_to_input() {
        let text = "Mixed: 中文, русский, ١٢٣ and emoji 🎉🎉 \t\n\u{85}\u{a0} end  ";
        assert_eq!(Pattern::Gpt2.split(text).concat(), text);
    }
}
