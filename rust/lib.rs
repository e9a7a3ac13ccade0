//! fastbpe: byte-level BPE training (and, through the Python package, encoding).
//!
//! The core modules know nothing of Python; `py.rs` (feature `python`) is the only binding layer.

pub mod count;
pub mod encode;
pub mod input;
pub mod optim;
pub mod packed;
pub mod pipeline;
pub mod pretok;
pub mod regex_encode;
pub mod regex_split;
mod shared_table;
#[rustfmt::skip]
#[allow(dead_code)] // generated: the version is for the Python binding
mod regex_classes;
pub mod ranks;
pub mod specials;
pub mod train;
pub mod xent;
#[rustfmt::skip]
#[allow(dead_code)] // generated: not every class is used by every pattern
mod unicode_tables;

#[cfg(feature = "python")]
mod py;

/// What the crate's tests share.
#[cfg(test)]
mod testing {
    /// A small xorshift generator, so that the tests need no crate.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A number below `n` (not 0).
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
