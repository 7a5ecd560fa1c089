//! `lazycas index FILE`: the publisher's side of range-lazy images. Writes the file's chunk index
//! next to it (or to `-o OUT`) atomically and prints the index's sha256, the value a catalog pins
//! as `index_sha256`. A `.tar.gz` (or `.tar`) is cut at its seek index's checkpoints instead of
//! by content, and the seek index itself goes into the index (see `crate::chunk::spans`).

use std::ffi::OsString;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Failure;
use crate::archive::{published, IndexBuilder};
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
    let open = || {
        std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))
    };
    let index = match archive_index(open()?) {
        Some(index) => index,
        None => ChunkIndex::build(open()?, params),
    }
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

/// Plain tar archives are cut every this many bytes (they have no checkpoints).
const TAR_PIECE: u64 = 4 << 20;

/// The index of `file` cut at its seek index's span starts, if it is a `.tar.gz` or `.tar`
/// (gzip magic, or `ustar` at byte 257); `None` for anything else, or an archive whose tar
/// stream does not parse (then it is indexed as a plain file, with a warning).
fn archive_index(mut file: std::fs::File) -> Option<std::io::Result<ChunkIndex>> {
    let mut head = [0u8; 262];
    let n = file.read(&mut head).ok()?;
    let gzip = head[..n].starts_with(&[0x1f, 0x8b]);
    if !gzip && head.get(257..262) != Some(&b"ustar"[..]) {
        return None;
    }
    let built = match seek_index(&mut file) {
        Ok(built) => built,
        Err(e) => {
            tracing::warn!("not a tar archive ({e}): indexing it as a plain file");
            return None;
        }
    };
    Some(cut_at_spans(file, &built))
}

/// The archive's seek index, from one pass over the file.
fn seek_index(file: &mut std::fs::File) -> anyhow::Result<crate::archive::BuiltIndex> {
    file.rewind()?;
    let mut builder = IndexBuilder::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        builder.feed(&buf[..n])?;
    }
    Ok(builder.finish()?)
}

/// The chunk index of an archive: chunks cut where decoding can start, the seek index as a hint.
fn cut_at_spans(
    mut file: std::fs::File,
    built: &crate::archive::BuiltIndex,
) -> std::io::Result<ChunkIndex> {
    let size = file.seek(std::io::SeekFrom::End(0))?;
    file.rewind()?;
    let starts = published::span_starts(built, size, TAR_PIECE);
    tracing::info!(
        members = built.member_count(),
        checkpoints = built.checkpoint_count(),
        "archive: cutting at its span starts"
    );
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    ChunkIndex::build_at(reader, size, &starts, published::encode(built))
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
    if let Some(archive) = &hints.archive {
        found.push(format!("archive seek index of {} bytes", archive.0.len()));
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
