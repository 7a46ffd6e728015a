//! Feeds the relay's parsing of request bodies and upload headers
//! (`docs/relay-api.md`), through `relay_server::fuzzing`. Selector byte:
//! 0 `POST /v1/vaults` JSON (genesis entry); 1 `POST …/log` JSON (prev head
//! and entries); 2 `PUT /v1/identities` JSON (identity document); 3 the
//! framed batch body of `POST …/blobs`; 4 header lines `name: value` read as
//! `upload-length`, `upload-offset` and `content-length`; 5 a `range`
//! header after an 8-byte big-endian blob length.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use relay_server::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            let _ = fuzzing::create_body(rest);
        }
        1 => {
            if let Ok((_, entries)) = fuzzing::append_body(rest) {
                for e in entries {
                    let _ = e.hash();
                }
            }
        }
        2 => {
            let _ = fuzzing::publish_body(rest);
        }
        3 => {
            if let Ok(frames) = fuzzing::batch_frames(rest) {
                assert!(!frames.is_empty());
                let total: usize = frames.iter().map(|(_, len)| len + 36).sum();
                assert_eq!(total, rest.len());
            }
        }
        4 => {
            let mut headers = HeaderMap::new();
            for line in rest.split(|b| *b == b'\n') {
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                let (name, value) = (&line[..colon], &line[colon + 1..]);
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    headers.append(n, v);
                }
            }
            for name in ["upload-length", "upload-offset", "content-length"] {
                let _ = fuzzing::upload_header(&headers, name);
            }
        }
        _ => {
            if rest.len() < 8 {
                return;
            }
            let (len, value) = rest.split_at(8);
            let len = u64::from_be_bytes(len.try_into().expect("8 bytes"));
            if let Ok(v) = std::str::from_utf8(value) {
                if let Some((start, count)) = fuzzing::range_header(v, len) {
                    assert!(count >= 1 && start.checked_add(count).is_some_and(|e| e <= len));
                }
            }
        }
    }
});
