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

/// The extension's allocator, for the Rust core only (Python keeps its own).
///
/// Compiling a constraint is allocation-heavy, and with glibc's malloc its
/// latency depended on the host process's heap: in a worker forked from a
/// process with a large, fragmented heap (a server, a benchmark harness),
/// the first mallocs sort the parent's free lists and copy hundreds of its
/// pages (770 page faults and 3 ms for a trivial schema, against 1.6 ms
/// in a small parent). mimalloc's heaps hold only this library's memory.
/// It is built with the local-dynamic TLS model because the module is
/// loaded with `dlopen` (no static TLS block to rely on).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `mi_collect` (statically linked by the `mimalloc` crate):
    /// with `force`, hands freed pages back to the OS now rather than after
    /// its purge delay.
    fn mi_collect(force: bool);
}

/// After one-time work that frees much of what it allocated (parsing a
/// tokenizer.json, building a vocabulary's token trie and string-body
/// index): give the freed pages back. mimalloc otherwise keeps them until
/// its next purge, which a process that then only computes masks may not
/// reach for a long time: without this the process stayed ~38 MB larger
/// than with glibc's malloc after loading Llama 3 and compiling a schema
/// (103 MB against 65 MB).
fn release_freed_memory() {
    // SAFETY: mi_collect takes no pointers; any thread may call it.
    unsafe { mi_collect(true) }
}

/// Runs `f` (a compile) and releases freed memory if it built some of the
/// vocabulary's one-time data ([`release_freed_memory`]).
fn after_setup<T>(env: &crate::matcher::TokEnv, f: impl FnOnce() -> T) -> T {
    let before = env.data_built();
    let r = f();
    if env.data_built() != before {
        release_freed_memory();
    }
    r
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    awrs::register(m)?;
    core::register(m)?;
    json_schema::register(m)?;
    resample::register(m)?;
    Ok(())
}
