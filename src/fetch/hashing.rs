//! [`InOrderHasher`]: sha256 of a download on a thread of its own.
//!
//! The download writer puts pieces back in order, writes them to the temp file and hashes them.
//! Hashing (SHA-NI: 2.1 GB/s of one core's CPU time, sha2 and ring alike, 0.51 s per GiB) costs
//! twice what the write into the page cache does (0.26 s per GiB with `sync_file_range`), so on
//! one thread they would bound the download at ~1.3 GB/s; here the writer hands each piece (a
//! reference-counted [`Bytes`], no copy) to a hashing thread through a short queue, and the two
//! run on separate cores. In a cold 1 GiB read from a loopback nginx the hash ends within ~1 ms
//! of the writer's last piece: it keeps up, and receiving and writing set the pace. If the
//! thread cannot be started, hashing stays inline.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::digest::{Digest, Hasher};

/// Pieces queued for the hashing thread: short, since each keeps its network buffer alive.
const QUEUE: usize = 8;

/// A sha256 fed in order, computed off the caller's thread.
pub(super) enum InOrderHasher {
    /// Hashing on its own thread.
    Thread {
        queue: SyncSender<Bytes>,
        thread: JoinHandle<Digest>,
    },
    /// Hashing on the caller's thread (no thread could be started).
    Inline(Hasher),
}

impl InOrderHasher {
    /// Starts the hashing thread.
    pub(super) fn start() -> InOrderHasher {
        let (queue, pieces) = sync_channel::<Bytes>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("lazycas-hash".into())
            .spawn(move || {
                let mut hasher = Hasher::new();
                for piece in pieces {
                    hasher.update(&piece);
                }
                hasher.finish()
            });
        match spawned {
            Ok(thread) => InOrderHasher::Thread { queue, thread },
            Err(e) => {
                tracing::debug!("hashing inline: cannot start a thread: {e}");
                InOrderHasher::Inline(Hasher::new())
            }
        }
    }

    /// Feeds the next piece.
    pub(super) fn update(&mut self, piece: Bytes) {
        let sent = match self {
            InOrderHasher::Thread { queue, .. } => queue.send(piece),
            InOrderHasher::Inline(h) => {
                h.update(&piece);
                Ok(())
            }
        };
        // The thread only stops when the queue closes, so a failed send means it died: the
        // digest it gives (if any) is then wrong, and `finish` reports that as `None`.
        if sent.is_err() {
            tracing::warn!("the hashing thread stopped early");
        }
    }

    /// The digest of every piece fed; `None` if the hashing thread died.
    pub(super) fn finish(self) -> Option<Digest> {
        match self {
            InOrderHasher::Thread { queue, thread } => {
                drop(queue);
                thread.join().ok()
            }
            InOrderHasher::Inline(h) => Some(h.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_pieces_in_order() {
        let mut h = InOrderHasher::start();
        for piece in [&b"hello "[..], b"", b"world"] {
            h.update(Bytes::copy_from_slice(piece));
        }
        assert_eq!(h.finish(), Some(Digest::of(b"hello world")));
        let mut inline = InOrderHasher::Inline(Hasher::new());
        inline.update(Bytes::from_static(b"x"));
        assert_eq!(inline.finish(), Some(Digest::of(b"x")));
    }
}
