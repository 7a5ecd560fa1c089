//! Asset sets: several files that belong together (an MLCube or a MedPerf container: its
//! manifest, parameters, additional files and image), bound by one catalog entry and shown as
//! one directory laid out the way the runtime expects ([`Layout`]).
//!
//! A set comes from the config file (`[[set]]`) or from `lazycas import medperf` (the store's
//! `sets` table, holding the same shape as JSON). Each member is a reference of its own (http
//! URL, `library://`, `shub://`) with its own pin (sha256, or a weak md5/sha1); the image may
//! also be a `docker://` image ([`ImageMember`]), shown as its root filesystem (a directory, as
//! `apptainer`/`singularity` run a sandbox and `runc` a bundle's rootfs) and pinned by the
//! manifest digest in its reference and/or by its image ID (the config's digest, what
//! `docker inspect` and MedPerf's `image_hash` give). Nothing here fetches: the `fs::sets`
//! namespace shows a set and asks `content` (or `docker/`) for the members' bytes.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::config::{check_name, check_reference, AssetConfig, AssetKind, PinFields, Reference};
use crate::digest::Digest;
use crate::oci::reference::{ImageReference, ReferenceKind};
use crate::source::Location;

/// How a set's members are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MLCube: `mlcube.yaml`, `workspace/parameters.yaml`, `workspace/additional_files/`,
    /// `workspace/.image/<image>`.
    Mlcube,
    /// MedPerf's container: `container_config.yaml`, `parameters.yaml`, `additional_files/`,
    /// `<image>`.
    Container,
}

impl Layout {
    /// Parses `"mlcube"` or `"container"`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "mlcube" => Some(Layout::Mlcube),
            "container" => Some(Layout::Container),
            _ => None,
        }
    }

    /// `"mlcube"` or `"container"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Mlcube => "mlcube",
            Layout::Container => "container",
        }
    }

    /// Where a member of `role` goes (`image_name` for the image), relative to the set.
    pub fn path_of(self, role: Role, image_name: &str) -> String {
        match (self, role) {
            (Layout::Mlcube, Role::Manifest) => "mlcube.yaml".into(),
            (Layout::Mlcube, Role::Parameters) => "workspace/parameters.yaml".into(),
            (Layout::Mlcube, Role::AdditionalFiles) => "workspace/additional_files".into(),
            (Layout::Mlcube, Role::Image) => format!("workspace/.image/{image_name}"),
            (Layout::Container, Role::Manifest) => "container_config.yaml".into(),
            (Layout::Container, Role::Parameters) => "parameters.yaml".into(),
            (Layout::Container, Role::AdditionalFiles) => "additional_files".into(),
            (Layout::Container, Role::Image) => image_name.to_string(),
        }
    }
}

/// What a member is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `mlcube.yaml` or `container_config.yaml`.
    Manifest,
    /// `parameters.yaml`.
    Parameters,
    /// `additional_files.tar.gz`, shown as a directory.
    AdditionalFiles,
    /// The container image: a file (SIF, image tarball) or a `docker://` image's root
    /// filesystem.
    Image,
}

impl Role {
    /// The config key naming the member.
    pub fn key(self) -> &'static str {
        match self {
            Role::Manifest => "manifest",
            Role::Parameters => "parameters",
            Role::AdditionalFiles => "additional_files",
            Role::Image => "image",
        }
    }
}

/// One member of a set, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SetMember {
    /// What it is for.
    pub role: Role,
    /// Its path inside the set directory.
    pub path: String,
    /// What it shows.
    pub content: MemberContent,
}

/// What a member shows.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberContent {
    /// A file, or an archive shown as a directory: where it comes from and what it must hash
    /// to (`name` is `<set>/<path>`).
    Asset(AssetConfig),
    /// A registry image, shown as its root filesystem.
    Image(ImageMember),
    /// A file whose content the set itself holds (what a MedPerf record carries inline).
    Inline(InlineFile),
}

/// A file held in the set's own description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// Its bytes.
    pub bytes: std::sync::Arc<[u8]>,
    /// Their sha256.
    pub digest: Digest,
}

/// A `docker://` image member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMember {
    /// The image (a `@sha256:` in it pins the manifest).
    pub reference: ImageReference,
    /// The image ID it must have: the digest of its config blob.
    pub image_id: Option<Digest>,
}

impl MemberContent {
    /// The reference as a person reads it (URL, `library://…`, `docker://…`).
    pub fn describe(&self) -> String {
        match self {
            MemberContent::Asset(a) => a.location.describe(),
            MemberContent::Image(i) => i.reference.to_string(),
            MemberContent::Inline(f) => format!("inline ({} bytes)", f.bytes.len()),
        }
    }

    /// True when the member is shown as a directory.
    pub fn is_dir(&self) -> bool {
        match self {
            MemberContent::Asset(a) => a.kind == AssetKind::Archive,
            MemberContent::Image(_) => true,
            MemberContent::Inline(_) => false,
        }
    }
}

/// One set, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SetConfig {
    /// Its catalog name.
    pub name: String,
    /// How it is arranged.
    pub layout: Layout,
    /// Its members, in role order.
    pub members: Vec<SetMember>,
    /// Seconds since the epoch it was imported (config sets: 0).
    pub added_at: i64,
}

/// A set as written in the config (`[[set]]`) and kept in the `sets` table (as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSet {
    /// Catalog name.
    pub name: String,
    /// `"mlcube"` or `"container"`.
    pub layout: String,
    /// `mlcube.yaml` / `container_config.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<RawMember>,
    /// `parameters.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<RawMember>,
    /// The additional files tarball.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_files: Option<RawMember>,
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<RawMember>,
}

/// One member as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    /// http(s) URL (pins in its fragment allowed), `library://`, `shub://`, or for the image
    /// `docker://registry/repo:tag[@sha256:…]`; empty with `text`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The content itself, instead of a `url` (the manifest or parameters a MedPerf record
    /// holds inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Pinned sha256 (of a `docker://` image: its image ID, the config's digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Weak md5 pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Weak sha1 pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// Size in bytes, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The image's name in the set (default: the URL's last component; a `docker://` image:
    /// the repository's last component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

impl RawSet {
    /// Checks the set; an error names the key at fault (`image.md5`) and what is wrong.
    pub fn check(&self, allow_unpinned: bool) -> Result<SetConfig, (String, String)> {
        check_name(&self.name).map_err(|m| ("name".to_string(), m))?;
        let layout = Layout::parse(&self.layout).ok_or_else(|| {
            (
                "layout".to_string(),
                format!("{:?} is not \"mlcube\" or \"container\"", self.layout),
            )
        })?;
        let mut members = Vec::new();
        for (role, raw) in [
            (Role::Manifest, &self.manifest),
            (Role::Parameters, &self.parameters),
            (Role::AdditionalFiles, &self.additional_files),
            (Role::Image, &self.image),
        ] {
            let Some(raw) = raw else { continue };
            let member = check_member(&self.name, layout, role, raw, allow_unpinned)
                .map_err(|(field, m)| (format!("{}.{field}", role.key()), m))?;
            members.push(member);
        }
        if members.is_empty() {
            return Err(("manifest".into(), "a set needs at least one member".into()));
        }
        Ok(SetConfig {
            name: self.name.clone(),
            layout,
            members,
            added_at: 0,
        })
    }
}

fn check_member(
    set: &str,
    layout: Layout,
    role: Role,
    raw: &RawMember,
    allow_unpinned: bool,
) -> Result<SetMember, (&'static str, String)> {
    if let Some(text) = &raw.text {
        return check_inline_member(layout, role, raw, text);
    }
    if raw.url.starts_with("docker://") {
        return check_image_member(layout, role, raw);
    }
    let Reference {
        location,
        sha256,
        weak,
    } = check_reference(
        &raw.url,
        PinFields {
            sha256: raw.sha256.as_deref(),
            md5: raw.md5.as_deref(),
            sha1: raw.sha1.as_deref(),
        },
        allow_unpinned,
    )?;
    let image_name = match (&raw.file_name, role) {
        (Some(n), _) => n.clone(),
        (None, Role::Image) => default_image_name(&location),
        (None, _) => String::new(),
    };
    if role == Role::Image {
        check_image_name(&image_name)?;
    }
    let path = layout.path_of(role, &image_name);
    let kind = match role {
        Role::AdditionalFiles => AssetKind::Archive,
        _ => AssetKind::File,
    };
    Ok(SetMember {
        role,
        content: MemberContent::Asset(AssetConfig {
            name: format!("{set}/{path}"),
            location,
            sha256,
            weak,
            kind,
            index_sha256: None,
            size: raw.size,
            fill: None,
        }),
        path,
    })
}

/// A member given by its content: only the manifest and the parameters, with nothing else.
fn check_inline_member(
    layout: Layout,
    role: Role,
    raw: &RawMember,
    text: &str,
) -> Result<SetMember, (&'static str, String)> {
    if !matches!(role, Role::Manifest | Role::Parameters) {
        return Err((
            "text",
            "only the manifest and the parameters may be given inline".into(),
        ));
    }
    let conflicting = [
        ("url", !raw.url.is_empty()),
        ("sha256", raw.sha256.is_some()),
        ("md5", raw.md5.is_some()),
        ("sha1", raw.sha1.is_some()),
        ("file_name", raw.file_name.is_some()),
    ];
    if let Some((field, _)) = conflicting.iter().find(|(_, given)| *given) {
        return Err((field, "goes with a url, not with text".into()));
    }
    let bytes: std::sync::Arc<[u8]> = text.as_bytes().into();
    Ok(SetMember {
        role,
        path: layout.path_of(role, ""),
        content: MemberContent::Inline(InlineFile {
            digest: Digest::of(&bytes),
            bytes,
        }),
    })
}

/// A `docker://` member: only the image may be one; its `sha256` is the image ID, and a
/// publisher's md5 or sha1 has nothing to check against.
fn check_image_member(
    layout: Layout,
    role: Role,
    raw: &RawMember,
) -> Result<SetMember, (&'static str, String)> {
    if role != Role::Image {
        return Err(("url", "only the image may be a docker:// image".into()));
    }
    let reference = ImageReference::parse(&raw.url).map_err(|e| ("url", e.to_string()))?;
    if reference.kind() != ReferenceKind::Image {
        return Err(("url", format!("{:?} is not a docker:// image", raw.url)));
    }
    if raw.md5.is_some() || raw.sha1.is_some() {
        let field = if raw.md5.is_some() { "md5" } else { "sha1" };
        return Err((
            field,
            "a docker:// image is pinned by its manifest digest (@sha256:…) or its image ID \
             (sha256), not a weak checksum"
                .into(),
        ));
    }
    let image_id = raw
        .sha256
        .as_deref()
        .map(Digest::parse)
        .transpose()
        .map_err(|e| ("sha256", e.to_string()))?;
    let name = match &raw.file_name {
        Some(n) => n.clone(),
        None => reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    check_image_name(&name)?;
    Ok(SetMember {
        role,
        path: layout.path_of(role, &name),
        content: MemberContent::Image(ImageMember {
            reference,
            image_id,
        }),
    })
}

/// The image's name in the set must be one path component, not hidden.
fn check_image_name(name: &str) -> Result<(), (&'static str, String)> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(("file_name", format!("{name:?} is not a usable file name")));
    }
    Ok(())
}

/// The last component of the location's reference, without a tag (`app:1.0` → `app.sif`).
fn default_image_name(location: &Location) -> String {
    let reference = location.reference().unwrap_or_default();
    let last = reference
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    match location {
        Location::Http { .. } => last,
        _ => {
            let stem = last.split(':').next().unwrap_or("");
            if stem.is_empty() {
                String::new()
            } else {
                format!("{stem}.sif")
            }
        }
    }
}

/// Sets kept in the store's `sets` table (`lazycas import`).
pub fn stored_sets(conn: &Connection, allow_unpinned: bool) -> rusqlite::Result<Vec<SetConfig>> {
    let mut st = conn.prepare("SELECT name, spec, added_at FROM sets ORDER BY name")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, spec, added_at) = row?;
        let checked = serde_json::from_str::<RawSet>(&spec)
            .map_err(|e| e.to_string())
            .and_then(|raw| {
                raw.check(allow_unpinned)
                    .map_err(|(k, m)| format!("{k}: {m}"))
            });
        match checked {
            Ok(mut set) => {
                set.added_at = added_at;
                out.push(set);
            }
            Err(why) => tracing::warn!(name = %name, "stored set is unusable ({why}); skipped"),
        }
    }
    Ok(out)
}

/// Adds or replaces a set in the `sets` table.
pub fn store_set(conn: &Connection, raw: &RawSet, now: i64) -> rusqlite::Result<()> {
    let spec = serde_json::to_string(raw).unwrap_or_else(|_| "{}".into());
    conn.execute(
        "INSERT INTO sets(name, spec, added_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, added_at = excluded.added_at",
        params![raw.name, spec, now],
    )?;
    Ok(())
}

/// Removes a set from the `sets` table; returns whether there was one.
pub fn remove_set(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM sets WHERE name = ?1", [name])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn raw(layout: &str) -> RawSet {
        let member = |url: &str| RawMember {
            url: url.into(),
            sha256: Some(HEX.into()),
            ..RawMember::default()
        };
        RawSet {
            name: "medperf/fets".into(),
            layout: layout.into(),
            manifest: Some(member("http://h/mlcube.yaml")),
            parameters: Some(member("http://h/parameters.yaml")),
            additional_files: Some(member("http://h/additional_files.tar.gz")),
            image: Some(member("http://h/fets.sif")),
        }
    }

    #[test]
    fn layouts_place_members() {
        let paths = |layout| -> Vec<String> {
            raw(layout)
                .check(false)
                .unwrap()
                .members
                .into_iter()
                .map(|m| m.path)
                .collect()
        };
        assert_eq!(
            paths("mlcube"),
            [
                "mlcube.yaml",
                "workspace/parameters.yaml",
                "workspace/additional_files",
                "workspace/.image/fets.sif"
            ]
        );
        assert_eq!(
            paths("container"),
            [
                "container_config.yaml",
                "parameters.yaml",
                "additional_files",
                "fets.sif"
            ]
        );
    }

    #[test]
    fn bad_sets_name_the_key() {
        let mut r = raw("mlcube");
        r.layout = "docker".into();
        assert_eq!(r.check(false).unwrap_err().0, "layout");
        let mut r = raw("mlcube");
        r.manifest.as_mut().unwrap().url = "docker://busybox:1".into();
        assert_eq!(r.check(false).unwrap_err().0, "manifest.url");
        let mut r = raw("mlcube");
        r.image.as_mut().unwrap().url = "oras://h:5000/a/b:1".into();
        assert_eq!(r.check(false).unwrap_err().0, "image.url");
        r.image.as_mut().unwrap().url = "docker://h:5000/a/b:1".into();
        r.image.as_mut().unwrap().sha256 = None;
        r.image.as_mut().unwrap().md5 = Some("0".repeat(32));
        assert_eq!(r.check(false).unwrap_err().0, "image.md5");
        let mut r = raw("mlcube");
        r.parameters.as_mut().unwrap().sha256 = None;
        assert_eq!(r.check(false).unwrap_err().0, "parameters.sha256");
        r.parameters.as_mut().unwrap().sha1 =
            Some("a9993e364706816aba3e25717850c26c9cd0d89d".into());
        assert!(r.check(false).is_ok());
    }

    #[test]
    fn docker_images_sit_at_the_image_position() {
        let mut r = raw("mlcube");
        let image = r.image.as_mut().unwrap();
        image.url = "docker://127.0.0.1:5000/team/fets:1.0".into();
        let set = r.check(false).unwrap();
        let member = &set.members[3];
        assert_eq!(member.path, "workspace/.image/fets");
        assert!(member.content.is_dir());
        let MemberContent::Image(i) = &member.content else {
            panic!("not an image member");
        };
        assert_eq!(i.reference.tag(), Some("1.0"));
        assert_eq!(
            i.image_id.map(|d| d.to_string()),
            Some(format!("sha256:{HEX}"))
        );
        r.layout = "container".into();
        r.image.as_mut().unwrap().file_name = Some("fets-1.0".into());
        r.image.as_mut().unwrap().sha256 = None;
        assert_eq!(r.check(false).unwrap().members[3].path, "fets-1.0");
    }

    #[test]
    fn inline_members_hold_their_text() {
        let mut r = raw("container");
        r.manifest = Some(RawMember {
            text: Some("image: x\n".into()),
            ..RawMember::default()
        });
        let set = r.check(false).unwrap();
        let MemberContent::Inline(f) = &set.members[0].content else {
            panic!("not inline");
        };
        assert_eq!(
            (&*f.bytes, f.digest),
            (&b"image: x\n"[..], Digest::of(b"image: x\n"))
        );
        r.manifest.as_mut().unwrap().sha256 = Some(HEX.into());
        assert_eq!(r.check(false).unwrap_err().0, "manifest.sha256");
        r.manifest = None;
        r.image = Some(RawMember {
            text: Some("x".into()),
            ..RawMember::default()
        });
        assert_eq!(r.check(false).unwrap_err().0, "image.text");
        let json = serde_json::to_string(&RawSet {
            name: "a".into(),
            layout: "container".into(),
            parameters: Some(RawMember {
                text: Some("t: 1".into()),
                ..RawMember::default()
            }),
            ..RawSet::default()
        })
        .unwrap();
        assert!(!json.contains("url"), "{json}");
        assert!(serde_json::from_str::<RawSet>(&json)
            .unwrap()
            .check(false)
            .is_ok());
    }

    #[test]
    fn stored_sets_round_trip() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::db::init_schema(&conn).unwrap();
        store_set(&conn, &raw("container"), 5).unwrap();
        let sets = stored_sets(&conn, false).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].added_at, 5);
        assert!(remove_set(&conn, "medperf/fets").unwrap());
    }
}
