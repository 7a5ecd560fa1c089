//! The archive span index reader: a chunk index (pinned to the input's own digest, so every
//! byte reaches the parser) whose archive hint is decoded into a span map and a seek index, as
//! an archive with a published index is opened. Either may refuse the input; neither may panic.
#![no_main]

use lazycas::archive::{published, SpanMap};
use lazycas::chunk::ChunkIndex;
use lazycas::digest::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = ChunkIndex::parse(data, &Digest::of(data)) else {
        return;
    };
    let Some(hint) = index.hints().archive.as_ref() else {
        return;
    };
    let _ = SpanMap::from_published(&hint.0, &index);
    let _ = published::decode(&hint.0, &index);
});
