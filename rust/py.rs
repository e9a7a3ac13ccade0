//! Python bindings (`fastbpe._core`). Thin: argument conversion, error mapping, and releasing
//! the GIL around every heavy call. Users never import this module; `fastbpe` wraps it.

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyError, PyKeyboardInterrupt, PyMemoryError,
    PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyList};

use crate::count::{self, Counts};
use crate::encode::{Budget, BuildError, DecodeError, Encoder};
use crate::input::{self, InputError, Interrupted, Panicked};
use crate::pretok::Pattern;
use crate::ranks;
use crate::regex_encode::{self, Cutting, RegexError};
use crate::regex_split;
use crate::specials::{SpecialError, SpecialSplitter};
use crate::train::{self, TrainError};

create_exception!(
    fastbpe,
    UnknownTokenError,
    PyKeyError,
    "An id that is not in the tokenizer's vocabulary."
);

create_exception!(
    fastbpe,
    RegexSearchError,
    pyo3::exceptions::PyRuntimeError,
    "The Rust regex engine gave up on a search (backtracking limit): split with the `regex` module instead."
);

/// A custom pre-tokenization regex compiled for the Rust engine (`rust/regex_split.rs`).
/// Constructing one raises ValueError, with the reason, for a pattern outside the subset whose
/// meaning is known to equal the `regex` module's.
#[pyclass(module = "fastbpe._core", frozen)]
pub struct RegexSplitter {
    inner: regex_split::RegexSplitter,
}

#[pymethods]
impl RegexSplitter {
    #[new]
    fn new(pattern: &str) -> PyResult<Self> {
        regex_split::RegexSplitter::new(pattern)
            .map(|inner| RegexSplitter { inner })
            .map_err(|why| {
                PyValueError::new_err(format!(
                    "the Rust regex engine does not run {pattern:?}: {why}"
                ))
            })
    }

    /// The pieces of `text`: the matches and the text between them.
    fn split(&self, py: Python<'_>, text: &str) -> PyResult<Vec<String>> {
        let pieces = py.detach(|| {
            self.inner
                .split(text)
                .map(|p| p.into_iter().map(String::from).collect())
        });
        pieces.map_err(|e| RegexSearchError::new_err(e.0))
    }
}

/// Maps a custom-regex failure: a search the engine gave up on, or what reading `path` gave.
fn regex_error(path: &std::path::Path, e: RegexError) -> PyErr {
    match e {
        RegexError::Search(e) => RegexSearchError::new_err(e.0),
        RegexError::File(e) => read_error(path, e),
    }
}

/// A thread that panicked (a bug): RuntimeError naming the work and the stage.
impl From<Panicked> for PyErr {
    fn from(p: Panicked) -> PyErr {
        PyRuntimeError::new_err(p.to_string())
    }
}

/// Custom-regex work on texts (not a file).
impl From<RegexError> for PyErr {
    fn from(e: RegexError) -> PyErr {
        regex_error(std::path::Path::new("<texts>"), e)
    }
}

/// `Cutting` for files: the default, or chunks of `chunk_bytes` (tests).
fn cutting(chunk_bytes: Option<usize>) -> Cutting {
    match chunk_bytes {
        None => Cutting::default(),
        Some(n) => Cutting {
            chunk: n,
            overlap: n / 4,
        },
    }
}

/// Maps a file-reading failure to the Python exception a user expects, naming the file.
fn read_error(path: &std::path::Path, e: InputError) -> PyErr {
    let shown = path.display();
    match e {
        InputError::Io(e) => match e.kind() {
            std::io::ErrorKind::NotFound => {
                PyFileNotFoundError::new_err(format!("no such file: '{shown}'"))
            }
            std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(format!(
                "'{shown}' is a directory; give the text files inside it"
            )),
            _ => PyOSError::new_err(format!("'{shown}': {e}")),
        },
        InputError::InvalidUtf8 { offset } => PyValueError::new_err(format!(
            "'{shown}' is not valid UTF-8: invalid byte sequence at byte offset {offset}; \
             re-encode the file as UTF-8 (for example with iconv)"
        )),
        InputError::Write(e) => PyOSError::new_err(format!("writing the output: {e}")),
        InputError::Interrupted => interrupted(),
        InputError::Panicked(p) => p.into(),
    }
}

/// Work stopped by its hook. Only reached if the hook stopped it without a Python error
/// (`detach_with_hook` returns the KeyboardInterrupt itself otherwise); still a Ctrl-C.
fn interrupted() -> PyErr {
    PyKeyboardInterrupt::new_err("interrupted")
}

/// A count argument (threads, merges) as usize: a negative int is refused, one beyond what
/// usize holds means "as many as there are" and is taken as usize::MAX.
fn count_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    if let Ok(n) = obj.extract::<usize>() {
        return Ok(n);
    }
    let int = obj.cast::<PyInt>()?;
    if int.lt(0)? {
        return Err(PyValueError::new_err(format!(
            "{name} must be 0 or more, not {int}"
        )));
    }
    Ok(usize::MAX)
}

/// A token id: an int from 0 to 2**32 - 1 (ids are stored as u32).
fn id_arg(obj: &Bound<'_, PyAny>, what: &dyn std::fmt::Display) -> PyResult<u32> {
    match obj.extract::<u32>() {
        Ok(id) => Ok(id),
        Err(_) if obj.is_instance_of::<PyInt>() => Err(PyValueError::new_err(format!(
            "{what} has id {obj}, out of range: token ids go from 0 to 2**32 - 1 = {}",
            u32::MAX
        ))),
        Err(e) => Err(e),
    }
}

fn special_error(e: SpecialError) -> PyErr {
    PyValueError::new_err(match e {
        SpecialError::Empty(i) => {
            format!("special token {i} is the empty string; special tokens must not be empty")
        }
        SpecialError::TooLarge {
            count,
            longest,
            why,
        } => format!(
            "the {count} special tokens cannot be matched together ({why}); the longest is \
             {longest:?}: use fewer or shorter special tokens"
        ),
    })
}

fn parse_pattern(name: Option<&str>) -> PyResult<Pattern> {
    match name {
        None => Ok(Pattern::Whole),
        Some("gpt2") => Ok(Pattern::Gpt2),
        Some("whole") => Ok(Pattern::Whole),
        Some("cl100k") => Ok(Pattern::Cl100k),
        Some("o200k") => Ok(Pattern::O200k),
        Some(other) => Err(PyValueError::new_err(format!(
            "no built-in pre-tokenizer named {other:?}; \
             built-in ones: \"gpt2\", \"cl100k\", \"o200k\" or None"
        ))),
    }
}

/// Runs `work` with the GIL released, handing it a budget that checks for Ctrl-C now and then
/// (taking the GIL briefly): a KeyboardInterrupt stops the work within milliseconds.
fn detach_polling<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&mut Budget) -> Result<T, Interrupted> + Send,
{
    detach_with_hook(py, None, |hook| {
        let mut stop = || hook(0).is_err();
        work(&mut Budget::new(&mut stop))
    })?
    .map_err(|Interrupted| interrupted())
}

/// Runs `work` with the GIL released. `work` gets a hook to call now and then from the calling
/// thread: the hook takes the GIL briefly, runs pending signal handlers (so Ctrl-C raises
/// KeyboardInterrupt promptly) and reports progress to `progress(n)`.
fn detach_with_hook<T, E, F>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    work: F,
) -> PyResult<Result<T, E>>
where
    T: Send,
    E: Send,
    F: FnOnce(&mut dyn FnMut(u64) -> Result<(), Interrupted>) -> Result<T, E> + Send,
{
    let mut pending: Option<PyErr> = None;
    let out = py.detach(|| {
        let mut hook = |n: u64| -> Result<(), Interrupted> {
            Python::attach(|py| {
                let r = py.check_signals().and_then(|_| match &progress {
                    Some(cb) => cb.call1(py, (n,)).map(|_| ()),
                    None => Ok(()),
                });
                r.map_err(|e| {
                    pending = Some(e);
                    Interrupted
                })
            })
        };
        work(&mut hook)
    });
    match pending {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Pre-token counts gathered from files, texts or ready-made pieces.
#[pyclass(module = "fastbpe._core")]
pub struct WordCounts {
    counts: Counts,
    pattern: Pattern,
    specials: SpecialSplitter,
}

#[pymethods]
impl WordCounts {
    #[new]
    #[pyo3(signature = (pattern, special_tokens))]
    fn new(pattern: Option<&str>, special_tokens: Vec<String>) -> PyResult<Self> {
        Ok(WordCounts {
            counts: Counts::default(),
            pattern: parse_pattern(pattern)?,
            specials: SpecialSplitter::new(&special_tokens).map_err(special_error)?,
        })
    }

    /// Counts the pieces of a UTF-8 file on `num_threads` threads; `progress(bytes_read)`.
    #[pyo3(signature = (path, num_threads, progress=None))]
    fn add_file(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        num_threads: &Bound<'_, PyAny>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        let (pattern, specials) = (self.pattern, &self.specials);
        let res = detach_with_hook(py, progress, |hook| {
            count::count_file(&path, pattern, specials, num_threads, &mut |n| hook(n))
        })?;
        let c = res.map_err(|e| read_error(&path, e))?;
        count::merge_counts(&mut self.counts, c);
        Ok(())
    }

    /// Counts the pieces of each text (pieces never span two texts) on `num_threads` threads.
    #[pyo3(signature = (texts, num_threads))]
    fn add_texts(
        &mut self,
        py: Python<'_>,
        texts: Vec<String>,
        num_threads: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        let (pattern, specials) = (self.pattern, &self.specials);
        let c = py
            .detach(|| count::count_texts(&texts, pattern, specials, num_threads))
            .map_err(|e| read_error(std::path::Path::new("<texts>"), e))?;
        count::merge_counts(&mut self.counts, c);
        Ok(())
    }

    /// Counts the pieces of a UTF-8 file under a custom regex, on `num_threads` threads.
    #[pyo3(signature = (splitter, path, num_threads, progress=None, chunk_bytes=None))]
    fn add_file_regex(
        &mut self,
        py: Python<'_>,
        splitter: &RegexSplitter,
        path: PathBuf,
        num_threads: &Bound<'_, PyAny>,
        progress: Option<Py<PyAny>>,
        chunk_bytes: Option<usize>,
    ) -> PyResult<()> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        let (re, specials) = (&splitter.inner, &self.specials);
        let res = detach_with_hook(py, progress, |hook| {
            regex_encode::count_file(
                re,
                specials,
                &path,
                num_threads,
                cutting(chunk_bytes),
                &mut |n| hook(n),
            )
        })?;
        let c = res.map_err(|e| regex_error(&path, e))?;
        count::merge_counts(&mut self.counts, c);
        Ok(())
    }

    /// Counts the pieces of each text under a custom regex on `num_threads` threads.
    #[pyo3(signature = (splitter, texts, num_threads))]
    fn add_texts_regex(
        &mut self,
        py: Python<'_>,
        splitter: &RegexSplitter,
        texts: Vec<PyBackedStr>,
        num_threads: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        let (re, specials) = (&splitter.inner, &self.specials);
        let c = py
            .detach(|| regex_encode::count_texts(re, specials, &texts, num_threads))
            .map_err(|e| regex_error(std::path::Path::new("<texts>"), e))?;
        count::merge_counts(&mut self.counts, c);
        Ok(())
    }

    /// Streaming: the length in characters of the longest prefix of `text` whose pieces do
    /// not depend on the text after it (0 if none), as `CoreEncoder.safe_prefix_chars` for an
    /// encoder of the same pattern and special tokens; counting the prefix and the rest apart
    /// gives the counts of the whole.
    fn safe_prefix_chars(&self, text: &str) -> usize {
        let s = text.as_bytes();
        let n = input::last_safe_cut(s, 0, self.pattern, &self.specials)
            .or_else(|| input::split_cut(s, self.pattern, &self.specials))
            .unwrap_or(0);
        text.get(..n).map_or(0, |t| t.chars().count())
    }

    /// Adds counts of pieces produced elsewhere (a custom regex applied in Python).
    fn add_pieces(&mut self, pieces: &Bound<'_, PyDict>) -> PyResult<()> {
        for (k, v) in pieces.iter() {
            let key: Vec<u8> = k.extract()?;
            let n: u64 = v.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "the count of piece {k} must be an int from 0 to 2**64 - 1, not {v}"
                ))
            })?;
            let total = self.counts.get(&key).unwrap_or(0).checked_add(n);
            let Some(total) = total else {
                return Err(PyValueError::new_err(format!(
                    "the count of piece {k} would exceed 2**64 - 1"
                )));
            };
            self.counts.insert(&key, total);
        }
        Ok(())
    }

    /// The counts as a dict `{piece bytes: count}` (tests and inspection).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.counts.iter() {
            d.set_item(PyBytes::new(py, k), v)?;
        }
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.counts.len()
    }
}

/// Learns up to `num_merges` merges from `counts`; `progress(merges_done)`.
/// Any int >= 0: beyond what the words allow, training stops when no pair is left.
#[pyfunction]
#[pyo3(signature = (counts, num_merges, progress=None))]
fn train_merges<'py>(
    py: Python<'py>,
    counts: &WordCounts,
    num_merges: &Bound<'py, PyAny>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let num_merges = count_arg(num_merges, "num_merges")?;
    let words = &counts.counts;
    let merges = detach_with_hook(py, progress, move |hook| {
        let words = words.iter();
        train::train(words, num_merges, &mut |n| hook(n as u64))
    })?
    .map_err(|e| match e {
        TrainError::Interrupted => interrupted(),
        TrainError::TooLarge(what) => PyValueError::new_err(format!("cannot train on {what}")),
    })?;
    Ok(merges
        .iter()
        .map(|(l, r)| (PyBytes::new(py, l), PyBytes::new(py, r)))
        .collect())
}

/// The merges tiktoken's rule derives from ranked tokens (`tokens` lowest rank first, no two
/// the same): the (left, right) of every token BPE builds from two parts, in rank order.
#[pyfunction]
#[pyo3(signature = (tokens))]
fn merges_from_ranks<'py>(
    py: Python<'py>,
    tokens: Vec<Vec<u8>>,
) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let merges = py.detach(|| {
        let tokens: Vec<&[u8]> = tokens.iter().map(|t| &t[..]).collect();
        ranks::merges_from_ranks(&tokens)
    });
    merges
        .iter()
        .map(|(l, r)| (PyBytes::new(py, l), PyBytes::new(py, r)))
        .collect()
}

/// The pieces of `text` under a built-in pattern (for tests against the `regex` module).
#[pyfunction]
#[pyo3(signature = (pattern, text))]
fn split(pattern: Option<&str>, text: &str) -> PyResult<Vec<String>> {
    let p = parse_pattern(pattern)?;
    Ok(p.split(text).into_iter().map(String::from).collect())
}

/// The pieces of `text` under a built-in pattern found without the splitters' ASCII fast
/// paths (for tests checking them).
#[pyfunction]
#[pyo3(signature = (pattern, text))]
fn split_reference(pattern: Option<&str>, text: &str) -> PyResult<Vec<String>> {
    let p = parse_pattern(pattern)?;
    Ok(p.split_reference(text)
        .into_iter()
        .map(String::from)
        .collect())
}

/// The number of pieces of `text` under a built-in pattern, splitting with the GIL released:
/// the pre-tokenizer alone, for timing it (`benches/encode_bench.py`).
#[pyfunction]
#[pyo3(signature = (pattern, text))]
fn count_pieces(py: Python<'_>, pattern: Option<&str>, text: &str) -> PyResult<usize> {
    let p = parse_pattern(pattern)?;
    Ok(py.detach(|| {
        let mut n = 0usize;
        p.for_each_piece(text, |_| n += 1);
        n
    }))
}

/// Character offsets of the byte offsets `at` (ascending) in `text`.
fn char_offsets(text: &str, at: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(at.len());
    let (mut bytes, mut chars) = (0, 0);
    for &b in at {
        chars += text.get(bytes..b).map_or(0, |t| t.chars().count());
        bytes = b;
        out.push(chars);
    }
    out
}

/// Where a stream of text under `pattern` and `special_tokens` may be cut (for tests):
/// `(every cut, the last one, the one found by splitting)`, as character offsets. Splitting
/// the parts separately gives the pieces of the whole, whatever follows `text`.
#[pyfunction]
#[pyo3(signature = (pattern, special_tokens, text))]
fn safe_cuts(
    pattern: Option<&str>,
    special_tokens: Vec<String>,
    text: &str,
) -> PyResult<(Vec<usize>, Option<usize>, Option<usize>)> {
    let pattern = parse_pattern(pattern)?;
    let specials = SpecialSplitter::new(&special_tokens).map_err(special_error)?;
    let s = text.as_bytes();
    let all = input::safe_cuts(s, pattern, &specials);
    let last = input::last_safe_cut(s, 0, pattern, &specials);
    let split = input::split_cut(s, pattern, &specials);
    let one = |b: Option<usize>| b.and_then(|b| char_offsets(text, &[b]).pop());
    Ok((char_offsets(text, &all), one(last), one(split)))
}

fn build_error(e: BuildError) -> PyErr {
    PyValueError::new_err(match e {
        BuildError::MergePartMissing(n, part) => format!(
            "merge {n}: part {:?} is not in the vocabulary; every merge part must be a token",
            PyBytesRepr(&part)
        ),
        BuildError::MergeResultMissing(n, t) => format!(
            "merge {n}: its result {:?} is not in the vocabulary; add it or drop the merge",
            PyBytesRepr(&t)
        ),
        BuildError::ByteMissing(b) => {
            format!("the vocabulary has no token for the single byte {b:#04x}; byte-level BPE needs all 256")
        }
        BuildError::EmptyToken(id) => {
            format!("token {id} is empty (b''); every token must have at least one byte")
        }
        BuildError::DuplicateId(id) => {
            format!("id {id} is given to two tokens; each id must name one token")
        }
        BuildError::SpecialIdTaken(s, id) => format!(
            "special token {s:?} has id {id}, which the vocabulary already gives to another token"
        ),
        BuildError::Specials(e) => return special_error(e),
        BuildError::TooManyMerges(n) => {
            format!("{n} merges: at most 2**32 merges are supported")
        }
    })
}

/// Shows bytes as Python would (b'...').
struct PyBytesRepr<'a>(&'a [u8]);
impl std::fmt::Debug for PyBytesRepr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b'")?;
        for &b in self.0 {
            match b {
                b'\\' => write!(f, "\\\\")?,
                b'\'' => write!(f, "\\'")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        write!(f, "'")
    }
}

/// A bytearray of `len` bytes not yet written (its memory is backed by the system only where
/// it is later written).
fn uninit_bytearray(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyByteArray>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err(format!("{len} bytes do not fit a bytearray")))?;
    // SAFETY: a null source makes a bytearray of `len` bytes not yet written; a null result is
    // an exception, which `from_owned_ptr_or_err` returns.
    unsafe {
        Ok(Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyByteArray_FromStringAndSize(std::ptr::null(), len),
        )?
        .cast_into_unchecked::<PyByteArray>())
    }
}

/// A fixed vocabulary ready to encode and decode.
#[pyclass(module = "fastbpe._core", frozen)]
pub struct CoreEncoder {
    enc: Encoder,
    /// One Python int per id, made once: building a result list is then a reference-count
    /// bump per token instead of allocating an int object (the largest cost of returning
    /// millions of ids).
    ints: Vec<Py<PyAny>>,
    /// Whether `ints[i]` is immortal (CPython 3.12+ makes the small ints so): its reference
    /// count is never changed, so a long list adds none to it (see `list`).
    immortal: Vec<bool>,
}

/// Lists of at least this many ids take their references in bulk (see `CoreEncoder::list`).
const BULK_REFS: usize = 1 << 16;

/// Whether new long lists are filled by plain stores into their items (`list_items`).
static LIST_STORES: pyo3::sync::PyOnceLock<bool> = pyo3::sync::PyOnceLock::new();

/// Where the new list `list` keeps its items, where plain stores may fill them; None where
/// only PyList_SetItem may (then used for each item).
///
/// Why: PyList_SetItem reads each slot before writing it, so every page of a new list's items
/// (fresh memory for a long list) is faulted in twice, read then written; with the call per
/// item that was a fifth of the time of returning 20 MB of ids as a list. The limited API has
/// no macro that writes in place, but CPython's list object has had the same layout from 3.10
/// to 3.14: the variable-size object header (reference count, type, size), then the pointer to
/// the items, then the number allocated. Stores are used only on those versions, and only when
/// a probe list shows exactly that layout (`probe_list_layout`).
fn list_items(list: &Bound<'_, PyList>) -> Option<*mut *mut pyo3::ffi::PyObject> {
    let py = list.py();
    if !*LIST_STORES.get_or_init(py, || probe_list_layout(py).unwrap_or(false)) {
        return None;
    }
    // SAFETY: the probe found lists to be five words long with the items' address in the
    // fourth.
    Some(unsafe { *list.as_ptr().cast::<*mut *mut pyo3::ffi::PyObject>().add(3) })
}

/// Whether this interpreter's lists are laid out as `list_items` expects: a known version, five
/// words long, and a list of three objects showing its size in the third word, the address of
/// its items (the three objects, in order) in the fourth and at least 3 allocated in the fifth.
fn probe_list_layout(py: Python<'_>) -> PyResult<bool> {
    let word = std::mem::size_of::<usize>();
    let basic: usize = py
        .get_type::<PyList>()
        .getattr("__basicsize__")?
        .extract()?;
    if !(py.version_info() >= (3, 10) && py.version_info() < (3, 15)) || basic != 5 * word {
        return Ok(false);
    }
    let objects = [1_000_001u32, 1_000_002, 1_000_003].map(|i| i.into_pyobject(py));
    let objects = objects.into_iter().collect::<Result<Vec<_>, _>>()?;
    let list = PyList::new(py, &objects)?;
    let words = list.as_ptr().cast::<usize>();
    // SAFETY: the list object is `basic` bytes, five words, long.
    let (size, items, allocated) = unsafe { (*words.add(2), *words.add(3), *words.add(4)) };
    if size != 3 || allocated < 3 || items == 0 || items % std::mem::align_of::<usize>() != 0 {
        return Ok(false);
    }
    // SAFETY: the fourth word is an aligned address where, in a list laid out as expected,
    // the three items are; any other layout of this size, version and header was refused
    // above.
    let stored = unsafe { std::slice::from_raw_parts(items as *const *mut pyo3::ffi::PyObject, 3) };
    Ok(stored.iter().zip(&objects).all(|(&p, o)| p == o.as_ptr()))
}

impl CoreEncoder {
    fn new(py: Python<'_>, enc: Encoder) -> PyResult<Self> {
        // The ids the encoder keeps in a vector (at most about twice the number of tokens,
        // however large a sparse id is); others become ints when returned.
        let ints = (0u32..)
            .take(enc.dense_ids())
            .map(|i| i.into_pyobject(py).map(|i| i.into_any().unbind()))
            .collect::<Result<Vec<_>, _>>()?;
        // Objects are immortal only from 3.12 on, and then with a count of at least 2^30
        // (2^32 - 1 in 3.12 and 3.13, 3 * 2^30 in 3.14); an older Python's int has its true
        // count, however large.
        let immortals_exist = py.version_info() >= (3, 12);
        let immortal = ints
            .iter()
            // SAFETY: each int is a live object this encoder holds.
            .map(|i| immortals_exist && unsafe { pyo3::ffi::Py_REFCNT(i.as_ptr()) } >= 1 << 30)
            .collect();
        Ok(CoreEncoder {
            enc,
            ints,
            immortal,
        })
    }

    /// The ids of `text` as a list, special tokens as their ids or not. Short texts keep the GIL:
    /// releasing and retaking it would cost more than the work; longer ones stop on Ctrl-C.
    fn encode_list<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = if text.len() < 4096 {
            self.enc.encode_with(text, with_specials)
        } else {
            detach_polling(py, |budget| {
                self.enc.encode_with_budget(text, with_specials, budget)
            })?
        };
        self.list(py, &ids)
    }

    /// The ids of `text` under a custom regex; long texts release the GIL and stop on Ctrl-C.
    fn regex_ids(
        &self,
        py: Python<'_>,
        splitter: &RegexSplitter,
        text: &str,
        with_specials: bool,
    ) -> PyResult<Vec<u32>> {
        let (enc, re) = (&self.enc, &splitter.inner);
        let r = if text.len() < 4096 {
            regex_encode::encode_text(enc, re, text, with_specials, Budget::never())
        } else {
            detach_with_hook(py, None, |hook| {
                let mut stop = || hook(0).is_err();
                regex_encode::encode_text(enc, re, text, with_specials, Budget::new(&mut stop))
            })?
        };
        r.map_err(|e| regex_error(std::path::Path::new("<text>"), e))
    }

    /// Refuses a width that cannot hold every id.
    fn check_width(&self, width: usize) -> PyResult<()> {
        if width != 2 && width != 4 {
            return Err(PyValueError::new_err(format!(
                "width must be 2 or 4, not {width}"
            )));
        }
        if !self.enc.ids_fit(width) {
            return Err(PyValueError::new_err(format!(
                "ids up to {} do not fit in {width} bytes: use 4",
                self.enc.max_id().unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// Special tokens as (string, id), ids checked.
    fn specials_arg(specials: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<Vec<(String, u32)>> {
        specials
            .into_iter()
            .map(|(s, id)| {
                let id = id_arg(&id, &format_args!("special token {s:?}"))?;
                Ok((s, id))
            })
            .collect()
    }

    /// `ids` as a Python list of ints, left out of the cyclic garbage collector: a list that
    /// holds only ints cannot be part of a cycle, and a tracked one is walked item by item at
    /// every collection that reaches it (a batch of short texts makes thousands of lists, and
    /// those walks cost a quarter of `encode_batch`'s time). Only a list the caller later makes
    /// part of a cycle itself would go uncollected until the cycle is broken.
    fn list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let len = pyo3::ffi::Py_ssize_t::try_from(ids.len()).map_err(|_| {
            PyValueError::new_err(format!("{} ids do not fit in a list", ids.len()))
        })?;
        // SAFETY: PyList_New returns a new reference to a list (or null with an exception set,
        // which `from_owned_ptr_or_err` turns into the error).
        let list = unsafe {
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyList_New(len))?
                .cast_into_unchecked::<PyList>()
        };
        if ids.len() >= BULK_REFS && ids.len() <= u32::MAX as usize {
            self.fill_bulk(py, &list, ids)?;
        } else {
            // Straight through the C API, one call for the reference and one to place it per
            // id: the limited API has no macro that writes the item in place, and PyList::new
            // adds its own conversions and checks to each.
            for (i, &id) in (0..len).zip(ids) {
                let item = match self.ints.get(id as usize) {
                    Some(int) => {
                        let p = int.as_ptr();
                        // SAFETY: `p` is a live int that `self.ints` holds; the new reference
                        // is the one the list takes below.
                        unsafe { pyo3::ffi::Py_IncRef(p) };
                        p
                    }
                    None => id.into_pyobject(py)?.into_ptr(),
                };
                // SAFETY: `list` is a new list of `len` slots, all null, and `i < len`;
                // PyList_SetItem takes the reference to `item` and cannot fail here.
                unsafe { pyo3::ffi::PyList_SetItem(list.as_ptr(), i, item) };
            }
        }
        // SAFETY: `list` is a live list object that the collector tracks (PyList_New tracks it);
        // untracking it is always allowed, and CPython frees untracked lists as usual.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(list.as_ptr().cast()) };
        Ok(list)
    }

    /// Fills the new list `list` (`ids.len()` null slots) with the ints of `ids`, taking each
    /// int's references at once: the ids are counted first, then each int's count grows by its
    /// number. Bumping an int's count per token touches its object every time, a cache miss
    /// across the vocabulary's ints that was the largest cost of a long list; the counts fit
    /// in the cache. Nothing runs Python code between placing an int and adding its
    /// reference, so no one sees the counts low.
    fn fill_bulk(&self, py: Python<'_>, list: &Bound<'_, PyList>, ids: &[u32]) -> PyResult<()> {
        let mut counts = vec![0u32; self.ints.len()];
        let items = list_items(list);
        if let Some(items) = items {
            // A long list's items are memory fresh from the system (35 MB for 20 MB of text,
            // above glibc's largest size for reusing freed memory), faulted in page by page as
            // they are written: in 2 MB pages a hundredth of the faults (20 MB of cl100k
            // encoded to a list: the faults took 19 ms of 160 in 4 KB pages).
            crate::encode::advise_huge_pages(
                items as usize,
                ids.len() * std::mem::size_of::<usize>(),
            );
        }
        // Every int placed is counted before an error can end the loop, so the references the
        // list holds are all added below either way.
        let placed = ids.iter().enumerate().try_for_each(|(i, &id)| {
            let item = match self.ints.get(id as usize) {
                Some(int) => {
                    counts[id as usize] += 1;
                    int.as_ptr()
                }
                None => id.into_pyobject(py)?.into_ptr(),
            };
            // SAFETY: `list` is a new list of `ids.len()` slots, all null, and `i` is below
            // that (so also fits a Py_ssize_t); the slot takes the reference to `item` (which
            // `counts` adds below for the ints of `self.ints`), by a store where `list_items`
            // gives the items' address, else by PyList_SetItem, which cannot fail here.
            match items {
                Some(items) => unsafe { *items.add(i) = item },
                None => unsafe {
                    pyo3::ffi::PyList_SetItem(list.as_ptr(), i as pyo3::ffi::Py_ssize_t, item);
                },
            }
            PyResult::Ok(())
        });
        for ((int, &n), &immortal) in self.ints.iter().zip(&counts).zip(&self.immortal) {
            if n > 0 && !immortal {
                // SAFETY: a live, mortal object this encoder holds, with the GIL held: its
                // count is the plain counter at the start of every object in the stable ABI
                // (what Py_INCREF of older limited-API headers writes), and the list now holds
                // `n` more references to it.
                unsafe { (*int.as_ptr()).ob_refcnt += n as pyo3::ffi::Py_ssize_t };
            }
        }
        placed
    }
}

#[pymethods]
impl CoreEncoder {
    /// From `vocab` (id -> bytes, without special tokens), `merges` in priority order and
    /// special tokens (str -> id). `pattern`: "gpt2", "cl100k", "o200k", "whole" (no
    /// pre-tokenization). Ids are any ints from 0 to 2**32 - 1, sparse ones included.
    /// `ignore_merges` (Hugging Face's): a piece that is a token of `vocab` is that token.
    #[staticmethod]
    #[pyo3(signature = (vocab, merges, specials, pattern, ignore_merges=false))]
    fn from_merges(
        py: Python<'_>,
        vocab: Vec<(Bound<'_, PyAny>, Vec<u8>)>,
        merges: Vec<(Vec<u8>, Vec<u8>)>,
        specials: Vec<(String, Bound<'_, PyAny>)>,
        pattern: &str,
        ignore_merges: bool,
    ) -> PyResult<Self> {
        let pattern = parse_pattern(Some(pattern))?;
        let vocab = vocab
            .into_iter()
            .map(|(id, t)| {
                let id = id_arg(&id, &format_args!("token {:?}", PyBytesRepr(&t)))?;
                Ok((id, t))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let specials = Self::specials_arg(specials)?;
        let enc = py
            .detach(|| {
                let mut enc = Encoder::from_merges(&vocab, &merges, &specials, pattern)?;
                if ignore_merges {
                    enc.ignore_merges(&vocab);
                }
                Ok(enc)
            })
            .map_err(build_error)?;
        CoreEncoder::new(py, enc)
    }

    /// From tiktoken ranks (token bytes -> rank, which is also the id).
    #[staticmethod]
    fn from_ranks(
        py: Python<'_>,
        ranks: Vec<(Vec<u8>, Bound<'_, PyAny>)>,
        specials: Vec<(String, Bound<'_, PyAny>)>,
        pattern: &str,
    ) -> PyResult<Self> {
        let pattern = parse_pattern(Some(pattern))?;
        let ranks = ranks
            .into_iter()
            .map(|(t, id)| {
                let id = id_arg(&id, &format_args!("token {:?}", PyBytesRepr(&t)))?;
                Ok((t, id))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let specials = Self::specials_arg(specials)?;
        let enc = py
            .detach(|| Encoder::from_ranks(&ranks, &specials, pattern))
            .map_err(build_error)?;
        CoreEncoder::new(py, enc)
    }

    fn encode<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyList>> {
        self.encode_list(py, text, true)
    }

    fn encode_ordinary<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyList>> {
        self.encode_list(py, text, false)
    }

    /// Ids of pieces cut elsewhere (a custom regex applied in Python).
    fn encode_pieces<'py>(
        &self,
        py: Python<'py>,
        pieces: Vec<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        for p in &pieces {
            self.enc.encode_piece(p.as_bytes(), &mut out);
        }
        self.list(py, &out)
    }

    /// Ids of one piece given as bytes, which need not be UTF-8 (tiktoken's `_encode_bytes`
    /// needs that): the piece looked up whole, else BPE on its bytes. Long pieces release the GIL.
    fn encode_piece_bytes<'py>(
        &self,
        py: Python<'py>,
        piece: &[u8],
    ) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        if piece.len() < 4096 {
            if !piece.is_empty() {
                self.enc.encode_piece(piece, &mut out);
            }
        } else {
            py.detach(|| self.enc.encode_piece(piece, &mut out));
        }
        self.list(py, &out)
    }

    /// Ids as a little-endian buffer of `width`-byte integers (2 or 4), for numpy.
    fn encode_to_buffer<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        width: usize,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        self.check_width(width)?;
        // The ids go straight into the array, a window of text at a time, instead of first into
        // a vector of 4-byte ids as long as the result. The array starts with room for as many
        // ids as that vector did (one per 4 bytes of text: English takes about 4.5 a token), so
        // that memory freed by earlier calls serves again (room for one id per byte, always
        // enough, was always new memory from the system, each page faulted in: 7 ms of a 60 ms
        // call); ids past the room wait in a vector, copied in once the array has grown.
        let room = (text.len() / 4 + 1) * width;
        let array = uninit_bytearray(py, room)?;
        // The address, as an integer, to go to the thread that runs without the GIL; nothing
        // else can reach the new bytearray meanwhile.
        // SAFETY: `array` is a bytearray.
        let start = unsafe { pyo3::ffi::PyByteArray_AsString(array.as_ptr()) } as usize;
        // Where the room is memory new from the system (a process's first long encode), 2 MB
        // pages take a hundredth of the faults; memory that earlier calls freed and that is
        // already backed is not changed by the advice.
        crate::encode::advise_huge_pages(start, room);
        let (written, rest) = detach_polling(py, move |budget| {
            // SAFETY: the bytearray's buffer holds `room` bytes, not yet written, which only
            // this thread touches until the call is over; as `MaybeUninit` they are only
            // written, never read.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(start as *mut std::mem::MaybeUninit<u8>, room)
            };
            let (mut at, mut rest) = (0usize, Vec::new());
            self.enc
                .encode_to_sink(text, with_specials, budget, &mut |ids| {
                    let free = buf.get_mut(at..).unwrap_or_default();
                    let (now, later) = ids.split_at(ids.len().min(free.len() / width));
                    at += crate::encode::write_le_ids(now, width, free);
                    rest.extend_from_slice(later);
                })
                .map(|()| (at, rest))
        })?;
        let total = rest
            .len()
            .checked_mul(width)
            .and_then(|n| n.checked_add(written))
            .and_then(|n| pyo3::ffi::Py_ssize_t::try_from(n).ok())
            .ok_or_else(|| {
                PyValueError::new_err(format!("{} more ids do not fit a bytearray", rest.len()))
            })?;
        // SAFETY: `array` is a bytearray; its first `written` bytes were written, and the
        // rest of its `total` bytes are written below.
        if unsafe { pyo3::ffi::PyByteArray_Resize(array.as_ptr(), total) } != 0 {
            return Err(PyErr::fetch(py));
        }
        if !rest.is_empty() {
            // SAFETY: the grown bytearray holds `total` bytes, the last `total - written` of
            // them not yet written; as `MaybeUninit` they are only written.
            let tail = unsafe {
                std::slice::from_raw_parts_mut(
                    pyo3::ffi::PyByteArray_AsString(array.as_ptr())
                        .add(written)
                        .cast::<std::mem::MaybeUninit<u8>>(),
                    rest.len() * width,
                )
            };
            crate::encode::write_le_ids(&rest, width, tail);
        }
        Ok(array)
    }

    #[pyo3(signature = (texts, num_threads, with_specials=true))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: &Bound<'py, PyAny>,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        // The texts are read in place (no copies); each result becomes a Python list while
        // the worker threads go on encoding the texts after it. Ctrl-C is checked while this
        // thread encodes or waits (`poll`) and between results.
        let mut lists = Vec::with_capacity(texts.len());
        self.enc.encode_batch_in_order(
            &texts,
            num_threads,
            with_specials,
            |take| py.detach(take),
            &|| Python::attach(|py| py.check_signals()),
            |ids| {
                if lists.len() % 256 == 255 {
                    py.check_signals()?;
                }
                lists.push(self.list(py, ids)?);
                Ok::<(), PyErr>(())
            },
        )?;
        PyList::new(py, lists)
    }

    /// The ids of `text` under a custom regex (GIL released, Ctrl-C checked for long texts).
    fn encode_regex<'py>(
        &self,
        py: Python<'py>,
        splitter: &RegexSplitter,
        text: &str,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = self.regex_ids(py, splitter, text, with_specials)?;
        self.list(py, &ids)
    }

    /// `encode_regex` as a little-endian buffer of `width`-byte ids.
    fn encode_regex_to_buffer<'py>(
        &self,
        py: Python<'py>,
        splitter: &RegexSplitter,
        text: &str,
        width: usize,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        self.check_width(width)?;
        let ids = self.regex_ids(py, splitter, text, with_specials)?;
        let mut buf = Vec::new();
        crate::encode::ids_to_le_bytes(&ids, width, &mut buf);
        Ok(PyByteArray::new(py, &buf))
    }

    /// The ids of each text under a custom regex, on `num_threads` threads.
    #[pyo3(signature = (splitter, texts, num_threads, with_specials=true))]
    fn encode_regex_batch<'py>(
        &self,
        py: Python<'py>,
        splitter: &RegexSplitter,
        texts: Vec<PyBackedStr>,
        num_threads: &Bound<'py, PyAny>,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let num_threads = count_arg(num_threads, "num_threads")?;
        // As `encode_batch`: results become lists while later texts are still encoding.
        let mut lists = Vec::with_capacity(texts.len());
        regex_encode::encode_batch_in_order(
            &self.enc,
            &splitter.inner,
            &texts,
            with_specials,
            num_threads,
            |take| py.detach(take),
            &|| Python::attach(|py| py.check_signals()),
            |ids| {
                if lists.len() % 256 == 255 {
                    py.check_signals()?;
                }
                lists.push(self.list(py, ids)?);
                Ok::<(), PyErr>(())
            },
        )?;
        PyList::new(py, lists)
    }

    /// Encodes a file under a custom regex into `out_path`; returns the number of ids and the
    /// CRC-32 of the file's bytes.
    #[pyo3(signature = (splitter, path, out_path, width, num_threads, progress=None, chunk_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn encode_regex_file(
        &self,
        py: Python<'_>,
        splitter: &RegexSplitter,
        path: PathBuf,
        out_path: PathBuf,
        width: usize,
        num_threads: &Bound<'_, PyAny>,
        progress: Option<Py<PyAny>>,
        chunk_bytes: Option<usize>,
    ) -> PyResult<(u64, u32)> {
        self.check_width(width)?;
        let num_threads = count_arg(num_threads, "num_threads")?;
        let (enc, re) = (&self.enc, &splitter.inner);
        detach_with_hook(py, progress, |hook| {
            let cut = cutting(chunk_bytes);
            regex_encode::encode_file(
                enc,
                re,
                &path,
                &out_path,
                width,
                num_threads,
                cut,
                &mut |n| hook(n),
            )
        })?
        .map_err(|e| match e {
            RegexError::File(InputError::Write(e)) => {
                PyOSError::new_err(format!("'{}': {e}", out_path.display()))
            }
            e => regex_error(&path, e),
        })
        .map(|w| (w.tokens, w.crc32))
    }

    /// `encode_batch` as one buffer of little-endian `width`-byte ids (2 or 4): the ids of
    /// each text, each followed by `separator` when one is given (a corpus's documents and
    /// the end-of-text id), without a Python list per text.
    #[pyo3(signature = (texts, width, num_threads, separator=None))]
    fn encode_batch_to_buffer<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        width: usize,
        num_threads: &Bound<'py, PyAny>,
        separator: Option<u32>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        self.check_width(width)?;
        let num_threads = count_arg(num_threads, "num_threads")?;
        if let Some(s) = separator {
            if width == 2 && s > u32::from(u16::MAX) {
                return Err(PyValueError::new_err(format!(
                    "separator {s} does not fit in 2 bytes: use 4"
                )));
            }
        }
        let separator: Vec<u32> = separator.into_iter().collect();
        let mut buf = Vec::new();
        self.enc.encode_batch_in_order(
            &texts,
            num_threads,
            true,
            |take| py.detach(take),
            &|| Python::attach(|py| py.check_signals()),
            |ids| {
                crate::encode::ids_to_le_bytes(ids, width, &mut buf);
                crate::encode::ids_to_le_bytes(&separator, width, &mut buf);
                Ok::<(), PyErr>(())
            },
        )?;
        Ok(PyByteArray::new(py, &buf))
    }

    /// Streaming: the length in characters of the longest prefix of `text` that can be
    /// encoded now, whatever text follows (0 if none).
    fn safe_prefix_chars(&self, text: &str) -> usize {
        let n = self.enc.safe_prefix_len(text);
        text[..n].chars().count()
    }

    /// Encodes a file into `out_path` (little-endian, `width` bytes per id); returns the number
    /// of tokens and the CRC-32 of the file's bytes.
    #[pyo3(signature = (path, out_path, width, num_threads, progress=None))]
    fn encode_file(
        &self,
        py: Python<'_>,
        path: PathBuf,
        out_path: PathBuf,
        width: usize,
        num_threads: &Bound<'_, PyAny>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(u64, u32)> {
        self.check_width(width)?;
        let num_threads = count_arg(num_threads, "num_threads")?;
        let enc = &self.enc;
        detach_with_hook(py, progress, |hook| {
            enc.encode_file(&path, &out_path, width, num_threads, &mut |n| hook(n))
        })?
        .map_err(|e| match e {
            InputError::Write(e) => PyOSError::new_err(format!("'{}': {e}", out_path.display())),
            e => read_error(&path, e),
        })
        .map(|w| (w.tokens, w.crc32))
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
        match self.enc.decode_bytes(&ids) {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(DecodeError::Unknown(id)) => Err(UnknownTokenError::new_err(format!(
                "token id {id} is not in the vocabulary (ids go up to {})",
                self.enc.max_id().unwrap_or(0)
            ))),
            Err(DecodeError::TooLarge(n)) => Err(PyMemoryError::new_err(format!(
                "decoding {} ids takes {n} bytes, more memory than can be had",
                ids.len()
            ))),
        }
    }

    /// The bytes of one token, or None.
    fn token_bytes<'py>(&self, py: Python<'py>, id: u32) -> Option<Bound<'py, PyBytes>> {
        self.enc.token(id).map(|t| PyBytes::new(py, t))
    }
}

/// The memory of one tensor handed to `adamw_step_f32` or the cross-entropy kernels: its first
/// element's address, its number of elements and their size in bytes.
#[derive(Clone, Copy)]
struct Region {
    addr: usize,
    len: usize,
    elem: usize,
}

impl Region {
    const EMPTY: Region = Region {
        addr: 0,
        len: 0,
        elem: 1,
    };

    fn overlaps(self, other: Region) -> bool {
        let end = |r: Region| r.addr + r.len * r.elem;
        self.len != 0 && other.len != 0 && self.addr < end(other) && other.addr < end(self)
    }
}

/// A Rust element type and the torch dtype whose memory it reads (bf16 as its u16 bits).
trait TorchElem: Copy {
    const DTYPE: &'static str;
}

impl TorchElem for f32 {
    const DTYPE: &'static str = "float32";
}

impl TorchElem for u16 {
    const DTYPE: &'static str = "bfloat16";
}

impl TorchElem for i64 {
    const DTYPE: &'static str = "int64";
}

/// The memory of `t`, checked to be a contiguous CPU `torch.Tensor` of `T`'s dtype: its elements
/// are then `len` `T`s from `addr` on, inside its storage (torch's invariant for such a tensor).
/// `func` and `what` name the call and the argument in the error.
fn tensor_region<T: TorchElem>(
    torch: &Bound<'_, PyModule>,
    t: &Bound<'_, PyAny>,
    func: &str,
    what: &dyn std::fmt::Display,
) -> PyResult<Region> {
    let py = t.py();
    let elem = std::mem::size_of::<T>();
    let ok = t.is_instance(&torch.getattr(pyo3::intern!(py, "Tensor"))?)?
        && t.getattr(pyo3::intern!(py, "is_cpu"))?.is_truthy()?
        && t.getattr(pyo3::intern!(py, "dtype"))?
            .is(&torch.getattr(T::DTYPE)?)
        && t.call_method0(pyo3::intern!(py, "is_contiguous"))?
            .is_truthy()?
        // A negated view's memory holds the values before the negation.
        && !t.call_method0(pyo3::intern!(py, "is_neg"))?.is_truthy()?;
    if !ok {
        return Err(PyValueError::new_err(format!(
            "{func}: {what} must be a contiguous CPU {} torch.Tensor (not a negated view)",
            T::DTYPE
        )));
    }
    let len: usize = t.call_method0(pyo3::intern!(py, "numel"))?.extract()?;
    let addr: usize = t.call_method0(pyo3::intern!(py, "data_ptr"))?.extract()?;
    let fits = len
        .checked_mul(elem)
        .and_then(|bytes| addr.checked_add(bytes))
        .is_some_and(|end| end <= isize::MAX as usize);
    if len != 0 && (addr == 0 || !addr.is_multiple_of(std::mem::align_of::<T>()) || !fits) {
        return Err(PyValueError::new_err(format!(
            "{func}: {what} has an unusable data pointer {addr:#x}"
        )));
    }
    Ok(Region { addr, len, elem })
}

/// A shared slice over `r`, or an empty one for no elements (whose pointer may be null).
///
/// # Safety
/// `r` must come from `tensor_region::<T>` for a tensor that stays alive, and unresized, while
/// the slice lives, and no live mutable reference may overlap it.
unsafe fn region_slice<'a, T: TorchElem>(r: Region) -> &'a [T] {
    if r.len == 0 {
        return &[];
    }
    // SAFETY: by the caller's contract and tensor_region's checks, `r` is `len` initialised,
    // aligned `T`s (every bit pattern is a valid f32, u16 or i64) inside one live allocation,
    // no more than isize::MAX bytes, not written while the slice lives.
    unsafe { std::slice::from_raw_parts(r.addr as *const T, r.len) }
}

/// A mutable slice over `r`, or an empty one for no elements (whose pointer may be null).
///
/// # Safety
/// `r` must come from `tensor_region::<T>` for a tensor that stays alive, and unresized, while
/// the slice lives, and no other live reference may overlap it.
unsafe fn region_slice_mut<'a, T: TorchElem>(r: Region) -> &'a mut [T] {
    if r.len == 0 {
        return &mut [];
    }
    // SAFETY: by the caller's contract and tensor_region's checks, `r` is `len` initialised,
    // aligned `T`s inside one live allocation, no more than isize::MAX bytes, aliased by nothing.
    unsafe { std::slice::from_raw_parts_mut(r.addr as *mut T, r.len) }
}

/// One AdamW step in place over lists of contiguous CPU float32 tensors (the fused path of
/// `fastbpe.lm.optim.AdamW`; see rust/optim.rs for the arithmetic). `scalars` are
/// (decay, 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^step), eps, -lr / (1 - beta1^step)) as
/// Python floats. Every tensor is checked (type, device, dtype, contiguity, length, overlap) before
/// anything is written; the update runs with the GIL released.
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars))]
#[allow(clippy::type_complexity)]
fn adamw_step_f32(
    py: Python<'_>,
    params: Vec<Bound<'_, PyAny>>,
    grads: Vec<Bound<'_, PyAny>>,
    exp_avgs: Vec<Bound<'_, PyAny>>,
    exp_avg_sqs: Vec<Bound<'_, PyAny>>,
    max_exp_avg_sqs: Option<Vec<Bound<'_, PyAny>>>,
    scalars: (f64, f64, f64, f64, f64, f64, f64),
) -> PyResult<()> {
    let n = params.len();
    let lists = [
        ("grads", grads.len()),
        ("exp_avgs", exp_avgs.len()),
        ("exp_avg_sqs", exp_avg_sqs.len()),
    ];
    let vmax_len = max_exp_avg_sqs.as_ref().map(Vec::len);
    for (what, len) in lists
        .into_iter()
        .chain(vmax_len.map(|l| ("max_exp_avg_sqs", l)))
    {
        if len != n {
            return Err(PyValueError::new_err(format!(
                "adamw_step_f32: {what} has {len} tensors but params has {n}"
            )));
        }
    }
    let torch = py.import("torch")?;
    let region = |list: &[Bound<'_, PyAny>], what: &str, i: usize| -> PyResult<Region> {
        match list.get(i) {
            Some(t) => tensor_region::<f32>(&torch, t, "adamw_step_f32", &format!("{what}[{i}]")),
            None => Err(PyValueError::new_err(format!(
                "adamw_step_f32: {what}[{i}] is missing"
            ))),
        }
    };
    // Per tensor: param, exp_avg, exp_avg_sq, max_exp_avg_sq (written) and grad (read).
    let mut jobs: Vec<([Region; 4], Region)> = Vec::with_capacity(n);
    for i in 0..n {
        let grad = region(&grads, "grads", i)?;
        let param = region(&params, "params", i)?;
        let m = region(&exp_avgs, "exp_avgs", i)?;
        let v = region(&exp_avg_sqs, "exp_avg_sqs", i)?;
        let vmax = match &max_exp_avg_sqs {
            Some(list) => region(list, "max_exp_avg_sqs", i)?,
            None => Region::EMPTY,
        };
        let lens = [
            ("grads", grad.len),
            ("exp_avgs", m.len),
            ("exp_avg_sqs", v.len),
        ];
        let vmax_len = max_exp_avg_sqs
            .as_ref()
            .map(|_| ("max_exp_avg_sqs", vmax.len));
        if let Some((what, len)) = lens
            .into_iter()
            .chain(vmax_len)
            .find(|&(_, l)| l != param.len)
        {
            return Err(PyValueError::new_err(format!(
                "adamw_step_f32: {what}[{i}] has {len} elements but params[{i}] has {}",
                param.len
            )));
        }
        let written = [param, m, v, vmax];
        for (k, a) in written.iter().enumerate() {
            let others = written.iter().skip(k + 1).chain(std::iter::once(&grad));
            if others.into_iter().any(|b| a.overlaps(*b)) {
                return Err(PyValueError::new_err(format!(
                    "adamw_step_f32: the tensors of params[{i}] share memory; each needs its own"
                )));
            }
        }
        jobs.push((written, grad));
    }
    let (decay, avg_weight, beta2, sq_weight, bias2_sqrt, eps, step_size) = scalars;
    let s = crate::optim::AdamWScalars {
        decay: decay as f32,
        avg_weight: avg_weight as f32,
        beta2: beta2 as f32,
        sq_weight: sq_weight as f32,
        bias2_sqrt: bias2_sqrt as f32,
        eps: eps as f32,
        step_size: step_size as f32,
    };
    let amsgrad = max_exp_avg_sqs.is_some();
    let result = py.detach(|| {
        for ([param, m, v, vmax], grad) in jobs {
            // SAFETY: every region comes from tensor_region::<f32> on a tensor that the argument lists
            // keep alive until this function returns; within one job the written regions are
            // disjoint from each other and from grad (checked above), and jobs run one at a
            // time, so no two live slices overlap. (Another Python thread resizing these
            // tensors meanwhile would race with this step as it would with torch's own
            // kernels, which also run without the GIL.)
            let t = unsafe {
                crate::optim::AdamWSlices {
                    param: region_slice_mut(param),
                    grad: region_slice(grad),
                    exp_avg: region_slice_mut(m),
                    exp_avg_sq: region_slice_mut(v),
                    max_exp_avg_sq: if amsgrad {
                        Some(region_slice_mut(vmax))
                    } else {
                        None
                    },
                }
            };
            crate::optim::adamw_step(t, &s)?;
        }
        Ok(())
    });
    result.map_err(|e: crate::optim::LengthMismatch| {
        PyValueError::new_err(format!("adamw_step_f32: {e}"))
    })
}

/// `logits`' last dimension (its vocabulary), 0 for a 0-d tensor.
fn last_dim(t: &Bound<'_, PyAny>) -> PyResult<usize> {
    let shape: Vec<usize> = t.getattr(pyo3::intern!(t.py(), "shape"))?.extract()?;
    Ok(shape.last().copied().unwrap_or(0))
}

fn xent_error(func: &str, e: crate::xent::XentError) -> PyErr {
    PyValueError::new_err(format!("{func}: {e}"))
}

/// Fills `lse` (contiguous CPU float32, one per row) with the log-sum-exp of each row of
/// `logits` (contiguous CPU bfloat16, rows along the last dimension), in float32, on up to
/// `threads` threads with the GIL released (rust/xent.rs).
#[pyfunction]
#[pyo3(signature = (logits, lse, threads))]
fn cross_entropy_bf16_lse(
    py: Python<'_>,
    logits: Bound<'_, PyAny>,
    lse: Bound<'_, PyAny>,
    threads: usize,
) -> PyResult<()> {
    const FUNC: &str = "cross_entropy_bf16_lse";
    let torch = py.import("torch")?;
    let x = tensor_region::<u16>(&torch, &logits, FUNC, &"logits")?;
    let out = tensor_region::<f32>(&torch, &lse, FUNC, &"lse")?;
    let vocab = last_dim(&logits)?;
    if out.overlaps(x) {
        return Err(PyValueError::new_err(format!(
            "{FUNC}: lse shares memory with logits"
        )));
    }
    py.detach(|| {
        // SAFETY: both regions come from tensor_region on tensors that the arguments keep alive
        // until this function returns, and the written one overlaps nothing (checked above).
        let (x, out) = unsafe { (region_slice::<u16>(x), region_slice_mut::<f32>(out)) };
        crate::xent::logsumexp_rows(x, vocab, out, threads)
    })
    .map_err(|e| xent_error(FUNC, e))
}

/// Fills `grad` (contiguous CPU bfloat16, the shape of `logits`) with
/// `(softmax(logits) - onehot(targets)) * grad_loss` per row, computed in float32 from each
/// row's log-sum-exp `lse` (float32); `targets` int64, `grad_loss` float32, one per row. On up to
/// `threads` threads with the GIL released (rust/xent.rs).
#[pyfunction]
#[pyo3(signature = (logits, targets, lse, grad_loss, grad, threads))]
fn cross_entropy_bf16_grad(
    py: Python<'_>,
    logits: Bound<'_, PyAny>,
    targets: Bound<'_, PyAny>,
    lse: Bound<'_, PyAny>,
    grad_loss: Bound<'_, PyAny>,
    grad: Bound<'_, PyAny>,
    threads: usize,
) -> PyResult<()> {
    const FUNC: &str = "cross_entropy_bf16_grad";
    let torch = py.import("torch")?;
    let x = tensor_region::<u16>(&torch, &logits, FUNC, &"logits")?;
    let t = tensor_region::<i64>(&torch, &targets, FUNC, &"targets")?;
    let l = tensor_region::<f32>(&torch, &lse, FUNC, &"lse")?;
    let s = tensor_region::<f32>(&torch, &grad_loss, FUNC, &"grad_loss")?;
    let out = tensor_region::<u16>(&torch, &grad, FUNC, &"grad")?;
    let vocab = last_dim(&logits)?;
    if [x, t, l, s].iter().any(|r| out.overlaps(*r)) {
        return Err(PyValueError::new_err(format!(
            "{FUNC}: grad shares memory with an input"
        )));
    }
    py.detach(|| {
        // SAFETY: every region comes from tensor_region on a tensor that the arguments keep
        // alive until this function returns; the written one overlaps none of the others
        // (checked above).
        let (x, t, l, s, out) = unsafe {
            (
                region_slice::<u16>(x),
                region_slice::<i64>(t),
                region_slice::<f32>(l),
                region_slice::<f32>(s),
                region_slice_mut::<u16>(out),
            )
        };
        crate::xent::grad_rows(x, vocab, t, l, s, out, threads)
    })
    .map_err(|e| xent_error(FUNC, e))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WordCounts>()?;
    m.add_class::<CoreEncoder>()?;
    m.add_class::<RegexSplitter>()?;
    m.add("RegexSearchError", m.py().get_type::<RegexSearchError>())?;
    m.add(
        "REGEX_CLASSES_REGEX_VERSION",
        crate::regex_classes::REGEX_VERSION,
    )?;
    m.add("UnknownTokenError", m.py().get_type::<UnknownTokenError>())?;
    m.add_function(wrap_pyfunction!(train_merges, m)?)?;
    m.add_function(wrap_pyfunction!(split, m)?)?;
    m.add_function(wrap_pyfunction!(count_pieces, m)?)?;
    m.add_function(wrap_pyfunction!(split_reference, m)?)?;
    m.add_function(wrap_pyfunction!(safe_cuts, m)?)?;
    m.add_function(wrap_pyfunction!(merges_from_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(adamw_step_f32, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy_bf16_lse, m)?)?;
    m.add_function(wrap_pyfunction!(cross_entropy_bf16_grad, m)?)?;
    m.add(
        "UNICODE_TABLES_REGEX_VERSION",
        crate::unicode_tables::REGEX_VERSION,
    )?;
    // The named patterns' regexes (`fastbpe.patterns` reads them from here: one spelling).
    let named = PyDict::new(m.py());
    named.set_item("gpt2", crate::pretok::GPT2_PATTERN)?;
    named.set_item("cl100k", crate::pretok::CL100K_PATTERN)?;
    named.set_item("o200k", crate::pretok::O200K_PATTERN)?;
    m.add("PATTERNS", named)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
