//! `lazycas index FILE`: the publisher's side of range-lazy images. Writes the file's chunk index
//! next to it (or to `-o OUT`) atomically and prints the index's sha256, the value a catalog pins
//! as `index_sha256`.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Failure;
use crate::chunk::{ChunkIndex, ChunkerParams};
use crate::config::parse_size;
use crate::digest::Digest;

/// The arguments of `lazycas index`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// The file to index (a squashfs image, a SIF, any large file).
    pub file: PathBuf,
    /// Where to write the index (default: FILE.lazycas-index).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Smallest chunk (default 32K).
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<String>,
    /// Average chunk the chunker aims for (default 128K).
    #[arg(long, value_name = "SIZE")]
    pub avg_size: Option<String>,
    /// Largest chunk (default 512K).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
}

/// The suffix `lazycas index` appends to the file's name, and the read side appends to its URL.
pub const INDEX_SUFFIX: &str = ".lazycas-index";

/// Runs `lazycas index`.
pub fn run(args: &IndexArgs) -> Result<(), Failure> {
    let params = chunker_params(args)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_output(&args.file));
    if is_same_file(&out, &args.file) {
        return Err(Failure::Usage(format!(
            "-o {} would overwrite the file being indexed",
            out.display()
        )));
    }
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let index = ChunkIndex::build(file, params)
        .with_context(|| format!("indexing {}", args.file.display()))?;
    let bytes = index.to_bytes();
    write_atomically(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    tracing::info!(
        "indexed {} ({} bytes, {}): {} chunks{}; wrote {}",
        args.file.display(),
        index.size(),
        index.file_digest().short(),
        index.chunks().len(),
        hint_summary(&index),
        out.display()
    );
    println!("{}", Digest::of(&bytes).hex());
    Ok(())
}

fn chunker_params(args: &IndexArgs) -> Result<ChunkerParams, Failure> {
    let defaults = ChunkerParams::default();
    let min = size_flag("--min-size", args.min_size.as_deref(), defaults.min_size())?;
    let avg = size_flag("--avg-size", args.avg_size.as_deref(), defaults.avg_size())?;
    let max = size_flag("--max-size", args.max_size.as_deref(), defaults.max_size())?;
    ChunkerParams::new(min, avg, max).map_err(|e| Failure::Usage(e.to_string()))
}

fn size_flag(flag: &str, value: Option<&str>, default: u32) -> Result<u32, Failure> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bytes = parse_size(value).map_err(|e| Failure::Usage(format!("{flag}: {e}")))?;
    u32::try_from(bytes).map_err(|_| Failure::Usage(format!("{flag}: {value} is too large")))
}

fn default_output(file: &Path) -> PathBuf {
    let mut name = OsString::from(file.as_os_str());
    name.push(INDEX_SUFFIX);
    PathBuf::from(name)
}

fn is_same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn hint_summary(index: &ChunkIndex) -> String {
    let hints = index.hints();
    let mut found = Vec::new();
    if let Some(sif) = &hints.sif {
        found.push(format!("SIF primary partition {:?}", sif.primary_partition));
    }
    if let Some(sq) = &hints.squashfs {
        found.push(format!("squashfs metadata {:?}", sq.metadata_tail()));
    }
    match found.is_empty() {
        true => String::new(),
        false => format!(", {}", found.join(", ")),
    }
}

/// Writes `bytes` to a temporary file beside `out`, fsyncs it and renames it over `out`: a reader
/// sees the old index or the new one, never half of one.
fn write_atomically(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".lazycas-index.")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Published files are world-readable (tempfile creates 0600).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(out).map_err(|e| e.error)?;
    Ok(())
}
