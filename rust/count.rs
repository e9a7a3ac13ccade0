//! Counting pre-tokens: text -> special-token split -> pieces -> `piece bytes -> count`.
//!
//! Files are read in chunks cut only where cutting cannot change the pieces, and the chunks are
//! counted in parallel, each worker in its own map; the maps are merged once at the end.

use std::path::Path;

use rustc_hash::FxHashMap;

use crate::input::{chunk_text, ChunkReader, HookedReader, InputError, Interrupted};
use crate::pipeline::{self, thread_count, Batches, Stages};
use crate::pretok::Pattern;
use crate::specials::SpecialSplitter;

/// Size of the blocks read from a file when counting; each chunk handed to a worker is about
/// this big (every worker keeps its own counts, so bigger chunks cost nothing).
const COUNT_BLOCK: usize = 4 << 20;

/// A map from piece bytes to the number of times the piece occurs.
pub type Counts = FxHashMap<Vec<u8>, u64>;

/// Counts the pieces of `text` into `counts`.
pub fn count_text(text: &str, pattern: Pattern, specials: &SpecialSplitter, counts: &mut Counts) {
    specials.for_each_segment(text, |segment| {
        pattern.for_each_piece(segment, |piece| {
            if let Some(c) = counts.get_mut(piece.as_bytes()) {
                *c += 1;
            } else {
                counts.insert(piece.as_bytes().to_vec(), 1);
            }
        })
    });
}

/// Adds every count of `src` into `dst` (iterating the smaller map).
pub fn merge_counts(dst: &mut Counts, mut src: Counts) {
    if src.len() > dst.len() {
        std::mem::swap(dst, &mut src);
    }
    for (k, v) in src {
        *dst.entry(k).or_insert(0) += v;
    }
}

/// What the threads of counting do, for the message of a panic.
const COUNT_FILE: Stages = Stages {
    work: "count_file",
    producer: "reading",
    worker: "counting",
    consumer: "merging",
};
const COUNT_TEXTS: Stages = Stages {
    work: "count_texts",
    ..COUNT_FILE
};

/// Counts the pieces of a UTF-8 file on `num_threads` threads.
///
/// `hook(bytes_read)` is called from the calling thread after every block and while it waits;
/// it returns `Err(Interrupted)` to stop early.
pub fn count_file(
    path: &Path,
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Counts, InputError> {
    let mut reader = ChunkReader::open(path, pattern, specials, COUNT_BLOCK)?;
    let maps = pipeline::unordered(
        COUNT_FILE,
        num_threads,
        &mut HookedReader {
            reader: &mut reader,
            hook,
        },
        Counts::default,
        |counts, (offset, chunk), _| {
            count_text(chunk_text(offset, &chunk)?, pattern, specials, counts);
            Ok(())
        },
    )?;
    Ok(merge_all(maps))
}

/// Counts the pieces of many texts on `num_threads` threads (each text on its own: pieces
/// never span two texts).
pub fn count_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
) -> Result<Counts, InputError> {
    let threads = thread_count(num_threads).min(texts.len().max(1));
    let maps = pipeline::unordered(
        COUNT_TEXTS,
        threads,
        &mut Batches::<_, InputError>::new(texts, threads, 4),
        Counts::default,
        |counts, run: &[S], _| {
            for t in run {
                count_text(t.as_ref(), pattern, specials, counts);
            }
            Ok(())
        },
    )?;
    Ok(merge_all(maps))
}

/// The counts of several maps added together.
pub fn merge_all(maps: Vec<Counts>) -> Counts {
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn count_str(text: &str, specials: &[&str]) -> Counts {
        let mut c = Counts::default();
        count_text(
            text,
            Pattern::Gpt2,
            &SpecialSplitter::new(specials).unwrap(),
            &mut c,
        );
        c
    }

    #[test]
    fn counts_pieces() {
        let c = count_str("the cat the<|endoftext|> cat", &["<|endoftext|>"]);
        assert_eq!(c[b"the".as_slice()], 1);
        assert_eq!(c[b" the".as_slice()], 1);
        assert_eq!(c[b" cat".as_slice()], 2);
        assert!(!c.keys().any(|k| k.windows(2).any(|w| w == b"<|")));
    }

    #[test]
    fn file_in_chunks_equals_whole_text() {
        // Many lines so the file is cut into several chunks.
        let mut text = String::new();
        for i in 0..400_000 {
            text.push_str(&format!("line {i} of text, 'quoted'  \n"));
            if i % 1000 == 0 {
                text.push_str("<|endoftext|>");
            }
            if i % 777 == 0 {
                text.push_str("\n\n  \nA");
            }
        }
        let dir = std::env::temp_dir().join(format!("fastbpe_count_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.txt");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let sp = SpecialSplitter::new(&["<|endoftext|>"]).unwrap();
        let from_file = count_file(&path, Pattern::Gpt2, &sp, 3, &mut |_| Ok(())).unwrap();
        let mut whole = Counts::default();
        count_text(&text, Pattern::Gpt2, &sp, &mut whole);
        assert_eq!(from_file, whole);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_utf8_reports_offset() {
        let dir = std::env::temp_dir().join(format!("fastbpe_utf8_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.txt");
        std::fs::write(&path, b"hello \xff world").unwrap();
        let sp = SpecialSplitter::none();
        match count_file(&path, Pattern::Gpt2, &sp, 2, &mut |_| Ok(())) {
            Err(InputError::InvalidUtf8 { offset }) => assert_eq!(offset, 6),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
