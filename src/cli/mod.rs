//! The command line: parses arguments, loads the config, runs one subcommand, and turns the
//! outcome into an exit code (0 success, 1 runtime failure, 2 usage or config error) with one
//! clear line on stderr naming the thing at fault.

mod commands;
pub mod demo;
mod images;
mod index;
mod pull_image;
mod reload;
mod set_listing;
mod set_pull;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// lazycas: container images and archives as lazily fetched, verified, read-only files.
#[derive(Debug, Parser)]
#[command(name = "lazycas", version, about)]
pub struct Cli {
    /// Config file (TOML). Default: $LAZYCAS_CONFIG, else /etc/lazycas/lazycas.toml if present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store directory (overrides the config's `store`).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or unmount.
    Mount {
        /// Where to mount (usually /containers).
        mountpoint: PathBuf,
    },
    /// Add (or replace) a catalog entry; a running mount shows it at once.
    Add {
        /// Catalog name, e.g. `medperf/fets/additional_files` or `images/x:1.0.sif`.
        name: String,
        /// An http(s) URL, optionally ending in `#sha256=<hex>` (or a weak `#md5=`/`#sha1=`),
        /// `library://[host/]entity/collection/container[:tag]`,
        /// `shub://host/collection/container:tag` or
        /// `docker://[registry[:port]/]repo[:tag][@sha256:<hex>]` (an image directory).
        reference: String,
        /// The pinned sha256 (64 hex).
        #[arg(long)]
        sha256: Option<String>,
        /// The publisher's md5 (a weak pin: checked on the whole first download, whose
        /// sha256 then pins the entry).
        #[arg(long)]
        md5: Option<String>,
        /// The publisher's sha1 (a weak pin, like --md5).
        #[arg(long)]
        sha1: Option<String>,
        /// `file`, `archive` or `image` (default: inferred from .tar.gz/.tgz/.tar; `image`
        /// for docker://, the only kind it may have).
        #[arg(long)]
        kind: Option<String>,
        /// Digest of a chunk index written by `lazycas index`.
        #[arg(long = "index-sha256")]
        index_sha256: Option<String>,
        /// Another URL with the same bytes (repeatable).
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
        /// The blob's size in bytes, if known (lets `ls -l` show it before any fetch).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Remove a catalog entry added with `add`.
    Rm {
        /// Catalog name.
        name: String,
    },
    /// List catalog entries with size, digest and bytes resident.
    Ls,
    /// Turn a publisher's record into a catalog entry: `import medperf CUBE.json` makes the
    /// cube's asset set (a running mount shows it at once).
    Import {
        /// What FILE is: `medperf` (a MedPerf cube/container record as JSON).
        format: String,
        /// The record.
        file: PathBuf,
        /// Catalog name (default `medperf/<cube name>`).
        #[arg(long)]
        name: Option<String>,
        /// `mlcube` or `container` (default: from the manifest's file name).
        #[arg(long)]
        layout: Option<String>,
        /// The cube's registry image (`docker://…`), for records that do not name it.
        #[arg(long)]
        image: Option<String>,
    },
    /// Fetch an entry (or URL#sha256=…, or every layer of docker://…, or the SIF of oras://…)
    /// into the store now and pin it.
    Pull {
        /// Catalog name, URL#sha256=…, docker://registry/repo:tag or oras://registry/repo:tag.
        target: String,
    },
    /// Evict least-recently-used unpinned content now.
    Gc {
        /// Evict down to this size (e.g. `10G`; default: 90% of the quota, or everything
        /// unpinned when there is no quota).
        #[arg(long)]
        to: Option<String>,
    },
    /// Rehash every blob in the store; quarantine what fails.
    Verify,
    /// Publisher side: write FILE's chunk index (FILE.lazycas-index) and print its sha256.
    Index(index::IndexArgs),
    /// Start a loopback origin with sample assets, mount them in a temp dir, show lazy fetch
    /// and verified reads, clean up. Works offline.
    Demo,
    /// Make a running `lazycas mount` reload its config file (SIGHUP) and wait until it has;
    /// a config that does not parse is refused before any signal (exit 2). The unit's
    /// ExecReload=.
    Reload {
        /// The daemon's PID (`$MAINPID` in a unit).
        #[arg(long)]
        pid: u32,
        /// Seconds to wait for the daemon to acknowledge.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Store use, quota, hits, misses, bytes fetched per source.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// A failure, sorted by exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or config: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Runtime(e)
    }
}

/// Parses `std::env::args`, runs, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("lazycas: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("lazycas: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        // Skip a cause already quoted in full by its parent.
        if out.last().is_none_or(|prev| !prev.contains(&p)) {
            out.push(p);
        }
    }
    out.join(": ").replace('\n', " ")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAZYCAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The config the flags and environment point at, with `--store` applied.
pub fn load_config(cli: &Cli) -> Result<(Config, Option<PathBuf>), Failure> {
    let path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("LAZYCAS_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let p = PathBuf::from("/etc/lazycas/lazycas.toml");
            p.exists().then_some(p)
        });
    let mut config = match &path {
        Some(p) => Config::load(p).map_err(|e| Failure::Usage(e.to_string()))?,
        None => Config::default(),
    };
    if let Some(s) = &cli.store {
        config.store = s.clone();
    }
    Ok((config, path))
}

fn run(cli: Cli) -> Result<(), Failure> {
    let (config, path) = load_config(&cli).map_err(|e| match cli.command {
        Command::Reload { pid, .. } => reload::refused(pid, e),
        _ => e,
    })?;
    match cli.command {
        Command::Mount { mountpoint } => {
            let req = crate::daemon::MountRequest {
                mountpoint,
                config_path: path,
                store_override: cli.store.clone(),
            };
            crate::daemon::run(&req, config).map_err(Failure::Runtime)
        }
        Command::Add {
            name,
            reference,
            sha256,
            md5,
            sha1,
            kind,
            index_sha256,
            mirrors,
            size,
        } => commands::add(
            &config,
            commands::AddArgs {
                name,
                reference,
                sha256,
                md5,
                sha1,
                kind,
                index_sha256,
                mirrors,
                size,
            },
        ),
        Command::Rm { name } => commands::rm(&config, &name),
        Command::Ls => commands::ls(&config),
        Command::Pull { target }
            if target.starts_with("docker://") || target.starts_with("oras://") =>
        {
            pull_image::pull_image(&config, &target)
        }
        Command::Import {
            format,
            file,
            name,
            layout,
            image,
        } => commands::import(
            &config,
            &format,
            &file,
            name.as_deref(),
            layout.as_deref(),
            image.as_deref(),
        ),
        Command::Pull { target } => commands::pull(&config, &target),
        Command::Status { json } => commands::status(&config, json),
        Command::Gc { to } => commands::gc(&config, to.as_deref()),
        Command::Verify => commands::verify(&config),
        Command::Index(args) => index::run(&args),
        Command::Demo => demo::run(&config).map_err(Failure::Runtime),
        Command::Reload { pid, timeout } => reload::run(
            &config,
            path.as_deref(),
            pid,
            std::time::Duration::from_secs(timeout),
        ),
    }
}
