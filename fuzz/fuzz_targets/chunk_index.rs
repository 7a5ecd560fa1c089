//! The chunk index reader: `ChunkIndex::parse` with the input's own digest pinned, so every
//! byte reaches the parser; an index that parses is queried as the read path does.
#![no_main]

use lazycas::chunk::ChunkIndex;
use lazycas::digest::Digest;
use lazycas::range::ByteRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = ChunkIndex::parse(data, &Digest::of(data)) else {
        return;
    };
    let size = index.size();
    for i in 0..index.chunks().len().min(64) {
        let r = index.chunk_range(i).expect("a listed chunk has a range");
        assert!(r.end() <= size, "chunk beyond the file");
    }
    let _ = index.prefetch_chunks();
    if size > 0 {
        let _ = index.chunks_covering(ByteRange::new(size / 3, size / 2 + 1));
    }
    // Unknown hint kinds are skipped, so the encoding may be shorter; it must parse to the same
    // index and encode to itself.
    let encoded = index.to_bytes();
    let again = ChunkIndex::parse(&encoded, &Digest::of(&encoded))
        .unwrap_or_else(|e| panic!("a parsed index re-encodes to bytes that do not parse: {e}"));
    assert_eq!(again.to_bytes(), encoded, "re-encoding is stable");
    assert_eq!(again.chunks(), index.chunks());
});
