//! Reading and writing standard age files (age-encryption.org/v1), the one
//! place vault-core calls the `age` crate. Grants, key files and exports all
//! go through here, and the age test kit runs through these functions.

use std::io::{Read, Write};
use std::iter;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The age recipient of a raw X25519 public key (its `age1…` form); a
/// low-order point is refused ([`Error::WeakPublicKey`]).
pub(crate) fn x25519_recipient(public: &[u8; 32]) -> Result<age::x25519::Recipient> {
    use std::str::FromStr;
    let hrp = bech32::Hrp::parse_unchecked("age");
    let text = bech32::encode_lower::<bech32::Bech32>(hrp, public)
        .map_err(|_| Error::WeakPublicKey { what: "X25519" })?;
    age::x25519::Recipient::from_str(&text).map_err(|_| Error::WeakPublicKey { what: "X25519" })
}

/// The age identity of a raw X25519 secret (its `AGE-SECRET-KEY-1…` form,
/// zeroised after parsing).
pub(crate) fn x25519_identity(secret: &[u8; 32]) -> Result<age::x25519::Identity> {
    use std::str::FromStr;
    use zeroize::Zeroize as _;
    let hrp = bech32::Hrp::parse_unchecked("age-secret-key-");
    let mut text = bech32::encode_upper::<bech32::Bech32>(hrp, secret).unwrap_or_default();
    let identity = age::x25519::Identity::from_str(&text);
    text.zeroize();
    identity.map_err(|_| Error::Malformed {
        what: "secret identity",
        reason: "invalid X25519 secret",
    })
}

/// Encrypts `plaintext` to one age recipient, as a binary (unarmored) file.
pub(crate) fn encrypt(recipient: &dyn age::Recipient, plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = encrypt_stream(recipient, &mut out)?;
    w.write_all(plaintext)?;
    w.finish()?;
    Ok(out)
}

/// Starts a streaming age encryption to one recipient.
pub(crate) fn encrypt_stream<W: Write>(
    recipient: &dyn age::Recipient,
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(iter::once(recipient))
        .map_err(|_| Error::InvalidInput("cannot encrypt to this recipient"))?;
    Ok(enc.wrap_output(out)?)
}

/// Decrypts an age file with an X25519 identity, reading at most `max_len`
/// plaintext bytes. Every failure (not for this key, corrupt header, bad MAC,
/// corrupt payload) is [`Error::DecryptionFailed`].
pub(crate) fn decrypt_x25519(
    file: &[u8],
    identity: &age::x25519::Identity,
    max_len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let dec = age::Decryptor::new(file).map_err(|_| Error::DecryptionFailed)?;
    if dec.is_scrypt() {
        return Err(Error::DecryptionFailed);
    }
    let reader = dec
        .decrypt(iter::once(identity as &dyn age::Identity))
        .map_err(|_| Error::DecryptionFailed)?;
    read_bounded(reader, max_len)
}

/// Decrypts a passphrase-encrypted age file, refusing work factors below
/// `min_work_factor` (a weakened file) and above `max_work_factor` (a file
/// that would take unreasonably long to open).
pub(crate) fn decrypt_passphrase(
    file: &[u8],
    passphrase: &SecretString,
    min_work_factor: u8,
    max_work_factor: u8,
    max_len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let found = scrypt_work_factor(file)?;
    if found < min_work_factor {
        return Err(Error::WeakKeyFile {
            found,
            minimum: min_work_factor,
        });
    }
    if found > max_work_factor {
        // Refused before scrypt allocates its 128 · r · N bytes.
        return Err(Error::Malformed {
            what: "key file",
            reason: "its scrypt work factor is above the maximum this version opens (2^20, 1 GiB of memory)",
        });
    }
    let dec = age::Decryptor::new(file).map_err(|_| Error::WrongPassphrase)?;
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(max_work_factor);
    let reader = dec
        .decrypt(iter::once(&identity as &dyn age::Identity))
        .map_err(|_| Error::WrongPassphrase)?;
    read_bounded(reader, max_len).map_err(|_| Error::WrongPassphrase)
}

/// The scrypt work factor (log2 N) of a passphrase-encrypted age file: the
/// header must consist of exactly one `scrypt` stanza.
fn scrypt_work_factor(file: &[u8]) -> Result<u8> {
    let malformed = Error::Malformed {
        what: "passphrase-encrypted age file",
        reason: "expected exactly one scrypt stanza",
    };
    let mut lines = file.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1".as_slice()) {
        return Err(malformed);
    }
    let stanza = lines.next().ok_or(Error::Malformed {
        what: "passphrase-encrypted age file",
        reason: "truncated",
    })?;
    let stanza = std::str::from_utf8(stanza).map_err(|_| Error::WrongPassphrase)?;
    let mut args = stanza.split(' ');
    if args.next() != Some("->") || args.next() != Some("scrypt") {
        return Err(malformed);
    }
    let _salt = args.next();
    // Canonical decimal only: no sign, no leading zero (as the age spec).
    let log_n = args
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0'))
        .and_then(|s| s.parse::<u8>().ok())
        .ok_or(Error::Malformed {
            what: "passphrase-encrypted age file",
            reason: "invalid scrypt work factor",
        })?;
    if args.next().is_some() {
        return Err(malformed);
    }
    Ok(log_n)
}

fn read_bounded<R: Read>(reader: R, max_len: usize) -> Result<Zeroizing<Vec<u8>>> {
    // Room for the whole plaintext up front (small ones: keys, key files),
    // so no secret is left behind in a buffer freed by growing.
    let mut out = Zeroizing::new(Vec::with_capacity(max_len.min(64 * 1024).saturating_add(1)));
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| Error::DecryptionFailed)?;
    if out.len() > max_len {
        return Err(Error::Malformed {
            what: "age file",
            reason: "plaintext longer than expected",
        });
    }
    Ok(out)
}
