//! Converting arguments so that errors follow the contract: a wrong type raises `TypeError`
//! naming the argument (PyO3's own extraction names it only in a note), and a number the
//! engine cannot hold raises a `TidelogError` saying the valid range, never `OverflowError`.
//!
//! Integers are taken as `i128`, saturated beyond it, so every value the engine accepts
//! fits and anything larger still compares (and is reported) correctly.

use std::borrow::Cow;
use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};
use tidelog_core::PartitionLog;

use crate::errors::{InvalidConfigError, OffsetOutOfRangeError, PartitionNotFoundError};

/// The name of `obj`'s type, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn wrong_type(obj: &Bound<'_, PyAny>, arg: &str, what: &str) -> PyErr {
    PyTypeError::new_err(format!("{arg} must be {what}, got {}", type_name(obj)))
}

/// An integer argument: an `int` or anything with `__index__` (numpy integers), not a bool.
///
/// # Errors
/// `TypeError` naming `arg` for any other type.
pub(crate) fn int(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<i128> {
    // An exact `int` first (one pointer comparison, and never a bool): nearly every call
    // passes one, and the type checks below cost more than the conversion itself.
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(i128::from(v));
        }
    }
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyFloat>() {
        return Err(wrong_type(obj, arg, "int"));
    }
    match obj.extract::<i64>() {
        Ok(v) => return Ok(i128::from(v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {}
        Err(_) => return Err(wrong_type(obj, arg, "int")),
    }
    match obj.extract::<i128>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            let negative = obj.lt(0).map_err(|_| wrong_type(obj, arg, "int"))?;
            Ok(if negative { i128::MIN } else { i128::MAX })
        }
        Err(_) => Err(wrong_type(obj, arg, "int")),
    }
}

#[inline]
fn present<'a, 'py>(obj: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    obj.filter(|o| !o.is_none())
}

/// An integer argument in `min..=max`.
///
/// # Errors
/// `TypeError` naming `arg`; `InvalidConfigError` naming `arg` and the range.
pub(crate) fn int_in<T: TryFrom<i128> + Into<i128> + Copy>(
    obj: &Bound<'_, PyAny>,
    arg: &str,
    min: T,
    max: T,
) -> PyResult<T> {
    let v = int(obj, arg)?;
    T::try_from(v).ok().filter(|t| (min.into()..=max.into()).contains(&(*t).into())).ok_or_else(|| {
        InvalidConfigError::new_err(format!(
            "{arg} must be between {} and {}, got {}",
            min.into(),
            max.into(),
            shown(obj)
        ))
    })
}

/// As [`int_in`], for an argument that may be `None`.
///
/// # Errors
/// As [`int_in`].
pub(crate) fn opt_int_in<T: TryFrom<i128> + Into<i128> + Copy>(
    obj: Option<&Bound<'_, PyAny>>,
    arg: &str,
    min: T,
    max: T,
) -> PyResult<Option<T>> {
    present(obj).map(|o| int_in(o, arg, min, max)).transpose()
}

/// A positive integer setting, as `usize`.
///
/// # Errors
/// As [`int_in`].
pub(crate) fn positive(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<usize> {
    // usize is 64 bits on every platform tidelog builds for.
    int_in(obj, arg, 1_i64, i64::MAX).map(|v| v as usize)
}

/// A non-negative limit ("at most n"): a huge one is no limit, so it saturates.
///
/// # Errors
/// `TypeError` naming `arg`; `InvalidConfigError` for a negative value.
pub(crate) fn limit(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<usize> {
    let v = int(obj, arg)?;
    if v < 0 {
        return Err(InvalidConfigError::new_err(format!("{arg} must be >= 0, got {}", shown(obj))));
    }
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

/// A partition number (`None` lets the topic choose).
///
/// # Errors
/// `TypeError` naming `partition` (also for a bool, which is not a partition);
/// `PartitionNotFoundError` for a number no topic can have.
#[inline]
pub(crate) fn partition(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u32>> {
    let Some(obj) = present(obj) else { return Ok(None) };
    // Every call on a partition passes one: an exact `int` in range is one conversion.
    if obj.is_exact_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<u32>() {
            return Ok(Some(v));
        }
    }
    let v = int(obj, "partition")?;
    u32::try_from(v).map(Some).map_err(|_| {
        PartitionNotFoundError::new_err(format!(
            "partition {} does not exist: partitions are numbered from 0",
            shown(obj)
        ))
    })
}

/// A partition number that must be given.
///
/// # Errors
/// As [`partition`].
#[inline]
pub(crate) fn required_partition(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    Ok(partition(Some(obj))?.unwrap_or(0))
}

/// A timestamp in milliseconds since the epoch.
///
/// # Errors
/// `TypeError` naming `arg`; `InvalidConfigError` outside the 64-bit range.
#[inline]
pub(crate) fn timestamp(obj: Option<&Bound<'_, PyAny>>, arg: &str) -> PyResult<Option<i64>> {
    if let Some(obj) = obj.filter(|o| o.is_exact_instance_of::<PyInt>()) {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(Some(v));
        }
    }
    opt_int_in(obj, arg, i64::MIN, i64::MAX)
}

/// An offset of `log` to read from: one that cannot exist raises `OffsetOutOfRangeError`
/// naming the valid offsets, as one past the end does.
///
/// # Errors
/// `TypeError` naming `offset`; `OffsetOutOfRangeError`.
pub(crate) fn offset(obj: &Bound<'_, PyAny>, log: &PartitionLog) -> PyResult<u64> {
    let v = int(obj, "offset")?;
    u64::try_from(v).map_err(|_| {
        let (start, end) = (log.start_offset(), log.end_offset());
        let range = match (start, end) {
            (Ok(s), Ok(e)) => format!("valid offsets are {s}..={e}"),
            _ => "offsets are never negative".to_owned(),
        };
        OffsetOutOfRangeError::new_err(format!(
            "offset {} out of range for {:?} partition {}: {range}",
            shown(obj),
            log.topic(),
            log.partition()
        ))
    })
}

/// A number of seconds to wait: `None`, infinity or more seconds than a `Duration` holds
/// mean no limit.
///
/// # Errors
/// `TypeError` naming `arg`; `InvalidConfigError` for a negative number or NaN.
pub(crate) fn seconds(obj: Option<&Bound<'_, PyAny>>, arg: &str) -> PyResult<Option<Duration>> {
    let Some(obj) = present(obj) else { return Ok(None) };
    let s = real(obj, arg)?;
    if s.is_nan() || s < 0.0 {
        return Err(InvalidConfigError::new_err(format!(
            "{arg} must be a non-negative number of seconds, got {}",
            shown(obj)
        )));
    }
    Ok(Duration::try_from_secs_f64(s).ok())
}

/// How long to spin before sleeping, from `spin_us` (whole microseconds, 0 to
/// [`tidelog_core::defaults::MAX_SPIN_US`]); `None` is no spin.
///
/// # Errors
/// `TypeError` for a non-integer; `InvalidConfigError` naming `spin_us` outside the range.
pub(crate) fn spin(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Duration> {
    let Some(obj) = present(obj) else { return Ok(Duration::ZERO) };
    let us = int_in(obj, "spin_us", 0, tidelog_core::defaults::MAX_SPIN_US)?;
    Ok(Duration::from_micros(u64::from(us)))
}

/// A real number (`int` or `float`, not a bool); a huge int is infinity.
///
/// # Errors
/// `TypeError` naming `arg`.
pub(crate) fn real(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<f64> {
    if obj.is_instance_of::<PyBool>() {
        return Err(wrong_type(obj, arg, "a number"));
    }
    match obj.extract::<f64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) && obj.is_instance_of::<PyInt>() => {
            Ok(if obj.lt(0)? { f64::NEG_INFINITY } else { f64::INFINITY })
        }
        Err(_) => Err(wrong_type(obj, arg, "a number")),
    }
}

/// A `str` argument. Text that is not valid Unicode (a lone surrogate) is kept with U+FFFD
/// in its place, so the engine's own checks reject it as any other bad name.
///
/// # Errors
/// `TypeError` naming `arg`.
pub(crate) fn text<'a>(obj: &'a Bound<'_, PyAny>, arg: &str) -> PyResult<Cow<'a, str>> {
    let s = obj.cast::<PyString>().map_err(|_| wrong_type(obj, arg, "str"))?;
    // `to_str` borrows the string's cached UTF-8 (no copy); only a lone surrogate, which
    // has none, takes the lossy copy.
    Ok(s.to_str().map_or_else(|_| Cow::Owned(s.to_string_lossy().into_owned()), Cow::Borrowed))
}

/// A `str` argument that must be valid Unicode (it is stored as UTF-8).
///
/// # Errors
/// `TypeError` naming `arg`; `InvalidConfigError` for a lone surrogate.
pub(crate) fn utf8<'a>(obj: &'a Bound<'_, PyAny>, arg: &str) -> PyResult<Cow<'a, str>> {
    let s = obj.cast::<PyString>().map_err(|_| wrong_type(obj, arg, "str"))?;
    s.to_cow().map_err(|_| {
        InvalidConfigError::new_err(format!(
            "{arg} {:?} is not valid Unicode (it holds a lone surrogate)",
            s.to_string_lossy()
        ))
    })
}

/// `repr(obj)` for messages.
fn shown(obj: &Bound<'_, PyAny>) -> String {
    obj.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string_lossy().into_owned())
}
