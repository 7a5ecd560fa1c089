//! What `lazycas ls` and `lazycas status --json` say about asset sets: each set's members with
//! their references, pins and whether their content is in the store. Read from the store alone:
//! nothing is fetched and no daemon needs to run, so an image member known only by a tag that
//! no one resolved yet is "unresolved".

use serde_json::json;

use crate::digest::Digest;
use crate::sets::{ImageMember, MemberContent, SetConfig};
use crate::store::{Store, StoreError};

/// Manifests larger than this are not read to count layers (registries cap them at 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Whether a member's content is local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Every byte it needs is in the store.
    Held,
    /// Some of an image's blobs (manifest, config, layers) are in the store.
    Partly {
        /// Blobs held.
        held: usize,
        /// Blobs named.
        of: usize,
    },
    /// Known, not fetched.
    Missing,
    /// Its digest is not known yet (an unpinned URL or a tag never resolved here).
    Unresolved,
}

impl Presence {
    /// How `ls` shows it.
    pub fn describe(self) -> String {
        match self {
            Presence::Held => "present".into(),
            Presence::Partly { held, of } => format!("partly ({held}/{of} blobs)"),
            Presence::Missing => "missing".into(),
            Presence::Unresolved => "unresolved".into(),
        }
    }
}

/// One member as listed.
#[derive(Debug, Clone)]
pub struct MemberState {
    /// Its path in the set (a directory ends in `/`).
    pub path: String,
    /// The reference it comes from.
    pub reference: String,
    /// Its pins (`sha256:…`, `md5:…`, `image-id sha256:…`), or `unpinned`.
    pub pins: String,
    /// Whether it is local.
    pub presence: Presence,
}

/// The members of `set` as listed.
pub fn member_states(store: &Store, set: &SetConfig) -> Result<Vec<MemberState>, StoreError> {
    set.members
        .iter()
        .map(|m| {
            let suffix = if m.content.is_dir() { "/" } else { "" };
            Ok(MemberState {
                path: format!("{}{suffix}", m.path),
                reference: m.content.describe(),
                pins: pins_of(&m.content),
                presence: presence_of(store, &m.content)?,
            })
        })
        .collect()
}

fn pins_of(content: &MemberContent) -> String {
    let mut pins = Vec::new();
    match content {
        MemberContent::Asset(a) => {
            pins.extend(a.sha256.map(|d| d.to_string()));
            pins.extend(a.weak.as_ref().map(|w| format!("{} (weak)", w.fragment())));
        }
        MemberContent::Image(i) => {
            pins.extend(i.reference.digest().map(|d| format!("manifest {d}")));
            pins.extend(i.image_id.map(|d| format!("image-id {d}")));
        }
        MemberContent::Inline(f) => pins.push(f.digest.to_string()),
    }
    if pins.is_empty() {
        "unpinned".into()
    } else {
        pins.join(", ")
    }
}

fn presence_of(store: &Store, content: &MemberContent) -> Result<Presence, StoreError> {
    match content {
        MemberContent::Asset(a) => {
            let digest = match a.sha256 {
                Some(d) => Some(d),
                None => match a.source().reference_key() {
                    Some(key) => store.reference(&key)?.map(|(d, _)| d),
                    None => None,
                },
            };
            Ok(match digest {
                None => Presence::Unresolved,
                Some(d) if store.blob(&d)?.is_some() => Presence::Held,
                Some(_) => Presence::Missing,
            })
        }
        MemberContent::Image(i) => image_presence(store, i),
        MemberContent::Inline(_) => Ok(Presence::Held),
    }
}

/// An image is held when its manifest, config and every layer are; a multi-platform index
/// counts the one platform manifest held here.
fn image_presence(store: &Store, image: &ImageMember) -> Result<Presence, StoreError> {
    let resolved = match image.reference.digest() {
        Some(d) => Some(*d),
        None => store
            .reference(&image.reference.to_string())?
            .map(|(d, _)| d),
    };
    let Some(top) = resolved else {
        return Ok(Presence::Unresolved);
    };
    let Some(mut doc) = held_json(store, &top)? else {
        return Ok(Presence::Missing);
    };
    let mut blobs = vec![top];
    if let Some(entries) = doc["manifests"].as_array().cloned() {
        let mut platform = None;
        for entry in entries.iter().filter_map(named_digest) {
            if let Some(found) = held_json(store, &entry)? {
                platform = Some((entry, found));
                break;
            }
        }
        let Some((digest, found)) = platform else {
            return Ok(Presence::Partly { held: 1, of: 2 });
        };
        blobs.push(digest);
        doc = found;
    }
    blobs.extend(named_digest(&doc["config"]));
    blobs.extend(
        doc["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(named_digest),
    );
    let mut held = 0;
    for d in &blobs {
        if store.blob(d)?.is_some() {
            held += 1;
        }
    }
    Ok(if held == blobs.len() {
        Presence::Held
    } else {
        Presence::Partly {
            held,
            of: blobs.len(),
        }
    })
}

/// The `digest` field of a descriptor.
fn named_digest(descriptor: &serde_json::Value) -> Option<Digest> {
    descriptor["digest"]
        .as_str()
        .and_then(|s| Digest::parse(s).ok())
}

/// A held JSON document (a manifest), if the store has it and it parses.
fn held_json(store: &Store, d: &Digest) -> Result<Option<serde_json::Value>, StoreError> {
    match store.blob(d)? {
        Some(info) if info.size <= MAX_MANIFEST_BYTES => {
            let path = store.blob_path(d);
            let bytes = std::fs::read(&path).map_err(|source| StoreError::Io { path, source })?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        _ => Ok(None),
    }
}

/// `lazycas ls`'s lines for `sets`: a heading per set, then one line per member.
pub fn print_sets<'a>(
    store: &Store,
    sets: impl Iterator<Item = &'a std::sync::Arc<SetConfig>>,
) -> Result<(), StoreError> {
    for set in sets {
        println!("{}/ (set, layout {})", set.name, set.layout.as_str());
        for m in member_states(store, set)? {
            println!(
                "  {:<38} {:<10} {}  [{}]",
                m.path,
                m.presence.describe(),
                m.reference,
                m.pins
            );
        }
    }
    Ok(())
}

/// `status --json`'s entry for `set`.
pub fn set_json(store: &Store, set: &SetConfig) -> Result<serde_json::Value, StoreError> {
    let members: Vec<_> = member_states(store, set)?
        .into_iter()
        .map(|m| {
            json!({"path": m.path, "reference": m.reference, "pins": m.pins,
                   "present": m.presence == Presence::Held, "state": m.presence.describe()})
        })
        .collect();
    Ok(json!({"name": set.name, "layout": set.layout.as_str(), "members": members}))
}
