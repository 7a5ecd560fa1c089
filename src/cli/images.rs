//! Images in the store's commands: `ls` and `status` show each image the store has seen under
//! its reference (manifest, config, layers and decoded zstd tars counted together), `gc` forgets
//! images none of whose blobs is left, `verify` says which images a quarantined blob belonged
//! to. The records come from [`crate::content::image_records`]; the bytes from the store.

use std::collections::HashMap;

use serde_json::json;

use super::Failure;
use crate::config::format_size;
use crate::content::image_records::{self, ImageBlobRole, ImageRecord};
use crate::digest::Digest;
use crate::oci::reference::{ImageReference, ReferenceKind};
use crate::store::{db::BlobRow, Store};

/// A recorded image and what the store holds of it.
pub struct ImageUse {
    /// The reference, its manifest and blobs.
    pub record: ImageRecord,
    /// Bytes of all its blobs (held ones at their stored size).
    pub size: u64,
    /// Bytes of its blobs the store holds.
    pub resident: u64,
    /// Something is held and every held blob is pinned (`lazycas pull`).
    pub pinned: bool,
}

impl ImageUse {
    /// `image` (docker://) or `oras` (an artifact shown as a SIF file).
    pub fn kind(&self) -> &'static str {
        match ImageReference::parse(&self.record.reference).map(|r| r.kind()) {
            Ok(ReferenceKind::OrasArtifact) => "oras",
            _ => "image",
        }
    }
}

fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

/// Every image the store has seen, with its sizes, by reference.
pub fn image_uses(store: &Store) -> Result<Vec<ImageUse>, Failure> {
    let records = store
        .with_db(|c| {
            image_records::init_schema(c)?;
            image_records::recorded(c)
        })
        .map_err(runtime)?;
    let held: HashMap<Digest, BlobRow> = store
        .blobs()
        .map_err(runtime)?
        .into_iter()
        .map(|b| (b.digest, b))
        .collect();
    Ok(records
        .into_iter()
        .map(|record| {
            let (mut size, mut resident, mut held_count, mut pinned_count) = (0, 0, 0, 0);
            for b in &record.blobs {
                match held.get(&b.digest) {
                    Some(row) => {
                        size += row.size;
                        resident += row.size;
                        held_count += 1;
                        pinned_count += usize::from(row.pinned);
                    }
                    None => size += b.size.unwrap_or(0),
                }
            }
            ImageUse {
                record,
                size,
                resident,
                pinned: held_count > 0 && pinned_count == held_count,
            }
        })
        .collect())
}

/// `lazycas ls` rows for images, in its columns (NAME KIND SIZE RESIDENT FROM DIGEST).
pub fn print_ls_rows(store: &Store) -> Result<(), Failure> {
    for i in image_uses(store)? {
        println!(
            "{:<40} {:<7} {:>9} {:>9} {:<8} {}",
            i.record.reference,
            i.kind(),
            format_size(i.size),
            format_size(i.resident),
            if i.pinned { "pulled" } else { "registry" },
            i.record.manifest,
        );
    }
    Ok(())
}

/// The `images` list of `lazycas status --json`.
pub fn status_json(uses: &[ImageUse]) -> serde_json::Value {
    uses.iter()
        .map(|i| {
            let blobs: Vec<_> = i
                .record
                .blobs
                .iter()
                .map(|b| json!({"digest": b.digest.to_string(), "role": b.role.as_str()}))
                .collect();
            json!({
                "reference": i.record.reference,
                "kind": i.kind(),
                "manifest": i.record.manifest.to_string(),
                "size": i.size,
                "resident": i.resident,
                "pinned": i.pinned,
                "blobs": blobs,
            })
        })
        .collect()
}

/// The `images:` line of `lazycas status`, and one line per image.
pub fn print_status_lines(uses: &[ImageUse]) {
    let resident: u64 = uses.iter().map(|i| i.resident).sum();
    println!(
        "images:         {} ({} resident)",
        uses.len(),
        format_size(resident)
    );
    for i in uses {
        println!(
            "  {} {} of {}{}",
            i.record.reference,
            format_size(i.resident),
            format_size(i.size),
            if i.pinned { ", pinned" } else { "" }
        );
    }
}

/// Forgets the images none of whose blobs the store holds any more; returns their references.
pub fn forget_gone(store: &Store) -> Result<Vec<String>, Failure> {
    let gone: Vec<String> = image_uses(store)?
        .into_iter()
        .filter(|i| i.resident == 0)
        .map(|i| i.record.reference)
        .collect();
    for reference in &gone {
        store
            .with_db(|c| image_records::forget(c, reference))
            .map_err(runtime)?;
    }
    Ok(gone)
}

/// What `d` is to the images using it (`layer of docker://…`), for `verify`'s report.
pub fn roles_of(uses: &[ImageUse], d: &Digest) -> Vec<String> {
    uses.iter()
        .flat_map(|i| {
            i.record
                .blobs
                .iter()
                .filter(|b| b.digest == *d)
                .map(|b| format!("{} of {}", role_name(b.role), i.record.reference))
        })
        .collect()
}

fn role_name(role: ImageBlobRole) -> &'static str {
    match role {
        ImageBlobRole::Decoded => "decoded zstd layer",
        other => other.as_str(),
    }
}
