//! Checking a download against a publisher's weak checksum (md5, sha1): a [`ByteObserver`]
//! that hashes the bytes as they are written, in the same pass as the sha256 and the archive
//! indexer ([`Tee`] feeds both), and reports the hex digest once the download is complete.

use std::sync::Arc;

use md5::Digest as _;
use parking_lot::Mutex;

use crate::source::{WeakAlgorithm, WeakPin};
use crate::store::ByteObserver;

enum State {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
}

impl State {
    fn new(algorithm: WeakAlgorithm) -> State {
        match algorithm {
            WeakAlgorithm::Md5 => State::Md5(md5::Md5::new()),
            WeakAlgorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            State::Md5(h) => h.update(data),
            State::Sha1(h) => h.update(data),
        }
    }

    fn hex(&self) -> String {
        match self {
            State::Md5(h) => hex::encode(h.clone().finalize()),
            State::Sha1(h) => hex::encode(h.clone().finalize()),
        }
    }
}

/// The weak hash of what a download wrote; read it with [`WeakHash::hex`] once it is done.
#[derive(Clone)]
pub struct WeakHash {
    algorithm: WeakAlgorithm,
    state: Arc<Mutex<State>>,
}

impl WeakHash {
    /// A hash of the kind `pin` uses.
    pub fn for_pin(pin: &WeakPin) -> WeakHash {
        WeakHash {
            algorithm: pin.algorithm,
            state: Arc::new(Mutex::new(State::new(pin.algorithm))),
        }
    }

    /// The hex digest of the bytes observed since the last restart.
    pub fn hex(&self) -> String {
        self.state.lock().hex()
    }

    /// The observer to hand to the download sink.
    pub fn observer(&self) -> Box<dyn ByteObserver> {
        Box::new(self.clone())
    }
}

impl ByteObserver for WeakHash {
    fn restart(&mut self) {
        *self.state.lock() = State::new(self.algorithm);
    }

    fn observe(&mut self, data: &[u8]) {
        self.state.lock().update(data);
    }
}

/// Feeds two observers the same bytes.
pub struct Tee(pub Box<dyn ByteObserver>, pub Box<dyn ByteObserver>);

impl ByteObserver for Tee {
    fn restart(&mut self) {
        self.0.restart();
        self.1.restart();
    }

    fn observe(&mut self, data: &[u8]) {
        self.0.observe(data);
        self.1.observe(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_and_sha1_of_known_bytes() {
        let md5 = WeakPin::parse(WeakAlgorithm::Md5, "900150983cd24fb0d6963f7d28e17f72").unwrap();
        let h = WeakHash::for_pin(&md5);
        let mut o = h.observer();
        o.observe(b"junk");
        o.restart();
        o.observe(b"ab");
        o.observe(b"c");
        assert_eq!(h.hex(), md5.hex);
        let sha1 = WeakPin::parse(
            WeakAlgorithm::Sha1,
            "a9993e364706816aba3e25717850c26c9cd0d89d",
        )
        .unwrap();
        let h = WeakHash::for_pin(&sha1);
        h.observer().observe(b"abc");
        assert_eq!(h.hex(), sha1.hex);
    }
}
