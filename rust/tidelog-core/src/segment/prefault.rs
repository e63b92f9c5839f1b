//! A background thread that pre-faults the pages appends are about to write (see
//! `FileMap::prepare_write`). On the 2-core dev machine this moves the kernel's page
//! allocation and zeroing (a quarter of a single-message append) off the appending thread.
//!
//! Requests are best effort: if the queue is full, or the thread cannot be started (or did
//! not survive a `fork`), the writer's own page faults do the same work, only slower.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use super::FileMap;

type Request = (Arc<FileMap>, usize, usize);

static QUEUE: OnceLock<Option<Mutex<SyncSender<Request>>>> = OnceLock::new();

/// Asks the prefault thread to populate `from..to` of `map` for writing.
pub(super) fn request(map: Arc<FileMap>, from: usize, to: usize) {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(64);
        std::thread::Builder::new()
            .name("tidelog-prefault".into())
            .spawn(move || {
                for (map, from, to) in rx {
                    map.populate_for_write(from, to);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    let Some(queue) = queue else { return };
    let sent = queue.lock().map(|tx| tx.try_send((map, from, to)));
    if let Ok(Err(TrySendError::Disconnected((map, from, to)))) = sent {
        map.populate_for_write(from, to);
    }
}
