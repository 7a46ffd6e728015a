//! In-crate tests that need crate-private access (forging entries as an
//! attacker would): the end-to-end flow, property tests and core-level
//! attacks. A shared [`fixture::Fixture`] builds vaults.

mod addresses;
mod agents;
mod attacks;
mod deposits;
mod devices;
mod fixture;
mod flow;
mod member_devices;
mod owner_devices;
mod planned;
mod properties;
mod redaction;
mod review;
