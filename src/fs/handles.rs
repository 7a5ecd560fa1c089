//! Open files by handle number, and the kernel's passthrough backing ids (one per blob while
//! any handle on it is open), so a complete blob is read by the kernel from its local file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use fuser::{BackingId, ReplyOpen};
use parking_lot::Mutex;

use super::namespace::OpenFile;
use crate::digest::Digest;

/// One open file.
pub struct Handle {
    /// What reads go to.
    pub file: Arc<dyn OpenFile>,
    /// Keeps the kernel's backing file registered while this handle is open.
    _backing: Option<Arc<BackingId>>,
}

/// The handle table.
pub struct Handles {
    open: Mutex<HashMap<u64, Handle>>,
    backing: Mutex<HashMap<Digest, Weak<BackingId>>>,
    passthrough: AtomicBool,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles {
            open: Mutex::new(HashMap::new()),
            backing: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    /// Whether the kernel agreed to passthrough at session start.
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
    }

    /// Registers `file` and answers the open: with passthrough when the file is one complete
    /// local blob and the kernel takes it, else with the page cache kept between opens (the
    /// content never changes).
    pub fn open(&self, file: Box<dyn OpenFile>, reply: ReplyOpen) {
        let file: Arc<dyn OpenFile> = Arc::from(file);
        let backing = self.backing_for(&reply, file.as_ref());
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(
            fh,
            Handle {
                file,
                _backing: backing.clone(),
            },
        );
        match backing {
            // The kernel refuses FOPEN_KEEP_CACHE together with passthrough.
            Some(id) => {
                reply.opened_passthrough(fuser::FileHandle(fh), fuser::FopenFlags::empty(), &id)
            }
            None => reply.opened(fuser::FileHandle(fh), fuser::FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    /// The open file of handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<dyn OpenFile>> {
        self.open.lock().get(&fh).map(|h| h.file.clone())
    }

    /// Closes handle `fh` (the blob it held is released when the last reference goes).
    pub fn release(&self, fh: u64) {
        self.open.lock().remove(&fh);
    }

    /// The backing id for `file`'s blob, registering it on first use.
    fn backing_for(&self, reply: &ReplyOpen, file: &dyn OpenFile) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let blob = file.blob()?;
        let local = blob.complete_file()?;
        let mut map = self.backing.lock();
        if let Some(id) = map.get(blob.digest()).and_then(Weak::upgrade) {
            return Some(id);
        }
        match reply.open_backing(local) {
            Ok(id) => {
                let id = Arc::new(id);
                map.insert(*blob.digest(), Arc::downgrade(&id));
                map.retain(|_, w| w.strong_count() > 0);
                Some(id)
            }
            Err(e) => {
                tracing::warn!(
                    "kernel refused FUSE passthrough ({e}); serving reads in userspace from now on"
                );
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }
}
