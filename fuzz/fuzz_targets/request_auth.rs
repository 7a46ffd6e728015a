//! Feeds signed-request headers (`docs/relay-api.md`): the input is lines
//! `method`, `path`, then the values of `x-vault-identity`,
//! `x-vault-timestamp`, `x-vault-nonce`, `x-vault-content-sha256`,
//! `x-vault-relay` and `x-vault-signature`, given to
//! `RequestAuth::from_headers`; what parses is verified
//! (`RequestAuth::verify`) against both fixture identities, for the relay
//! the request names and for the fixture relay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::request::{RelayOrigin, RequestAuth};
use vault_fuzz_fixture::{member, owner, RELAY};

const NAMES: [&str; 6] = [
    "x-vault-identity",
    "x-vault-timestamp",
    "x-vault-nonce",
    "x-vault-content-sha256",
    "x-vault-relay",
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
    let fixture_relay = RelayOrigin::parse(RELAY).expect("fixture relay");
    for id in [owner(), member()] {
        for relay in [&auth.relay, &fixture_relay] {
            let _ = auth.verify(id.public(), method, path, relay);
        }
    }
});
