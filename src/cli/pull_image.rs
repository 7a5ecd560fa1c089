//! `lazycas pull docker://…`: resolves the image, downloads every layer in parallel with one
//! progress bar, indexes the layers and merges them (so the first `ls` of its `rootfs/` on this
//! node is instant), then pins the manifest, config and layers against eviction. `oras://…`
//! the same for an artifact's one SIF layer (nothing to index).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Failure;
use crate::config::{format_size, Config};
use crate::content::{Content, RegistrySettings, ResolvedImage};
use crate::digest::Digest;
use crate::fetch::{FetchSettings, Fetcher};
use crate::oci::reference::{ImageReference, ReferenceKind};
use crate::store::{db, Store};

/// `lazycas pull docker://REGISTRY/REPO[:TAG][@sha256:…]` (or `oras://…`).
pub fn pull_image(config: &Config, target: &str) -> Result<(), Failure> {
    pull_image_with_id(config, target, None)
}

/// [`pull_image`], refusing (before any layer is fetched) an image whose image ID (config
/// digest) is not `image_id` when that is given.
pub fn pull_image_with_id(
    config: &Config,
    target: &str,
    image_id: Option<Digest>,
) -> Result<(), Failure> {
    let reference = ImageReference::parse(target).map_err(|e| Failure::Usage(e.to_string()))?;
    let runtime_error = |e: &dyn std::fmt::Display| Failure::Runtime(anyhow::anyhow!("{e}"));
    let store = Arc::new(Store::open(&config.store).map_err(|e| runtime_error(&e))?);
    let fetcher =
        Fetcher::new(FetchSettings::from_config(config)).map_err(|e| runtime_error(&e))?;
    let content = Content::new(store.clone(), fetcher, config.archive_cache)
        .map_err(|e| runtime_error(&e))?;
    content.set_registry_settings(RegistrySettings::from_config(config));
    let rt = crate::daemon::runtime()?;
    let image = rt
        .block_on(content.resolve_image(&reference))
        .map_err(|e| runtime_error(&e))?;
    if let Some(pinned) = image_id.filter(|id| *id != image.config.digest) {
        return Err(runtime_error(&format!(
            "{reference}: image ID is {}, pinned {pinned}",
            image.config.digest
        )));
    }
    let total: u64 = image.layers.iter().map(|l| l.blob.size).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{reference} ({} layers)", image.layers.len()));
    let fetched = rt.block_on(download_layers(&content, &image, &bar));
    bar.finish_and_clear();
    fetched?;
    let nodes = match reference.kind() {
        ReferenceKind::Image => {
            let opened = rt
                .block_on(content.open_image(&image))
                .map_err(|e| runtime_error(&e))?;
            format!(", {} nodes", opened.tree.len())
        }
        ReferenceKind::OrasArtifact => String::new(),
    };
    let pinned: Vec<Digest> = image.blobs().iter().map(|b| b.digest).collect();
    pin_held(&store, &pinned)?;
    let _ = store.flush_stats();
    println!(
        "{reference} {} pinned ({} layers, {}{nodes})",
        image.manifest.digest,
        image.layers.len(),
        format_size(total),
    );
    Ok(())
}

/// Every layer blob of `image` downloaded (in parallel), the bar showing the bytes so far.
async fn download_layers(
    content: &Content,
    image: &ResolvedImage,
    bar: &indicatif::ProgressBar,
) -> Result<(), Failure> {
    let done: Vec<AtomicU64> = image.layers.iter().map(|_| AtomicU64::new(0)).collect();
    let downloads = (0..image.layers.len()).map(|i| {
        let src = image.layer_source(i);
        let done = &done;
        async move {
            let progress = move |n: u64| {
                done[i].store(n, Ordering::Relaxed);
                bar.set_position(done.iter().map(|d| d.load(Ordering::Relaxed)).sum());
            };
            content.ensure_blob(&src, None, &progress).await
        }
    });
    futures_util::future::try_join_all(downloads)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
    Ok(())
}

/// Pins every digest of `digests` the store holds.
fn pin_held(store: &Store, digests: &[Digest]) -> Result<(), Failure> {
    for d in digests {
        store
            .with_db(|c| db::set_pinned(c, d, true))
            .map_err(|e| Failure::Runtime(e.into()))?;
    }
    Ok(())
}
