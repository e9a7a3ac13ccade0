//! Short byte strings packed into one integer: the key of the maps whose keys are nearly all
//! pieces of a few bytes (the encoder's piece cache, training's piece counts), so that a lookup
//! hashes and compares one integer instead of hashing and comparing memory behind a pointer;
//! and `prefetch`, with which those tables (and the merge loop's words) ask for memory ahead.

/// Asks the CPU to start loading the cache line at `p` into its first-level cache: the tables
/// are far larger than the cache, and a lookup asked for a few pieces ahead then rarely waits
/// on memory.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    // SAFETY: a prefetch is only a hint: it reads nothing into the program and cannot fault,
    // whatever the address.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A packed key's hash, for tables that index by its top bits (a multiply mixes every key
/// byte into them).
#[inline(always)]
pub fn hash(key: u128) -> u64 {
    let (lo, hi) = (key as u64, (key >> 64) as u64);
    (lo.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hi).wrapping_mul(0xF135_7AEA_2E62_A9C5)
}

/// The longest string `pack` holds.
pub const MAX_PACKED: usize = 15;

/// The bytes of `key` (little-endian) with its length in the top byte; None past 15 bytes.
/// Two overlapping loads cover any length without a variable-length copy: the bytes they
/// share are equal, so OR-ing them changes nothing.
#[inline(always)]
pub fn pack(key: &[u8]) -> Option<u128> {
    let n = key.len();
    let bytes = match n {
        0 => 0,
        1..=3 => {
            key[0] as u128
                | (key[n / 2] as u128) << (8 * (n / 2))
                | (key[n - 1] as u128) << (8 * (n - 1))
        }
        4..=7 => {
            let lo = u32::from_le_bytes([key[0], key[1], key[2], key[3]]) as u128;
            let hi = u32::from_le_bytes([key[n - 4], key[n - 3], key[n - 2], key[n - 1]]) as u128;
            lo | hi << (8 * (n - 4))
        }
        8..=MAX_PACKED => {
            let lo = u64::from_le_bytes(key[..8].try_into().ok()?) as u128;
            let hi = u64::from_le_bytes(key[n - 8..].try_into().ok()?) as u128;
            lo | hi << (8 * (n - 8))
        }
        _ => return None,
    };
    Some(bytes | (n as u128) << 120)
}

/// `pack(&s[at..at + n])`, from one 16-byte load where `s` has 16 bytes from `at` on (the
/// bytes past the piece masked off).
#[inline(always)]
pub fn pack_within(s: &[u8], at: usize, n: usize) -> Option<u128> {
    match s.get(at..at + 16) {
        Some(w) if n <= MAX_PACKED => {
            let w = u128::from_le_bytes(w.try_into().ok()?);
            Some(w & ((1u128 << (8 * n)) - 1) | (n as u128) << 120)
        }
        _ => pack(s.get(at..at + n)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_equals_the_bytes_and_length() {
        let data: Vec<u8> = (1..=20u8).map(|b| b.wrapping_mul(37)).collect();
        for n in 0..=15 {
            let mut want = [0u8; 16];
            want[..n].copy_from_slice(&data[..n]);
            want[15] = n as u8;
            let got = pack(&data[..n]);
            assert_eq!(got, Some(u128::from_le_bytes(want)), "length {n}");
        }
        assert_eq!(pack(&data[..16]), None);
    }

    #[test]
    fn pack_within_equals_pack() {
        let data: Vec<u8> = (0..40u8)
            .map(|b| b.wrapping_mul(91).wrapping_add(3))
            .collect();
        for at in 0..=data.len() {
            for n in 0..=(data.len() - at).min(20) {
                let want = pack(&data[at..at + n]);
                assert_eq!(pack_within(&data, at, n), want, "at {at}, n {n}");
            }
        }
    }
}
