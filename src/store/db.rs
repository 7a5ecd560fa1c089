//! The store's SQLite schema and the queries on it. One place for SQL text about blobs, refs
//! and counters; the catalog's queries live in `catalog`, the archive indexes' in `archive`.

use rusqlite::{params, Connection, OptionalExtension};

use crate::digest::Digest;

/// Creates the tables if missing. Idempotent.
pub fn init_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS blobs (
             digest      TEXT PRIMARY KEY,
             size        INTEGER NOT NULL,
             state       TEXT NOT NULL,           -- 'complete' (only complete blobs are listed)
             last_access INTEGER NOT NULL,        -- unix milliseconds
             pinned      INTEGER NOT NULL DEFAULT 0,
             created     INTEGER NOT NULL         -- unix milliseconds
         );
         CREATE INDEX IF NOT EXISTS blobs_lru ON blobs(pinned, last_access);
         CREATE TABLE IF NOT EXISTS refs (
             reference   TEXT PRIMARY KEY,        -- URL, catalog name or registry tag
             digest      TEXT NOT NULL,
             size        INTEGER,
             resolved_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS catalog (
             name         TEXT PRIMARY KEY,
             url          TEXT NOT NULL,
             sha256       TEXT,
             kind         TEXT NOT NULL,
             mirrors      TEXT NOT NULL DEFAULT '[]',
             index_sha256 TEXT,
             size         INTEGER,
             added_at     INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS sets (
             name     TEXT PRIMARY KEY,           -- asset sets added with `lazycas import`
             spec     TEXT NOT NULL,              -- the set as JSON (sets::RawSet)
             added_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS directory_entries (
             directory TEXT NOT NULL,             -- a [[directory]]'s name
             file_name TEXT NOT NULL,
             url       TEXT NOT NULL,
             md5       TEXT,                      -- from the casa-distro sidecar
             size      INTEGER,
             listed_at INTEGER NOT NULL,
             PRIMARY KEY (directory, file_name)
         );
         CREATE TABLE IF NOT EXISTS counters (
             name  TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         );",
    )
}

/// Pragmas every connection wants: WAL (readers never block the writer), a busy timeout so
/// the daemon and CLI commands wait for each other instead of failing.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// One row of `blobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// The content digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Last access, unix milliseconds.
    pub last_access: i64,
    /// Pinned blobs are never evicted.
    pub pinned: bool,
}

fn row_to_blob(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<BlobRow>> {
    let hex: String = r.get(0)?;
    let Ok(digest) = Digest::parse(&hex) else {
        return Ok(None);
    };
    Ok(Some(BlobRow {
        digest,
        size: r.get::<_, i64>(1)? as u64,
        last_access: r.get(2)?,
        pinned: r.get::<_, i64>(3)? != 0,
    }))
}

/// The complete blob with this digest, if recorded.
pub fn blob(conn: &Connection, d: &Digest) -> rusqlite::Result<Option<BlobRow>> {
    conn.query_row(
        "SELECT digest, size, last_access, pinned FROM blobs WHERE digest = ?1 AND state = 'complete'",
        [d.hex()],
        row_to_blob,
    )
    .optional()
    .map(Option::flatten)
}

/// Every complete blob, least recently used first.
pub fn blobs(conn: &Connection) -> rusqlite::Result<Vec<BlobRow>> {
    let mut st = conn.prepare(
        "SELECT digest, size, last_access, pinned FROM blobs WHERE state = 'complete' ORDER BY last_access, digest",
    )?;
    let rows = st.query_map([], row_to_blob)?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(r?);
    }
    Ok(out)
}

/// Records a blob as complete (after it was verified, fsynced and renamed into place).
pub fn insert_complete(conn: &Connection, d: &Digest, size: u64, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO blobs(digest, size, state, last_access, pinned, created)
         VALUES (?1, ?2, 'complete', ?3, 0, ?3)
         ON CONFLICT(digest) DO UPDATE SET size = excluded.size, state = 'complete', last_access = excluded.last_access",
        params![d.hex(), size as i64, now],
    )?;
    Ok(())
}

/// Forgets a blob (its file is gone).
pub fn delete_blob(conn: &Connection, d: &Digest) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM blobs WHERE digest = ?1", [d.hex()])?;
    Ok(())
}

/// Marks a blob pinned (never evicted) or not.
pub fn set_pinned(conn: &Connection, d: &Digest, pinned: bool) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE blobs SET pinned = ?2 WHERE digest = ?1",
        params![d.hex(), pinned as i64],
    )
}

/// Moves `last_access` forward.
pub fn touch(conn: &Connection, d: &Digest, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE blobs SET last_access = MAX(last_access, ?2) WHERE digest = ?1",
        params![d.hex(), now],
    )?;
    Ok(())
}

/// What a reference (URL, name, tag) resolved to, and its size if known.
pub fn reference(
    conn: &Connection,
    reference: &str,
) -> rusqlite::Result<Option<(Digest, Option<u64>)>> {
    conn.query_row(
        "SELECT digest, size FROM refs WHERE reference = ?1",
        [reference],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
    )
    .optional()
    .map(|o| {
        o.and_then(|(hex, size)| {
            Digest::parse(&hex)
                .ok()
                .map(|d| (d, size.map(|s| s as u64)))
        })
    })
}

/// What a reference resolved to, and when (unix seconds).
pub fn reference_resolved_at(
    conn: &Connection,
    reference: &str,
) -> rusqlite::Result<Option<(Digest, i64)>> {
    conn.query_row(
        "SELECT digest, resolved_at FROM refs WHERE reference = ?1",
        [reference],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )
    .optional()
    .map(|o| o.and_then(|(hex, at)| Digest::parse(&hex).ok().map(|d| (d, at))))
}

/// Records what a reference resolved to.
pub fn set_reference(
    conn: &Connection,
    reference: &str,
    d: &Digest,
    size: Option<u64>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO refs(reference, digest, size, resolved_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(reference) DO UPDATE SET digest = excluded.digest, size = excluded.size, resolved_at = excluded.resolved_at",
        params![reference, d.hex(), size.map(|s| s as i64), now],
    )?;
    Ok(())
}

/// Adds deltas to named counters.
pub fn add_counters<'a>(
    conn: &Connection,
    deltas: impl IntoIterator<Item = (&'a str, i64)>,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?;
    for (name, delta) in deltas {
        st.execute(params![name, delta])?;
    }
    Ok(())
}

/// Every counter.
pub fn counters(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut st = conn.prepare("SELECT name, value FROM counters ORDER BY name")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_rows_round_trip() {
        let c = Connection::open_in_memory().unwrap();
        init_schema(&c).unwrap();
        let d = Digest::of(b"x");
        assert_eq!(blob(&c, &d).unwrap(), None);
        insert_complete(&c, &d, 1, 100).unwrap();
        touch(&c, &d, 50).unwrap();
        let row = blob(&c, &d).unwrap().unwrap();
        assert_eq!((row.size, row.last_access, row.pinned), (1, 100, false));
        set_pinned(&c, &d, true).unwrap();
        assert!(blob(&c, &d).unwrap().unwrap().pinned);
        insert_complete(&c, &d, 1, 200).unwrap();
        assert!(
            blob(&c, &d).unwrap().unwrap().pinned,
            "re-insert keeps the pin"
        );
        add_counters(&c, [("hits", 2), ("hits", 3)]).unwrap();
        assert_eq!(counters(&c).unwrap(), vec![("hits".to_string(), 5)]);
    }
}
