//! Opening a partition: creating or finding its directory, taking the control block, and
//! recovering the tail when no other handle vouches for it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::view::View;
use super::{LogConfig, PartitionLog, CONTROL_FILE};
use crate::segment::{Check, CursorEnd, OnDamage};
use crate::settings::SharedSettings;
use crate::shm::{ControlBlock, Opened, Since, WriteGuard};
use crate::{Error, Result};

impl PartitionLog {
    /// Opens (creating if needed) the partition log in `dir`. If no other process has it
    /// open, the tail of the active segment is validated and a torn or damaged tail is
    /// truncated before anything else can read it.
    ///
    /// # Errors
    /// I/O errors, foreign files in the directory, or corruption in sealed segments'
    /// structure that makes the log unusable.
    pub fn open(dir: &Path, topic: &str, partition: u32, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let settings = Arc::new(SharedSettings::fixed(config.topic_settings()));
        Self::open_with_settings(dir, topic, partition, config, settings)
    }

    /// As [`Self::open`], with the topic's shared settings deciding the shape of new
    /// segments, message limits and retention (`config`'s own values for those are unused).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with_settings(
        dir: &Path,
        topic: &str,
        partition: u32,
        config: LogConfig,
        settings: Arc<SharedSettings>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        Self::open_existing(dir, topic, partition, config, settings)
    }

    /// As [`Self::open_with_settings`], but never creates the directory: a topic's
    /// partitions are opened by path, and a path whose topic was just deleted must not be
    /// brought back to life (nor a directory made inside a new topic of the same name).
    ///
    /// # Errors
    /// As [`Self::open`]; a missing directory is an I/O error of kind `NotFound`.
    pub fn open_existing(
        dir: &Path,
        topic: &str,
        partition: u32,
        config: LogConfig,
        settings: Arc<SharedSettings>,
    ) -> Result<Self> {
        config.validate()?;
        // Opening is serialised per partition (the control block's open lock, held until
        // `end_open`) so "am I the only handle?" and the recovery that follows cannot
        // interleave with another opener (see shm).
        let (control, left) = match ControlBlock::open(&dir.join(CONTROL_FILE))? {
            Opened::Alone(c, left) => (c, Some(left)),
            Opened::Shared(c) => (c, None),
        };
        let log = PartitionLog {
            dir: dir.to_owned(),
            topic: topic.to_owned(),
            partition,
            config,
            settings,
            control,
            view: RwLock::new(View { generation: u64::MAX, compactions: u64::MAX, segments: Vec::new() }),
            dirty: AtomicBool::new(false),
            doorbell: std::sync::OnceLock::new(),
            producers: Mutex::new(None),
            closed: AtomicBool::new(false),
            opened: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        };
        {
            let mut guard = log.control.lock()?;
            match left {
                Some(left) => {
                    let end = log.recover(&mut guard, left.head, true, left.since)?;
                    let synced = match left.since {
                        // Recovery read everything it kept back from the disk.
                        Since::Restart { .. } => end,
                        Since::SameBoot => log.control.synced_offset().min(end),
                        Since::Unknown => 0,
                    };
                    log.control.mark_recovered(synced);
                }
                None if guard.owner_died() => {
                    let torn = guard.head();
                    log.recover(&mut guard, Some(torn), false, Since::SameBoot)?;
                }
                None => {
                    log.refresh(&guard)?;
                    // Live processes keep the head, but it is a claim about the data, not
                    // proof: bytes damaged since (or a stale handle of this process keeping
                    // the block "shared") must not be counted as messages.
                    if !log.tail_intact(&guard)? {
                        let head = guard.head();
                        log.recover(&mut guard, Some(head), false, Since::SameBoot)?;
                    }
                }
            }
        }
        log.control.end_open();
        log.opened.store(true, Ordering::Release);
        Ok(log)
    }

    /// True when the published batches after the active segment's last index entry pass
    /// their CRCs and continue each other's offsets: a bounded check (one index interval
    /// plus a batch) of the part of the head most likely to be wrong.
    fn tail_intact(&self, guard: &WriteGuard<'_>) -> Result<bool> {
        let head = guard.head();
        let view = self.read_view()?;
        let active = view.active();
        let (end, pos) = (head.committed_pos as usize, head.last_index_pos as usize);
        if pos >= end {
            return Ok(true);
        }
        // The walk starts at whatever offset the first batch there names: the check is that
        // the batches agree with each other and with the head, not with the index.
        let Some(first) = active.header_at(pos, end) else {
            return Ok(false);
        };
        let mut cursor = active.cursor(pos, end, first.base_offset, Check::Crc, OnDamage::Stop);
        cursor.by_ref().for_each(drop);
        Ok(cursor.end() == Some(&CursorEnd::Clean) && cursor.expected() == head.next_offset)
    }
}
