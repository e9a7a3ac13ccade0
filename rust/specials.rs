//! Special tokens: finding them in text (leftmost match first, the longest one at a position),
//! for counting, encoding and the places a file may be cut.

use aho_corasick::{AhoCorasick, MatchKind};

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
    /// The matcher could not be built (too many or too long special tokens): how many there
    /// are, the longest one, and the matcher's reason.
    TooLarge {
        count: usize,
        longest: String,
        why: String,
    },
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
            .map_err(|e| too_large(&specials, e))?;
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

    /// Ends of the special tokens in `buf` that no longer special token could extend past the
    /// end of `buf` (the text after `buf` is not known yet), in order.
    pub(crate) fn settled_ends<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        self.matcher
            .iter()
            .flat_map(move |m| m.find_iter(buf))
            .filter(move |m| m.start() + self.max_len <= buf.len())
            .map(|m| m.end())
    }
}

/// The matcher refused `specials` (aho-corasick's size limits): says how many there are and
/// which is the longest, so the user knows what to shorten or drop.
fn too_large(specials: &[&str], e: aho_corasick::BuildError) -> SpecialError {
    let longest = specials
        .iter()
        .max_by_key(|s| s.len())
        .copied()
        .unwrap_or("");
    SpecialError::TooLarge {
        count: specials.len(),
        longest: longest.chars().take(80).collect(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_split_longest_first() {
        let sp = SpecialSplitter::new(&["<|a|>", "<|a|><|a|>"]).unwrap();
        let mut segs = Vec::new();
        sp.for_each_segment("x<|a|><|a|>y<|a|>z", |s| segs.push(s));
        assert_eq!(segs, vec!["x", "y", "z"]);
    }

    #[test]
    fn empty_special_tokens_are_refused() {
        assert_eq!(
            SpecialSplitter::new(&["a", ""]).err(),
            Some(SpecialError::Empty(1))
        );
    }
}
