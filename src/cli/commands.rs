//! The subcommands other than `mount`: each opens the store itself (the daemon need not run)
//! and works through the same store and catalog code the daemon uses.

use anyhow::Context as _;
use serde_json::json;

use super::Failure;
use crate::catalog::{self, Catalog, Origin};
use crate::config::{
    check_name, format_size, parse_size, parse_url_with_digest, AssetConfig, AssetKind, Config,
};
use crate::content::{Archives, Content};
use crate::daemon::control;
use crate::digest::Digest;
use crate::fetch::{FetchSettings, Fetcher};
use crate::source::{Location, Source};
use crate::store::{db, now_secs, Store};

/// The arguments of `lazycas add`.
#[derive(Debug)]
pub struct AddArgs {
    pub name: String,
    pub reference: String,
    pub sha256: Option<String>,
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub kind: Option<String>,
    pub index_sha256: Option<String>,
    pub mirrors: Vec<String>,
    pub size: Option<u64>,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn open_store(config: &Config) -> Result<Store, Failure> {
    Store::open(&config.store)
        .with_context(|| format!("opening store {}", config.store.display()))
        .map_err(Failure::Runtime)
}

/// The store, with archive indexes removed along with evicted or quarantined blobs.
fn open_store_with_archives(config: &Config) -> Result<std::sync::Arc<Store>, Failure> {
    let store = std::sync::Arc::new(open_store(config)?);
    Archives::new(store.clone(), config.archive_cache).map_err(|e| Failure::Runtime(e.into()))?;
    Ok(store)
}

fn parse_digest(what: &str, s: &str) -> Result<Digest, Failure> {
    Digest::parse(s).map_err(|e| usage(format!("{what}: {e}")))
}

/// `lazycas add NAME URL|library://…|shub://… …`
pub fn add(config: &Config, a: AddArgs) -> Result<(), Failure> {
    check_name(&a.name).map_err(|m| usage(format!("name: {m}")))?;
    let (location, pins) = crate::publish::parse_reference(&a.reference)
        .map_err(|m| usage(format!("reference: {m}")))?;
    let flag = a
        .sha256
        .as_deref()
        .map(|s| parse_digest("--sha256", s))
        .transpose()?;
    let sha256 = match (flag, pins.sha256) {
        (Some(f), Some(g)) if f != g => {
            return Err(usage("--sha256 differs from the reference's sha256"))
        }
        (f, g) => f.or(g),
    };
    let weak = crate::config::weak_pin(a.md5.as_deref(), a.sha1.as_deref(), pins.weak)
        .map_err(|(flag, m)| usage(format!("--{flag}: {m}")))?;
    let http_url = location.primary().cloned();
    if sha256.is_none() && weak.is_none() && http_url.is_some() && !config.allow_unpinned {
        return Err(usage(format!(
            "{}: no sha256 pinned (give --sha256, #sha256=…, --md5 or --sha1, or set allow_unpinned = true)",
            a.name
        )));
    }
    let kind = a
        .kind
        .as_deref()
        .map(|k| {
            AssetKind::parse(k)
                .ok_or_else(|| usage(format!("--kind: {k:?} is not file, archive or image")))
        })
        .transpose()?;
    let kind =
        AssetKind::for_location(&location, kind).map_err(|m| usage(format!("--kind: {m}")))?;
    if kind == AssetKind::Image {
        super::images::check_image_add_flags(&a)?;
    }
    let mirrors = a
        .mirrors
        .iter()
        .map(|m| parse_url_with_digest(m).map(|(u, _)| u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| usage(format!("--mirror: {m}")))?;
    let location = match (location, mirrors.is_empty()) {
        (Location::Http { urls }, _) => Location::Http {
            urls: urls.into_iter().chain(mirrors).collect(),
        },
        (other, true) => other,
        (_, false) => return Err(usage("--mirror: only http(s) references have mirrors")),
    };
    let index_sha256 = a
        .index_sha256
        .as_deref()
        .map(|s| parse_digest("--index-sha256", s))
        .transpose()?;
    if config.assets.iter().any(|c| c.name == a.name) {
        return Err(usage(format!(
            "{}: already defined in the config file; change it there",
            a.name
        )));
    }
    let size = match (a.size, &http_url) {
        (Some(s), _) => Some(s),
        (None, Some(url)) => probe_size(config, url),
        (None, None) => None,
    };
    let asset = AssetConfig {
        name: a.name,
        location,
        sha256,
        weak,
        kind,
        index_sha256,
        size,
        fill: None,
    };
    let store = open_store(config)?;
    let conn = store.connect_db().map_err(|e| Failure::Runtime(e.into()))?;
    catalog::add(&conn, &asset, now_secs()).map_err(|e| match e {
        catalog::CatalogError::Invalid(m) => usage(m),
        other => Failure::Runtime(other.into()),
    })?;
    tell_running_mount(&store);
    println!("added {} ({})", asset.name, asset.kind.as_str());
    Ok(())
}

/// Makes a running mount over this store show a catalog change before we return.
fn tell_running_mount(store: &Store) {
    if let Err(e) = control::refresh_catalog(store.root()) {
        eprintln!("warning: {e}; the mount will show the change within a second");
    }
}

/// Asks the origin for the size (HEAD, a few seconds at most) so `ls -l` on the mount shows it
/// before any fetch; an origin that does not answer just leaves it unknown.
fn probe_size(config: &Config, url: &url::Url) -> Option<u64> {
    let mut settings = FetchSettings::from_config(config);
    settings.timeout = settings.timeout.min(std::time::Duration::from_secs(3));
    let fetcher = Fetcher::new(settings).ok()?;
    let rt = crate::daemon::runtime().ok()?;
    rt.block_on(fetcher.probe_size(url))
}

/// `lazycas rm NAME`
pub fn rm(config: &Config, name: &str) -> Result<(), Failure> {
    if config.assets.iter().any(|c| c.name == name) || config.sets.iter().any(|s| s.name == name) {
        return Err(usage(format!(
            "{name}: defined in the config file; remove it there"
        )));
    }
    let store = open_store(config)?;
    let conn = store.connect_db().map_err(|e| Failure::Runtime(e.into()))?;
    match catalog::remove(&conn, name) {
        Ok(()) => {}
        // Not an added asset: perhaps an imported set.
        Err(e @ catalog::CatalogError::NotFound(_)) => {
            if !crate::sets::remove_set(&conn, name).map_err(|e| Failure::Runtime(e.into()))? {
                return Err(usage(e.to_string()));
            }
        }
        Err(other) => return Err(Failure::Runtime(other.into())),
    }
    tell_running_mount(&store);
    println!("removed {name}");
    Ok(())
}

/// `lazycas import medperf FILE.json [--name NAME] [--layout mlcube|container] [--image REF]`
pub fn import(
    config: &Config,
    format: &str,
    file: &std::path::Path,
    name: Option<&str>,
    layout: Option<&str>,
    image: Option<&str>,
) -> Result<(), Failure> {
    if format != "medperf" {
        return Err(usage(format!("{format:?}: the only format is medperf")));
    }
    let json = std::fs::read(file)
        .with_context(|| format!("reading {}", file.display()))
        .map_err(Failure::Runtime)?;
    let imported = crate::publish::medperf::import_cube(&json, name, layout, image)
        .map_err(|m| usage(format!("{}: {m}", file.display())))?;
    let set = imported
        .set
        .check(config.allow_unpinned)
        .map_err(|(key, m)| usage(format!("{}: {key}: {m}", file.display())))?;
    if config.assets.iter().any(|a| a.name == set.name)
        || config.sets.iter().any(|s| s.name == set.name)
    {
        return Err(usage(format!(
            "{}: already defined in the config file",
            set.name
        )));
    }
    let store = open_store(config)?;
    let conn = store.connect_db().map_err(|e| Failure::Runtime(e.into()))?;
    crate::sets::store_set(&conn, &imported.set, now_secs())
        .map_err(|e| Failure::Runtime(e.into()))?;
    tell_running_mount(&store);
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    let members: Vec<&str> = set.members.iter().map(|m| m.path.as_str()).collect();
    println!("imported {} ({})", set.name, members.join(", "));
    Ok(())
}

fn load_catalog(config: &Config, store: &Store) -> Result<Catalog, Failure> {
    let conn = store.connect_db().map_err(|e| Failure::Runtime(e.into()))?;
    Catalog::load(config, &conn).map_err(|e| Failure::Runtime(e.into()))
}

/// `lazycas ls`
pub fn ls(config: &Config) -> Result<(), Failure> {
    let store = open_store(config)?;
    let catalog = load_catalog(config, &store)?;
    println!(
        "{:<40} {:<7} {:>9} {:>9} {:<8} DIGEST",
        "NAME", "KIND", "SIZE", "RESIDENT", "FROM"
    );
    let images = super::images::image_uses(&store)?;
    for a in catalog.assets() {
        let held = match a.digest() {
            Some(d) => store.blob(&d).map_err(|e| Failure::Runtime(e.into()))?,
            None => None,
        };
        let (size, resident, digest) = match &a.config.location {
            Location::Image(r) => super::images::asset_columns(&images, r),
            _ => {
                let partly = match held {
                    Some(_) => None,
                    None => crate::content::resident_in_store(&store, &a.source()),
                };
                (
                    held.map(|h| h.size)
                        .or(partly.map(|(_, size)| size))
                        .or(a.config.size),
                    held.map(|h| h.size).or(partly.map(|(n, _)| n)).unwrap_or(0),
                    a.digest().map(|d| d.to_string()),
                )
            }
        };
        let from = match a.origin {
            Origin::Config => "config",
            Origin::Added => "added",
            Origin::Directory => "listed",
        };
        println!(
            "{:<40} {:<7} {:>9} {:>9} {:<8} {}",
            a.name(),
            a.config.kind.as_str(),
            size.map(format_size).unwrap_or_else(|| "?".into()),
            format_size(resident),
            from,
            digest.unwrap_or_else(|| "(unpinned)".into()),
        );
    }
    super::images::print_ls_rows(&images);
    super::set_listing::print_sets(&store, catalog.sets()).map_err(|e| Failure::Runtime(e.into()))
}

/// `lazycas pull NAME|URL#sha256=…`
pub fn pull(config: &Config, target: &str) -> Result<(), Failure> {
    let store = open_store(config)?;
    let catalog = load_catalog(config, &store)?;
    let (src, kind) = match catalog.entry(target) {
        Some(catalog::Entry::Asset(a)) => match &a.config.location {
            Location::Image(reference) => {
                return super::pull_image::pull_image(config, &reference.to_string())
            }
            _ => (a.source(), a.config.kind),
        },
        Some(catalog::Entry::Set(set)) => {
            return super::set_pull::pull_set(config, &std::sync::Arc::new(store), &set)
        }
        Some(catalog::Entry::Dir) => {
            return Err(usage(format!(
                "{target} is a directory of the catalog, not an entry"
            )))
        }
        None => {
            let (url, digest) = parse_url_with_digest(target)
                .map_err(|_| usage(format!("{target}: not a catalog name nor a URL")))?;
            if digest.is_none() && !config.allow_unpinned {
                return Err(usage(format!(
                    "{target}: no #sha256= pinned and allow_unpinned is off"
                )));
            }
            let kind = AssetKind::infer(url.path());
            let src = Source {
                label: target.to_string(),
                location: Location::http(url, Vec::new()),
                expected: digest,
                weak: None,
                size_hint: None,
                index: None,
            };
            (src, kind)
        }
    };
    pull_source(config, &std::sync::Arc::new(store), &src, kind)
}

/// Fetches `src` into `store` (and indexes it when it is an archive) with a progress bar, then
/// pins it.
pub(super) fn pull_source(
    config: &Config,
    store: &std::sync::Arc<Store>,
    src: &Source,
    kind: AssetKind,
) -> Result<(), Failure> {
    let fetcher =
        Fetcher::new(FetchSettings::from_config(config)).map_err(|e| Failure::Runtime(e.into()))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(src.label.clone());
    let rt = crate::daemon::runtime()?;
    let progress = {
        let bar = bar.clone();
        move |n: u64| bar.set_position(n)
    };
    let content = Content::new(store.clone(), fetcher, config.archive_cache)
        .map_err(|e| Failure::Runtime(e.into()))?;
    content.set_publishers(config.publishers.clone());
    let result = rt.block_on(content.ensure_blob(src, None, &progress));
    bar.finish_and_clear();
    let info = result.map_err(|e| Failure::Runtime(anyhow::anyhow!(e.to_string())))?;
    if kind == AssetKind::Archive {
        // Build (or find) the seek index now too, so the first `ls` on a node is instant.
        rt.block_on(content.archives().open(&content, src))
            .map_err(|e| Failure::Runtime(anyhow::anyhow!(e.to_string())))?;
    }
    finish_pull(store, &src.label, &info)
}

fn finish_pull(store: &Store, label: &str, info: &crate::store::BlobInfo) -> Result<(), Failure> {
    store
        .with_db(|c| db::set_pinned(c, &info.digest, true))
        .map_err(|e| Failure::Runtime(e.into()))?;
    let _ = store.flush_stats();
    println!(
        "{label} {} pinned ({})",
        info.digest,
        format_size(info.size)
    );
    Ok(())
}

/// `lazycas status [--json]`
pub fn status(config: &Config, as_json: bool) -> Result<(), Failure> {
    let store = open_store(config)?;
    let blobs = store.blobs().map_err(|e| Failure::Runtime(e.into()))?;
    let used = store.used_bytes().map_err(|e| Failure::Runtime(e.into()))?;
    let pinned: u64 = blobs.iter().filter(|b| b.pinned).map(|b| b.size).sum();
    let counters = store
        .with_db(db::counters)
        .map_err(|e| Failure::Runtime(e.into()))?;
    let catalog = load_catalog(config, &store)?;
    let images = super::images::image_uses(&store)?;
    let assets: Vec<_> = catalog
        .assets()
        .map(|a| {
            if let Location::Image(r) = &a.config.location {
                return super::images::asset_json(&images, a.name(), r);
            }
            let complete = a.digest().and_then(|d| store.blob(&d).ok().flatten()).map(|b| b.size);
            let partly = complete.is_none().then(|| crate::content::resident_in_store(&store, &a.source())).flatten();
            let resident = complete.or(partly.map(|(n, _)| n)).unwrap_or(0);
            json!({"name": a.name(), "digest": a.digest().map(|d| d.to_string()), "resident": resident,
                   "size": a.config.size.or(partly.map(|(_, size)| size)), "partly_present": partly.is_some()})
        })
        .collect();
    let sets = catalog
        .sets()
        .map(|s| super::set_listing::set_json(&store, s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Runtime(e.into()))?;
    let counter = |name: &str| {
        counters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    if as_json {
        let per_source: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("bytes_from:")
                    .map(|s| (s.to_string(), json!(v)))
            })
            .collect();
        let doc = json!({
            "store": store.root(),
            "used_bytes": used,
            "pinned_bytes": pinned,
            "blobs": blobs.len(),
            "chunk_bytes": store.chunks().used_bytes(),
            "quota_bytes": config.quota,
            "min_free_bytes": config.min_free,
            "hits": counter("hits"),
            "misses": counter("misses"),
            "bytes_fetched": counter("bytes_fetched"),
            "bytes_per_source": per_source,
            "fetch_failures": counter("fetch_failures"),
            "evictions": counter("evictions"),
            "evicted_bytes": counter("evicted_bytes"),
            "free_bytes": crate::store::free_bytes(store.root()),
            "verification_failures": counter("verification_failures"),
            "assets": assets,
            "images": super::images::status_json(&images),
            "sets": sets,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Failure::Runtime(e.into()))?
        );
        return Ok(());
    }
    println!("store:          {}", store.root().display());
    println!(
        "used:           {} in {} blobs ({} pinned)",
        format_size(used),
        blobs.len(),
        format_size(pinned)
    );
    println!(
        "chunks:         {} (partly present images)",
        format_size(store.chunks().used_bytes())
    );
    for a in &assets {
        if a["partly_present"] == json!(true) {
            let (held, size) = (a["resident"].as_u64(), a["size"].as_u64());
            println!(
                "  {}: {} of {}",
                a["name"].as_str().unwrap_or("?"),
                format_size(held.unwrap_or(0)),
                size.map(format_size).unwrap_or_else(|| "?".into())
            );
        }
    }
    println!(
        "quota:          {}",
        config
            .quota
            .map(format_size)
            .unwrap_or_else(|| "none".into())
    );
    println!(
        "hits / misses:  {} / {}",
        counter("hits"),
        counter("misses")
    );
    println!(
        "bytes fetched:  {}",
        format_size(counter("bytes_fetched").max(0) as u64)
    );
    for (k, v) in &counters {
        if let Some(src) = k.strip_prefix("bytes_from:") {
            println!("  from {src}: {}", format_size((*v).max(0) as u64));
        }
    }
    println!(
        "evicted:        {} blobs, {}",
        counter("evictions"),
        format_size(counter("evicted_bytes").max(0) as u64)
    );
    println!(
        "failures:       {} fetch, {} verification",
        counter("fetch_failures"),
        counter("verification_failures")
    );
    super::images::print_status_lines(&images);
    Ok(())
}

/// `lazycas gc [--to SIZE]`
pub fn gc(config: &Config, to: Option<&str>) -> Result<(), Failure> {
    let target = match to {
        Some(s) => parse_size(s).map_err(|m| usage(format!("--to: {m}")))?,
        None => config.quota.map(|q| q / 10 * 9).unwrap_or(0),
    };
    let store = open_store_with_archives(config)?;
    let catalog = load_catalog(config, &store)?;
    let report = super::images::evict_keeping_catalog_images(&store, &catalog, target)?;
    println!(
        "evicted {} blobs ({}); {} in use; {} skipped because open or named by the catalog",
        report.removed.len(),
        format_size(report.freed()),
        format_size(report.used_after),
        report.skipped_open
    );
    for reference in super::images::forget_gone(&store)? {
        println!("forgot {reference} (none of its blobs is left)");
    }
    Ok(())
}

/// `lazycas verify`
pub fn verify(config: &Config) -> Result<(), Failure> {
    let store = open_store_with_archives(config)?;
    store.reconcile().map_err(|e| Failure::Runtime(e.into()))?;
    let total = store.blob_bytes().map_err(|e| Failure::Runtime(e.into()))?;
    let images = super::images::image_uses(&store)?;
    let bar = indicatif::ProgressBar::new(total);
    let report = store
        .verify(&|n| bar.set_position(n))
        .map_err(|e| Failure::Runtime(e.into()))?;
    bar.finish_and_clear();
    println!(
        "{} blobs ok, {} quarantined, {} missing",
        report.ok,
        report.quarantined.len(),
        report.missing
    );
    for (d, path) in &report.quarantined {
        let roles = super::images::roles_of(&images, d);
        let used_by = if roles.is_empty() {
            String::new()
        } else {
            format!(" ({})", roles.join(", "))
        };
        println!("quarantined {d} -> {}{used_by}", path.display());
    }
    if report.quarantined.is_empty() {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "{} blob(s) failed verification and were quarantined",
            report.quarantined.len()
        )))
    }
}
