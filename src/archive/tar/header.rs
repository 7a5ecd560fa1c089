//! One 512-byte tar header block: checksum, numeric fields (octal and GNU base-256) and the
//! fields every dialect shares (v7, POSIX ustar with its `prefix`, old GNU with its sparse area,
//! star's shorter prefix).

/// The tar block size.
pub(crate) const BLOCK: usize = 512;

const CHKSUM: std::ops::Range<usize> = 148..156;

/// Result of checking a block's header checksum.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Checksum {
    /// The checksum matches (unsigned or signed sum, as GNU tar accepts both).
    Valid,
    /// A zero block: end of archive.
    Zero,
    /// Not a header.
    Invalid,
}

/// Checks the header checksum of `block`.
pub(crate) fn checksum(block: &[u8; BLOCK]) -> Checksum {
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    // GNU tar's test: everything but the checksum field is zero.
    if unsigned == 8 * u64::from(b' ') {
        return Checksum::Zero;
    }
    match parse_unsigned(&block[CHKSUM]) {
        Ok(recorded) if recorded == unsigned || recorded as i64 == signed => Checksum::Valid,
        _ => Checksum::Invalid,
    }
}

/// The bytes of a NUL-terminated (or full-width) string field.
pub(crate) fn field_bytes(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(nul) => &field[..nul],
        None => field,
    }
}

/// An unsigned numeric field: octal (space/NUL padded) or GNU base-256.
pub(crate) fn parse_unsigned(field: &[u8]) -> Result<u64, String> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            if first == 0xff {
                return Err("negative base-256 value".to_string());
            }
            base256(first & 0x7f, &field[1..])
        }
        _ => parse_octal(field),
    }
}

/// A signed numeric field (mtime): octal, or base-256 two's complement.
pub(crate) fn parse_signed(field: &[u8]) -> Result<i64, String> {
    match field.first() {
        Some(&0xff) => {
            let split = field.len().saturating_sub(8);
            let (high, low) = field.split_at(split);
            if high.iter().any(|&b| b != 0xff) || low.first().is_some_and(|&b| b & 0x80 == 0) {
                return Err("base-256 value out of range".to_string());
            }
            let mut bytes = [0xffu8; 8];
            bytes[8 - low.len()..].copy_from_slice(low);
            Ok(i64::from_be_bytes(bytes))
        }
        _ => {
            let v = parse_unsigned(field)?;
            i64::try_from(v).map_err(|_| "value out of range".to_string())
        }
    }
}

/// Big-endian base-256 digits after the marker byte.
fn base256(first: u8, rest: &[u8]) -> Result<u64, String> {
    let mut v = u64::from(first);
    for &b in rest {
        v = v
            .checked_mul(256)
            .and_then(|v| v.checked_add(u64::from(b)))
            .ok_or_else(|| "base-256 value out of range".to_string())?;
    }
    Ok(v)
}

/// Octal digits, optionally surrounded by spaces and terminated by NUL or space.
fn parse_octal(field: &[u8]) -> Result<u64, String> {
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits = &field[start..];
    let end = digits
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .unwrap_or(digits.len());
    if digits[end..].iter().any(|&b| b != 0 && b != b' ') {
        return Err(format!(
            "bad octal field {:?}",
            String::from_utf8_lossy(field)
        ));
    }
    let mut v: u64 = 0;
    for &b in &digits[..end] {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!(
                "bad octal field {:?}",
                String::from_utf8_lossy(field)
            ));
        }
        v = v
            .checked_mul(8)
            .map(|v| v + u64::from(b - b'0'))
            .ok_or_else(|| "octal value out of range".to_string())?;
    }
    Ok(v)
}

/// Which header layout the magic announces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dialect {
    /// No magic: v7 (no prefix).
    V7,
    /// POSIX ustar / PAX: 155-byte prefix.
    Ustar,
    /// star: 131-byte prefix followed by atime/ctime.
    Star,
    /// Old GNU: no prefix; atime/ctime, sparse area, real size.
    Gnu,
}

/// The fields of one header block, before extended headers are applied.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    /// The type flag byte (`'0'`, `'5'`, `'L'`, `'x'`, ...).
    pub typeflag: u8,
    /// The name, with the ustar prefix joined in.
    pub name: Vec<u8>,
    /// The link target field.
    pub link: Vec<u8>,
    /// Mode bits as recorded.
    pub mode: u64,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// The size field (bytes of data after the header).
    pub size: u64,
    /// Modification time in seconds.
    pub mtime: i64,
    /// Device major.
    pub devmajor: u64,
    /// Device minor.
    pub devminor: u64,
}

/// Parses a header block whose checksum is valid. Only the size field is strict (a wrong size
/// desynchronises the stream); other unreadable numbers become 0 with a warning.
pub(crate) fn parse(block: &[u8; BLOCK], offset: u64) -> Result<Header, String> {
    let dialect = dialect(block);
    let mut name = field_bytes(&block[0..100]).to_vec();
    let prefix = match dialect {
        Dialect::Ustar => field_bytes(&block[345..500]),
        Dialect::Star => field_bytes(&block[345..476]),
        Dialect::V7 | Dialect::Gnu => &[][..],
    };
    if !prefix.is_empty() {
        let mut joined = prefix.to_vec();
        joined.push(b'/');
        joined.extend_from_slice(&name);
        name = joined;
    }
    let size = parse_unsigned(&block[124..136]).map_err(|e| format!("size field: {e}"))?;
    let lenient = |range: std::ops::Range<usize>, what: &str| {
        parse_unsigned(&block[range]).unwrap_or_else(|e| {
            tracing::warn!(offset, "tar header: {what} field: {e}; using 0");
            0
        })
    };
    Ok(Header {
        typeflag: block[156],
        link: field_bytes(&block[157..257]).to_vec(),
        mode: lenient(100..108, "mode"),
        uid: lenient(108..116, "uid"),
        gid: lenient(116..124, "gid"),
        size,
        mtime: parse_signed(&block[136..148]).unwrap_or_else(|e| {
            tracing::warn!(offset, "tar header: mtime field: {e}; using 0");
            0
        }),
        devmajor: lenient(329..337, "devmajor"),
        devminor: lenient(337..345, "devminor"),
        name,
    })
}

/// Tells the header layout from the magic (and star's trailer).
fn dialect(block: &[u8; BLOCK]) -> Dialect {
    if &block[257..265] == b"ustar  \0" {
        Dialect::Gnu
    } else if &block[257..263] == b"ustar\0" {
        if &block[508..512] == b"tar\0" {
            Dialect::Star
        } else {
            Dialect::Ustar
        }
    } else {
        Dialect::V7
    }
}

/// The old GNU sparse fields of a header: up to 4 map entries, the "extended" flag and the real
/// size.
pub(crate) fn old_gnu_sparse(block: &[u8; BLOCK]) -> (&[u8], bool, &[u8]) {
    (&block[386..482], block[482] != 0, &block[483..495])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(parse_unsigned(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_unsigned(b"  644 \0"), Ok(0o644));
        assert_eq!(parse_unsigned(b"\0\0\0\0"), Ok(0));
        assert_eq!(parse_unsigned(b"        "), Ok(0));
        assert_eq!(parse_unsigned(b"77777777777\0"), Ok(0o77777777777));
        assert!(parse_unsigned(b"0009\0").is_err());
        assert!(parse_unsigned(b"12 34\0").is_err());
    }

    #[test]
    fn base256_fields() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..12].copy_from_slice(&1_000_000_000_000u64.to_be_bytes());
        assert_eq!(parse_unsigned(&f), Ok(1_000_000_000_000));
        let mut f = [0xffu8; 12];
        f[4..12].copy_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(parse_signed(&f), Ok(-5));
        assert!(parse_unsigned(&f).is_err());
        let mut f = [0xffu8; 12];
        f[3] = 0x7f;
        assert!(parse_signed(&f).is_err());
        let mut f = [0x80u8; 12];
        f[1] = 1;
        assert!(parse_unsigned(&f).is_err());
    }

    fn block_with(name: &[u8], magic: &[u8]) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        b[100..108].copy_from_slice(b"0000644\0");
        b[124..136].copy_from_slice(b"00000000012\0");
        b[156] = b'0';
        b[257..257 + magic.len()].copy_from_slice(magic);
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum::<u32>() + 8 * 32;
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        b
    }

    #[test]
    fn checksums() {
        let b = block_with(b"hello", b"ustar\x0000");
        assert_eq!(checksum(&b), Checksum::Valid);
        let mut bad = b;
        bad[0] = b'j';
        assert_eq!(checksum(&bad), Checksum::Invalid);
        assert_eq!(checksum(&[0u8; BLOCK]), Checksum::Zero);
    }

    #[test]
    fn ustar_prefix_is_joined_gnu_is_not() {
        let mut b = block_with(b"file", b"ustar\x0000");
        b[345..348].copy_from_slice(b"dir");
        let h = parse(&b, 0).unwrap();
        assert_eq!(h.name, b"dir/file");
        assert_eq!(h.size, 10);
        assert_eq!(h.mode, 0o644);
        let mut b = block_with(b"file", b"ustar  \0");
        b[345..348].copy_from_slice(b"\x01\x02\x03");
        let h = parse(&b, 0).unwrap();
        assert_eq!(dialect(&b), Dialect::Gnu);
        assert_eq!(h.name, b"file");
    }

    #[test]
    fn full_width_name_has_no_nul() {
        let name = [b'n'; 100];
        let b = block_with(&name, b"");
        assert_eq!(parse(&b, 0).unwrap().name, name.to_vec());
    }
}
