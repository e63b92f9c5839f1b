//! Running engine calls without the GIL.

use pyo3::prelude::*;

use crate::errors::CoreError;

/// Runs `f` without the GIL and converts engine errors on the way out.
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> tidelog_core::Result<T> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(|e| CoreError(e).into())
}
