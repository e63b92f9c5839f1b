//! Test hooks that make the core's file I/O fail as a real disk does (see `tidelog_core::fs`).
//! They are process-wide and meant for tests only; nothing in tidelog calls them.

use pyo3::prelude::*;
use tidelog_core::fs::{self, Fault, Op};

use crate::errors::{to_py, InvalidConfigError};

/// Makes matching file operations of this process fail with `errno`: `op` is one of
/// "write", "sync", "allocate", "truncate", "rename", "read"; only paths containing
/// `path_contains` are hit; `skip` matching calls pass first, then `times` fail (`None`:
/// every one until `_clear_faults()`); `short` makes a failing write write half its bytes;
/// `panic` makes the call panic instead (a stand-in for a bug in the thread making it).
#[pyfunction]
#[pyo3(signature = (
    op, path_contains = String::new(), errno = 5, skip = 0, times = Some(1), short = false, panic = false,
))]
fn _inject_fault(
    op: &str,
    path_contains: String,
    errno: i32,
    skip: u32,
    times: Option<u32>,
    short: bool,
    panic: bool,
) -> PyResult<()> {
    if errno <= 0 {
        return Err(InvalidConfigError::new_err(format!("errno must be positive, got {errno}")));
    }
    let op = to_py(Op::parse(op))?;
    fs::inject(Fault { op, path_contains, errno, skip, times, short, panic });
    Ok(())
}

/// Removes every fault injected with `_inject_fault`.
#[pyfunction]
fn _clear_faults() {
    fs::clear();
}

/// Registers the hooks on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_inject_fault, m)?)?;
    m.add_function(wrap_pyfunction!(_clear_faults, m)?)?;
    Ok(())
}
