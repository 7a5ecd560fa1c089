//! Decoding ahead of a sequential reader on a second thread.
//!
//! Checkpoints make gzip decoding parallel for free: each one is an independent place to start.
//! While a reader goes through a gzip archive's tar stream in order (one large member, or many
//! members in stream order as `tar`/`cp -r` read them), the reader decodes where it is and a
//! background job decodes from the next checkpoint ahead of it into the shared [`SpanCache`], so
//! the spans are there when the reader arrives. The job stops at the checkpoint after its own or
//! after a byte budget (a quarter of the span cache), and leaves its decoder idle at that point,
//! so the reader continues from it instead of decoding the gap again. One job per reader at a
//! time: memory stays within the span cache's bound, and the machine's second core is the one
//! used.

use std::sync::Arc;

use parking_lot::Mutex;

use super::decoder::{StreamDecoder, SPAN_SIZE};
use super::span_cache::SpanKey;
use super::{ArchiveError, ArchiveIndex, SpanCache};
use crate::store::BlobRead;

/// How far past a member's end a read-ahead job may start, and how much it decodes there.
pub(crate) const MEMBER_REACH: u64 = 256 * 1024;
/// A read starting this close to where the previous one ended continues a sequential stream.
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// Idle decoders shared by a reader and its read-ahead jobs.
pub(crate) type IdleDecoders = Arc<Mutex<Vec<StreamDecoder>>>;

/// What a reader knows about its sequential stream and its read-ahead job.
#[derive(Debug, Default)]
struct AheadState {
    /// Where the last read ended.
    last_end: u64,
    /// Stream offset of the checkpoint the last job started at (no job starts there again).
    last_job_from: Option<u64>,
    /// A job is decoding.
    running: bool,
    /// Jobs started so far.
    jobs: u64,
}

/// What the reader and its jobs share: where to decode from and where the results go.
#[derive(Clone)]
struct Shared {
    index: Arc<ArchiveIndex>,
    blob: Arc<dyn BlobRead>,
    cache: Arc<SpanCache>,
    idle: IdleDecoders,
    max_idle: usize,
    state: Arc<Mutex<AheadState>>,
}

/// Starts read-ahead jobs for one archive reader.
pub(crate) struct ReadAhead {
    shared: Shared,
}

/// One region to decode, on its own thread.
struct Job {
    shared: Shared,
    from: u64,
    budget: u64,
    /// Decodes no further than this stream offset (see [`ReadAhead::after_read`]).
    stop_at: u64,
}

impl ReadAhead {
    /// Read-ahead for the reader of `index` over `blob`; jobs leave their decoder in `idle`
    /// (which keeps at most `max_idle`).
    pub(crate) fn new(
        index: Arc<ArchiveIndex>,
        blob: Arc<dyn BlobRead>,
        cache: Arc<SpanCache>,
        idle: IdleDecoders,
        max_idle: usize,
    ) -> ReadAhead {
        ReadAhead {
            shared: Shared {
                index,
                blob,
                cache,
                idle,
                max_idle,
                state: Arc::new(Mutex::new(AheadState::default())),
            },
        }
    }

    /// How many read-ahead jobs were started.
    pub(crate) fn jobs(&self) -> u64 {
        self.shared.state.lock().jobs
    }

    /// True if a read starting at `start` continues where the last one ended, forward (a
    /// sequential reader, such as `tar` or `cp -r` going through the members in stream order).
    pub(crate) fn continues_stream(&self, start: u64) -> bool {
        let last_end = self.shared.state.lock().last_end;
        start >= last_end && start - last_end <= SEQUENTIAL_SLACK
    }

    /// True while a job is decoding.
    pub(crate) fn is_running(&self) -> bool {
        self.shared.state.lock().running
    }

    /// Notes that `[start, end)` of a member whose data ends at stream offset `member_end` was
    /// read; when that continues a sequential stream and the next checkpoint is near, decodes
    /// from it on another thread. The budget of a job is a quarter of the cache: a cache too
    /// small to hold that beside the reader's own spans gets no jobs.
    ///
    /// A job that starts inside the member stops at its end: the reader may stop there too (one
    /// file read whole), and for an archive read span by span decoding on would fetch what
    /// nobody asked for. A job past the member (for a reader going on to the next members, as
    /// `tar` does) starts only at a checkpoint within `2 * MEMBER_REACH` of the member's end,
    /// where a run of members has one, and decodes `2 * MEMBER_REACH` at most.
    pub(crate) fn after_read(&self, start: u64, end: u64, member_end: u64) {
        if let Err(e) = self.start_job(start, end, member_end) {
            // Read-ahead is an optimisation: the reader decodes the region itself when it gets
            // there, and reports any error of the index then.
            tracing::debug!(error = %e, "no read-ahead");
        }
    }

    /// [`ReadAhead::after_read`], with the index's errors.
    fn start_job(&self, start: u64, end: u64, member_end: u64) -> Result<(), ArchiveError> {
        let budget = self.shared.cache.capacity() / 4;
        {
            let mut state = self.shared.state.lock();
            let sequential = start.abs_diff(state.last_end) <= SEQUENTIAL_SLACK;
            state.last_end = end;
            if !sequential || state.running || budget < 2 * SPAN_SIZE {
                return Ok(());
            }
        }
        let Some(next) = self.shared.index.checkpoint_after(end)? else {
            return Ok(());
        };
        // Only the next region: further ahead would hold spans the reader needs much later.
        if next > end + 2 * budget || next > member_end.saturating_add(2 * MEMBER_REACH) {
            return Ok(());
        }
        let stop_at = if next < member_end {
            member_end
        } else {
            next + 2 * MEMBER_REACH
        };
        {
            let mut state = self.shared.state.lock();
            if state.running || state.last_job_from.is_some_and(|at| at >= next) {
                return Ok(());
            }
            state.running = true;
            state.last_job_from = Some(next);
            state.jobs += 1;
        }
        let job = Job {
            shared: self.shared.clone(),
            from: next,
            budget,
            stop_at,
        };
        let spawned = std::thread::Builder::new()
            .name("lazycas-ahead".into())
            .spawn(move || job.run());
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no read-ahead thread");
            self.shared.state.lock().running = false;
        }
        Ok(())
    }
}

impl Job {
    /// Decodes the job's region into the cache, leaves its decoder idle, clears `running`.
    fn run(self) {
        if let Err(e) = self.decode() {
            // The reader decodes the region itself and reports any error it meets there.
            tracing::debug!(error = %e, "read-ahead stopped");
        }
        self.shared.state.lock().running = false;
    }

    /// Decodes from the checkpoint at `from` up to the next checkpoint or the budget.
    fn decode(&self) -> Result<(), ArchiveError> {
        let cp = self.shared.index.checkpoint_before(self.from)?;
        let stop = match self.shared.index.checkpoint_after(cp.uoff)? {
            Some(next) => next.min(cp.uoff + self.budget),
            None => cp.uoff + self.budget,
        }
        .min(self.stop_at);
        let mut dec = StreamDecoder::resume(self.shared.blob.as_ref(), &cp)?;
        while dec.position() < stop {
            let Some(span) = dec.next_span_until(self.shared.blob.as_ref(), stop)? else {
                return Ok(());
            };
            let key = SpanKey {
                archive: *self.shared.index.digest(),
                slot: span.start / SPAN_SIZE,
            };
            self.shared.cache.insert(key, Arc::new(span));
        }
        if !dec.is_done() {
            let mut idle = self.shared.idle.lock();
            idle.push(dec);
            if idle.len() > self.shared.max_idle {
                idle.remove(0);
            }
        }
        Ok(())
    }
}
