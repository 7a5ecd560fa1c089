//! Inputs the fuzz targets (`fuzz/`) flagged, kept as regression tests of the chunk index
//! parser. The inputs live in `fuzz/regressions/chunk_index/`.

use super::ChunkIndex;
use crate::digest::Digest;

/// `fuzz/run.sh` chunk_index: an index with a hint of unknown kind 11 parses (unknown kinds are
/// skipped, so a newer writer's hints do not break this reader) and re-encodes without it, to
/// bytes that parse to the same chunks and encode to themselves.
#[test]
fn unknown_hint_kind_is_skipped_and_the_encoding_is_stable() {
    let bytes = include_bytes!("../../fuzz/regressions/chunk_index/unknown-hint-kind");
    let index = ChunkIndex::parse(bytes, &Digest::of(bytes)).expect("parses");
    let encoded = index.to_bytes();
    assert!(encoded.len() < bytes.len(), "the unknown hint is dropped");
    let again = ChunkIndex::parse(&encoded, &Digest::of(&encoded)).expect("re-encoding parses");
    assert_eq!(again.chunks(), index.chunks());
    assert_eq!(again.to_bytes(), encoded);
}
