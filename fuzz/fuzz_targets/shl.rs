//! Feeds SMART Health Links parsers (vault-shl, decision 49): selector 0
//! gives the rest, as UTF-8, to `Payload::parse` (a link read from a QR
//! code or a message) and checks that what parses writes back to a link
//! that parses to the same payload; 1 gives it to `jwe::inspect` and
//! `jwe::decrypt` under a fixed key with small limits (a file from a
//! host); 2 gives the bytes to `Manifest::parse` (a host's manifest),
//! whose files must then each have one known content type and exactly one
//! of `embedded` and `location`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_shl::{jwe, JweLimits, LinkKey, Manifest, Payload};

const MANIFEST_URL: &str =
    "https://relay.example/v1/shl/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(p) = Payload::parse(text) {
                    let again = Payload::parse(&p.to_shlink().expect("a parsed payload writes"))
                        .expect("a written payload parses");
                    assert_eq!(again, p);
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let limits = JweLimits {
                    max_jwe: 1 << 16,
                    max_plaintext: 1 << 16,
                };
                let _ = jwe::inspect(text, &limits);
                if let Ok(d) = jwe::decrypt(&LinkKey::from_bytes([7; 32]), text, &limits) {
                    assert!(d.plaintext.len() <= limits.max_plaintext);
                }
            }
        }
        _ => {
            if let Ok(m) = Manifest::parse(rest, MANIFEST_URL) {
                for f in &m.files {
                    assert!(f.embedded.is_some() != f.location.is_some());
                    assert!(vault_shl::is_content_type(&f.content_type));
                }
            }
        }
    }
});
