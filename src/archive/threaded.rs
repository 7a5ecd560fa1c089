//! [`ThreadedIndexBuilder`]: an [`IndexBuilder`] on a thread of its own, for the download path.
//!
//! The download's thread reads the socket, writes the temp file and feeds the observer; with the
//! index built inline, the inflate (most of the index build) ran on that thread too, and the
//! socket and file waited for it. Here `feed` only copies the bytes into batches for the builder
//! thread, so on a machine with two cores the download and the inflate overlap. The batches in
//! flight are bounded (a few MiB), so a slow builder slows the download instead of filling memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::{ArchiveError, BuiltIndex, IndexBuilder};

/// Bytes gathered before a batch is handed over.
const BATCH: usize = 256 * 1024;
/// Batches in flight before `feed` waits for the builder.
const IN_FLIGHT: usize = 8;

/// The builder thread, while it runs.
struct Worker {
    batches: SyncSender<Vec<u8>>,
    handle: JoinHandle<Result<BuiltIndex, ArchiveError>>,
}

/// Builds an archive's index from its bytes, fed once and in order, on a thread of its own (or
/// inline when no thread can be started). Errors in the bytes surface from a later `feed` or
/// from `finish`.
pub struct ThreadedIndexBuilder {
    worker: Option<Worker>,
    inline: Option<IndexBuilder>,
    batch: Vec<u8>,
    failed: Option<String>,
}

impl Default for ThreadedIndexBuilder {
    fn default() -> Self {
        ThreadedIndexBuilder::new()
    }
}

impl ThreadedIndexBuilder {
    /// A builder with the default checkpoint spacing, running on its own thread.
    pub fn new() -> ThreadedIndexBuilder {
        let (batches, queue) = sync_channel(IN_FLIGHT);
        let spawned = std::thread::Builder::new()
            .name("lazycas-index".to_string())
            .spawn(move || build(queue));
        let (worker, inline) = match spawned {
            Ok(handle) => (Some(Worker { batches, handle }), None),
            Err(e) => {
                tracing::debug!("archive index built inline: {e}");
                (None, Some(IndexBuilder::new()))
            }
        };
        ThreadedIndexBuilder {
            worker,
            inline,
            batch: Vec::new(),
            failed: None,
        }
    }

    /// Feeds the next bytes of the archive. After an error the builder is spent: later calls
    /// return [`ArchiveError::Poisoned`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        if let Some(why) = &self.failed {
            return Err(ArchiveError::Poisoned(why.clone()));
        }
        if let Some(builder) = &mut self.inline {
            return builder.feed(data);
        }
        if self.batch.capacity() == 0 {
            self.batch.reserve(BATCH.max(data.len()));
        }
        self.batch.extend_from_slice(data);
        if self.batch.len() >= BATCH {
            let batch = std::mem::take(&mut self.batch);
            self.hand_over(batch)?;
        }
        Ok(())
    }

    /// Ends the archive and returns the index.
    pub fn finish(mut self) -> Result<BuiltIndex, ArchiveError> {
        if let Some(why) = self.failed.take() {
            return Err(ArchiveError::Poisoned(why));
        }
        if let Some(builder) = self.inline.take() {
            return builder.finish();
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.hand_over(batch)?;
        }
        match self.worker.take() {
            Some(worker) => {
                drop(worker.batches);
                join(worker.handle)
            }
            None => Err(ArchiveError::Poisoned(
                "index builder already finished".into(),
            )),
        }
    }

    /// Sends a batch; if the builder thread stopped (the bytes were bad), returns its error.
    fn hand_over(&mut self, batch: Vec<u8>) -> Result<(), ArchiveError> {
        let Some(worker) = &self.worker else {
            return Err(ArchiveError::Poisoned(
                "index builder already finished".into(),
            ));
        };
        if worker.batches.send(batch).is_ok() {
            return Ok(());
        }
        let error = match self.worker.take() {
            Some(worker) => match join(worker.handle) {
                Err(e) => e,
                Ok(_) => ArchiveError::Poisoned("index builder stopped early".into()),
            },
            None => ArchiveError::Poisoned("index builder already finished".into()),
        };
        self.failed = Some(error.to_string());
        Err(error)
    }
}

/// The builder thread: feeds every batch, stops at the first error (dropping the queue, which
/// `hand_over` sees), finishes when the feeder hangs up.
fn build(queue: Receiver<Vec<u8>>) -> Result<BuiltIndex, ArchiveError> {
    let mut builder = IndexBuilder::new();
    while let Ok(batch) = queue.recv() {
        builder.feed(&batch)?;
    }
    builder.finish()
}

/// The builder thread's result.
fn join(handle: JoinHandle<Result<BuiltIndex, ArchiveError>>) -> Result<BuiltIndex, ArchiveError> {
    handle
        .join()
        .unwrap_or_else(|_| Err(ArchiveError::Poisoned("index builder panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_gz(files: usize) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for i in 0..files {
            let data = format!("file {i} ").repeat(i % 500);
            let mut h = ::tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            b.append_data(&mut h, format!("d/f{i}"), data.as_bytes())
                .unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&tar).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn same_index_as_the_inline_builder() {
        let gz = tar_gz(3000);
        let mut inline = IndexBuilder::new();
        let mut threaded = ThreadedIndexBuilder::new();
        for piece in gz.chunks(10_007) {
            inline.feed(piece).unwrap();
            threaded.feed(piece).unwrap();
        }
        let (a, b) = (inline.finish().unwrap(), threaded.finish().unwrap());
        assert_eq!(a.checkpoints, b.checkpoints);
        assert_eq!(
            (a.stream_len, a.member_count()),
            (b.stream_len, b.member_count())
        );
        assert_eq!(a.member_count(), 3002);
    }

    #[test]
    fn bad_bytes_fail_a_later_feed_or_finish() {
        let mut gz = tar_gz(3000);
        let mid = gz.len() / 2;
        gz[mid..mid + 64].fill(0xff);
        let mut b = ThreadedIndexBuilder::new();
        let mut failed = None;
        for piece in gz.chunks(4096) {
            if let Err(e) = b.feed(piece) {
                failed = Some(e);
                break;
            }
        }
        match failed {
            Some(e) => {
                assert!(!matches!(e, ArchiveError::Poisoned(_)), "{e}");
                assert!(matches!(b.feed(b"x"), Err(ArchiveError::Poisoned(_))));
                assert!(b.finish().is_err());
            }
            None => assert!(b.finish().is_err()),
        }
        let mut b = ThreadedIndexBuilder::new();
        b.feed(&[b'x'; 4096]).unwrap();
        assert!(matches!(b.finish(), Err(ArchiveError::NotAnArchive(_))));
    }
}
