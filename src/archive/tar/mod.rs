//! tar format: a push-style parser over the uncompressed tar stream, written over bytes because
//! the `tar` crate's reader cannot be fed piecewise as a download arrives.
//!
//! Dialects: v7, POSIX ustar (`prefix`), star, old GNU (`L`/`K` long names, base-256 numbers,
//! `S` sparse with extension blocks), PAX (`x`/`g`, sparse 0.0/0.1/1.0). The parser yields
//! [`TarEntry`] values with data offsets; extraction semantics (which entry wins, links,
//! normalisation) are the `tree` module's job.

mod header;
mod pax;
mod sparse;
mod stream;

pub(crate) use sparse::{decode as decode_sparse, encode as encode_sparse, SparseChunk};
pub(crate) use stream::{EntryKind, TarEntry, TarStream};

#[cfg(test)]
pub(crate) mod tests {
    use super::stream::{EXT_HEADER_CAP, NAME_CAP};
    use super::*;
    use crate::archive::ArchiveError;
    use std::path::Path;
    use std::process::Command;

    /// Parses a whole tar stream fed in `chunk`-byte pieces.
    pub(crate) fn parse(data: &[u8], chunk: usize) -> Result<Vec<TarEntry>, ArchiveError> {
        let mut s = TarStream::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            s.feed(c)?;
            out.extend(s.take_entries());
        }
        s.finish()?;
        out.extend(s.take_entries());
        Ok(out)
    }

    fn find<'a>(entries: &'a [TarEntry], path: &[u8]) -> &'a TarEntry {
        entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(path)))
    }

    fn data_of<'a>(tar: &'a [u8], e: &TarEntry) -> &'a [u8] {
        &tar[e.data_offset as usize..(e.data_offset + e.size) as usize]
    }

    /// Builds an archive with the `tar` crate in the given header style.
    fn crate_archive(gnu: bool) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        let long = format!("{}/file.txt", "d".repeat(150));
        for (name, data) in [("a.txt", &b"hello"[..]), (long.as_str(), b"long one")] {
            let mut h = if gnu {
                ::tar::Header::new_gnu()
            } else {
                ::tar::Header::new_ustar()
            };
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_mtime(1_600_000_000);
            h.set_uid(1000);
            h.set_gid(100);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn gnu_long_names_and_ustar_prefix() {
        for gnu in [true, false] {
            let tar = crate_archive(gnu);
            for chunk in [1, 511, 512, 100_000] {
                let es = parse(&tar, chunk).unwrap();
                assert_eq!(es.len(), 2);
                let a = find(&es, b"a.txt");
                assert_eq!(
                    (a.mode, a.uid, a.gid, a.mtime),
                    (0o640, 1000, 100, 1_600_000_000)
                );
                assert_eq!(data_of(&tar, a), b"hello");
                let long = format!("{}/file.txt", "d".repeat(150));
                assert_eq!(data_of(&tar, find(&es, long.as_bytes())), b"long one");
            }
        }
    }

    fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len += 1;
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    fn raw_header(name: &[u8], typeflag: u8, size: u64) -> [u8; 512] {
        let mut h = ::tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(::tar::EntryType::new(typeflag));
        h.set_cksum();
        *h.as_bytes()
    }

    fn push_member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
        out.extend_from_slice(&raw_header(name, typeflag, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn pax_attributes_and_globals() {
        let mut tar = Vec::new();
        let mut g = pax_record("uid", b"77");
        g.extend(pax_record("path", b"ignored-global-path"));
        g.extend(pax_record("SCHILY.xattr.user.g", b"global"));
        push_member(&mut tar, b"pax_global_header", b'g', &g);
        let mut x = pax_record("path", "ü/\u{1F600}/name\u{e9}".as_bytes());
        x.extend(pax_record("mtime", b"1700000000.123456789"));
        x.extend(pax_record("SCHILY.xattr.user.bin", b"\x00\xff"));
        x.extend(pax_record("gid", b"4294967295"));
        x.extend(pax_record("linkpath", b"ignored for files"));
        push_member(&mut tar, b"PaxHeaders/x", b'x', &x);
        push_member(&mut tar, b"short", b'0', b"data");
        push_member(&mut tar, b"second", b'0', b"2");
        tar.extend([0u8; 1024]);
        let es = parse(&tar, 700).unwrap();
        assert_eq!(es.len(), 2);
        let e = &es[0];
        assert_eq!(e.path, "ü/\u{1F600}/name\u{e9}".as_bytes());
        assert_eq!((e.mtime, e.mtime_nanos), (1_700_000_000, 123_456_789));
        assert_eq!((e.uid, e.gid), (77, u32::MAX));
        assert_eq!(
            e.xattrs,
            vec![
                (b"user.g".to_vec(), b"global".to_vec()),
                (b"user.bin".to_vec(), b"\x00\xff".to_vec())
            ]
        );
        assert_eq!(data_of(&tar, e), b"data");
        assert_eq!(es[1].path, b"second");
        assert_eq!(es[1].uid, 77);
        assert_eq!(es[1].xattrs.len(), 1);
    }

    #[test]
    fn pax_size_overrides_header_size() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"x", b'x', &pax_record("size", b"700"));
        tar.extend_from_slice(&raw_header(b"big", b'0', 0));
        tar.extend(vec![7u8; 700]);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
        push_member(&mut tar, b"after", b'0', b"ok");
        let es = parse(&tar, 4096).unwrap();
        assert_eq!(es.len(), 2);
        assert_eq!(es[0].size, 700);
        assert_eq!(data_of(&tar, &es[1]), b"ok");
    }

    #[test]
    fn unusable_sparse_keywords_skip_the_entry() {
        let mut tar = Vec::new();
        let mut x = pax_record("GNU.sparse.map", b"0,5,100");
        x.extend(pax_record("GNU.sparse.size", b"200"));
        push_member(&mut tar, b"x", b'x', &x);
        push_member(&mut tar, b"bad-sparse", b'0', b"12345");
        push_member(&mut tar, b"next", b'0', b"ok");
        let es = parse(&tar, 512).unwrap();
        assert_eq!(es.len(), 1);
        assert_eq!(data_of(&tar, &es[0]), b"ok");
    }

    #[test]
    fn non_utf8_names_survive() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"caf\xe9/\xff\xfe", b'0', b"x");
        let es = parse(&tar, 512).unwrap();
        assert_eq!(es[0].path, b"caf\xe9/\xff\xfe");
    }

    #[test]
    fn base256_size_and_negative_mtime() {
        let mut h = ::tar::Header::new_gnu();
        h.set_path("neg").unwrap();
        h.set_size(3);
        h.set_mode(0o600);
        let bytes = h.as_mut_bytes();
        bytes[124] = 0x80;
        bytes[125..136].fill(0);
        bytes[135] = 3;
        bytes[136..148].fill(0xff);
        bytes[147] = 0xfe;
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(b"abc");
        tar.resize(1024, 0);
        let es = parse(&tar, 512).unwrap();
        assert_eq!(es[0].size, 3);
        assert_eq!(es[0].mtime, -2);
        assert_eq!(data_of(&tar, &es[0]), b"abc");
    }

    #[test]
    fn end_of_archive_and_missing_end_blocks() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"a", b'0', b"1");
        let no_end = tar.clone();
        tar.extend([0u8; 512]);
        push_member(&mut tar, b"after-end", b'0', b"2");
        assert_eq!(parse(&tar, 512).unwrap().len(), 1);
        assert_eq!(parse(&no_end, 512).unwrap().len(), 1);
    }

    #[test]
    fn truncated_member_is_dropped_but_earlier_ones_kept() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"a", b'0', b"1");
        push_member(&mut tar, b"b", b'0', &[5u8; 2000]);
        let es = parse(&tar[..1024 + 1000], 512).unwrap();
        assert_eq!(es.len(), 1);
        // Missing only padding: still complete.
        let es = parse(&tar[..tar.len() - 10], 512).unwrap();
        assert_eq!(es.len(), 2);
    }

    #[test]
    fn bad_checksum_skips_to_next_header() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"a", b'0', b"1");
        let mut bad = raw_header(b"b", b'0', 1);
        bad[0] = b'c';
        tar.extend_from_slice(&bad);
        tar.extend([9u8; 512]);
        push_member(&mut tar, b"d", b'0', b"4");
        let es = parse(&tar, 512).unwrap();
        let names: Vec<_> = es.iter().map(|e| e.path.clone()).collect();
        assert_eq!(names, vec![b"a".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let err = parse(&[b'x'; 2048], 512).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
        let err = parse(b"short", 512).unwrap_err();
        assert!(matches!(err, ArchiveError::NotAnArchive(_)), "{err}");
        assert!(parse(&[], 512).unwrap().is_empty());
    }

    #[test]
    fn hostile_sizes_are_capped() {
        let mut tar = raw_header(b"././@LongLink", b'L', 1 << 30).to_vec();
        tar.extend([b'a'; 4096]);
        let err = parse(&tar, 512).unwrap_err();
        assert!(
            matches!(err, ArchiveError::TooLarge { cap, .. } if cap == NAME_CAP),
            "{err}"
        );
        let tar = raw_header(b"x", b'x', EXT_HEADER_CAP + 1).to_vec();
        assert!(matches!(
            parse(&tar, 512),
            Err(ArchiveError::TooLarge { .. })
        ));
        // A member claiming 10^12 bytes is skipped without buffering and dropped at the end.
        let mut tar = raw_header(b"huge", b'0', 1_000_000_000_000).to_vec();
        tar.extend([0u8; 8192]);
        assert!(parse(&tar, 1 << 20).unwrap().is_empty());
        // A PAX path over the cap.
        let mut tar = Vec::new();
        let big = vec![b'p'; NAME_CAP as usize + 1];
        push_member(&mut tar, b"x", b'x', &pax_record("path", &big));
        push_member(&mut tar, b"f", b'0', b"");
        assert!(matches!(
            parse(&tar, 512),
            Err(ArchiveError::TooLarge { .. })
        ));
    }

    #[test]
    fn kinds_and_trailing_slash_directories() {
        let mut tar = Vec::new();
        push_member(&mut tar, b"dir/", b'0', b"");
        push_member(&mut tar, b"d5", b'5', b"");
        let mut sym = raw_header(b"sym", b'2', 0);
        sym[157..163].copy_from_slice(b"target");
        let mut h = ::tar::Header::from_byte_slice(&sym).clone();
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        push_member(&mut tar, b"fifo", b'6', b"");
        push_member(&mut tar, b"weird", b'Z', b"zz");
        let es = parse(&tar, 512).unwrap();
        let kinds: Vec<_> = es.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EntryKind::Dir,
                EntryKind::Dir,
                EntryKind::Symlink,
                EntryKind::Fifo,
                EntryKind::File
            ]
        );
        assert_eq!(es[2].link, b"target");
        assert_eq!(data_of(&tar, &es[4]), b"zz");
    }

    /// Runs GNU tar in `dir` with `args`; returns the archive bytes at `dir/out`.
    pub(crate) fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
        let st = Command::new("tar")
            .current_dir(dir)
            .args(args)
            .status()
            .expect("run GNU tar");
        assert!(st.success(), "tar {args:?} failed");
        std::fs::read(dir.join("out")).unwrap()
    }

    /// Writes a sparse file: `data` at each offset, size `size`.
    pub(crate) fn write_sparse(path: &Path, size: u64, parts: &[(u64, &[u8])]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        for (off, data) in parts {
            f.write_all_at(data, *off).unwrap();
        }
    }

    /// Reads a (possibly sparse) entry's bytes out of the tar stream.
    pub(crate) fn read_entry(tar: &[u8], e: &TarEntry) -> Vec<u8> {
        let Some(map) = &e.sparse else {
            return data_of(tar, e).to_vec();
        };
        let mut out = vec![0u8; e.size as usize];
        let mut phys = e.data_offset as usize;
        for c in map {
            let (o, l) = (c.offset as usize, c.len as usize);
            out[o..o + l].copy_from_slice(&tar[phys..phys + l]);
            phys += l;
        }
        out
    }

    #[test]
    fn gnu_tar_sparse_formats() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'S'; 5000];
        let parts: [(u64, &[u8]); 3] = [(0, b"head"), (1 << 20, &big), (3 << 20, b"tail")];
        write_sparse(&dir.path().join("sp"), (3 << 20) + 4 + 8192, &parts);
        let expected = std::fs::read(dir.path().join("sp")).unwrap();
        for fmt in ["gnu", "pax-0.0", "pax-0.1", "pax-1.0"] {
            let args: Vec<String> = match fmt.strip_prefix("pax-") {
                None => vec!["--format=gnu".into()],
                Some(v) => vec!["--format=pax".into(), format!("--sparse-version={v}")],
            };
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["-S", "-cf", "out", "sp"]);
            let tar = gnu_tar(dir.path(), &all);
            for chunk in [512, 4096 + 7] {
                let es = parse(&tar, chunk).unwrap();
                assert_eq!(es.len(), 1, "{fmt}");
                let e = &es[0];
                assert_eq!(e.path, b"sp", "{fmt}");
                assert!(e.sparse.is_some(), "{fmt}");
                assert_eq!(e.size, expected.len() as u64, "{fmt}");
                assert!(read_entry(&tar, e) == expected, "{fmt}: content differs");
            }
        }
    }

    #[test]
    fn old_gnu_sparse_with_extension_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<(u64, Vec<u8>)> = (0..30u64)
            .map(|i| (i * 65536, format!("chunk{i}").into_bytes()))
            .collect();
        let refs: Vec<(u64, &[u8])> = parts.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        write_sparse(&dir.path().join("many"), 30 * 65536, &refs);
        let expected = std::fs::read(dir.path().join("many")).unwrap();
        let tar = gnu_tar(dir.path(), &["--format=gnu", "-S", "-cf", "out", "many"]);
        let es = parse(&tar, 512).unwrap();
        assert!(es[0].sparse.as_ref().map_or(0, Vec::len) >= 30);
        assert!(read_entry(&tar, &es[0]) == expected);
    }
}
