//! Bindings for [`crate::resample`], [`crate::smc`] and [`crate::masked`].
//!
//! Two layers, for two kinds of caller:
//!
//! * The kernel functions (`resample_into`, `ess_of_ptr`,
//!   `log_normalize_into`, `masked_rows_into`, `masked_draw_into`) take raw
//!   buffer addresses. They are the private
//!   back end of `tokensieve.resample`, which validates dtype, shape and
//!   contiguity with numpy, allocates the output, and passes
//!   `arr.ctypes.data`-style addresses. That keeps the per-call overhead to
//!   a few integer conversions (it matters at N = 256, where the whole
//!   resampling step costs about a microsecond) and needs neither rust-numpy
//!   nor the non-stable numpy C API. `data_address` gives the Python side a
//!   cheap way to get those addresses.
//! * `Population` is a user-facing class, so it accepts arrays (numpy,
//!   CPU or CUDA torch tensors, sequences) and returns numpy arrays itself,
//!   by calling `numpy.ascontiguousarray` / `numpy.empty` through the
//!   interpreter. It is called once per decoding step, where those few
//!   microseconds are noise.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyTuple};

use crate::masked::{self, Logits, Shape};
use crate::resample::{self, Scheme, Uniforms};
use crate::smc::Population;

/// Inputs at least this long (log weights plus draws) run with the GIL
/// released. Below it, releasing and re-acquiring the GIL costs more than
/// the kernel itself.
const DETACH_MIN: usize = 1 << 14;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A shared slice over a caller-provided buffer.
///
/// # Safety
/// `ptr` must address `len` initialised, properly aligned `T`s that stay
/// alive and are not written by anyone else while the slice is in use.
/// (Null and misaligned addresses are rejected rather than trusted.)
unsafe fn slice_ref<'a, T>(ptr: usize, len: usize, what: &str) -> PyResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    check_address::<T>(ptr, what)?;
    Ok(std::slice::from_raw_parts(ptr as *const T, len))
}

/// A mutable slice over a caller-provided buffer.
///
/// # Safety
/// As [`slice_ref`], and nothing else may read or write the buffer while the
/// slice is in use.
unsafe fn slice_mut<'a, T>(ptr: usize, len: usize, what: &str) -> PyResult<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_address::<T>(ptr, what)?;
    Ok(std::slice::from_raw_parts_mut(ptr as *mut T, len))
}

fn check_address<T>(ptr: usize, what: &str) -> PyResult<()> {
    if ptr == 0 {
        return Err(value_error(format_args!("{what}: null data address")));
    }
    if !ptr.is_multiple_of(std::mem::align_of::<T>()) {
        return Err(value_error(format_args!("{what}: data address {ptr:#x} is not aligned")));
    }
    Ok(())
}

/// Resample into a caller-allocated int64 buffer. Private back end of
/// `tokensieve.resample.{multinomial, systematic, stratified, residual}`;
/// call those instead.
///
/// `kind` indexes `RESAMPLE_SCHEMES`. `logw_ptr`/`len` address a contiguous
/// float64 array, `out_ptr`/`n` a contiguous int64 array, and
/// `uniforms_ptr`/`uniforms_len` (if `uniforms_ptr` is not None) a
/// contiguous float64 array of supplied uniforms, in which case `seed` is
/// ignored. The addresses must stay valid for the call: passing anything
/// else is undefined behaviour. Raises ValueError for bad weights,
/// uniforms or n.
#[pyfunction]
#[pyo3(signature = (kind, logw_ptr, len, out_ptr, n, seed, uniforms_ptr=None, uniforms_len=0))]
#[allow(clippy::too_many_arguments)]
fn resample_into(
    py: Python<'_>,
    kind: u8,
    logw_ptr: usize,
    len: usize,
    out_ptr: usize,
    n: usize,
    seed: u64,
    uniforms_ptr: Option<usize>,
    uniforms_len: usize,
) -> PyResult<()> {
    let scheme = Scheme::from_code(kind).ok_or_else(|| value_error(format_args!("unknown resampling scheme code {kind}")))?;
    // SAFETY: the caller contract above (upheld by tokensieve.resample,
    // which keeps the arrays referenced for the duration of the call).
    let lw = unsafe { slice_ref::<f64>(logw_ptr, len, "log_weights")? };
    let out = unsafe { slice_mut::<i64>(out_ptr, n, "out")? };
    let given = match uniforms_ptr {
        Some(p) => Some(unsafe { slice_ref::<f64>(p, uniforms_len, "uniforms")? }),
        None => None,
    };
    let mut run = move || {
        let mut rng;
        let src = match given {
            Some(u) => Uniforms::Given(u),
            None => {
                rng = resample::rng_from_seed(seed);
                Uniforms::Rng(&mut rng)
            }
        };
        resample::resample_into(scheme, lw, out, src)
    };
    let result = if len.saturating_add(n) >= DETACH_MIN { py.detach(run) } else { run() };
    result.map_err(value_error)
}

/// Effective sample size of the float64 log weights at `logw_ptr` (length
/// `len`). Private back end of `tokensieve.resample.ess`; same contract as
/// `resample_into`.
#[pyfunction]
fn ess_of_ptr(py: Python<'_>, logw_ptr: usize, len: usize) -> PyResult<f64> {
    // SAFETY: caller contract, see `resample_into`.
    let lw = unsafe { slice_ref::<f64>(logw_ptr, len, "log_weights")? };
    let result = if len >= DETACH_MIN {
        py.detach(|| resample::ess(lw))
    } else {
        resample::ess(lw)
    };
    result.map_err(value_error)
}

/// Write `log_weights - logsumexp(log_weights)` into the float64 buffer at
/// `out_ptr` (same length) and return the logsumexp. Private back end of
/// `tokensieve.resample.log_normalize`; same contract as `resample_into`.
#[pyfunction]
fn log_normalize_into(py: Python<'_>, logw_ptr: usize, len: usize, out_ptr: usize) -> PyResult<f64> {
    // SAFETY: caller contract, see `resample_into`; the two buffers are
    // distinct numpy allocations.
    let lw = unsafe { slice_ref::<f64>(logw_ptr, len, "log_weights")? };
    let out = unsafe { slice_mut::<f64>(out_ptr, len, "out")? };
    let result = if len >= DETACH_MIN {
        py.detach(|| resample::log_normalize_into(lw, out))
    } else {
        resample::log_normalize_into(lw, out)
    };
    result.map_err(value_error)
}

/// A batch of log-probs and bitmask rows: `rows * vocab` float32
/// (`is_f64` false) or float64 values at `lp_ptr`, `rows * words` mask
/// words at `mask_ptr`.
///
/// # Safety
/// As [`slice_ref`], for both buffers.
unsafe fn batch_ref<'a>(
    lp_ptr: usize,
    is_f64: bool,
    rows: usize,
    vocab: usize,
    mask_ptr: usize,
    words: usize,
) -> PyResult<(Shape, Logits<'a>, &'a [u32])> {
    let n = rows.checked_mul(vocab).ok_or_else(|| value_error("rows * vocab overflows"))?;
    let nw = rows.checked_mul(words).ok_or_else(|| value_error("rows * words overflows"))?;
    let lp = if is_f64 {
        Logits::F64(slice_ref(lp_ptr, n, "logits")?)
    } else {
        Logits::F32(slice_ref(lp_ptr, n, "logits")?)
    };
    Ok((Shape { rows, vocab, words }, lp, slice_ref::<u32>(mask_ptr, nw, "mask")?))
}

/// Per-row allowed mass of a batch. Private back end of the CPU path of
/// `tokensieve.smc`; see `crate::masked` for the semantics.
///
/// `lp_ptr` addresses `rows * vocab` contiguous float32 or float64
/// log-probs, `mask_ptr` `rows * words` contiguous int32 bitmask words;
/// the float64 outputs `log_z_ptr` and `max_ptr` have `rows` elements and
/// `cum_ptr` `rows * ceil(vocab / MASKED_BLOCK)`. Same contract as
/// `resample_into`. Raises ValueError for a NaN or +inf allowed log-prob.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn masked_rows_into(
    py: Python<'_>,
    lp_ptr: usize,
    is_f64: bool,
    rows: usize,
    vocab: usize,
    mask_ptr: usize,
    words: usize,
    log_z_ptr: usize,
    max_ptr: usize,
    cum_ptr: usize,
) -> PyResult<()> {
    // SAFETY: caller contract, see `resample_into`; the outputs are
    // distinct numpy allocations.
    let (shape, lp, mask) = unsafe { batch_ref(lp_ptr, is_f64, rows, vocab, mask_ptr, words)? };
    let log_z = unsafe { slice_mut::<f64>(log_z_ptr, rows, "log_z")? };
    let max = unsafe { slice_mut::<f64>(max_ptr, rows, "max")? };
    let cum = unsafe { slice_mut::<f64>(cum_ptr, rows * shape.blocks(), "cum")? };
    let mut run = move || masked::masked_rows(lp, mask, shape, log_z, max, cum);
    let result = if rows * vocab >= DETACH_MIN { py.detach(run) } else { run() };
    result.map_err(value_error)
}

/// Draws from rows processed by `masked_rows_into`: `out[k]` is a token of
/// row `rows[k]` drawn with uniform `u[k]`. `src_ptr` addresses `k` int64
/// row indices, `u_ptr` `k` float64 uniforms in [0, 1), `out_ptr` `k` int64
/// outputs; the other buffers are those given to `masked_rows_into`. Same
/// contract. Raises ValueError for a bad row, uniform or a dead row.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn masked_draw_into(
    lp_ptr: usize,
    is_f64: bool,
    rows: usize,
    vocab: usize,
    mask_ptr: usize,
    words: usize,
    max_ptr: usize,
    cum_ptr: usize,
    src_ptr: usize,
    u_ptr: usize,
    k: usize,
    out_ptr: usize,
) -> PyResult<()> {
    // SAFETY: caller contract, see `resample_into`.
    let (shape, lp, mask) = unsafe { batch_ref(lp_ptr, is_f64, rows, vocab, mask_ptr, words)? };
    let max = unsafe { slice_ref::<f64>(max_ptr, rows, "max")? };
    let cum = unsafe { slice_ref::<f64>(cum_ptr, rows * shape.blocks(), "cum")? };
    let src = unsafe { slice_ref::<i64>(src_ptr, k, "rows")? };
    let u = unsafe { slice_ref::<f64>(u_ptr, k, "uniforms")? };
    let out = unsafe { slice_mut::<i64>(out_ptr, k, "out")? };
    masked::draw_many(lp, mask, shape, max, cum, src, u, out).map_err(value_error)
}

// ------------------------------------------------------------ numpy glue

static NP_ASCONTIGUOUSARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NP_EMPTY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NP_NDARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NP_GENERATOR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The address of a numpy array's data buffer: what `arr.ctypes.data`
/// returns, in ~50 ns instead of ~1 us (building the ctypes helper object,
/// or the `__array_interface__` dict, costs more than resampling 256
/// particles). TypeError if `arr` is not a numpy.ndarray (or subclass).
///
/// It reads the `data` field that follows the object header in numpy's
/// `PyArrayObject_fields`. That layout is part of numpy's binary interface
/// (the `PyArray_DATA` accessor is an inline field access compiled into
/// every numpy extension) and is the same in numpy 1.x and 2.x;
/// `tokensieve.resample` also checks it against `arr.ctypes.data` once at
/// import and falls back to the latter if they ever disagree.
#[pyfunction]
fn data_address(arr: &Bound<'_, PyAny>) -> PyResult<usize> {
    let ndarray = NP_NDARRAY.import(arr.py(), "numpy", "ndarray")?;
    if !arr.is_instance(ndarray)? {
        return Err(PyTypeError::new_err("expected a numpy.ndarray"));
    }
    // SAFETY: `arr` is a live ndarray (or subclass, which extends the same
    // struct), so a pointer-sized `data` field directly follows its
    // PyObject header (abi3 builds always have the plain 2-word header).
    let data = unsafe {
        let base = arr.as_ptr() as *const u8;
        std::ptr::read(base.add(std::mem::size_of::<pyo3::ffi::PyObject>()) as *const usize)
    };
    Ok(data)
}

/// `obj` as a contiguous, aligned 1-D float64 numpy array (torch tensors on
/// any device go through `.detach().cpu().double().numpy()`).
fn as_f64_vector<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let ndarray = NP_NDARRAY.import(py, "numpy", "ndarray")?;
    let mut obj = obj.clone();
    if !obj.is_instance(ndarray)? {
        let module = obj.get_type().getattr(intern!(py, "__module__"))?;
        if module.extract::<String>().is_ok_and(|m| m.starts_with("torch")) {
            obj = obj
                .call_method0(intern!(py, "detach"))?
                .call_method0(intern!(py, "cpu"))?
                .call_method0(intern!(py, "double"))?
                .call_method0(intern!(py, "numpy"))?;
        }
    }
    let arr = NP_ASCONTIGUOUSARRAY
        .import(py, "numpy", "ascontiguousarray")?
        .call1((obj, intern!(py, "float64")))?;
    let ndim: usize = arr.getattr(intern!(py, "ndim"))?.extract()?;
    if ndim != 1 {
        return Err(value_error(format_args!("{what} must be 1-dimensional, got {ndim} dimensions")));
    }
    // A misaligned view (np.frombuffer at an odd offset) gets an aligned copy.
    if data_address(&arr)? % std::mem::align_of::<f64>() != 0 {
        return arr.call_method0(intern!(py, "copy"));
    }
    Ok(arr)
}

/// A new numpy array of `dtype` (whose item size must be that of `T`)
/// holding a copy of `data`.
fn new_array<'py, T: Copy>(py: Python<'py>, data: &[T], dtype: &str) -> PyResult<Bound<'py, PyAny>> {
    let arr = NP_EMPTY.import(py, "numpy", "empty")?.call1((data.len(), dtype))?;
    if !data.is_empty() {
        let ptr = data_address(&arr)?;
        // SAFETY: a fresh, aligned, contiguous array of data.len() items of
        // the same size as T, not yet visible to any other code.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut T, data.len()) };
    }
    Ok(arr)
}

/// A u64 seed from `None` (fresh OS entropy), a non-negative int below
/// 2**64, or a `numpy.random.Generator` (which draws `integers(0, 2**63)`).
fn seed_from_py(py: Python<'_>, seed: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let Some(seed) = seed.filter(|s| !s.is_none()) else {
        let bytes = py.import("os")?.call_method1("urandom", (8,))?;
        let bytes = bytes.cast::<PyBytes>()?.as_bytes();
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[..8]);
        return Ok(u64::from_le_bytes(b));
    };
    let generator = NP_GENERATOR.import(py, "numpy.random", "Generator")?;
    if seed.is_instance(generator)? {
        return seed.call_method1(intern!(py, "integers"), (0u64, 1u64 << 63))?.extract();
    }
    if seed.is_instance_of::<PyBool>() || seed.hasattr(intern!(py, "__index__")).ok() != Some(true) {
        return Err(PyTypeError::new_err("seed must be None, a non-negative int or a numpy.random.Generator"));
    }
    seed.extract::<u64>()
        .map_err(|_| value_error(format_args!("seed must be in [0, 2**64), got {seed}")))
}

// ------------------------------------------------------------ Population

/// A population of N SMC particle weights with ESS-triggered resampling.
///
/// Population(n, ess_threshold=0.5, resampler="systematic", seed=None)
///
/// Holds unnormalised log weights (initially 0), not the particles
/// themselves: after each decoding step call add_log_weights with each
/// particle's log incremental weight (0 for finished particles, -inf to
/// kill one), then maybe_resample; when it returns ancestor indices,
/// replace particle i by old particle ancestors[i].
///
/// Resampling happens when ESS < ess_threshold * n. It then sets every log
/// weight to log_z, so log_z = logsumexp(log_weights) - log(n), the running
/// estimate of the log marginal likelihood, is unchanged by resampling.
///
/// resampler is "systematic", "stratified", "residual" or "multinomial";
/// seed is None (fresh OS entropy), an int in [0, 2**64) or a
/// numpy.random.Generator (one seed is drawn from it). ValueError for
/// n < 1, ess_threshold outside [0, 1] or an unknown resampler.
#[pyclass(module = "tokensieve._core", name = "Population")]
pub struct PyPopulation {
    inner: Population,
}

#[pymethods]
impl PyPopulation {
    #[new]
    #[pyo3(
        signature = (n, ess_threshold=0.5, resampler="systematic".to_owned(), seed=None),
        text_signature = "(n, ess_threshold=0.5, resampler='systematic', seed=None)"
    )]
    fn new(py: Python<'_>, n: i64, ess_threshold: f64, resampler: String, seed: Option<&Bound<'_, PyAny>>) -> PyResult<PyPopulation> {
        if n < 1 {
            return Err(value_error(format_args!("n must be at least 1, got {n}")));
        }
        let scheme: Scheme = resampler.parse().map_err(value_error)?;
        let seed = seed_from_py(py, seed)?;
        let inner = Population::new(n as usize, ess_threshold, scheme, seed).map_err(value_error)?;
        Ok(PyPopulation { inner })
    }

    /// Add log incremental weights, one per particle (1-D array-like of
    /// length n: numpy array, torch tensor on any device, or sequence).
    /// Use 0 for finished particles and -inf to kill a particle. ValueError
    /// for the wrong shape, NaN, +inf or an overflow to +inf; the weights
    /// are then left unchanged.
    fn add_log_weights(&mut self, increments: &Bound<'_, PyAny>) -> PyResult<()> {
        let arr = as_f64_vector(increments, "increments")?;
        let len: usize = arr.len()?;
        let ptr = if len == 0 { 0 } else { data_address(&arr)? };
        // SAFETY: `arr` is a live contiguous float64 array of `len` items
        // that we hold a reference to until the end of this function.
        let inc = unsafe { slice_ref::<f64>(ptr, len, "increments")? };
        self.inner.add_log_weights(inc).map_err(value_error)
    }

    /// Record the current ESS in ess_history and, if ESS < ess_threshold *
    /// n, resample: returns the n ancestor indices (int64 numpy array,
    /// sorted) and resets every log weight to log_z. Returns None when no
    /// resampling happened. ValueError if every weight is zero (all log
    /// weights -inf) and ess_threshold > 0.
    fn maybe_resample<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.inner.maybe_resample().map_err(value_error)? {
            Some(anc) => Ok(Some(new_array(py, anc, "int64")?)),
            None => Ok(None),
        }
    }

    /// Current unnormalised log weights (float64 numpy array, a copy).
    #[getter]
    fn log_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        new_array(py, self.inner.log_weights(), "float64")
    }

    /// logsumexp(log_weights) - log(n): the running SMC estimate of the log
    /// marginal likelihood (log of the mean weight; resampling resets keep
    /// it). -inf if every particle is dead.
    #[getter]
    fn log_z(&self) -> f64 {
        self.inner.log_z()
    }

    /// Effective sample size (sum w)^2 / sum w^2 of the current weights, in
    /// [1, n]; 0.0 if every particle is dead.
    #[getter]
    fn ess(&self) -> f64 {
        self.inner.ess()
    }

    /// The ESS seen by each maybe_resample call (before it resampled), as a
    /// list of floats in call order.
    #[getter]
    fn ess_history(&self) -> Vec<f64> {
        self.inner.ess_history().to_vec()
    }

    /// Normalised weights exp(log_weights - logsumexp(log_weights)) as a
    /// float64 numpy array summing to 1. ValueError if every particle is dead.
    fn normalized_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.inner.normalized_weights().map_err(value_error)?;
        new_array(py, &w, "float64")
    }

    /// Number of particles.
    #[getter]
    fn n(&self) -> usize {
        self.inner.len()
    }

    /// The ESS threshold tau (resample when ESS < tau * n).
    #[getter]
    fn ess_threshold(&self) -> f64 {
        self.inner.ess_threshold()
    }

    /// The resampling scheme's name.
    #[getter]
    fn resampler(&self) -> &'static str {
        self.inner.scheme().name()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Population(n={}, ess_threshold={:?}, resampler={:?}, log_z={:?}, ess={:?})",
            self.inner.len(),
            self.inner.ess_threshold(),
            self.inner.scheme().name(),
            self.inner.log_z(),
            self.inner.ess()
        )
    }
}

/// Add the resampling and masked-distribution functions, `MASKED_BLOCK`, `RESAMPLE_SCHEMES` (scheme names indexed
/// by the `kind` code of `resample_into`) and `Population` to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(resample_into, m)?)?;
    m.add_function(wrap_pyfunction!(data_address, m)?)?;
    m.add_function(wrap_pyfunction!(ess_of_ptr, m)?)?;
    m.add_function(wrap_pyfunction!(log_normalize_into, m)?)?;
    m.add_function(wrap_pyfunction!(masked_rows_into, m)?)?;
    m.add_function(wrap_pyfunction!(masked_draw_into, m)?)?;
    m.add("MASKED_BLOCK", masked::BLOCK_TOKENS)?;
    m.add_class::<PyPopulation>()?;
    let names = Scheme::ALL.map(Scheme::name);
    m.add("RESAMPLE_SCHEMES", PyTuple::new(m.py(), names)?)?;
    Ok(())
}
