//! Web directories with sidecars (`[[directory]]`): an nginx or Apache autoindex page lists
//! images; every image with the JSON sidecar casa-distro publishes beside it
//! (`casa-run-5.3.sif` + `casa-run-5.3.sif.json`, whose `md5` and `size` are read; other
//! fields are ignored) becomes a catalog entry `<name>/<image>` pinned weakly by that md5. An
//! image without a checksum is skipped with a log line, unless the directory has
//! `allow_unpinned`.
//!
//! [`list`] reads one directory into [`Listed`] entries; [`save`] keeps them in the store's
//! `directory_entries` table (only when they changed), which the catalog reads, so a running
//! mount sees a refresh through the same database change it sees for `lazycas add`, and the
//! last listing survives a restart without the network. [`Subscriptions`] is the daemon's
//! schedule: each directory listed at start and then every `refresh_secs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use serde::Deserialize;
use url::Url;

use super::{PublishError, MAX_ANSWER};
use crate::config::{AssetConfig, AssetKind, DirectoryConfig};
use crate::content::Content;
use crate::fetch::DocumentRequest;
use crate::source::{Location, WeakAlgorithm, WeakPin};

/// File name endings taken for images.
const IMAGE_ENDINGS: &[&str] = &[
    ".sif",
    ".simg",
    ".img",
    ".sqsh",
    ".squashfs",
    ".ova",
    ".tar",
    ".tar.gz",
    ".tgz",
];

/// One image found in a directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// Its file name (the entry is `<directory name>/<file name>`).
    pub file_name: String,
    /// Where it is.
    pub url: String,
    /// The sidecar's md5 (`None` only with `allow_unpinned`).
    pub md5: Option<String>,
    /// The sidecar's size.
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct Sidecar {
    md5: Option<String>,
    size: Option<u64>,
}

/// The `md5` and `size` of a casa-distro sidecar (`<image>.json`), or why it is not one.
pub fn sidecar_answer(body: &[u8]) -> Result<(Option<String>, Option<u64>), String> {
    serde_json::from_slice::<Sidecar>(body)
        .map(|s| (s.md5, s.size))
        .map_err(|e| format!("not a casa-distro sidecar: {e}"))
}

/// The file names an autoindex page links to (nginx and Apache formats): relative links to
/// files, decoded; parent, sorting and subdirectory links left out.
pub fn linked_files(html: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    let lower = html.to_ascii_lowercase();
    let mut at = 0;
    while let Some(i) = lower[at..].find("href=") {
        let start = at + i + "href=".len();
        at = start;
        let rest = &html[start..];
        let (quote, body) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => (q, &rest[1..]),
            _ => continue,
        };
        let Some(end) = body.find(quote) else { break };
        let href = &body[..end];
        if href.is_empty()
            || href.contains(['?', '#', '/', '\\'])
            || href.contains("://")
            || href.starts_with('.')
        {
            continue;
        }
        if let Some(name) = percent_decode(href) {
            out.insert(name);
        }
    }
    out.into_iter().collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.contains(['/', '\0']) && name != "." && name != "..").then_some(name)
}

fn is_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IMAGE_ENDINGS.iter().any(|e| lower.ends_with(e))
}

/// Lists `dir` now: the page, then each image's sidecar.
pub async fn list(content: &Content, dir: &DirectoryConfig) -> Result<Vec<Listed>, PublishError> {
    let label = format!("directory {}", dir.name);
    let page = get(content, &label, &dir.url).await?;
    let html = String::from_utf8_lossy(&page);
    let files = linked_files(&html);
    let names: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for image in files.iter().filter(|f| is_image(f)) {
        let url = dir.url.join(image).map_err(|e| PublishError::Answer {
            reference: label.clone(),
            message: format!("{image}: {e}"),
        })?;
        let sidecar_name = format!("{image}.json");
        let sidecar = match names.contains(sidecar_name.as_str()) {
            true => sidecar(content, &label, &dir.url, &sidecar_name).await,
            false => None,
        };
        let (md5, size) = match sidecar {
            Some(Sidecar { md5: Some(m), size }) => match WeakPin::parse(WeakAlgorithm::Md5, &m) {
                Ok(pin) => (Some(pin.hex), size),
                Err(e) => {
                    tracing::warn!(directory = %dir.name, "{image}: sidecar md5 unusable ({e}); skipped");
                    continue;
                }
            },
            Some(Sidecar { md5: None, size }) => (None, size),
            None => (None, None),
        };
        if md5.is_none() && !dir.allow_unpinned {
            tracing::warn!(
                directory = %dir.name,
                "{image}: no checksum (no {sidecar_name} with an md5); skipped (allow_unpinned is off)"
            );
            continue;
        }
        out.push(Listed {
            file_name: image.clone(),
            url: url.to_string(),
            md5,
            size,
        });
    }
    Ok(out)
}

async fn sidecar(content: &Content, label: &str, base: &Url, name: &str) -> Option<Sidecar> {
    let url = base.join(name).ok()?;
    match get(content, label, &url).await {
        Ok(body) => match sidecar_answer(&body) {
            Ok((md5, size)) => Some(Sidecar { md5, size }),
            Err(e) => {
                tracing::warn!("{label}: {name}: {e}");
                None
            }
        },
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

async fn get(content: &Content, label: &str, url: &Url) -> Result<Vec<u8>, PublishError> {
    let headers = reqwest::header::HeaderMap::new();
    let doc = content
        .get_document(&DocumentRequest {
            label,
            url,
            accept: None,
            headers: &headers,
            max_bytes: MAX_ANSWER * 4,
        })
        .await?;
    if !doc.is_success() {
        return Err(PublishError::Answer {
            reference: label.to_string(),
            message: format!("{url} answered HTTP {}", doc.status),
        });
    }
    Ok(doc.body.to_vec())
}

/// Replaces what is kept for directory `name` with `listed`; returns whether it changed
/// (nothing is written when it did not, so readers do not reload for nothing).
pub fn save(
    conn: &mut Connection,
    name: &str,
    listed: &[Listed],
    now: i64,
) -> rusqlite::Result<bool> {
    let mut current = stored(conn, name)?;
    current.sort();
    let mut new = listed.to_vec();
    new.sort();
    if current == new {
        return Ok(false);
    }
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM directory_entries WHERE directory = ?1", [name])?;
    for l in &new {
        tx.execute(
            "INSERT OR REPLACE INTO directory_entries(directory, file_name, url, md5, size, listed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, l.file_name, l.url, l.md5, l.size.map(|s| s as i64), now],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

/// What was kept for directory `name`.
pub fn stored(conn: &Connection, name: &str) -> rusqlite::Result<Vec<Listed>> {
    let mut st = conn.prepare(
        "SELECT file_name, url, md5, size FROM directory_entries WHERE directory = ?1 ORDER BY file_name",
    )?;
    let rows = st.query_map([name], |r| {
        Ok(Listed {
            file_name: r.get(0)?,
            url: r.get(1)?,
            md5: r.get(2)?,
            size: r.get::<_, Option<i64>>(3)?.map(|s| s.max(0) as u64),
        })
    })?;
    rows.collect()
}

/// The catalog entries of `dir` from what was kept (entries unusable now are left out).
pub fn entries(conn: &Connection, dir: &DirectoryConfig) -> rusqlite::Result<Vec<AssetConfig>> {
    let mut out = Vec::new();
    for l in stored(conn, &dir.name)? {
        let Ok(url) = Url::parse(&l.url) else {
            continue;
        };
        let weak = l
            .md5
            .as_deref()
            .and_then(|m| WeakPin::parse(WeakAlgorithm::Md5, m).ok());
        if weak.is_none() && !dir.allow_unpinned {
            continue;
        }
        let name = format!("{}/{}", dir.name, l.file_name);
        if crate::config::check_name(&name).is_err() {
            continue;
        }
        out.push(AssetConfig {
            kind: AssetKind::infer(url.path()),
            name,
            location: Location::http(url, Vec::new()),
            sha256: None,
            weak,
            index_sha256: None,
            size: l.size,
            fill: None,
        });
    }
    Ok(out)
}

/// The daemon's schedule of directory listings.
#[derive(Default)]
pub struct Subscriptions {
    /// When each directory (by name) was last started, and whether a listing is running.
    state: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Subscriptions {
    /// Starts a listing of every directory that is due (never listed, or listed
    /// `refresh_secs` ago) and not already being listed. Runs on the tokio runtime.
    pub fn tick(self: &Arc<Self>, dirs: &[DirectoryConfig], content: &Arc<Content>) {
        for dir in dirs {
            let due = {
                let mut state = self.state.lock();
                let now = Instant::now();
                let due = match state.get(&dir.name) {
                    None => true,
                    Some((_, true)) => false,
                    Some((last, false)) => {
                        now.duration_since(*last) >= Duration::from_secs(dir.refresh_secs)
                    }
                };
                if due {
                    state.insert(dir.name.clone(), (now, true));
                }
                due
            };
            if due {
                let (me, content, dir) = (self.clone(), content.clone(), dir.clone());
                tokio::spawn(async move {
                    me.refresh(&content, &dir).await;
                    if let Some(s) = me.state.lock().get_mut(&dir.name) {
                        s.1 = false;
                    }
                });
            }
        }
    }

    async fn refresh(&self, content: &Content, dir: &DirectoryConfig) {
        let listed = match list(content, dir).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(directory = %dir.name, "listing failed, keeping the last one: {e}");
                return;
            }
        };
        let saved = content
            .store()
            .connect_db()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                save(&mut conn, &dir.name, &listed, now_secs()).map_err(|e| e.to_string())
            });
        match saved {
            Ok(true) => {
                tracing::info!(directory = %dir.name, images = listed.len(), "directory listing changed")
            }
            Ok(false) => tracing::debug!(directory = %dir.name, "directory listing unchanged"),
            Err(e) => tracing::error!(directory = %dir.name, "saving the listing failed: {e}"),
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_and_apache_pages() {
        let nginx = r#"<html><head><title>Index of /casa/</title></head><body><h1>Index of /casa/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                                               01-Jan-2024 00:00       -
<a href="casa-run-5.3.sif">casa-run-5.3.sif</a>                                   01-Jan-2024 00:00    1048576
<a href="casa-run-5.3.sif.json">casa-run-5.3.sif.json</a>                              01-Jan-2024 00:00      120
<a href="casa%20dev.sif">casa dev.sif</a>                              01-Jan-2024 00:00      120
</pre><hr></body></html>"#;
        assert_eq!(
            linked_files(nginx),
            ["casa dev.sif", "casa-run-5.3.sif", "casa-run-5.3.sif.json"]
        );
        let apache = r#"<tr><th><a href="?C=N;O=D">Name</a></th></tr>
<tr><td><a href="/pub/">Parent Directory</a></td></tr>
<tr><td><a href="casa-dev-5.3.sif">casa-dev-5.3.sif</a></td><td align="right">2024-01-01 00:00  </td></tr>
<tr><td><a href="http://elsewhere/x.sif">x</a></td></tr>"#;
        assert_eq!(linked_files(apache), ["casa-dev-5.3.sif"]);
        assert!(is_image("a.SIF") && !is_image("a.sif.json"));
    }

    #[test]
    fn saving_an_unchanged_listing_writes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::db::init_schema(&conn).unwrap();
        let l = vec![Listed {
            file_name: "a.sif".into(),
            url: "http://h/a.sif".into(),
            md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            size: Some(3),
        }];
        assert!(save(&mut conn, "casa", &l, 1).unwrap());
        assert!(!save(&mut conn, "casa", &l, 2).unwrap());
        assert!(save(&mut conn, "casa", &[], 3).unwrap());
        assert!(stored(&conn, "casa").unwrap().is_empty());
    }
}
