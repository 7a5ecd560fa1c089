//! [`IndexBuilder`]: the one pass over an archive's bytes, fed as they are downloaded.
//!
//! It tells gzip from plain tar by the magic, runs the gzip scan (checkpoints, CRC checks) when
//! needed, parses the tar stream it yields and applies each entry to the tree. Memory holds the
//! tree, the checkpoints and a few fixed buffers; member data is never kept.

use super::checkpoint::Checkpoint;
use super::scan::{GzipScanner, Sink};
use super::tar::TarStream;
use super::tree::{FinishedTree, Tree};
use super::ArchiveError;

/// Default distance between checkpoints, in uncompressed bytes.
pub(crate) const DEFAULT_SPACING: u64 = 4 << 20;
/// Bytes needed to recognise the container format.
const DETECT_LEN: usize = 10;

/// How the tar stream is stored in the blob.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Format {
    /// Plain tar: stream offsets are blob offsets.
    Tar,
    /// gzip (one or more members) around the tar stream.
    Gzip,
}

impl Format {
    /// The stored code.
    pub(crate) fn code(self) -> i64 {
        match self {
            Format::Tar => 0,
            Format::Gzip => 1,
        }
    }

    /// The inverse of [`Format::code`].
    pub(crate) fn from_code(code: i64) -> Option<Format> {
        match code {
            0 => Some(Format::Tar),
            1 => Some(Format::Gzip),
            _ => None,
        }
    }
}

/// The tar side of the pipeline: parser plus tree.
#[derive(Default)]
struct TarSide {
    tar: TarStream,
    tree: Tree,
}

impl TarSide {
    /// Moves completed entries into the tree.
    fn drain(&mut self) {
        for e in self.tar.take_entries() {
            self.tree.apply(e);
        }
    }
}

impl Sink for TarSide {
    fn write(&mut self, data: &[u8]) -> Result<bool, ArchiveError> {
        self.tar.feed(data)?;
        self.drain();
        Ok(!self.tar.ended())
    }
}

/// Builds an archive's index from its bytes, fed once and in order (push-style, so it can sit in
/// the download pipeline next to the hasher).
pub struct IndexBuilder {
    spacing: u64,
    head: Vec<u8>,
    format: Option<Format>,
    gzip: Option<GzipScanner>,
    side: TarSide,
    failed: Option<String>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder::new()
    }
}

impl IndexBuilder {
    /// A builder with checkpoints about every 4 MiB of uncompressed data.
    pub fn new() -> IndexBuilder {
        IndexBuilder::with_checkpoint_spacing(DEFAULT_SPACING)
    }

    /// A builder with checkpoints about every `spacing` uncompressed bytes (at least 64 KiB):
    /// smaller means faster random reads and a larger index (each checkpoint stores a compressed
    /// 32 KiB window).
    pub fn with_checkpoint_spacing(spacing: u64) -> IndexBuilder {
        IndexBuilder {
            spacing: spacing.max(64 * 1024),
            head: Vec::with_capacity(DETECT_LEN),
            format: None,
            gzip: None,
            side: TarSide::default(),
            failed: None,
        }
    }

    /// Feeds the next bytes of the archive. After an error the builder is spent: later calls
    /// return [`ArchiveError::Poisoned`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        if let Some(why) = &self.failed {
            return Err(ArchiveError::Poisoned(why.clone()));
        }
        let result = self.feed_inner(data);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Ends the archive and returns the index, ready for [`ArchiveIndex::save`].
    ///
    /// [`ArchiveIndex::save`]: super::ArchiveIndex::save
    pub fn finish(mut self) -> Result<BuiltIndex, ArchiveError> {
        if let Some(why) = self.failed.take() {
            return Err(ArchiveError::Poisoned(why));
        }
        if self.format.is_none() {
            if self.head.is_empty() {
                return Err(ArchiveError::NotAnArchive("empty file".to_string()));
            }
            self.start()?;
        }
        let format = self.format.unwrap_or(Format::Tar);
        let (checkpoints, stream_len) = match self.gzip.take() {
            Some(gzip) => gzip.finish()?,
            None => (Vec::new(), self.side.tar.position()),
        };
        self.side.tar.finish()?;
        self.side.drain();
        let tree = self.side.tree.finish();
        tracing::debug!(
            members = tree.len(),
            checkpoints = checkpoints.len(),
            stream_len,
            "archive index built"
        );
        Ok(BuiltIndex {
            format,
            stream_len,
            tree,
            checkpoints,
        })
    }

    /// Buffers until the format is known, then routes bytes.
    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        if self.format.is_none() {
            let take = (DETECT_LEN - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < DETECT_LEN {
                return Ok(());
            }
            self.start()?;
        }
        self.route(data)
    }

    /// Decides the format from the buffered head and feeds the head through.
    fn start(&mut self) -> Result<(), ArchiveError> {
        let format = detect(&self.head)?;
        if format == Format::Gzip {
            self.gzip = Some(GzipScanner::new(self.spacing)?);
        }
        self.format = Some(format);
        let head = std::mem::take(&mut self.head);
        self.route(&head)
    }

    /// Sends bytes to the gzip scan or straight to the tar parser.
    fn route(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        match &mut self.gzip {
            Some(gzip) => gzip.feed(data, &mut self.side),
            None => self.side.write(data).map(|_| ()),
        }
    }
}

/// Recognises gzip by its magic; names other compressors in the error; anything else is tar.
fn detect(head: &[u8]) -> Result<Format, ArchiveError> {
    const OTHERS: [(&[u8], &str); 5] = [
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"LZIP", "lzip"),
        (&[0x1f, 0x9d], "compress (.Z)"),
    ];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Format::Gzip);
    }
    for (magic, name) in OTHERS {
        let bzip2_ok =
            name != "bzip2" || head.get(4..10) == Some(&[0x31, 0x41, 0x59, 0x26, 0x53, 0x59]);
        if head.starts_with(magic) && bzip2_ok {
            return Err(ArchiveError::NotAnArchive(format!(
                "{name}-compressed (only gzip and plain tar are supported)"
            )));
        }
    }
    Ok(Format::Tar)
}

/// A finished index, not yet stored. Holds the member tree and the gzip checkpoints.
pub struct BuiltIndex {
    pub(crate) format: Format,
    pub(crate) stream_len: u64,
    pub(crate) tree: FinishedTree,
    pub(crate) checkpoints: Vec<Checkpoint>,
}

impl BuiltIndex {
    /// Number of members, the root directory included.
    pub fn member_count(&self) -> usize {
        self.tree.len()
    }

    /// Number of gzip checkpoints (0 for plain tar).
    pub fn checkpoint_count(&self) -> usize {
        self.checkpoints.len()
    }

    /// True when the archive is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.format == Format::Gzip
    }

    /// Length of the (uncompressed) tar stream.
    pub fn tar_len(&self) -> u64 {
        self.stream_len
    }
}

impl std::fmt::Debug for BuiltIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltIndex")
            .field("format", &self.format)
            .field("stream_len", &self.stream_len)
            .field("members", &self.tree.len())
            .field("checkpoints", &self.checkpoints.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(
            detect(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]).unwrap(),
            Format::Gzip
        );
        assert_eq!(detect(b"BZh_not_bz").unwrap(), Format::Tar);
        assert!(detect(b"BZh91AY&SY").is_err());
        assert!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0, 0, 0]).is_err());
        assert_eq!(detect(b"hello.txt\0").unwrap(), Format::Tar);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(matches!(
            IndexBuilder::new().finish(),
            Err(ArchiveError::NotAnArchive(_))
        ));
        let mut b = IndexBuilder::new();
        b.feed(b"abc").unwrap();
        assert!(matches!(b.finish(), Err(ArchiveError::NotAnArchive(_))));
    }

    #[test]
    fn errors_poison_the_builder() {
        let mut b = IndexBuilder::new();
        assert!(b.feed(&[b'x'; 4096]).is_err());
        assert!(matches!(b.feed(b"more"), Err(ArchiveError::Poisoned(_))));
        assert!(matches!(b.finish(), Err(ArchiveError::Poisoned(_))));
    }
}
