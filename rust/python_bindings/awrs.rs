//! Binding for [`crate::awrs`]: one step of AWRS / rejection / full
//! evaluation with a Python accept callable. The GIL is released for the
//! sampling and reacquired only around each call of the callable.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::awrs::{sample_blocked, sample_masked, sample_rows, Draw, LogProb, RowAsk, SampleError, Sampler};
use crate::resample::rng_from_seed;

/// Call `accept(list_of_token_ids)` and read one truth value per id. With
/// `known` (a dict of token id -> log weight, filled by the caller's
/// `accept` for earlier questions, possibly of other particles with the
/// same text), tokens found there are answered without calling `accept`
/// (accepted when the value is above `-inf`).
fn call_accept(accept: &Py<PyAny>, known: Option<&Py<PyDict>>, toks: &[u32]) -> PyResult<Vec<bool>> {
    Python::attach(|py| {
        if let Some(k) = known {
            let k = k.bind(py);
            let mut answers = Vec::with_capacity(toks.len());
            for &t in toks {
                match k.get_item(t)? {
                    Some(v) => answers.push(v.extract::<f64>()? > f64::NEG_INFINITY),
                    None => break,
                }
            }
            if answers.len() == toks.len() {
                return Ok(answers);
            }
        }
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
/// to the masked distribution). `max` and `cum`: this row's outputs of
/// `masked_rows_into` for the same log-probs and mask, which let the
/// sampler skip its own O(V) pass.
///
/// Returns `(token or None, log_weight, calls, fell_back)`.
#[pyfunction]
#[pyo3(
    signature = (logp, accept, sampler = "awrs", max_calls = 1000, seed = 0, mask = None, max = None, cum = None, known = None),
    text_signature = "(logp, accept, sampler='awrs', max_calls=1000, seed=0, mask=None, max=None, cum=None, known=None)"
)]
#[allow(clippy::too_many_arguments)]
fn awrs_sample(
    py: Python<'_>,
    logp: &Bound<'_, PyAny>,
    accept: Py<PyAny>,
    sampler: &str,
    max_calls: usize,
    seed: u64,
    mask: Option<PyReadonlyArray1<'_, i32>>,
    max: Option<f64>,
    cum: Option<PyReadonlyArray1<'_, f64>>,
    known: Option<Py<PyDict>>,
) -> PyResult<DrawTuple> {
    let sampler: Sampler = sampler.parse().map_err(PyValueError::new_err)?;
    // The packed bitmask row (int32 words, as `allocate_token_bitmask` makes
    // them), reinterpreted as u32.
    let words: Option<Vec<u32>> = mask.map(|m| m.as_array().iter().map(|&w| w as u32).collect());
    let words = words.as_deref();
    let blocks: Option<(f64, Vec<f64>)> = match (max, cum) {
        (Some(m), Some(c)) => Some((m, c.as_array().to_vec())),
        (None, None) => None,
        _ => return Err(PyValueError::new_err("awrs_sample: pass both max and cum, or neither")),
    };
    // float64 and float32 are read in place when contiguous (no O(V) copy
    // here; the sampler widens float32 into its reused buffer).
    let blocks = blocks.as_ref();
    let known = known.as_ref();
    let run = |slice: &[f64]| draw_row(py, slice, words, blocks, sampler, max_calls, seed, &accept, known);
    let run32 = |slice: &[f32]| draw_row(py, slice, words, blocks, sampler, max_calls, seed, &accept, known);
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

/// One row's draw for [`awrs_sample`]. With the kernel's blocks the work
/// between two calls of `accept` is a few microseconds: releasing the GIL
/// and taking it back around each call would cost as much, so the GIL is
/// kept. Without them the O(V) set-up runs with the GIL released.
#[allow(clippy::too_many_arguments)]
fn draw_row<L: LogProb>(
    py: Python<'_>,
    logp: &[L],
    words: Option<&[u32]>,
    blocks: Option<&(f64, Vec<f64>)>,
    sampler: Sampler,
    max_calls: usize,
    seed: u64,
    accept: &Py<PyAny>,
    known: Option<&Py<PyDict>>,
) -> Result<Draw, SampleError<PyErr>> {
    let go = || {
        let mut rng = rng_from_seed(seed);
        let acc = |t: &[u32]| call_accept(accept, known, t);
        match blocks {
            Some((m, c)) => sample_blocked(logp, words, *m, c, sampler, max_calls, &mut rng, acc),
            None => sample_masked(logp, words, sampler, max_calls, &mut rng, acc),
        }
    };
    if blocks.is_some() {
        go()
    } else {
        py.detach(go)
    }
}

/// `(token or None, log_weight, calls, fell_back)`, as Python sees a draw.
type DrawTuple = (Option<u32>, f64, usize, bool);

/// Call `accept(rows, tokens)` once for a batch of rows' questions and read
/// one list of truth values per row.
fn call_accept_rows(accept: &Py<PyAny>, asks: &[RowAsk]) -> PyResult<Vec<Vec<bool>>> {
    Python::attach(|py| {
        let rows: Vec<usize> = asks.iter().map(|a| a.row).collect();
        let toks: Vec<Vec<u32>> = asks.iter().map(|a| a.tokens.clone()).collect();
        let out = accept.bind(py).call1((rows, toks))?;
        let err = || PyTypeError::new_err("awrs_sample_rows: accept must return one iterable of booleans per row");
        let mut all = Vec::with_capacity(asks.len());
        for item in out.try_iter().map_err(|_| err())? {
            let mut answers = Vec::new();
            for b in item?.try_iter().map_err(|_| err())? {
                answers.push(b?.is_truthy()?);
            }
            all.push(answers);
        }
        if all.len() != asks.len() || all.iter().zip(asks).any(|(a, q)| a.len() != q.tokens.len()) {
            return Err(PyValueError::new_err("awrs_sample_rows: accept returned the wrong number of answers"));
        }
        Ok(all)
    })
}

/// [`awrs_sample`] for every row of a 2-D array at once, one call of
/// `accept(rows, tokens)` per round for all rows still drawing (rows in
/// parallel threads, GIL released except during the call). `max` / `cum`:
/// the rows' outputs of `masked_rows_into` (1-D and 2-D).
#[pyfunction]
#[pyo3(
    signature = (logp, accept, seeds, sampler = "awrs", max_calls = 1000, mask = None, max = None, cum = None),
    text_signature = "(logp, accept, seeds, sampler='awrs', max_calls=1000, mask=None, max=None, cum=None)"
)]
#[allow(clippy::too_many_arguments)]
fn awrs_sample_rows(
    py: Python<'_>,
    logp: &Bound<'_, PyAny>,
    accept: Py<PyAny>,
    seeds: Vec<u64>,
    sampler: &str,
    max_calls: usize,
    mask: Option<PyReadonlyArray2<'_, i32>>,
    max: Option<PyReadonlyArray1<'_, f64>>,
    cum: Option<PyReadonlyArray2<'_, f64>>,
) -> PyResult<Vec<DrawTuple>> {
    let sampler: Sampler = sampler.parse().map_err(PyValueError::new_err)?;
    let words: Option<(Vec<u32>, usize)> = mask.map(|m| {
        let w = m.shape()[1];
        (m.as_array().iter().map(|&x| x as u32).collect(), w)
    });
    let masks = words.as_ref().map(|(v, w)| (v.as_slice(), *w));
    let blocks: Option<(Vec<f64>, Vec<f64>)> = match (max, cum) {
        (Some(m), Some(c)) => Some((m.as_array().to_vec(), c.as_array().iter().copied().collect())),
        (None, None) => None,
        _ => return Err(PyValueError::new_err("awrs_sample_rows: pass both max and cum, or neither")),
    };
    let blocks = blocks.as_ref().map(|(m, c)| (m.as_slice(), c.as_slice()));
    let bad = || PyTypeError::new_err("awrs_sample_rows: logp must be a 2-D C-contiguous numpy array of float32 or float64");
    let r = if let Ok(a) = logp.extract::<PyReadonlyArray2<'_, f64>>() {
        let vocab = a.shape()[1];
        let s = a.as_slice().map_err(|_| bad())?;
        py.detach(|| {
            sample_rows(s, vocab, masks, blocks, sampler, max_calls, &seeds, |q: &[RowAsk]| {
                call_accept_rows(&accept, q)
            })
        })
    } else {
        let a: PyReadonlyArray2<'_, f32> = logp.extract().map_err(|_| bad())?;
        let vocab = a.shape()[1];
        let s = a.as_slice().map_err(|_| bad())?;
        py.detach(|| {
            sample_rows(s, vocab, masks, blocks, sampler, max_calls, &seeds, |q: &[RowAsk]| {
                call_accept_rows(&accept, q)
            })
        })
    };
    match r {
        Ok(ds) => Ok(ds.into_iter().map(|d| (d.token, d.log_weight, d.calls, d.fell_back)).collect()),
        Err(SampleError::Accept(e)) => Err(e),
        Err(SampleError::Input(m)) => Err(PyValueError::new_err(format!("awrs_sample_rows: {m}"))),
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(awrs_sample, m)?)?;
    m.add_function(wrap_pyfunction!(awrs_sample_rows, m)?)?;
    Ok(())
}
