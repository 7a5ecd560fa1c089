//! Images in the store's commands: `ls` and `status` show each image the store has seen under
//! its reference (manifest, config, layers and decoded zstd tars counted together), and catalog
//! entries that are `docker://` images with the manifest they resolved to; `gc` keeps the blobs
//! of images the catalog names (entries and set members, once resolved here) and forgets images
//! none of whose blobs is left; `verify` says which images a quarantined blob belonged to. The
//! records come from [`crate::content::image_records`]; the bytes from the store.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::commands::AddArgs;
use super::Failure;
use crate::catalog::Catalog;
use crate::config::format_size;
use crate::content::image_records::{self, ImageBlobRole, ImageRecord};
use crate::digest::Digest;
use crate::oci::reference::{ImageReference, ReferenceKind};
use crate::sets::MemberContent;
use crate::source::Location;
use crate::store::{db::BlobRow, EvictReport, Store};

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
pub fn print_ls_rows(uses: &[ImageUse]) {
    for i in uses {
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
}

/// What the store recorded of image `reference`, once it was resolved here.
fn use_of<'a>(uses: &'a [ImageUse], reference: &ImageReference) -> Option<&'a ImageUse> {
    let text = reference.to_string();
    uses.iter().find(|u| u.record.reference == text)
}

/// `lazycas ls`'s SIZE, RESIDENT and DIGEST of a catalog entry that is image `reference`: its
/// blobs' sizes and the manifest it resolved to once resolved; before, the digest it pins.
pub fn asset_columns(
    uses: &[ImageUse],
    reference: &ImageReference,
) -> (Option<u64>, u64, Option<String>) {
    match use_of(uses, reference) {
        Some(u) => (
            Some(u.size),
            u.resident,
            Some(u.record.manifest.to_string()),
        ),
        None => (
            None,
            0,
            Some(match reference.digest() {
                Some(d) => d.to_string(),
                None => "(unresolved)".to_string(),
            }),
        ),
    }
}

/// The `assets` item of `lazycas status --json` for catalog entry `name`, image `reference`:
/// `digest` is the manifest it resolved to (null before it is resolved, unless pinned).
pub fn asset_json(uses: &[ImageUse], name: &str, reference: &ImageReference) -> serde_json::Value {
    let found = use_of(uses, reference);
    json!({
        "name": name,
        "kind": "image",
        "reference": reference.to_string(),
        "digest": found
            .map(|u| u.record.manifest)
            .or(reference.digest().copied())
            .map(|d| d.to_string()),
        "resident": found.map_or(0, |u| u.resident),
        "size": found.map(|u| u.size),
    })
}

/// `lazycas add NAME docker://…` takes no pins or hints besides the reference's own.
pub fn check_image_add_flags(a: &AddArgs) -> Result<(), Failure> {
    let given = [
        ("--sha256", a.sha256.is_some()),
        ("--md5", a.md5.is_some()),
        ("--sha1", a.sha1.is_some()),
        ("--index-sha256", a.index_sha256.is_some()),
        ("--size", a.size.is_some()),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((flag, _)) => Err(Failure::Usage(format!(
            "{flag}: a docker:// image is pinned by its manifest digest in the reference \
             (…@sha256:<hex>)"
        ))),
        None => Ok(()),
    }
}

/// The images `catalog` names: its `docker://` entries and its sets' image members.
fn named_images(catalog: &Catalog) -> Vec<&ImageReference> {
    let entries = catalog.assets().filter_map(|a| match &a.config.location {
        Location::Image(r) => Some(r),
        _ => None,
    });
    let members = catalog.sets().flat_map(|s| {
        s.members.iter().filter_map(|m| match &m.content {
            MemberContent::Image(i) => Some(&i.reference),
            _ => None,
        })
    });
    entries.chain(members).collect()
}

/// The blobs of the images `catalog` names, as far as they were resolved here: the record of
/// each reference, and any record of the manifest a reference pins.
fn catalog_image_blobs(uses: &[ImageUse], catalog: &Catalog) -> HashSet<Digest> {
    let named = named_images(catalog);
    let texts: HashSet<String> = named.iter().map(|r| r.to_string()).collect();
    let pinned: HashSet<Digest> = named.iter().filter_map(|r| r.digest().copied()).collect();
    uses.iter()
        .filter(|u| {
            texts.contains(&u.record.reference)
                || u.record.blobs.iter().any(|b| pinned.contains(&b.digest))
        })
        .flat_map(|u| u.record.blobs.iter().map(|b| b.digest))
        .collect()
}

/// `gc`'s eviction down to `target` bytes, skipping (as open) the blobs of the images the
/// catalog names.
pub fn evict_keeping_catalog_images(
    store: &Store,
    catalog: &Catalog,
    target: u64,
) -> Result<EvictReport, Failure> {
    let kept = catalog_image_blobs(&image_uses(store)?, catalog);
    for d in &kept {
        store.retain_blob(d);
    }
    let report = store.evict_to(target);
    for d in &kept {
        store.release_blob(d);
    }
    report.map_err(runtime)
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
