//! Feeds signed-request headers (`docs/relay-api.md`): the input is lines
//! `method`, `path`, then the values of `x-vault-identity`,
//! `x-vault-timestamp`, `x-vault-nonce`, `x-vault-content-sha256` and
//! `x-vault-signature`, given to `RequestAuth::from_headers`; what parses is
//! verified (`RequestAuth::verify`) against both fixture identities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::request::RequestAuth;
use vault_fuzz_fixture::{member, owner};

const NAMES: [&str; 5] = [
    "x-vault-identity",
    "x-vault-timestamp",
    "x-vault-nonce",
    "x-vault-content-sha256",
    "x-vault-signature",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let method = lines.first().copied().unwrap_or("");
    let path = lines.get(1).copied().unwrap_or("");
    let get = |name: &str| {
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| lines.get(i + 2).copied())
    };
    let Ok(auth) = RequestAuth::from_headers(get) else {
        return;
    };
    let headers = auth.headers();
    let again = RequestAuth::from_headers(|name| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    })
    .expect("own headers parse");
    assert_eq!(again, auth);
    for id in [owner(), member()] {
        let _ = auth.verify(id.public(), method, path);
    }
});
