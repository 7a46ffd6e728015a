//! Feeds a device list (`docs/format.md` §3.7) to `DeviceList::from_bytes`
//! (which must round-trip), then `accept` against the fixture owner as the
//! person and `open_recovery` with the fixture owner's key. The committed
//! seeds are the four lists of `vault-core/tests/vectors/devices.json`,
//! whose person is not the fixture owner: they exercise the parser, which
//! is the surface a relay reaches; `accept`'s signature and generation
//! rules and the boxes are exercised by vault-core's tests and vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::devices::DeviceList;
use vault_fuzz_fixture::owner;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = DeviceList::from_bytes(data) else {
        return;
    };
    assert_eq!(list.to_bytes(), data);
    let root = owner();
    let _ = list.accept(root.public(), None);
    let _ = (list.devices().len(), list.generation(), list.hash());
    if let Ok(keys) = list.open_recovery(root) {
        assert!(keys.check_against(&list).is_ok());
    }
});
