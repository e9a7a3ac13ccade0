//! Counting pre-tokens: text -> special-token split -> pieces -> `piece bytes -> count`.
//!
//! Files are read in chunks cut only where cutting cannot change the pieces, and the chunks are
//! counted in parallel, each worker in its own map; the maps are merged once at the end.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use rustc_hash::FxHashMap;

use crate::input::{ChunkReader, InputError, Interrupted, Panicked};
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

/// The most threads one call starts: more than the machine has only adds overhead, and the
/// bound keeps a huge `num_threads` from exhausting memory.
pub const MAX_THREADS: usize = 256;

/// `num_threads` as used: at least 1, at most `MAX_THREADS`.
pub fn thread_count(num_threads: usize) -> usize {
    num_threads.clamp(1, MAX_THREADS)
}

/// Starts a scoped thread, or says why the system would not.
pub(crate) fn spawn<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new().spawn_scoped(scope, f)
}

/// Counts the pieces of a UTF-8 file on `num_threads` threads.
///
/// `hook(bytes_read)` is called from the calling thread after every block; it returns
/// `Err(Interrupted)` to stop early.
pub fn count_file(
    path: &Path,
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
) -> Result<Counts, InputError> {
    let num_threads = thread_count(num_threads);
    let mut reader = ChunkReader::open(path, pattern, specials, COUNT_BLOCK)?;
    // Offset of the first invalid UTF-8 byte seen by any worker (u64::MAX: none yet).
    let first_bad = AtomicU64::new(u64::MAX);
    // Set when reading fails or is interrupted: the workers skip the chunks still queued.
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(num_threads);
    let rx = Mutex::new(rx);

    let result: Result<Vec<Counts>, InputError> = std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(num_threads);
        for _ in 0..num_threads {
            let (rx, first_bad, stop) = (&rx, &first_bad, &stop);
            let started = spawn(scope, move || {
                let mut counts = Counts::default();
                // The lock is held only while waiting for the next chunk.
                while let Some((offset, chunk)) = recv_shared(rx) {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    match std::str::from_utf8(&chunk) {
                        Ok(text) => count_text(text, pattern, specials, &mut counts),
                        Err(e) => {
                            let at = offset + e.valid_up_to() as u64;
                            first_bad.fetch_min(at, Ordering::Relaxed);
                        }
                    }
                }
                counts
            });
            match started {
                Ok(w) => workers.push(w),
                // Fewer threads than asked for still count everything.
                Err(_) if !workers.is_empty() => break,
                Err(e) => return Err(InputError::Io(e)),
            }
        }
        let mut read_all = || -> Result<(), InputError> {
            while let Some((offset, chunk)) = reader.next_chunk(hook)? {
                if first_bad.load(Ordering::Relaxed) != u64::MAX
                    || tx.send((offset, chunk)).is_err()
                {
                    break;
                }
            }
            Ok(())
        };
        let read_result = read_all();
        if read_result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(tx);
        let maps: Result<Vec<Counts>, InputError> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| worker_panicked("count_file", "counting"))
            })
            .collect();
        read_result.and(maps)
    });
    let maps = result?;
    let bad = first_bad.load(Ordering::Relaxed);
    if bad != u64::MAX {
        return Err(InputError::InvalidUtf8 { offset: bad });
    }
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    Ok(total)
}

/// Next message from a receiver shared by several workers; None when the sender is gone.
pub(crate) fn recv_shared<T>(rx: &Mutex<mpsc::Receiver<T>>) -> Option<T> {
    rx.lock().ok()?.recv().ok()
}

/// Counts the pieces of many texts on `num_threads` threads (each text on its own: pieces
/// never span two texts).
pub fn count_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    pattern: Pattern,
    specials: &SpecialSplitter,
    num_threads: usize,
) -> Result<Counts, InputError> {
    let num_threads = thread_count(num_threads).min(texts.len().max(1));
    if num_threads == 1 {
        let mut counts = Counts::default();
        for t in texts {
            count_text(t.as_ref(), pattern, specials, &mut counts);
        }
        return Ok(counts);
    }
    // Split by total length so each thread gets about the same amount of text.
    let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
    let per = total / num_threads + 1;
    let mut groups: Vec<&[S]> = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, t) in texts.iter().enumerate() {
        acc += t.as_ref().len();
        if acc >= per {
            groups.push(&texts[start..=i]);
            start = i + 1;
            acc = 0;
        }
    }
    if start < texts.len() {
        groups.push(&texts[start..]);
    }
    let maps = std::thread::scope(|scope| {
        let count_group = move |g: &[S]| {
            let mut counts = Counts::default();
            for t in g {
                count_text(t.as_ref(), pattern, specials, &mut counts);
            }
            counts
        };
        let mut handles = Vec::with_capacity(groups.len());
        let mut here = Vec::new(); // groups no thread could be started for: counted here
        for g in groups {
            match spawn(scope, move || count_group(g)) {
                Ok(h) => handles.push(h),
                Err(_) => here.push(count_group(g)),
            }
        }
        let mut maps = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| worker_panicked("count_texts", "counting"))
            })
            .collect::<Result<Vec<Counts>, InputError>>()?;
        maps.extend(here);
        Ok::<_, InputError>(maps)
    })?;
    let mut total = Counts::default();
    for m in maps {
        merge_counts(&mut total, m);
    }
    Ok(total)
}

pub(crate) fn worker_panicked(work: &'static str, stage: &'static str) -> InputError {
    InputError::Panicked(Panicked { work, stage })
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
