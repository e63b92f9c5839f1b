//! Open file description locks (`F_OFD_SETLK`) on single bytes of a file: the locks that
//! tell processes (and handles within one process) apart for the control block.
//!
//! Why OFD locks rather than `flock` or classic POSIX (`F_SETLK`) locks:
//! - like `flock`, they belong to one open file description, so two handles in one
//!   process exclude each other, and closing some other descriptor of the file does not
//!   drop them (classic POSIX locks belong to the process: a second handle in the same
//!   process would think it is alone, and any `close` of the file would drop them all);
//! - unlike `flock`, converting a shared lock to an exclusive one is atomic: a failed
//!   "am I the last user?" keeps the shared lock, where `flock` drops it first and leaves a
//!   window in which nobody seems alive; and byte ranges let one file carry two locks
//!   (alive, and the open lock);
//! - on NFS, `flock` is emulated with per-process POSIX locks, OFD locks keep their
//!   per-description meaning.
//!
//! They do not tell a forked child from its parent: the child shares the parent's open
//! file descriptions and so its locks. That is the job of [`super::fork`]: an inherited
//! handle takes, converts and releases no lock. Owners release their locks explicitly
//! (`F_UNLCK`) rather than by closing the descriptor, because a copy of the description
//! still open in a child would otherwise keep them held until the child exits.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The `flock` structure passed to `fcntl` is fully initialised and outlives the call.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// What to do with a byte's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// A read lock: others may share it.
    Shared,
    /// A write lock: nobody else holds any lock on the byte.
    Exclusive,
    /// Release whatever this description holds on the byte.
    Unlock,
}

/// Sets the lock of this open file description on `len` bytes from `start` (`len == 0`:
/// to the end of the file, however far it grows), blocking until it is granted.
///
/// # Errors
/// Failures of `fcntl` (the file must be open for reading to take a shared lock and for
/// writing to take an exclusive one; `EDEADLK` if waiting would deadlock).
pub fn set(file: &File, start: u64, len: u64, lock: Lock) -> std::io::Result<()> {
    fcntl(file, start, len, lock, libc::F_OFD_SETLKW).map(drop)
}

/// As [`set`], without waiting: false if another description holds a conflicting lock.
///
/// # Errors
/// As [`set`], other than the lock being busy.
pub fn try_set(file: &File, start: u64, len: u64, lock: Lock) -> std::io::Result<bool> {
    fcntl(file, start, len, lock, libc::F_OFD_SETLK)
}

/// `fcntl(cmd)` with the lock described; false when a non-blocking `cmd` found it busy.
fn fcntl(file: &File, start: u64, len: u64, lock: Lock, cmd: libc::c_int) -> std::io::Result<bool> {
    let l_type = match lock {
        Lock::Shared => libc::F_RDLCK,
        Lock::Exclusive => libc::F_WRLCK,
        Lock::Unlock => libc::F_UNLCK,
    };
    loop {
        // SAFETY: an all-zero `flock` is a valid value (plain integers); `l_pid` must stay 0
        // for OFD locks.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = l_type as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = start as libc::off_t;
        fl.l_len = len as libc::off_t;
        // SAFETY: `fl` is initialised and lives across the call (invariant 1); the
        // descriptor is open for as long as `file` is borrowed.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EACCES) if cmd == libc::F_OFD_SETLK => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> File {
        File::options().read(true).write(true).create(true).truncate(false).open(path).unwrap()
    }

    #[test]
    fn descriptions_in_one_process_exclude_each_other_and_conversion_keeps_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (a, b, c) = (open(&path), open(&path), open(&path));
        assert!(try_set(&a, 0, 1, Lock::Shared).unwrap());
        assert!(try_set(&b, 0, 1, Lock::Shared).unwrap());
        assert!(!try_set(&a, 0, 1, Lock::Exclusive).unwrap(), "b shares it");
        // The failed conversion left a's shared lock in place: c cannot take it exclusively.
        set(&b, 0, 1, Lock::Unlock).unwrap();
        assert!(!try_set(&c, 0, 1, Lock::Exclusive).unwrap(), "a still holds it");
        // Another byte is another lock.
        assert!(try_set(&c, 1, 1, Lock::Exclusive).unwrap());
        set(&a, 0, 0, Lock::Unlock).unwrap();
        assert!(try_set(&c, 0, 1, Lock::Exclusive).unwrap());
    }
}
