//! A table of packed pieces (`packed::pack`) -> token ids that the worker threads of one
//! encoder read and fill together, without locks: a piece one worker put through BPE is a
//! lookup for the others, and one worker's table is not doubled in each core's cache.
//!
//! Open addressing with linear probing over 32-byte slots, never more than half full, entries
//! never removed: a lookup costs what it costs in a table of one thread. A slot is claimed by
//! setting its id count from 0 to `WRITING` (compare and swap), then filled, then published
//! by storing the count (release); a reader that loads the count (acquire) sees the whole
//! entry. A reader that finds a slot being written passes over it, so a piece may be entered
//! twice by two workers at the same moment: both entries hold the same ids, and one is never
//! found. Once `LIMIT` entries are in, the table takes no more (the first pieces of a corpus
//! are its frequent ones); the workers' own caches keep the rest.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::encode::{advise_huge_pages, Cached, HUGE, INLINE};
use crate::packed;

/// Entries kept (the table has twice as many slots: 16 MB).
const LIMIT: usize = 1 << 18;
const SLOTS: usize = 2 * LIMIT;
/// Ids kept for pieces of more than `INLINE` ids (16 MB at most).
const MAX_IDS: usize = 1 << 22;
/// The count of a slot that a writer has claimed and not yet published.
const WRITING: u32 = u32::MAX;

#[repr(C, align(32))]
struct Slot {
    /// The packed key's low and high halves.
    lo: AtomicU64,
    hi: AtomicU64,
    /// Number of ids: 0 for an empty slot, `WRITING` while being filled.
    n: AtomicU32,
    /// The ids when there are at most `INLINE`, else `a` is where they start in `ids`.
    a: AtomicU32,
    b: AtomicU32,
    c: AtomicU32,
}

/// Two slots a cache line: a lookup reads one line.
const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    /// The entry of a slot whose count (loaded with acquire) is `n`.
    #[inline(always)]
    fn entry(&self, n: u32) -> Cached {
        Cached {
            n,
            a: self.a.load(Relaxed),
            b: self.b.load(Relaxed),
            c: self.c.load(Relaxed),
        }
    }
}

/// A value alone in its cache lines (two of 64 bytes: cores fetch lines in pairs), so that
/// writing it does not take from the other cores the lines every lookup reads.
#[repr(align(128))]
struct Alone<T>(T);

pub(crate) struct SharedTable {
    slots: Zeroed<Slot>,
    ids: Zeroed<AtomicU32>,
    /// The counters that inserts write, each in lines of its own: were they beside `slots`
    /// and `ids` (read by every lookup), each insert by one worker would cost the others a
    /// cache miss on their next lookup.
    /// Slots claimed (entries, counting those being written).
    len: Alone<AtomicUsize>,
    /// `ids` handed out so far (may pass `MAX_IDS` by what a refused claim asked for).
    ids_len: Alone<AtomicUsize>,
    /// Set when an insert finds `LIMIT` entries in; read for every piece, written once.
    full: Alone<AtomicBool>,
    /// Whether `populate` has run.
    populated: AtomicBool,
}

impl SharedTable {
    /// An empty table; None when the system will not give the memory (the workers then keep
    /// only their own caches). Its memory is backed only where it is written, so a small call
    /// pays only for the pages it touches (a first batch of a few short texts no longer took
    /// 10 ms and 16 MB); a large one calls `populate` first.
    pub(crate) fn new() -> Option<Self> {
        Some(SharedTable {
            slots: Zeroed::aligned(SLOTS, HUGE)?,
            ids: Zeroed::new(MAX_IDS)?,
            populated: AtomicBool::new(false),
            len: Alone(AtomicUsize::new(0)),
            ids_len: Alone(AtomicUsize::new(0)),
            full: Alone(AtomicBool::new(false)),
        })
    }

    /// The slot where the probe of a key whose hash (`packed::hash`) is `hash` starts.
    #[inline(always)]
    fn home(hash: u64) -> usize {
        (hash >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// Starts loading the slot a lookup of the key whose hash is `hash` reads first.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u64) {
        packed::prefetch(self.slots.as_ptr().wrapping_add(Self::home(hash)));
    }

    /// Has the system back all the slots' pages now, in one pass, once: a call that will fill
    /// much of the table then does not fault them in one by one, at random, while its workers
    /// encode (they wait on each other's faults: 10 ms of a cold 20 MB file on two cores).
    pub(crate) fn populate(&self) {
        // Read first: every call's workers come here, and a write would take from the other
        // cores the line that their lookups read (`slots`, `ids`).
        if !self.populated.load(Relaxed) && !self.populated.swap(true, Relaxed) {
            self.slots.populate();
        }
    }

    /// Whether the table takes no more entries.
    pub(crate) fn is_full(&self) -> bool {
        self.full.0.load(Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: u128) -> Option<Cached> {
        self.get_hashed(key, packed::hash(key))
    }

    /// The entry of `key` if it is in its home slot with one to `INLINE` ids
    /// (`PieceCache::home_hit`; an empty slot, or one being written, has none).
    #[inline(always)]
    pub(crate) fn home_hit(&self, key: u128, hash: u64) -> Option<Cached> {
        let slot = self.slots.get(Self::home(hash))?;
        let n = slot.n.load(Acquire);
        let hit = (n.wrapping_sub(1) < INLINE)
            & (slot.lo.load(Relaxed) == key as u64)
            & (slot.hi.load(Relaxed) == (key >> 64) as u64);
        hit.then(|| slot.entry(n))
    }

    /// `get` given `packed::hash(key)`.
    #[inline(always)]
    pub(crate) fn get_hashed(&self, key: u128, hash: u64) -> Option<Cached> {
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        let mut i = Self::home(hash);
        // Ends: at most half the slots are ever claimed.
        loop {
            let slot = self.slots.get(i)?;
            let n = slot.n.load(Acquire);
            if n == 0 {
                return None;
            }
            if n != WRITING && slot.lo.load(Relaxed) == lo && slot.hi.load(Relaxed) == hi {
                return Some(slot.entry(n));
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }

    /// Appends an entry's ids to `out`.
    #[inline(always)]
    pub(crate) fn push_ids(&self, e: Cached, out: &mut Vec<u32>) {
        if e.n <= INLINE {
            crate::encode::push_inline(out, e);
        } else {
            let at = e.a as usize;
            let ids = self.ids.get(at..at + e.n as usize).unwrap_or_default();
            out.extend(ids.iter().map(|id| id.load(Relaxed)));
        }
    }

    /// Enters `key` -> `ids` (at least one id); false when the table is full (nothing entered).
    pub(crate) fn insert(&self, key: u128, ids: &[u32]) -> bool {
        let Ok(n) = u32::try_from(ids.len()) else {
            return false;
        };
        if n == 0 || n == WRITING || self.is_full() {
            return false;
        }
        let e = match Cached::inline(ids) {
            Some(e) => e,
            None => {
                let at = self.ids_len.0.fetch_add(ids.len(), Relaxed);
                let (Some(room), Ok(at32)) = (self.ids.get(at..at + ids.len()), u32::try_from(at))
                else {
                    return false;
                };
                for (slot, &id) in room.iter().zip(ids) {
                    slot.store(id, Relaxed);
                }
                Cached::stored_at(n, at32)
            }
        };
        if self.len.0.fetch_add(1, Relaxed) >= LIMIT {
            self.len.0.fetch_sub(1, Relaxed);
            self.full.0.store(true, Relaxed);
            return false;
        }
        let (lo, hi) = (key as u64, (key >> 64) as u64);
        let mut i = Self::home(packed::hash(key));
        loop {
            let Some(slot) = self.slots.get(i) else {
                return false;
            };
            let mut seen = slot.n.load(Acquire);
            if seen == 0 {
                match slot.n.compare_exchange(0, WRITING, Acquire, Acquire) {
                    Ok(_) => {
                        slot.lo.store(lo, Relaxed);
                        slot.hi.store(hi, Relaxed);
                        slot.a.store(e.a, Relaxed);
                        slot.b.store(e.b, Relaxed);
                        slot.c.store(e.c, Relaxed);
                        slot.n.store(n, Release);
                        return true;
                    }
                    Err(now) => seen = now,
                }
            }
            if seen != WRITING && slot.lo.load(Relaxed) == lo && slot.hi.load(Relaxed) == hi {
                // Another worker entered it first.
                self.len.0.fetch_sub(1, Relaxed);
                return true;
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }
}

/// Types whose all-zero bytes are a valid value.
///
/// # Safety
/// Only for such types.
unsafe trait Zeroable {}
// SAFETY: an atomic integer's zero bytes are 0; a slot is atomics (and padding).
unsafe impl Zeroable for AtomicU32 {}
unsafe impl Zeroable for Slot {}

/// `len` zeroed values in a block the allocator hands out zeroed without writing it (a block
/// this large comes fresh from the system, backed only where it is written), aligned for the
/// values by hand: asked for alignment past 16 bytes (a `Slot`'s 32), the allocator would
/// write the zeros itself, every page, at once.
struct Zeroed<T> {
    items: NonNull<T>,
    len: usize,
    block: NonNull<u8>,
    layout: Layout,
}

impl<T: Zeroable> Zeroed<T> {
    /// None when the system will not give the memory.
    fn new(len: usize) -> Option<Self> {
        Self::aligned(len, std::mem::align_of::<T>())
    }

    /// `new` with the values starting on an `align` boundary (a power of two) as well.
    fn aligned(len: usize, align: usize) -> Option<Self> {
        let size = std::mem::size_of::<T>().checked_mul(len)?;
        let align = align.max(std::mem::align_of::<T>());
        let block_align = align.min(16);
        let layout =
            Layout::from_size_align(size.checked_add(align - block_align)?, block_align).ok()?;
        if size == 0 || std::mem::needs_drop::<T>() {
            return None;
        }
        // SAFETY: `layout` is not empty; the block is freed with it in `drop`.
        let block = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        // At most `align - block_align` bytes in, so `len` values fit after it.
        let items = block
            .as_ptr()
            .wrapping_add(block.as_ptr().align_offset(align))
            .cast::<T>();
        Some(Zeroed {
            items: NonNull::new(items)?,
            len,
            block,
            layout,
        })
    }
}

impl<T> Zeroed<T> {
    /// Asks the system to back the whole pages of the values now, as writing them would,
    /// without changing them (Linux 5.14 on; elsewhere, or where refused, they are backed as
    /// they are first written, as before), with 2 MB pages where it has them. Every lookup
    /// reads a slot at random in 16 MB: on 4 KB pages most of them first miss the TLB (a
    /// 20 MB file that is all in the table took 66-68 ms of CPU on one worker, 62-63 on 2 MB
    /// pages). Only here, for a call that will fill the table: a small call that writes a few
    /// slots would otherwise be given a 2 MB page for each.
    fn populate(&self) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf only reads a system setting.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
            let Some(page) = Some(page).filter(|p| p.is_power_of_two()) else {
                return;
            };
            let start = self.items.as_ptr() as usize;
            let len = self.len * std::mem::size_of::<T>();
            advise_huge_pages(start, len);
            let (first, last) = (start.next_multiple_of(page), (start + len) / page * page);
            if last > first {
                // SAFETY: the range lies within this block; populating changes no contents.
                unsafe {
                    libc::madvise(
                        first as *mut libc::c_void,
                        last - first,
                        libc::MADV_POPULATE_WRITE,
                    )
                };
            }
        }
    }
}

impl<T> std::ops::Deref for Zeroed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `items` is aligned for `T` and holds `len` of them within the block, all
        // valid (zero bytes are a valid `T`, `Zeroable`, and only `T`'s own methods change them).
        unsafe { std::slice::from_raw_parts(self.items.as_ptr(), self.len) }
    }
}

impl<T> Drop for Zeroed<T> {
    fn drop(&mut self) {
        // SAFETY: the block was allocated with `layout`, and its values need no drop.
        unsafe { std::alloc::dealloc(self.block.as_ptr(), self.layout) }
    }
}

// SAFETY: a `Zeroed<T>` owns its values as a `Box<[T]>` would.
unsafe impl<T: Send> Send for Zeroed<T> {}
// SAFETY: as above; shared, it hands out only `&[T]`.
unsafe impl<T: Sync> Sync for Zeroed<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// A key of 2 to 15 bytes made from `i`, and the ids it is given (1 to 5 of them, from the
    /// key, so a wrong entry or a torn read shows).
    fn key(i: u64) -> u128 {
        let bytes = (i.wrapping_mul(0x2545_F491_4F6C_DD1D)).to_le_bytes();
        let len = 2 + (i % 7) as usize;
        packed::pack(&[&bytes[..], &bytes[..]].concat()[..len]).unwrap() ^ u128::from(i) << 64
    }

    fn ids(i: u64) -> Vec<u32> {
        (0..1 + i % 5)
            .map(|j| (i as u32).wrapping_mul(31) ^ j as u32)
            .collect()
    }

    fn read(t: &SharedTable, i: u64) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        t.push_ids(t.get(key(i))?, &mut out);
        Some(out)
    }

    #[test]
    fn zeroed_blocks_are_aligned_and_zero_populated_or_not() {
        // The table's own size and alignment too: whole 2 MB pages, advised before populating.
        for (populate, align) in [(true, 32), (false, 32), (true, HUGE), (false, HUGE)] {
            for len in [1, 3, 1000, 1 << 16, SLOTS] {
                let slots = Zeroed::<Slot>::aligned(len, align).unwrap();
                if populate {
                    slots.populate();
                }
                assert_eq!(slots.len(), len);
                assert_eq!(
                    slots.as_ptr() as usize % align,
                    0,
                    "populate {populate}, len {len}, align {align}"
                );
                assert!(slots
                    .iter()
                    .all(|s| s.n.load(Relaxed) == 0 && s.lo.load(Relaxed) == 0));
                slots[len - 1].n.store(7, Relaxed);
                // Populating a table in use (as a later large call does) changes nothing in it.
                slots.populate();
                assert_eq!(slots[len - 1].n.load(Relaxed), 7);
                assert!(slots[..len - 1].iter().all(|s| s.n.load(Relaxed) == 0));
            }
        }
        assert!(Zeroed::<Slot>::new(0).is_none());
        assert!(Zeroed::<Slot>::new(usize::MAX / 8).is_none());
        assert!(Zeroed::<Slot>::aligned(usize::MAX / 32, HUGE).is_none());
    }

    #[test]
    fn entries_read_back_whole_while_threads_write() {
        let t = SharedTable::new().unwrap();
        let n = 60_000u64;
        std::thread::scope(|s| {
            for w in 0..4u64 {
                let t = &t;
                s.spawn(move || {
                    // Writers overlap: every key is entered by two of them, in different orders.
                    let mut rng = Rng(w + 1);
                    for _ in 0..n {
                        let i = rng.below(n as usize) as u64;
                        if i % 2 == w % 2 {
                            assert!(t.insert(key(i), &ids(i)));
                        }
                        if let Some(got) = read(t, rng.below(n as usize) as u64) {
                            assert!(got.len() <= 5);
                        }
                        if let Some(got) = read(t, i) {
                            assert_eq!(got, ids(i), "key {i}");
                        }
                    }
                });
            }
        });
        let mut found = 0;
        for i in 0..n {
            if let Some(got) = read(&t, i) {
                assert_eq!(got, ids(i), "key {i}");
                found += 1;
            }
        }
        // Each writer draws n keys of n: about 1 - 1/e^2 of the keys were entered.
        assert!(found > n * 8 / 10, "{found}");
        assert!(t.get(key(n + 1)).is_none());
    }

    #[test]
    fn a_full_table_refuses_and_keeps_what_it_has() {
        let t = SharedTable::new().unwrap();
        let over = LIMIT as u64 + 1000;
        let taken = (0..LIMIT as u64)
            .filter(|&i| t.insert(key(i), &ids(i)))
            .count();
        assert_eq!(taken, LIMIT);
        // Full from the first insert it refuses on.
        assert!(!t.is_full());
        assert!(!t.insert(key(LIMIT as u64), &ids(LIMIT as u64)));
        assert!(t.is_full());
        assert!(!(LIMIT as u64..over).any(|i| t.insert(key(i), &ids(i))));
        assert!((0..LIMIT as u64).all(|i| read(&t, i) == Some(ids(i))));
        assert!((LIMIT as u64..over).all(|i| read(&t, i).is_none()));
        // A key already in is still found after a refused insert of it.
        assert!(!t.insert(key(0), &ids(0)));
        assert_eq!(read(&t, 0), Some(ids(0)));
    }

    #[test]
    fn entries_with_many_ids_stop_at_the_ids_room() {
        let t = SharedTable::new().unwrap();
        let long: Vec<u32> = (0..1000).collect();
        let fits = MAX_IDS / long.len();
        let taken = (0..fits as u64 + 10)
            .filter(|&i| t.insert(key(i), &long))
            .count();
        assert_eq!(taken, fits);
        let mut out = Vec::new();
        t.push_ids(t.get(key(fits as u64 - 1)).unwrap(), &mut out);
        assert_eq!(out, long);
        assert!(t.get(key(fits as u64)).is_none());
        // Entries held in their slots still go in.
        assert!(t.insert(key(u64::MAX / 3), &[7, 8]));
        assert!(t.insert(key(u64::MAX / 5), &[7, 8, 9]));
        assert_eq!(read(&t, u64::MAX / 5), Some(vec![7, 8, 9]));
        assert!(!t.insert(key(u64::MAX / 7), &[7, 8, 9, 10]));
    }
}
