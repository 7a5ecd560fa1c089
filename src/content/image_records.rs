//! Which blobs make up each image the store has seen, so the store's commands can treat an
//! image as one thing: `lazycas ls` and `status` show it under its reference, `gc` forgets the
//! record once none of its blobs is left, `verify` names the images a bad blob belonged to.
//!
//! Two tables, written each time a reference is resolved ([`record`]): `images` (reference →
//! the index and manifest it names now) and `image_blobs` (manifest → its manifest, config,
//! layers and, for zstd layers, the decoded tar the archive index reads). Keeping the blobs
//! from eviction is not done here: an open image holds its blobs open ([`super::OpenImage`])
//! and `lazycas pull` pins them.
//!
//! Not here: resolving (`registry`), opening (`images`), the blobs' bytes (`store`).

use rusqlite::{params, Connection};

use super::ResolvedImage;
use crate::digest::Digest;
use crate::oci::manifest::{Compression, LayerFormat};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS images (
    reference   TEXT PRIMARY KEY,   -- docker://… or oras://…, as asked
    resolved    TEXT NOT NULL,      -- what it resolved to (an index, for multi-platform images)
    manifest    TEXT NOT NULL,      -- the image manifest after platform choice
    recorded_at INTEGER NOT NULL    -- unix seconds
);
CREATE TABLE IF NOT EXISTS image_blobs (
    manifest TEXT NOT NULL,         -- an image manifest's digest
    position INTEGER NOT NULL,      -- manifest, config, layers bottom first, decoded tars
    digest   TEXT NOT NULL,
    role     TEXT NOT NULL,         -- manifest, config, layer, decoded
    size     INTEGER,               -- NULL until held (decoded zstd tars)
    PRIMARY KEY (manifest, position)
) WITHOUT ROWID;";

/// What a blob is to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageBlobRole {
    /// The multi-platform index the reference resolved to.
    Index,
    /// The image manifest.
    Manifest,
    /// The image config.
    Config,
    /// A layer as the registry serves it (compressed).
    Layer,
    /// The uncompressed tar of a zstd layer (named by its diff_id).
    Decoded,
}

impl ImageBlobRole {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageBlobRole::Index => "index",
            ImageBlobRole::Manifest => "manifest",
            ImageBlobRole::Config => "config",
            ImageBlobRole::Layer => "layer",
            ImageBlobRole::Decoded => "decoded",
        }
    }

    fn parse(s: &str) -> Option<ImageBlobRole> {
        [
            ImageBlobRole::Index,
            ImageBlobRole::Manifest,
            ImageBlobRole::Config,
            ImageBlobRole::Layer,
            ImageBlobRole::Decoded,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One blob of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBlob {
    /// Its digest.
    pub digest: Digest,
    /// What it is to the image.
    pub role: ImageBlobRole,
    /// Its size when known before it is held.
    pub size: Option<u64>,
}

/// An image the store has seen, by the reference it was asked by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// `docker://…` or `oras://…`.
    pub reference: String,
    /// The image manifest's digest.
    pub manifest: Digest,
    /// Its blobs (index, manifest, config, layers bottom first, decoded tars).
    pub blobs: Vec<ImageBlob>,
}

impl ResolvedImage {
    /// Every blob this image is made of.
    pub fn blobs(&self) -> Vec<ImageBlob> {
        let blob = |digest, role, size| ImageBlob { digest, role, size };
        let mut v = Vec::with_capacity(3 + 2 * self.layers.len());
        if self.resolved != self.manifest.digest {
            v.push(blob(self.resolved, ImageBlobRole::Index, None));
        }
        v.push(blob(
            self.manifest.digest,
            ImageBlobRole::Manifest,
            Some(self.manifest.size),
        ));
        v.push(blob(
            self.config.digest,
            ImageBlobRole::Config,
            Some(self.config.size),
        ));
        for layer in &self.layers {
            v.push(blob(
                layer.blob.digest,
                ImageBlobRole::Layer,
                Some(layer.blob.size),
            ));
        }
        for (layer, diff_id) in self.layers.iter().zip(&self.diff_ids) {
            if let LayerFormat::Tar {
                compression: Compression::Zstd,
                ..
            } = layer.format
            {
                v.push(blob(*diff_id, ImageBlobRole::Decoded, None));
            }
        }
        v
    }

    /// The manifest, config and layers, with the sizes the manifest declares (what the
    /// registry serves; not the index, nor decoded tars).
    pub fn served_blobs(&self) -> Vec<(Digest, u64)> {
        self.blobs()
            .into_iter()
            .filter_map(|b| Some((b.digest, b.size?)))
            .collect()
    }
}

/// Creates the tables if missing. Idempotent.
pub fn init_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// Records what `image`'s reference names now, and its blobs.
pub fn record(conn: &Connection, image: &ResolvedImage, now: i64) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let manifest = image.manifest.digest.hex();
    tx.execute(
        "INSERT INTO images(reference, resolved, manifest, recorded_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(reference) DO UPDATE SET resolved = excluded.resolved,
             manifest = excluded.manifest, recorded_at = excluded.recorded_at",
        params![
            image.reference.to_string(),
            image.resolved.hex(),
            manifest,
            now
        ],
    )?;
    {
        // A manifest's blobs never change: the first record of them stands.
        let mut st = tx.prepare_cached(
            "INSERT OR IGNORE INTO image_blobs(manifest, position, digest, role, size)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let blobs = image.blobs();
        for (position, b) in blobs
            .iter()
            .filter(|b| b.role != ImageBlobRole::Index)
            .enumerate()
        {
            st.execute(params![
                manifest,
                position as i64,
                b.digest.hex(),
                b.role.as_str(),
                b.size.map(|s| s as i64)
            ])?;
        }
    }
    tx.commit()
}

/// Every recorded image, by reference.
pub fn recorded(conn: &Connection) -> rusqlite::Result<Vec<ImageRecord>> {
    let mut images =
        conn.prepare("SELECT reference, resolved, manifest FROM images ORDER BY reference")?;
    let rows = images.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut blobs = conn.prepare(
        "SELECT digest, role, size FROM image_blobs WHERE manifest = ?1 ORDER BY position",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (reference, resolved, hex) = row?;
        let (Ok(resolved), Ok(manifest)) = (Digest::parse(&resolved), Digest::parse(&hex)) else {
            continue;
        };
        let mut list = Vec::new();
        if resolved != manifest {
            list.push(ImageBlob {
                digest: resolved,
                role: ImageBlobRole::Index,
                size: None,
            });
        }
        let members = blobs.query_map([&hex], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for m in members {
            let (digest, role, size) = m?;
            if let (Ok(digest), Some(role)) = (Digest::parse(&digest), ImageBlobRole::parse(&role))
            {
                list.push(ImageBlob {
                    digest,
                    role,
                    size: size.map(|s| s as u64),
                });
            }
        }
        out.push(ImageRecord {
            reference,
            manifest,
            blobs: list,
        });
    }
    Ok(out)
}

/// Forgets the image `reference` (and the blob lists no image names any more).
pub fn forget(conn: &Connection, reference: &str) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM images WHERE reference = ?1", [reference])?;
    tx.execute(
        "DELETE FROM image_blobs WHERE manifest NOT IN (SELECT manifest FROM images)",
        [],
    )?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::{BlobRef, Layer};
    use crate::oci::reference::ImageReference;
    use crate::store::BlobInfo;

    fn blob_ref(seed: &[u8], size: u64) -> BlobRef {
        BlobRef {
            digest: Digest::of(seed),
            size,
            media_type: String::new(),
        }
    }

    /// An image of two layers, the second zstd, resolved through an index.
    fn image(reference: &str) -> ResolvedImage {
        let layer = |seed: &[u8], compression| Layer {
            blob: blob_ref(seed, 100),
            format: LayerFormat::Tar {
                compression,
                distributable: true,
            },
            urls: Vec::new(),
        };
        ResolvedImage {
            reference: ImageReference::parse(reference).unwrap(),
            resolved: Digest::of(b"index"),
            manifest: BlobInfo {
                digest: Digest::of(b"manifest"),
                size: 10,
            },
            config: blob_ref(b"config", 20),
            layers: vec![
                layer(b"gzip", Compression::Gzip),
                layer(b"zstd", Compression::Zstd),
            ],
            diff_ids: vec![Digest::of(b"tar1"), Digest::of(b"tar2")],
        }
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        init_schema(&c).unwrap();
        c
    }

    #[test]
    fn an_image_is_recorded_with_its_index_layers_in_order_and_decoded_tars() {
        let c = db();
        let tagged = image("docker://127.0.0.1:5000/team/app:v1");
        record(&c, &tagged, 1).unwrap();
        record(&c, &tagged, 2).unwrap();
        let got = recorded(&c).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reference, "docker://127.0.0.1:5000/team/app:v1");
        assert_eq!(got[0].manifest, Digest::of(b"manifest"));
        assert_eq!(got[0].blobs, tagged.blobs());
        let roles: Vec<&str> = got[0].blobs.iter().map(|b| b.role.as_str()).collect();
        assert_eq!(
            roles,
            ["index", "manifest", "config", "layer", "layer", "decoded"]
        );
        assert_eq!(got[0].blobs[5].digest, Digest::of(b"tar2"));
        assert_eq!(
            tagged.served_blobs().iter().map(|(_, s)| s).sum::<u64>(),
            10 + 20 + 100 + 100
        );
    }

    #[test]
    fn forgetting_a_reference_keeps_the_blobs_another_one_names() {
        let c = db();
        let tagged = image("docker://127.0.0.1:5000/team/app:v1");
        let mut by_digest = image("docker://127.0.0.1:5000/team/app:v2");
        by_digest.resolved = by_digest.manifest.digest;
        record(&c, &tagged, 1).unwrap();
        record(&c, &by_digest, 1).unwrap();
        forget(&c, "docker://127.0.0.1:5000/team/app:v1").unwrap();
        let got = recorded(&c).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].blobs.len(), 5, "no index, the rest kept");
        forget(&c, "docker://127.0.0.1:5000/team/app:v2").unwrap();
        assert!(recorded(&c).unwrap().is_empty());
        let left: i64 = c
            .query_row("SELECT COUNT(*) FROM image_blobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
}
