//! Producer identities and the transaction log of named producers.
//!
//! Every idempotent producer gets a producer id from the store-wide counter in
//! `<store>/producers/ids`. A *named* producer keeps its id across restarts: its current
//! `(id, epoch)` lives in `<store>/producers/<name>.identity`, a shared word that every
//! instance of the name maps, and every open bumps the epoch. An older instance sees the
//! word change before each batch it writes and stops with [`Error::ProducerFenced`]; the
//! partitions also refuse batches from an epoch older than one they have seen.
//!
//! A named producer's open transaction is recorded in its state log `<name>.txn` (files
//! `<name>.txn.lock`, `.journal`, `.snapshot`: see [`crate::statelog`], which owns their
//! bytes, CRCs and fsyncs) before it writes to a partition (Kafka's `AddPartitionsToTxn`).
//! Every record holds the whole state: `none`, or `ongoing` / `commit` (once the commit is
//! decided) followed by one `topic<TAB>partition` line per partition. Ending a transaction
//! writes a marker to each partition, then `none`. A new instance finishes what a crashed
//! one left: commit markers after a decided commit, abort markers otherwise.
//!
//! A transaction may have a time limit (a Kafka client's `transaction.timeout.ms`, served by
//! `tidelog serve --kafka`): its start (wall clock) and timeout follow `ongoing` / `commit`
//! on the first line, written with its first partition. Such a transaction outlives the
//! process that served it, as a Kafka transaction outlives its coordinator: the server's
//! next run takes the name up at the same epoch ([`Identity::resume`]) so the client can go
//! on, and the orphan check below leaves it alone until its time is up.
//!
//! Changes of a transaction happen under the state log's lock; a takeover takes the
//! registry's `flock` first, then that lock (never the other way round), so fencing and
//! the partition list cannot interleave with a new instance's takeover. A transaction
//! costs a few small writes to an open file, not a file created, renamed and deleted. The
//! first format, a plain-text `<name>.txn` file replaced atomically, is still read: the
//! next instance of the name (or an orphan check) finishes it and deletes the file.
//!
//! Every live instance also holds a shared `flock` on its `.identity` file. When nobody
//! does, the owner of a transaction file is dead, and any process may take over for it
//! ([`Identity::abort_if_orphaned`]) so a crashed producer that never reopens does not hold
//! its partitions' readers back forever.
//!
//! Both `flock`s are released explicitly (`LOCK_UN`), not by closing the file: a child
//! forked meanwhile shares the open file description, and closing only our descriptor
//! would leave the lock held until the child exits (an instance that looks alive forever,
//! a registry nobody can take). An identity inherited by a forked child releases nothing:
//! the lock is its parent's.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rustix::fs::{flock, FlockOperation};

use crate::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use crate::log::{now_ms, FsyncPolicy};
use crate::segment::write_atomically;
use crate::shm::fork::Born;
use crate::shm::word::SharedWord;
use crate::statelog::{Base, StateLog};
use crate::store::Store;
use crate::{Error, Result};

/// Directory of the registry inside a store.
pub use crate::paths::PRODUCERS_DIR;

/// Partitions of a transaction: (topic, partition).
pub type TxnPartitions = BTreeSet<(String, u32)>;

/// A named producer as the registry records it (see [`Identity::named`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedProducer {
    /// The name.
    pub name: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub epoch: i16,
    /// An instance of the name is open in some process.
    pub alive: bool,
    /// Its transaction file: whether the commit was decided, and the partitions.
    pub transaction: Option<(bool, TxnPartitions)>,
    /// The open transaction's time limit, if it has one (see [`TxnTimeout`]).
    pub timeout: Option<TxnTimeout>,
}

/// The time limit of a transaction that has one (those of Kafka clients served by
/// `tidelog serve --kafka`, whose `transaction.timeout.ms` ends them): recorded with the
/// transaction's first partition, so it outlives the process that served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnTimeout {
    /// When the transaction began (wall clock, milliseconds since the epoch).
    pub started_ms: u64,
    /// How long it may stay open.
    pub timeout_ms: u64,
}

impl TxnTimeout {
    /// The wall-clock time (milliseconds since the epoch) past which it is over.
    pub fn deadline_ms(&self) -> u64 {
        self.started_ms.saturating_add(self.timeout_ms)
    }
}

/// An idempotent producer's identity.
pub struct Identity {
    /// Producer id, unique in the store.
    pub producer_id: i64,
    /// Epoch: bumped by every open of a named producer.
    pub epoch: i16,
    name: Option<String>,
    /// The name's shared word, holding the current instance's `(id, epoch)`.
    current: Option<SharedWord>,
    /// The name's transaction state log.
    txn: Option<TxnLog>,
    born: Born,
}

/// The wall clock in milliseconds since the epoch (transactions' time limits).
fn wall_ms() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

/// Word of the `.identity` file holding the current instance's transaction timeout in
/// milliseconds (0: none); word 0 is its `(id, epoch)`.
const TIMEOUT_WORD: usize = 1;

fn pack(producer_id: i64, epoch: i16) -> u64 {
    ((producer_id as u64) << 16) | u64::from(epoch as u16)
}

fn unpack(word: u64) -> (i64, i16) {
    ((word >> 16) as i64, (word & 0xffff) as u16 as i16)
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "invalid producer name {name:?}: use 1-200 characters from [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

/// The registry's lock, held while it lives.
struct RegistryLock {
    file: File,
}

impl Drop for RegistryLock {
    fn drop(&mut self) {
        // Explicitly: see the module notes on fork. A registry lock is only ever dropped by
        // the thread that took it, so never in a child that inherited it.
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

impl RegistryLock {
    fn take(dir: &Path) -> Result<Self> {
        // Durably: a producer whose identity vanished with the directory would come back
        // with the same id at sequence 0, and its next batch would pass for a duplicate.
        crate::fs::create_dir_all_durably(dir)?;
        let path = dir.join(crate::paths::PRODUCERS_LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| Error::io("flock", &path, e.into()))?;
        Ok(RegistryLock { file })
    }
}

/// Takes the next producer id from the store-wide counter (registry lock held).
fn allocate_id(dir: &Path, durable: bool) -> Result<i64> {
    let path = dir.join(crate::paths::PRODUCER_IDS_FILE);
    let next = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<i64>().map_err(|_| Error::Corrupt {
            path: path.clone(),
            position: 0,
            offset: 0,
            reason: format!("producer id counter holds {text:?}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Error::Corrupt {
                path,
                position: 0,
                offset: 0,
                reason: "producer id counter is not UTF-8 text".into(),
            })
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    write_atomically(&path, format!("{}\n", next + 1).as_bytes(), durable)?;
    Ok(next)
}

/// A named producer's open transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PendingTxn {
    commit: bool,
    partitions: TxnPartitions,
    timeout: Option<TxnTimeout>,
}

impl PendingTxn {
    /// Parses the text of a state record or of a first-format file; `None` for `none`.
    fn decode(bytes: &[u8], path: &Path) -> Result<Option<Self>> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Corrupt {
            path: path.to_owned(),
            position: 0,
            offset: 0,
            reason: "transaction state is not UTF-8 text".into(),
        })?;
        let mut lines = text.lines();
        let first = lines.next();
        let corrupt = || Error::Corrupt {
            path: path.to_owned(),
            position: 0,
            offset: 0,
            reason: format!("transaction state begins with {first:?}, not none, ongoing or commit"),
        };
        // `ongoing` / `commit`, then `<TAB>started_ms<TAB>timeout_ms` for a transaction
        // with a time limit.
        let mut fields = first.unwrap_or_default().split('\t');
        let commit = match fields.next() {
            Some("none") if first == Some("none") => return Ok(None),
            Some("commit") => true,
            Some("ongoing") => false,
            _ => return Err(corrupt()),
        };
        let timeout = match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => None,
            (Some(started), Some(limit), None) => match (started.parse(), limit.parse()) {
                (Ok(started_ms), Ok(timeout_ms)) => Some(TxnTimeout { started_ms, timeout_ms }),
                _ => return Err(corrupt()),
            },
            _ => return Err(corrupt()),
        };
        let mut partitions = TxnPartitions::new();
        for line in lines {
            let parsed = line.split_once('\t').and_then(|(t, p)| Some((t.to_owned(), p.parse().ok()?)));
            let Some(partition) = parsed else {
                return Err(Error::Corrupt {
                    path: path.to_owned(),
                    position: 0,
                    offset: 0,
                    reason: format!("transaction state line {line:?} is not topic<TAB>partition"),
                });
            };
            partitions.insert(partition);
        }
        Ok(Some(PendingTxn { commit, partitions, timeout }))
    }

    fn encode(txn: Option<&Self>) -> Vec<u8> {
        let Some(txn) = txn else { return b"none\n".to_vec() };
        let mut text = String::from(if txn.commit { "commit" } else { "ongoing" });
        if let Some(t) = txn.timeout {
            text.push_str(&format!("\t{}\t{}", t.started_ms, t.timeout_ms));
        }
        text.push('\n');
        for (topic, p) in &txn.partitions {
            text.push_str(&format!("{topic}\t{p}\n"));
        }
        text.into_bytes()
    }

    /// The first format's `<name>.txn` file, if there is one.
    fn read_legacy(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => Self::decode(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }
}

/// Journal bytes past which ending a transaction writes a snapshot (of no transaction)
/// instead of appending, so the log stays small however many transactions ran.
const TXN_JOURNAL_LIMIT: u64 = 64 << 10;

/// A name's transaction state log and this handle's copy of its state.
struct TxnLog {
    log: StateLog,
    state: Mutex<Option<PendingTxn>>,
}

impl TxnLog {
    fn log_name(name: &str) -> String {
        format!("{name}{}", crate::paths::TXN_SUFFIX)
    }

    /// Opens the log; decisions are synced before they count unless the store never syncs.
    fn open(dir: &Path, name: &str, durable: bool) -> Result<Self> {
        let policy = if durable { FsyncPolicy::Always } else { FsyncPolicy::Never };
        Ok(TxnLog { log: StateLog::open(dir, &Self::log_name(name), policy)?, state: Mutex::new(None) })
    }

    /// The state as of the log (the lock held: see [`StateLog::lock`]).
    fn current(&self, base: Base, records: &[Vec<u8>]) -> Result<Option<PendingTxn>> {
        let path = &self.log.paths().journal;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = records.last() {
            *state = PendingTxn::decode(last, path)?;
        } else {
            match base {
                Base::Unchanged => {}
                Base::Empty => *state = None,
                Base::Snapshot(body) => *state = PendingTxn::decode(&body, &self.log.paths().snapshot)?,
            }
        }
        Ok(state.clone())
    }

    /// Records `txn` as the state (the lock held).
    fn write(&self, txn: Option<PendingTxn>) -> Result<()> {
        let bytes = PendingTxn::encode(txn.as_ref());
        if txn.is_none() && self.log.journal_bytes() > TXN_JOURNAL_LIMIT {
            self.log.replace(&bytes)?;
        } else {
            self.log.append(&bytes)?;
        }
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = txn;
        Ok(())
    }

    /// The state of `name`'s log read without its lock (for listings), or `None`.
    fn peek(dir: &Path, name: &str) -> Result<Option<PendingTxn>> {
        let log_name = Self::log_name(name);
        let Some(contents) = crate::statelog::read_contents(dir, &log_name)? else { return Ok(None) };
        let paths = crate::statelog::StatePaths::new(dir, &log_name)?;
        match (contents.records.last(), contents.snapshot) {
            (Some(last), _) => PendingTxn::decode(last, &paths.journal),
            (None, Some(body)) => PendingTxn::decode(&body, &paths.snapshot),
            (None, None) => Ok(None),
        }
    }
}

/// Writes `marker` for `(producer_id, epoch)` to every partition in `partitions`, those
/// of internal topics (names starting with `__`) last.
///
/// A partition's marker makes its part of the transaction visible, and the markers are
/// written one after the other, so a crash in between leaves some parts visible until the
/// transaction is finished. The internal topics hold the store's own record of the
/// transaction's inputs (the consumer group's offsets in `__consumer_offsets`): marked
/// last, a committed offset is never visible while the outputs it vouches for are not, as
/// Kafka's coordinator applies a transaction's offsets only at its marker. The reverse
/// state (outputs visible, offsets still pending) makes an exactly-once consumer of the
/// group wait for the transaction to be finished rather than read on.
fn write_markers(
    store: &Store,
    partitions: &TxnPartitions,
    producer_id: i64,
    epoch: i16,
    marker: Marker,
) -> Result<()> {
    let value = marker.value();
    let record = Record { timestamp: now_ms(), key: None, value: &value, headers: &[], tombstone: false };
    let meta = BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id,
        producer_epoch: epoch,
        base_sequence: -1,
    };
    let (internal, outputs): (Vec<_>, Vec<_>) =
        partitions.iter().partition(|(t, _)| crate::paths::is_internal(t));
    for (topic, p) in outputs.into_iter().chain(internal) {
        let topic = match store.topic(topic) {
            Ok(t) => t,
            // Deleted since: nothing left to mark.
            Err(Error::TopicNotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        match topic.partition(*p).and_then(|log| log.append(&[record], meta)) {
            Ok(_) | Err(Error::TopicNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Identity {
    /// Claims an identity in `store`: a fresh producer id for an unnamed producer; for a
    /// named one, its id with the next epoch, fencing every older instance and finishing
    /// the transaction a previous instance left open (committing it if the commit had been
    /// decided, aborting it otherwise).
    ///
    /// # Errors
    /// A bad name, I/O errors, or failures writing the markers.
    pub fn claim(store: &Store, name: Option<&str>) -> Result<Self> {
        Self::claim_with(store, name, None)
    }

    /// [`Self::claim`] for a Kafka `transactional.id` served by `tidelog serve --kafka`:
    /// the instance's `transaction.timeout.ms` is kept with its epoch (word 1 of the
    /// `.identity` file), so the server's next run knows it when it takes the instance up
    /// ([`Self::resume`], [`Self::timeout_ms`]).
    ///
    /// # Errors
    /// As [`Self::claim`].
    pub fn claim_with_timeout(store: &Store, name: &str, timeout_ms: u64) -> Result<Self> {
        Self::claim_with(store, Some(name), Some(timeout_ms))
    }

    fn claim_with(store: &Store, name: Option<&str>, timeout_ms: Option<u64>) -> Result<Self> {
        store.check_open()?;
        let born = Born::now();
        let dir = crate::paths::producers_dir(store.dir());
        let durable = store.config().fsync != FsyncPolicy::Never;
        if let Some(name) = name {
            validate_name(name)?;
        }
        let _lock = RegistryLock::take(&dir)?;
        let Some(name) = name else {
            let producer_id = allocate_id(&dir, durable)?;
            return Ok(Identity { producer_id, epoch: 0, name: None, current: None, txn: None, born });
        };
        let word_path = dir.join(format!("{name}{}", crate::paths::IDENTITY_SUFFIX));
        let word = SharedWord::open(&word_path)?;
        // Held while this instance lives: how `abort_if_orphaned` tells a live owner.
        word.lock(&word_path, false)?;
        let txn = TxnLog::open(&dir, name, durable)?;
        let (producer_id, epoch) = take_over(store, &dir, name, &word, &txn, durable, timeout_ms)?;
        Ok(Identity {
            producer_id,
            epoch,
            name: Some(name.to_owned()),
            current: Some(word),
            txn: Some(txn),
            born,
        })
    }

    /// Finishes the transaction a named producer left open if no instance of the name is
    /// alive (in any process): as its next instance would on open, it fences the old epoch
    /// and writes the markers (commit after a decided commit, abort otherwise). Returns
    /// whether it did. Readers held back by an orphaned transaction call this; a live
    /// owner's transaction is never touched, nor, until its time is up, an undecided one
    /// with a time limit: that of a Kafka client whose server stopped, which the client
    /// may still commit through the server's next run (as through another coordinator).
    ///
    /// # Errors
    /// A bad name, I/O errors, or failures writing the markers.
    pub fn abort_if_orphaned(store: &Store, name: &str) -> Result<bool> {
        store.check_open()?;
        validate_name(name)?;
        let dir = crate::paths::producers_dir(store.dir());
        let durable = store.config().fsync != FsyncPolicy::Never;
        let _lock = RegistryLock::take(&dir)?;
        match pending_transaction(&dir, name)? {
            None => return Ok(false),
            Some(PendingTxn { commit: false, timeout: Some(t), .. }) if wall_ms() < t.deadline_ms() => {
                return Ok(false)
            }
            Some(_) => {}
        }
        let word_path = dir.join(format!("{name}{}", crate::paths::IDENTITY_SUFFIX));
        let word = SharedWord::open(&word_path)?;
        if !word.lock(&word_path, true)? {
            return Ok(false);
        }
        let taken = TxnLog::open(&dir, name, durable)
            .and_then(|txn| take_over(store, &dir, name, &word, &txn, durable, None));
        word.unlock();
        taken.map(|_| true)
    }

    /// Takes up the named producer `name` again at its current `(producer_id, epoch)`, with
    /// the transaction it has open, if that is still its current instance and no process
    /// holds it: a Kafka protocol server's next run serving the transactional ids of the
    /// run before (the clients go on with the ids and epochs they were given, as with
    /// another coordinator). Nothing is fenced or finished. `None` when `(producer_id,
    /// epoch)` is not the name's current instance or an instance of it is alive.
    ///
    /// # Errors
    /// A bad name, I/O errors.
    pub fn resume(store: &Store, name: &str, producer_id: i64, epoch: i16) -> Result<Option<Self>> {
        store.check_open()?;
        let born = Born::now();
        validate_name(name)?;
        let dir = crate::paths::producers_dir(store.dir());
        let durable = store.config().fsync != FsyncPolicy::Never;
        let _lock = RegistryLock::take(&dir)?;
        let word_path = dir.join(format!("{name}{}", crate::paths::IDENTITY_SUFFIX));
        if !word_path.is_file() {
            return Ok(None);
        }
        let word = SharedWord::open(&word_path)?;
        if word.load() != pack(producer_id, epoch) {
            return Ok(None);
        }
        // Free only if no instance holds its shared lock; turned into one of those (under
        // the registry lock, so no takeover sees it free in between).
        if !word.lock(&word_path, true)? {
            return Ok(None);
        }
        word.lock(&word_path, false)?;
        let txn = match TxnLog::open(&dir, name, durable) {
            Ok(txn) => txn,
            Err(e) => {
                word.unlock();
                return Err(e);
            }
        };
        Ok(Some(Identity {
            producer_id,
            epoch,
            name: Some(name.to_owned()),
            current: Some(word),
            txn: Some(txn),
            born,
        }))
    }

    /// Every named producer of the store, by name, as the registry records it.
    ///
    /// # Errors
    /// I/O errors reading the registry.
    pub fn named(store: &Store) -> Result<Vec<NamedProducer>> {
        store.check_open()?;
        let dir = crate::paths::producers_dir(store.dir());
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let _lock = RegistryLock::take(&dir)?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(crate::paths::IDENTITY_SUFFIX))
                .map(String::from)
            else {
                continue;
            };
            let word_path = entry.path();
            let word = SharedWord::open(&word_path)?;
            if word.load() == 0 {
                continue;
            }
            let (producer_id, epoch) = unpack(word.load());
            // An exclusive lock is only free when no live instance holds its shared one.
            let alive = !word.lock(&word_path, true)?;
            word.unlock();
            let pending = pending_transaction(&dir, &name)?;
            let timeout = pending.as_ref().and_then(|t| t.timeout);
            let transaction = pending.map(|t| (t.commit, t.partitions));
            out.push(NamedProducer { name, producer_id, epoch, alive, transaction, timeout });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names of the producers with an open or undecided transaction.
    ///
    /// # Errors
    /// I/O errors listing the registry; damaged transaction state.
    pub fn with_open_transactions(store: &Store) -> Result<Vec<String>> {
        store.check_open()?;
        let dir = crate::paths::producers_dir(store.dir());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut names = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            // The first format's file, or a state log's lock file (every log has one).
            if let Some(name) = file_name
                .strip_suffix(crate::paths::TXN_SUFFIX)
                .or_else(|| file_name.strip_suffix(crate::paths::TXN_LOCK_SUFFIX))
            {
                if !names.contains(name) && pending_transaction(&dir, name)?.is_some() {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

/// `name`'s open transaction, from its first-format file or its state log, read without
/// the state log's lock (registry lock held).
fn pending_transaction(dir: &Path, name: &str) -> Result<Option<PendingTxn>> {
    match PendingTxn::read_legacy(&dir.join(format!("{name}{}", crate::paths::TXN_SUFFIX)))? {
        Some(txn) => Ok(Some(txn)),
        None => TxnLog::peek(dir, name),
    }
}

/// Gives `name` its next `(id, epoch)` in `word`, with `timeout_ms` (the new instance's
/// transaction timeout, if it has one), and finishes the transaction a previous instance
/// left (registry lock held; it takes `txn`'s lock).
fn take_over(
    store: &Store,
    dir: &Path,
    name: &str,
    word: &SharedWord,
    txn: &TxnLog,
    durable: bool,
    timeout_ms: Option<u64>,
) -> Result<(i64, i16)> {
    let word_path = dir.join(format!("{name}{}", crate::paths::IDENTITY_SUFFIX));
    let previous = match word.load() {
        0 => None,
        w => Some(unpack(w)),
    };
    let (producer_id, epoch) = match previous {
        None => (allocate_id(dir, durable)?, 0),
        // Epochs are exhausted: continue under a new id, as Kafka does.
        Some((_, i16::MAX)) => (allocate_id(dir, durable)?, 0),
        Some((id, epoch)) => (id, epoch + 1),
    };
    // Before the epoch: whoever sees the new epoch sees its timeout (0: none).
    word.store_at(TIMEOUT_WORD, timeout_ms.unwrap_or(0));
    word.store(pack(producer_id, epoch));
    if durable {
        word.sync(&word_path)?;
    }
    // After the epoch changed: an older instance's next change of the state sees it fenced.
    let (_guard, changes) = txn.log.locked()?;
    let logged = txn.current(changes.base, &changes.records)?;
    let legacy_path = dir.join(format!("{name}{}", crate::paths::TXN_SUFFIX));
    let legacy = PendingTxn::read_legacy(&legacy_path)?;
    if let Some((old_id, old_epoch)) = previous {
        // The markers close the previous id's transaction at an epoch no older than its
        // own, so the partitions accept them and fence the old instance.
        let marker_epoch = if old_id == producer_id { epoch } else { old_epoch };
        for pending in legacy.iter().chain(logged.iter()) {
            let marker = if pending.commit { Marker::Commit } else { Marker::Abort };
            write_markers(store, &pending.partitions, old_id, marker_epoch, marker)?;
        }
    }
    if logged.is_some() {
        txn.write(None)?;
    }
    match std::fs::remove_file(&legacy_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("delete", &legacy_path, e)),
        _ => Ok((producer_id, epoch)),
    }
}

impl Identity {
    /// The producer's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The transaction timeout this instance was claimed with
    /// ([`Self::claim_with_timeout`]), if it is still the name's current instance and had one.
    pub fn timeout_ms(&self) -> Option<u64> {
        let word = self.current.as_ref()?;
        if word.load() != pack(self.producer_id, self.epoch) {
            return None;
        }
        Some(word.load_at(TIMEOUT_WORD)).filter(|&ms| ms > 0)
    }

    /// Fails if a newer instance of this producer's name has opened.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`].
    pub fn check_current(&self) -> Result<()> {
        match &self.current {
            Some(word) if word.load() != pack(self.producer_id, self.epoch) => {
                let (id, epoch) = unpack(word.load());
                Err(Error::ProducerFenced(format!(
                    "producer {:?} (id {}, epoch {}) was replaced by a newer instance (id {id}, epoch {epoch})",
                    self.name.as_deref().unwrap_or(""),
                    self.producer_id,
                    self.epoch
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records that the open transaction writes to `partitions` (before it does).
    ///
    /// # Errors
    /// [`Error::ProducerFenced`], [`Error::InvalidConfig`] for an unnamed producer, I/O.
    pub fn add_to_transaction(&self, partitions: &TxnPartitions) -> Result<()> {
        self.add_to_transaction_within(partitions, None)
    }

    /// [`Self::add_to_transaction`]; a transaction it begins may stay open `timeout_ms`
    /// (recorded with it, from now: see [`TxnTimeout`]).
    ///
    /// # Errors
    /// As [`Self::add_to_transaction`].
    pub fn add_to_transaction_within(
        &self,
        partitions: &TxnPartitions,
        timeout_ms: Option<u64>,
    ) -> Result<()> {
        let log = self.txn.as_ref().ok_or_else(|| {
            Error::InvalidConfig("transactions need a named producer (store.producer(name=...))".into())
        })?;
        let (_guard, changes) = log.log.locked()?;
        self.check_current()?;
        let current = log.current(changes.base, &changes.records)?;
        let mut txn = current.clone().unwrap_or_else(|| PendingTxn {
            commit: false,
            partitions: BTreeSet::new(),
            timeout: timeout_ms.map(|timeout_ms| TxnTimeout { started_ms: wall_ms(), timeout_ms }),
        });
        txn.partitions.extend(partitions.iter().cloned());
        if current.as_ref() != Some(&txn) {
            log.write(Some(txn))?;
        }
        Ok(())
    }

    /// The open transaction: whether its commit was decided, its partitions and its time
    /// limit (if it has one); `None` when none is open.
    ///
    /// # Errors
    /// I/O errors, damaged transaction state.
    pub fn open_transaction(&self) -> Result<Option<(bool, TxnPartitions, Option<TxnTimeout>)>> {
        let Some(log) = &self.txn else { return Ok(None) };
        let (_guard, changes) = log.log.locked()?;
        Ok(log.current(changes.base, &changes.records)?.map(|t| (t.commit, t.partitions, t.timeout)))
    }

    /// Ends the open transaction: decides it (durably, for a commit), writes a marker to
    /// every partition it touched, and forgets it.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] if a newer instance took over (it finishes the
    /// transaction instead), I/O errors.
    pub fn end_transaction(&self, store: &Store, commit: bool) -> Result<()> {
        let Some(log) = &self.txn else { return Ok(()) };
        let (_guard, changes) = log.log.locked()?;
        self.check_current()?;
        let Some(mut txn) = log.current(changes.base, &changes.records)? else { return Ok(()) };
        if commit {
            txn.commit = true;
            log.write(Some(txn.clone()))?;
        }
        let marker = if commit { Marker::Commit } else { Marker::Abort };
        write_markers(store, &txn.partitions, self.producer_id, self.epoch, marker)?;
        log.write(None)
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        // The shared lock marks this instance alive; see the module notes on fork.
        if let Some(word) = &self.current {
            if !self.born.is_inherited() {
                word.unlock();
            }
        }
    }
}
