//! Feeds the sync client's parsing of relay answers (`docs/relay-api.md`),
//! through `vault_client::fuzzing`. Selector byte: 0 an error body (as
//! HTTP 409); 1 a head answer; 2 a vault-creation answer; 3 a log page
//! (head and base64url entries, each parsed by vault-core); 4 an inbox;
//! 5 an upload answer for a 131072-byte blob; 6 a download's
//! `content-range` for bytes from 512 of a 1024-byte blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_client::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => {
            let e = fuzzing::error_body(rest, 409);
            let _ = (e.to_string(), e.code());
        }
        1 => {
            let _ = fuzzing::head_answer(rest);
        }
        2 => {
            let _ = fuzzing::vault_answer(rest);
        }
        3 => {
            let _ = fuzzing::log_answer(rest);
        }
        4 => {
            let _ = fuzzing::inbox_answer(rest);
        }
        5 => {
            if let Ok(s) = fuzzing::upload_answer(rest, 131_072) {
                assert!(s.offset <= 131_072);
            }
        }
        _ => {
            if let Ok(v) = std::str::from_utf8(rest) {
                let _ = fuzzing::content_range(v, 512, 1024);
            }
        }
    }
});
