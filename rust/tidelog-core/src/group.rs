//! A consumer group's membership state: the bytes, the lock, the durability and the shared
//! generation word the Python layer's group policy (`tidelog.groups`: who is alive, who owns
//! which partition, when to rebalance) builds on.
//!
//! Files, in `<store>/groups/<topic>/`, named after the group ([`file_name`]):
//!
//! - `<name>.lock`, `<name>.snapshot`, `<name>.journal`: a [`crate::statelog`] whose every
//!   record is the whole membership state of one generation ([`encode_record`]); the newest
//!   record is the state. Once the journal passes [`COMPACT_BYTES`] the next change replaces
//!   it with a snapshot (the same record) instead of appending.
//! - `<name>.live`: [`LIVE_WORDS`] shared words mapped by every member: word 0 the group's
//!   generation (so a member notices a rebalance with one load, no system call), word 1 a
//!   magic, then one lease slot per word (a heartbeat is one compare-and-swap there).
//!
//! Invariants:
//!
//! 1. Generations never decrease. Each [`Group::write`] gives the next generation, above
//!    both the stored state's and the live word's; records of one journal grow strictly
//!    (a record that does not is damage). The live word is derived data: it is raised to the
//!    stored generation when it lags (a lost page, a recreated file) and, being at least the
//!    stored generation otherwise, only ever makes the next generation higher.
//! 2. The live word is written only by the lock holder, after the record holding its
//!    generation is as durable as the store's fsync policy says.
//! 3. A lease slot is claimed only by the lock holder, and a claim gives it a new
//!    incarnation: a member renews or releases only the slot *and* incarnation it was given,
//!    with one compare-and-swap, so it never touches a lease that went to another member.
//! 4. Damage is reported, never reset: a record or snapshot that fails its CRC, does not
//!    decode, or whose generation does not fit, a live file with a foreign magic or a
//!    generation above `i64::MAX`, and a first-format state file that does not parse are
//!    [`Error::CorruptState`] naming the file.
//!
//! Groups written before this module (`<name>.json` with the state as JSON, `<name>.gen` an
//! 8-byte generation, `<name>.members/` one lease file per member) are converted on first
//! use: the generation is kept (the higher of the two files'), the members are dropped (they
//! are ephemeral: a live member finds itself gone and joins again at its next heartbeat),
//! the new state is written durably, and the old files are removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::log::FsyncPolicy;
use crate::shm::word::SharedWord;
use crate::statelog::{self, Base, StateLog, StatePaths};
use crate::store::Topic;
use crate::{Error, Result};

/// The directory under a store that holds every topic's group state.
pub use crate::paths::GROUPS_DIR;
/// Journal size past which the next change is written as a snapshot.
pub const COMPACT_BYTES: u64 = 64 << 10;
/// Words in a `<name>.live` file (16 KiB).
pub const LIVE_WORDS: usize = 2048;
const GENERATION_WORD: usize = 0;
const MAGIC_WORD: usize = 1;
const FIRST_SLOT_WORD: usize = 2;
/// Lease slots in a live file: the most members a group can have at once.
pub const LEASE_SLOTS: u32 = (LIVE_WORDS - FIRST_SLOT_WORD) as u32;
const LIVE_MAGIC: u64 = u64::from_le_bytes(*b"TLGLIVE1");
/// A lease slot word: incarnation in the top bits, expiry (ms since the epoch) below; an
/// expiry of 0 is a free slot.
const EXPIRY_BITS: u32 = 44;
/// Latest lease expiry a slot can hold (ms since the epoch: the year 2527).
pub const MAX_EXPIRY_MS: u64 = (1 << EXPIRY_BITS) - 1;
const INCARNATION_MASK: u64 = (1 << (64 - EXPIRY_BITS)) - 1;
/// Largest generation: commits carry it as an `i64`.
const MAX_GENERATION: u64 = i64::MAX as u64;
/// Bytes of a record before the body.
pub const RECORD_HEADER_LEN: usize = 8;

/// The name a group's files are given: the group itself when it is plain (`[A-Za-z0-9._-]`,
/// not starting with `.`), else `~` and its UTF-8 bytes in hex, which no plain name holds.
pub fn file_name(group: &str) -> String {
    let plain = !group.is_empty()
        && !group.starts_with('.')
        && group.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        group.to_owned()
    } else {
        let mut name = String::with_capacity(1 + 2 * group.len());
        name.push('~');
        for b in group.bytes() {
            name.push_str(&format!("{b:02x}"));
        }
        name
    }
}

/// The group a file name (without its extension) belongs to: the inverse of [`file_name`].
/// `None` for a name [`file_name`] never gives.
pub fn group_of(name: &str) -> Option<String> {
    let Some(hex) = name.strip_prefix('~') else {
        return (file_name(name) == name).then(|| name.to_owned());
    };
    if hex.len() % 2 != 0 || hex.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    let group = String::from_utf8(bytes).ok()?;
    (file_name(&group) == name).then_some(group)
}

/// The directory holding the group state of `topic` in the store at `store_dir`.
pub fn groups_dir(store_dir: &Path, topic: &str) -> PathBuf {
    crate::paths::groups_dir(store_dir, topic)
}

/// The paths of one group's files.
#[derive(Clone, Debug)]
pub struct GroupPaths {
    /// `<store>/groups/<topic>`.
    pub dir: PathBuf,
    /// The name the files share ([`file_name`]).
    pub name: String,
    /// The state log: `<name>.lock`, `.snapshot`, `.journal`.
    pub state: StatePaths,
    /// `<name>.live`: the generation word and the lease slots.
    pub live: PathBuf,
    /// `<name>.json`, the first format's state (converted on first use).
    pub legacy_state: PathBuf,
    /// `<name>.gen`, the first format's generation word.
    pub legacy_generation: PathBuf,
    /// `<name>.members/`, the first format's lease files.
    pub legacy_leases: PathBuf,
}

impl GroupPaths {
    /// The files of `group` on `topic` in the store at `store_dir`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a group whose file name would be too long.
    pub fn new(store_dir: &Path, topic: &str, group: &str) -> Result<Self> {
        if group.is_empty() {
            return Err(Error::InvalidConfig("a group name must not be empty".into()));
        }
        let dir = groups_dir(store_dir, topic);
        let name = file_name(group);
        let state = StatePaths::new(&dir, &name)
            .map_err(|_| Error::InvalidConfig(format!("group name {group:?} is too long")))?;
        Ok(GroupPaths {
            live: dir.join(format!("{name}.live")),
            legacy_state: dir.join(format!("{name}.json")),
            legacy_generation: dir.join(format!("{name}.gen")),
            legacy_leases: dir.join(format!("{name}.members")),
            dir,
            name,
            state,
        })
    }
}

/// A group's membership state as stored: its generation and the policy's body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// The generation: every membership change gives the next one (0 before the first).
    pub generation: u64,
    /// What the policy layer wrote (`None` before the first write; a converted group of the
    /// first format has an empty body: no members).
    pub body: Option<Vec<u8>>,
}

/// One held lease slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The slot's number.
    pub slot: u32,
    /// Which claim of the slot this is.
    pub incarnation: u32,
    /// When the lease runs out unless renewed, ms since the epoch.
    pub expires_ms: u64,
}

/// A group's state read without joining it (see [`read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The stored state; its generation is already the live one if that is higher.
    pub state: GroupState,
    /// The held lease slots.
    pub leases: Vec<Lease>,
}

/// Encodes a record (and a snapshot body): the whole state of one generation.
///
/// | bytes | type   | field                                  |
/// |-------|--------|----------------------------------------|
/// | 0..8  | u64 LE | generation                             |
/// | 8..   |        | body: the membership, as the policy layer encodes it (UTF-8 JSON for `tidelog.groups`) |
///
/// The state log around it frames it and checks it with CRC32C.
pub fn encode_record(generation: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
    Error::CorruptState { path: path.to_owned(), position, reason: reason.into() }
}

fn decode_record(bytes: &[u8], path: &Path, what: &str) -> Result<GroupState> {
    let Some((head, body)) = bytes.split_first_chunk::<RECORD_HEADER_LEN>() else {
        return Err(corrupt(path, 0, format!("{what} of {} bytes holds no generation", bytes.len())));
    };
    let generation = u64::from_le_bytes(*head);
    if generation > MAX_GENERATION {
        return Err(corrupt(path, 0, format!("{what} holds generation {generation}, above 2**63 - 1")));
    }
    Ok(GroupState { generation, body: Some(body.to_vec()) })
}

/// Applies what a state log gave (`base`, then `records`) to `state`, checking that the
/// generations grow.
fn apply(
    paths: &GroupPaths,
    state: &mut GroupState,
    base: Option<Option<&[u8]>>,
    records: &[Vec<u8>],
) -> Result<()> {
    match base {
        None => {}
        Some(None) => *state = GroupState::default(),
        Some(Some(snapshot)) => *state = decode_record(snapshot, &paths.state.snapshot, "snapshot")?,
    }
    for (i, record) in records.iter().enumerate() {
        let next = decode_record(record, &paths.state.journal, &format!("record {i}"))?;
        if state.body.is_some() && next.generation <= state.generation {
            return Err(corrupt(
                &paths.state.journal,
                0,
                format!(
                    "record {i} has generation {} after generation {}: generations only grow",
                    next.generation, state.generation
                ),
            ));
        }
        *state = next;
    }
    Ok(())
}

/// Checks a live file's words: its magic (0 in a file not yet initialised) and generation.
fn check_live(path: &Path, magic: u64, generation: u64) -> Result<()> {
    if magic != 0 && magic != LIVE_MAGIC {
        return Err(corrupt(path, 8, format!("magic {magic:#018x} is not a group's live file")));
    }
    if generation > MAX_GENERATION {
        return Err(corrupt(path, 0, format!("generation word {generation} is above 2**63 - 1")));
    }
    Ok(())
}

fn slot_word(incarnation: u32, expires_ms: u64) -> u64 {
    (u64::from(incarnation) << EXPIRY_BITS) | expires_ms
}

fn lease_of(slot: u32, word: u64) -> Option<Lease> {
    let expires_ms = word & MAX_EXPIRY_MS;
    (expires_ms != 0).then_some(Lease { slot, incarnation: (word >> EXPIRY_BITS) as u32, expires_ms })
}

fn check_expiry(expires_ms: u64) -> Result<u64> {
    if expires_ms == 0 || expires_ms > MAX_EXPIRY_MS {
        return Err(Error::InvalidConfig(format!(
            "lease expiry {expires_ms} ms is not between 1 and {MAX_EXPIRY_MS} ms since the epoch"
        )));
    }
    Ok(expires_ms)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The generation the first format kept (`None` if the group has no first-format files):
/// the higher of `<name>.json`'s `"generation"` and the `<name>.gen` word.
fn legacy_generation(paths: &GroupPaths) -> Result<Option<u64>> {
    let json = read_optional(&paths.legacy_state)?;
    let word = read_optional(&paths.legacy_generation)?;
    if json.is_none() && word.is_none() {
        return Ok(None);
    }
    let mut generation = 0;
    if let Some(text) = json {
        generation = parse_legacy_state(&text).map_err(|r| corrupt(&paths.legacy_state, 0, r))?;
    }
    if let Some(bytes) = word {
        // The first format sized it to 8 bytes before mapping it; an empty one was never
        // written (its owner died between creating and sizing it).
        let value = match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(w) => u64::from_le_bytes(w),
            Err(_) if bytes.is_empty() => 0,
            Err(_) => {
                return Err(corrupt(
                    &paths.legacy_generation,
                    0,
                    format!("{} bytes where an 8-byte generation was expected", bytes.len()),
                ))
            }
        };
        if value > MAX_GENERATION {
            return Err(corrupt(
                &paths.legacy_generation,
                0,
                format!("generation {value} is above 2**63 - 1"),
            ));
        }
        generation = generation.max(value);
    }
    Ok(Some(generation))
}

/// The generation in a first-format state file: Python's `json.dump` of
/// `{"generation": N, "members": {...}, "assignment": {...}}`. Only the generation is kept;
/// the rest must at least be a whole JSON object (a cut-short file is damage).
fn parse_legacy_state(text: &[u8]) -> std::result::Result<u64, String> {
    let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8: {e}"))?;
    let rest = text
        .trim_start()
        .strip_prefix('{')
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix("\"generation\""))
        .map(str::trim_start)
        .and_then(|t| t.strip_prefix(':'))
        .map(str::trim_start)
        .ok_or("does not start with {\"generation\": (not a group state file)")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let generation: u64 = rest[..digits].parse().map_err(|_| "the generation is not a number".to_owned())?;
    if generation > MAX_GENERATION {
        return Err(format!("generation {generation} is above 2**63 - 1"));
    }
    let after = rest[digits..].trim_start();
    if !(after.starts_with(',') || after.starts_with('}')) || !text.trim_end().ends_with('}') {
        return Err("the JSON object is cut short or damaged".into());
    }
    // Brackets must balance outside strings (a cut-short file ends early).
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    for c in text.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') | (false, _, '"') => in_string = !in_string,
            (false, _, '{' | '[') => depth += 1,
            (false, _, '}' | ']') => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced brackets".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 || in_string {
        return Err("the JSON object is cut short or damaged".into());
    }
    Ok(generation)
}

/// Reads a group's state without joining it or changing any file (the state log's lock is
/// taken shared meanwhile): the stored state, its generation raised to the live word's if
/// that is higher, and the held leases. A group still in the first format reads as its
/// generation with no members. `None` if the group has no state.
///
/// # Errors
/// [`Error::CorruptState`] naming the damaged file; I/O errors.
pub fn read(store_dir: &Path, topic: &str, group: &str) -> Result<Option<GroupView>> {
    let paths = GroupPaths::new(store_dir, topic, group)?;
    let mut state = GroupState::default();
    let mut found = false;
    let contents = statelog::read_contents(&paths.dir, &paths.name)?;
    let fresh = contents.as_ref().is_none_or(|c| c.snapshot.is_none() && c.records.is_empty());
    if let Some(contents) = contents {
        found = true;
        apply(&paths, &mut state, Some(contents.snapshot.as_deref()), &contents.records)?;
    }
    if fresh {
        // Not converted yet (a first use that failed may have left an empty journal).
        if let Some(generation) = legacy_generation(&paths)? {
            found = true;
            state.generation = generation;
        }
    }
    let mut leases = Vec::new();
    if let Some(bytes) = read_optional(&paths.live)? {
        found = true;
        let word = |i: usize| {
            bytes.get(i * 8..i * 8 + 8).map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        };
        check_live(&paths.live, word(MAGIC_WORD), word(GENERATION_WORD))?;
        state.generation = state.generation.max(word(GENERATION_WORD));
        for slot in 0..LEASE_SLOTS {
            leases.extend(lease_of(slot, word(FIRST_SLOT_WORD + slot as usize)));
        }
    }
    Ok(found.then_some(GroupView { state, leases }))
}

/// The groups with state in `dir`, one topic's [`groups_dir`] (groups of the first layout,
/// not converted yet, included), sorted.
///
/// # Errors
/// I/O errors (a missing directory is one).
pub fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    for file in std::fs::read_dir(dir)? {
        let file = file?.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some((stem, ext)) = file.rsplit_once('.') else { continue };
        if matches!(ext, "snapshot" | "journal" | "json") {
            if let Some(group) = group_of(stem) {
                found.insert(group);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Every `(topic, group)` with state in the store at `store_dir`, sorted.
///
/// # Errors
/// I/O errors other than a missing directory.
pub fn list(store_dir: &Path) -> Result<Vec<(String, String)>> {
    list_under(&store_dir.join(GROUPS_DIR))
}

/// Every `(topic, name)` with a state log in `root/<topic>/` (named by [`file_name`]), sorted:
/// the groups under [`GROUPS_DIR`], the work queues under
/// [`WORK_QUEUES_DIR`](crate::paths::WORK_QUEUES_DIR).
///
/// # Errors
/// I/O errors other than a missing directory.
pub fn list_under(root: &Path) -> Result<Vec<(String, String)>> {
    let root = root.to_path_buf();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &root, e)),
    };
    let mut found = Vec::new();
    for topic_dir in entries {
        let topic_dir = topic_dir.map_err(|e| Error::io("list", &root, e))?.path();
        let Some(topic) = topic_dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        // A plain file, or removed meanwhile (a topic being deleted): no groups.
        for group in names_in(&topic_dir).unwrap_or_default() {
            found.push((topic.clone(), group));
        }
    }
    found.sort();
    Ok(found)
}

/// One process's handle on a group's state. Shareable between threads.
pub struct Group {
    paths: GroupPaths,
    log: Arc<StateLog>,
    live: SharedWord,
    /// The stored state as of this handle's last lock (or write).
    state: Mutex<GroupState>,
    /// The generation the next write follows (the stored one, or the live word if higher).
    floor: Mutex<u64>,
    /// The topic, when opened through a store: a deleted topic's group refuses changes,
    /// since its paths may by then name the group of a topic created again.
    topic: Option<Arc<Topic>>,
}

impl Group {
    /// Opens (creating its directory, lock and live files if needed) the state of `group`
    /// on `topic` in the store at `store_dir`, its records synced as `policy` says. For
    /// `FsyncPolicy::Interval` use [`crate::Store::group`], whose background syncer syncs.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad group name; I/O errors.
    pub fn open(store_dir: &Path, topic: &str, group: &str, policy: FsyncPolicy) -> Result<Self> {
        let paths = GroupPaths::new(store_dir, topic, group)?;
        let log = Arc::new(StateLog::open(&paths.dir, &paths.name, policy)?);
        Self::with_log(paths, log, None)
    }

    pub(crate) fn with_log(paths: GroupPaths, log: Arc<StateLog>, topic: Option<Arc<Topic>>) -> Result<Self> {
        let live = SharedWord::open_words(&paths.live, LIVE_WORDS)?;
        Ok(Group { paths, log, live, state: Mutex::new(GroupState::default()), floor: Mutex::new(0), topic })
    }

    /// The group's files.
    pub fn paths(&self) -> &GroupPaths {
        &self.paths
    }

    fn cached(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn floor(&self) -> MutexGuard<'_, u64> {
        self.floor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group's generation as every member sees it right now: one atomic load, no
    /// system call (a member compares it with its own to notice a rebalance).
    #[inline]
    pub fn current_generation(&self) -> u64 {
        self.live.load_at(GENERATION_WORD)
    }

    /// Takes the group's lock (waiting for other threads and processes) and returns its
    /// state, caught up with every change; the generation is the one the next
    /// [`Self::write`] follows. Converts a first-format group (see the module
    /// documentation).
    ///
    /// # Errors
    /// [`Error::TopicNotFound`] once the topic was deleted; [`Error::CorruptState`] naming
    /// the damaged file (nothing is changed); I/O errors. The lock is not held after an
    /// error.
    pub fn lock(&self) -> Result<GroupState> {
        if let Some(topic) = &self.topic {
            if topic.is_deleted() {
                return Err(Error::TopicNotFound(topic.name().to_owned()));
            }
        }
        let changes = self.log.lock()?;
        let result = self.catch_up(changes);
        if result.is_err() {
            // The copy may be half updated: read everything again next time.
            self.log.invalidate();
            let _ = self.log.unlock();
        }
        result
    }

    fn catch_up(&self, changes: statelog::Changes) -> Result<GroupState> {
        let mut state = self.cached();
        let fresh = changes.base == Base::Empty && changes.records.is_empty();
        let base = match &changes.base {
            Base::Unchanged => None,
            Base::Empty => Some(None),
            Base::Snapshot(body) => Some(Some(body.as_slice())),
        };
        apply(&self.paths, &mut state, base, &changes.records)?;
        if fresh {
            if let Some(generation) = legacy_generation(&self.paths)? {
                self.convert(&mut state, generation)?;
            }
        }
        let magic = self.live.load_at(MAGIC_WORD);
        let word = self.live.load_at(GENERATION_WORD);
        check_live(&self.paths.live, magic, word)?;
        if magic == 0 {
            self.live.store_at(MAGIC_WORD, LIVE_MAGIC);
        }
        if word < state.generation {
            // Derived data behind the stored state (invariant 1): a lost page or a new file.
            self.live.store_at(GENERATION_WORD, state.generation);
        }
        let generation = word.max(state.generation);
        *self.floor() = generation;
        Ok(GroupState { generation, body: state.body.clone() })
    }

    /// Converts the first format: the generation kept, no members, written durably before
    /// the old files go.
    fn convert(&self, state: &mut GroupState, generation: u64) -> Result<()> {
        // A snapshot is always written atomically and synced, whatever the fsync policy:
        // the old files are removed right after.
        self.log.replace(&encode_record(generation, b""))?;
        *state = GroupState { generation, body: Some(Vec::new()) };
        for file in [&self.paths.legacy_state, &self.paths.legacy_generation] {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", file, e)),
            }
        }
        match std::fs::remove_dir_all(&self.paths.legacy_leases) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.paths.legacy_leases, e)),
        }
    }

    /// Writes `body` as the group's state of the next generation (lock held), returning
    /// that generation once the record is as durable as the fsync policy says, then
    /// publishes it in the live word.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without the lock; [`Error::CorruptState`] when the
    /// generation cannot grow any more; I/O errors (nothing is published).
    pub fn write(&self, body: &[u8]) -> Result<u64> {
        self.write_above(body, 0)
    }

    /// [`Self::write`], the generation also above `above`: the highest generation the
    /// group's commits carry, so that a group whose state was lost or rolled back (a crash
    /// under a weak fsync policy, files removed by hand) does not start again below the
    /// commits that fence older generations (`offsets::table`, invariant 6).
    ///
    /// # Errors
    /// As [`Self::write`].
    pub fn write_above(&self, body: &[u8], above: u64) -> Result<u64> {
        self.log.check_held()?;
        let mut floor = self.floor();
        let generation = (*floor)
            .max(above)
            .checked_add(1)
            .filter(|&g| g <= MAX_GENERATION)
            .ok_or_else(|| corrupt(&self.paths.live, 0, "the generation cannot grow any more"))?;
        let record = encode_record(generation, body);
        if self.log.journal_bytes() + record.len() as u64 > COMPACT_BYTES {
            self.log.replace(&record)?;
        } else {
            self.log.append(&record)?;
        }
        *self.cached() = GroupState { generation, body: Some(body.to_vec()) };
        *floor = generation;
        self.live.store_at(GENERATION_WORD, generation);
        Ok(generation)
    }

    /// Gives the lock back.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if it is not held; I/O errors.
    pub fn unlock(&self) -> Result<()> {
        self.log.unlock()
    }

    fn slot_index(slot: u32) -> Result<usize> {
        if slot >= LEASE_SLOTS {
            return Err(Error::InvalidConfig(format!("lease slot {slot} is not below {LEASE_SLOTS}")));
        }
        Ok(FIRST_SLOT_WORD + slot as usize)
    }

    /// Claims a free lease slot (lock held), running until `expires_ms`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without the lock, for an expiry out of range, or when every
    /// slot is held ([`LEASE_SLOTS`] members).
    pub fn claim_lease(&self, expires_ms: u64) -> Result<Lease> {
        self.log.check_held()?;
        let expires_ms = check_expiry(expires_ms)?;
        for slot in 0..LEASE_SLOTS {
            let index = FIRST_SLOT_WORD + slot as usize;
            let word = self.live.load_at(index);
            if lease_of(slot, word).is_some() {
                continue;
            }
            let incarnation = match ((word >> EXPIRY_BITS) + 1) & INCARNATION_MASK {
                0 => 1,
                n => n as u32,
            };
            // Only lock holders claim, and nobody changes a free slot otherwise: the swap
            // cannot lose, it only keeps the word's every access atomic.
            if self.live.compare_exchange_at(index, word, slot_word(incarnation, expires_ms)).is_ok() {
                return Ok(Lease { slot, incarnation, expires_ms });
            }
        }
        Err(Error::InvalidConfig(format!(
            "group {} already has {LEASE_SLOTS} members holding leases: no more can join",
            self.paths.state.lock.display()
        )))
    }

    /// Extends the lease `slot`/`incarnation` to `expires_ms`: one compare-and-swap, no lock,
    /// no system call. False if the lease is no longer this one (it was released, or
    /// claimed again after that): its holder was removed and must join again.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a slot or expiry out of range.
    pub fn renew_lease(&self, slot: u32, incarnation: u32, expires_ms: u64) -> Result<bool> {
        let index = Self::slot_index(slot)?;
        let expires_ms = check_expiry(expires_ms)?;
        let mut word = self.live.load_at(index);
        loop {
            match lease_of(slot, word) {
                Some(lease) if lease.incarnation == incarnation => {}
                _ => return Ok(false),
            }
            match self.live.compare_exchange_at(index, word, slot_word(incarnation, expires_ms)) {
                Ok(_) => return Ok(true),
                Err(now) => word = now,
            }
        }
    }

    /// Frees the lease `slot`/`incarnation` (its member left or was judged dead). False if
    /// the slot no longer holds that lease.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a slot out of range.
    pub fn release_lease(&self, slot: u32, incarnation: u32) -> Result<bool> {
        let index = Self::slot_index(slot)?;
        let mut word = self.live.load_at(index);
        loop {
            match lease_of(slot, word) {
                Some(lease) if lease.incarnation == incarnation => {}
                _ => return Ok(false),
            }
            match self.live.compare_exchange_at(index, word, slot_word(incarnation, 0)) {
                Ok(_) => return Ok(true),
                Err(now) => word = now,
            }
        }
    }

    /// Every held lease slot, as of now.
    pub fn leases(&self) -> Vec<Lease> {
        (0..LEASE_SLOTS)
            .filter_map(|s| lease_of(s, self.live.load_at(FIRST_SLOT_WORD + s as usize)))
            .collect()
    }

    /// The expiry of lease `slot`/`incarnation` (0 if the slot no longer holds it).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a slot out of range.
    pub fn lease_expiry(&self, slot: u32, incarnation: u32) -> Result<u64> {
        let word = self.live.load_at(Self::slot_index(slot)?);
        Ok(lease_of(slot, word).filter(|l| l.incarnation == incarnation).map_or(0, |l| l.expires_ms))
    }

    /// Syncs what the fsync policy deferred and closes the state log; later locks raise
    /// [`Error::Closed`]. Leases can still be released. Closing twice is harmless.
    ///
    /// # Errors
    /// A failed final sync.
    pub fn close(&self) -> Result<()> {
        self.log.close()
    }

    /// Successful fdatasyncs of the state log's journal by this handle.
    pub fn syncs(&self) -> u64 {
        self.log.syncs()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn open(dir: &Path) -> Group {
        Group::open(dir, "t", "g", FsyncPolicy::Never).unwrap()
    }

    fn write(group: &Group, body: &[u8]) -> u64 {
        group.lock().unwrap();
        let g = group.write(body).unwrap();
        group.unlock().unwrap();
        g
    }

    #[test]
    fn names_round_trip() {
        for g in ["billing", "a.b-c_d", ".hidden", "with space", "ü", "a/b", "~x"] {
            let name = file_name(g);
            assert_eq!(group_of(&name).as_deref(), Some(g), "{name}");
            assert!(!name.contains('/') && !name.starts_with('.'));
        }
        assert_eq!(file_name("billing"), "billing");
        assert_eq!(group_of("~4"), None);
        assert_eq!(group_of("~62696c6c696e67"), None, "a plain name is never hex-escaped");
        assert_eq!(group_of("a b"), None);
    }

    #[test]
    fn members_share_state_and_the_generation_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path()), open(dir.path()));
        assert_eq!(a.lock().unwrap(), GroupState { generation: 0, body: None });
        assert_eq!(a.write(b"one").unwrap(), 1);
        a.unlock().unwrap();
        assert_eq!(b.current_generation(), 1, "one shared word");
        assert_eq!(b.lock().unwrap(), GroupState { generation: 1, body: Some(b"one".to_vec()) });
        assert_eq!(b.write(b"two").unwrap(), 2);
        b.unlock().unwrap();
        assert_eq!(a.lock().unwrap().body.as_deref(), Some(&b"two"[..]));
        a.unlock().unwrap();
        assert!(a.write(b"x").is_err(), "writing needs the lock");
        let view = read(dir.path(), "t", "g").unwrap().unwrap();
        assert_eq!(view.state, GroupState { generation: 2, body: Some(b"two".to_vec()) });
        assert_eq!(read(dir.path(), "t", "other").unwrap(), None);
        assert_eq!(list(dir.path()).unwrap(), vec![("t".to_owned(), "g".to_owned())]);
    }

    #[test]
    fn compaction_keeps_the_newest_state_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        let body = vec![b'x'; 1000];
        for _ in 0..200 {
            write(&a, &body);
        }
        let journal = std::fs::metadata(&a.paths().state.journal).unwrap().len();
        assert!(journal <= COMPACT_BYTES, "{journal}");
        let b = open(dir.path());
        assert_eq!(b.lock().unwrap(), GroupState { generation: 200, body: Some(body.clone()) });
        assert_eq!(b.write(b"y").unwrap(), 201);
    }

    #[test]
    fn a_lagging_live_word_is_raised_and_a_higher_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        write(&a, b"s");
        write(&a, b"s");
        let live = SharedWord::open_words(&a.paths().live, LIVE_WORDS).unwrap();
        live.store_at(GENERATION_WORD, 0);
        assert_eq!(a.lock().unwrap().generation, 2);
        a.unlock().unwrap();
        assert_eq!(a.current_generation(), 2);
        // Records lost with a page cache: the generation never goes back.
        live.store_at(GENERATION_WORD, 10);
        assert_eq!(write(&a, b"s"), 11);
        drop(a);
        std::fs::remove_file(dir.path().join("groups/t/g.live")).unwrap();
        let b = open(dir.path());
        assert_eq!(b.lock().unwrap().generation, 11);
        b.unlock().unwrap();
        assert_eq!(b.current_generation(), 11);
    }

    #[test]
    fn damage_to_each_file_is_reported_naming_it_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        for _ in 0..3 {
            write(&a, b"{\"members\":{}}");
        }
        let paths = a.paths().clone();
        drop(a);
        let journal = std::fs::read(&paths.state.journal).unwrap();
        let mut flipped = journal.clone();
        let n = flipped.len();
        flipped[n - 42 - 20] ^= 0x04; // inside the second of three 42-byte records
        std::fs::write(&paths.state.journal, &flipped).unwrap();
        let err = open(dir.path()).lock().unwrap_err();
        assert!(matches!(&err, Error::CorruptState { .. }) && err.to_string().contains("g.journal"), "{err}");
        assert!(read(dir.path(), "t", "g").unwrap_err().to_string().contains("g.journal"));
        assert_eq!(std::fs::read(&paths.state.journal).unwrap(), flipped, "left as it was");
        std::fs::write(&paths.state.journal, &journal).unwrap();

        // A record whose CRC holds but whose generation goes back.
        {
            let g = open(dir.path());
            g.lock().unwrap();
            // Writing through the state log directly, as a bug would.
            g.log.append(&encode_record(1, b"old")).unwrap();
            g.unlock().unwrap();
        }
        let err = open(dir.path()).lock().unwrap_err();
        assert!(err.to_string().contains("only grow") && err.to_string().contains("g.journal"), "{err}");
        std::fs::write(&paths.state.journal, &journal).unwrap();

        let live = std::fs::read(&paths.live).unwrap();
        let mut garbage = live.clone();
        garbage[8..16].copy_from_slice(b"garbage!");
        std::fs::write(&paths.live, &garbage).unwrap();
        let err = open(dir.path()).lock().unwrap_err();
        assert!(err.to_string().contains("g.live"), "{err}");
        let mut huge = live.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&paths.live, &huge).unwrap();
        assert!(open(dir.path()).lock().unwrap_err().to_string().contains("g.live"));
        assert!(read(dir.path(), "t", "g").unwrap_err().to_string().contains("g.live"));
        std::fs::write(&paths.live, &live).unwrap();
        let g = open(dir.path());
        assert_eq!(g.lock().unwrap().generation, 3, "whole again once repaired");
        g.unlock().unwrap();
    }

    #[test]
    fn the_first_format_is_converted_keeping_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GroupPaths::new(dir.path(), "t", "g").unwrap();
        std::fs::create_dir_all(&paths.legacy_leases).unwrap();
        std::fs::write(
            &paths.legacy_state,
            br#"{"generation": 7, "members": {"h-1-ab": {"pid": 1, "joined_ms": 5}}, "assignment": {"h-1-ab": [0, 1]}}"#,
        )
        .unwrap();
        std::fs::write(&paths.legacy_generation, 6u64.to_le_bytes()).unwrap();
        std::fs::write(paths.legacy_leases.join("h-1-ab"), 99i64.to_le_bytes()).unwrap();
        assert_eq!(read(dir.path(), "t", "g").unwrap().unwrap().state.generation, 7, "read as it is");
        assert!(paths.legacy_state.exists(), "reading converts nothing");
        let g = open(dir.path());
        assert_eq!(g.lock().unwrap(), GroupState { generation: 7, body: Some(Vec::new()) });
        assert_eq!(g.write(b"m").unwrap(), 8);
        g.unlock().unwrap();
        assert!(!paths.legacy_state.exists() && !paths.legacy_generation.exists());
        assert!(!paths.legacy_leases.exists());
        assert_eq!(open(dir.path()).lock().unwrap().generation, 8);
    }

    #[test]
    fn a_damaged_first_format_file_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GroupPaths::new(dir.path(), "t", "g").unwrap();
        std::fs::create_dir_all(&paths.dir).unwrap();
        for bad in [&br#"{"generation": 7, "members": {"#[..], b"\x00\x01garbage", br#"{"members": {}}"#] {
            std::fs::write(&paths.legacy_state, bad).unwrap();
            let err = open(dir.path()).lock().unwrap_err();
            assert!(err.to_string().contains("g.json"), "{err}");
            assert!(paths.legacy_state.exists());
        }
        std::fs::remove_file(&paths.legacy_state).unwrap();
        std::fs::write(&paths.legacy_generation, [1, 2, 3]).unwrap();
        assert!(open(dir.path()).lock().unwrap_err().to_string().contains("g.gen"));
    }

    #[test]
    fn leases_are_claimed_renewed_and_released_by_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let g = open(dir.path());
        assert!(g.claim_lease(100).is_err(), "claiming needs the lock");
        g.lock().unwrap();
        let a = g.claim_lease(100).unwrap();
        let b = g.claim_lease(200).unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        assert!(g.renew_lease(a.slot, a.incarnation, 150).unwrap());
        assert_eq!(g.lease_expiry(a.slot, a.incarnation).unwrap(), 150);
        assert!(g.release_lease(a.slot, a.incarnation).unwrap());
        let c = g.claim_lease(300).unwrap();
        assert_eq!(c.slot, 0);
        assert_ne!(c.incarnation, a.incarnation);
        g.unlock().unwrap();
        assert!(!g.renew_lease(a.slot, a.incarnation, 999).unwrap(), "the old holder lost it");
        assert!(!g.release_lease(a.slot, a.incarnation).unwrap());
        assert_eq!(g.lease_expiry(a.slot, a.incarnation).unwrap(), 0);
        assert_eq!(g.leases(), vec![c, b]);
        let seen = read(dir.path(), "t", "g").unwrap().unwrap().leases;
        assert_eq!(seen, vec![c, b]);
        assert!(g.renew_lease(LEASE_SLOTS, 1, 5).is_err());
        assert!(g.renew_lease(0, c.incarnation, 0).is_err());
        assert!(g.renew_lease(0, c.incarnation, MAX_EXPIRY_MS + 1).is_err());
    }

    #[test]
    fn every_slot_taken_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let g = open(dir.path());
        g.lock().unwrap();
        for _ in 0..LEASE_SLOTS {
            g.claim_lease(5).unwrap();
        }
        assert!(matches!(g.claim_lease(5), Err(Error::InvalidConfig(_))));
        g.unlock().unwrap();
    }

    #[test]
    fn fsync_always_syncs_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let g = Group::open(dir.path(), "t", "g", FsyncPolicy::Always).unwrap();
        write(&g, b"a");
        write(&g, b"b");
        assert_eq!(g.syncs(), 2);
    }

    #[test]
    fn threads_take_turns_and_generations_grow() {
        let dir = tempfile::tempdir().unwrap();
        let g = Arc::new(open(dir.path()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..50).map(|_| write(&g, b"s")).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any damaged byte of any of a group's files is reported (naming the file) or, in
        /// the journal's last record, taken for a torn tail; never a panic, and the
        /// generation the next write takes never goes back.
        #[test]
        fn any_corruption_is_an_error_never_a_panic_never_a_lower_generation(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..6),
            file in 0usize..3,
            at in any::<proptest::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let g = open(dir.path());
            for (i, body) in bodies.iter().enumerate() {
                if i == 1 {
                    // Once as a snapshot, so every kind of file exists.
                    g.lock().unwrap();
                    g.log.replace(&encode_record(1, body)).unwrap();
                    g.unlock().unwrap();
                }
                write(&g, body);
            }
            let last = g.current_generation();
            let paths = g.paths().clone();
            drop(g);
            let path = [&paths.state.journal, &paths.state.snapshot, &paths.live][file];
            let Ok(mut bytes) = std::fs::read(path) else { return Ok(()) };
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
            std::fs::write(path, &bytes).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let g = open(dir.path());
            match g.lock() {
                Ok(state) => {
                    prop_assert!(state.generation >= last, "{} < {last}", state.generation);
                    prop_assert!(g.write(b"next").unwrap() > last);
                    g.unlock().unwrap();
                }
                Err(e) => {
                    prop_assert!(matches!(e, Error::CorruptState { .. }), "{e}");
                    prop_assert!(e.to_string().contains(&name), "{e}");
                    prop_assert!(read(dir.path(), "t", "g").is_err());
                }
            }
        }

        /// Whatever the first format's state file holds: a generation or an error.
        #[test]
        fn any_first_format_file_parses_or_is_an_error(text in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_legacy_state(&text);
        }
    }
}
