//! The partition control block: a 4 KiB file mapped `MAP_SHARED` by every process that has
//! the partition open. It holds the one lock that serializes appends across processes and
//! the published head of the log, which is how readers in any process learn about new data
//! without reopening or making a system call.
//!
//! Why not `flock` per append: a lock/unlock pair costs two system calls (about 0.7 µs on
//! the dev machine) against ~15 ns for an uncontended process-shared mutex, and a
//! single-message append must cost well under 0.5 µs. The mutex is *robust*: when its owner
//! dies mid-append the next locker gets `EOWNERDEAD`, which [`ControlBlock::lock`] reports
//! in the guard so the log can repair the tail before writing.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The mapping is exactly [`CONTROL_BYTES`] long, page-aligned, and the file is never
//!    truncated while mapped (it is created at full size and never shrunk).
//! 2. The mutex is initialised only by a handle that holds the control file's liveness
//!    lock exclusively, i.e. while no other handle has the partition open; afterwards every
//!    handle only locks and unlocks it, and a handle inherited across `fork()` never
//!    touches it (see [`fork`]).
//! 3. Head fields are only written while the mutex is held, inside the seqlock protocol
//!    (odd sequence while writing); readers retry until they see an even, unchanged sequence.
//! 4. The deleted word is only accessed atomically; it is only written while the mutex is
//!    held, only ever from 0 to 1, and never by initialisation (a deleted partition stays
//!    deleted for every later opener).
//! 5. The boot words and the synced-offset word are only accessed atomically. The boot
//!    words are written only by a handle that was alone when it opened, before it ends
//!    the open (so never concurrently); the synced offset only grows (`fetch_max`) after a
//!    sync, except that the alone opener's recovery sets it before anyone else can sync.
//!
//! The head is a hint that survives process crashes but not power loss: recovery at open
//! validates it against the segment files and rebuilds it when they disagree. Two more
//! words tell recovery how far to trust the files after a power loss: the offset below
//! which every byte was synced, and the boot the partition was last recovered in (a
//! process crash leaves the page cache whole; only a restart of the machine can leave
//! unsynced pages lost in any order).

#![allow(unsafe_code)]

mod boot;
pub mod doorbell;
pub mod fork;
pub mod ofd;
pub mod word;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use self::fork::Born;
use self::ofd::Lock;
use crate::{Error, Result};

/// Size of the control file.
pub const CONTROL_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"TLCTRL01";
const MUTEX_AT: usize = 64;
const HEAD_AT: usize = 128;
const HEAD_FIELDS: usize = 12;
/// Byte of the control file whose OFD lock marks a live handle: shared while the handle
/// lives, exclusive for "am I the only one?" (see [`ofd`] for why OFD locks).
const LIVE_BYTE: u64 = 0;
/// Byte of the control file whose OFD lock serialises opening and closing the partition,
/// so "am I alone?" and the recovery or trim that follows cannot interleave with another
/// handle's open.
const OPEN_BYTE: u64 = 1;
/// Byte of the control file whose OFD lock is held by the partition's one cleaner (log
/// compaction), in whichever process it runs; a dead cleaner's lock goes with it.
pub const CLEANER_BYTE: u64 = 2;
/// Nonzero once the partition's topic was deleted: every process's appends check it after
/// taking the mutex (one load), so nobody writes into a deleted topic's files or, through
/// paths that now name a new topic, into the new topic.
const DELETED_AT: usize = 512;
/// The boot (Linux's boot id, 16 bytes) in which an opener alone with the partition last
/// finished recovering it; zeros before that.
const BOOT_AT: usize = 520;
/// The offset below which the partition's data was synced to disk (see [`ControlBlock::note_synced`]).
const SYNCED_AT: usize = 536;

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= HEAD_AT - MUTEX_AT);
const _: () = assert!(HEAD_AT + 8 * HEAD_FIELDS <= DELETED_AT && DELETED_AT + 8 <= BOOT_AT);
const _: () = assert!(BOOT_AT + 16 <= SYNCED_AT && SYNCED_AT + 8 <= CONTROL_BYTES);

/// The published state of a partition's log, read consistently by [`ControlBlock::head`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Bumped whenever the set of segment files changes (roll, retention, truncation).
    pub generation: u64,
    /// Base offset of the active segment.
    pub active_base: u64,
    /// Bytes of complete batches in the active segment.
    pub committed_pos: u64,
    /// The next offset to be written.
    pub next_offset: u64,
    /// First retained offset.
    pub log_start: u64,
    /// Entries in the active segment's offset index (and, at the same cadence, its time
    /// index).
    pub index_entries: u64,
    /// Largest timestamp in the active segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// When the active segment was created, ms since the epoch (for time-based rolling).
    pub segment_created_ms: i64,
    /// Position of the batch the last offset-index entry points at.
    pub last_index_pos: u64,
    /// Nonzero once a transactional batch was written: readers then bound committed reads
    /// by the last stable offset (plain logs never build a producer table to read).
    pub transactional: u64,
    /// Bumped by every compaction swap: segments with the same base offsets were replaced,
    /// so other processes must map them again rather than reuse their maps (0 in control
    /// blocks written before compaction existed, which is what it starts at).
    pub compactions: u64,
}

impl Head {
    fn to_words(self) -> [u64; HEAD_FIELDS - 1] {
        [
            self.generation,
            self.active_base,
            self.committed_pos,
            self.next_offset,
            self.log_start,
            self.index_entries,
            self.max_timestamp as u64,
            self.segment_created_ms as u64,
            self.last_index_pos,
            self.transactional,
            self.compactions,
        ]
    }

    fn from_words(w: [u64; HEAD_FIELDS - 1]) -> Self {
        Head {
            generation: w[0],
            active_base: w[1],
            committed_pos: w[2],
            next_offset: w[3],
            log_start: w[4],
            index_entries: w[5],
            max_timestamp: w[6] as i64,
            segment_created_ms: w[7] as i64,
            last_index_pos: w[8],
            transactional: w[9],
            compactions: w[10],
        }
    }
}

/// A process's handle on a partition's control block.
pub struct ControlBlock {
    map: MmapRaw,
    /// Holds a shared OFD lock on [`LIVE_BYTE`] for as long as this handle lives: it tells
    /// a later opener that someone is alive and the mutex must not be re-initialised.
    file: File,
    path: PathBuf,
    born: Born,
}

// SAFETY: all shared state is reached through atomics or the process-shared pthread mutex,
// both designed for concurrent use from many threads; the mapping itself is not tied to a
// thread.
unsafe impl Send for ControlBlock {}
// SAFETY: see above.
unsafe impl Sync for ControlBlock {}

/// What [`ControlBlock::open`] found.
pub enum Opened {
    /// No other process had the partition open: the lock was (re)initialised and the
    /// caller must run full recovery, [`WriteGuard::publish`] the result and then
    /// [`ControlBlock::mark_recovered`].
    Alone(ControlBlock, Left),
    /// Other processes have it open: the head is live and trustworthy.
    Shared(ControlBlock),
}

/// What the previous owners of a control block left for the opener alone with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Left {
    /// Their head (`None` if the file was new or not a control block): it survives process
    /// crashes, not power loss, so verify it.
    pub head: Option<Head>,
    /// What may have happened to the data since the partition was last recovered.
    pub since: Since,
}

/// What happened to the machine since a partition was last recovered, as far as its control
/// block tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// At most process crashes: this is the boot it was recovered in, and the page cache
    /// holds every byte written since.
    SameBoot,
    /// The machine restarted: a power loss may have kept some pages written after the last
    /// sync and lost others, in any order. Everything below `synced` is on disk.
    Restart {
        /// The partition's synced offset ([`ControlBlock::note_synced`]).
        synced: u64,
    },
    /// Not known: a new, lost or zeroed control block, or one from a version that did not
    /// record the boot.
    Unknown,
}

impl ControlBlock {
    /// Opens (creating if needed) the control file at `path`, holding the partition's
    /// open lock until [`Self::end_open`] (or the handle's drop): it serialises opens, so
    /// the "am I alone" check, the switch to a shared lock and the caller's recovery cannot
    /// interleave with another opener's.
    ///
    /// # Errors
    /// I/O errors creating, sizing, locking or mapping the file.
    pub fn open(path: &Path) -> Result<Opened> {
        let born = Born::now();
        let (file, map) = map_shared_file(path, CONTROL_BYTES)?;
        let lock_err = |e| Error::io("lock", path, e);
        ofd::set(&file, OPEN_BYTE, 1, Lock::Exclusive).map_err(lock_err)?;
        // From here on the drop of `block` releases the locks (also on an error return).
        let block = ControlBlock { map, file, path: path.to_owned(), born };
        let alone = ofd::try_set(&block.file, LIVE_BYTE, 1, Lock::Exclusive).map_err(lock_err)?;
        let mut left = Left { head: None, since: Since::Unknown };
        if alone {
            if block.magic() == *MAGIC {
                let since = match block.boot() {
                    [0, 0] => Since::Unknown,
                    last if boot::id() == Some(last) => Since::SameBoot,
                    _ => Since::Restart { synced: block.synced_offset() },
                };
                left = Left { head: Some(block.head_unlocked()), since };
            }
            block.initialise()?;
        } else if block.magic() != *MAGIC {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                position: 0,
                offset: 0,
                reason: "control block in use by another process but not initialised".into(),
            });
        }
        // Downgrade (or take) the shared lock that marks this handle as alive; the open
        // lock keeps other openers out meanwhile.
        ofd::set(&block.file, LIVE_BYTE, 1, Lock::Shared).map_err(lock_err)?;
        Ok(if alone { Opened::Alone(block, left) } else { Opened::Shared(block) })
    }

    /// Releases the open lock taken by [`Self::open`]: the caller's recovery is done.
    pub fn end_open(&self) {
        let _ = ofd::set(&self.file, OPEN_BYTE, 1, Lock::Unlock);
    }

    /// Takes the open lock, waiting for it, to check [`Self::try_exclusive`] and trim
    /// without an opener interleaving. Released by [`Self::release`]. False (and nothing
    /// taken) in a forked child.
    ///
    /// # Errors
    /// Failures of the lock call.
    pub fn lock_open(&self) -> Result<bool> {
        if self.born.is_inherited() {
            return Ok(false);
        }
        ofd::set(&self.file, OPEN_BYTE, 1, Lock::Exclusive).map_err(|e| Error::io("lock", &self.path, e))?;
        Ok(true)
    }

    /// As [`Self::lock_open`], without waiting: false if another handle holds the open lock.
    ///
    /// # Errors
    /// As [`Self::lock_open`].
    pub fn try_lock_open(&self) -> Result<bool> {
        if self.born.is_inherited() {
            return Ok(false);
        }
        ofd::try_set(&self.file, OPEN_BYTE, 1, Lock::Exclusive).map_err(|e| Error::io("lock", &self.path, e))
    }

    /// True in a process forked after this handle was opened: it must not be used, and its
    /// close and drop must touch nothing (see [`fork`]).
    pub fn is_inherited(&self) -> bool {
        self.born.is_inherited()
    }

    /// Gives up every lock of this handle on the file (alive and open): the handle must
    /// not be used afterwards. Done explicitly, not by closing the descriptor, so that a
    /// copy of it inherited by a forked child does not keep the locks held.
    pub fn release(&self) {
        if !self.born.is_inherited() {
            let _ = ofd::set(&self.file, 0, 0, Lock::Unlock);
        }
    }

    fn magic(&self) -> [u8; 8] {
        let mut m = [0u8; 8];
        // SAFETY: the first 8 bytes are inside the mapping (invariant 1); a concurrent
        // writer can only exist during initialisation, which needs the open lock we hold,
        // so these bytes are stable.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr(), m.as_mut_ptr(), 8) };
        m
    }

    fn initialise(&self) -> Result<()> {
        // SAFETY: we hold the exclusive liveness lock (invariant 2), so no other handle maps
        // this file right now and no thread of ours has a guard on it: nobody can be inside the
        // mutex. The mutex lies inside the mapping (invariant 1, checked by the const
        // assertion above) and is suitably aligned (page-aligned base + 64).
        unsafe {
            let mutex = self.mutex();
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr), "pthread_mutexattr_init")?;
            check(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                "pthread_mutexattr_setpshared",
            )?;
            check(
                libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                "pthread_mutexattr_setrobust",
            )?;
            std::ptr::write_bytes(mutex.cast::<u8>(), 0, HEAD_AT - MUTEX_AT);
            check(libc::pthread_mutex_init(mutex, &attr), "pthread_mutex_init")?;
            libc::pthread_mutexattr_destroy(&mut attr);
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), self.map.as_mut_ptr(), MAGIC.len());
        }
        // An odd sequence left by a writer that died mid-publish would stall readers.
        self.word(0).store(0, Ordering::Relaxed);
        Ok(())
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // The pointer stays inside the mapping (invariant 1); dereferencing is the caller's
        // business.
        self.map.as_mut_ptr().wrapping_add(MUTEX_AT).cast()
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < HEAD_FIELDS);
        // SAFETY: HEAD_AT + 8 * i + 8 <= CONTROL_BYTES, the mapping lives as long as
        // `self` (invariant 1), the address is 8-aligned (page-aligned base), and the bytes
        // are only ever accessed atomically by every process (invariant 3).
        unsafe { &*self.map.as_ptr().add(HEAD_AT + 8 * i).cast::<AtomicU64>() }
    }

    fn deleted_word(&self) -> &AtomicU64 {
        // SAFETY: DELETED_AT + 8 <= CONTROL_BYTES inside the live mapping (invariant 1),
        // 8-aligned (page-aligned base), and only ever accessed atomically (invariant 4).
        unsafe { &*self.map.as_ptr().add(DELETED_AT).cast::<AtomicU64>() }
    }

    /// True once the partition's topic was deleted (by any process).
    pub fn is_deleted(&self) -> bool {
        self.deleted_word().load(Ordering::Acquire) != 0
    }

    fn boot_words(&self) -> [&AtomicU64; 2] {
        // SAFETY: BOOT_AT + 16 <= CONTROL_BYTES inside the live mapping (invariant 1),
        // 8-aligned (page-aligned base), and only ever accessed atomically (invariant 5).
        let word = |at: usize| unsafe { &*self.map.as_ptr().add(BOOT_AT + at).cast::<AtomicU64>() };
        [word(0), word(8)]
    }

    fn boot(&self) -> [u64; 2] {
        self.boot_words().map(|w| w.load(Ordering::Relaxed))
    }

    fn synced_word(&self) -> &AtomicU64 {
        // SAFETY: SYNCED_AT + 8 <= CONTROL_BYTES inside the live mapping (invariant 1),
        // 8-aligned (page-aligned base), and only ever accessed atomically (invariant 5).
        unsafe { &*self.map.as_ptr().add(SYNCED_AT).cast::<AtomicU64>() }
    }

    /// The offset below which the partition's data is known to be on disk.
    pub fn synced_offset(&self) -> u64 {
        self.synced_word().load(Ordering::Acquire)
    }

    /// Records that every byte of the partition below `offset` is on disk: call only after
    /// the sync that made it so returned. The word itself reaches the disk whenever the
    /// kernel writes the page back, so after a power loss it may be older, never ahead.
    pub fn note_synced(&self, offset: u64) {
        self.synced_word().fetch_max(offset, Ordering::AcqRel);
    }

    /// Records, for the opener alone with the partition after its recovery succeeded, that
    /// the data is whole up to `synced` (what recovery read back from disk after a restart,
    /// else what was known before, cut to what recovery kept) in this boot of the machine:
    /// later openers in the same boot trust the page cache. Not written before recovery
    /// succeeded, so an open that failed leaves the next one to look again.
    pub fn mark_recovered(&self, synced: u64) {
        self.synced_word().store(synced, Ordering::Release);
        let now = boot::id().unwrap_or_default();
        for (word, value) in self.boot_words().into_iter().zip(now) {
            word.store(value, Ordering::Release);
        }
    }

    /// Reads the head of a block nobody else has open, or that this thread holds the lock
    /// of; a torn seqlock left by a dead writer must not make this spin forever.
    fn head_unlocked(&self) -> Head {
        let mut w = [0u64; HEAD_FIELDS - 1];
        for (i, slot) in w.iter_mut().enumerate() {
            *slot = self.word(i + 1).load(Ordering::Relaxed);
        }
        Head::from_words(w)
    }

    /// Reads a consistent snapshot of the head without taking the lock, or `None` if a
    /// writer seems stuck in the middle of publishing (it may have died there: the caller
    /// then takes the lock, which repairs the head).
    pub fn try_head(&self, max_spins: u32) -> Option<Head> {
        for _ in 0..max_spins {
            let before = self.word(0).load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; HEAD_FIELDS - 1];
            for (i, slot) in w.iter_mut().enumerate() {
                *slot = self.word(i + 1).load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.word(0).load(Ordering::Relaxed) == before {
                return Some(Head::from_words(w));
            }
        }
        None
    }

    /// [`Head::next_offset`] alone, read as [`Self::try_head`] reads the whole head (an even
    /// sequence number unchanged around the read), with three loads instead of twelve.
    pub fn try_next_offset(&self, max_spins: u32) -> Option<u64> {
        // Word 0 is the sequence; the fields follow in `Head::to_words` order.
        const NEXT_OFFSET: usize = 1 + 3;
        for _ in 0..max_spins {
            let before = self.word(0).load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let next_offset = self.word(NEXT_OFFSET).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.word(0).load(Ordering::Relaxed) == before {
                return Some(next_offset);
            }
        }
        None
    }

    /// Tries to turn this handle's shared liveness lock into an exclusive one: true means
    /// no other handle (in any process, this one included) has the partition open, and
    /// none can open it while the caller holds the open lock. On failure the shared lock
    /// stays (OFD lock conversion is atomic). Always false in a forked child, whose lock
    /// is its parent's.
    ///
    /// # Errors
    /// Failures of the lock call other than the lock being busy.
    pub fn try_exclusive(&self) -> Result<bool> {
        if self.born.is_inherited() {
            return Ok(false);
        }
        ofd::try_set(&self.file, LIVE_BYTE, 1, Lock::Exclusive).map_err(|e| Error::io("lock", &self.path, e))
    }

    /// Takes the partition's append lock, blocking while another thread or process holds
    /// it.
    ///
    /// # Errors
    /// [`Error::Forked`] in a forked child (the mutex may be held by a thread that does not
    /// exist there), [`Error::Locked`] if the mutex is unrecoverable.
    pub fn lock(&self) -> Result<WriteGuard<'_>> {
        self.born.check()?;
        // SAFETY: the mutex was initialised before any handle could be shared (invariant 2)
        // and lies inside the live mapping (invariant 1).
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        self.locked(rc)
    }

    /// Takes the lock only if it is free right now.
    ///
    /// # Errors
    /// As [`Self::lock`].
    pub fn try_lock(&self) -> Result<Option<WriteGuard<'_>>> {
        self.born.check()?;
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.mutex()) };
        if rc == libc::EBUSY {
            return Ok(None);
        }
        self.locked(rc).map(Some)
    }

    fn locked(&self, rc: i32) -> Result<WriteGuard<'_>> {
        let owner_died = match rc {
            0 => false,
            libc::EOWNERDEAD => {
                // Until the caller's repair publishes a head, the head counts as torn: an odd
                // sequence, which readers do not trust and the next locker repairs (below).
                // A repair that fails leaves it odd. The mutex itself must be marked
                // consistent now: unlocked without it, it would be unusable for good.
                let seq = self.word(0);
                seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Release);
                // SAFETY: we own the mutex now (EOWNERDEAD means it was acquired); marking it
                // consistent is what the robust-mutex protocol requires before unlocking.
                unsafe { libc::pthread_mutex_consistent(self.mutex()) };
                true
            }
            other => {
                return Err(Error::Locked(format!(
                    "append lock in {} is unusable: {}",
                    self.path.display(),
                    std::io::Error::from_raw_os_error(other)
                )))
            }
        };
        // Only lock holders write the head, so under the lock an odd sequence means a writer
        // died between the two halves of `publish`, or a repair after a death failed: the
        // head may be torn, take it as it is and have the caller repair it (`owner_died`).
        // An even one is stable while we hold the lock.
        let torn = self.word(0).load(Ordering::Acquire) & 1 == 1;
        Ok(WriteGuard { block: self, owner_died: owner_died || torn })
    }
}

impl Drop for ControlBlock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether the control file at `path` carries the deleted mark, read with `pread` (the
/// page cache is the mapping's, so this sees what mapped writers stored). A missing or
/// short file has no mark.
///
/// # Errors
/// I/O errors other than the file missing.
pub fn read_deleted_mark(path: &Path) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut word = [0u8; 8];
    match file.read_exact_at(&mut word, DELETED_AT as u64) {
        Ok(()) => Ok(u64::from_ne_bytes(word) != 0),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Opens (creating if needed) `path` as a file of exactly `len` bytes and maps it shared:
/// the shape of every small shared-memory file here (control blocks, doorbells).
pub(crate) fn map_shared_file(path: &Path, len: usize) -> Result<(File, MmapRaw)> {
    let io = |op, e| Error::io(op, path, e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io("open", e))?;
    if file.metadata().map_err(|e| io("stat", e))?.len() != len as u64 {
        file.set_len(len as u64).map_err(|e| io("resize", e))?;
    }
    let map = MmapOptions::new().len(len).map_raw(&file).map_err(|e| io("mmap", e))?;
    Ok((file, map))
}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Locked(format!("{what}: {}", std::io::Error::from_raw_os_error(rc))))
    }
}

/// Proof that this thread holds a partition's append lock. Dropping it unlocks.
///
/// Two words: it is moved through every layer of an append, and an 88-byte copy of the
/// head in it made each move a memory copy (measured at ~10 ns of a ~120 ns append).
pub struct WriteGuard<'a> {
    block: &'a ControlBlock,
    owner_died: bool,
}

impl WriteGuard<'_> {
    /// The head as of taking the lock, plus this guard's own publications: only lock
    /// holders write it, so under the lock the shared words hold exactly that (torn, if
    /// the last owner died mid-publish: see [`Self::owner_died`]).
    pub fn head(&self) -> Head {
        self.block.head_unlocked()
    }

    /// True when the previous owner died holding the lock: the bytes past the committed
    /// position may hold a partial batch and must not be trusted.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Makes `head` visible to every reader in every process. Everything written to the
    /// segment before this call is visible to a reader that sees the new head.
    pub fn publish(&mut self, head: Head) {
        let seq = self.block.word(0);
        // Odd while writing. `| 1` keeps the parity right when a dead writer left it odd.
        let writing = seq.load(Ordering::Relaxed) | 1;
        seq.store(writing, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, w) in head.to_words().into_iter().enumerate() {
            self.block.word(i + 1).store(w, Ordering::Relaxed);
        }
        seq.store(writing.wrapping_add(1), Ordering::Release);
    }
}

impl WriteGuard<'_> {
    /// Marks the partition deleted for every process: their next append (which checks the
    /// mark after taking this lock) fails instead of writing.
    pub fn mark_deleted(&mut self) {
        self.block.deleted_word().store(1, Ordering::Release);
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while this thread holds the mutex.
        unsafe { libc::pthread_mutex_unlock(self.block.mutex()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> ControlBlock {
        let block = match ControlBlock::open(path).unwrap() {
            Opened::Alone(b, _) | Opened::Shared(b) => b,
        };
        block.end_open();
        block
    }

    #[test]
    fn first_opener_is_alone_second_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let a = ControlBlock::open(&path).unwrap();
        assert!(matches!(a, Opened::Alone(_, Left { head: None, since: Since::Unknown })));
        let Opened::Alone(a, _) = a else { unreachable!() };
        a.end_open();
        let b = ControlBlock::open(&path).unwrap();
        assert!(matches!(b, Opened::Shared(_)));
        drop(b);
        assert!(a.try_lock_open().unwrap() && a.try_exclusive().unwrap(), "b released its locks on drop");
    }

    #[test]
    fn an_opener_alone_after_a_restart_is_told_how_far_the_data_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let reopen = || match ControlBlock::open(&path).unwrap() {
            Opened::Alone(block, left) => (block, left),
            Opened::Shared(_) => panic!("alone"),
        };
        let (block, left) = reopen();
        assert_eq!(left.since, Since::Unknown, "a new block vouches for nothing");
        block.note_synced(9);
        block.note_synced(4);
        assert_eq!(block.synced_offset(), 9, "the synced offset only grows");
        drop(block);
        assert_eq!(reopen().1.since, Since::Unknown, "never recovered, so no boot recorded");
        let (block, _) = reopen();
        block.mark_recovered(7);
        drop(block);
        let (block, left) = reopen();
        let expected = if boot::id().is_some() { Since::SameBoot } else { Since::Unknown };
        assert_eq!(left.since, expected, "the page cache is whole");
        drop(block);
        // What a reboot looks like: another boot's id in the block.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &[0xab; 16], BOOT_AT as u64))
            .unwrap();
        assert_eq!(reopen().1.since, Since::Restart { synced: 7 });
    }

    #[test]
    fn an_opener_waits_for_the_open_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let Opened::Alone(a, _) = ControlBlock::open(&path).unwrap() else { panic!("alone") };
        let second = {
            let path = path.clone();
            std::thread::spawn(move || matches!(ControlBlock::open(&path).unwrap(), Opened::Shared(_)))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!second.is_finished(), "the second open waits while the first one recovers");
        a.end_open();
        assert!(second.join().unwrap());
    }

    #[test]
    fn an_inherited_block_is_refused_in_the_child_and_holds_no_lock_after_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let block = open(&path);
        let (mut fds, status) = ([0; 2], &mut 0);
        // SAFETY: a valid array of two descriptors for the pipe.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only calls into this module and `libc`, then leaves by `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let refused = matches!(block.lock(), Err(Error::Forked))
                && matches!(block.try_lock(), Err(Error::Forked))
                && matches!(block.try_exclusive(), Ok(false))
                && matches!(block.try_lock_open(), Ok(false));
            drop(block); // must release nothing: the parent still holds its locks
            let mut byte = [0u8];
            // SAFETY: reading one byte into a valid buffer; waits until the parent is done.
            unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) };
            // SAFETY: leaves the child without running the harness's exit handlers.
            unsafe { libc::_exit(i32::from(!refused)) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The child dropped its copy: our locks are intact, a new handle is not alone.
        assert!(matches!(ControlBlock::open(&path).unwrap(), Opened::Shared(_)));
        // The parent closes while the child still holds the inherited description: the
        // explicit release means a new opener is alone, not blocked or fooled by the child.
        drop(block);
        assert!(matches!(ControlBlock::open(&path).unwrap(), Opened::Alone(..)));
        // SAFETY: writing one byte from a valid buffer, then reaping our own child.
        unsafe {
            libc::write(fds[1], [1u8].as_ptr().cast(), 1);
            libc::waitpid(pid, status, 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(*status, 0, "the child saw every call refused");
    }

    #[test]
    fn publish_is_seen_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let a = open(&path);
        let b = open(&path);
        let head = Head { next_offset: 42, committed_pos: 4096, max_timestamp: -5, ..Head::default() };
        a.lock().unwrap().publish(head);
        assert_eq!(b.try_head(100), Some(head));
        assert_eq!(b.try_next_offset(100), Some(42));
        assert!(b.try_lock().unwrap().is_some());
    }

    #[test]
    fn the_next_offset_is_not_read_while_a_publish_is_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir.path().join("control"));
        a.lock().unwrap().publish(Head { next_offset: 7, ..Head::default() });
        a.word(0).fetch_add(1, Ordering::AcqRel); // a writer mid-publish (odd sequence)
        assert_eq!(a.try_next_offset(10), None);
        a.word(0).fetch_add(1, Ordering::AcqRel);
        assert_eq!(a.try_next_offset(10), Some(7));
    }

    #[test]
    fn deleted_mark_is_shared_and_survives_reinitialisation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let a = open(&path);
        let b = open(&path);
        assert!(!a.is_deleted() && !b.is_deleted());
        b.lock().unwrap().mark_deleted();
        assert!(a.is_deleted());
        drop((a, b));
        // The next opener is alone and re-initialises the lock, but the mark stays.
        let opened = ControlBlock::open(&path).unwrap();
        assert!(matches!(&opened, Opened::Alone(..)));
        let (Opened::Alone(c, _) | Opened::Shared(c)) = opened;
        c.end_open();
        assert!(open(&path).is_deleted());
    }

    #[test]
    fn lock_excludes_other_threads() {
        let dir = tempfile::tempdir().unwrap();
        let block = std::sync::Arc::new(open(&dir.path().join("control")));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let block = block.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let mut g = block.lock().unwrap();
                        let mut h = g.head();
                        h.next_offset += 1;
                        g.publish(h);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(block.try_head(100).unwrap().next_offset, 8000);
    }
}
