//! `lazycas reload --pid PID`: the unit's `ExecReload=`. It needs nothing but lazycas itself
//! (a minimal root has no `/bin/kill`) and reports success only once the daemon has reloaded.
//!
//! First it loads the config file the way the daemon will: a file that does not parse fails
//! the reload (exit 2, the error on one line for the journal) and the daemon is not asked, so
//! the old config keeps serving. Then it asks the daemon over its control socket
//! (`crate::daemon::control`), checking the listener is process PID, and exits with the
//! daemon's answer.

use std::path::Path;
use std::time::Duration;

use super::Failure;
use crate::config::Config;
use crate::daemon::control::{self, ControlError};

/// Says that a config that failed to load (exit 2) was not sent to daemon `pid`.
pub fn refused(pid: u32, failure: Failure) -> Failure {
    match failure {
        Failure::Usage(msg) => Failure::Usage(format!(
            "{msg}; not reloading: process {pid} keeps its config"
        )),
        other => other,
    }
}

/// Asks daemon `pid` (serving `config.store`) to reload its config file, `path`, which loaded
/// fine here, and waits up to `timeout` for it to have done so.
pub fn run(
    config: &Config,
    path: Option<&Path>,
    pid: u32,
    timeout: Duration,
) -> Result<(), Failure> {
    match control::ask(&config.store, control::RELOAD, Some(pid), timeout) {
        Ok(()) => {
            match path {
                Some(p) => println!("process {pid} reloaded {}", p.display()),
                None => println!("process {pid} reloaded"),
            }
            Ok(())
        }
        Err(ControlError::Refused(why)) => Err(Failure::Runtime(anyhow::anyhow!(
            "process {pid} could not reload: {why}"
        ))),
        Err(e) => Err(Failure::Runtime(anyhow::anyhow!(
            "reloading process {pid}: {e}"
        ))),
    }
}
