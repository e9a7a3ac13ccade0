//! Python bindings (`fastbpe._core`). Thin: argument conversion, error mapping, and releasing
//! the GIL around every heavy call. Users never import this module; `fastbpe` wraps it.

use std::path::PathBuf;

use pyo3::exceptions::{PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::count::{self, CountError, Counts, Interrupted, SpecialSplitter};
use crate::pretok::Pattern;
use crate::train;

fn parse_pattern(name: Option<&str>) -> PyResult<Pattern> {
    match name {
        None => Ok(Pattern::Whole),
        Some("gpt2") => Ok(Pattern::Gpt2),
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
fn detach_with_hook<T, E, F>(py: Python<'_>, progress: Option<Py<PyAny>>, work: F) -> PyResult<Result<T, E>>
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
        match res {
            Ok(c) => {
                count::merge_counts(&mut self.counts, c);
                Ok(())
            }
            Err(CountError::Io(e)) => {
                let shown = path.display();
                Err(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        PyFileNotFoundError::new_err(format!("no such file: '{shown}'"))
                    }
                    std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(format!(
                        "'{shown}' is a directory; give the text files inside it"
                    )),
                    _ => PyOSError::new_err(format!("reading '{shown}': {e}")),
                })
            }
            Err(CountError::InvalidUtf8 { offset }) => Err(PyValueError::new_err(format!(
                "'{}' is not valid UTF-8: invalid byte sequence at byte offset {offset}; \
                 re-encode the file as UTF-8 (for example with iconv)",
                path.display()
            ))),
            // `detach_with_hook` returned the KeyboardInterrupt itself.
            Err(CountError::Interrupted) => Err(PyValueError::new_err("interrupted")),
        }
    }

    /// Counts the pieces of each text (pieces never span two texts) on `num_threads` threads.
    #[pyo3(signature = (texts, num_threads))]
    fn add_texts(&mut self, py: Python<'_>, texts: Vec<String>, num_threads: usize) -> PyResult<()> {
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
    let words: Vec<(Vec<u8>, u64)> = counts.counts.iter().map(|(k, &v)| (k.clone(), v)).collect();
    let merges = detach_with_hook(py, progress, move |hook| {
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WordCounts>()?;
    m.add_function(wrap_pyfunction!(train_merges, m)?)?;
    m.add_function(wrap_pyfunction!(split, m)?)?;
    m.add("UNICODE_TABLES_REGEX_VERSION", crate::unicode_tables::REGEX_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
