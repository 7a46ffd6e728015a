//! The relay's rules, over the storage traits: routes translate HTTP to
//! and from these services.

pub mod inbox;
