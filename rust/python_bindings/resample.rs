//! Bindings for `crate::resample` and `crate::smc` (owned by the resampling work).
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
