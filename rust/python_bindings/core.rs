//! Bindings for vocabularies, constraints and matchers.

use crate::bitmask::{ones, words_for};
use crate::error::Error;
use crate::grammar::GrammarLimits;
use crate::matcher::{Constraint as CoreConstraint, Matcher as CoreMatcher, TokEnv, DEFAULT_MASK_CACHE_BYTES};
use crate::regex::RegexLimits;
use crate::vocab::{Spelling, Vocabulary as CoreVocab};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyIndexError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rayon::prelude::*;
use std::sync::Arc;

/// Every core error is bad input from the caller's point of view.
pub(crate) fn to_pyerr(e: Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into())
}

/// Argument `name` as a `T`; a TypeError that names the parameter ("vocab
/// must be a tokensieve.Vocabulary, got str") rather than PyO3's generic
/// message.
pub(crate) fn arg<'a, 'py, T>(obj: &'a Bound<'py, PyAny>, name: &str, expected: &str) -> PyResult<T>
where
    T: FromPyObject<'a, 'py>,
    T::Error: Into<PyErr>,
{
    obj.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        let py = obj.py();
        if e.is_instance_of::<PyTypeError>(py) {
            PyTypeError::new_err(format!("{name} must be {expected}, got {}", type_name(obj)))
        } else if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) {
            // e.g. a negative or huge token id in a list of u32
            PyValueError::new_err(format!("{name}: {}", e.value(py)))
        } else {
            e
        }
    })
}

/// Optional argument `name` (None: absent), as [`arg`].
pub(crate) fn opt_arg<'py, T>(obj: Option<&Bound<'py, PyAny>>, name: &str, expected: &str) -> PyResult<Option<T>>
where
    T: for<'a> FromPyObject<'a, 'py>,
    for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
{
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => arg(o, name, expected).map(Some),
    }
}

/// A size or count argument `name`: any integer type (numpy's too), not
/// bool; a negative or huge value is a ValueError naming the parameter.
pub(crate) fn size_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    if obj.is_instance_of::<pyo3::types::PyBool>() || type_name(obj).starts_with("bool") {
        return Err(PyTypeError::new_err(format!("{name} must be an int, got bool")));
    }
    match obj.extract::<usize>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => Err(PyValueError::new_err(format!(
            "{name} must be a non-negative int below 2**64, got {}",
            obj.str().map(|s| s.to_string()).unwrap_or_default()
        ))),
        Err(_) => Err(PyTypeError::new_err(format!("{name} must be an int, got {}", type_name(obj)))),
    }
}

/// A row index argument `name`: any integer type, not bool (a huge one is
/// out of range later, not an OverflowError).
fn index_arg(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    if obj.is_instance_of::<pyo3::types::PyBool>() || type_name(obj).starts_with("bool") {
        return Err(PyTypeError::new_err(format!("{name} must be an int, got bool")));
    }
    match obj.extract::<i64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(obj.py()) => Ok(i64::MAX),
        Err(_) => Err(PyTypeError::new_err(format!("{name} must be an int, got {}", type_name(obj)))),
    }
}

/// Optional [`size_arg`].
fn opt_size(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<usize>> {
    match obj {
        Some(o) if !o.is_none() => size_arg(o, name).map(Some),
        _ => Ok(None),
    }
}

const TOKEN_IDS: &str = "a sequence of int token ids";

/// The `vocab` argument of the compile functions.
fn vocab_arg<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a PyVocabulary> {
    obj.cast::<PyVocabulary>()
        .map(|v| v.get())
        .map_err(|_| PyTypeError::new_err(format!("vocab must be a tokensieve.Vocabulary, got {}", type_name(obj))))
}

/// A tokenizer's vocabulary: for every token id, the exact bytes it adds to
/// the decoded text. Build with `Vocabulary.from_tokenizer_file(path)` or
/// `Vocabulary.from_huggingface(tokenizer)`.
#[pyclass(module = "tokensieve._core", name = "Vocabulary", frozen)]
pub struct PyVocabulary {
    pub(crate) env: Arc<TokEnv>,
}

#[pymethods]
impl PyVocabulary {
    /// Build from the text of a `tokenizer.json`, or from explicit
    /// `token_bytes` (a list of `bytes`, with `None` for special/unused ids).
    #[new]
    #[pyo3(signature = (tokenizer_json=None, *, token_bytes=None, eos_token_ids=None, vocab_size=None))]
    fn new(
        py: Python<'_>,
        tokenizer_json: Option<&Bound<'_, PyAny>>,
        token_bytes: Option<&Bound<'_, PyAny>>,
        eos_token_ids: Option<&Bound<'_, PyAny>>,
        vocab_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let tokenizer_json: Option<String> = opt_arg(tokenizer_json, "tokenizer_json", "a str (the text of a tokenizer.json)")?;
        let token_bytes: Option<Vec<Option<Vec<u8>>>> = opt_arg(token_bytes, "token_bytes", "a sequence of bytes or None")?;
        let eos_token_ids: Option<Vec<u32>> = opt_arg(eos_token_ids, "eos_token_ids", TOKEN_IDS)?;
        let vocab_size = opt_size(vocab_size, "vocab_size")?;
        Self::build(py, tokenizer_json, token_bytes, eos_token_ids, vocab_size)
    }

    /// Load a `tokenizer.json` (or `tokenizer.json.gz`) file, or the one in
    /// a directory. EOS ids come from `eos_token_ids`, else from the
    /// `eos_token` of a `tokenizer_config.json` beside the file, else from
    /// well-known end-of-text special tokens. FileNotFoundError if there is
    /// no such file.
    #[staticmethod]
    #[pyo3(signature = (path, *, eos_token_ids=None, vocab_size=None))]
    fn from_tokenizer_file(
        py: Python<'_>,
        path: Bound<'_, PyAny>,
        eos_token_ids: Option<&Bound<'_, PyAny>>,
        vocab_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let eos_token_ids: Option<Vec<u32>> = opt_arg(eos_token_ids, "eos_token_ids", TOKEN_IDS)?;
        let vocab_size = opt_size(vocab_size, "vocab_size")?;
        let fspath = py.import(intern!(py, "os"))?.getattr(intern!(py, "fspath"))?;
        let path: std::path::PathBuf = match fspath.call1((&path,)) {
            Ok(p) => arg(&p, "path", "a str or os.PathLike")?,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "path must be a str or os.PathLike, got {}",
                    type_name(&path)
                )))
            }
        };
        Self::load_file(py, path, eos_token_ids, vocab_size)
    }

    /// From a `transformers` fast tokenizer, or a `tokenizers.Tokenizer`
    /// (which knows no EOS: the well-known end-of-text tokens are looked
    /// up). `vocab_size` is the model's embedding width when it exceeds the
    /// tokenizer (padding ids are never allowed); `eos_token_ids` overrides
    /// the tokenizer's EOS.
    #[staticmethod]
    #[pyo3(signature = (tokenizer, *, eos_token_ids=None, vocab_size=None))]
    fn from_huggingface(
        py: Python<'_>,
        tokenizer: Bound<'_, PyAny>,
        eos_token_ids: Option<&Bound<'_, PyAny>>,
        vocab_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let eos_token_ids: Option<Vec<u32>> = opt_arg(eos_token_ids, "eos_token_ids", TOKEN_IDS)?;
        let vocab_size = opt_size(vocab_size, "vocab_size")?;
        let io = py.import("tokensieve._vocab_io")?;
        let res = io.call_method1("read_hf_tokenizer", (tokenizer, eos_token_ids))?;
        let (json, eos): (String, Option<Vec<u32>>) = res.extract()?;
        Self::build(py, Some(json), None, eos, vocab_size)
    }

    /// Number of token ids a bitmask covers: the one name for it on
    /// `Vocabulary`, `Constraint` and `Matcher`.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.env.vocab().size()
    }

    /// Alias of `vocab_size`.
    #[getter]
    fn size(&self) -> usize {
        self.env.vocab().size()
    }

    fn __len__(&self) -> usize {
        self.env.vocab().size()
    }

    /// The bytes token `token_id` adds to the text (`b""` for special tokens).
    fn token_bytes<'py>(&self, py: Python<'py>, token_id: TokenId) -> PyResult<Bound<'py, PyBytes>> {
        let id = check_id(token_id, self.env.vocab().size())?;
        Ok(PyBytes::new(py, self.env.vocab().token_bytes(id)))
    }

    /// Whether `token_id` is special/unused (never allowed by a constraint).
    fn is_special(&self, token_id: TokenId) -> PyResult<bool> {
        let id = check_id(token_id, self.env.vocab().size())?;
        Ok(self.env.vocab().is_special(id))
    }

    /// EOS token ids (allowed exactly when the text so far is complete).
    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.env.vocab().eos_token_ids().to_vec()
    }

    /// True for SentencePiece tokenizers that prepend a space (`▁`) to input.
    #[getter]
    fn adds_prefix_space(&self) -> bool {
        self.env.vocab().adds_prefix_space()
    }

    /// "byte_level", "sentencepiece" or "plain".
    #[getter]
    fn spelling(&self) -> &'static str {
        match self.env.vocab().spelling() {
            Spelling::ByteLevel => "byte_level",
            Spelling::Metaspace { .. } => "sentencepiece",
            Spelling::Plain => "plain",
        }
    }

    /// Pickle support (multiprocessing, serving frameworks): rebuilt from
    /// its token bytes (None for special ids), EOS ids, size and spelling.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (Vec<Option<Bound<'py, PyBytes>>>, Vec<u32>, String, bool))> {
        let v = self.env.vocab();
        let tokens = (0..v.size() as u32)
            .map(|i| (!v.is_special(i)).then(|| PyBytes::new(py, v.token_bytes(i))))
            .collect();
        let spelling = match v.spelling() {
            Spelling::Metaspace { byte_fallback: true } => "sentencepiece+byte_fallback".to_owned(),
            _ => self.spelling().to_owned(),
        };
        let rebuild = py
            .import(intern!(py, "tokensieve._core"))?
            .getattr(intern!(py, "_vocabulary_from_parts"))?;
        Ok((rebuild, (tokens, v.eos_token_ids().to_vec(), spelling, v.adds_prefix_space())))
    }

    fn __repr__(&self) -> String {
        let v = self.env.vocab();
        format!(
            "Vocabulary(vocab_size={}, eos_token_ids={:?}, spelling='{}')",
            v.size(),
            v.eos_token_ids(),
            self.spelling()
        )
    }
}

impl PyVocabulary {
    fn build(
        py: Python<'_>,
        tokenizer_json: Option<String>,
        token_bytes: Option<Vec<Option<Vec<u8>>>>,
        eos_token_ids: Option<Vec<u32>>,
        vocab_size: Option<usize>,
    ) -> PyResult<Self> {
        let vocab = match (tokenizer_json, token_bytes) {
            (Some(json), None) => {
                if !json.trim_start().starts_with('{') {
                    return Err(PyValueError::new_err(
                        "tokenizer_json must be the text of a tokenizer.json; to load a file use Vocabulary.from_tokenizer_file(path)",
                    ));
                }
                py.detach(|| CoreVocab::from_tokenizer_json(&json, eos_token_ids, vocab_size))
            }
            (None, Some(tb)) => CoreVocab::from_token_bytes(tb, eos_token_ids.unwrap_or_default(), vocab_size),
            _ => return Err(PyTypeError::new_err("Vocabulary() takes exactly one of tokenizer_json or token_bytes=")),
        }
        .map_err(to_pyerr)?;
        super::release_freed_memory();
        Ok(PyVocabulary { env: TokEnv::new(vocab) })
    }

    fn load_file(py: Python<'_>, path: std::path::PathBuf, eos_token_ids: Option<Vec<u32>>, vocab_size: Option<usize>) -> PyResult<Self> {
        let file = if path.is_dir() {
            ["tokenizer.json", "tokenizer.json.gz"]
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| PyFileNotFoundError::new_err(format!("no tokenizer.json in directory {}", path.display())))?
        } else {
            path
        };
        let raw = std::fs::read(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(format!("tokenizer file not found: {}", file.display())),
            _ => PyValueError::new_err(format!("cannot read tokenizer file {}: {e}", file.display())),
        })?;
        let raw = if file.extension().is_some_and(|x| x == "gz") {
            // gzip through the standard library's zlib: no extra crate.
            let gz = py.import(intern!(py, "gzip"))?;
            match gz.call_method1(intern!(py, "decompress"), (PyBytes::new(py, &raw),)) {
                Ok(b) => b.cast_into::<PyBytes>()?.as_bytes().to_vec(),
                Err(e) => return Err(PyValueError::new_err(format!("cannot read tokenizer file {}: {e}", file.display()))),
            }
        } else {
            raw
        };
        let text = String::from_utf8(raw).map_err(|e| PyValueError::new_err(format!("cannot read tokenizer file {}: {e}", file.display())))?;
        let eos_name = match eos_token_ids {
            Some(_) => None,
            None => file.parent().and_then(|d| eos_name_from_config(&d.join("tokenizer_config.json"))),
        };
        let vocab = py
            .detach(|| CoreVocab::from_tokenizer_json_named(&text, eos_token_ids, eos_name.as_deref(), vocab_size))
            .map_err(to_pyerr)?;
        super::release_freed_memory();
        Ok(PyVocabulary { env: TokEnv::new(vocab) })
    }
}

/// The `eos_token` text of a `tokenizer_config.json` (a string, or an
/// object with a `content` string); None if the file is absent or says
/// nothing usable.
fn eos_name_from_config(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let cfg: serde_json::Value = serde_json::from_str(&text).ok()?;
    let eos = cfg.get("eos_token")?;
    eos.as_str().or_else(|| eos.get("content")?.as_str()).map(str::to_owned)
}

/// `True`/`False`, as Python spells them in a repr.
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A token id argument (the parameter is `token_id` wherever one id is
/// taken): any Python int (huge ones are out of range, not an
/// OverflowError).
pub(crate) struct TokenId(i64);

impl<'a, 'py> FromPyObject<'a, 'py> for TokenId {
    type Error = PyErr;
    fn extract(ob: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // bool is an int subclass (and numpy's bool_ has __index__ on old
        // numpy): `consume_token(True)` is a bug, not token 1.
        if ob.is_instance_of::<pyo3::types::PyBool>() || ob.get_type().name()?.extract::<String>()?.starts_with("bool") {
            return Err(PyTypeError::new_err("token_id must be an int, got bool"));
        }
        match ob.extract::<i64>() {
            Ok(v) => Ok(TokenId(v)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(ob.py()) => Ok(TokenId(i64::MAX)),
            Err(_) => Err(PyTypeError::new_err(format!("token_id must be an int, got {}", ob.get_type().name()?))),
        }
    }
}

fn check_id(id: TokenId, size: usize) -> PyResult<u32> {
    let TokenId(id) = id;
    if id < 0 || id as u64 >= size as u64 {
        if id == i64::MAX {
            return Err(PyValueError::new_err(format!("token_id out of range for vocabulary of size {size}")));
        }
        return Err(PyValueError::new_err(format!("token_id {id} out of range for vocabulary of size {size}")));
    }
    Ok(id as u32)
}

/// A compiled constraint, immutable and shareable across threads and matchers.
#[pyclass(module = "tokensieve._core", name = "Constraint", frozen)]
pub struct PyConstraint {
    pub(crate) inner: Arc<CoreConstraint>,
    /// How it was compiled, so that it pickles: unpickling compiles it again
    /// (the same source, vocabulary and options give the same constraint).
    recipe: Recipe,
}

/// A call of one of [`RECIPE_FUNCTIONS`] with normalised arguments (plain
/// str/int/bool values and the `Vocabulary`, never the caller's objects).
struct Recipe {
    func: &'static str,
    args: Py<pyo3::types::PyTuple>,
    kwargs: Py<PyDict>,
}

/// The compile functions a pickled constraint may name.
const RECIPE_FUNCTIONS: [&str; 4] = ["compile_regex", "compile_json", "compile_grammar", "_compile_json_schema"];

impl PyConstraint {
    /// A constraint compiled by `func(*args, **kwargs)` (keyword arguments
    /// that are None are left out).
    pub(crate) fn new<'py>(
        inner: Arc<CoreConstraint>,
        func: &'static str,
        args: Bound<'py, pyo3::types::PyTuple>,
        kwargs: &[(&str, Option<Bound<'py, PyAny>>)],
    ) -> PyResult<Self> {
        debug_assert!(RECIPE_FUNCTIONS.contains(&func));
        let py = args.py();
        let kw = PyDict::new(py);
        for (k, v) in kwargs {
            if let Some(v) = v {
                kw.set_item(k, v)?;
            }
        }
        Ok(PyConstraint {
            inner,
            recipe: Recipe {
                func,
                args: args.unbind(),
                kwargs: kw.unbind(),
            },
        })
    }
}

/// Unpickle a `Constraint` (see `Constraint.__reduce__`): compile it again.
#[pyfunction]
fn _constraint_from_recipe<'py>(
    py: Python<'py>,
    func: &str,
    args: Bound<'py, pyo3::types::PyTuple>,
    kwargs: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    if !RECIPE_FUNCTIONS.contains(&func) {
        return Err(PyValueError::new_err(format!("func must be one of {RECIPE_FUNCTIONS:?}, got {func:?}")));
    }
    let out = py.import(intern!(py, "tokensieve._core"))?.getattr(func)?.call(args, Some(&kwargs))?;
    // _compile_json_schema returns (constraint, warnings).
    match out.cast::<pyo3::types::PyTuple>() {
        Ok(t) => t.get_item(0),
        Err(_) => Ok(out),
    }
}

#[pymethods]
impl PyConstraint {
    /// Number of ids a bitmask row covers.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().size()
    }

    /// EOS ids of the vocabulary the constraint was compiled against.
    #[getter]
    fn eos_token_ids(&self) -> Vec<u32> {
        self.inner.vocab().eos_token_ids().to_vec()
    }

    /// Number of automaton states.
    #[getter]
    fn num_states(&self) -> usize {
        self.inner.num_states()
    }

    /// Pickle support: the compile call, made again on unpickling.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (&'static str, Py<pyo3::types::PyTuple>, Py<PyDict>))> {
        let rebuild = py
            .import(intern!(py, "tokensieve._core"))?
            .getattr(intern!(py, "_constraint_from_recipe"))?;
        let r = &self.recipe;
        Ok((rebuild, (r.func, r.args.clone_ref(py), r.kwargs.clone_ref(py))))
    }

    fn __repr__(&self) -> String {
        format!(
            "Constraint(num_states={}, vocab_size={})",
            self.inner.num_states(),
            self.inner.vocab().size()
        )
    }
}

/// Unpickle a `Vocabulary` (see `Vocabulary.__reduce__`).
#[pyfunction]
fn _vocabulary_from_parts(
    py: Python<'_>,
    token_bytes: Vec<Option<Vec<u8>>>,
    eos_token_ids: Vec<u32>,
    spelling: &str,
    adds_prefix_space: bool,
) -> PyResult<PyVocabulary> {
    let spelling = match spelling {
        "byte_level" => Spelling::ByteLevel,
        "sentencepiece" => Spelling::Metaspace { byte_fallback: false },
        "sentencepiece+byte_fallback" => Spelling::Metaspace { byte_fallback: true },
        "plain" => Spelling::Plain,
        other => return Err(PyValueError::new_err(format!("unknown spelling {other:?}"))),
    };
    let vocab = py
        .detach(|| CoreVocab::from_token_bytes(token_bytes, eos_token_ids, None))
        .map_err(to_pyerr)?
        .with_spelling(spelling, adds_prefix_space);
    Ok(PyVocabulary { env: TokEnv::new(vocab) })
}

/// Compile a regex (Rust `regex` syntax, full match over the UTF-8 bytes of
/// the generated text) against a vocabulary.
#[pyfunction]
#[pyo3(signature = (pattern, vocab, *, max_states=None, max_nfa_bytes=None, max_dfa_bytes=None))]
fn compile_regex(
    py: Python<'_>,
    pattern: &Bound<'_, PyAny>,
    vocab: &Bound<'_, PyAny>,
    max_states: Option<&Bound<'_, PyAny>>,
    max_nfa_bytes: Option<&Bound<'_, PyAny>>,
    max_dfa_bytes: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyConstraint> {
    let pattern: String = arg(pattern, "pattern", "a str")?;
    let pattern = pattern.as_str();
    let vocab_obj = vocab;
    let vocab = vocab_arg(vocab)?;
    let max_states = opt_size(max_states, "max_states")?;
    let max_nfa_bytes = opt_size(max_nfa_bytes, "max_nfa_bytes")?;
    let max_dfa_bytes = opt_size(max_dfa_bytes, "max_dfa_bytes")?;
    let mut limits = RegexLimits::default();
    if let Some(x) = max_states {
        limits.max_states = x;
    }
    if let Some(x) = max_nfa_bytes {
        limits.nfa_size = x;
    }
    if let Some(x) = max_dfa_bytes {
        limits.dfa_size = x;
    }
    let env = vocab.env.clone();
    let inner = py
        .detach(|| super::after_setup(&vocab.env, || CoreConstraint::regex(env, pattern, &limits)))
        .map_err(to_pyerr)?;
    let int = |x: Option<usize>| x.map(|x| x.into_pyobject(py).map(|v| v.into_any())).transpose();
    PyConstraint::new(
        inner,
        "compile_regex",
        (pattern, vocab_obj).into_pyobject(py)?,
        &[
            ("max_states", int(max_states)?),
            ("max_nfa_bytes", int(max_nfa_bytes)?),
            ("max_dfa_bytes", int(max_dfa_bytes)?),
        ],
    )
}

/// The deepest JSON nesting `compile_json` accepts: the grammar unrolls one
/// level per depth (about 14 rules each), and this keeps it well inside
/// `GrammarLimits::max_rules`, so the documented limit is the real one.
const MAX_JSON_DEPTH: usize = 10_000;

/// Compile the built-in JSON grammar: any JSON value, with `whitespace`
/// "flexible" (any JSON whitespace between tokens) or "compact" (none), and
/// arrays/objects nested at most `max_depth` deep.
#[pyfunction]
#[pyo3(
    signature = (vocab, *, whitespace=None, max_depth=None, mask_cache_bytes=None),
    text_signature = "(vocab, *, whitespace='flexible', max_depth=64, mask_cache_bytes=268435456)"
)]
fn compile_json(
    py: Python<'_>,
    vocab: &Bound<'_, PyAny>,
    whitespace: Option<&Bound<'_, PyAny>>,
    max_depth: Option<&Bound<'_, PyAny>>,
    mask_cache_bytes: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyConstraint> {
    use crate::grammar::json::{json_grammar, Whitespace};
    if vocab.is_instance_of::<pyo3::types::PyString>() {
        return Err(PyTypeError::new_err(
            "vocab must be a tokensieve.Vocabulary, got str (compile_json takes no source: its JSON grammar is built in)",
        ));
    }
    let vocab_obj = vocab;
    let vocab = vocab_arg(vocab)?;
    let whitespace: String = opt_arg(whitespace, "whitespace", "a str")?.unwrap_or_else(|| "flexible".into());
    let max_depth = opt_size(max_depth, "max_depth")?.unwrap_or(crate::grammar::json::DEFAULT_MAX_DEPTH);
    let mask_cache_bytes = opt_size(mask_cache_bytes, "mask_cache_bytes")?.unwrap_or(DEFAULT_MASK_CACHE_BYTES);
    let ws = match whitespace.as_str() {
        "flexible" => Whitespace::Flexible,
        "compact" => Whitespace::Compact,
        other => {
            return Err(PyValueError::new_err(format!(
                "whitespace must be \"flexible\" or \"compact\", got {other:?}"
            )))
        }
    };
    if max_depth > MAX_JSON_DEPTH {
        return Err(PyValueError::new_err(format!(
            "max_depth {max_depth} is too large (limit {MAX_JSON_DEPTH})"
        )));
    }
    let env = vocab.env.clone();
    let inner = py
        .detach(|| {
            super::after_setup(&vocab.env, || {
                let g = json_grammar(ws, max_depth)?;
                let limits = GrammarLimits {
                    mask_cache_bytes,
                    ..GrammarLimits::default()
                };
                CoreConstraint::grammar(env, &g, &limits)
            })
        })
        .map_err(to_pyerr)?;
    PyConstraint::new(
        inner,
        "compile_json",
        (vocab_obj,).into_pyobject(py)?,
        &[
            ("whitespace", Some(whitespace.into_pyobject(py)?.into_any())),
            ("max_depth", Some(max_depth.into_pyobject(py)?.into_any())),
            ("mask_cache_bytes", Some(mask_cache_bytes.into_pyobject(py)?.into_any())),
        ],
    )
}

/// Compile a context-free grammar: `syntax="lark"` (Lark EBNF, start rule
/// `start`) or `syntax="gbnf"` (llama.cpp GBNF, start rule `root`).
#[pyfunction]
#[pyo3(
    signature = (text, vocab, *, syntax=None, start=None, mask_cache_bytes=None),
    text_signature = "(text, vocab, *, syntax='lark', start=None, mask_cache_bytes=268435456)"
)]
fn compile_grammar(
    py: Python<'_>,
    text: &Bound<'_, PyAny>,
    vocab: &Bound<'_, PyAny>,
    syntax: Option<&Bound<'_, PyAny>>,
    start: Option<&Bound<'_, PyAny>>,
    mask_cache_bytes: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyConstraint> {
    use crate::grammar::{gbnf, lark};
    let text: String = arg(text, "text", "a str (the grammar source)")?;
    let text = text.as_str();
    let vocab_obj = vocab;
    let vocab = vocab_arg(vocab)?;
    let syntax: String = opt_arg(syntax, "syntax", "a str")?.unwrap_or_else(|| "lark".into());
    let syntax = syntax.as_str();
    let start: Option<String> = opt_arg(start, "start", "a str")?;
    let start = start.as_deref();
    let mask_cache_bytes = opt_size(mask_cache_bytes, "mask_cache_bytes")?.unwrap_or(DEFAULT_MASK_CACHE_BYTES);
    let limits = GrammarLimits {
        mask_cache_bytes,
        ..GrammarLimits::default()
    };
    let env = vocab.env.clone();
    let inner = py
        .detach(|| {
            super::after_setup(&vocab.env, || {
                let g = match syntax {
                    "lark" => lark::parse_lark_with_start(text, start.unwrap_or("start"), &limits)?,
                    "gbnf" => gbnf::parse_gbnf_with_start(text, start.unwrap_or("root"), &limits)?,
                    other => return Err(Error::Usage(format!("syntax must be \"lark\" or \"gbnf\", got {other:?}"))),
                };
                CoreConstraint::grammar(env, &g, &limits)
            })
        })
        .map_err(to_pyerr)?;
    PyConstraint::new(
        inner,
        "compile_grammar",
        (text, vocab_obj).into_pyobject(py)?,
        &[
            ("syntax", Some(syntax.into_pyobject(py)?.into_any())),
            ("start", start.map(|s| s.into_pyobject(py).map(|v| v.into_any())).transpose()?),
            ("mask_cache_bytes", Some(mask_cache_bytes.into_pyobject(py)?.into_any())),
        ],
    )
}

/// Follows one sequence through a constraint.
#[pyclass(module = "tokensieve._core", name = "Matcher")]
pub struct PyMatcher {
    pub(crate) inner: CoreMatcher,
}

/// int32 bitmask words as the `u32` words the core reads.
pub(crate) fn words_of(w: &[i32]) -> &[u32] {
    // SAFETY: i32 and u32 have the same size and alignment, and every bit
    // pattern is valid for both.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u32>(), w.len()) }
}

/// As [`words_of`], writable.
fn words_of_mut(w: &mut [i32]) -> &mut [u32] {
    // SAFETY: as `words_of`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u32>(), w.len()) }
}

/// `obj` if it is a `torch.Tensor` (torch already imported), else None.
/// Duck typing is not enough: an object with a `data_ptr` method could
/// point anywhere.
fn as_torch_tensor<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let modules = py.import(intern!(py, "sys"))?.getattr(intern!(py, "modules"))?;
    let Some(torch) = modules.cast::<PyDict>()?.get_item(intern!(py, "torch"))? else {
        return Ok(None);
    };
    let tensor = torch.getattr(intern!(py, "Tensor"))?;
    Ok(if obj.is_instance(&tensor)? { Some(obj.clone()) } else { None })
}

/// An array argument `what` of element type `T` (`dtype` names it): a
/// numpy array, or a CPU torch tensor viewed through `.numpy()` (no copy;
/// torch checks the device and layout). Anything else is a TypeError.
///
/// A tensor over read-only memory (`torch.from_numpy` of a non-writeable
/// array, which torch only warns about) cannot be told apart, so it is
/// written like any tensor: torch has no read-only tensors (its
/// `torch._numpy` says so), `.numpy()` of it is writeable, its DLPack
/// export carries no read-only flag (flags 0), and its storage is like
/// that of any tensor over outside memory (`resizable()` is False for every
/// `from_numpy` or DLPack tensor). The README says so.
pub(crate) fn array_arg<'py, T: numpy::Element>(obj: &Bound<'py, PyAny>, what: &str, dtype: &str) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<T>>() {
        return Ok(a.clone());
    }
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Err(PyTypeError::new_err(format!("{what} must have dtype {dtype}, got {}", a.dtype())));
    }
    if let Some(t) = as_torch_tensor(obj)? {
        let py = obj.py();
        let device: String = t.getattr(intern!(py, "device"))?.getattr(intern!(py, "type"))?.extract()?;
        if device != "cpu" {
            return Err(PyValueError::new_err(format!("{what} must be on the CPU (got device {device:?})")));
        }
        // Sparse, nested and negated-view tensors have no numpy view: torch
        // says why (a RuntimeError or TypeError), reported as a TypeError.
        let arr = t
            .call_method0(intern!(py, "detach"))
            .and_then(|d| d.call_method0(intern!(py, "numpy")))
            .map_err(|e| PyTypeError::new_err(format!("{what} must be a dense CPU tensor viewable as a numpy array ({})", e.value(py))))?;
        return match arr.cast::<PyArrayDyn<T>>() {
            Ok(a) => Ok(a.clone()),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{what} must have dtype {dtype}, got {}",
                t.getattr(intern!(py, "dtype"))?.str()?
            ))),
        };
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a numpy array or torch tensor of {dtype}, got {}",
        obj.get_type().name()?
    )))
}

/// A writable view of a 1-D `(words,)` or 2-D `(rows, words)` int32
/// bitmask, checked on every call (dtype, dimensions, contiguity,
/// alignment, writeability, and no other borrow), and its row count.
fn bitmask_rows<'a>(bm: &'a mut PyReadwriteArrayDyn<'_, i32>, words: usize) -> PyResult<(usize, &'a mut [u32])> {
    let shape = bm.shape().to_vec();
    let (rows, cols) = match shape.as_slice() {
        [c] => (1usize, *c),
        [r, c] => (*r, *c),
        _ => return Err(PyValueError::new_err(format!("bitmask must be 1-D or 2-D, got shape {shape:?}"))),
    };
    if cols != words {
        return Err(PyValueError::new_err(format!(
            "bitmask has {cols} columns, expected {words} (= ceil(vocab_size / 32)); use allocate_token_bitmask"
        )));
    }
    let data = super::resample::rw_slice(bm, "bitmask")?;
    Ok((rows, words_of_mut(data)))
}

/// A writable int32 bitmask argument.
fn writable_bitmask<'py>(obj: &Bound<'py, PyAny>) -> PyResult<PyReadwriteArrayDyn<'py, i32>> {
    array_arg::<i32>(obj, "bitmask", "int32")?
        .try_readwrite()
        .map_err(|e| super::resample::borrow_error("bitmask", e))
}

fn row_index(index: i64, rows: usize) -> PyResult<usize> {
    if index < 0 || index as u64 >= rows as u64 {
        return Err(PyIndexError::new_err(format!("bitmask row index {index} out of range for {rows} rows")));
    }
    Ok(index as usize)
}

#[pymethods]
impl PyMatcher {
    #[new]
    fn new(constraint: &Bound<'_, PyAny>) -> PyResult<Self> {
        let constraint = constraint
            .cast::<PyConstraint>()
            .map_err(|_| PyTypeError::new_err(format!("constraint must be a tokensieve.Constraint, got {}", type_name(constraint))))?
            .get();
        Ok(PyMatcher {
            inner: CoreMatcher::new(constraint.inner.clone()),
        })
    }

    /// Fill row `index` of an int32 bitmask of shape (batch, ceil(vocab_size/32)):
    /// bit t%32 of word t//32 is set iff token t is allowed next.
    #[pyo3(signature = (bitmask, index=None), text_signature = "(self, bitmask, index=0)")]
    fn fill_next_token_bitmask(&mut self, py: Python<'_>, bitmask: &Bound<'_, PyAny>, index: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let index = match index {
            Some(ix) if !ix.is_none() => index_arg(ix, "index")?,
            _ => 0,
        };
        let words = self.inner.constraint().env().mask_words();
        let mut bm = writable_bitmask(bitmask)?;
        let (rows, data) = bitmask_rows(&mut bm, words)?;
        let i = row_index(index, rows)?;
        let row = &mut data[i * words..(i + 1) * words];
        let m = &mut self.inner;
        py.detach(|| m.fill_mask(row)).map_err(to_pyerr)
    }

    /// Allowed next token ids as a list (debugging; use bitmasks when decoding).
    fn allowed_tokens(&mut self, py: Python<'_>) -> PyResult<Vec<u32>> {
        let mut mask = vec![0u32; self.inner.constraint().env().mask_words()];
        let m = &mut self.inner;
        py.detach(|| m.fill_mask(&mut mask)).map_err(to_pyerr)?;
        Ok(ones(&mask))
    }

    /// Consume token `token_id`; False (state unchanged) if it is not allowed.
    fn consume_token(&mut self, token_id: TokenId) -> PyResult<bool> {
        let t = check_id(token_id, self.inner.constraint().vocab().size())?;
        self.inner.consume_token(t).map_err(to_pyerr)
    }

    /// Consume tokens in order, stopping at the first disallowed one;
    /// returns the number consumed.
    fn consume_tokens(&mut self, token_ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        if token_ids.is_instance_of::<pyo3::types::PyString>() || token_ids.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(format!(
                "token_ids must be {TOKEN_IDS}, got {}",
                type_name(token_ids)
            )));
        }
        let token_ids: Vec<TokenId> = arg(token_ids, "token_ids", TOKEN_IDS)?;
        let size = self.inner.constraint().vocab().size();
        let ts = token_ids.into_iter().map(|t| check_id(t, size)).collect::<PyResult<Vec<u32>>>()?;
        self.inner.consume_tokens(&ts).map_err(to_pyerr)
    }

    /// Whether token `token_id` is allowed now (state unchanged).
    fn is_allowed(&mut self, token_id: TokenId) -> PyResult<bool> {
        let t = check_id(token_id, self.inner.constraint().vocab().size())?;
        self.inner.is_allowed(t).map_err(to_pyerr)
    }

    /// True iff the text so far is a complete string of the language.
    fn is_accepting(&mut self) -> bool {
        self.inner.is_accepting()
    }

    /// True once EOS was consumed, or when nothing but EOS can follow.
    fn is_terminated(&mut self) -> bool {
        self.inner.is_terminated()
    }

    /// Undo the last `n` consumed tokens (for speculative decoding).
    fn rollback(&mut self, n: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = size_arg(n, "n")?;
        self.inner.rollback(n).map_err(to_pyerr)
    }

    /// Back to the initial state.
    fn reset(&mut self) {
        self.inner.reset()
    }

    /// An independent copy in the same state.
    fn copy(&self) -> Self {
        PyMatcher { inner: self.inner.clone() }
    }

    fn __copy__(&self) -> Self {
        self.copy()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> Self {
        self.copy()
    }

    /// Bytes that every allowed continuation starts with (may be empty).
    fn forced_bytes<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.forced_bytes())
    }

    /// True once EOS has been consumed.
    #[getter]
    fn eos_consumed(&self) -> bool {
        self.inner.eos_consumed()
    }

    /// Token ids spelling the forced continuation (may be empty); each is
    /// allowed in turn, so they can be consumed without sampling.
    fn forced_tokens(&mut self) -> Vec<u32> {
        self.inner.forced_tokens()
    }

    /// Number of tokens consumed so far (EOS included).
    #[getter]
    fn num_consumed(&self) -> usize {
        self.inner.num_consumed()
    }

    /// Number of ids a bitmask row covers.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.constraint().vocab().size()
    }

    fn __repr__(&mut self) -> String {
        format!(
            "Matcher(consumed={}, accepting={}, terminated={})",
            self.inner.num_consumed(),
            py_bool(self.inner.is_accepting()),
            py_bool(self.inner.is_terminated())
        )
    }
}

/// Fill many bitmask rows in parallel (GIL released): row `indices[i]`
/// (default `i`) gets the mask of `matchers[i]`.
#[pyfunction]
#[pyo3(signature = (matchers, bitmask, indices=None))]
fn fill_next_token_bitmasks(
    py: Python<'_>,
    matchers: &Bound<'_, PyAny>,
    bitmask: &Bound<'_, PyAny>,
    indices: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let matchers = matchers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err(format!("matchers must be a list of Matcher, got {}", type_name(matchers))))?;
    let indices: Option<Vec<i64>> = match indices {
        Some(ix) if !ix.is_none() => Some(
            ix.try_iter()
                .map_err(|_| PyTypeError::new_err(format!("indices must be a sequence of int, got {}", type_name(ix))))?
                .map(|x| index_arg(&x?, "indices"))
                .collect::<PyResult<_>>()?,
        ),
        _ => None,
    };
    let n = matchers.len();
    if let Some(ix) = &indices {
        if ix.len() != n {
            return Err(PyValueError::new_err(format!("{} matchers but {} indices", n, ix.len())));
        }
    }
    let mut refs: Vec<PyRefMut<'_, PyMatcher>> = matchers
        .iter()
        .map(|m| {
            m.extract::<PyRefMut<'_, PyMatcher>>().map_err(|e| {
                if m.cast::<PyMatcher>().is_ok() {
                    PyErr::from(e) // a matcher already borrowed (listed twice)
                } else {
                    PyTypeError::new_err(format!("matchers must be a list of Matcher, got an item of type {}", type_name(&m)))
                }
            })
        })
        .collect::<PyResult<_>>()?;
    if n == 0 {
        return Ok(());
    }
    let words = refs[0].inner.constraint().env().mask_words();
    let mut bm = writable_bitmask(bitmask)?;
    let (nrows, data) = bitmask_rows(&mut bm, words)?;
    // Each row handed out at most once, so the rows are disjoint borrows.
    let mut slots: Vec<Option<&mut [u32]>> = data.chunks_mut(words.max(1)).map(Some).collect();
    let mut rows = Vec::with_capacity(n);
    for (i, m) in refs.iter().enumerate() {
        if m.inner.constraint().env().mask_words() != words {
            return Err(PyValueError::new_err("all matchers must share one vocabulary size"));
        }
        let idx = indices.as_ref().map_or(i as i64, |ix| ix[i]);
        let r = row_index(idx, nrows)?;
        let row = slots[r]
            .take()
            .ok_or_else(|| PyValueError::new_err(format!("row index {idx} given twice")))?;
        rows.push(row);
    }
    let mut cores: Vec<&mut CoreMatcher> = refs.iter_mut().map(|r| &mut r.inner).collect();
    py.detach(|| cores.par_iter_mut().zip(rows.par_iter_mut()).try_for_each(|(m, row)| m.fill_mask(row)))
        .map_err(to_pyerr)
}

/// CPU logits to mask in place: float32, or the 16-bit patterns of
/// float16/bfloat16 (the Python side passes `logits.view(torch.int16)`).
#[derive(FromPyObject)]
enum LogitsMut<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    Bits16(PyReadwriteArrayDyn<'py, i16>),
}

/// Mask CPU logits in place: `logits` (1-D `(V,)` or 2-D `(rows, V)`,
/// float32 or int16 bit patterns of `dtype` "float16"/"bfloat16"), `bitmask`
/// int32 of the same number of dimensions and rows, covering at least `V`
/// tokens. Private back end of `apply_token_bitmask_inplace`; every array
/// is checked here (dtype, shape, contiguity, writeability).
#[pyfunction]
fn _apply_bitmask_cpu(py: Python<'_>, logits: LogitsMut<'_>, bitmask: &Bound<'_, PyAny>, dtype: &str) -> PyResult<()> {
    use crate::bitmask::apply_mask;
    let neg_inf: i16 = match dtype {
        "float32" => 0,
        "float16" => 0xFC00u16 as i16,
        "bfloat16" => 0xFF80u16 as i16,
        other => return Err(PyTypeError::new_err(format!("unsupported logits dtype {other}"))),
    };
    let bm = array_arg::<i32>(bitmask, "bitmask", "int32")?
        .try_readonly()
        .map_err(|e| super::resample::borrow_error("bitmask", e))?;
    let lshape = match &logits {
        LogitsMut::F32(a) => a.shape().to_vec(),
        LogitsMut::Bits16(a) => a.shape().to_vec(),
    };
    let bshape = bm.shape().to_vec();
    let (rows, vocab, words) = match (lshape.as_slice(), bshape.as_slice()) {
        ([v], [w]) => (1, *v, *w),
        ([r, v], [br, w]) if r == br => (*r, *v, *w),
        _ => {
            return Err(PyValueError::new_err(format!(
                "logits {lshape:?} and bitmask {bshape:?} must both be 1-D or both 2-D with the same number of rows"
            )))
        }
    };
    if words.saturating_mul(32) < vocab {
        return Err(PyValueError::new_err(format!(
            "bitmask covers {} tokens but logits have {vocab} columns; build the vocabulary with vocab_size={vocab}",
            words * 32
        )));
    }
    let mask = words_of(super::resample::ro_slice(&bm, "bitmask")?);
    let rows_of = |r: usize| &mask[r * words..(r + 1) * words];
    match logits {
        LogitsMut::F32(mut a) => {
            let x = super::resample::rw_slice(&mut a, "logits")?;
            py.detach(|| {
                for (r, row) in x.chunks_mut(vocab.max(1)).enumerate().take(rows) {
                    apply_mask(row, rows_of(r), f32::NEG_INFINITY);
                }
            })
        }
        LogitsMut::Bits16(mut a) => {
            if dtype == "float32" {
                return Err(PyTypeError::new_err("float32 logits passed as 16-bit patterns"));
            }
            let x = super::resample::rw_slice(&mut a, "logits")?;
            py.detach(|| {
                for (r, row) in x.chunks_mut(vocab.max(1)).enumerate().take(rows) {
                    apply_mask(row, rows_of(r), neg_inf);
                }
            })
        }
    }
    Ok(())
}

/// Words per bitmask row for a vocabulary of `vocab_size` ids.
#[pyfunction]
fn bitmask_words(vocab_size: usize) -> usize {
    words_for(vocab_size)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVocabulary>()?;
    m.add_class::<PyConstraint>()?;
    m.add_class::<PyMatcher>()?;
    m.add_function(wrap_pyfunction!(compile_regex, m)?)?;
    m.add_function(wrap_pyfunction!(compile_json, m)?)?;
    m.add_function(wrap_pyfunction!(compile_grammar, m)?)?;
    m.add_function(wrap_pyfunction!(fill_next_token_bitmasks, m)?)?;
    m.add_function(wrap_pyfunction!(bitmask_words, m)?)?;
    m.add_function(wrap_pyfunction!(_apply_bitmask_cpu, m)?)?;
    m.add_function(wrap_pyfunction!(_vocabulary_from_parts, m)?)?;
    m.add_function(wrap_pyfunction!(_constraint_from_recipe, m)?)?;
    Ok(())
}
