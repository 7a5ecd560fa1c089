//! PAX extended headers (`x` for the next entry, `g` global): the `LEN key=value\n` records and
//! the keywords that change what extraction produces.
//!
//! Known keywords: `path`, `linkpath`, `size`, `mtime` (with fraction), `uid`, `gid`,
//! `SCHILY.devmajor`/`devminor`, `SCHILY.xattr.*`, and GNU's sparse keys (`GNU.sparse.*`, formats
//! 0.0, 0.1 and 1.0). Others (`atime`, `ctime`, `uname`, `gname`, `comment`, `charset`, ACLs)
//! do not change the tree we show and are ignored.

use super::sparse::{self, SparseChunk};

/// One `key=value` record.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

/// Splits extended header data into records, in order.
pub(crate) fn parse_records(data: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest[0] == 0 {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record with a bad length")?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("record length {len} does not fit the header"));
        }
        let kv = &rest[space + 1..len - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        records.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        pos += len;
    }
    Ok(records)
}

/// Keywords a global header may set for all following entries. Per-file keys (path, linkpath,
/// size, sparse layout) are taken from `x` headers only.
pub(crate) fn is_global_key(key: &[u8]) -> bool {
    matches!(key, b"mtime" | b"uid" | b"gid" | b"uname" | b"gname")
        || key.starts_with(b"SCHILY.xattr.")
}

/// The GNU sparse keywords of one entry.
#[derive(Clone, Default, Debug)]
pub(crate) struct SparseKeys {
    /// `GNU.sparse.major`.
    pub major: Option<u64>,
    /// `GNU.sparse.minor`.
    pub minor: Option<u64>,
    /// `GNU.sparse.name`: the real name.
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x): the file's real size.
    pub realsize: Option<u64>,
    /// `GNU.sparse.map` (0.1) or the `offset`/`numbytes` pairs (0.0).
    pub map: Option<Vec<SparseChunk>>,
    /// A 0.0 `offset` waiting for its `numbytes`.
    pending_offset: Option<u64>,
    /// A sparse keyword could not be used: the entry's layout is unknown.
    pub invalid: bool,
}

impl SparseKeys {
    /// True when the entry uses PAX 1.0 (map stored at the start of the data).
    pub(crate) fn is_v1(&self) -> bool {
        self.major == Some(1)
    }
}

/// The attributes extended headers give one entry (global defaults, then its own `x` header).
#[derive(Clone, Default, Debug)]
pub(crate) struct PaxAttrs {
    /// `path`.
    pub path: Option<Vec<u8>>,
    /// `linkpath`.
    pub linkpath: Option<Vec<u8>>,
    /// `size`.
    pub size: Option<u64>,
    /// `mtime` as (seconds, nanoseconds).
    pub mtime: Option<(i64, u32)>,
    /// `uid`.
    pub uid: Option<u64>,
    /// `gid`.
    pub gid: Option<u64>,
    /// `SCHILY.devmajor`.
    pub devmajor: Option<u64>,
    /// `SCHILY.devminor`.
    pub devminor: Option<u64>,
    /// `SCHILY.xattr.NAME` → (NAME, value), in order; a repeated name replaces the earlier one.
    pub xattrs: Vec<Record>,
    /// GNU sparse keys.
    pub sparse: SparseKeys,
}

impl PaxAttrs {
    /// Applies one record. An empty value unsets the key (POSIX), except for xattrs, where it is
    /// an empty value.
    pub(crate) fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            self.xattrs.retain(|(n, _)| n != name);
            self.xattrs.push((name.to_vec(), value.to_vec()));
            return Ok(());
        }
        let empty = value.is_empty();
        match key {
            b"path" => self.path = (!empty).then(|| value.to_vec()),
            b"linkpath" => self.linkpath = (!empty).then(|| value.to_vec()),
            b"size" => self.size = opt(value, decimal)?,
            b"mtime" => self.mtime = opt(value, timestamp)?,
            b"uid" => self.uid = opt(value, decimal)?,
            b"gid" => self.gid = opt(value, decimal)?,
            b"SCHILY.devmajor" => self.devmajor = opt(value, decimal)?,
            b"SCHILY.devminor" => self.devminor = opt(value, decimal)?,
            _ => return self.apply_sparse(key, value),
        }
        Ok(())
    }

    /// Applies a `GNU.sparse.*` record (other keys are ignored); a bad one marks the layout
    /// invalid.
    fn apply_sparse(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let result = self.sparse.apply(key, value);
        self.sparse.invalid |= result.is_err();
        result
    }
}

impl SparseKeys {
    /// Applies one `GNU.sparse.*` record.
    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match key {
            b"GNU.sparse.major" => self.major = Some(decimal(value)?),
            b"GNU.sparse.minor" => self.minor = Some(decimal(value)?),
            b"GNU.sparse.name" => self.name = Some(value.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.realsize = Some(decimal(value)?),
            b"GNU.sparse.map" => self.map = Some(sparse::parse_map_text(value)?),
            b"GNU.sparse.offset" => self.pending_offset = Some(decimal(value)?),
            b"GNU.sparse.numbytes" => {
                let offset = self
                    .pending_offset
                    .take()
                    .ok_or("GNU.sparse.numbytes without GNU.sparse.offset")?;
                let map = self.map.get_or_insert_with(Vec::new);
                if map.len() >= sparse::MAX_CHUNKS {
                    return Err("sparse map has too many chunks".to_string());
                }
                map.push(SparseChunk {
                    offset,
                    len: decimal(value)?,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// `None` for an empty value, else the parsed value.
fn opt<T>(value: &[u8], parse: fn(&[u8]) -> Result<T, String>) -> Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

/// A non-negative decimal number.
pub(crate) fn decimal(value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(value)))
}

/// A PAX timestamp: `[-]SECONDS[.FRACTION]`, as (seconds, nanoseconds) with nanoseconds >= 0.
pub(crate) fn timestamp(value: &[u8]) -> Result<(i64, u32), String> {
    let bad = || format!("bad timestamp {:?}", String::from_utf8_lossy(value));
    let (negative, digits) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &b""[..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let secs = i64::try_from(decimal(whole).map_err(|_| bad())?).map_err(|_| bad())?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
    }
    if !negative {
        return Ok((secs, nanos));
    }
    if nanos == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(k: &str, v: &[u8]) -> Vec<u8> {
        let body_len = k.len() + v.len() + 3;
        let mut len = body_len + 1;
        while format!("{len}").len() + body_len != len {
            len += 1;
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    #[test]
    fn records_parse_in_order_with_binary_values() {
        let mut data = record("path", b"a/b\xffc");
        data.extend(record("SCHILY.xattr.user.x", b"v=\n1"));
        data.extend(record("GNU.sparse.offset", b"0"));
        data.extend(record("GNU.sparse.numbytes", b"5"));
        data.extend([0u8; 20]);
        let recs = parse_records(&data).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs[1],
            (b"SCHILY.xattr.user.x".to_vec(), b"v=\n1".to_vec())
        );
        let mut a = PaxAttrs::default();
        for (k, v) in &recs {
            a.apply(k, v).unwrap();
        }
        assert_eq!(a.path.as_deref(), Some(&b"a/b\xffc"[..]));
        assert_eq!(a.xattrs, vec![(b"user.x".to_vec(), b"v=\n1".to_vec())]);
        assert_eq!(a.sparse.map, Some(vec![SparseChunk { offset: 0, len: 5 }]));
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(parse_records(b"abc path=x\n").is_err());
        assert!(parse_records(b"99 path=x\n").is_err());
        assert!(parse_records(b"11 path=x\nX").is_err());
        assert!(parse_records(b"9 pathx\n").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(b"1700000000"), Ok((1_700_000_000, 0)));
        assert_eq!(timestamp(b"1700000000.5"), Ok((1_700_000_000, 500_000_000)));
        assert_eq!(timestamp(b"1.123456789123"), Ok((1, 123_456_789)));
        assert_eq!(timestamp(b"-1.25"), Ok((-2, 750_000_000)));
        assert_eq!(timestamp(b"-3"), Ok((-3, 0)));
        assert!(timestamp(b"1e5").is_err());
        assert!(timestamp(b"").is_err());
    }

    #[test]
    fn empty_value_unsets() {
        let mut a = PaxAttrs::default();
        a.apply(b"uid", b"1000").unwrap();
        a.apply(b"uid", b"").unwrap();
        assert_eq!(a.uid, None);
        assert!(a.apply(b"size", b"12x").is_err());
        a.apply(b"unknown.key", b"whatever").unwrap();
    }
}
