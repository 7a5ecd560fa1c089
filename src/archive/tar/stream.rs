//! The push-style tar parser: fed the uncompressed tar stream in arbitrary pieces, it yields one
//! [`TarEntry`] per member with its data location, never holding member data.
//!
//! Memory is bounded by the caps: a GNU long name/link up to [`NAME_CAP`], a PAX header up to
//! [`EXT_HEADER_CAP`], a sparse map up to `MAX_CHUNKS` chunks; member data is only counted past.
//! An entry is emitted once all of its data has been seen, so an entry cut short by the end of the
//! stream is never emitted (and is logged).

use super::header::{self, Checksum, Header, BLOCK};
use super::pax::{self, PaxAttrs, Record, SparseKeys};
use super::sparse::{self, Map1Parser, SparseChunk, MAX_CHUNKS};
use crate::archive::ArchiveError;

/// Longest accepted member name or link target.
pub(crate) const NAME_CAP: u64 = 64 * 1024;
/// Largest accepted PAX extended header.
pub(crate) const EXT_HEADER_CAP: u64 = 8 << 20;

/// What an entry creates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EntryKind {
    /// A regular file (possibly sparse).
    File,
    /// A hard link to an earlier member (`link` names it).
    HardLink,
    /// A symbolic link (`link` is the target).
    Symlink,
    /// A directory.
    Dir,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// One member as the archive describes it, extended headers applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TarEntry {
    /// Offset of its (first) header block in the tar stream.
    pub header_offset: u64,
    /// Its name as recorded (not yet normalised).
    pub path: Vec<u8>,
    /// Link target (hard or symbolic), empty otherwise.
    pub link: Vec<u8>,
    /// What it creates.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nanos: u32,
    /// File size (the real size for sparse files); 0 for non-files.
    pub size: u64,
    /// Offset of the first data byte in the tar stream.
    pub data_offset: u64,
    /// For sparse files, the stored chunks (stored back to back from `data_offset`).
    pub sparse: Option<Vec<SparseChunk>>,
    /// Device major.
    pub devmajor: u32,
    /// Device minor.
    pub devminor: u32,
    /// `SCHILY.xattr.*` attributes.
    pub xattrs: Vec<Record>,
}

impl TarEntry {
    /// The name for log lines.
    pub(crate) fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Which extended header is being collected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ExtKind {
    LongName,
    LongLink,
    Pax,
    GlobalPax,
}

/// Where the next byte belongs.
enum State {
    /// A header block.
    Header,
    /// The data of a long name/link or PAX header.
    Ext {
        kind: ExtKind,
        header_offset: u64,
        len: u64,
        padded: u64,
        done: u64,
        buf: Vec<u8>,
    },
    /// Old GNU sparse extension blocks.
    OldSparse {
        entry: Option<Box<TarEntry>>,
        chunks: Vec<SparseChunk>,
        stored: u64,
        realsize: u64,
    },
    /// The PAX 1.0 sparse map at the start of the data.
    Map1 {
        entry: Box<TarEntry>,
        parser: Map1Parser,
        stored: u64,
        realsize: u64,
        consumed: u64,
    },
    /// Member data and padding; the entry is emitted once `remaining <= pad`.
    Data {
        entry: Option<Box<TarEntry>>,
        remaining: u64,
        pad: u64,
    },
    /// After the end-of-archive block: everything is ignored.
    End,
}

/// The parser.
pub(crate) struct TarStream {
    pos: u64,
    state: State,
    block: Box<[u8; BLOCK]>,
    block_len: usize,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    local: Vec<Record>,
    global: Vec<Record>,
    seen_header: bool,
    skipping: bool,
    ready: Vec<TarEntry>,
}

impl Default for TarStream {
    fn default() -> Self {
        TarStream::new()
    }
}

impl TarStream {
    /// A parser at offset 0 of a tar stream.
    pub(crate) fn new() -> TarStream {
        TarStream {
            pos: 0,
            state: State::Header,
            block: Box::new([0u8; BLOCK]),
            block_len: 0,
            long_name: None,
            long_link: None,
            local: Vec::new(),
            global: Vec::new(),
            seen_header: false,
            skipping: false,
            ready: Vec::new(),
        }
    }

    /// True after the end-of-archive marker: later bytes cannot belong to any member.
    pub(crate) fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Bytes of tar stream seen.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Entries completed so far (drained).
    pub(crate) fn take_entries(&mut self) -> Vec<TarEntry> {
        std::mem::take(&mut self.ready)
    }

    /// Feeds the next bytes of the tar stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            let used = match self.state {
                State::End => {
                    self.pos += data.len() as u64;
                    data.len()
                }
                State::Data { .. } => self.data(data),
                State::Ext { .. } => self.ext(data)?,
                State::Header | State::OldSparse { .. } | State::Map1 { .. } => {
                    self.fill_block(data)?
                }
            };
            data = &data[used..];
        }
        Ok(())
    }

    /// The stream ended: complains about what was cut short. Fails only if nothing in the stream
    /// looked like tar.
    pub(crate) fn finish(&mut self) -> Result<(), ArchiveError> {
        let pos = self.pos;
        match std::mem::replace(&mut self.state, State::End) {
            State::End => {}
            State::Header if self.block_len == 0 => {}
            State::Header if !self.seen_header => {
                return Err(ArchiveError::NotAnArchive(format!(
                    "does not look like a tar archive (only {pos} bytes)"
                )))
            }
            State::Header => tracing::warn!(offset = pos, "tar: archive ends inside a header"),
            State::Data {
                entry, remaining, ..
            } => {
                if let Some(e) = entry {
                    tracing::warn!(
                        offset = e.header_offset,
                        "tar: {:?}: archive ends {remaining} bytes early; entry dropped",
                        e.display_name()
                    );
                }
            }
            State::Ext { header_offset, .. } => tracing::warn!(
                offset = header_offset,
                "tar: archive ends inside an extended header"
            ),
            State::OldSparse { .. } | State::Map1 { .. } => {
                tracing::warn!(offset = pos, "tar: archive ends inside a sparse map")
            }
        }
        Ok(())
    }

    /// Collects bytes of a 512-byte block and handles it when complete.
    fn fill_block(&mut self, data: &[u8]) -> Result<usize, ArchiveError> {
        let take = (BLOCK - self.block_len).min(data.len());
        self.block[self.block_len..self.block_len + take].copy_from_slice(&data[..take]);
        self.block_len += take;
        self.pos += take as u64;
        if self.block_len == BLOCK {
            self.block_len = 0;
            let offset = self.pos - BLOCK as u64;
            match std::mem::replace(&mut self.state, State::Header) {
                State::OldSparse {
                    entry,
                    chunks,
                    stored,
                    realsize,
                } => self.old_sparse_block(entry, chunks, stored, realsize)?,
                State::Map1 {
                    entry,
                    parser,
                    stored,
                    realsize,
                    consumed,
                } => self.map1_block(entry, parser, stored, realsize, consumed)?,
                _ => self.header_block(offset)?,
            }
        }
        Ok(take)
    }

    /// Skips member data.
    fn data(&mut self, data: &[u8]) -> usize {
        let State::Data {
            entry,
            remaining,
            pad,
        } = &mut self.state
        else {
            return 0;
        };
        let take = (*remaining).min(data.len() as u64);
        *remaining -= take;
        self.pos += take;
        if *remaining <= *pad {
            if let Some(e) = entry.take() {
                self.ready.push(*e);
            }
        }
        if *remaining == 0 {
            self.state = State::Header;
        }
        take as usize
    }

    /// Collects extended header data.
    fn ext(&mut self, data: &[u8]) -> Result<usize, ArchiveError> {
        let State::Ext {
            len,
            padded,
            done,
            buf,
            ..
        } = &mut self.state
        else {
            return Ok(0);
        };
        let take = (*padded - *done).min(data.len() as u64);
        let keep = len.saturating_sub(*done).min(take) as usize;
        buf.extend_from_slice(&data[..keep]);
        *done += take;
        self.pos += take;
        if *done == *padded {
            if let State::Ext {
                kind,
                header_offset,
                buf,
                ..
            } = std::mem::replace(&mut self.state, State::Header)
            {
                self.ext_done(kind, header_offset, buf);
            }
        }
        Ok(take as usize)
    }

    /// Handles a header block at `offset`.
    fn header_block(&mut self, offset: u64) -> Result<(), ArchiveError> {
        match header::checksum(&self.block) {
            Checksum::Zero => {
                self.state = State::End;
                return Ok(());
            }
            Checksum::Invalid => return self.bad_header(offset, "header checksum mismatch"),
            Checksum::Valid => {}
        }
        let h = match header::parse(&self.block, offset) {
            Ok(h) => h,
            Err(what) => return self.bad_header(offset, &what),
        };
        self.seen_header = true;
        self.skipping = false;
        match h.typeflag {
            b'L' => self.start_ext(&h, offset, ExtKind::LongName, NAME_CAP, "GNU long name"),
            b'K' => self.start_ext(&h, offset, ExtKind::LongLink, NAME_CAP, "GNU long link"),
            b'x' | b'X' => self.start_ext(&h, offset, ExtKind::Pax, EXT_HEADER_CAP, "PAX header"),
            b'g' => self.start_ext(&h, offset, ExtKind::GlobalPax, EXT_HEADER_CAP, "PAX header"),
            b'V' | b'M' | b'N' => {
                tracing::debug!(offset, "tar: skipping {:?} header", h.typeflag as char);
                self.clear_pending();
                self.start_data(None, h.size, offset)
            }
            _ => self.entry(h, offset),
        }
    }

    /// A block that is not a valid header: fatal at the start, else skipped (GNU tar: "Skipping
    /// to next header").
    fn bad_header(&mut self, offset: u64, what: &str) -> Result<(), ArchiveError> {
        if !self.seen_header {
            return Err(ArchiveError::NotAnArchive(format!(
                "does not look like a tar archive ({what} at offset {offset})"
            )));
        }
        if !self.skipping {
            tracing::warn!(offset, "tar: {what}; skipping to next header");
            self.skipping = true;
        }
        self.clear_pending();
        Ok(())
    }

    /// Forgets extended headers that belonged to a header that turned out bad.
    fn clear_pending(&mut self) {
        self.long_name = None;
        self.long_link = None;
        self.local.clear();
    }

    /// Starts collecting an extended header's data.
    fn start_ext(
        &mut self,
        h: &Header,
        offset: u64,
        kind: ExtKind,
        cap: u64,
        what: &'static str,
    ) -> Result<(), ArchiveError> {
        if h.size > cap {
            return Err(ArchiveError::TooLarge {
                offset,
                what,
                len: h.size,
                cap,
            });
        }
        let padded = round_up(h.size);
        if padded == 0 {
            self.ext_done(kind, offset, Vec::new());
            return Ok(());
        }
        self.state = State::Ext {
            kind,
            header_offset: offset,
            len: h.size,
            padded,
            done: 0,
            buf: Vec::with_capacity(h.size as usize),
        };
        Ok(())
    }

    /// Stores a complete extended header for the entries it applies to.
    fn ext_done(&mut self, kind: ExtKind, offset: u64, buf: Vec<u8>) {
        match kind {
            ExtKind::LongName => self.long_name = Some(header::field_bytes(&buf).to_vec()),
            ExtKind::LongLink => self.long_link = Some(header::field_bytes(&buf).to_vec()),
            ExtKind::Pax | ExtKind::GlobalPax => match pax::parse_records(&buf) {
                Ok(records) if kind == ExtKind::Pax => self.local.extend(records),
                Ok(records) => self.set_globals(records),
                Err(e) => tracing::warn!(offset, "tar: malformed extended header ignored: {e}"),
            },
        }
    }

    /// Applies a global header to the defaults of all later entries.
    fn set_globals(&mut self, records: Vec<Record>) {
        for (key, value) in records {
            if !pax::is_global_key(&key) {
                continue;
            }
            self.global.retain(|(k, _)| *k != key);
            if !value.is_empty() {
                self.global.push((key, value));
            }
        }
    }

    /// Builds the entry a member header describes and starts past its data.
    fn entry(&mut self, h: Header, offset: u64) -> Result<(), ArchiveError> {
        let mut attrs = self.pax_attrs(offset);
        let (path, link) = self.names(&h, &mut attrs, offset)?;
        let size = attrs.size.unwrap_or(h.size);
        let (kind, data_len) = classify(h.typeflag, &path, size, offset);
        let (mtime, mtime_nanos) = attrs.mtime.unwrap_or((h.mtime, 0));
        let entry = TarEntry {
            header_offset: offset,
            kind,
            mode: (h.mode & 0o7777) as u32,
            uid: id32(attrs.uid.unwrap_or(h.uid), offset, "uid"),
            gid: id32(attrs.gid.unwrap_or(h.gid), offset, "gid"),
            mtime,
            mtime_nanos,
            size: if kind == EntryKind::File { size } else { 0 },
            data_offset: self.pos,
            sparse: None,
            devmajor: id32(attrs.devmajor.unwrap_or(h.devmajor), offset, "devmajor"),
            devminor: id32(attrs.devminor.unwrap_or(h.devminor), offset, "devminor"),
            xattrs: std::mem::take(&mut attrs.xattrs),
            path,
            link,
        };
        if kind != EntryKind::File {
            return self.start_data(Some(entry), data_len, offset);
        }
        self.start_file(entry, h.typeflag, attrs.sparse, offset)
    }

    /// The extended attributes for the next entry: global defaults, then its own `x` headers.
    fn pax_attrs(&mut self, offset: u64) -> PaxAttrs {
        let mut attrs = PaxAttrs::default();
        let local = std::mem::take(&mut self.local);
        for (key, value) in self.global.iter().chain(local.iter()) {
            if let Err(e) = attrs.apply(key, value) {
                tracing::warn!(
                    offset,
                    "tar: extended header keyword {:?} ignored: {e}",
                    String::from_utf8_lossy(key)
                );
            }
        }
        attrs
    }

    /// Name and link target: PAX beats GNU long names beats the header; `GNU.sparse.name` beats
    /// all. Both are capped at [`NAME_CAP`].
    fn names(
        &mut self,
        h: &Header,
        attrs: &mut PaxAttrs,
        offset: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), ArchiveError> {
        let long_name = self.long_name.take();
        let long_link = self.long_link.take();
        let path = (attrs.sparse.name.take())
            .or(attrs.path.take())
            .or(long_name)
            .unwrap_or_else(|| h.name.clone());
        let link = (attrs.linkpath.take())
            .or(long_link)
            .unwrap_or_else(|| h.link.clone());
        for (what, value) in [("name", &path), ("link target", &link)] {
            if value.len() as u64 > NAME_CAP {
                return Err(ArchiveError::TooLarge {
                    offset,
                    what,
                    len: value.len() as u64,
                    cap: NAME_CAP,
                });
            }
        }
        Ok((path, link))
    }

    /// Starts past a regular file's data, reading its sparse map first if it has one.
    fn start_file(
        &mut self,
        entry: TarEntry,
        typeflag: u8,
        sparse: SparseKeys,
        offset: u64,
    ) -> Result<(), ArchiveError> {
        let size = entry.size;
        if sparse.invalid {
            warn_entry(&entry, "unusable GNU sparse keywords");
            return self.start_data(None, size, offset);
        }
        if typeflag == b'S' {
            return self.start_old_sparse(entry, size);
        }
        if sparse.is_v1() {
            let realsize = sparse.realsize.unwrap_or(0);
            return self.start_map1(entry, size, realsize, offset);
        }
        match sparse.map {
            Some(map) => {
                let realsize = sparse.realsize.unwrap_or(size);
                let entry = sparse_entry(entry, map, realsize, size);
                self.start_data(entry, size, offset)
            }
            None => self.start_data(Some(entry), size, offset),
        }
    }

    /// Skips `len` bytes of data (plus padding), then emits `entry`.
    fn start_data(
        &mut self,
        entry: Option<TarEntry>,
        len: u64,
        offset: u64,
    ) -> Result<(), ArchiveError> {
        let padded = round_up(len);
        if len > u64::MAX - BLOCK as u64 || self.pos.checked_add(padded).is_none() {
            return Err(ArchiveError::Tar {
                entry: entry.map(|e| e.display_name()).unwrap_or_default(),
                offset,
                what: format!("size {len} out of range"),
            });
        }
        if padded == 0 {
            self.ready.extend(entry);
            self.state = State::Header;
            return Ok(());
        }
        self.state = State::Data {
            entry: entry.map(Box::new),
            remaining: padded,
            pad: padded - len,
        };
        Ok(())
    }

    /// Reads the old GNU sparse map in the header; extension blocks may follow.
    fn start_old_sparse(&mut self, entry: TarEntry, stored: u64) -> Result<(), ArchiveError> {
        let (area, extended, realsize_field) = header::old_gnu_sparse(&self.block);
        let realsize = header::parse_unsigned(realsize_field).unwrap_or(0);
        let (entry, chunks) = match sparse::parse_old_gnu(area) {
            Ok(chunks) => (Some(Box::new(entry)), chunks),
            Err(e) => {
                warn_entry(&entry, &e);
                (None, Vec::new())
            }
        };
        self.next_old_sparse(entry, chunks, stored, realsize, extended)
    }

    /// Handles one old GNU sparse extension block.
    fn old_sparse_block(
        &mut self,
        mut entry: Option<Box<TarEntry>>,
        mut chunks: Vec<SparseChunk>,
        stored: u64,
        realsize: u64,
    ) -> Result<(), ArchiveError> {
        match sparse::parse_old_gnu(&self.block[..504]) {
            Ok(more) => chunks.extend(more),
            Err(e) => {
                if let Some(e2) = entry.take() {
                    warn_entry(&e2, &e);
                }
            }
        }
        if chunks.len() > MAX_CHUNKS {
            return Err(ArchiveError::TooLarge {
                offset: entry.map_or(self.pos, |e| e.header_offset),
                what: "old GNU sparse map",
                len: chunks.len() as u64,
                cap: MAX_CHUNKS as u64,
            });
        }
        let extended = self.block[504] != 0;
        self.next_old_sparse(entry, chunks, stored, realsize, extended)
    }

    /// Waits for another extension block if `extended`, else starts past the data.
    fn next_old_sparse(
        &mut self,
        entry: Option<Box<TarEntry>>,
        chunks: Vec<SparseChunk>,
        stored: u64,
        realsize: u64,
        extended: bool,
    ) -> Result<(), ArchiveError> {
        if extended {
            self.state = State::OldSparse {
                entry,
                chunks,
                stored,
                realsize,
            };
            return Ok(());
        }
        self.finish_old_sparse(entry, chunks, stored, realsize)
    }

    /// The old GNU map is complete: the data follows.
    fn finish_old_sparse(
        &mut self,
        entry: Option<Box<TarEntry>>,
        chunks: Vec<SparseChunk>,
        stored: u64,
        realsize: u64,
    ) -> Result<(), ArchiveError> {
        let offset = entry.as_ref().map_or(self.pos, |e| e.header_offset);
        let entry = entry.and_then(|mut e| {
            e.data_offset = self.pos;
            sparse_entry(*e, chunks, realsize, stored)
        });
        self.start_data(entry, stored, offset)
    }

    /// A PAX 1.0 sparse file: its map is at the start of its data.
    fn start_map1(
        &mut self,
        entry: TarEntry,
        stored: u64,
        realsize: u64,
        offset: u64,
    ) -> Result<(), ArchiveError> {
        if stored == 0 {
            warn_entry(&entry, "PAX 1.0 sparse file without a map");
            return Ok(());
        }
        if stored > u64::MAX - BLOCK as u64 {
            return self.start_data(Some(entry), stored, offset);
        }
        self.state = State::Map1 {
            entry: Box::new(entry),
            parser: Map1Parser::default(),
            stored,
            realsize,
            consumed: 0,
        };
        Ok(())
    }

    /// Handles one block of a PAX 1.0 sparse map.
    fn map1_block(
        &mut self,
        mut entry: Box<TarEntry>,
        mut parser: Map1Parser,
        stored: u64,
        realsize: u64,
        consumed: u64,
    ) -> Result<(), ArchiveError> {
        let consumed = consumed + BLOCK as u64;
        let padded = round_up(stored);
        let offset = entry.header_offset;
        match parser.feed(&self.block[..]) {
            Ok(true) if consumed <= stored => {
                entry.data_offset = self.pos;
                let data_len = stored - consumed;
                let e = sparse_entry(*entry, parser.chunks(), realsize, data_len);
                self.start_data(e, data_len, offset)
            }
            Ok(false) if consumed < padded => {
                self.state = State::Map1 {
                    entry,
                    parser,
                    stored,
                    realsize,
                    consumed,
                };
                Ok(())
            }
            Ok(_) => {
                warn_entry(&entry, "PAX 1.0 sparse map runs past the member's data");
                self.start_data(None, padded.saturating_sub(consumed), offset)
            }
            Err(e) => {
                warn_entry(&entry, &e);
                self.start_data(None, padded.saturating_sub(consumed), offset)
            }
        }
    }
}

/// Kind and data length for a type flag. Only regular files (and unknown types, which GNU tar
/// extracts as regular files) and GNU dumpdirs have data; as in GNU tar, hard links, symlinks,
/// devices and directories do not, whatever their size field says.
fn classify(typeflag: u8, path: &[u8], size: u64, offset: u64) -> (EntryKind, u64) {
    match typeflag {
        b'0' | 0 | b'7' if path.ends_with(b"/") => (EntryKind::Dir, 0),
        b'0' | 0 | b'7' | b'S' => (EntryKind::File, size),
        b'1' => (EntryKind::HardLink, 0),
        b'2' => (EntryKind::Symlink, 0),
        b'3' => (EntryKind::CharDevice, 0),
        b'4' => (EntryKind::BlockDevice, 0),
        b'5' => (EntryKind::Dir, 0),
        b'6' => (EntryKind::Fifo, 0),
        b'D' => (EntryKind::Dir, size),
        other => {
            tracing::warn!(
                offset,
                "tar: {:?}: unknown file type {:?}, extracted as a regular file",
                String::from_utf8_lossy(path),
                other as char
            );
            (EntryKind::File, size)
        }
    }
}

/// Attaches a sparse map to `entry` if it is valid; `None` (entry dropped, logged) if not.
fn sparse_entry(
    mut entry: TarEntry,
    chunks: Vec<SparseChunk>,
    realsize: u64,
    stored: u64,
) -> Option<TarEntry> {
    match sparse::validate(chunks, realsize, stored) {
        Ok((chunks, size)) => {
            entry.sparse = Some(chunks);
            entry.size = size;
            Some(entry)
        }
        Err(e) => {
            warn_entry(&entry, &e);
            None
        }
    }
}

/// Logs why an entry is dropped.
fn warn_entry(entry: &TarEntry, what: &str) {
    tracing::warn!(
        offset = entry.header_offset,
        "tar: {:?}: {what}; entry skipped",
        entry.display_name()
    );
}

/// A numeric id that must fit in 32 bits; 65534 ("nobody") with a warning otherwise.
fn id32(v: u64, offset: u64, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| {
        tracing::warn!(offset, "tar: {what} {v} out of range; using 65534");
        65534
    })
}

/// `len` rounded up to whole blocks (saturating; callers check the range).
fn round_up(len: u64) -> u64 {
    len.saturating_add(BLOCK as u64 - 1) / BLOCK as u64 * BLOCK as u64
}
