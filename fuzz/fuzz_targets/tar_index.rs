//! The tar parser and the gzip scanner: `IndexBuilder` fed the input in pieces whose size the
//! first byte chooses, so member and block boundaries fall anywhere. Any input must end in an
//! index or an `ArchiveError`, never a panic, and the index stays within the input's bounds.
#![no_main]

use lazycas::archive::IndexBuilder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1) * 37;
    let mut builder = IndexBuilder::with_checkpoint_spacing(4096);
    for part in bytes.chunks(piece) {
        if builder.feed(part).is_err() {
            return;
        }
    }
    let _ = builder.finish();
});
