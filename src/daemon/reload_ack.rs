//! The reload acknowledgment: how `lazycas reload` learns that a running daemon has reloaded
//! after its SIGHUP, and whether the reload worked.
//!
//! The daemon keeps one line, `<generation> ok` or `<generation> failed <message>`, in an
//! anonymous memory file (memfd) named `lazycas-reload`, held open on a fixed descriptor. Each
//! reload writes a fresh memfd and `dup3`s it onto that descriptor, so a reader sees either the
//! old line or the new one, never half of each. Another process of the same user (or root)
//! reads it by opening `/proc/<pid>/fd/<n>`: no path to agree on, nothing left on disk, and it
//! vanishes with the process. `ReloadAck` is the daemon's side; `AckReader` is the reader's.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The name the memfd carries (`/proc/<pid>/fd/<n>` links to `/memfd:lazycas-reload (deleted)`).
const MEMFD_NAME: &CStr = c"lazycas-reload";

/// What a reload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The config file was read and applied.
    Reloaded,
    /// The reload was refused or went wrong; the old settings keep serving.
    Failed(String),
}

/// The acknowledgment as last published: how many reloads the daemon has finished, and the
/// outcome of the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgment {
    /// Reloads finished since the daemon started (0: none yet).
    pub generation: u64,
    /// The outcome of the last reload (`Reloaded` when there was none).
    pub outcome: ReloadOutcome,
}

impl Acknowledgment {
    fn to_line(&self) -> String {
        match &self.outcome {
            ReloadOutcome::Reloaded => format!("{} ok\n", self.generation),
            ReloadOutcome::Failed(why) => {
                format!("{} failed {}\n", self.generation, why.replace('\n', " "))
            }
        }
    }

    fn parse(text: &str) -> Option<Acknowledgment> {
        let line = text.split_once('\n')?.0;
        let (generation, rest) = line.split_once(' ')?;
        let generation = generation.parse().ok()?;
        let outcome = match rest.split_once(' ') {
            None if rest == "ok" => ReloadOutcome::Reloaded,
            Some(("failed", why)) => ReloadOutcome::Failed(why.to_string()),
            _ => return None,
        };
        Some(Acknowledgment {
            generation,
            outcome,
        })
    }
}

/// Why the acknowledgment of a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// No such process (or /proc is not mounted).
    #[error("no process {pid}")]
    NoProcess {
        /// The PID asked about.
        pid: u32,
    },
    /// The process holds no acknowledgment: it is not a lazycas mount daemon, or one too old
    /// or too early in its start to take a reload.
    #[error("process {pid} is not a running `lazycas mount` (it has no reload acknowledgment)")]
    NotADaemon {
        /// The PID asked about.
        pid: u32,
    },
    /// Reading /proc failed.
    #[error("reading the reload acknowledgment of process {pid}: {source}")]
    Io {
        /// The PID asked about.
        pid: u32,
        /// The failure.
        source: io::Error,
    },
}

/// The daemon's side: publishes the outcome of each reload.
#[derive(Debug)]
pub struct ReloadAck {
    fd: OwnedFd,
    generation: u64,
}

impl ReloadAck {
    /// Creates the memfd holding generation 0.
    pub fn publish() -> io::Result<ReloadAck> {
        let first = Acknowledgment {
            generation: 0,
            outcome: ReloadOutcome::Reloaded,
        };
        Ok(ReloadAck {
            fd: memfd_with(&first.to_line())?,
            generation: 0,
        })
    }

    /// Publishes the outcome of one more finished reload.
    pub fn record(&mut self, outcome: ReloadOutcome) -> io::Result<()> {
        let next = Acknowledgment {
            generation: self.generation + 1,
            outcome,
        };
        let fresh = memfd_with(&next.to_line())?;
        // SAFETY: both descriptors are open and owned by us; dup3 atomically makes our fixed
        // descriptor number refer to the fresh file (closing the old one).
        if unsafe { libc::dup3(fresh.as_raw_fd(), self.fd.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.generation = next.generation;
        Ok(())
    }
}

/// A memfd named `MEMFD_NAME` holding `line`.
fn memfd_with(line: &str) -> io::Result<OwnedFd> {
    // SAFETY: MEMFD_NAME is NUL-terminated; the result is checked before use.
    let raw = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a descriptor memfd_create just gave us and nothing else owns.
    let mut file = unsafe { File::from_raw_fd(raw) };
    file.write_all(line.as_bytes())?;
    Ok(OwnedFd::from(file))
}

/// The reader's side: the acknowledgment descriptor of one daemon process.
#[derive(Debug)]
pub struct AckReader {
    pid: u32,
    link: PathBuf,
}

impl AckReader {
    /// Finds the acknowledgment among the open files of process `pid`.
    pub fn find(pid: u32) -> Result<AckReader, AckError> {
        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let entries = std::fs::read_dir(&fd_dir).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => AckError::NoProcess { pid },
            _ => AckError::Io { pid, source },
        })?;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|link| is_ack_link(link))
            .map(|link| AckReader { pid, link })
            .ok_or(AckError::NotADaemon { pid })
    }

    /// The acknowledgment as published now.
    pub fn read(&self) -> Result<Acknowledgment, AckError> {
        let pid = self.pid;
        if !is_ack_link(&self.link) {
            // The process exited (or, with a reused PID, is another one).
            return Err(AckError::NotADaemon { pid });
        }
        let mut text = String::new();
        File::open(&self.link)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => AckError::NotADaemon { pid },
                _ => AckError::Io { pid, source },
            })?;
        Acknowledgment::parse(&text).ok_or_else(|| AckError::Io {
            pid,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected content {text:?}"),
            ),
        })
    }
}

fn is_ack_link(link: &std::path::Path) -> bool {
    let Ok(target) = std::fs::read_link(link) else {
        return false;
    };
    let name = MEMFD_NAME.to_string_lossy();
    target
        .to_str()
        .and_then(|t| t.strip_prefix("/memfd:"))
        .is_some_and(|t| t == name || t.strip_prefix(name.as_ref()) == Some(" (deleted)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for ack in [
            Acknowledgment {
                generation: 0,
                outcome: ReloadOutcome::Reloaded,
            },
            Acknowledgment {
                generation: 7,
                outcome: ReloadOutcome::Failed("config x: line 2: bad".into()),
            },
        ] {
            assert_eq!(Acknowledgment::parse(&ack.to_line()), Some(ack));
        }
    }

    #[test]
    fn a_message_with_newlines_stays_one_line() {
        let ack = Acknowledgment {
            generation: 3,
            outcome: ReloadOutcome::Failed("a\nb".into()),
        };
        assert_eq!(ack.to_line(), "3 failed a b\n");
    }

    #[test]
    fn malformed_lines_are_refused() {
        for text in ["", "1 ok", "x ok\n", "1 maybe\n", "1 failed\n", "1\n"] {
            assert_eq!(Acknowledgment::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn this_process_reads_its_own_acknowledgment() {
        let mut ack = ReloadAck::publish().unwrap();
        let reader = AckReader::find(std::process::id()).unwrap();
        assert_eq!(reader.read().unwrap().generation, 0);
        ack.record(ReloadOutcome::Failed("nope".into())).unwrap();
        let seen = reader.read().unwrap();
        assert_eq!(seen.generation, 1);
        assert_eq!(seen.outcome, ReloadOutcome::Failed("nope".into()));
        ack.record(ReloadOutcome::Reloaded).unwrap();
        assert_eq!(reader.read().unwrap().generation, 2);
    }
}
