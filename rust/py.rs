//! Python bindings (`fastbpe._core`). Thin: argument conversion, error mapping, and releasing
//! the GIL around every heavy call. Users never import this module; `fastbpe` wraps it.

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyError, PyOSError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList};

use crate::count::{self, CountError, Counts, Interrupted, SpecialSplitter};
use crate::encode::{BuildError, Encoder};
use crate::pretok::Pattern;
use crate::train;

create_exception!(
    fastbpe,
    UnknownTokenError,
    PyKeyError,
    "An id that is not in the tokenizer's vocabulary."
);

/// Maps a file-reading failure to the Python exception a user expects, naming the file.
fn read_error(path: &std::path::Path, e: CountError) -> PyErr {
    let shown = path.display();
    match e {
        CountError::Io(e) => match e.kind() {
            std::io::ErrorKind::NotFound => {
                PyFileNotFoundError::new_err(format!("no such file: '{shown}'"))
            }
            std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(format!(
                "'{shown}' is a directory; give the text files inside it"
            )),
            _ => PyOSError::new_err(format!("'{shown}': {e}")),
        },
        CountError::InvalidUtf8 { offset } => PyValueError::new_err(format!(
            "'{shown}' is not valid UTF-8: invalid byte sequence at byte offset {offset}; \
             re-encode the file as UTF-8 (for example with iconv)"
        )),
        // Only reached if the hook stopped without a Python error; detach_with_hook returns the
        // KeyboardInterrupt itself otherwise.
        CountError::Interrupted => PyValueError::new_err("interrupted"),
    }
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
            specials: SpecialSplitter::new(&special_tokens),
        })
    }

    /// Counts the pieces of a UTF-8 file on `num_threads` threads; `progress(bytes_read)`.
    #[pyo3(signature = (path, num_threads, progress=None))]
    fn add_file(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        num_threads: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
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
        num_threads: usize,
    ) -> PyResult<()> {
        let (pattern, specials) = (self.pattern, &self.specials);
        let c = py
            .detach(|| count::count_texts(&texts, pattern, specials, num_threads))
            .map_err(|_| PyOSError::new_err("a counting thread failed"))?;
        count::merge_counts(&mut self.counts, c);
        Ok(())
    }

    /// Adds counts of pieces produced elsewhere (a custom regex applied in Python).
    fn add_pieces(&mut self, pieces: &Bound<'_, PyDict>) -> PyResult<()> {
        for (k, v) in pieces.iter() {
            let key: Vec<u8> = k.extract()?;
            let n: u64 = v.extract()?;
            *self.counts.entry(key).or_insert(0) += n;
        }
        Ok(())
    }

    /// The counts as a dict `{piece bytes: count}` (tests and inspection).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.counts {
            d.set_item(PyBytes::new(py, k), *v)?;
        }
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.counts.len()
    }
}

/// Learns up to `num_merges` merges from `counts`; `progress(merges_done)`.
#[pyfunction]
#[pyo3(signature = (counts, num_merges, progress=None))]
fn train_merges<'py>(
    py: Python<'py>,
    counts: &WordCounts,
    num_merges: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let words = &counts.counts;
    let merges = detach_with_hook(py, progress, move |hook| {
        let words = words.iter().map(|(k, &v)| (&k[..], v));
        train::train(words, num_merges, &mut |n| hook(n as u64))
    })?
    .map_err(|_| PyValueError::new_err("interrupted"))?;
    Ok(merges
        .iter()
        .map(|(l, r)| (PyBytes::new(py, l), PyBytes::new(py, r)))
        .collect())
}

/// The pieces of `text` under a built-in pattern (for tests against the `regex` module).
#[pyfunction]
#[pyo3(signature = (pattern, text))]
fn split(pattern: Option<&str>, text: &str) -> PyResult<Vec<String>> {
    let p = parse_pattern(pattern)?;
    Ok(p.split(text).into_iter().map(String::from).collect())
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

/// A fixed vocabulary ready to encode and decode.
#[pyclass(module = "fastbpe._core", frozen)]
pub struct CoreEncoder {
    enc: Encoder,
    /// One Python int per id, made once: building a result list is then a reference-count
    /// bump per token instead of allocating an int object (the largest cost of returning
    /// millions of ids).
    ints: Vec<Py<PyAny>>,
}

impl CoreEncoder {
    fn new(py: Python<'_>, enc: Encoder) -> PyResult<Self> {
        let ints = (0..enc.id_limit() as u32)
            .map(|i| Ok(i.into_pyobject(py)?.into_any().unbind()))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(CoreEncoder { enc, ints })
    }

    /// The ids of `text` as a list, special tokens as their ids or not. Short texts keep the GIL:
    /// releasing and retaking it would cost more than the work.
    fn encode_list<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = if text.len() < 4096 {
            self.enc.encode_with(text, with_specials)
        } else {
            py.detach(|| self.enc.encode_with(text, with_specials))
        };
        self.list(py, &ids)
    }

    /// `ids` as a Python list of ints, left out of the cyclic garbage collector: a list that
    /// holds only ints cannot be part of a cycle, and a tracked one is walked item by item at
    /// every collection that reaches it (a batch of short texts makes thousands of lists, and
    /// those walks cost a quarter of `encode_batch`'s time). Only a list the caller later makes
    /// part of a cycle itself would go uncollected until the cycle is broken.
    fn list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::new(py, ids.iter().map(|&i| self.ints[i as usize].bind(py)))?;
        // SAFETY: `list` is a live list object that the collector tracks (PyList_New tracks it);
        // untracking it is always allowed, and CPython frees untracked lists as usual.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(list.as_ptr().cast()) };
        Ok(list)
    }
}

#[pymethods]
impl CoreEncoder {
    /// From `vocab` (id -> bytes, without special tokens), `merges` in priority order and
    /// special tokens (str -> id). `pattern`: "gpt2", "whole" (no pre-tokenization).
    #[staticmethod]
    fn from_merges(
        py: Python<'_>,
        vocab: Vec<(u32, Vec<u8>)>,
        merges: Vec<(Vec<u8>, Vec<u8>)>,
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> PyResult<Self> {
        let pattern = parse_pattern(Some(pattern))?;
        let enc = py
            .detach(|| Encoder::from_merges(&vocab, &merges, &specials, pattern))
            .map_err(build_error)?;
        CoreEncoder::new(py, enc)
    }

    /// From tiktoken ranks (token bytes -> rank, which is also the id).
    #[staticmethod]
    fn from_ranks(
        py: Python<'_>,
        ranks: Vec<(Vec<u8>, u32)>,
        specials: Vec<(String, u32)>,
        pattern: &str,
    ) -> PyResult<Self> {
        let pattern = parse_pattern(Some(pattern))?;
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
    ) -> Bound<'py, PyByteArray> {
        let buf = py.detach(|| {
            let ids = self.enc.encode_with(text, with_specials);
            let mut buf = Vec::new();
            crate::encode::ids_to_le_bytes(&ids, width, &mut buf);
            buf
        });
        PyByteArray::new(py, &buf)
    }

    #[pyo3(signature = (texts, num_threads, with_specials=true))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: usize,
        with_specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        // The texts are read in place (no copies); each result becomes a Python list while
        // the worker threads go on encoding the texts after it.
        let mut lists = Vec::with_capacity(texts.len());
        self.enc.encode_batch_in_order(
            &texts,
            num_threads,
            with_specials,
            |take| py.detach(take),
            |ids| {
                lists.push(self.list(py, ids)?);
                Ok::<(), PyErr>(())
            },
        )?;
        PyList::new(py, lists)
    }

    /// Streaming: the length in characters of the longest prefix of `text` that can be
    /// encoded now, whatever text follows (0 if none).
    fn safe_prefix_chars(&self, text: &str) -> usize {
        let n = self.enc.safe_prefix_len(text);
        text[..n].chars().count()
    }

    /// Encodes a file into `out_path` (little-endian, `width` bytes per id); returns the count.
    #[pyo3(signature = (path, out_path, width, num_threads, progress=None))]
    fn encode_file(
        &self,
        py: Python<'_>,
        path: PathBuf,
        out_path: PathBuf,
        width: usize,
        num_threads: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<u64> {
        if width != 2 && width != 4 {
            return Err(PyValueError::new_err("width must be 2 or 4"));
        }
        let enc = &self.enc;
        detach_with_hook(py, progress, |hook| {
            enc.encode_file(&path, &out_path, width, num_threads, &mut |n| hook(n))
        })?
        .map_err(|e| read_error(&path, e))
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
        match self.enc.decode_bytes(&ids) {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(id) => Err(UnknownTokenError::new_err(format!(
                "token id {id} is not in the vocabulary (ids go up to {})",
                self.enc.id_limit().saturating_sub(1)
            ))),
        }
    }

    /// The bytes of one token, or None.
    fn token_bytes<'py>(&self, py: Python<'py>, id: u32) -> Option<Bound<'py, PyBytes>> {
        self.enc.token(id).map(|t| PyBytes::new(py, t))
    }

    /// Longest special token in bytes (streaming keeps this much back).
    fn special_max_len(&self) -> usize {
        self.enc.special_max_len()
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WordCounts>()?;
    m.add_class::<CoreEncoder>()?;
    m.add("UnknownTokenError", m.py().get_type::<UnknownTokenError>())?;
    m.add_function(wrap_pyfunction!(train_merges, m)?)?;
    m.add_function(wrap_pyfunction!(split, m)?)?;
    m.add(
        "UNICODE_TABLES_REGEX_VERSION",
        crate::unicode_tables::REGEX_VERSION,
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
