//! Open files by handle number, and the kernel's passthrough backing ids (one per blob while
//! any handle on it is open), so a complete blob is read by the kernel from its local file.
//!
//! The kernel fails an open with EIO when it would mix two io modes on one inode: passthrough
//! while a file of that inode is open through the page cache, or the reverse. A blob becomes
//! complete (or a member is kept decoded) while files of it are open, so the mode of an inode's
//! first open holds until its last handle is released: later opens follow it.

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
    /// The inode it was opened on.
    ino: u64,
    /// Keeps the kernel's backing file registered while this handle is open.
    _backing: Option<Arc<BackingId>>,
}

/// How the open handles of one inode are read by the kernel, and how many there are.
enum IoMode {
    /// Through the page cache.
    Cached(u32),
    /// From this backing file.
    Passthrough(u32, Arc<BackingId>),
}

impl IoMode {
    fn count(&mut self) -> &mut u32 {
        match self {
            IoMode::Cached(n) | IoMode::Passthrough(n, _) => n,
        }
    }
}

/// The handle table.
pub struct Handles {
    open: Mutex<HashMap<u64, Handle>>,
    /// The io mode of every inode with open handles.
    modes: Mutex<HashMap<u64, IoMode>>,
    backing: Mutex<HashMap<Digest, Weak<BackingId>>>,
    passthrough: AtomicBool,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles {
            open: Mutex::new(HashMap::new()),
            modes: Mutex::new(HashMap::new()),
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

    /// Registers `file`, opened on inode `ino`, and answers the open: with passthrough when the
    /// file is one complete local blob and the kernel takes it, else with the page cache kept
    /// between opens (the content never changes); in the inode's current mode while it has
    /// other handles open.
    pub fn open(&self, ino: u64, file: Box<dyn OpenFile>, reply: ReplyOpen) {
        let file: Arc<dyn OpenFile> = Arc::from(file);
        let backing = {
            let mut modes = self.modes.lock();
            let mode = match modes.remove(&ino) {
                Some(mut held) => {
                    *held.count() += 1;
                    held
                }
                None => match self.backing_for(&reply, file.as_ref()) {
                    Some(id) => IoMode::Passthrough(1, id),
                    None => IoMode::Cached(1),
                },
            };
            let backing = match &mode {
                IoMode::Passthrough(_, id) => Some(id.clone()),
                IoMode::Cached(_) => None,
            };
            modes.insert(ino, mode);
            backing
        };
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(
            fh,
            Handle {
                file,
                ino,
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
        let Some(handle) = self.open.lock().remove(&fh) else {
            return;
        };
        let mut modes = self.modes.lock();
        if let Some(mode) = modes.get_mut(&handle.ino) {
            *mode.count() -= 1;
            if *mode.count() == 0 {
                modes.remove(&handle.ino);
            }
        }
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
