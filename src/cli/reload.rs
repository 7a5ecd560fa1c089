//! `lazycas reload --pid PID`: the unit's `ExecReload=`. It needs nothing but lazycas itself
//! (a minimal root has no `/bin/kill`) and reports success only once the daemon has reloaded.
//!
//! First it loads the config file the way the daemon will: a file that does not parse fails
//! the reload (exit 2, the error on one line for the journal) and no signal is sent, so the old
//! config keeps serving. Then it sends SIGHUP and waits, for a bounded time, until the daemon
//! publishes a newer reload acknowledgment (`crate::daemon::reload_ack`), and exits with its
//! outcome.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Failure;
use crate::daemon::reload_ack::{AckError, AckReader, Acknowledgment, ReloadOutcome};

/// How often the acknowledgment is read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Says that a config that failed to load (exit 2) was not sent to daemon `pid`.
pub fn refused(pid: u32, failure: Failure) -> Failure {
    match failure {
        Failure::Usage(msg) => Failure::Usage(format!(
            "{msg}; not reloading: process {pid} keeps its config"
        )),
        other => other,
    }
}

/// Signals daemon `pid` to reload (its config file, `path`, loaded fine here) and waits up to
/// `timeout` for its acknowledgment.
pub fn run(path: Option<&Path>, pid: u32, timeout: Duration) -> Result<(), Failure> {
    let reader = AckReader::find(pid).map_err(|e| Failure::Runtime(e.into()))?;
    let before = reader.read().map_err(|e| Failure::Runtime(e.into()))?;
    send_hangup(pid)?;
    let after = wait_for_newer(&reader, &before, timeout)?;
    match after.outcome {
        ReloadOutcome::Reloaded => {
            match path {
                Some(p) => println!("process {pid} reloaded {}", p.display()),
                None => println!("process {pid} reloaded"),
            }
            Ok(())
        }
        ReloadOutcome::Failed(why) => Err(Failure::Runtime(anyhow::anyhow!(
            "process {pid} could not reload: {why}"
        ))),
    }
}

fn send_hangup(pid: u32) -> Result<(), Failure> {
    let target = libc::pid_t::try_from(pid)
        .map_err(|_| Failure::Usage(format!("--pid {pid}: not a process ID")))?;
    // SAFETY: kill(2) has no memory-safety preconditions; the PID was just checked to be a
    // lazycas daemon holding its reload acknowledgment.
    if unsafe { libc::kill(target, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure::Runtime(anyhow::anyhow!(
            "sending SIGHUP to process {pid}: {e}"
        )));
    }
    Ok(())
}

fn wait_for_newer(
    reader: &AckReader,
    before: &Acknowledgment,
    timeout: Duration,
) -> Result<Acknowledgment, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = reader.read().map_err(|e| match e {
            AckError::NotADaemon { pid } => Failure::Runtime(anyhow::anyhow!(
                "process {pid} exited before acknowledging the reload"
            )),
            other => Failure::Runtime(other.into()),
        })?;
        if now.generation > before.generation {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "no reload acknowledgment from the daemon within {} s of SIGHUP",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(POLL);
    }
}
