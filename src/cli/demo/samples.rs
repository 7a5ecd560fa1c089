//! The demo's sample assets, generated in memory, and the config that catalogs them.
//!
//! Three assets: an "image" file of a few MiB (reproducible pseudo-random bytes, like a SIF),
//! a small `.tar.gz` of additional files (directories, an executable script, a symlink), and a
//! "tampered" file whose bytes do not match the digest the catalog pins, to show a refused read.

use std::path::Path;
use std::sync::Arc;

use crate::config::AssetKind;
use crate::digest::Digest;

/// Size of the sample image.
pub const IMAGE_SIZE: usize = 4 << 20;
/// Members' mtime in the sample archive (2024-01-01T00:00:00Z).
const MTIME: u64 = 1_704_067_200;

/// One asset the origin serves and the catalog names.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Catalog name (the path under the mount point).
    pub name: &'static str,
    /// URL path on the origin.
    pub url_path: &'static str,
    /// What the origin serves.
    pub bytes: Arc<[u8]>,
    /// The digest the catalog pins.
    pub pinned: Digest,
    /// File or archive.
    pub kind: AssetKind,
}

/// A regular file inside the sample archive, to check a member read against.
#[derive(Debug, Clone)]
pub struct Member {
    /// Path inside the archive.
    pub path: &'static str,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// Everything the demo serves.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The image file.
    pub image: Sample,
    /// The additional-files archive.
    pub archive: Sample,
    /// The README member of the archive.
    pub readme: Member,
    /// Served bytes that do not match their pinned digest.
    pub tampered: Sample,
}

impl Samples {
    /// Generates the assets (deterministic: every run serves the same bytes).
    pub fn generate() -> std::io::Result<Samples> {
        let image: Arc<[u8]> = pseudo_random(IMAGE_SIZE, 0x1a2c_a5e5).into();
        let readme = Member {
            path: "README.md",
            bytes: b"# Additional files for the demo model\n\nMounted by lazycas from a .tar.gz; nothing was extracted to disk.\n".to_vec(),
        };
        let archive: Arc<[u8]> = sample_archive(&readme)?.into();
        let good = pseudo_random(256 << 10, 0x7a3b_e4ed);
        let mut served = good.clone();
        served[1000] ^= 0x01; // one flipped bit in transit or on a bad mirror
        Ok(Samples {
            image: Sample {
                name: "images/demo:1.0.sif",
                url_path: "/images/demo-1.0.sif",
                pinned: Digest::of(&image),
                bytes: image,
                kind: AssetKind::File,
            },
            archive: Sample {
                name: "medperf/demo/additional_files",
                url_path: "/medperf/demo/additional_files.tar.gz",
                pinned: Digest::of(&archive),
                bytes: archive,
                kind: AssetKind::Archive,
            },
            readme,
            tampered: Sample {
                name: "images/tampered.sif",
                url_path: "/images/tampered.sif",
                pinned: Digest::of(&good),
                bytes: served.into(),
                kind: AssetKind::File,
            },
        })
    }

    /// All three, in catalog order.
    pub fn all(&self) -> [&Sample; 3] {
        [&self.image, &self.archive, &self.tampered]
    }

    /// The demo's config file: its own store, no proxy, short deadlines, 1 MiB range requests
    /// (so the image arrives as several parallel requests), and the three assets.
    pub fn config_toml(&self, store: &Path, base_url: &str) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = format!(
            "# written by `lazycas demo`\nstore = {}\nproxies = [\"DIRECT\"]\ntimeout_secs = 5\nfetch_chunk_size = \"1M\"\nfetch_parallel = 4\n",
            q(&store.to_string_lossy())
        );
        for s in self.all() {
            out += &format!(
                "\n[[asset]]\nname = {}\nurl = {}\nsha256 = {}\nkind = {}\n",
                q(s.name),
                q(&format!("{base_url}{}", s.url_path)),
                q(&s.pinned.hex()),
                q(s.kind.as_str()),
            );
            if s.kind == AssetKind::File {
                // The publisher knows the size: `ls -l` shows it before anything is fetched.
                out += &format!("size = {}\n", s.bytes.len());
            }
        }
        out
    }
}

/// `len` reproducible pseudo-random (incompressible) bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small additional-files archive: directories, text and binary files, an executable, a
/// symlink.
fn sample_archive(readme: &Member) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let dir = |tar: &mut tar::Builder<_>, path: &str| -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, path, std::io::empty())
    };
    let file =
        |tar: &mut tar::Builder<_>, path: &str, mode: u32, data: &[u8]| -> std::io::Result<()> {
            let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
            tar.append_data(&mut h, path, data)
        };
    file(&mut tar, readme.path, 0o644, &readme.bytes)?;
    dir(&mut tar, "config")?;
    file(
        &mut tar,
        "config/params.yaml",
        0o644,
        b"learning_rate: 0.001\nbatch_size: 32\nepochs: 10\n",
    )?;
    dir(&mut tar, "data")?;
    file(
        &mut tar,
        "data/labels.csv",
        0o644,
        b"id,label\n0,background\n1,tumor\n2,edema\n",
    )?;
    file(
        &mut tar,
        "data/weights.bin",
        0o644,
        &pseudo_random(512 << 10, 0x3e19_47a1),
    )?;
    dir(&mut tar, "bin")?;
    file(
        &mut tar,
        "bin/run.sh",
        0o755,
        b"#!/bin/sh\nexec python3 -m model --params config/params.yaml \"$@\"\n",
    )?;
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, "weights", "data/weights.bin")?;
    tar.into_inner()?.finish()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn samples_are_reproducible_and_pinned() {
        let a = Samples::generate().unwrap();
        let b = Samples::generate().unwrap();
        assert_eq!(a.image.pinned, b.image.pinned);
        assert_eq!(
            a.archive.pinned, b.archive.pinned,
            "archive bytes must not depend on the clock"
        );
        assert_eq!(a.image.bytes.len(), IMAGE_SIZE);
        assert_eq!(Digest::of(&a.image.bytes), a.image.pinned);
        assert_ne!(
            Digest::of(&a.tampered.bytes),
            a.tampered.pinned,
            "tampered must not verify"
        );
    }

    #[test]
    fn archive_lists_its_members() {
        let s = Samples::generate().unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(&s.archive.bytes[..]));
        let mut seen = Vec::new();
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path == s.readme.path {
                let mut text = Vec::new();
                e.read_to_end(&mut text).unwrap();
                assert_eq!(text, s.readme.bytes);
            }
            seen.push(path);
        }
        for want in [
            "README.md",
            "config/params.yaml",
            "data/weights.bin",
            "bin/run.sh",
            "weights",
        ] {
            assert!(
                seen.iter().any(|p| p.trim_end_matches('/') == want),
                "{want} missing from {seen:?}"
            );
        }
    }

    #[test]
    fn config_parses_with_the_real_parser() {
        let s = Samples::generate().unwrap();
        let text = s.config_toml(Path::new("/tmp/demo \"store\""), "http://127.0.0.1:1234");
        let c = crate::config::Config::parse(&text, None).unwrap();
        assert_eq!(c.store, Path::new("/tmp/demo \"store\""));
        assert_eq!(c.assets.len(), 3);
        assert_eq!(c.assets[1].kind, AssetKind::Archive);
        assert_eq!(c.assets[0].size, Some(IMAGE_SIZE as u64));
        assert_eq!(
            c.assets[0].location.describe(),
            "http://127.0.0.1:1234/images/demo-1.0.sif"
        );
        assert_eq!(c.assets[2].sha256, Some(s.tampered.pinned));
    }
}
