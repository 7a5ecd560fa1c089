//! Harness pieces the service tests need beyond `tests/common/`: a systemd notify socket, the
//! shipped squid settings adapted to a test squid, `lazycas status --json`, and the "N nodes
//! behind one squid" scenario the closing figures come from.
#![allow(dead_code)]

pub mod fanin;
pub mod notify;
pub mod shipped;
pub mod status;

pub use fanin::{fan_in, FanIn, Via};
pub use notify::NotifySocket;
pub use shipped::shipped_file;
pub use status::{status_json, used_bytes};
