//! The audit file's background fsync: after each batch the writer asks for a sync and goes on
//! writing; this thread syncs a duplicate of the current file's handle. A caller waiting for its
//! event to be written (see [`super::Audit::confirm`]) thus never waits for another batch's
//! fsync, and what nobody waited for still reaches the disk within about one fsync.

use std::fs::File;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

/// The writer's side: where to ask for a sync, and the handle to sync.
#[derive(Debug)]
pub struct Syncer {
    wanted: SyncSender<()>,
    current: Arc<Mutex<File>>,
}

impl Syncer {
    /// Starts the thread, syncing `file` (a duplicate of the writer's handle) when asked.
    pub fn start(file: File) -> std::io::Result<Syncer> {
        // One request pending at most: requests made while one waits are the same request.
        let (wanted, requests) = sync_channel(1);
        let current = Arc::new(Mutex::new(file));
        let handle = current.clone();
        std::thread::Builder::new()
            .name("audit-sync".to_string())
            .spawn(move || run(&handle, &requests))?;
        Ok(Syncer { wanted, current })
    }

    /// Asks for a sync without waiting for it.
    pub fn request(&self) {
        match self.wanted.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::error!(
                    "the audit sync thread stopped; the audit file is synced only at rotation and shutdown"
                );
            }
        }
    }

    /// The file to sync from now on (after a rotation).
    pub fn replace(&self, file: File) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = file;
    }
}

fn run(current: &Mutex<File>, requests: &Receiver<()>) {
    while requests.recv().is_ok() {
        // A duplicate, so that the writer can swap the file while this one syncs.
        let file = current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_clone();
        if let Err(error) = file.and_then(|f| f.sync_data()) {
            tracing::error!(%error, "cannot sync the audit file");
        }
    }
}
