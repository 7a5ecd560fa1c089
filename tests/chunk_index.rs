//! `lazycas index` on real images: a squashfs image made by `mksquashfs` from real files plus
//! random bytes, and a SIF made by `siftool` around it. The printed digest must be the written
//! index's sha256, the index must parse against that pin and describe the file exactly, its hints
//! must agree with `unsquashfs -s` and locate the SIF's squashfs partition, and a second version
//! of the image with one directory added must share at least 90% of its bytes in chunks with the
//! first.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{copy_real_files, make_tree, mksquashfs, sif_around};
use common::lazycas::{lazycas_bin, CLI_TIMEOUT};
use common::process::require_program;
use common::{run, sha256_file};
use lazycas::chunk::ChunkIndex;
use lazycas::digest::Digest;

/// Bytes of real files in the test trees, and of random bytes.
const REAL_BYTES: u64 = 24 << 20;
const RANDOM_BYTES: usize = 8 << 20;

/// Runs `lazycas index FILE [-o OUT]`; returns the printed digest and the index's path.
fn lazycas_index(file: &Path, out: Option<&Path>) -> (Digest, PathBuf) {
    let mut cmd = Command::new(lazycas_bin());
    cmd.arg("index").arg(file);
    if let Some(out) = out {
        cmd.arg("-o").arg(out);
    }
    let output = run(cmd, CLI_TIMEOUT);
    output.assert_success();
    let line = output.stdout.trim_end_matches('\n');
    assert!(
        line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()) && !line.contains('\n'),
        "lazycas index must print one line of 64 hex digits, printed {:?}",
        output.stdout
    );
    let digest = Digest::parse(line).expect("printed digest");
    let path = out.map(Path::to_path_buf).unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".lazycas-index");
        PathBuf::from(p)
    });
    (digest, path)
}

/// Indexes `file` and loads the index through the pinned, defensive parser; checks the printed
/// digest is the sha256 of the written file and the index describes `file` byte for byte.
fn index_and_load(file: &Path, out: Option<&Path>) -> ChunkIndex {
    let (printed, path) = lazycas_index(file, out);
    assert_eq!(
        printed.hex(),
        sha256_file(&path),
        "printed digest vs the index file"
    );
    let bytes = std::fs::read(&path).expect("read index");
    let index = ChunkIndex::parse(&bytes, &printed).expect("index parses against its pin");
    let content = std::fs::read(file).expect("read indexed file");
    assert_eq!(index.size(), content.len() as u64);
    assert_eq!(index.file_digest().hex(), sha256_file(file));
    for i in 0..index.chunks().len() {
        let r = index.chunk_range(i).expect("chunk range");
        let chunk = &content[r.start() as usize..r.end() as usize];
        assert_eq!(
            Digest::of(chunk),
            index.chunks()[i].digest,
            "chunk {i} {r:?}"
        );
    }
    index
}

/// `unsquashfs -s [-o OFFSET] IMAGE` output as `label -> value` (the line's last word or, for
/// "Filesystem size N bytes", N), without the line naming the file.
fn unsquashfs_stats(image: &Path, offset: Option<u64>) -> HashMap<String, String> {
    let tool = require_program("unsquashfs", "squashfs-tools");
    let mut cmd = Command::new(tool);
    if let Some(offset) = offset {
        cmd.args(["-o", &offset.to_string()]);
    }
    cmd.arg("-s").arg(image);
    let output = run(cmd, CLI_TIMEOUT);
    output.assert_success();
    let mut stats = HashMap::new();
    for line in output.stdout.lines() {
        if let Some(rest) = line.strip_prefix("Filesystem size ") {
            let n = rest.split_whitespace().next().unwrap_or_default();
            stats.insert("Filesystem size".to_string(), n.to_string());
        } else if let Some((label, value)) = line.rsplit_once(' ') {
            if !line.starts_with("Found a valid") {
                stats.insert(label.to_string(), value.to_string());
            }
        }
    }
    stats
}

fn compression_name(id: u16) -> &'static str {
    match id {
        1 => "gzip",
        2 => "lzma",
        3 => "lzo",
        4 => "xz",
        5 => "lz4",
        6 => "zstd",
        _ => "unknown",
    }
}

/// Checks the index's squashfs hint against what `unsquashfs -s` reads from the image.
fn assert_hint_matches_unsquashfs(index: &ChunkIndex, file: &Path, offset: Option<u64>) {
    let hint = index.hints().squashfs.expect("squashfs hint");
    assert_eq!(hint.offset, offset.unwrap_or(0));
    let sb = hint.superblock;
    let stats = unsquashfs_stats(file, offset);
    let stat = |k: &str| {
        stats
            .get(k)
            .unwrap_or_else(|| panic!("unsquashfs -s printed no {k:?}: {stats:?}"))
            .clone()
    };
    assert_eq!(stat("Filesystem size"), sb.bytes_used.to_string());
    assert_eq!(stat("Block size"), sb.block_size.to_string());
    assert_eq!(stat("Number of inodes"), sb.inode_count.to_string());
    assert_eq!(stat("Number of fragments"), sb.fragment_count.to_string());
    assert_eq!(stat("Number of ids"), sb.id_count.to_string());
    assert_eq!(stat("Compression"), compression_name(sb.compression));
    let tail = hint.metadata_tail();
    assert_eq!(tail.end(), hint.offset + sb.bytes_used);
    assert_eq!(tail.start(), hint.offset + sb.inode_table_start);
    assert!(
        tail.len() < sb.bytes_used / 10,
        "metadata tail {tail:?} of an image of {} bytes",
        sb.bytes_used
    );
}

/// Checks what a mount would prefetch on open: at most two requests, a small part of the file,
/// covering the superblock and the metadata tail.
fn assert_prefetch_is_small(index: &ChunkIndex, what: &str) {
    let runs = index.prefetch_chunks();
    assert!(
        (1..=2).contains(&runs.len()),
        "{what}: prefetch runs {runs:?}"
    );
    let bytes: u64 = runs
        .iter()
        .flat_map(|run| run.clone())
        .filter_map(|i| index.chunk_range(i))
        .map(|r| r.len())
        .sum();
    println!(
        "{what}: prefetch on open {bytes} bytes in {} requests ({:.1}% of {} bytes)",
        runs.len(),
        bytes as f64 * 100.0 / index.size() as f64,
        index.size()
    );
    assert!(
        bytes * 20 < index.size(),
        "{what}: prefetch of {bytes} bytes"
    );
    let hint = index.hints().squashfs.expect("squashfs hint");
    for needed in [hint.superblock_range(), hint.metadata_tail()] {
        let chunks = index.chunks_covering(needed);
        assert!(
            runs.iter()
                .any(|r| r.start <= chunks.start && chunks.end <= r.end),
            "{what}: {needed:?} (chunks {chunks:?}) not in the prefetch {runs:?}"
        );
    }
}

/// The fraction of `new`'s bytes that lie in chunks `old` also has.
fn shared_fraction(old: &ChunkIndex, new: &ChunkIndex) -> f64 {
    let known: HashSet<Digest> = old.chunks().iter().map(|c| c.digest).collect();
    let shared: u64 = (0..new.chunks().len())
        .filter(|&i| known.contains(&new.chunks()[i].digest))
        .filter_map(|i| new.chunk_range(i))
        .map(|r| r.len())
        .sum();
    shared as f64 / new.size() as f64
}

#[test]
fn squashfs_index_describes_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tree, image) = (dir.path().join("tree"), dir.path().join("image.sqfs"));
    make_tree(&tree, REAL_BYTES, RANDOM_BYTES, 1);
    mksquashfs(&tree, &image);

    let index = index_and_load(&image, None);
    assert!(index.chunks().len() > 50, "{} chunks", index.chunks().len());
    assert_eq!(index.hints().sif, None);
    assert_hint_matches_unsquashfs(&index, &image, None);
    assert_prefetch_is_small(&index, "squashfs");
}

#[test]
fn sif_index_locates_the_primary_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tree, image) = (dir.path().join("tree"), dir.path().join("image.sqfs"));
    let (sif, out) = (dir.path().join("image.sif"), dir.path().join("other.idx"));
    make_tree(&tree, REAL_BYTES, RANDOM_BYTES, 2);
    mksquashfs(&tree, &image);
    sif_around(&image, &sif);

    let index = index_and_load(&sif, Some(&out));
    let partition = index.hints().sif.expect("SIF hint").primary_partition;
    let sif_bytes = std::fs::read(&sif).expect("read sif");
    let squashfs_bytes = std::fs::read(&image).expect("read squashfs");
    assert_eq!(partition.len(), squashfs_bytes.len() as u64);
    assert!(
        sif_bytes[partition.start() as usize..partition.end() as usize] == squashfs_bytes[..],
        "the SIF hint's partition {partition:?} is not the squashfs image"
    );
    assert_hint_matches_unsquashfs(&index, &sif, Some(partition.start()));
    assert_prefetch_is_small(&index, "SIF");
    assert_eq!(
        unsquashfs_stats(&sif, Some(partition.start())),
        unsquashfs_stats(&image, None)
    );
}

#[test]
fn a_new_version_with_a_directory_added_shares_most_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v1_tree, v2_tree) = (dir.path().join("v1"), dir.path().join("v2"));
    make_tree(&v1_tree, REAL_BYTES, RANDOM_BYTES, 3);
    make_tree(&v2_tree, REAL_BYTES, RANDOM_BYTES, 3);
    // One directory of real files, sorting before the trees' real files so that everything after
    // it moves.
    let added = copy_real_files(
        Path::new("/usr/share/doc"),
        &v2_tree.join("usr_a_added"),
        1 << 20,
    );
    assert!(added > 0, "no files to add from /usr/share/doc");

    let mut figures = Vec::new();
    for wrap_in_sif in [false, true] {
        let mut indexes = Vec::new();
        for (name, tree) in [("v1", &v1_tree), ("v2", &v2_tree)] {
            let image = dir.path().join(format!("{name}.sqfs"));
            if !image.exists() {
                mksquashfs(tree, &image);
            }
            let file = match wrap_in_sif {
                false => image,
                true => {
                    let sif = dir.path().join(format!("{name}.sif"));
                    sif_around(&image, &sif);
                    sif
                }
            };
            indexes.push(index_and_load(&file, None));
        }
        let share = shared_fraction(&indexes[0], &indexes[1]);
        let kind = if wrap_in_sif { "SIF" } else { "squashfs" };
        let (v1, v2) = (indexes[0].size(), indexes[1].size());
        println!(
            "{kind}: v1 {v1} bytes, v2 {v2} bytes (+{} for {added} bytes of files added); \
             v2 shares {:.1}% of its bytes with v1, {} bytes to fetch",
            v2.saturating_sub(v1),
            share * 100.0,
            ((1.0 - share) * v2 as f64) as u64
        );
        figures.push((kind, share));
    }
    for (kind, share) in figures {
        assert!(share >= 0.90, "{kind}: only {:.1}% shared", share * 100.0);
    }
}

#[test]
fn index_refuses_bad_arguments_with_the_right_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data.bin");
    std::fs::write(&file, common::random_bytes(300_000, 4)).expect("write data");
    let before = sha256_file(&file);
    let index = |args: &[&str]| {
        let mut cmd = Command::new(lazycas_bin());
        cmd.arg("index").args(args);
        run(cmd, CLI_TIMEOUT)
    };
    let path = file.to_str().expect("utf-8 temp path");

    let missing = index(&[&format!("{path}.missing")]);
    missing.assert_code(1);
    assert!(missing.stderr.contains("data.bin.missing"), "{missing}");
    index(&[path, "--min-size", "3"]).assert_code(2);
    index(&[path, "--min-size", "64K", "--max-size", "32K"]).assert_code(2);
    index(&[path, "-o", path]).assert_code(2);
    assert_eq!(
        sha256_file(&file),
        before,
        "the indexed file was overwritten"
    );
    assert!(!dir.path().join("data.bin.lazycas-index").exists());

    let small = index(&[
        path,
        "--min-size",
        "4K",
        "--avg-size",
        "16K",
        "--max-size",
        "64K",
    ]);
    small.assert_success();
    let bytes = std::fs::read(dir.path().join("data.bin.lazycas-index")).expect("index");
    let pin = Digest::parse(small.stdout.trim()).expect("printed digest");
    let parsed = ChunkIndex::parse(&bytes, &pin).expect("parses");
    assert_eq!(parsed.chunker().map(|c| c.avg_size()), Some(16 * 1024));
    assert!(
        parsed.chunks().len() >= 5,
        "{} chunks",
        parsed.chunks().len()
    );
}
