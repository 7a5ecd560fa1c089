//! [`Readahead`]: how far ahead of a sequential reader chunks are fetched. The kernel sends a
//! sequential reader's reads from several threads, so they arrive a little out of order; a read
//! counts as sequential when it starts near the end of the stream so far (within [`SLACK`]).
//! The window doubles with each sequential read up to [`WINDOW_MAX`] (enough runs in flight
//! to keep the link busy) and drops to nothing on a read elsewhere. Each read says which new
//! bytes to fetch ahead: only bytes not asked for before, and only once at least
//! [`BATCH_MIN`] of them are due, so a stream of 128 KiB reads becomes a few large requests.
//!
//! Not here: fetching (`partial`).

use parking_lot::Mutex;

use crate::range::ByteRange;

/// The window a sequential reader starts with.
pub const WINDOW_MIN: u64 = 1 << 20;
/// The most a sequential reader's window grows to.
pub const WINDOW_MAX: u64 = 32 << 20;
/// How far from the stream's end a read may start and still continue it.
const SLACK: u64 = 4 << 20;
/// Readahead is asked for once at least this much is due (or the window is smaller).
const BATCH_MIN: u64 = 2 << 20;

/// One reader's stream position and window.
#[derive(Debug)]
pub struct Readahead {
    state: Mutex<Stream>,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The end of the furthest read of the stream.
    end: u64,
    window: u64,
    /// Readahead was asked for up to here.
    asked: u64,
}

impl Default for Readahead {
    fn default() -> Readahead {
        Readahead {
            state: Mutex::new(Stream {
                end: u64::MAX,
                window: 0,
                asked: 0,
            }),
        }
    }
}

impl Readahead {
    /// Records a read of `want`; returns the bytes to fetch ahead of it now, if any.
    pub fn after_read(&self, want: ByteRange) -> Option<ByteRange> {
        let mut s = self.state.lock();
        let continues = s.end != u64::MAX
            && want.start() + SLACK >= s.end
            && want.start() <= s.end.saturating_add(SLACK);
        if continues {
            s.window = (s.window * 2).clamp(WINDOW_MIN, WINDOW_MAX);
            s.end = s.end.max(want.end());
        } else {
            *s = Stream {
                end: want.end(),
                window: 0,
                asked: want.end(),
            };
            return None;
        }
        let from = s.asked.max(s.end);
        let to = s.end.saturating_add(s.window);
        if to <= from || (to - from < BATCH_MIN && to - from < s.window) {
            return None;
        }
        s.asked = to;
        Some(ByteRange::new(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequential_reader_gets_a_growing_window_asked_for_once() {
        let ra = Readahead::default();
        let read = 128 << 10;
        let mut asked: Vec<ByteRange> = Vec::new();
        for k in 0..200u64 {
            if let Some(r) = ra.after_read(ByteRange::at(k * read, read)) {
                asked.push(r);
            }
        }
        assert!(!asked.is_empty());
        for pair in asked.windows(2) {
            assert_eq!(
                pair[0].end(),
                pair[1].start(),
                "no byte asked for twice: {asked:?}"
            );
        }
        let last = asked.last().unwrap();
        assert!(last.end() >= 200 * read + WINDOW_MAX / 2, "{last:?}");
        assert!(asked.len() < 60, "{} batches", asked.len());
    }

    #[test]
    fn reads_slightly_out_of_order_stay_sequential() {
        let ra = Readahead::default();
        let read = 128 << 10;
        let asked: Vec<ByteRange> = [0, 2, 1, 3, 5, 4, 6]
            .iter()
            .filter_map(|k| ra.after_read(ByteRange::at(k * read, read)))
            .collect();
        assert_eq!(
            asked.first().map(|r| r.start()),
            Some(3 * read),
            "{asked:?}"
        );
        for pair in asked.windows(2) {
            assert_eq!(pair[0].end(), pair[1].start(), "{asked:?}");
        }
        let end = asked.last().map_or(0, |r| r.end());
        assert!(
            end >= 7 * read + 4 * WINDOW_MIN,
            "the window kept growing: {asked:?}"
        );
    }

    #[test]
    fn a_read_elsewhere_resets_the_window() {
        let ra = Readahead::default();
        let read = 128 << 10;
        for k in 0..20u64 {
            ra.after_read(ByteRange::at(k * read, read));
        }
        assert_eq!(ra.after_read(ByteRange::at(1 << 30, read)), None);
        let r = ra.after_read(ByteRange::at((1 << 30) + read, read));
        assert_eq!(
            r.map(|r| r.len()),
            Some(WINDOW_MIN),
            "the window starts small again"
        );
    }
}
