//! Binding for [`crate::awrs`]: one step of AWRS / rejection / full
//! evaluation with a Python accept callable. The GIL is released for the
//! sampling and reacquired only around each call of the callable.

use numpy::PyReadonlyArray1;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::awrs::{sample_masked, SampleError, Sampler};
use crate::resample::rng_from_seed;

/// Call `accept(list_of_token_ids)` and read one truth value per id.
fn call_accept(accept: &Py<PyAny>, toks: &[u32]) -> PyResult<Vec<bool>> {
    Python::attach(|py| {
        let out = accept.bind(py).call1((toks.to_vec(),))?;
        let mut answers = Vec::with_capacity(toks.len());
        for item in out
            .try_iter()
            .map_err(|_| PyTypeError::new_err("awrs_sample: accept must return an iterable of booleans"))?
        {
            answers.push(item?.is_truthy()?);
        }
        Ok(answers)
    })
}

/// One constrained draw from `softmax(logp)` (restricted first to the
/// packed int32 bitmask row `mask` when given: the weight is then relative
/// to the masked distribution).
///
/// Returns `(token or None, log_weight, calls, fell_back)`.
#[pyfunction]
#[pyo3(
    signature = (logp, accept, sampler = "awrs", max_calls = 1000, seed = 0, mask = None),
    text_signature = "(logp, accept, sampler='awrs', max_calls=1000, seed=0, mask=None)"
)]
fn awrs_sample(
    py: Python<'_>,
    logp: &Bound<'_, PyAny>,
    accept: Py<PyAny>,
    sampler: &str,
    max_calls: usize,
    seed: u64,
    mask: Option<PyReadonlyArray1<'_, i32>>,
) -> PyResult<(Option<u32>, f64, usize, bool)> {
    let sampler: Sampler = sampler.parse().map_err(PyValueError::new_err)?;
    // The packed bitmask row (int32 words, as `allocate_token_bitmask` makes
    // them), reinterpreted as u32.
    let words: Option<Vec<u32>> = mask.map(|m| m.as_array().iter().map(|&w| w as u32).collect());
    let words = words.as_deref();
    // float64 and float32 are read in place when contiguous (no O(V) copy
    // here; the sampler widens float32 into its reused buffer).
    let run = |slice: &[f64]| {
        py.detach(|| {
            let mut rng = rng_from_seed(seed);
            sample_masked(slice, words, sampler, max_calls, &mut rng, |t: &[u32]| call_accept(&accept, t))
        })
    };
    let run32 = |slice: &[f32]| {
        py.detach(|| {
            let mut rng = rng_from_seed(seed);
            sample_masked(slice, words, sampler, max_calls, &mut rng, |t: &[u32]| call_accept(&accept, t))
        })
    };
    let r = if let Ok(a) = logp.extract::<PyReadonlyArray1<'_, f64>>() {
        match a.as_slice() {
            Ok(s) => run(s),
            Err(_) => run(&a.as_array().to_vec()),
        }
    } else {
        let a: PyReadonlyArray1<'_, f32> = logp
            .extract()
            .map_err(|_| PyTypeError::new_err("awrs_sample: logp must be a 1-D numpy array of float32 or float64"))?;
        match a.as_slice() {
            Ok(s) => run32(s),
            Err(_) => run32(&a.as_array().to_vec()),
        }
    };
    match r {
        Ok(d) => Ok((d.token, d.log_weight, d.calls, d.fell_back)),
        Err(SampleError::Accept(e)) => Err(e),
        Err(SampleError::Input(m)) => Err(PyValueError::new_err(format!("awrs_sample: {m}"))),
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(awrs_sample, m)?)?;
    Ok(())
}
