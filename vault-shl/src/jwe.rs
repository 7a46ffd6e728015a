//! SMART Health Links files: JWE compact serialisation (RFC 7516 §7.1)
//! with `alg: dir` (the link key is the content encryption key, so the
//! encrypted-key part is empty), `enc: A256GCM` (a 96-bit random IV per
//! encryption, a 128-bit tag), a `cty` header naming the plaintext's
//! content type, and optionally `zip: DEF` (raw DEFLATE, RFC 1951, before
//! encryption).
//!
//! `BASE64URL(header) . "" . BASE64URL(iv) . BASE64URL(ciphertext) .
//! BASE64URL(tag)`, the additional authenticated data being the ASCII of
//! the first part (RFC 7516 §5.1 step 14).
//!
//! Reading checks the framing and the header before any decryption:
//! exactly five parts, an empty encrypted key, `alg` exactly `dir`, `enc`
//! exactly `A256GCM`, `zip` absent or `DEF`, no `crit`, a 12-byte IV and a
//! 16-byte tag, and the whole file within [`JweLimits::max_jwe`]; a
//! compressed file is inflated only up to [`JweLimits::max_plaintext`]
//! (a zip bomb stops there).

use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::{b64d, b64e, LinkKey, ShlError};

/// Whether to compress before encrypting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No `zip` header: what every reader handles whatever the size
    /// (prefer it for large files: npm `jose` 6.2 refuses `zip: DEF`
    /// content that inflates past 250,000 bytes unless its reader raises
    /// the limit).
    None,
    /// `zip: DEF`, raw DEFLATE.
    Deflate,
}

/// Plaintexts up to this size are compressed by [`Compression::auto`].
pub const AUTO_DEFLATE_MAX: usize = 200_000;

impl Compression {
    /// DEFLATE for plaintexts of at most [`AUTO_DEFLATE_MAX`] bytes (well
    /// under npm `jose`'s default inflate limit of 250,000 bytes), none
    /// above.
    pub fn auto(plaintext_len: usize) -> Self {
        if plaintext_len <= AUTO_DEFLATE_MAX {
            Self::Deflate
        } else {
            Self::None
        }
    }
}

/// How much a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JweLimits {
    /// The longest compact JWE read, in bytes.
    pub max_jwe: usize,
    /// The largest plaintext returned, after inflation for `zip: DEF`.
    pub max_plaintext: usize,
}

impl Default for JweLimits {
    /// 64 MiB of JWE text, 64 MiB of plaintext.
    fn default() -> Self {
        Self {
            max_jwe: 64 << 20,
            max_plaintext: 64 << 20,
        }
    }
}

/// The protected header of a SMART Health Links file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JweHeader {
    /// Always `dir`.
    pub alg: String,
    /// Always `A256GCM`.
    pub enc: String,
    /// The plaintext's content type (the manifest's `contentType`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cty: Option<String>,
    /// `DEF` when the plaintext was compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
}

/// A decrypted file.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The `cty` header.
    pub content_type: String,
    /// Whether the file was compressed (`zip: DEF`).
    pub compressed: bool,
    /// The plaintext (inflated if it was compressed).
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("content_type", &self.content_type)
            .field("compressed", &self.compressed)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

/// Encrypts `plaintext` for a link: a fresh random IV, `cty` set to
/// `content_type` (which must be one of [`crate::CONTENT_TYPES`]).
pub fn encrypt(
    key: &LinkKey,
    content_type: &str,
    plaintext: &[u8],
    compression: Compression,
) -> Result<String, ShlError> {
    if !crate::is_content_type(content_type) {
        return Err(ShlError::InvalidSettings(format!(
            "a shared file's content type must be one of {}",
            crate::CONTENT_TYPES.join(", ")
        )));
    }
    let header = JweHeader {
        alg: "dir".into(),
        enc: "A256GCM".into(),
        cty: Some(content_type.into()),
        zip: (compression == Compression::Deflate).then(|| "DEF".into()),
    };
    let header_json =
        serde_json::to_vec(&header).map_err(|e| ShlError::MalformedJwe(format!("header: {e}")))?;
    let header_b64 = b64e(&header_json);
    let compressed;
    let body: &[u8] = match compression {
        Compression::None => plaintext,
        Compression::Deflate => {
            compressed = miniz_oxide::deflate::compress_to_vec(plaintext, 9);
            &compressed
        }
    };
    let mut iv = [0u8; 12];
    getrandom::getrandom(&mut iv).map_err(|_| ShlError::Random)?;
    let cipher = Aes256Gcm::new(key.bytes().into());
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&iv),
            AeadPayload {
                msg: body,
                aad: header_b64.as_bytes(),
            },
        )
        .map_err(|_| ShlError::MalformedJwe("the file is too large to encrypt".into()))?;
    let split = sealed.len().saturating_sub(16);
    let (ct, tag) = sealed.split_at(split);
    Ok(format!(
        "{header_b64}..{}.{}.{}",
        b64e(&iv),
        b64e(ct),
        b64e(tag)
    ))
}

/// The parts of a compact JWE, checked but not decrypted.
struct Parts<'a> {
    header_b64: &'a str,
    header: JweHeader,
    iv: [u8; 12],
    ciphertext: Vec<u8>,
    tag: [u8; 16],
}

fn parse<'a>(jwe: &'a str, limits: &JweLimits) -> Result<Parts<'a>, ShlError> {
    if jwe.len() > limits.max_jwe {
        return Err(ShlError::TooLarge {
            limit: limits.max_jwe,
            what: " (encrypted)",
        });
    }
    let jwe = jwe.trim_end_matches(['\r', '\n']);
    let parts: Vec<&str> = jwe.split('.').collect();
    let [header_b64, encrypted_key, iv, ciphertext, tag] = parts.as_slice() else {
        return Err(ShlError::MalformedJwe(format!(
            "a compact JWE has 5 parts separated by '.', this has {}",
            parts.len()
        )));
    };
    let header = inspect_header(header_b64)?;
    if !encrypted_key.is_empty() {
        return Err(ShlError::MalformedJwe(
            "with alg \"dir\" the encrypted key part must be empty".into(),
        ));
    }
    let iv: [u8; 12] = b64d(iv)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ShlError::MalformedJwe("the IV must be 12 bytes of base64url".into()))?;
    let tag: [u8; 16] = b64d(tag)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ShlError::MalformedJwe("the tag must be 16 bytes of base64url".into()))?;
    let ciphertext = b64d(ciphertext)
        .ok_or_else(|| ShlError::MalformedJwe("the ciphertext is not base64url".into()))?;
    Ok(Parts {
        header_b64,
        header,
        iv,
        ciphertext,
        tag,
    })
}

/// Parses and checks a protected header (base64url of a JSON object).
fn inspect_header(header_b64: &str) -> Result<JweHeader, ShlError> {
    let bytes = b64d(header_b64)
        .ok_or_else(|| ShlError::MalformedJwe("the protected header is not base64url".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| ShlError::MalformedJwe("the protected header is not JSON".into()))?;
    let obj = value.as_object().ok_or_else(|| {
        ShlError::MalformedJwe("the protected header is not a JSON object".into())
    })?;
    let text = |name: &str| -> Result<Option<String>, ShlError> {
        match obj.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ShlError::MalformedJwe(format!(
                "the header's \"{name}\" is not a string"
            ))),
        }
    };
    let alg = text("alg")?.unwrap_or_default();
    let enc = text("enc")?.unwrap_or_default();
    if alg != "dir" || enc != "A256GCM" {
        let shown = |s: &str| -> String {
            let s: String = s.chars().filter(|c| !c.is_control()).take(32).collect();
            if s.is_empty() {
                "no algorithm".into()
            } else {
                s
            }
        };
        return Err(ShlError::UnsupportedAlgorithm(format!(
            "alg \"{}\" with enc \"{}\"",
            shown(&alg),
            shown(&enc)
        )));
    }
    if obj.contains_key("crit") {
        return Err(ShlError::MalformedJwe(
            "the header names critical extensions (\"crit\"), which this reader does not implement"
                .into(),
        ));
    }
    let zip = text("zip")?;
    if let Some(z) = &zip {
        if z != "DEF" {
            return Err(ShlError::MalformedJwe(
                "the only compression allowed is zip \"DEF\"".into(),
            ));
        }
    }
    Ok(JweHeader {
        alg,
        enc,
        cty: text("cty")?,
        zip,
    })
}

/// Checks a JWE's framing and header without decrypting it (what a host
/// that never holds the key can check): the header it returns has
/// `alg: dir` and `enc: A256GCM`.
pub fn inspect(jwe: &str, limits: &JweLimits) -> Result<JweHeader, ShlError> {
    Ok(parse(jwe, limits)?.header)
}

/// Decrypts a file of the link whose key is `key`. The header is checked
/// before decryption (see the module documentation); a file without a
/// `cty` header is refused (the specification requires it); the
/// plaintext is inflated only up to [`JweLimits::max_plaintext`].
pub fn decrypt(key: &LinkKey, jwe: &str, limits: &JweLimits) -> Result<Decrypted, ShlError> {
    let parts = parse(jwe, limits)?;
    let content_type =
        parts.header.cty.clone().ok_or_else(|| {
            ShlError::MalformedJwe("the header has no \"cty\" (content type)".into())
        })?;
    let mut sealed = parts.ciphertext;
    sealed.extend_from_slice(&parts.tag);
    let cipher = Aes256Gcm::new(key.bytes().into());
    let body = cipher
        .decrypt(
            Nonce::from_slice(&parts.iv),
            AeadPayload {
                msg: &sealed,
                aad: parts.header_b64.as_bytes(),
            },
        )
        .map_err(|_| ShlError::Decrypt)?;
    let compressed = parts.header.zip.is_some();
    let plaintext = if compressed {
        miniz_oxide::inflate::decompress_to_vec_with_limit(&body, limits.max_plaintext).map_err(
            |e| match e.status {
                miniz_oxide::inflate::TINFLStatus::HasMoreOutput => ShlError::TooLarge {
                    limit: limits.max_plaintext,
                    what: " once decompressed",
                },
                _ => ShlError::MalformedJwe("the compressed content is not valid DEFLATE".into()),
            },
        )?
    } else {
        if body.len() > limits.max_plaintext {
            return Err(ShlError::TooLarge {
                limit: limits.max_plaintext,
                what: "",
            });
        }
        body
    };
    Ok(Decrypted {
        content_type,
        compressed,
        plaintext,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn key() -> LinkKey {
        LinkKey::from_bytes([7; 32])
    }

    #[test]
    fn round_trip_with_and_without_deflate() {
        let text = br#"{"resourceType":"Bundle","type":"document"}"#.repeat(50);
        for c in [Compression::None, Compression::Deflate] {
            let jwe = encrypt(&key(), crate::FHIR_JSON, &text, c).unwrap();
            let d = decrypt(&key(), &jwe, &JweLimits::default()).unwrap();
            assert_eq!(d.plaintext, text);
            assert_eq!(d.content_type, crate::FHIR_JSON);
            assert_eq!(d.compressed, c == Compression::Deflate);
            let h = inspect(&jwe, &JweLimits::default()).unwrap();
            assert_eq!(h.alg, "dir");
            assert_eq!(h.enc, "A256GCM");
        }
    }

    #[test]
    fn fresh_iv_each_time() {
        let a = encrypt(&key(), crate::FHIR_JSON, b"{}", Compression::None).unwrap();
        let b = encrypt(&key(), crate::FHIR_JSON, b"{}", Compression::None).unwrap();
        assert_ne!(a.split('.').nth(2), b.split('.').nth(2));
    }

    #[test]
    fn wrong_key_or_altered_parts_refused() {
        let jwe = encrypt(&key(), crate::FHIR_JSON, b"{\"a\":1}", Compression::None).unwrap();
        let other = LinkKey::from_bytes([8; 32]);
        assert_eq!(
            decrypt(&other, &jwe, &JweLimits::default()),
            Err(ShlError::Decrypt)
        );
        let parts: Vec<&str> = jwe.split('.').collect();
        // A flipped tag.
        let mut tag = b64d(parts[4]).unwrap();
        tag[0] ^= 1;
        let bad = format!("{}..{}.{}.{}", parts[0], parts[2], parts[3], b64e(&tag));
        assert_eq!(
            decrypt(&key(), &bad, &JweLimits::default()),
            Err(ShlError::Decrypt)
        );
        // A header swapped for an equivalent one (the AAD changes).
        let h2 = b64e(br#"{"enc":"A256GCM","alg":"dir","cty":"application/fhir+json"}"#);
        let bad = format!("{h2}..{}.{}.{}", parts[2], parts[3], parts[4]);
        assert_eq!(
            decrypt(&key(), &bad, &JweLimits::default()),
            Err(ShlError::Decrypt)
        );
    }

    #[test]
    fn other_algorithms_and_framing_refused() {
        let parts = ["", "", "AAAAAAAAAAAAAAAA", "", "AAAAAAAAAAAAAAAAAAAAAA"];
        let with = |h: &str| {
            format!(
                "{}..{}.{}.{}",
                b64e(h.as_bytes()),
                parts[2],
                parts[3],
                parts[4]
            )
        };
        for h in [
            r#"{"alg":"A256KW","enc":"A256GCM","cty":"application/fhir+json"}"#,
            r#"{"alg":"dir","enc":"A128GCM","cty":"application/fhir+json"}"#,
            r#"{"alg":"none","enc":"A256GCM"}"#,
            r#"{"enc":"A256GCM"}"#,
        ] {
            assert!(
                matches!(
                    decrypt(&key(), &with(h), &JweLimits::default()),
                    Err(ShlError::UnsupportedAlgorithm(_))
                ),
                "{h}"
            );
        }
        for h in [
            r#"{"alg":"dir","enc":"A256GCM","zip":"GZIP","cty":"application/fhir+json"}"#,
            r#"{"alg":"dir","enc":"A256GCM","crit":["b64"],"cty":"application/fhir+json"}"#,
            r#"["alg","dir"]"#,
            r#"{"alg":"dir","enc":"A256GCM"}"#,
        ] {
            assert!(
                matches!(
                    decrypt(&key(), &with(h), &JweLimits::default()),
                    Err(ShlError::MalformedJwe(_))
                ),
                "{h}"
            );
        }
        let good = encrypt(&key(), crate::FHIR_JSON, b"{}", Compression::None).unwrap();
        let p: Vec<&str> = good.split('.').collect();
        for bad in [
            p[..4].join("."),
            format!("{}.{}", good, "x"),
            format!("{}.AAAA.{}.{}.{}", p[0], p[2], p[3], p[4]),
            format!("{}..{}.{}.{}", p[0], "AAAA", p[3], p[4]),
            format!("{}..{}.{}.{}", p[0], p[2], p[3], "AAAA"),
            format!("{}..{}.{}.{}", p[0], p[2], "***", p[4]),
            String::new(),
        ] {
            assert!(
                matches!(
                    decrypt(&key(), &bad, &JweLimits::default()),
                    Err(ShlError::MalformedJwe(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn size_and_zip_bomb_limits() {
        // 8 MiB of zeros deflates to a few KiB.
        let bomb = vec![0u8; 8 << 20];
        let jwe = encrypt(&key(), crate::FHIR_JSON, &bomb, Compression::Deflate).unwrap();
        assert!(jwe.len() < 64 << 10, "{}", jwe.len());
        let limits = JweLimits {
            max_jwe: 1 << 20,
            max_plaintext: 1 << 20,
        };
        assert!(matches!(
            decrypt(&key(), &jwe, &limits),
            Err(ShlError::TooLarge {
                what: " once decompressed",
                ..
            })
        ));
        let plain = encrypt(
            &key(),
            crate::FHIR_JSON,
            &vec![1u8; 2 << 20],
            Compression::None,
        )
        .unwrap();
        assert!(matches!(
            decrypt(&key(), &plain, &limits),
            Err(ShlError::TooLarge { .. })
        ));
        // Garbage that says it is compressed.
        let cipher = Aes256Gcm::new(key().bytes().into());
        let header =
            b64e(br#"{"alg":"dir","enc":"A256GCM","cty":"application/fhir+json","zip":"DEF"}"#);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&[0; 12]),
                AeadPayload {
                    msg: &[0xff; 40],
                    aad: header.as_bytes(),
                },
            )
            .unwrap();
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let jwe = format!("{header}..{}.{}.{}", b64e(&[0; 12]), b64e(ct), b64e(tag));
        assert!(matches!(
            decrypt(&key(), &jwe, &JweLimits::default()),
            Err(ShlError::MalformedJwe(_))
        ));
    }
}
