//! The JSON a publisher or registry sends: token answers, `WWW-Authenticate` challenges,
//! library and shub API answers, casa-distro sidecars, MedPerf cube records and autoindex
//! pages. The first byte picks the parser.
#![no_main]

use lazycas::oci::auth::{Challenge, TokenResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    match pick % 6 {
        0 => {
            let _ = TokenResponse::parse(bytes);
        }
        1 => {
            let _ = Challenge::parse_all(&text);
        }
        2 => {
            let _ = lazycas::publish::image_answer(bytes);
        }
        3 => {
            let _ = lazycas::publish::container_answer(bytes);
        }
        4 => {
            let _ = lazycas::publish::directory::sidecar_answer(bytes);
        }
        _ => {
            let _ = lazycas::publish::directory::linked_files(&text);
        }
    }
});
