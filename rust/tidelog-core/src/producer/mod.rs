//! The buffered producer: `send` puts a message into a bounded lock-free ring buffer and
//! returns; a background writer thread drains the buffer in batches, groups the messages by
//! partition and appends each group as one CRC-checked batch. With `fsync="always"` each
//! batch is one fdatasync for every message in it (group commit), which is why many
//! concurrent `send` + `flush` callers get far more commits per second than one serial
//! writer. A `flush` that finds the writer idle writes the buffered batches itself instead
//! of waking it and waiting (see [`writer::write_here`]).
//!
//! Pressure is handled on purpose (see [`pressure`]): `block` waits for the writer to drain
//! the buffer to the low watermark, `raise` refuses the message, `shed` drops the lowest
//! priority first.
//!
//! Order: one producer's messages to one partition are written in the order of the `send`
//! calls, whatever their priorities (Kafka users rely on per-partition order; priority only
//! decides what is shed). So there is ONE ring, in send order, and shedding does not take
//! messages out of it: it turns a buffered message of the lowest priority into a *debt* of
//! that priority (see [`shed`]), and the writer drops the first message of that priority
//! it pops for each debt. The writer pops in send order, so the messages dropped are the
//! oldest of their priority, as an eviction from a per-priority queue would pick. Chosen
//! over the alternative (a ring per priority plus a global sequence number the writer
//! merges by): the merge needs the writer to hold back every message until it knows no
//! smaller sequence number is still being pushed by a preempted sender, and a sender that
//! is never seen to finish stalls all partitions; the single ring keeps the lock-free
//! ring's own FIFO guarantee and costs a shedding send one CAS on its level's counter
//! (nothing at all without shedding). The price: a shed message's memory is released when
//! the writer pops it, not at once, so a shedding producer's ring has room for twice
//! `buffer_messages`.

pub mod identity;
pub mod lag;
pub mod pressure;
mod progress;
pub mod receipt;
mod shed;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use self::identity::{Identity, TxnPartitions};
use self::pressure::Pressure;
use self::progress::Progress;
use self::receipt::{Ledger, Receipt, Settled};
use self::shed::ShedCounts;
use crate::log::now_ms;
use crate::ring::RingBuffer;
use crate::store::{Store, Topic};
use crate::{Error, Result};

/// What `send` does under pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for the writer to drain the buffer to the low watermark; with a timeout,
    /// fail with [`SendError::Backpressure`] when it passes.
    Block(Option<Duration>),
    /// Refuse the message with [`SendError::Backpressure`].
    Raise,
    /// Drop the lowest-priority message (possibly this one), counting it.
    Shed,
}

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Capacity of the buffer, in messages.
    pub buffer_messages: usize,
    /// Occupancy fraction at which pressure starts.
    pub high_watermark: f64,
    /// Occupancy fraction at which pressure ends.
    pub low_watermark: f64,
    /// Behaviour under pressure.
    pub on_full: OnFull,
    /// Most messages the writer appends as one batch.
    pub max_batch_messages: usize,
    /// How long the writer waits for more messages while under half a batch is buffered,
    /// before writing what it has (like Kafka's `linger.ms`): longer waits make bigger
    /// batches and fewer wake-ups; a flush or close ends the wait; zero wakes the writer
    /// for every message sent while it sleeps.
    pub linger: Duration,
    /// A bound on consumer lag: pressure while the slowest consumer group of a topic
    /// written to is more than this many messages behind (until it is back at
    /// `max_lag * low_watermark`), and never more than `max_lag + buffer_messages` messages
    /// written to a partition past that group's committed offset (see [`lag`]).
    pub max_lag: Option<u64>,
    /// The codec of this producer's batches, over each topic's own `compression` setting;
    /// `None` keeps each topic's.
    pub compression: Option<crate::format::Compression>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            buffer_messages: crate::defaults::BUFFER_MESSAGES,
            high_watermark: crate::defaults::HIGH_WATERMARK,
            low_watermark: crate::defaults::LOW_WATERMARK,
            // crate::defaults::ON_FULL names it.
            on_full: OnFull::Block(None),
            max_batch_messages: crate::defaults::MAX_BATCH_MESSAGES,
            linger: Duration::from_secs_f64(crate::defaults::LINGER_MS / 1000.0),
            max_lag: None,
            compression: None,
        }
    }
}

/// Most distinct priorities one producer may use (each gets its own buffer).
pub const MAX_PRIORITY_LEVELS: usize = 16;

impl ProducerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if !(1..=crate::ring::MAX_CAPACITY / 2).contains(&self.buffer_messages) {
            return Err(Error::InvalidConfig(format!(
                "buffer_messages must be between 1 and {}, got {}",
                crate::ring::MAX_CAPACITY / 2,
                self.buffer_messages
            )));
        }
        if !(self.high_watermark > 0.0 && self.high_watermark <= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "high_watermark must be in (0, 1], got {}",
                self.high_watermark
            )));
        }
        if !(self.low_watermark >= 0.0 && self.low_watermark < self.high_watermark) {
            return Err(Error::InvalidConfig(format!(
                "low_watermark must be in [0, high_watermark), got {}",
                self.low_watermark
            )));
        }
        if self.max_batch_messages == 0 {
            return Err(Error::InvalidConfig("max_batch_messages must be positive".into()));
        }
        if let Some(max_lag) = self.max_lag {
            if !(1..=i64::MAX as u64).contains(&max_lag) {
                return Err(Error::InvalidConfig(format!("max_lag must be a positive int, got {max_lag}")));
            }
        }
        Ok(())
    }
}

/// Why a `send` did not enqueue the message.
#[derive(Debug)]
pub enum SendError {
    /// Pressure is on and the policy is `raise` (or a `block` timed out).
    Backpressure(String),
    /// The producer or its store is closed, the arguments are bad, or the writer failed.
    Failed(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> Self {
        SendError::Failed(e)
    }
}

/// A message waiting in the buffer.
pub(crate) struct Pending {
    topic: Arc<Topic>,
    timestamp: i64,
    /// The transaction it was sent in, or 0.
    txn: u64,
    /// The key (if any), the value and the encoded headers, back to back: one allocation
    /// per message, and a ring slot of one cache line (8 bytes of sequence + 56).
    bytes: Box<[u8]>,
    partition: u32,
    priority: i32,
    /// Length of the key at the start of `bytes`, or [`NO_KEY`].
    key_len: u32,
    /// Length of the headers at the end of `bytes`, with [`TOMBSTONE`] set for a message
    /// without a value.
    headers_len: u32,
    /// The message's send sequence plus one when the writer reports its outcome to the
    /// producer's [`Ledger`] (async sends, see [`Producer::send_tracked`]); 0 for the
    /// synchronous `send`.
    tracked: u64,
}

/// [`Pending::key_len`] of a message without a key.
const NO_KEY: u32 = u32::MAX;
/// Bit of [`Pending::headers_len`] marking a tombstone: a flag of its own would make the
/// slot larger than a cache line, and lengths stay below 2^31 (`max_message_bytes`).
const TOMBSTONE: u32 = 1 << 31;

// 64 bytes, a ring slot of 72: a tracking field in every message measured no slower on the
// synchronous send (whose messages leave it 0) than the 56 bytes without it.
const _: () = assert!(std::mem::size_of::<Pending>() == 64, "one cache line of message");

impl Pending {
    fn key(&self) -> Option<&[u8]> {
        (self.key_len != NO_KEY).then(|| &self.bytes[..self.key_len as usize])
    }

    fn value(&self) -> &[u8] {
        let start = if self.key_len == NO_KEY { 0 } else { self.key_len as usize };
        &self.bytes[start..self.bytes.len() - (self.headers_len & !TOMBSTONE) as usize]
    }

    fn headers(&self) -> &[u8] {
        &self.bytes[self.bytes.len() - (self.headers_len & !TOMBSTONE) as usize..]
    }

    /// No value: compaction deletes the key.
    fn is_tombstone(&self) -> bool {
        self.headers_len & TOMBSTONE != 0
    }

    /// The send sequence of a tracked message.
    fn seq(&self) -> Option<u64> {
        self.tracked.checked_sub(1)
    }

    /// Reports what became of the message to its sender, if it is waiting for that;
    /// [`Ledger::publish`] must follow before the message is accounted for.
    fn settle(&self, ledger: Option<&Ledger>, value: Settled) {
        if let (Some(seq), Some(ledger)) = (self.seq(), ledger) {
            ledger.settle(seq, value);
        }
    }
}

/// What [`Producer::send_tracked`] did with a message.
#[derive(Debug)]
pub struct Tracked {
    /// False when `on_full="shed"` dropped this very message (nothing was buffered).
    pub accepted: bool,
    /// The partition chosen for it.
    pub partition: u32,
    /// Its send sequence, when accepted: its outcome is [`Ledger::outcome`] of it in
    /// [`Producer::ledger`] (for a while, see [`Ledger::keep`]).
    pub seq: Option<u64>,
    /// Its receipt, when accepted and sent with `keep`.
    pub receipt: Option<Arc<Receipt>>,
}

/// How [`Producer::send_inner`] tracks a message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Track {
    /// Not at all (the synchronous send).
    No,
    /// In the ledger.
    Ledger,
    /// In the ledger, with a receipt kept before the message is buffered.
    Keep,
}

/// One priority level: its drop count and, when shedding, what it has in the buffer.
pub(crate) struct Level {
    priority: i32,
    /// Only with `on_full="shed"`: this priority's messages in the ring, to be written or
    /// dropped.
    counts: ShedCounts,
    dropped: AtomicU64,
}

/// A snapshot of the producer's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProducerStats {
    /// Messages in the buffer now.
    pub buffered: usize,
    /// Messages accepted by `send`.
    pub sent: u64,
    /// Messages appended to the log.
    pub written: u64,
    /// Messages dropped by shedding, per priority.
    pub dropped: Vec<(i32, u64)>,
    /// Messages the writer failed to append (their error was reported).
    pub failed: u64,
    /// Pressure episodes started.
    pub high_watermark_hits: u64,
    /// Seconds senders spent blocked.
    pub blocked_seconds: f64,
}

pub(crate) struct Shared {
    store: Arc<Store>,
    config: ProducerConfig,
    /// Every buffered message, in send order (see the module docs).
    ring: RingBuffer<Pending>,
    /// Priorities in use, highest first.
    levels: RwLock<Vec<Arc<Level>>>,
    /// `on_full="shed"`: the writer settles [`Level::counts`] for every message it pops.
    shedding: bool,
    pressure: Pressure,
    topics: RwLock<FxHashMap<String, Arc<Topic>>>,
    /// Messages accepted; messages accounted for (written, failed or evicted).
    sent: AtomicU64,
    accounted: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    /// The writer's first unreported failure.
    error: Mutex<Option<Error>>,
    /// Set whenever `error` or `fatal` is (see [`Shared::fail`]): `send` looks at one flag,
    /// not two mutexes.
    has_failure: AtomicBool,
    closing: AtomicBool,
    /// The writer sleeps here when the buffers are empty; flushers wait here too.
    signal: Mutex<()>,
    work: Condvar,
    /// Bumped after every writer round (and eviction): flushers sleep on it.
    progress: Progress,
    writer_idle: AtomicBool,
    /// Set when the writer thread has stopped by panicking: nothing will drain the buffer,
    /// so nobody may wait for it (see [`Shared::writer_died`]).
    writer_died: AtomicBool,
    /// Threads in `flush`: the writer only signals progress when someone waits for it.
    flushers: AtomicUsize,
    /// The right to pop and write, with the next sequence number per partition: held by
    /// the writer while it pops and writes a batch, and taken by a flushing thread that
    /// finds the writer idle, which then writes the batch itself (see [`Producer::flush`]).
    /// Whoever pops also writes before letting go, so batches reach each partition in
    /// send order whichever thread writes them.
    drain: Mutex<writer::Sequences>,
    /// The idempotent producer's identity; `None` writes plain batches.
    identity: Option<Identity>,
    /// Number of the open transaction (0: none), stamped on every message sent.
    txn_id: AtomicU64,
    /// The transaction being written: its number and the partitions recorded for it in
    /// the transaction file. It outlives `txn_id` while the end flushes its messages.
    txn: Mutex<Option<(u64, TxnPartitions)>>,
    txns_begun: AtomicU64,
    /// A failure after which this producer may not write again (fenced, a broken
    /// sequence, or a write that kept failing so its outcome is unknown).
    fatal: Mutex<Option<Fatal>>,
    /// Where the writer reports tracked messages (made at the first tracked send).
    ledger: std::sync::OnceLock<Arc<Ledger>>,
}

impl Shared {
    /// Wakes an idle, lingering or gathering writer. Under the mutex the writer re-checks
    /// its conditions with, so a wake-up between its check and its wait is not lost.
    fn wake_writer(&self) {
        let _signal = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        self.work.notify_one();
    }

    /// Records a failure for the next `send`, `flush` or `close` to report; a fatal one is
    /// reported by every call from then on.
    fn fail(&self, error: Option<Error>, fatal: Option<Fatal>) {
        if let Some(f) = fatal {
            self.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(f);
        }
        if let Some(e) = error {
            self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
        // SeqCst with `take_error`'s clear and second look (see there).
        self.has_failure.store(true, Ordering::SeqCst);
    }

    /// After the writer panicked: records why, so every send and flush reports it, and
    /// wakes every thread waiting for the writer, which would otherwise wait forever.
    #[cold]
    fn writer_died(&self, panic: &(dyn std::any::Any + Send)) {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        let lost = self.sent.load(Ordering::Acquire).saturating_sub(self.accounted.load(Ordering::Acquire));
        self.fail(
            None,
            Some(Fatal::WriterDied(format!(
                "the producer's writer thread panicked ({why}); up to {lost} sent messages were \
                 not written: close this producer and open a new one"
            ))),
        );
        self.writer_died.store(true, Ordering::SeqCst);
        self.ring.close();
        self.pressure.wake_all();
        self.progress.bump();
        self.wake_writer();
    }

    /// Buffered messages at which a sender wakes a lingering writer: half a batch, or every
    /// message when lingering is off. (A buffer smaller than that is drained when the
    /// linger passes or a sender blocks; under `raise` or `shed`, a long linger keeps a
    /// small buffer at its high watermark.)
    fn wake_at(&self) -> usize {
        if self.config.linger.is_zero() {
            1
        } else {
            (self.config.max_batch_messages / 2).max(1)
        }
    }
}

/// Why a producer stopped for good.
#[derive(Clone, Debug)]
pub(crate) enum Fatal {
    Fenced(String),
    OutOfOrder(String),
    Failed(String),
    /// The writer thread panicked (a bug).
    WriterDied(String),
}

impl Fatal {
    fn error(&self) -> Error {
        match self {
            Fatal::Fenced(m) => Error::ProducerFenced(m.clone()),
            Fatal::OutOfOrder(m) => Error::OutOfOrderSequence(m.clone()),
            Fatal::Failed(m) => Error::InvalidConfig(m.clone()),
            Fatal::WriterDied(m) => Error::Internal(m.clone()),
        }
    }
}

/// An async flusher's view of the writer's rounds. The writer bumps [`Progress`] only while
/// someone is flushing, so the flusher counts itself in with [`Producer::set_flushing`]
/// before it takes a ticket (as [`Producer::flush`] does): arming here would come after
/// its check, and a round ended in between would be missed.
struct FlushBell(Arc<Shared>);

impl crate::waker::Bell for FlushBell {
    fn word(&self) -> &AtomicU32 {
        self.0.progress.word()
    }

    fn private(&self) -> bool {
        true
    }

    // `Progress::bump` always wakes: nothing to count.
    fn arm(&self) {}

    fn disarm(&self) {}
}

/// An async sender's view of the end of pressure.
struct PressureBell(Arc<Shared>);

impl crate::waker::Bell for PressureBell {
    fn word(&self) -> &AtomicU32 {
        crate::waker::Bell::word(&self.0.pressure)
    }

    fn private(&self) -> bool {
        true
    }

    fn arm(&self) {
        crate::waker::Bell::arm(&self.0.pressure);
    }

    fn disarm(&self) {
        crate::waker::Bell::disarm(&self.0.pressure);
    }
}

/// The producer handle.
pub struct Producer {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Producer {
    /// Starts a producer writing into `store`. With an `identity`, every batch carries its
    /// producer id, epoch and per-partition sequence numbers, so a retried write is never
    /// stored twice (see [`crate::log::producers`]).
    ///
    /// # Errors
    /// Bad settings, or the writer thread could not start.
    pub fn new(store: Arc<Store>, config: ProducerConfig, identity: Option<Identity>) -> Result<Self> {
        store.check_open()?;
        config.validate()?;
        let high = ((config.buffer_messages as f64 * config.high_watermark).ceil() as usize).max(1);
        let low = (config.buffer_messages as f64 * config.low_watermark).floor() as usize;
        // Shedding: twice the buffer, as shed messages hold their slot until the writer pops
        // them. Otherwise the buffer (rounded up to a power of two): a ring twice as large
        // made every slot a colder cache line and cost 6% of four threads' sends; senders
        // racing past the high watermark together into a full ring wait for the writer.
        let slots = if config.on_full == OnFull::Shed { 2 } else { 1 };
        let ring = RingBuffer::new(config.buffer_messages.saturating_mul(slots));
        let shared = Arc::new(Shared {
            store,
            pressure: Pressure::new(high, low),
            shedding: config.on_full == OnFull::Shed,
            ring,
            config,
            levels: RwLock::new(Vec::new()),
            topics: RwLock::new(FxHashMap::default()),
            sent: AtomicU64::new(0),
            accounted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            error: Mutex::new(None),
            has_failure: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            signal: Mutex::new(()),
            work: Condvar::new(),
            progress: Progress::default(),
            writer_idle: AtomicBool::new(false),
            writer_died: AtomicBool::new(false),
            flushers: AtomicUsize::new(0),
            drain: Mutex::new(writer::Sequences::new()),
            identity,
            txn_id: AtomicU64::new(0),
            txns_begun: AtomicU64::new(0),
            txn: Mutex::new(None),
            fatal: Mutex::new(None),
            ledger: std::sync::OnceLock::new(),
        });
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("tidelog-producer".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| writer::run(&for_writer));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    for_writer.writer_died(panic.as_ref());
                }
            })
            .map_err(|e| Error::io("spawn producer writer", shared.store.dir(), e))?;
        Ok(Producer { shared, writer: Mutex::new(Some(writer)) })
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.shared.topics.read().map_err(|_| Error::Closed)?.get(name) {
            // Deleted (in any process): the name may be a new topic by now.
            if !t.is_deleted() {
                return Ok(t.clone());
            }
        }
        let topic = self.shared.store.topic(name)?;
        self.shared.topics.write().map_err(|_| Error::Closed)?.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    fn level(&self, priority: i32) -> Result<Arc<Level>> {
        {
            let levels = self.shared.levels.read().map_err(|_| Error::Closed)?;
            if let Some(l) = levels.iter().find(|l| l.priority == priority) {
                return Ok(l.clone());
            }
        }
        let mut levels = self.shared.levels.write().map_err(|_| Error::Closed)?;
        if let Some(l) = levels.iter().find(|l| l.priority == priority) {
            return Ok(l.clone());
        }
        if levels.len() >= MAX_PRIORITY_LEVELS {
            return Err(Error::InvalidConfig(format!(
                "a producer supports at most {MAX_PRIORITY_LEVELS} distinct priorities"
            )));
        }
        let level = Arc::new(Level { priority, counts: ShedCounts::new(), dropped: AtomicU64::new(0) });
        levels.push(level.clone());
        // Highest priority first: shedding evicts from the end.
        levels.sort_by_key(|l| std::cmp::Reverse(l.priority));
        Ok(level)
    }

    /// Reports (once) an error the writer ran into; a fatal one, every time.
    fn take_error(&self) -> Result<()> {
        let shared = &self.shared;
        if !shared.has_failure.load(Ordering::SeqCst) {
            return Ok(());
        }
        let fatal = || shared.fatal.lock().map(|f| f.as_ref().map(Fatal::error)).map_err(|_| Error::Closed);
        if let Some(e) = fatal()? {
            return Err(e);
        }
        // Cleared before the error is taken, so one recorded meanwhile sets it again; a
        // fatal one recorded between the look above and the clear is seen by this second
        // look (`fail` records, then sets the flag).
        shared.has_failure.store(false, Ordering::SeqCst);
        if let Some(e) = fatal()? {
            shared.has_failure.store(true, Ordering::SeqCst);
            return Err(e);
        }
        match shared.error.lock().map_err(|_| Error::Closed)?.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Enqueues one message. Returns `Ok(false)` when shedding dropped this very message.
    /// `may_block` is false when the caller cannot wait (it holds a lock it must release
    /// first); then a `block` policy under pressure returns [`SendError::Backpressure`] with
    /// the reason "would block", and the caller retries with `may_block`.
    ///
    /// # Errors
    /// See [`SendError`].
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        topic: &str,
        value: &[u8],
        key: Option<&[u8]>,
        headers: &[u8],
        partition: Option<u32>,
        priority: i32,
        may_block: bool,
    ) -> std::result::Result<bool, SendError> {
        self.send_record(topic, Some(value), key, headers, partition, priority, may_block)
    }

    /// As [`Self::send`], with `value` `None` for a tombstone (a record without a value:
    /// compaction deletes its key). As in Kafka, a tombstone is a record like any other on
    /// any topic; on a compacted topic it needs a key, as every message does.
    ///
    /// # Errors
    /// See [`SendError`].
    #[allow(clippy::too_many_arguments)]
    pub fn send_record(
        &self,
        topic: &str,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &[u8],
        partition: Option<u32>,
        priority: i32,
        may_block: bool,
    ) -> std::result::Result<bool, SendError> {
        self.send_inner(topic, value, key, headers, partition, priority, may_block, Track::No)
            .map(|tracked| tracked.accepted)
    }

    /// As [`Self::send`] without waiting (under pressure with `on_full="block"` it returns
    /// [`SendError::Backpressure`] with the reason "would block"), for an async sender: the
    /// result names the partition chosen and the message's sequence, whose outcome (offset
    /// or fate) the writer reports to [`Self::ledger`] before [`Self::flushed`] counts it;
    /// with `keep`, it also carries a [`Receipt`] of it (see [`Ledger::keep`]).
    ///
    /// # Errors
    /// See [`SendError`].
    #[allow(clippy::too_many_arguments)]
    pub fn send_tracked(
        &self,
        topic: &str,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &[u8],
        partition: Option<u32>,
        priority: i32,
        keep: bool,
    ) -> std::result::Result<Tracked, SendError> {
        let track = if keep { Track::Keep } else { Track::Ledger };
        self.send_inner(topic, value, key, headers, partition, priority, false, track)
    }

    /// Where the writer reports the outcomes of tracked messages.
    pub fn ledger(&self) -> &Arc<Ledger> {
        self.shared.ledger.get_or_init(Default::default)
    }

    /// [`Self::send_record`], tracked as `track` says.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn send_inner(
        &self,
        topic: &str,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: &[u8],
        partition: Option<u32>,
        priority: i32,
        may_block: bool,
        track: Track,
    ) -> std::result::Result<Tracked, SendError> {
        let tombstone = value.is_none();
        let value = value.unwrap_or_default();
        // One load each: the fork check comes first, a child must not touch the buffers
        // (their locks may have been held by a parent thread at the fork).
        self.shared.store.check_open().map_err(SendError::Failed)?;
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(SendError::Failed(Error::Closed));
        }
        self.take_error()?;
        let topic = self.topic(topic)?;
        // The topic's limit, as every process sees it now (an alter_topic included).
        topic.settings().refresh()?;
        if key.is_none() && topic.settings().compacted() {
            // Refused here, where the caller sees it, rather than by the writer thread.
            return Err(Error::InvalidConfig(format!(
                "topic {:?} is compacted (cleanup_policy=\"compact\"): every message needs a key",
                topic.name()
            ))
            .into());
        }
        let limit = topic.settings().max_message_bytes();
        let size = value.len() + key.map_or(0, <[u8]>::len) + headers.len();
        if size > limit {
            return Err(Error::MessageTooLarge {
                size: size as u64,
                limit: limit as u64,
                what: "max_message_bytes",
            }
            .into());
        }
        let partition = topic.choose(partition, key)?.partition();
        let level = self.level(priority)?;
        let pressure = &self.shared.pressure;
        if pressure.is_on() {
            match self.shared.config.on_full {
                OnFull::Raise => {
                    return Err(SendError::Backpressure(format!(
                        "producer buffer above its high watermark ({} of {} messages buffered)",
                        pressure.buffered(),
                        self.shared.config.buffer_messages
                    )))
                }
                OnFull::Block(_) if !may_block => {
                    // The caller waits elsewhere (after releasing a lock, or in an event
                    // loop): it wants the buffer drained now, as a blocking sender does.
                    self.shared.writer_idle.store(false, Ordering::Release);
                    self.shared.wake_writer();
                    return Err(SendError::Backpressure("would block".into()));
                }
                OnFull::Block(timeout) => {
                    // A sender about to wait wants the buffer drained now, not when the
                    // writer's linger passes (Kafka likewise sends at once while senders wait
                    // for buffer memory).
                    self.shared.writer_idle.store(false, Ordering::Release);
                    self.shared.wake_writer();
                    let deadline = timeout.map(|t| Instant::now() + t);
                    let closing = || {
                        self.shared.closing.load(Ordering::Acquire)
                            || self.shared.writer_died.load(Ordering::Acquire)
                    };
                    if !pressure.wait(deadline, closing) {
                        self.take_error()?;
                        if closing() {
                            return Err(SendError::Failed(Error::Closed));
                        }
                        return Err(SendError::Backpressure(format!(
                            "producer buffer stayed above its low watermark for {:.3}s",
                            timeout.unwrap_or_default().as_secs_f64()
                        )));
                    }
                }
                OnFull::Shed => {
                    let full = pressure.buffered() >= self.shared.config.buffer_messages;
                    let admitted = if pressure.external() && !full {
                        // A lagging consumer, not a full buffer: shed the lowest priority in
                        // use and let the higher ones through.
                        let lowest =
                            self.shared.levels.read().map_err(|_| Error::Closed)?.last().map(|l| l.priority);
                        lowest.is_some_and(|lowest| priority > lowest)
                    } else {
                        self.evict_below(priority)?
                    };
                    if !admitted {
                        level.dropped.fetch_add(1, Ordering::Relaxed);
                        return Ok(Tracked { accepted: false, partition, seq: None, receipt: None });
                    }
                }
            }
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(key.unwrap_or_default());
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(headers);
        let mut pending = Pending {
            topic,
            timestamp: now_ms(),
            txn: self.shared.txn_id.load(Ordering::Acquire),
            bytes: bytes.into_boxed_slice(),
            partition,
            priority,
            // Both fit: `size` is at most `max_message_bytes`, which is below 2^31.
            key_len: key.map_or(NO_KEY, |k| k.len() as u32),
            headers_len: headers.len() as u32 | if tombstone { TOMBSTONE } else { 0 },
            tracked: 0,
        };
        let ledger = (track != Track::No).then(|| self.ledger());
        if self.shared.shedding {
            // Live before it is in the ring, so the writer never pops it uncounted.
            level.counts.add_live();
        }
        pressure.add(1);
        let seq = self.shared.sent.fetch_add(1, Ordering::AcqRel);
        let mut receipt = None;
        if let Some(ledger) = ledger {
            pending.tracked = seq + 1;
            if track == Track::Keep {
                receipt = Some(ledger.keep_unsent(seq));
            }
        }
        if let Err(pending) = self.shared.ring.try_push(pending) {
            // The ring has room for twice the buffer, so it is only full of shed messages
            // the writer has not popped yet (it pops them without writing, at once, unless
            // it is in the middle of a write): wait for it rather than lose this one.
            self.shared.writer_idle.store(false, Ordering::Release);
            self.shared.wake_writer();
            if self.shared.ring.push_timeout(pending, None).is_err() {
                // Closed meanwhile: this message was never buffered (unless shedding already
                // counted it as sent and dropped).
                if !self.shared.shedding || level.counts.unbuffer() {
                    pressure.remove(1);
                    self.shared.sent.fetch_sub(1, Ordering::AcqRel);
                }
                if let (Some(ledger), Some(_)) = (ledger, &receipt) {
                    ledger.release(&[seq]);
                }
                return Err(SendError::Failed(Error::Closed));
            }
        }
        // The lingering writer wakes by itself; wake it early only when a batch's worth is
        // waiting (or when lingering is off).
        // Only the sender that flips `writer_idle` notifies: the others stay off the mutex.
        if pressure.buffered() >= self.shared.wake_at()
            && self.shared.writer_idle.load(Ordering::Acquire)
            && self.shared.writer_idle.swap(false, Ordering::AcqRel)
        {
            self.shared.wake_writer();
        }
        Ok(Tracked { accepted: true, partition, seq: ledger.map(|_| seq), receipt })
    }

    /// Drops the oldest buffered message of the lowest priority below `priority`, if any
    /// (the writer drops it when it pops it; see the module docs).
    fn evict_below(&self, priority: i32) -> Result<bool> {
        let levels = self.shared.levels.read().map_err(|_| Error::Closed)?;
        for level in levels.iter().rev().take_while(|l| l.priority < priority) {
            if level.counts.shed_one() {
                level.dropped.fetch_add(1, Ordering::Relaxed);
                self.shared.pressure.remove(1);
                self.shared.accounted.fetch_add(1, Ordering::AcqRel);
                if self.shared.flushers.load(Ordering::SeqCst) > 0 {
                    self.shared.progress.bump();
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until every message sent before this call is written (and, with
    /// `fsync="always"`, on disk) or dropped. Returns false on timeout.
    ///
    /// # Errors
    /// The writer's failure since the last report.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<bool> {
        self.check_not_inherited()?;
        let target = self.shared.sent.load(Ordering::Acquire);
        let deadline = timeout.map(|t| Instant::now() + t);
        // SeqCst with the writer's `accounted` update, `flushers` check and round bump: the
        // round is taken before checking, so a round ended after the check ends the wait
        // (the timed wait is only a safety net).
        self.shared.flushers.fetch_add(1, Ordering::SeqCst);
        let mut done = true;
        let mut batch = Vec::new();
        loop {
            let round = self.shared.progress.round();
            if self.shared.accounted.load(Ordering::SeqCst) >= target
                || self.shared.writer_died.load(Ordering::SeqCst)
            {
                break;
            }
            if writer::write_here(&self.shared, &mut batch) {
                continue;
            }
            self.shared.wake_writer();
            let mut slice = Duration::from_millis(50);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    done = false;
                    break;
                }
                slice = slice.min(d - now);
            }
            self.shared.progress.wait(round, slice);
        }
        self.shared.flushers.fetch_sub(1, Ordering::AcqRel);
        self.take_error()?;
        Ok(done)
    }

    /// Messages accepted by `send` so far: a flush target for [`Self::flushed`].
    pub fn sent_count(&self) -> u64 {
        self.shared.sent.load(Ordering::Acquire)
    }

    /// The non-blocking step of a flush: true once every message counted in `target` (a
    /// [`Self::sent_count`]) is written (and on disk with `fsync="always"`) or dropped;
    /// otherwise wakes the writer and returns false. An async flusher waits on
    /// [`Self::flush_bell`] between calls.
    ///
    /// # Errors
    /// The writer's failure since the last report (when done).
    pub fn flushed(&self, target: u64) -> Result<bool> {
        self.check_not_inherited()?;
        if self.shared.accounted.load(Ordering::SeqCst) >= target
            || self.shared.writer_died.load(Ordering::SeqCst)
        {
            self.take_error()?;
            return Ok(true);
        }
        self.shared.wake_writer();
        Ok(false)
    }

    /// Counts an async flusher in (`true`, before its first [`Self::flushed`] check) or
    /// out (`false`, once done or cancelled): while counted, the writer does not linger
    /// and bumps [`Self::flush_bell`] after every round.
    pub fn set_flushing(&self, on: bool) {
        if on {
            self.shared.flushers.fetch_add(1, Ordering::SeqCst);
            self.shared.wake_writer();
        } else {
            self.shared.flushers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The word that moves after every writer round while someone flushes (for the waker).
    pub fn flush_bell(&self) -> Arc<dyn crate::waker::Bell> {
        Arc::new(FlushBell(self.shared.clone()))
    }

    /// The word that moves when pressure ends (or the producer closes), for the waker.
    pub fn pressure_bell(&self) -> Arc<dyn crate::waker::Bell> {
        Arc::new(PressureBell(self.shared.clone()))
    }

    /// Counts `waited` into `blocked_seconds`: the time an async sender waited for the end
    /// of pressure in its event loop (it waits there, not in [`Self::send`]).
    pub fn add_blocked(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.shared.pressure.blocked_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> ProducerStats {
        let s = &self.shared;
        let levels = s.levels.read().map(|l| l.clone()).unwrap_or_default();
        ProducerStats {
            buffered: s.pressure.buffered(),
            sent: s.sent.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            dropped: levels.iter().map(|l| (l.priority, l.dropped.load(Ordering::Relaxed))).collect(),
            failed: s.failed.load(Ordering::Relaxed),
            high_watermark_hits: s.pressure.high_watermark_hits.load(Ordering::Relaxed),
            blocked_seconds: s.pressure.blocked_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Flushes what was sent (aborting an open transaction), then stops the writer.
    /// Closing twice is harmless. In a process forked after the store was opened it does
    /// nothing: the writer thread, the buffers and the transaction are the parent's.
    ///
    /// # Errors
    /// The writer's last failure, if not reported yet.
    pub fn close(&self) -> Result<()> {
        if self.shared.store.is_inherited() {
            return Ok(());
        }
        let mut aborted = Ok(());
        if self.in_transaction() {
            // Left open, it would hold back every reader of its partitions until the next
            // instance of the name opened.
            aborted = self.abort_transaction();
        }
        let flushed = if self.shared.closing.load(Ordering::Acquire) { Ok(true) } else { self.flush(None) };
        self.shared.closing.store(true, Ordering::Release);
        // A send past its closing check either got into the ring (the writer drains it
        // before it stops) or is refused by it; none waits for a writer that is gone.
        self.shared.ring.close();
        self.shared.pressure.wake_all();
        {
            let _signal = self.shared.signal.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.work.notify_all();
        }
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
        // A transaction a newer instance took over is reported (it was aborted by it).
        aborted.and(flushed.map(|_| ()))
    }

    /// Starts or ends pressure from outside the buffer (the writer does so for `max_lag`
    /// while the slowest consumer group is too far behind). Policies apply as for a full
    /// buffer.
    pub fn set_external_pressure(&self, on: bool) {
        self.shared.pressure.set_external(on);
    }

    /// Names of the topics this producer has sent to.
    pub fn topics(&self) -> Vec<String> {
        self.shared.topics.read().map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    /// True once [`Self::close`] ran, and always in a process forked after the store was
    /// opened.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire) || self.shared.store.is_inherited()
    }

    /// Fails in a process forked after the store was opened, where the producer's buffers
    /// and locks belong to the parent.
    ///
    /// # Errors
    /// [`Error::Forked`].
    pub fn check_not_inherited(&self) -> Result<()> {
        if self.shared.store.is_inherited() {
            return Err(Error::Forked);
        }
        Ok(())
    }

    /// The producer's identity, if it is idempotent.
    pub fn identity(&self) -> Option<&Identity> {
        self.shared.identity.as_ref()
    }

    fn named_identity(&self) -> Result<&Identity> {
        self.identity().filter(|i| i.name().is_some()).ok_or_else(|| {
            Error::InvalidConfig(
                "transactions need a named idempotent producer: store.producer(name=..., idempotent=True)"
                    .into(),
            )
        })
    }

    /// Starts a transaction: every message sent until it ends belongs to it. Messages sent
    /// before are written first, outside it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unnamed or shedding producer or a transaction
    /// already open; [`Error::ProducerFenced`]; earlier write failures.
    pub fn begin_transaction(&self) -> Result<()> {
        self.check_not_inherited()?;
        let identity = self.named_identity()?;
        if self.shared.config.on_full == OnFull::Shed {
            return Err(Error::InvalidConfig(
                "a producer with on_full=\"shed\" cannot run transactions: shedding would commit part of one"
                    .into(),
            ));
        }
        identity.check_current()?;
        self.flush(None)?;
        let mut txn = self.shared.txn.lock().map_err(|_| Error::Closed)?;
        if txn.is_some() {
            return Err(Error::InvalidConfig("a transaction is already open on this producer".into()));
        }
        let id = self.shared.txns_begun.fetch_add(1, Ordering::AcqRel) + 1;
        *txn = Some((id, TxnPartitions::new()));
        self.shared.txn_id.store(id, Ordering::Release);
        Ok(())
    }

    /// True while a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.shared.txn_id.load(Ordering::Acquire) != 0
    }

    /// Writes everything sent in the transaction, then commits it: its messages become
    /// visible to readers in every partition at once. If any write failed, the transaction
    /// is aborted instead and the failure returned.
    ///
    /// # Errors
    /// The write failure (after aborting), [`Error::ProducerFenced`], I/O errors.
    pub fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true)
    }

    /// Aborts the transaction: readers never see its messages.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] (the new instance aborts it), I/O errors.
    pub fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false)
    }

    fn end_transaction(&self, commit: bool) -> Result<()> {
        self.check_not_inherited()?;
        let identity = self.named_identity()?;
        if self.shared.txn_id.swap(0, Ordering::AcqRel) == 0 {
            return Err(Error::InvalidConfig("no transaction is open on this producer".into()));
        }
        // Sends from now on are outside the transaction; those before it carry its number
        // and are written as part of it by this flush.
        let flushed = self.flush(None);
        let ended = identity.end_transaction(&self.shared.store, commit && flushed.is_ok());
        *self.shared.txn.lock().map_err(|_| Error::Closed)? = None;
        if let Err(Error::Io { .. }) = &ended {
            // Some markers may be missing: the transaction file must stay as it is for the
            // next instance to finish, so this one may not start another over it.
            self.shared.fail(
                None,
                Some(Fatal::Failed(
                    "a transaction could not be finished (writing its markers failed); open the \
                     producer's name again: the new instance finishes it"
                        .into(),
                )),
            );
        }
        flushed?;
        ended
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.shared.store.is_inherited() {
            // The writer thread does not exist in a forked child: detaching its handle would
            // touch a thread descriptor the C library may have reused since the fork.
            if let Some(handle) = self.writer.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(handle);
            }
            return;
        }
        // Drain what was accepted: a dropped producer must not lose sent messages.
        let _ = self.close();
    }
}
