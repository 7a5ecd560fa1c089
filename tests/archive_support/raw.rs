//! Hand-written tar streams: exact entry sequences GNU tar will not produce from a directory
//! (the same path twice, `..` and absolute names, entries behind symlinks) and hostile headers
//! (sizes no archive can hold, huge GNU long-name claims, link cycles).
//!
//! Headers use the GNU magic (`ustar  \0`) so numbers too large for octal are written in GNU's
//! base-256 form, which GNU tar reads back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

/// Type flags.
pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const DIRECTORY: u8 = b'5';
/// GNU: the data of this entry is the next entry's name.
pub const GNU_LONGNAME: u8 = b'L';
/// PAX extended header for the next entry.
pub const PAX: u8 = b'x';
/// PAX global header: defaults for every later entry.
pub const PAX_GLOBAL: u8 = b'g';

/// One 512-byte header.
#[derive(Clone, Debug)]
pub struct Header {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The size the header claims (whatever data follows).
    pub size: u64,
    pub mtime: i64,
    pub link: Vec<u8>,
}

impl Header {
    /// A header for `name` of type `kind`, mode 0644 (0755 for directories), root, mtime 0.
    pub fn new(name: &[u8], kind: u8) -> Header {
        Header {
            name: name.to_vec(),
            kind,
            mode: if kind == DIRECTORY { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
        }
    }

    pub fn encode(&self) -> [u8; 512] {
        assert!(self.name.len() <= 100, "name too long for a raw header");
        assert!(self.link.len() <= 100, "link too long for a raw header");
        let mut h = [0u8; 512];
        h[..self.name.len()].copy_from_slice(&self.name);
        number(&mut h[100..108], self.mode as i64);
        number(&mut h[108..116], self.uid as i64);
        number(&mut h[116..124], self.gid as i64);
        number(&mut h[124..136], self.size as i64);
        number(&mut h[136..148], self.mtime);
        h[156] = self.kind;
        h[157..157 + self.link.len()].copy_from_slice(&self.link);
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }
}

/// Octal with a NUL when it fits, else GNU base-256 (big-endian two's complement, top bit set).
fn number(field: &mut [u8], v: i64) {
    let digits = field.len() - 1;
    if v >= 0 && (v as u128) < 8u128.pow(digits as u32) {
        field[..digits].copy_from_slice(format!("{v:0digits$o}").as_bytes());
        field[digits] = 0;
        return;
    }
    let bytes = v.to_be_bytes();
    let fill = if v < 0 { 0xff } else { 0 };
    let n = field.len();
    for (i, b) in field.iter_mut().enumerate() {
        let from_end = n - 1 - i;
        *b = if from_end < 8 {
            bytes[7 - from_end]
        } else {
            fill
        };
    }
    field[0] = if v < 0 { 0xff } else { 0x80 };
}

/// A tar stream being written.
#[derive(Default)]
pub struct RawTar {
    bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// A header, as is (no data follows unless `data` is called).
    pub fn header(&mut self, h: &Header) -> &mut RawTar {
        self.bytes.extend_from_slice(&h.encode());
        self
    }

    /// Data blocks: `bytes` padded with zeros to a multiple of 512.
    pub fn data(&mut self, bytes: &[u8]) -> &mut RawTar {
        self.bytes.extend_from_slice(bytes);
        let pad = (512 - bytes.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32, mtime: i64) -> &mut RawTar {
        let h = Header {
            mode,
            mtime,
            ..Header::new(name.as_bytes(), DIRECTORY)
        };
        self.header(&h)
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32, mtime: i64) -> &mut RawTar {
        let h = Header {
            mode,
            mtime,
            size: data.len() as u64,
            ..Header::new(name.as_bytes(), REGULAR)
        };
        self.header(&h).data(data)
    }

    pub fn symlink(&mut self, name: &str, target: &str, mtime: i64) -> &mut RawTar {
        let h = Header {
            mode: 0o777,
            mtime,
            link: target.as_bytes().to_vec(),
            ..Header::new(name.as_bytes(), SYMLINK)
        };
        self.header(&h)
    }

    pub fn hardlink(&mut self, name: &str, target: &str, mtime: i64) -> &mut RawTar {
        let h = Header {
            mtime,
            link: target.as_bytes().to_vec(),
            ..Header::new(name.as_bytes(), HARDLINK)
        };
        self.header(&h)
    }

    /// A PAX extended header holding `records` (`key=value`), for the next entry.
    pub fn pax(&mut self, records: &[(&str, &str)]) -> &mut RawTar {
        self.pax_header(PAX, records)
    }

    /// A PAX global header holding `records`, for every later entry.
    pub fn pax_global(&mut self, records: &[(&str, &str)]) -> &mut RawTar {
        self.pax_header(PAX_GLOBAL, records)
    }

    fn pax_header(&mut self, kind: u8, records: &[(&str, &str)]) -> &mut RawTar {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            // The length prefix counts itself.
            let mut len = rest.len() + 1;
            while format!("{len}{rest}").len() != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        let h = Header {
            size: body.len() as u64,
            ..Header::new(b"./PaxHeaders/x", kind)
        };
        self.header(&h).data(&body)
    }

    /// The stream with the two zero blocks that end an archive.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// The stream as written so far, without an end marker.
    pub fn unterminated(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// `data` as one gzip member.
pub fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Writes `tar` gzipped to `dir/file`.
pub fn write_tgz(dir: &Path, file: &str, tar: &RawTar) -> PathBuf {
    let p = dir.join(file);
    fs::write(&p, gzip_bytes(&tar.finish())).expect("write archive");
    p
}
