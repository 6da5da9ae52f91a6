//! Binding for [`crate::json_schema`]: schema text in, constraint and the
//! warnings of non-strict mode out (the Python layer turns them into
//! `warnings.warn`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::core::{to_pyerr, PyConstraint, PyVocabulary};
use crate::grammar::GrammarLimits;
use crate::json_schema::{Options, Whitespace};
use crate::matcher::{Constraint as CoreConstraint, DEFAULT_MASK_CACHE_BYTES};

/// Compile a JSON Schema given as JSON text. Returns `(constraint,
/// warnings)`; `warnings` lists what `strict=False` ignored.
#[pyfunction]
#[pyo3(
    signature = (schema, vocab, *, whitespace="flexible", separators=None, strict=true, max_depth=crate::json_schema::DEFAULT_MAX_DEPTH, mask_cache_bytes=DEFAULT_MASK_CACHE_BYTES),
    text_signature = "(schema, vocab, *, whitespace='flexible', separators=None, strict=True, max_depth=128, mask_cache_bytes=268435456)"
)]
#[allow(clippy::too_many_arguments)]
fn _compile_json_schema(
    py: Python<'_>,
    schema: &str,
    vocab: Bound<'_, PyVocabulary>,
    whitespace: &str,
    separators: Option<(String, String)>,
    strict: bool,
    max_depth: usize,
    mask_cache_bytes: usize,
) -> PyResult<(PyConstraint, Vec<String>)> {
    let recipe_kwargs = [
        ("whitespace", Some(whitespace.into_pyobject(py)?.into_any())),
        (
            "separators",
            separators.clone().map(|s| s.into_pyobject(py).map(|v| v.into_any())).transpose()?,
        ),
        ("strict", Some(strict.into_pyobject(py)?.to_owned().into_any())),
        ("max_depth", Some(max_depth.into_pyobject(py)?.into_any())),
        ("mask_cache_bytes", Some(mask_cache_bytes.into_pyobject(py)?.into_any())),
    ];
    let ws = match (separators, whitespace) {
        (Some((item, key)), _) => Whitespace::Separators { item, key },
        (None, "flexible") => Whitespace::Flexible,
        (None, "compact") => Whitespace::Compact,
        (None, other) => {
            return Err(PyValueError::new_err(format!(
                "whitespace must be \"flexible\" or \"compact\", got {other:?}"
            )))
        }
    };
    let opts = Options {
        whitespace: ws,
        strict,
        max_depth,
        ..Options::default()
    };
    let limits = GrammarLimits {
        mask_cache_bytes,
        ..GrammarLimits::default()
    };
    let env = vocab.get().env.clone();
    let probe = env.clone();
    let (inner, warnings) = py
        .detach(|| super::after_setup(&probe, || CoreConstraint::json_schema(env, schema, &opts, &limits)))
        .map_err(to_pyerr)?;
    let args = (schema, vocab).into_pyobject(py)?;
    Ok((PyConstraint::new(inner, "_compile_json_schema", args, &recipe_kwargs)?, warnings))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_compile_json_schema, m)?)?;
    Ok(())
}
