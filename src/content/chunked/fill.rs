//! `fill = "background"`: after the first read of a range-lazy blob, the chunks nobody asked
//! for are fetched too, in file order, one batch of at most `partial::RUN_MAX` bytes at a time,
//! until the blob is complete (and assembled into an ordinary blob, as after any full read).
//! Low priority: a batch starts only while no foreground fetch (a read, its readahead, an
//! open's metadata prefetch) is in flight in this process ([`Priority`]), so at most one
//! background request ever competes with a reader. One fill per blob at a time; a fill that
//! could not fetch some chunks stops and logs, and the next open's first read starts another.
//!
//! Not here: fetching and verifying (`partial`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::partial::{PartialBlob, RUN_MAX};

/// Counts foreground fetches in flight, so background work can wait for none.
#[derive(Default)]
pub struct Priority {
    foreground: AtomicUsize,
    idle: Notify,
}

/// One foreground fetch in flight; ends when dropped.
pub struct Foreground<'a>(&'a Priority);

impl Priority {
    /// Marks a foreground fetch in flight until the guard is dropped.
    pub fn foreground(&self) -> Foreground<'_> {
        self.foreground.fetch_add(1, Ordering::AcqRel);
        Foreground(self)
    }

    /// Returns once no foreground fetch is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.foreground.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Foreground<'_> {
    fn drop(&mut self) {
        if self.0.foreground.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl PartialBlob {
    /// Fetches every chunk still missing, in file order, each batch when no foreground fetch
    /// is in flight. Returns how many chunks could not be fetched.
    pub(super) async fn fill_rest(self: Arc<Self>) -> usize {
        let count = self.chunk_count();
        let (mut next, mut failed) = (0, 0);
        while next < count {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while next < count && bytes < RUN_MAX {
                if self.is_missing(next) {
                    batch.push(next);
                    bytes += self.bytes_of(next..next + 1).len();
                }
                next += 1;
            }
            if batch.is_empty() {
                continue;
            }
            self.priority().wait_idle().await;
            self.fetch_chunks(&batch).await;
            failed += batch.iter().filter(|&&i| self.is_missing(i)).count();
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_waits_for_the_last_foreground_fetch() {
        let p = Arc::new(Priority::default());
        p.wait_idle().await;
        let first = p.foreground();
        let second = p.foreground();
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.wait_idle().await })
        };
        tokio::task::yield_now().await;
        drop(first);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "one foreground fetch is still in flight"
        );
        drop(second);
        waiter.await.expect("the waiter wakes");
    }
}
