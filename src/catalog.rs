//! The catalog: names users type (`medperf/fets/additional_files`, `images/x:1.0.sif`) bound to
//! assets (a [`Source`] + kind). Entries come from the config file's `[[asset]]` tables and
//! from `lazycas add` (kept in the store's `catalog` table); asset sets (`[[set]]`, `lazycas
//! import`, the `sets` table) are entries too, shown as one directory each. A [`Catalog`] is an immutable
//! snapshot; a running mount reads the current one from a [`LiveCatalog`], which the daemon
//! refreshes when the database or the config changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection};
use url::Url;

use crate::config::{check_name, AssetConfig, AssetKind, Config};
use crate::digest::Digest;
use crate::sets::{stored_sets, SetConfig};
use crate::source::{Location, Source};

/// Where an entry was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file's `[[asset]]`.
    Config,
    /// `lazycas add`.
    Added,
    /// A `[[directory]]` listing.
    Directory,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    /// The entry's settings.
    pub config: AssetConfig,
    /// Where it was defined.
    pub origin: Origin,
    /// Seconds since the epoch it was added (config entries: 0).
    pub added_at: i64,
}

impl Asset {
    /// The catalog name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.config.sha256
    }

    /// Where its bytes come from, and what they must hash to.
    pub fn source(&self) -> Source {
        self.config.source()
    }
}

/// What a catalog path is.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A directory made of name prefixes.
    Dir,
    /// An asset.
    Asset(Arc<Asset>),
    /// An asset set: a directory laid out by its layout.
    Set(Arc<SetConfig>),
}

/// A catalog problem (bad `add`, database).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The name or reference is unusable.
    #[error("{0}")]
    Invalid(String),
    /// The entry does not exist.
    #[error("no catalog entry named {0:?}")]
    NotFound(String),
    /// The database failed.
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// An immutable snapshot of every catalog entry.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    assets: BTreeMap<String, Arc<Asset>>,
    sets: BTreeMap<String, Arc<SetConfig>>,
}

impl Catalog {
    /// Config entries plus entries added with `lazycas add` (a config entry wins on a clash).
    pub fn load(config: &Config, conn: &Connection) -> Result<Catalog, CatalogError> {
        let mut assets = BTreeMap::new();
        for a in &config.assets {
            let asset = Asset {
                config: a.clone(),
                origin: Origin::Config,
                added_at: 0,
            };
            assets.insert(a.name.clone(), Arc::new(asset));
        }
        for dir in &config.directories {
            for a in crate::publish::directory::entries(conn, dir)? {
                if assets.contains_key(&a.name) {
                    tracing::warn!(name = %a.name, "directory entry is shadowed by the config file");
                    continue;
                }
                let asset = Asset {
                    config: a,
                    origin: Origin::Directory,
                    added_at: 0,
                };
                assets.insert(asset.config.name.clone(), Arc::new(asset));
            }
        }
        for asset in added_assets(conn)? {
            if assets.contains_key(asset.name()) {
                tracing::warn!(
                    name = asset.name(),
                    "catalog entry added with `lazycas add` is shadowed by the config file or a directory"
                );
                continue;
            }
            assets.insert(asset.config.name.clone(), Arc::new(asset));
        }
        let mut sets = BTreeMap::new();
        for set in &config.sets {
            sets.insert(set.name.clone(), Arc::new(set.clone()));
        }
        for set in stored_sets(conn, config.allow_unpinned)? {
            if sets.contains_key(&set.name) {
                tracing::warn!(name = %set.name, "imported set is shadowed by the config file");
                continue;
            }
            sets.insert(set.name.clone(), Arc::new(set));
        }
        let mut catalog = Catalog { assets, sets };
        catalog.drop_clashes();
        catalog.drop_set_clashes();
        Ok(catalog)
    }

    /// Removes sets whose name is also an asset, or a directory of other names, or inside
    /// another entry: a set is one directory of its own.
    fn drop_set_clashes(&mut self) {
        let names: Vec<String> = self.sets.keys().cloned().collect();
        for name in &names {
            let prefix = format!("{name}/");
            let inside = |k: &String| k.starts_with(&prefix);
            let contains = |k: &String| name.starts_with(&format!("{k}/"));
            let clash = self.assets.contains_key(name)
                || self.assets.keys().any(|k| inside(k) || contains(k))
                || self.sets.keys().any(|k| inside(k) || contains(k));
            if clash {
                tracing::warn!(name = %name, "set ignored: its name clashes with other catalog entries");
                self.sets.remove(name);
            }
        }
    }

    /// Every set by name.
    pub fn sets(&self) -> impl Iterator<Item = &Arc<SetConfig>> {
        self.sets.values()
    }

    /// Removes entries that would be both a file and a directory (`a` and `a/b`): the deeper
    /// one is kept, since it is the more specific name.
    fn drop_clashes(&mut self) {
        let names: Vec<String> = self.assets.keys().cloned().collect();
        for name in &names {
            let prefix = format!("{name}/");
            if self
                .assets
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
            {
                tracing::warn!(name = %name, "catalog entry ignored: it is also a directory of other entries");
                self.assets.remove(name);
            }
        }
    }

    /// Every asset by name.
    pub fn assets(&self) -> impl Iterator<Item = &Arc<Asset>> {
        self.assets.values()
    }

    /// What `path` (no leading `/`; `""` is the root) is.
    pub fn entry(&self, path: &str) -> Option<Entry> {
        if path.is_empty() {
            return Some(Entry::Dir);
        }
        if let Some(a) = self.assets.get(path) {
            return Some(Entry::Asset(a.clone()));
        }
        if let Some(s) = self.sets.get(path) {
            return Some(Entry::Set(s.clone()));
        }
        let prefix = format!("{path}/");
        let under = |first: Option<&String>| first.is_some_and(|k| k.starts_with(&prefix));
        let dir = under(self.assets.range(prefix.clone()..).next().map(|(k, _)| k))
            || under(self.sets.range(prefix.clone()..).next().map(|(k, _)| k));
        dir.then_some(Entry::Dir)
    }

    /// The names directly inside directory `path`, each once, sorted.
    pub fn children(&self, path: &str) -> Vec<(String, Entry)> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut out: BTreeMap<String, Entry> = BTreeMap::new();
        let mut add = |name: &str, leaf: Entry| {
            let Some(rest) = name.strip_prefix(&prefix) else {
                return false;
            };
            let (child, entry) = match rest.split_once('/') {
                Some((dir, _)) => (dir, Entry::Dir),
                None => (rest, leaf),
            };
            out.entry(child.to_string()).or_insert(entry);
            true
        };
        for (name, asset) in self.assets.range(prefix.clone()..) {
            if !add(name, Entry::Asset(asset.clone())) {
                break;
            }
        }
        for (name, set) in self.sets.range(prefix.clone()..) {
            if !add(name, Entry::Set(set.clone())) {
                break;
            }
        }
        out.into_iter().collect()
    }

    /// Assets pinned to `d`.
    pub fn by_digest(&self, d: &Digest) -> Option<&Arc<Asset>> {
        self.assets
            .values()
            .find(|a| a.digest().as_ref() == Some(d))
    }

    /// Where to get the blob `d`: from the asset pinned to it, or only from the store.
    pub fn source_of(&self, d: &Digest) -> Source {
        match self.by_digest(d) {
            Some(a) => a.source(),
            None => Source::stored(*d),
        }
    }

    /// Every pinned digest.
    pub fn pinned_digests(&self) -> impl Iterator<Item = Digest> + '_ {
        self.assets.values().filter_map(|a| a.digest())
    }
}

/// The catalog a running mount serves: an immutable snapshot, swapped whole when the config or
/// the database changes. Readers never wait for a reload; the daemon does the reloading.
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    conn: Mutex<Connection>,
    /// SQLite's `data_version` when the snapshot was loaded: it changes when another
    /// connection (a `lazycas add` in another process) commits.
    version: Mutex<i64>,
}

impl LiveCatalog {
    /// Loads the catalog now, over its own database connection.
    pub fn new(config: &Config, conn: Connection) -> Result<LiveCatalog, CatalogError> {
        let version = data_version(&conn)?;
        let catalog = Catalog::load(config, &conn)?;
        Ok(LiveCatalog {
            current: RwLock::new(Arc::new(catalog)),
            conn: Mutex::new(conn),
            version: Mutex::new(version),
        })
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().clone()
    }

    /// Reloads if another process changed the database since the last load; returns whether
    /// it did.
    pub fn refresh(&self, config: &Config) -> Result<bool, CatalogError> {
        let conn = self.conn.lock();
        let now = data_version(&conn)?;
        let mut seen = self.version.lock();
        if now == *seen {
            return Ok(false);
        }
        *self.current.write() = Arc::new(Catalog::load(config, &conn)?);
        *seen = now;
        Ok(true)
    }

    /// Reloads now (the config changed); on failure the old snapshot stays.
    pub fn reload(&self, config: &Config) -> Result<(), CatalogError> {
        let conn = self.conn.lock();
        let now = data_version(&conn)?;
        *self.current.write() = Arc::new(Catalog::load(config, &conn)?);
        *self.version.lock() = now;
        Ok(())
    }
}

fn data_version(conn: &Connection) -> Result<i64, CatalogError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Entries added with `lazycas add`.
pub fn added_assets(conn: &Connection) -> Result<Vec<Asset>, CatalogError> {
    let mut st = conn.prepare(
        "SELECT name, url, sha256, kind, mirrors, index_sha256, size, added_at FROM catalog ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<i64>>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, url, sha, kind, mirrors, index, size, added_at) = row?;
        match parse_row(&name, &url, sha, &kind, &mirrors, index, size) {
            Ok(config) => out.push(Asset {
                config,
                origin: Origin::Added,
                added_at,
            }),
            Err(why) => tracing::warn!(name = %name, "catalog row is unreadable ({why}); skipped"),
        }
    }
    Ok(out)
}

/// One `catalog` row as an [`AssetConfig`], or what is wrong with it.
fn parse_row(
    name: &str,
    url: &str,
    sha: Option<String>,
    kind: &str,
    mirrors: &str,
    index: Option<String>,
    size: Option<i64>,
) -> Result<AssetConfig, String> {
    let (location, pins) = crate::publish::parse_reference(url).map_err(|e| format!("url: {e}"))?;
    let mirrors: Vec<String> =
        serde_json::from_str(mirrors).map_err(|e| format!("mirrors {mirrors:?}: {e}"))?;
    let mirrors = mirrors
        .iter()
        .map(|m| Url::parse(m).map_err(|e| format!("mirror {m:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let digest = |what: &str, s: Option<String>| {
        s.map(|s| Digest::parse(&s).map_err(|e| format!("{what}: {e}")))
            .transpose()
    };
    let location = match location {
        Location::Http { urls } => Location::Http {
            urls: urls.into_iter().chain(mirrors).collect(),
        },
        other => other,
    };
    Ok(AssetConfig {
        location,
        sha256: digest("sha256", sha)?.or(pins.sha256),
        weak: pins.weak,
        kind: AssetKind::parse(kind).ok_or_else(|| format!("kind {kind:?}"))?,
        index_sha256: digest("index_sha256", index)?,
        size: size.map(|s| s.max(0) as u64),
        fill: None,
        name: name.to_string(),
    })
}

/// Adds or replaces an entry (what `lazycas add` does).
pub fn add(conn: &Connection, a: &AssetConfig, now: i64) -> Result<(), CatalogError> {
    check_name(&a.name).map_err(CatalogError::Invalid)?;
    let reference = a
        .location
        .reference()
        .ok_or_else(|| CatalogError::Invalid(format!("{}: no url", a.name)))?;
    // A weak pin travels as the url's fragment (`#md5=<hex>`), as users may write it.
    let url = match &a.weak {
        Some(w) => format!("{reference}#{}", w.fragment()),
        None => reference,
    };
    let mirrors: Vec<&str> = a.location.mirrors().iter().map(Url::as_str).collect();
    conn.execute(
        "INSERT INTO catalog(name, url, sha256, kind, mirrors, index_sha256, size, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(name) DO UPDATE SET url = excluded.url, sha256 = excluded.sha256, kind = excluded.kind,
             mirrors = excluded.mirrors, index_sha256 = excluded.index_sha256, size = excluded.size,
             added_at = excluded.added_at",
        params![
            a.name,
            url,
            a.sha256.map(|d| d.hex()),
            a.kind.as_str(),
            serde_json::to_string(&mirrors).unwrap_or_else(|_| "[]".into()),
            a.index_sha256.map(|d| d.hex()),
            a.size.map(|s| s as i64),
            now
        ],
    )?;
    Ok(())
}

/// Removes an entry added with `lazycas add`.
pub fn remove(conn: &Connection, name: &str) -> Result<(), CatalogError> {
    match conn.execute("DELETE FROM catalog WHERE name = ?1", [name])? {
        0 => Err(CatalogError::NotFound(name.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(name: &str) -> AssetConfig {
        AssetConfig {
            name: name.into(),
            location: Location::http(Url::parse("http://127.0.0.1/x").unwrap(), vec![]),
            sha256: Some(Digest::of(name.as_bytes())),
            weak: None,
            kind: AssetKind::File,
            index_sha256: None,
            size: None,
            fill: None,
        }
    }

    #[test]
    fn tree_from_names() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::db::init_schema(&conn).unwrap();
        for n in [
            "images/a:1.sif",
            "images/b.sif",
            "medperf/fets/additional_files",
            "top",
        ] {
            add(&conn, &asset(n), 1).unwrap();
        }
        let c = Catalog::load(&Config::default(), &conn).unwrap();
        let root: Vec<String> = c.children("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(root, ["images", "medperf", "top"]);
        assert_eq!(c.entry("medperf/fets"), Some(Entry::Dir));
        assert!(matches!(c.entry("images/a:1.sif"), Some(Entry::Asset(_))));
        assert_eq!(c.entry("images/a"), None);
        assert_eq!(c.entry("medperf/fe"), None);
        assert_eq!(c.children("images").len(), 2);
        remove(&conn, "top").unwrap();
        assert!(matches!(
            remove(&conn, "top"),
            Err(CatalogError::NotFound(_))
        ));
    }

    #[test]
    fn file_and_dir_clash_keeps_the_deeper_name() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::db::init_schema(&conn).unwrap();
        add(&conn, &asset("a"), 1).unwrap();
        add(&conn, &asset("a/b"), 1).unwrap();
        let c = Catalog::load(&Config::default(), &conn).unwrap();
        assert_eq!(c.entry("a"), Some(Entry::Dir));
    }
}
