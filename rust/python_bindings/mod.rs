//! All Python bindings. The rest of the crate knows nothing of Python.
//!
//! Buffers (bitmasks, log weights, ancestor arrays) cross the boundary as raw
//! addresses plus lengths that the Python layer has already validated (dtype,
//! shape, contiguity, device). That keeps the extension on the stable ABI
//! (one abi3 wheel for CPython >= 3.9) without depending on numpy's C API.

use pyo3::prelude::*;

mod awrs;
mod core;
mod resample;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    awrs::register(m)?;
    core::register(m)?;
    resample::register(m)?;
    Ok(())
}
