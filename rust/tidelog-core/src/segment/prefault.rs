//! A background thread that pre-faults the pages appends are about to write (see
//! `FileMap::prepare_write`). On the 2-core dev machine this moves the kernel's page
//! allocation and zeroing (a quarter of a single-message append) off the appending thread.
//!
//! Requests are best effort: if the queue is full, or the thread cannot be started (or did
//! not survive a `fork`), the writer's own page faults do the same work, only slower.
//!
//! A thread that is itself a background writer (the producer's) populates inline instead:
//! nobody waits on it, and handing the work to one more busy thread only takes a core from
//! the Python threads (on the 2-core dev machine it cost the 4-thread `send` benchmark ~4%).

use std::cell::Cell;

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use super::FileMap;

type Request = (Arc<FileMap>, usize, usize);

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Makes the calling thread populate its own pages (see the module notes).
pub fn populate_inline_on_this_thread() {
    INLINE.with(|i| i.set(true));
}

static QUEUE: OnceLock<Option<Mutex<SyncSender<Request>>>> = OnceLock::new();

/// Asks the prefault thread to populate `from..to` of `map` for writing.
pub(super) fn request(map: Arc<FileMap>, from: usize, to: usize) {
    if INLINE.with(Cell::get) {
        map.populate_for_write(from, to);
        return;
    }
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
