//! MedPerf cube (container) records into asset sets: `lazycas import medperf FILE.json` reads
//! the JSON the MedPerf server and client show for a cube (`git_mlcube_url`, `mlcube_hash`,
//! `git_parameters_url`, `parameters_hash`, `additional_files_tarball_url` (older records:
//! `tarball_url`), `additional_files_tarball_hash` (`tarball_hash`), `image_tarball_url`,
//! `image_tarball_hash`) and makes the set that shows them the way the runtime expects.
//!
//! MedPerf hashes are sha256 in current records and sha1 in older ones; they are told apart by
//! length (a sha1 is a weak pin). An image that is only a registry tag (no
//! `image_tarball_url`) would be a `docker://` member, which needs the OCI support: it is
//! left out, and the caller is told.

use serde::Deserialize;

use crate::sets::{RawMember, RawSet};

#[derive(Deserialize)]
struct Cube {
    id: Option<serde_json::Value>,
    name: Option<String>,
    git_mlcube_url: Option<String>,
    mlcube_hash: Option<String>,
    git_parameters_url: Option<String>,
    parameters_hash: Option<String>,
    #[serde(alias = "tarball_url")]
    additional_files_tarball_url: Option<String>,
    #[serde(alias = "tarball_hash")]
    additional_files_tarball_hash: Option<String>,
    image_tarball_url: Option<String>,
    image_tarball_hash: Option<String>,
}

/// The set a cube record describes, with notes on what was left out.
#[derive(Debug)]
pub struct Imported {
    /// The set, ready for `RawSet::check`.
    pub set: RawSet,
    /// What the caller should be told (members left out).
    pub notes: Vec<String>,
}

/// Reads a cube record. `name` overrides the catalog name (default `medperf/<cube name>`);
/// `layout` overrides the layout (default: `container` when the manifest is a
/// `container_config.yaml`, else `mlcube`).
pub fn import_cube(
    json: &[u8],
    name: Option<&str>,
    layout: Option<&str>,
) -> Result<Imported, String> {
    let cube: Cube =
        serde_json::from_slice(json).map_err(|e| format!("not a MedPerf cube record: {e}"))?;
    let manifest_url = present(&cube.git_mlcube_url)
        .ok_or("the record has no git_mlcube_url (the cube's manifest)")?;
    let cube_name = cube
        .name
        .as_deref()
        .map(sanitize)
        .filter(|n| !n.is_empty())
        .or_else(|| cube.id.as_ref().map(|v| sanitize(&v.to_string())))
        .ok_or("the record has no name or id; give --name")?;
    let layout = match layout {
        Some(l) => l.to_string(),
        None if manifest_url.ends_with("container_config.yaml") => "container".into(),
        None => "mlcube".into(),
    };
    let member = |url: &str, hash: &Option<String>| pinned(url, hash.as_deref());
    let mut notes = Vec::new();
    let image = match present(&cube.image_tarball_url) {
        Some(url) => Some(member(url, &cube.image_tarball_hash)?),
        None => {
            notes.push(
                "the image is a registry image (no image_tarball_url): docker:// members need \
                 the OCI support, so the set has no image"
                    .to_string(),
            );
            None
        }
    };
    let set = RawSet {
        name: name.map_or_else(|| format!("medperf/{cube_name}"), str::to_string),
        layout,
        manifest: Some(member(manifest_url, &cube.mlcube_hash)?),
        parameters: present(&cube.git_parameters_url)
            .map(|u| member(u, &cube.parameters_hash))
            .transpose()?,
        additional_files: present(&cube.additional_files_tarball_url)
            .map(|u| member(u, &cube.additional_files_tarball_hash))
            .transpose()?,
        image,
    };
    Ok(Imported { set, notes })
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A member pinned by a MedPerf hash: 64 hex is a sha256, 40 a sha1, 32 an md5.
fn pinned(url: &str, hash: Option<&str>) -> Result<RawMember, String> {
    let mut m = RawMember {
        url: url.to_string(),
        ..RawMember::default()
    };
    match hash.map(str::trim).filter(|h| !h.is_empty()) {
        None => {}
        Some(h) if h.len() == 64 => m.sha256 = Some(h.to_string()),
        Some(h) if h.len() == 40 => m.sha1 = Some(h.to_string()),
        Some(h) if h.len() == 32 => m.md5 = Some(h.to_string()),
        Some(h) => return Err(format!("{url}: hash {h:?} is not a sha256, sha1 or md5")),
    }
    Ok(m)
}

/// A cube name as one catalog path component.
fn sanitize(s: &str) -> String {
    s.trim_matches('"')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cube_record_becomes_a_set() {
        let json = br#"{"id": 12, "name": "fets model", "git_mlcube_url": "https://h/mlcube.yaml",
            "mlcube_hash": "a12a2d4e4290ffac38846c81d6300a24090605410eb603f02e8905f9674f1abc",
            "git_parameters_url": "https://h/parameters.yaml",
            "parameters_hash": "a9993e364706816aba3e25717850c26c9cd0d89d",
            "tarball_url": "https://h/additional_files.tar.gz",
            "tarball_hash": "a12a2d4e4290ffac38846c81d6300a24090605410eb603f02e8905f9674f1abc",
            "image_tarball_url": "", "image_tarball_hash": "", "image_hash": {"default": "x"},
            "state": "OPERATION", "metadata": {}}"#;
        let imported = import_cube(json, None, None).unwrap();
        let set = imported.set;
        assert_eq!(set.name, "medperf/fets_model");
        assert_eq!(set.layout, "mlcube");
        assert!(set.parameters.as_ref().unwrap().sha1.is_some());
        assert!(set.additional_files.is_some());
        assert!(set.image.is_none());
        assert_eq!(imported.notes.len(), 1);
        assert!(set.check(false).is_ok());
        assert!(import_cube(b"{}", None, None).is_err());
        assert!(import_cube(b"[1]", None, None).is_err());
    }
}
