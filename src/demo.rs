//! `lazycas demo` (being written).

use crate::config::Config;

/// Runs the demo.
pub fn run(_config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
