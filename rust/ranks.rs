//! The merges behind tiktoken's rank files.
//!
//! A `.tiktoken` file lists tokens by rank, not merges. Under tiktoken's rule (any two adjacent
//! parts merge when their concatenation is a token, lowest rank first, leftmost among equals),
//! the merge that builds a token is what BPE on its bytes, with only lower ranks allowed, ends
//! with: exactly two parts. A token that ends in more parts is built by no merge and has none.
//! `fastbpe.reference.merges_from_ranks` is the readable definition this equals.

use rustc_hash::FxHashMap;

/// The merge (left, right) of every token that has one, in rank order. `tokens` are the ranked
/// tokens, lowest rank first, no two the same (only their order matters, not the ranks' values).
pub fn merges_from_ranks(tokens: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let rank: FxHashMap<&[u8], usize> = tokens.iter().enumerate().map(|(r, t)| (*t, r)).collect();
    let mut merges = Vec::new();
    let mut starts = Vec::new();
    let mut pair_ranks = Vec::new();
    for (r, token) in tokens.iter().enumerate() {
        if let Some(split) = last_split(token, r, &rank, &mut starts, &mut pair_ranks) {
            let (left, right) = token.split_at(split);
            merges.push((left.to_vec(), right.to_vec()));
        }
    }
    merges
}

/// Where BPE on `token`'s bytes, with ranks below `limit` only, leaves its last two parts (the
/// right part's start); None if it stops at more than two (or the token is one byte).
/// `starts` and `pair_ranks` are scratch buffers reused across tokens.
fn last_split(
    token: &[u8],
    limit: usize,
    rank: &FxHashMap<&[u8], usize>,
    starts: &mut Vec<usize>,
    pair_ranks: &mut Vec<Option<usize>>,
) -> Option<usize> {
    if token.len() < 2 {
        return None;
    }
    // Part k is token[starts[k]..starts[k + 1]]; the last entry is the token's length.
    starts.clear();
    starts.extend(0..=token.len());
    let pair_rank = |starts: &[usize], k: usize| -> Option<usize> {
        let (a, b) = (*starts.get(k)?, *starts.get(k + 2)?);
        rank.get(token.get(a..b)?).copied().filter(|&r| r < limit)
    };
    // pair_ranks[k]: the rank of parts k and k + 1 together, if allowed.
    pair_ranks.clear();
    pair_ranks.extend((0..token.len() - 1).map(|k| pair_rank(starts, k)));
    while starts.len() > 3 {
        // The lowest rank, leftmost among equals (min_by_key keeps the first minimum).
        let (k, _) = pair_ranks
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.map(|r| (k, r)))
            .min_by_key(|&(_, r)| r)?;
        starts.remove(k + 1);
        pair_ranks.remove(k);
        if let Some(slot) = pair_ranks.get_mut(k) {
            *slot = pair_rank(starts, k);
        }
        if k > 0 {
            if let Some(slot) = pair_ranks.get_mut(k - 1) {
                *slot = pair_rank(starts, k - 1);
            }
        }
    }
    if starts.len() == 3 {
        starts.get(1).copied()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges(tokens: &[&str]) -> Vec<(String, String)> {
        let tokens: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
        merges_from_ranks(&tokens)
            .into_iter()
            .map(|(a, b)| (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap()))
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn single_bytes_have_no_merge() {
        assert!(merges(&["a", "b"]).is_empty());
    }

    #[test]
    fn lowest_rank_first_then_the_last_two_parts() {
        // "abc": "bc" (rank 3) is lower than "ab" (rank 4), so b+c merge first: a + bc.
        let got = merges(&["a", "b", "c", "bc", "ab", "abc"]);
        assert_eq!(got, vec![pair("b", "c"), pair("a", "b"), pair("a", "bc")]);
    }

    #[test]
    fn only_lower_ranks_are_allowed() {
        // "ab" has a higher rank than "abc", so BPE on "abc" below its rank stops at a, b, c.
        let got = merges(&["a", "b", "c", "bc", "abc", "ab"]);
        assert_eq!(got, vec![pair("b", "c"), pair("a", "bc"), pair("a", "b")]);
        let got = merges(&["a", "b", "c", "abc", "ab", "bc"]);
        assert_eq!(got, vec![pair("a", "b"), pair("b", "c")]);
    }

    #[test]
    fn leftmost_among_equal_ranks() {
        // "aaa": a+a at 0 and at 1 are the same token; the leftmost merges: aa + a.
        let got = merges(&["a", "aa", "aaa"]);
        assert_eq!(got, vec![pair("a", "a"), pair("aa", "a")]);
        let got = merges(&["a", "aa", "aaaa"]);
        assert_eq!(got, vec![pair("a", "a"), pair("aa", "aa")]);
    }

    #[test]
    fn neighbours_are_rescored_after_a_merge() {
        // "abcd": c+d (rank 4), then b+cd (rank 5), leaving a + bcd.
        let got = merges(&["a", "b", "c", "d", "cd", "bcd", "ab", "abcd"]);
        assert_eq!(
            got,
            vec![
                pair("c", "d"),
                pair("b", "cd"),
                pair("a", "b"),
                pair("a", "bcd")
            ]
        );
    }
}
