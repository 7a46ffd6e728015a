//! Secret key files (`docs/format.md` §4): a principal's secrets sealed with
//! a passphrase through age's scrypt recipient.
//!
//! The plaintext inside is itself a valid age identity file (age ignores
//! `#` lines), so `age -d key.vault > id.txt` followed by
//! `age -d -i id.txt export.age` works with stock tools:
//!
//! ```text
//! # vault secret identity v1
//! # ed25519: <base64url of the Ed25519 seed>
//! # document: <base64url of the public identity document>
//! AGE-SECRET-KEY-1…
//! ```

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::agefile;
use crate::error::{Error, Result};
use crate::identity::{PublicIdentity, SecretIdentity};

/// The scrypt work factor (log2 N) new key files use: about a second of work
/// on a laptop, 256 MiB of memory.
pub const DEFAULT_WORK_FACTOR: u8 = 18;
/// The lowest work factor a key file may have; anything lower is refused as
/// weakened ([`Error::WeakKeyFile`]).
pub const MIN_WORK_FACTOR: u8 = 15;
/// The highest work factor we will spend time and memory on: scrypt needs
/// 128 · r · N bytes in one allocation, 1 GiB at 20 (2 GiB at 21, 4 GiB at
/// 22, which is all a browser's WebAssembly memory can hold: a key file
/// naming it would abort the web app).
pub const MAX_WORK_FACTOR: u8 = 20;

const HEADER: &str = "# vault secret identity v1";
const ED25519_PREFIX: &str = "# ed25519: ";
const DOCUMENT_PREFIX: &str = "# document: ";
const MAX_PLAINTEXT: usize = 4096;

/// Seals `identity` under `passphrase` with scrypt work factor `work_factor`
/// (at least [`MIN_WORK_FACTOR`]). The result is a binary age file.
pub fn seal(
    identity: &SecretIdentity,
    passphrase: &SecretString,
    work_factor: u8,
) -> Result<Vec<u8>> {
    if !(MIN_WORK_FACTOR..=MAX_WORK_FACTOR).contains(&work_factor) {
        return Err(Error::InvalidInput("scrypt work factor out of range"));
    }
    if passphrase.expose_secret().is_empty() {
        return Err(Error::InvalidInput("the passphrase must not be empty"));
    }
    let plaintext = unsealed(identity);
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(work_factor);
    agefile::encrypt(&recipient, plaintext.as_bytes())
}

/// The key file's plaintext (§4.2) for `identity`: both secrets,
/// unprotected. It exists to hand an unlocked identity to another process
/// of the same user (the CLI's agent) and MUST never be written to disk;
/// it is zeroized on drop.
pub fn unsealed(identity: &SecretIdentity) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{HEADER}\n{ED25519_PREFIX}{}\n{DOCUMENT_PREFIX}{}\n{}\n",
        Zeroizing::new(URL_SAFE_NO_PAD.encode(identity.ed25519_seed().as_slice())).as_str(),
        URL_SAFE_NO_PAD.encode(identity.public().to_bytes()),
        identity.age_secret_key().expose_secret(),
    ))
}

/// Reads a plaintext made by [`unsealed`], with every check of §4.3 that
/// applies to a plaintext ([`Error::Malformed`] otherwise, including for
/// more than 4096 bytes).
pub fn from_unsealed(plain: &[u8]) -> Result<SecretIdentity> {
    if plain.len() > MAX_PLAINTEXT {
        return Err(Error::Malformed {
            what: "key file",
            reason: "plaintext too long",
        });
    }
    parse_plaintext(plain)
}

/// Opens a key file. Errors: [`Error::WrongPassphrase`],
/// [`Error::WeakKeyFile`] for a work factor below [`MIN_WORK_FACTOR`], and
/// [`Error::Malformed`] for a file whose contents are not a vault identity.
pub fn open(file: &[u8], passphrase: &SecretString) -> Result<SecretIdentity> {
    let plain = agefile::decrypt_passphrase(
        file,
        passphrase,
        MIN_WORK_FACTOR,
        MAX_WORK_FACTOR,
        MAX_PLAINTEXT,
    )?;
    parse_plaintext(&plain)
}

fn parse_plaintext(plain: &[u8]) -> Result<SecretIdentity> {
    let malformed = |reason| Error::Malformed {
        what: "key file",
        reason,
    };
    let text = std::str::from_utf8(plain).map_err(|_| malformed("not UTF-8"))?;
    let mut lines = text.split('\n');
    if lines.next() != Some(HEADER) {
        return Err(malformed("missing header line"));
    }
    let seed_b64 = lines
        .next()
        .and_then(|l| l.strip_prefix(ED25519_PREFIX))
        .ok_or(malformed("missing ed25519 line"))?;
    let doc_b64 = lines
        .next()
        .and_then(|l| l.strip_prefix(DOCUMENT_PREFIX))
        .ok_or(malformed("missing document line"))?;
    let age_key = lines.next().ok_or(malformed("missing age secret key"))?;
    if lines.next() != Some("") || lines.next().is_some() {
        return Err(malformed("trailing lines"));
    }
    let seed = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(seed_b64)
            .map_err(|_| malformed("invalid ed25519 seed"))?,
    );
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        seed.as_slice()
            .try_into()
            .map_err(|_| malformed("invalid ed25519 seed length"))?,
    );
    let doc = URL_SAFE_NO_PAD
        .decode(doc_b64)
        .map_err(|_| malformed("invalid document"))?;
    let public = PublicIdentity::from_bytes(&doc)?;
    let age_identity = age::x25519::Identity::from_str(age_key)
        .map_err(|_| malformed("invalid age secret key"))?;
    let x25519 = parse_age_secret(age_identity.to_string().expose_secret())?;
    if age_identity.to_string().expose_secret() != age_key {
        return Err(malformed("age secret key is not canonical"));
    }
    SecretIdentity::from_parts(x25519, seed, public)
}

/// The raw scalar of an `AGE-SECRET-KEY-1…` string.
fn parse_age_secret(s: &str) -> Result<Zeroizing<[u8; 32]>> {
    let (_, data) = bech32::decode(s).map_err(|_| Error::Malformed {
        what: "key file",
        reason: "invalid age secret key",
    })?;
    let data = Zeroizing::new(data);
    let bytes: [u8; 32] = data.as_slice().try_into().map_err(|_| Error::Malformed {
        what: "key file",
        reason: "invalid age secret key length",
    })?;
    Ok(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{IdentityInfo, Role};

    fn identity() -> SecretIdentity {
        SecretIdentity::from_seed(
            &[4; 32],
            &IdentityInfo {
                display_name: "Pat".into(),
                role: Role::Patient,
                registration: None,
                created_at: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn unsealed_round_trips_and_is_checked() {
        let id = identity();
        let plain = unsealed(&id);
        let back = from_unsealed(plain.as_bytes()).unwrap();
        assert_eq!(back.fingerprint(), id.fingerprint());
        let mut long = plain.as_bytes().to_vec();
        long.resize(MAX_PLAINTEXT + 1, b'#');
        assert!(matches!(from_unsealed(&long), Err(Error::Malformed { .. })));
        let tampered = plain.replace("# document: ", "# documents: ");
        assert!(matches!(
            from_unsealed(tampered.as_bytes()),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn seal_open_round_trip_and_failures() {
        let id = identity();
        let pass = SecretString::from("correct horse battery staple");
        let file = seal(&id, &pass, MIN_WORK_FACTOR).unwrap();
        let back = open(&file, &pass).unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(
            back.age_secret_key().expose_secret(),
            id.age_secret_key().expose_secret()
        );
        assert!(matches!(
            open(&file, &SecretString::from("wrong")),
            Err(Error::WrongPassphrase)
        ));
        assert!(seal(&id, &pass, MIN_WORK_FACTOR - 1).is_err());
        assert!(seal(&id, &SecretString::from(""), MIN_WORK_FACTOR).is_err());
    }

    #[test]
    fn weakened_key_file_is_refused() {
        let id = identity();
        let pass = SecretString::from("pw");
        // Built directly with age: a file an attacker re-encrypted cheaply.
        let mut weak = age::scrypt::Recipient::new(pass.clone());
        weak.set_work_factor(10);
        let file = agefile::encrypt(&weak, b"anything").unwrap();
        assert!(matches!(
            open(&file, &pass),
            Err(Error::WeakKeyFile {
                found: 10,
                minimum: MIN_WORK_FACTOR
            })
        ));
        let _ = id;
    }

    #[test]
    fn a_work_factor_above_the_maximum_is_refused_before_scrypt_runs() {
        let pass = SecretString::from("pw");
        let file = seal(&identity(), &pass, MIN_WORK_FACTOR).unwrap();
        // The stanza's work factor rewritten to 22: scrypt would allocate
        // 4 GiB at once (found by the keyfile fuzz target).
        let text = file.clone();
        let at = text
            .windows(3)
            .position(|w| w == b" 15")
            .expect("the scrypt stanza names 15");
        let mut big = file;
        big.splice(at..at + 3, b" 22".iter().copied());
        assert!(matches!(
            open(&big, &pass),
            Err(Error::Malformed {
                what: "key file",
                ..
            })
        ));
        assert!(seal(&identity(), &pass, MAX_WORK_FACTOR + 1).is_err());
    }

    #[test]
    fn plaintext_is_a_stock_age_identity_file() {
        let id = identity();
        let pass = SecretString::from("pw");
        let file = seal(&id, &pass, MIN_WORK_FACTOR).unwrap();
        let plain = agefile::decrypt_passphrase(&file, &pass, 0, 22, 4096).unwrap();
        let ids = age::IdentityFile::from_buffer(plain.as_slice()).unwrap();
        assert_eq!(ids.into_identities().unwrap().len(), 1);
    }
}
