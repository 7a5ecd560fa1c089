//! [`ClaimTable`]: which chunks are being fetched, and by whom, so concurrent readers of one
//! chunk cause one fetch. A fetching caller claims the missing chunks it will fetch
//! ([`ClaimTable::claim`]); others wait on the claim. Each claim is released the moment its
//! chunk is stored ([`ClaimTable::release`]), so a reader waiting for one chunk of a long run
//! is served as soon as that chunk has arrived and verified, not when the whole run ends. The
//! [`Claims`] guard releases what is left (chunks that failed, or a fetch abandoned half-way).
//!
//! Not here: fetching (`partial`), the chunk packs (`store::ChunkStore`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::digest::Digest;

/// One fetch's claim on a chunk: the fetch it belongs to, and how waiters learn it ended.
struct Claim {
    owner: u64,
    done: watch::Sender<bool>,
}

/// The chunks being fetched in this process.
#[derive(Default)]
pub struct ClaimTable {
    held: Mutex<HashMap<Digest, Claim>>,
    next_owner: AtomicU64,
}

/// What [`ClaimTable::claim`] found for each chunk asked for.
pub struct Claimed<'a> {
    /// Released (for the rest) when dropped.
    pub claims: Claims<'a>,
    /// Positions (in the caller's list) of the chunks this caller must fetch.
    pub mine: Vec<usize>,
    /// One per chunk another caller is fetching: resolves when that chunk's claim ends.
    pub waits: Vec<watch::Receiver<bool>>,
}

impl ClaimTable {
    /// Claims those of `digests` not claimed yet (skipping ones `held` says are stored).
    pub fn claim<'a>(&'a self, digests: &[Digest], held: impl Fn(&Digest) -> bool) -> Claimed<'a> {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let mut claimed = Claimed {
            claims: Claims {
                table: self,
                owner,
                digests: Vec::new(),
            },
            mine: Vec::new(),
            waits: Vec::new(),
        };
        let mut table = self.held.lock();
        for (pos, d) in digests.iter().enumerate() {
            if let Some(c) = table.get(d) {
                claimed.waits.push(c.done.subscribe());
                continue;
            }
            if held(d) {
                continue;
            }
            let (done, _) = watch::channel(false);
            table.insert(*d, Claim { owner, done });
            claimed.claims.digests.push(*d);
            claimed.mine.push(pos);
        }
        claimed
    }

    /// Ends `owner`'s claim on `d` (the chunk was stored, or will not be): waiters wake.
    pub fn release(&self, owner: u64, d: &Digest) {
        let mut table = self.held.lock();
        if table.get(d).is_some_and(|c| c.owner == owner) {
            if let Some(c) = table.remove(d) {
                let _ = c.done.send(true);
            }
        }
    }
}

/// One caller's claims; those not yet released are released when dropped.
pub struct Claims<'a> {
    table: &'a ClaimTable,
    owner: u64,
    digests: Vec<Digest>,
}

impl Claims<'_> {
    /// The owner number to release single chunks with.
    pub fn owner(&self) -> u64 {
        self.owner
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for d in self.digests.drain(..) {
            self.table.release(self.owner, &d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn a_second_caller_waits_and_wakes_when_the_one_chunk_is_released() {
        let table = ClaimTable::default();
        let first = table.claim(&[d(1), d(2)], |_| false);
        assert_eq!(first.mine, [0, 1]);
        let mut second = table.claim(&[d(2), d(3)], |_| false);
        assert_eq!(second.mine, [1]);
        assert_eq!(second.waits.len(), 1);
        assert!(!*second.waits[0].borrow());
        table.release(first.claims.owner(), &d(2));
        assert!(*second.waits[0].borrow_and_update());
        // The first caller still holds chunk 1 until its guard goes.
        let third = table.claim(&[d(1)], |_| false);
        assert_eq!((third.mine.len(), third.waits.len()), (0, 1));
        drop(first);
        assert!(*third.waits[0].borrow());
    }

    #[test]
    fn an_old_owner_cannot_release_a_newer_claim() {
        let table = ClaimTable::default();
        let first = table.claim(&[d(1)], |_| false);
        let owner = first.claims.owner();
        drop(first);
        let second = table.claim(&[d(1)], |_| false);
        table.release(owner, &d(1));
        let third = table.claim(&[d(1)], |_| false);
        assert_eq!(third.waits.len(), 1, "the second claim still stands");
        drop(second);
    }

    #[test]
    fn stored_chunks_are_not_claimed() {
        let table = ClaimTable::default();
        let c = table.claim(&[d(1), d(2)], |x| *x == d(1));
        assert_eq!(c.mine, [1]);
        assert!(c.waits.is_empty());
    }
}
