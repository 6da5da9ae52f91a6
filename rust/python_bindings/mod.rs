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
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// mimalloc v3's `mi_option_allow_thp`: its position in `mi_option_t`
/// (`Cargo.lock` pins the version; [`no_huge_pages`] checks the default it
/// reads there before changing it).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// Stop mimalloc from asking for transparent huge pages (it `madvise`s
/// its arenas `MADV_HUGEPAGE`), unless `TOKENSIEVE_ALLOW_THP=1`.
///
/// Why: masks touch memory sparsely (hash maps, transition tables, caches
/// that grow as a generation goes), and a huge page is zeroed whole, 2 MiB
/// at its first touch. On the development VM (Firecracker, memory backed
/// lazily by the host) that cost 2-3 ms per fault whenever the kernel
/// handed out a huge page the host had not backed yet: in about half the
/// processes, single masks of SynCode Go and JavaScript took 25 ms instead
/// of 3-6, and the sample's total doubled (280 against 145-185 ms). With
/// 4 KiB pages the same masks take 6 ms in every process, and the process
/// holds 11-15 MB less. Only this library's allocator changes: unlike
/// `MIMALLOC_ALLOW_THP=0` at load time, this does not switch huge pages off
/// for the whole process (numpy and torch keep theirs).
fn no_huge_pages() {
    if std::env::var_os("TOKENSIEVE_ALLOW_THP").is_some_and(|v| v == "1") {
        return;
    }
    // SAFETY: both take and return plain integers.
    unsafe {
        // mimalloc's default is 1 (allowed); anything else means the
        // option sits elsewhere in this version: leave it alone.
        if mi_option_get(MI_OPTION_ALLOW_THP) == 1 {
            mi_option_set(MI_OPTION_ALLOW_THP, 0);
        }
    }
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
    no_huge_pages();
    awrs::register(m)?;
    core::register(m)?;
    json_schema::register(m)?;
    resample::register(m)?;
    Ok(())
}
