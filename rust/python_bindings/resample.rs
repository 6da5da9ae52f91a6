//! Bindings for [`crate::resample`], [`crate::smc`] and [`crate::masked`].
//!
//! Two layers, for two kinds of caller:
//!
//! * The kernel functions (`resample_into`, `ess`, `log_normalize_into`,
//!   `masked_rows_into`, `masked_draw_into`) are the private back end of
//!   `tokensieve.resample` and `tokensieve.smc`. They take numpy arrays
//!   through rust-numpy, which checks type, dtype, dimensions, alignment,
//!   contiguity, writeability and aliasing (an array borrowed mutably twice)
//!   on every call; anything else is a TypeError or ValueError, never a
//!   crash. The Python side allocates the outputs (numpy raises
//!   MemoryError for an impossible size instead of aborting the process).
//! * `Population` accepts arrays (numpy, CPU or CUDA torch tensors,
//!   sequences) and returns numpy arrays itself, by calling
//!   `numpy.ascontiguousarray` through the interpreter. It is called once
//!   per decoding step, where those few microseconds are noise.

use numpy::{
    PyArray1, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray, PyReadwriteArray1, PyReadwriteArray2, PyUntypedArrayMethods,
};
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

/// The most particles a `Population` holds: far beyond any SMC run, and
/// small enough that its buffers (a few words per particle) are an
/// ordinary allocation rather than an abort.
const MAX_PARTICLES: i64 = 1 << 26;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A clear ValueError for an array `what` that cannot be borrowed.
pub(crate) fn borrow_error(what: &str, e: numpy::BorrowError) -> PyErr {
    match e {
        numpy::BorrowError::NotWriteable => value_error(format_args!("{what} is read-only")),
        _ => value_error(format_args!("{what} is already in use (the same array passed twice?)")),
    }
}

/// The elements of a read-only array argument `what`, in C order.
/// ValueError unless it is C-contiguous and aligned (an F-ordered 2-D
/// array is contiguous too, but in the wrong order).
pub(crate) fn ro_slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(a: &'a PyReadonlyArray<'_, T, D>, what: &str) -> PyResult<&'a [T]> {
    if !a.is_c_contiguous() {
        return Err(value_error(format_args!("{what} must be C-contiguous")));
    }
    a.as_slice()
        .map_err(|_| value_error(format_args!("{what} must be C-contiguous and aligned")))
}

/// As [`ro_slice`], for a writable array argument.
pub(crate) fn rw_slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a mut PyReadwriteArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a mut [T]> {
    if !a.is_c_contiguous() {
        return Err(value_error(format_args!("{what} must be C-contiguous")));
    }
    a.as_slice_mut()
        .map_err(|_| value_error(format_args!("{what} must be C-contiguous and aligned")))
}

/// Resample into a caller-allocated int64 array `out` (its length is the
/// number of draws). Private back end of
/// `tokensieve.resample.{multinomial, systematic, stratified, residual}`;
/// call those instead.
///
/// `kind` indexes `RESAMPLE_SCHEMES`; `log_weights` and `uniforms` are
/// 1-D float64 arrays. With `uniforms`, `seed` is ignored. Raises
/// ValueError for bad weights, uniforms or n.
#[pyfunction]
#[pyo3(signature = (kind, log_weights, out, seed, uniforms=None))]
fn resample_into(
    py: Python<'_>,
    kind: u8,
    log_weights: PyReadonlyArray1<'_, f64>,
    mut out: PyReadwriteArray1<'_, i64>,
    seed: u64,
    uniforms: Option<PyReadonlyArray1<'_, f64>>,
) -> PyResult<()> {
    let scheme = Scheme::from_code(kind).ok_or_else(|| value_error(format_args!("unknown resampling scheme code {kind}")))?;
    let lw = ro_slice(&log_weights, "log_weights")?;
    let out = rw_slice(&mut out, "out")?;
    let given = match &uniforms {
        Some(u) => Some(ro_slice(u, "uniforms")?),
        None => None,
    };
    let work = lw.len().saturating_add(out.len());
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
    let result = if work >= DETACH_MIN { py.detach(run) } else { run() };
    result.map_err(value_error)
}

/// Effective sample size of 1-D float64 log weights. Private back end of
/// `tokensieve.resample.ess`.
#[pyfunction]
fn ess(py: Python<'_>, log_weights: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
    let lw = ro_slice(&log_weights, "log_weights")?;
    let result = if lw.len() >= DETACH_MIN {
        py.detach(|| resample::ess(lw))
    } else {
        resample::ess(lw)
    };
    result.map_err(value_error)
}

/// Write `log_weights - logsumexp(log_weights)` into `out` (float64, same
/// length) and return the logsumexp. Private back end of
/// `tokensieve.resample.log_normalize`.
#[pyfunction]
fn log_normalize_into(py: Python<'_>, log_weights: PyReadonlyArray1<'_, f64>, mut out: PyReadwriteArray1<'_, f64>) -> PyResult<f64> {
    let lw = ro_slice(&log_weights, "log_weights")?;
    let out = rw_slice(&mut out, "out")?;
    if out.len() != lw.len() {
        return Err(value_error(format_args!("out has {} elements, log_weights {}", out.len(), lw.len())));
    }
    let result = if lw.len() >= DETACH_MIN {
        py.detach(|| resample::log_normalize_into(lw, out))
    } else {
        resample::log_normalize_into(lw, out)
    };
    result.map_err(value_error)
}

/// 2-D float32 or float64 log-probs.
#[derive(FromPyObject)]
enum LogitsArg<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

/// A batch of log-probs and int32 bitmask rows, checked and viewed.
fn batch<'a>(logits: &'a LogitsArg<'_>, bitmask: &'a PyReadonlyArray2<'_, i32>) -> PyResult<(Shape, Logits<'a>, &'a [u32])> {
    let (dims, lp) = match logits {
        LogitsArg::F32(a) => (a.shape(), Logits::F32(ro_slice(a, "logits")?)),
        LogitsArg::F64(a) => (a.shape(), Logits::F64(ro_slice(a, "logits")?)),
    };
    let (rows, vocab) = (dims[0], dims[1]);
    let bshape = bitmask.shape();
    if bshape[0] != rows {
        return Err(value_error(format_args!("logits have {rows} rows but bitmask has {}", bshape[0])));
    }
    let mask = crate::python_bindings::core::words_of(ro_slice(bitmask, "bitmask")?);
    Ok((
        Shape {
            rows,
            vocab,
            words: bshape[1],
        },
        lp,
        mask,
    ))
}

/// Per-row allowed mass of a batch of `logits` (2-D float32 or float64)
/// under `bitmask` (2-D int32), into the float64 outputs `log_z` and `max`
/// (one per row) and `cum` (rows x ceil(vocab / MASKED_BLOCK)). Private
/// back end of the CPU path of `tokensieve.smc`; see `crate::masked` for
/// the semantics. Raises ValueError for a NaN or +inf allowed log-prob.
#[pyfunction]
fn masked_rows_into(
    py: Python<'_>,
    logits: LogitsArg<'_>,
    bitmask: PyReadonlyArray2<'_, i32>,
    mut log_z: PyReadwriteArray1<'_, f64>,
    mut max: PyReadwriteArray1<'_, f64>,
    mut cum: PyReadwriteArray2<'_, f64>,
) -> PyResult<()> {
    let (shape, lp, mask) = batch(&logits, &bitmask)?;
    let log_z = rw_slice(&mut log_z, "log_z")?;
    let max = rw_slice(&mut max, "max")?;
    let cum = rw_slice(&mut cum, "cum")?;
    let mut run = move || masked::masked_rows(lp, mask, shape, log_z, max, cum);
    let result = if shape.rows.saturating_mul(shape.vocab) >= DETACH_MIN {
        py.detach(run)
    } else {
        run()
    };
    result.map_err(value_error)
}

/// Draws from rows processed by `masked_rows_into`: `out[k]` is a token of
/// row `rows[k]` drawn with uniform `u[k]` (int64, float64 and int64 1-D
/// arrays of one length); the other arrays are those given to
/// `masked_rows_into`. Raises ValueError for a bad row, uniform or a dead
/// row.
#[pyfunction]
fn masked_draw_into(
    logits: LogitsArg<'_>,
    bitmask: PyReadonlyArray2<'_, i32>,
    max: PyReadonlyArray1<'_, f64>,
    cum: PyReadonlyArray2<'_, f64>,
    rows: PyReadonlyArray1<'_, i64>,
    u: PyReadonlyArray1<'_, f64>,
    mut out: PyReadwriteArray1<'_, i64>,
) -> PyResult<()> {
    let (shape, lp, mask) = batch(&logits, &bitmask)?;
    let max = ro_slice(&max, "max")?;
    let cum = ro_slice(&cum, "cum")?;
    let src = ro_slice(&rows, "rows")?;
    let u = ro_slice(&u, "u")?;
    let out = rw_slice(&mut out, "out")?;
    masked::draw_many(lp, mask, shape, max, cum, src, u, out).map_err(value_error)
}

// ------------------------------------------------------------ numpy glue

static NP_ASCONTIGUOUSARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NP_GENERATOR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `obj` as a contiguous, aligned 1-D float64 numpy array (torch tensors on
/// any device go through `.detach().cpu().double().numpy()`).
fn as_f64_vector<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArray1<'py, f64>> {
    let py = obj.py();
    let mut obj = obj.clone();
    if obj.cast::<PyArray1<f64>>().is_err() {
        let module = obj.get_type().getattr(intern!(py, "__module__"))?;
        if module.extract::<String>().is_ok_and(|m| m.starts_with("torch")) && obj.hasattr(intern!(py, "detach"))? {
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
    let ro: PyReadonlyArray1<'py, f64> = arr.extract()?;
    if ro.is_aligned() {
        return Ok(ro);
    }
    // A misaligned view (np.frombuffer at an odd offset) gets an aligned copy.
    arr.call_method0(intern!(py, "copy"))?.extract()
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
        if n > MAX_PARTICLES {
            return Err(value_error(format_args!("n must be at most {MAX_PARTICLES}, got {n}")));
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
        self.inner.add_log_weights(ro_slice(&arr, "increments")?).map_err(value_error)
    }

    /// Record the current ESS in ess_history and, if ESS < ess_threshold *
    /// n, resample: returns the n ancestor indices (int64 numpy array,
    /// sorted) and resets every log weight to log_z. Returns None when no
    /// resampling happened. ValueError if every weight is zero (all log
    /// weights -inf) and ess_threshold > 0.
    fn maybe_resample<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.inner.maybe_resample().map_err(value_error)? {
            Some(anc) => Ok(Some(PyArray1::from_slice(py, anc).into_any())),
            None => Ok(None),
        }
    }

    /// Current unnormalised log weights (float64 numpy array, a copy).
    #[getter]
    fn log_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(PyArray1::from_slice(py, self.inner.log_weights()).into_any())
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
        Ok(PyArray1::from_slice(py, &w).into_any())
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
            "Population(n={}, ess_threshold={:?}, resampler='{}', log_z={:?}, ess={:?})",
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
    m.add_function(wrap_pyfunction!(ess, m)?)?;
    m.add_function(wrap_pyfunction!(log_normalize_into, m)?)?;
    m.add_function(wrap_pyfunction!(masked_rows_into, m)?)?;
    m.add_function(wrap_pyfunction!(masked_draw_into, m)?)?;
    m.add("MASKED_BLOCK", masked::BLOCK_TOKENS)?;
    m.add_class::<PyPopulation>()?;
    let names = Scheme::ALL.map(Scheme::name);
    m.add("RESAMPLE_SCHEMES", PyTuple::new(m.py(), names)?)?;
    Ok(())
}
