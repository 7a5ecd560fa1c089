//! MedPerf cube (container) records into asset sets: `lazycas import medperf FILE.json` reads
//! the JSON the MedPerf server and client show for a cube (`git_mlcube_url`, `mlcube_hash`,
//! `git_parameters_url`, `parameters_hash`, `additional_files_tarball_url` (older records:
//! `tarball_url`), `additional_files_tarball_hash` (`tarball_hash`), `image_tarball_url`,
//! `image_tarball_hash`, and in current records `container_config` with `image_hash`) and makes
//! the set that shows them the way the runtime expects.
//!
//! MedPerf hashes are sha256 in current records and sha1 in older ones; they are told apart by
//! length (a sha1 is a weak pin). The image is, in this order: the `image_tarball_url` file;
//! the record's `container_config` `image` (a registry image for `container_type` `DockerImage`,
//! or `docker.image` of an embedded mlcube.yaml, becomes a `docker://` member pinned by
//! `image_hash`, which MedPerf takes from `docker inspect`: the image ID, i.e. the config's
//! digest; a `SingularityFile` or archive URL becomes a file member pinned by it); or the
//! caller's `--image` (older records keep the registry image inside `mlcube.yaml`, which is
//! not read here). A `container_config` or `parameters_config` held inline in the record (no
//! URL to fetch) becomes an inline member: its JSON, which YAML readers take as it is, is the
//! file `container_config.yaml` / `parameters.yaml`.
use serde::Deserialize;

use crate::oci::reference::ImageReference;
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
    /// Current records: the container's config, inline (`container_type`, `image`, `tasks`).
    container_config: Option<serde_json::Value>,
    /// Current records: the parameters, inline.
    parameters_config: Option<serde_json::Value>,
    /// The image's hash: a string, or image name → hash.
    image_hash: Option<serde_json::Value>,
}

/// MedPerf's `container_type` for an image pulled from a registry.
const DOCKER_IMAGE_TYPE: &str = "DockerImage";

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
/// `container_config.yaml` or the record holds a `container_config`, else `mlcube`); `image`
/// (a `docker://` reference) names the registry image of a record that keeps it elsewhere.
pub fn import_cube(
    json: &[u8],
    name: Option<&str>,
    layout: Option<&str>,
    image: Option<&str>,
) -> Result<Imported, String> {
    let cube: Cube =
        serde_json::from_slice(json).map_err(|e| format!("not a MedPerf cube record: {e}"))?;
    let manifest_url = present(&cube.git_mlcube_url);
    let inline_config = cube.container_config.as_ref().filter(|c| c.is_object());
    if manifest_url.is_none() && inline_config.is_none() {
        return Err(
            "the record has neither git_mlcube_url nor container_config (the cube's manifest)"
                .into(),
        );
    }
    let cube_name = cube
        .name
        .as_deref()
        .map(sanitize)
        .filter(|n| !n.is_empty())
        .or_else(|| cube.id.as_ref().map(|v| sanitize(&v.to_string())))
        .ok_or("the record has no name or id; give --name")?;
    let layout = match layout {
        Some(l) => l.to_string(),
        None if manifest_url.is_some_and(|u| u.ends_with("container_config.yaml")) => {
            "container".into()
        }
        None if manifest_url.is_none() => "container".into(),
        None => "mlcube".into(),
    };
    let member = |url: &str, hash: &Option<String>| pinned(url, hash.as_deref());
    let mut notes = Vec::new();
    let image = image_member(&cube, inline_config, image, &mut notes)?;
    let set = RawSet {
        name: name.map_or_else(|| format!("medperf/{cube_name}"), str::to_string),
        layout,
        manifest: match manifest_url {
            Some(u) => Some(member(u, &cube.mlcube_hash)?),
            None => inline_config.map(inline),
        },
        parameters: match present(&cube.git_parameters_url) {
            Some(u) => Some(member(u, &cube.parameters_hash)?),
            None => cube
                .parameters_config
                .as_ref()
                .filter(|p| !p.is_null())
                .map(inline),
        },
        additional_files: present(&cube.additional_files_tarball_url)
            .map(|u| member(u, &cube.additional_files_tarball_hash))
            .transpose()?,
        image,
    };
    Ok(Imported { set, notes })
}

/// A member holding `value` as its file: JSON, which YAML readers (MedPerf's `yaml.safe_load`)
/// take as it is.
fn inline(value: &serde_json::Value) -> RawMember {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    RawMember {
        text: Some(text),
        ..RawMember::default()
    }
}

/// The image member: the tarball URL, else the inline container config's image, else the
/// caller's `--image`; `None` (with a note) when the record names no image it can show.
fn image_member(
    cube: &Cube,
    config: Option<&serde_json::Value>,
    given: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<RawMember>, String> {
    if let Some(url) = present(&cube.image_tarball_url) {
        return pinned(url, cube.image_tarball_hash.as_deref()).map(Some);
    }
    let configured = config.and_then(configured_image);
    let (image, registry_image) = match (given, configured) {
        (Some(g), _) => (g.to_string(), true),
        (None, Some(found)) => found,
        (None, None) => {
            notes.push(
                "the record names no image file and no container_config image (older records \
                 keep the registry image in mlcube.yaml): give --image docker://…; the set has \
                 no image"
                    .to_string(),
            );
            return Ok(None);
        }
    };
    let hash = image_hash(cube.image_hash.as_ref(), &image);
    if !registry_image {
        return pinned(&image, hash.as_deref()).map(Some);
    }
    let reference = match image.strip_prefix("docker://") {
        Some(_) => ImageReference::parse(&image),
        None => ImageReference::parse_docker_name(&image),
    }
    .map_err(|e| format!("image: {e}"))?;
    let image_id = match hash.as_deref().map(|h| h.trim_start_matches("sha256:")) {
        Some(h) if h.len() == 64 => Some(h.to_string()),
        Some(h) => return Err(format!("image_hash {h:?} is not an image ID (sha256)")),
        None => None,
    };
    Ok(Some(RawMember {
        url: reference.to_string(),
        sha256: image_id,
        ..RawMember::default()
    }))
}

/// The image a container config names, and whether it is a registry image (else a URL of a
/// file): `image` with `container_type`, or `docker.image` of an mlcube.yaml.
fn configured_image(config: &serde_json::Value) -> Option<(String, bool)> {
    if let Some(image) = non_empty_text(&config["image"]) {
        let registry =
            config["container_type"].as_str() == Some(DOCKER_IMAGE_TYPE) || !image.contains("://");
        return Some((image.to_string(), registry));
    }
    non_empty_text(&config["docker"]["image"]).map(|i| (i.to_string(), true))
}

fn non_empty_text(v: &serde_json::Value) -> Option<&str> {
    v.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// `image_hash` for `image`: the string itself, or the entry named by the image (or
/// `default`, or the only one) of the mapping MedPerf keeps.
fn image_hash(hash: Option<&serde_json::Value>, image: &str) -> Option<String> {
    let hash = hash?;
    let found = match hash {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(map) => map
            .get(image)
            .or_else(|| map.get("default"))
            .or_else(|| (map.len() == 1).then(|| map.values().next()).flatten())
            .and_then(|v| v.as_str()),
        _ => None,
    };
    found
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
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
            "image_tarball_url": "", "image_tarball_hash": "", "image_hash": "",
            "state": "OPERATION", "metadata": {}}"#;
        let imported = import_cube(json, None, None, None).unwrap();
        let set = imported.set;
        assert_eq!(set.name, "medperf/fets_model");
        assert_eq!(set.layout, "mlcube");
        assert!(set.parameters.as_ref().unwrap().sha1.is_some());
        assert!(set.additional_files.is_some());
        assert!(set.image.is_none());
        assert_eq!(imported.notes.len(), 1);
        assert!(set.check(false).is_ok());
        assert!(import_cube(b"{}", None, None, None).is_err());
        assert!(import_cube(b"[1]", None, None, None).is_err());
        let given = import_cube(json, None, None, Some("docker://h:5000/fets/model:1")).unwrap();
        assert_eq!(given.set.image.unwrap().url, "docker://h:5000/fets/model:1");
        assert!(given.notes.is_empty());
    }

    #[test]
    fn a_registry_image_becomes_a_docker_member_pinned_by_its_image_id() {
        let id = "a12a2d4e4290ffac38846c81d6300a24090605410eb603f02e8905f9674f1abc";
        let json = serde_json::json!({"id": 3, "name": "seg",
            "container_config": {"container_type": "DockerImage", "image": "mlcommons/seg:0.1",
                                 "tasks": {"infer": {}}},
            "parameters_config": {"threshold": 1},
            "image_hash": {"mlcommons/seg:0.1": format!("sha256:{id}")},
            "additional_files_tarball_url": "https://h/a.tar.gz",
            "additional_files_tarball_hash": id});
        let imported = import_cube(json.to_string().as_bytes(), None, None, None).unwrap();
        let set = imported.set;
        assert_eq!(set.layout, "container");
        let manifest = set.manifest.as_ref().unwrap().text.as_deref().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(manifest).unwrap();
        assert_eq!(parsed["image"], "mlcommons/seg:0.1");
        assert!(set.parameters.as_ref().unwrap().text.is_some());
        assert!(imported.notes.is_empty());
        let image = set.image.as_ref().unwrap();
        assert_eq!(image.url, "docker://docker.io/mlcommons/seg:0.1");
        assert_eq!(image.sha256.as_deref(), Some(id));
        let checked = set.check(false).unwrap();
        let paths: Vec<&str> = checked.members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "container_config.yaml",
                "parameters.yaml",
                "additional_files",
                "seg"
            ]
        );
        // An old-style record whose embedded mlcube.yaml names the image, hash as a string.
        let json = serde_json::json!({"name": "old", "git_mlcube_url": "https://h/mlcube.yaml",
            "mlcube_hash": id, "container_config": {"docker": {"image": "h:5000/old:2"}},
            "image_hash": id});
        let imported = import_cube(json.to_string().as_bytes(), None, None, None).unwrap();
        assert_eq!(imported.set.layout, "mlcube");
        assert_eq!(imported.set.image.unwrap().url, "docker://h:5000/old:2");
        // A Singularity file URL is a file member pinned by the hash.
        let json = serde_json::json!({"name": "sif",
            "container_config": {"container_type": "SingularityFile", "image": "https://h/x.sif"},
            "image_hash": id});
        let image = import_cube(json.to_string().as_bytes(), None, None, None)
            .unwrap()
            .set
            .image
            .unwrap();
        assert_eq!(
            (image.url.as_str(), image.sha256.as_deref()),
            ("https://h/x.sif", Some(id))
        );
    }
}
