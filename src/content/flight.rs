//! [`SingleFlight`]: concurrent requests for the same key share one piece of work.
//!
//! The first caller's future runs; callers arriving while it runs wait for its result (cloned
//! to each). Once it has finished the key is free again, so a later call starts new work (a
//! failed download is retried by the next reader, a complete one is found locally by the
//! caller before it gets here). Used for blob downloads and archive opens; chunks next.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

/// Work in flight, by key.
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `work` unless work for `key` is already running, in which case its result is
    /// awaited instead (and `work` is dropped unrun).
    pub async fn run<F: Future<Output = V>>(&self, key: K, work: F) -> V {
        let cell = self.flights.lock().entry(key.clone()).or_default().clone();
        let value = cell.get_or_init(|| work).await.clone();
        let mut flights = self.flights.lock();
        // A newer flight may hold the key by now: remove ours only.
        if flights.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(&key);
        }
        value
    }

    /// How many keys have work running (for tests and status).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flight = Arc::new(SingleFlight::<String, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (flight, runs) = (flight.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("k".to_string(), async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        7
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_finished_key_runs_again() {
        let flight = SingleFlight::<u8, u8>::default();
        assert_eq!(flight.run(1, async { 1 }).await, 1);
        assert_eq!(flight.run(1, async { 2 }).await, 2);
    }
}
