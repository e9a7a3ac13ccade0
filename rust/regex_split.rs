//! Custom pre-tokenization regexes in Rust, exactly as Python's `regex` module splits.
//!
//! A pattern runs here only when it is written in a subset whose meaning is the same in both
//! engines; anything else is refused with the reason (the caller then uses Python's `regex`,
//! which defines the pieces). The subset is read by a small parser of its own, which writes
//! the pattern out again for fancy-regex with every character class spelled as explicit code
//! point ranges taken from the `regex` module (`regex_classes.rs`): the engines' Unicode tables
//! and their readings of `\s`, `\w`, `(?i)` differ, the written-out pattern does not depend on
//! them.
//!
//! The subset: literal characters; `.`; classes `[...]` of literals, ranges, `\s \S \w \W \d
//! \D`, `\p{..}`/`\P{..}` of a general category (`L`, `Lu`, `N`, `P`, ...), negated or not;
//! those escapes outside classes; `\r \n \t \f \v` and escaped ASCII punctuation; groups
//! `(...)`, `(?:...)`, atomic `(?>...)`, look-ahead `(?=...)`/`(?!...)`; `(?i:...)` around ASCII
//! literals and classes of them (`(?i:'s|'t|[sdmt])`); quantifiers `? * + {n} {n,} {n,m}`,
//! greedy, lazy (`?`) or possessive (`+`); alternation. Refused: anchors (`^ $ \A \Z \b`: `$`
//! also matches before a final newline in `regex`), look-behind, back-references, flags other
//! than the scoped `(?i:`, nested or set-operation classes, and patterns that can match the
//! empty string (their empty matches follow engine-specific rules).
//!
//! Pieces: the non-empty matches of the leftmost-first search, left to right, and the text
//! between them as pieces of their own (`fastbpe.patterns.pieces`).

use std::fmt::Write as _;

use fancy_regex::{Regex, RegexBuilder};

use crate::regex_classes::CLASSES;

/// Searches that backtrack this often give up (an error, never a wrong split): a pattern that
/// backtracks exponentially is then split by the `regex` module, which can be interrupted.
const BACKTRACK_LIMIT: usize = 50_000_000;

/// Nesting of groups the parser follows (deeper patterns are refused, never a stack overflow).
const MAX_DEPTH: usize = 64;

/// Repetition counts above this are refused (fancy-regex expands them).
const MAX_REPEAT: u32 = 1000;

/// A custom pattern compiled for the Rust engine.
pub struct RegexSplitter {
    regex: Regex,
}

/// Why a search failed: fancy-regex gave up (backtrack limit, stack). The caller splits the
/// text with the `regex` module instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFailed(pub String);

impl RegexSplitter {
    /// The pattern compiled, or why it cannot run here (unsupported construct, or fancy-regex
    /// refused it); never panics, whatever the string.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let translated = translate(pattern)?;
        let build = || {
            RegexBuilder::new(&translated)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
        };
        match std::panic::catch_unwind(build) {
            Ok(Ok(regex)) => Ok(RegexSplitter { regex }),
            Ok(Err(e)) => Err(format!("fancy-regex refused it: {e}")),
            Err(_) => Err("fancy-regex failed on it".to_string()),
        }
    }

    /// The first match in `text` at or after byte `at`, as (start, end); the whole `text` is
    /// what the pattern sees (look-ahead reads up to its end).
    #[inline]
    pub fn find_at(&self, text: &str, at: usize) -> Result<Option<(usize, usize)>, SearchFailed> {
        match self.regex.find_from_pos(text, at) {
            Ok(m) => Ok(m.map(|m| (m.start(), m.end()))),
            Err(e) => Err(SearchFailed(e.to_string())),
        }
    }

    /// Calls `f` with each piece of `text`, in order: the matches and the text between them.
    pub fn for_each_piece<'a>(
        &self,
        text: &'a str,
        mut f: impl FnMut(&'a str),
    ) -> Result<(), SearchFailed> {
        self.for_each_piece_from(text, 0, |p, _| f(p))
    }

    /// As `for_each_piece` for the text from byte `at` on; `f` also gets where each piece ends.
    pub fn for_each_piece_from<'a>(
        &self,
        text: &'a str,
        mut at: usize,
        mut f: impl FnMut(&'a str, usize),
    ) -> Result<(), SearchFailed> {
        while at < text.len() {
            let Some((start, end)) = self.find_at(text, at)? else {
                break;
            };
            if end <= at {
                // Never for an accepted pattern (none matches empty); stop rather than loop.
                break;
            }
            if start > at {
                f(text.get(at..start).unwrap_or_default(), start);
            }
            f(text.get(start..end).unwrap_or_default(), end);
            at = end;
        }
        if at < text.len() {
            f(text.get(at..).unwrap_or_default(), text.len());
        }
        Ok(())
    }

    /// The pieces of `text` (tests and the Python binding).
    pub fn split<'a>(&self, text: &'a str) -> Result<Vec<&'a str>, SearchFailed> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p))?;
        Ok(out)
    }
}

/// The pattern written out for fancy-regex, or why it is not in the subset.
pub fn translate(pattern: &str) -> Result<String, String> {
    let mut p = Parser {
        chars: pattern.chars().collect(),
        at: 0,
        out: String::with_capacity(pattern.len() * 4),
        hard: false,
    };
    let min = p.alternation(0, false)?;
    if p.at < p.chars.len() {
        return Err(format!("unbalanced ')' at {}", p.at));
    }
    if min == 0 {
        return Err("it can match the empty string".to_string());
    }
    Ok(p.out)
}

/// A set of code points as sorted, disjoint inclusive ranges.
type Ranges = Vec<(u32, u32)>;

/// The ranges of a generated class.
fn class_ranges(name: &str) -> Option<&'static [(u32, u32)]> {
    CLASSES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn normalize(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Every scalar value not in `r` (normalized).
fn complement(r: &Ranges) -> Ranges {
    let mut out = Vec::with_capacity(r.len() + 1);
    let mut next = 0u32;
    for &(a, b) in r {
        if a > next {
            out.push((next, a - 1));
        }
        next = b.saturating_add(1);
    }
    if next <= 0x10FFFF {
        out.push((next, 0x10FFFF));
    }
    out
}

/// ASCII letters and the characters `regex` matches them with under `(?i)`, checked against
/// the `regex` module for every code point by the tests.
fn case_variants(c: char) -> Vec<char> {
    if !c.is_ascii_alphabetic() {
        return vec![c];
    }
    let mut v = vec![c.to_ascii_uppercase(), c.to_ascii_lowercase()];
    match c.to_ascii_lowercase() {
        'i' => v.push('\u{130}'),
        'k' => v.push('\u{212A}'),
        's' => v.push('\u{17F}'),
        _ => {}
    }
    v
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    out: String,
    /// Whether what was parsed since the flag was cleared needs fancy-regex's backtracking VM.
    hard: bool,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.at + k).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn unsupported<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} (at {}) is not supported", self.at))
    }

    /// `a|b|...`; returns the shortest length it can match.
    ///
    /// Consecutive alternatives without look-ahead, atomic groups or possessive quantifiers
    /// are written as one group (`a|b|c` is `(?:a|b)|c` in any backtracking engine):
    /// fancy-regex then hands the group to the `regex` crate whole, twice as fast as trying
    /// each alternative in its own backtracking VM.
    fn alternation(&mut self, depth: usize, ci: bool) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return self.unsupported("nesting this deep");
        }
        let outer = std::mem::take(&mut self.out);
        let outer_hard = std::mem::replace(&mut self.hard, false);
        let mut branches: Vec<(String, bool)> = Vec::new();
        let mut min = usize::MAX;
        loop {
            self.hard = false;
            min = min.min(self.concat(depth, ci)?);
            branches.push((std::mem::take(&mut self.out), self.hard));
            if !self.eat('|') {
                break;
            }
        }
        self.out = outer;
        self.hard = outer_hard || branches.iter().any(|b| b.1);
        let mut k = 0;
        while k < branches.len() {
            if k > 0 {
                self.out.push('|');
            }
            let easy = branches[k..].iter().take_while(|b| !b.1).count();
            if easy > 1 {
                self.out.push_str("(?:");
                let run: Vec<&str> = branches[k..k + easy].iter().map(|b| b.0.as_str()).collect();
                self.out.push_str(&run.join("|"));
                self.out.push(')');
                k += easy;
            } else {
                self.out.push_str(&branches[k].0);
                k += 1;
            }
        }
        Ok(min)
    }

    fn concat(&mut self, depth: usize, ci: bool) -> Result<usize, String> {
        let mut min = 0usize;
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            min = min.saturating_add(self.repeat(depth, ci)?);
        }
        Ok(min)
    }

    /// An atom and its quantifier.
    fn repeat(&mut self, depth: usize, ci: bool) -> Result<usize, String> {
        // Each atom is a group of its own, so a quantifier applies to all of it.
        self.out.push_str("(?:");
        let min = self.atom(depth, ci)?;
        self.out.push(')');
        let lo = match self.peek() {
            Some('?') | Some('*') => {
                self.out.push(self.chars[self.at]);
                self.at += 1;
                0
            }
            Some('+') => {
                self.out.push('+');
                self.at += 1;
                1
            }
            Some('{') => self.counted()?,
            _ => return Ok(min),
        };
        // Lazy or possessive.
        if let Some(m @ ('?' | '+')) = self.peek() {
            self.out.push(m);
            self.at += 1;
            self.hard |= m == '+';
        }
        if matches!(self.peek(), Some('?' | '*' | '+' | '{')) {
            return self.unsupported("a quantifier after a quantifier");
        }
        Ok(min.saturating_mul(lo as usize))
    }

    /// `{n}`, `{n,}`, `{n,m}`; returns n.
    fn counted(&mut self) -> Result<u32, String> {
        self.at += 1;
        let lo = self.number()?;
        let hi = if self.eat(',') {
            if self.peek() == Some('}') {
                None
            } else {
                Some(self.number()?)
            }
        } else {
            Some(lo)
        };
        if !self.eat('}') {
            return self.unsupported("a '{' that is not a repetition count");
        }
        if hi.is_some_and(|h| h < lo) {
            return self.unsupported("a repetition {n,m} with m < n");
        }
        match hi {
            Some(h) if h == lo => write!(self.out, "{{{lo}}}"),
            Some(h) => write!(self.out, "{{{lo},{h}}}"),
            None => write!(self.out, "{{{lo},}}"),
        }
        .map_err(|e| e.to_string())?;
        Ok(lo)
    }

    fn number(&mut self) -> Result<u32, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let digits: String = self.chars[start..self.at].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT && !digits.is_empty() => Ok(n),
            _ => self.unsupported("a repetition count that is missing or above 1000"),
        }
    }

    /// One atom; returns the shortest length it can match.
    fn atom(&mut self, depth: usize, ci: bool) -> Result<usize, String> {
        let Some(c) = self.peek() else {
            return self.unsupported("a missing atom");
        };
        match c {
            '(' => self.group(depth, ci),
            '[' => {
                let r = self.class(ci)?;
                self.emit_class(&r);
                Ok(1)
            }
            '.' if !ci => {
                self.at += 1;
                // `regex`'s dot (no DOTALL): anything but \n.
                self.out.push_str("[^\\n]");
                Ok(1)
            }
            '\\' => {
                match self.escape(ci)? {
                    Item::Char(c) => self.emit_char(c, ci),
                    Item::Set(r) => self.emit_class(&r),
                }
                Ok(1)
            }
            '^' | '$' => self.unsupported("an anchor"),
            '*' | '+' | '?' | '{' | '}' | ']' | '.' => {
                self.unsupported(&format!("{c:?} where an atom is expected"))
            }
            _ => {
                self.at += 1;
                if ci && !c.is_ascii() {
                    return self.unsupported("a non-ASCII character under (?i)");
                }
                self.emit_char(c, ci);
                Ok(1)
            }
        }
    }

    fn group(&mut self, depth: usize, ci: bool) -> Result<usize, String> {
        self.at += 1;
        let (open, zero_width, inner_ci) = if self.peek() != Some('?') {
            ("(?:", false, ci) // captures do not change the whole match
        } else {
            match (self.peek_at(1), self.peek_at(2)) {
                (Some(':'), _) => ("(?:", false, ci),
                (Some('>'), _) => ("(?>", false, ci),
                (Some('='), _) => ("(?=", true, ci),
                (Some('!'), _) => ("(?!", true, ci),
                (Some('i'), Some(':')) => ("(?:", false, true),
                _ => return self.unsupported("this kind of group (flags, look-behind, names)"),
            }
        };
        if self.peek() == Some('?') {
            self.at += if inner_ci && open == "(?:" && self.peek_at(1) == Some('i') {
                3
            } else {
                2
            };
        }
        self.out.push_str(open);
        self.hard |= matches!(open, "(?>" | "(?=" | "(?!");
        let min = self.alternation(depth + 1, inner_ci)?;
        if !self.eat(')') {
            return self.unsupported("an unclosed group");
        }
        self.out.push(')');
        Ok(if zero_width { 0 } else { min })
    }

    /// `\x` outside or inside a class.
    fn escape(&mut self, ci: bool) -> Result<Item, String> {
        self.at += 1;
        let Some(c) = self.peek() else {
            return self.unsupported("a trailing backslash");
        };
        self.at += 1;
        let set = |name: &str, negate: bool| -> Option<Item> {
            let r: Ranges = class_ranges(name)?.to_vec();
            Some(Item::Set(if negate { complement(&r) } else { r }))
        };
        let item = match c {
            'r' => Some(Item::Char('\r')),
            'n' => Some(Item::Char('\n')),
            't' => Some(Item::Char('\t')),
            'f' => Some(Item::Char('\x0c')),
            'v' => Some(Item::Char('\x0b')),
            's' | 'w' | 'd' if !ci => set(&c.to_string(), false),
            'S' | 'W' | 'D' if !ci => set(&c.to_ascii_lowercase().to_string(), true),
            // General categories only ("s", "w", "d" name the escapes' tables).
            'p' | 'P' if !ci => match self.category_name()? {
                name if name.starts_with(|c: char| c.is_ascii_uppercase()) => set(&name, c == 'P'),
                _ => None,
            },
            c if c.is_ascii_punctuation() => Some(Item::Char(c)),
            _ => None,
        };
        match item {
            Some(item) => Ok(item),
            None => self.unsupported(&format!("the escape \\{c}")),
        }
    }

    /// The name in `\p{Name}` or `\pN`.
    fn category_name(&mut self) -> Result<String, String> {
        if self.eat('{') {
            let start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.at += 1;
            }
            let name: String = self.chars[start..self.at].iter().collect();
            if !self.eat('}') {
                return self.unsupported("this \\p{...} name");
            }
            return Ok(name);
        }
        match self.peek() {
            Some(c) if c.is_ascii_uppercase() => {
                self.at += 1;
                Ok(c.to_string())
            }
            _ => self.unsupported("this \\p name"),
        }
    }

    /// `[...]` as ranges.
    fn class(&mut self, ci: bool) -> Result<Ranges, String> {
        self.at += 1;
        let negate = self.eat('^');
        if negate && ci {
            return self.unsupported("a negated class under (?i)");
        }
        let mut r: Ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return self.unsupported("an unclosed class");
            };
            if c == ']' && !first {
                self.at += 1;
                break;
            }
            let lo = match c {
                ']' => return self.unsupported("']' first in a class"),
                '[' => return self.unsupported("'[' in a class"),
                '&' | '~' | '|' | '-' if self.peek_at(1) == Some(c) => {
                    return self.unsupported("a doubled '&', '~', '|' or '-' in a class")
                }
                '\\' => match self.escape(ci)? {
                    Item::Set(s) => {
                        r.extend(s);
                        first = false;
                        continue;
                    }
                    Item::Char(c) => c,
                },
                _ => {
                    self.at += 1;
                    c
                }
            };
            first = false;
            if ci && !lo.is_ascii() {
                return self.unsupported("a non-ASCII character under (?i)");
            }
            // A range `lo-hi` (a '-' before ']' is a literal).
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                if ci {
                    return self.unsupported("a range under (?i)");
                }
                self.at += 1;
                let hi = match self.peek() {
                    Some('\\') => match self.escape(ci)? {
                        Item::Char(c) => c,
                        Item::Set(_) => return self.unsupported("a class as a range's end"),
                    },
                    Some('[') => return self.unsupported("'[' in a class"),
                    Some(c) => {
                        self.at += 1;
                        c
                    }
                    None => return self.unsupported("an unclosed class"),
                };
                if hi < lo {
                    return self.unsupported("a reversed range");
                }
                r.push((lo as u32, hi as u32));
            } else {
                for v in case_variants(lo).into_iter().filter(|_| ci).chain([lo]) {
                    r.push((v as u32, v as u32));
                }
            }
        }
        let r = normalize(r);
        Ok(if negate { complement(&r) } else { r })
    }

    fn emit_char(&mut self, c: char, ci: bool) {
        if ci && c.is_ascii_alphabetic() {
            let r = normalize(
                case_variants(c)
                    .iter()
                    .map(|&v| (v as u32, v as u32))
                    .collect(),
            );
            self.emit_class(&r);
        } else if c.is_ascii_alphanumeric() {
            self.out.push(c);
        } else {
            let _ = write!(self.out, "\\x{{{:X}}}", c as u32);
        }
    }

    fn emit_class(&mut self, r: &Ranges) {
        if r.is_empty() {
            // Matches nothing (`regex` accepts such classes, e.g. [^\s\S]).
            self.out.push_str("(?!)");
            return;
        }
        self.out.push('[');
        for &(a, b) in r {
            if a == b {
                let _ = write!(self.out, "\\x{{{a:X}}}");
            } else {
                let _ = write!(self.out, "\\x{{{a:X}}}-\\x{{{b:X}}}");
            }
        }
        self.out.push(']');
    }
}

enum Item {
    Char(char),
    Set(Ranges),
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    #[test]
    fn llama3_splits_like_regex() {
        let s = RegexSplitter::new(LLAMA3).unwrap();
        assert_eq!(
            s.split("Hello world's  12345 ok\n\n  x").unwrap(),
            vec!["Hello", " world", "'s", " ", " ", "123", "45", " ok", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn gaps_are_pieces() {
        let s = RegexSplitter::new(r"[a-z]+").unwrap();
        assert_eq!(s.split("12ab 3c").unwrap(), vec!["12", "ab", " 3", "c"]);
    }

    #[test]
    fn refusals() {
        for p in [
            r"\bx",
            r"x$",
            r"^x",
            r"(?<=a)b",
            r"(a)\1",
            r"(?i)x",
            r"x*",
            r"[[a]]",
            r"[a&&b]",
            r"\p{Latin}",
            r"(?i:é)",
            r"a{,3}",
            r"a{2000}",
            r"(?x)a",
            r"a**",
            r"[^",
            "(",
            ")",
            r"\",
            r"(?i:\p{L})",
            r"x|",
            r"\Z",
            r"\1",
            r"\x41",
        ] {
            assert!(RegexSplitter::new(p).is_err(), "{p:?} was accepted");
        }
    }

    #[test]
    fn case_insensitive_ascii_follows_regex() {
        let s = RegexSplitter::new(r"(?i:'s|k)").unwrap();
        assert_eq!(
            s.split("'S'\u{17F}\u{212A}").unwrap(),
            vec!["'S", "'\u{17F}", "\u{212A}"]
        );
    }
}
