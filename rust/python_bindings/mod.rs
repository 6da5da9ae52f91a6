//! All Python bindings. The rest of the crate knows nothing of Python.
//!
//! Buffers (bitmasks, logits, log weights, ancestor arrays) cross the
//! boundary as numpy arrays through rust-numpy, which checks dtype,
//! dimensions, contiguity, alignment, writeability and aliasing on every
//! call; CPU torch tensors are viewed as numpy arrays first (`.numpy()`, no
//! copy). No raw address ever comes from Python: a bad argument is a
//! TypeError or ValueError, never a crash.

use pyo3::prelude::*;

mod awrs;
mod core;
mod json_schema;
mod resample;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    awrs::register(m)?;
    core::register(m)?;
    json_schema::register(m)?;
    resample::register(m)?;
    Ok(())
}
