//! The link: a SMART Health Link payload, minified JSON, base64url-encoded
//! after `shlink:/`, optionally behind a viewer URL ending in `#`
//! (`https://viewer.example/#shlink:/…`: browsers never send the part
//! after `#` to a server, so the key stays out of server logs).
//!
//! The payload's rules, from the specification:
//! - `url` (required): the manifest URL, at most 128 characters; vault's
//!   carry a 256-bit random id;
//! - `key` (required): 43 base64url characters, 32 random bytes;
//! - `exp` (optional): expiry, Unix seconds, a hint for viewers (the host
//!   enforces its own);
//! - `flag` (optional): single-letter flags in alphabetical order, `L`
//!   (long-term: the manifest may change), `P` (a passcode is needed), `U`
//!   (`url` is the single encrypted file, fetched with `GET`); `U` SHALL
//!   NOT be combined with `P`; unknown letters are ignored when read;
//! - `label` (optional): at most 80 characters;
//! - `v` (optional): protocol version, 1 (vault writes it); a link of
//!   another version is refused.
//!
//! Receivers ignore properties they do not know; so does [`Payload::parse`].

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{LinkKey, ShlError};

/// The scheme prefix of a bare link.
pub const SHLINK_PREFIX: &str = "shlink:/";

/// The longest manifest URL allowed.
pub const MAX_URL_CHARS: usize = 128;

/// The longest label allowed, in characters.
pub const MAX_LABEL_CHARS: usize = 80;

/// The longest link text read (a viewer prefix included).
pub const MAX_LINK_LEN: usize = 8192;

/// The payload's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `L`: long-term use; the manifest's content may change.
    pub long_term: bool,
    /// `P`: the manifest request must carry a passcode.
    pub passcode: bool,
    /// `U`: `url` resolves to the single encrypted file (`GET`), no
    /// manifest.
    pub direct: bool,
}

impl Flags {
    /// The `flag` string, letters in alphabetical order (`None` when no
    /// flag is set); refuses `U` with `P`.
    pub fn encode(&self) -> Result<Option<String>, ShlError> {
        self.check()?;
        let mut s = String::new();
        if self.long_term {
            s.push('L');
        }
        if self.passcode {
            s.push('P');
        }
        if self.direct {
            s.push('U');
        }
        Ok((!s.is_empty()).then_some(s))
    }

    /// Reads a `flag` string: `L`, `P`, `U`; other letters are ignored (as
    /// the specification requires of receivers); `U` with `P` is refused.
    pub fn parse(s: &str) -> Result<Self, ShlError> {
        let mut f = Self::default();
        for c in s.chars() {
            match c {
                'L' => f.long_term = true,
                'P' => f.passcode = true,
                'U' => f.direct = true,
                _ => {}
            }
        }
        f.check()?;
        Ok(f)
    }

    fn check(&self) -> Result<(), ShlError> {
        if self.direct && self.passcode {
            return Err(ShlError::InvalidSettings(
                "flag U (a single file fetched directly) cannot be combined with P (passcode)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A SMART Health Link payload. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// The manifest URL (or, with flag `U`, the file's).
    pub url: String,
    /// The key every file of the link is encrypted with.
    pub key: LinkKey,
    /// Expiry, Unix seconds.
    pub exp: Option<u64>,
    /// Flags.
    pub flags: Flags,
    /// A short description for the receiver.
    pub label: Option<String>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("url", &self.url)
            .field("exp", &self.exp)
            .field("flags", &self.flags)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    url: &'a str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    v: u64,
}

#[derive(Deserialize)]
struct WireIn {
    url: Option<serde_json::Value>,
    key: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    flag: Option<serde_json::Value>,
    label: Option<serde_json::Value>,
    v: Option<serde_json::Value>,
}

/// Checks a manifest URL: http(s), at most [`MAX_URL_CHARS`], plain
/// `http` only on a loopback host (tests, a relay on this machine).
fn check_url(url: &str) -> Result<(), ShlError> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(ShlError::InvalidSettings(format!(
            "the manifest URL is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let parsed =
        url::Url::parse(url).map_err(|_| ShlError::MalformedLink("its url is not a URL".into()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        _ => Err(ShlError::InvalidSettings(
            "the manifest URL must use https (plain http only on this machine's loopback)".into(),
        )),
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

fn check_label(label: &str) -> Result<(), ShlError> {
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(ShlError::InvalidSettings(format!(
            "the label is longer than {MAX_LABEL_CHARS} characters"
        )));
    }
    Ok(())
}

impl Payload {
    /// Checks the payload against the specification's rules (URL, label,
    /// flags).
    pub fn check(&self) -> Result<(), ShlError> {
        check_url(&self.url)?;
        if let Some(l) = &self.label {
            check_label(l)?;
        }
        self.flags.check()
    }

    /// The minified JSON payload (`v` is written as 1). Holds the key.
    pub fn to_json(&self) -> Result<Zeroizing<String>, ShlError> {
        self.check()?;
        let key = self.key.to_base64url();
        let wire = Wire {
            url: &self.url,
            key: &key,
            exp: self.exp,
            flag: self.flags.encode()?,
            label: self.label.as_deref(),
            v: 1,
        };
        serde_json::to_string(&wire)
            .map(Zeroizing::new)
            .map_err(|e| ShlError::InvalidSettings(e.to_string()))
    }

    /// The bare link, `shlink:/` and the base64url of [`Payload::to_json`].
    pub fn to_shlink(&self) -> Result<Zeroizing<String>, ShlError> {
        let json = self.to_json()?;
        Ok(Zeroizing::new(format!(
            "{SHLINK_PREFIX}{}",
            crate::b64e(json.as_bytes())
        )))
    }

    /// The link behind a viewer: `viewer` (which must end in `#`) followed
    /// by the bare link.
    pub fn to_viewer_link(&self, viewer: &str) -> Result<Zeroizing<String>, ShlError> {
        if !viewer.ends_with('#') {
            return Err(ShlError::InvalidSettings(
                "a viewer URL must end with '#', so the link stays out of server logs".into(),
            ));
        }
        let bare = self.to_shlink()?;
        Ok(Zeroizing::new(format!("{viewer}{}", &*bare)))
    }

    /// Reads a link: bare (`shlink:/…`) or behind a viewer (`…#shlink:/…`),
    /// surrounding whitespace ignored. Refuses text that is not a link, a
    /// truncated or altered payload, a `v` other than 1, a key that is not
    /// 32 bytes, a URL or label breaking the rules, `U` with `P`.
    pub fn parse(link: &str) -> Result<Self, ShlError> {
        let link = link.trim();
        if link.len() > MAX_LINK_LEN {
            return Err(ShlError::MalformedLink(format!(
                "longer than {MAX_LINK_LEN} characters"
            )));
        }
        let bare = match link.find("#shlink:/") {
            Some(i) => link.get(i + 1..).unwrap_or(""),
            None => link,
        };
        let Some(encoded) = bare.strip_prefix(SHLINK_PREFIX) else {
            return Err(ShlError::MalformedLink(
                "it does not start with shlink:/".into(),
            ));
        };
        if encoded.is_empty() {
            return Err(ShlError::MalformedLink("nothing follows shlink:/".into()));
        }
        let json = Zeroizing::new(crate::b64d(encoded).ok_or_else(|| {
            ShlError::MalformedLink("the part after shlink:/ is not base64url (cut short?)".into())
        })?);
        let value: serde_json::Value = serde_json::from_slice(&json).map_err(|_| {
            ShlError::MalformedLink("the payload is not JSON (cut short or altered?)".into())
        })?;
        if !value.is_object() {
            return Err(ShlError::MalformedLink(
                "the payload is not a JSON object".into(),
            ));
        }
        let w: WireIn = serde_json::from_value(value)
            .map_err(|_| ShlError::MalformedLink("the payload is not a JSON object".into()))?;
        if let Some(v) = &w.v {
            match v.as_u64() {
                Some(1) => {}
                Some(n) => return Err(ShlError::UnsupportedVersion(n)),
                None => {
                    return Err(ShlError::MalformedLink(
                        "its \"v\" is not a whole number".into(),
                    ))
                }
            }
        }
        let url = match w.url {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(ShlError::MalformedLink("it has no \"url\" string".into())),
        };
        let key = match w.key {
            Some(serde_json::Value::String(s)) => LinkKey::from_base64url(&Zeroizing::new(s))?,
            _ => return Err(ShlError::BadKey),
        };
        let exp = match w.exp {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(parse_exp(&v)?),
        };
        let flags = match w.flag {
            None => Flags::default(),
            Some(serde_json::Value::String(s)) => Flags::parse(&s)?,
            Some(_) => {
                return Err(ShlError::MalformedLink(
                    "its \"flag\" is not a string".into(),
                ))
            }
        };
        let label = match w.label {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(_) => {
                return Err(ShlError::MalformedLink(
                    "its \"label\" is not a string".into(),
                ))
            }
        };
        let p = Self {
            url,
            key,
            exp,
            flags,
            label,
        };
        p.check()?;
        Ok(p)
    }

    /// Whether `exp` has passed at `now` (Unix seconds).
    pub fn expired_at(&self, now: u64) -> bool {
        self.exp.is_some_and(|e| e <= now)
    }
}

/// `exp`: a non-negative number of seconds (64-bit); fractions are cut.
fn parse_exp(v: &serde_json::Value) -> Result<u64, ShlError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && (0.0..1.8e19).contains(&f) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(f.trunc() as u64)
        }
        _ => Err(ShlError::MalformedLink(
            "its \"exp\" is not a time in seconds".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The specification's example link ("Example SMART Health Link
    /// Generation").
    const SPEC_LINK: &str = "https://viewer.example.org#shlink:/eyJ1cmwiOiJodHRwczovL2Voci5leGFtcGxlLm9yZy9xci9ZOXh3a1VkdG1OOXd3b0pvTjNmZkpJaFgyVUd2Q0wxSm5sUFZOTDNrRFdNL20iLCJmbGFnIjoiTFAiLCJrZXkiOiJyeFRnWWxPYUtKUEZ0Y0VkMHFjY2VOOHdFVTRwOTRTcUF3SVdRZTZ1WDdRIiwibGFiZWwiOiJCYWNrLXRvLXNjaG9vbCBpbW11bml6YXRpb25zIGZvciBPbGl2ZXIgQnJvd24ifQ";

    #[test]
    fn reads_the_specification_example() {
        let p = Payload::parse(SPEC_LINK).unwrap();
        assert_eq!(
            p.url,
            "https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m"
        );
        assert_eq!(
            &*p.key.to_base64url(),
            "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q"
        );
        assert_eq!(
            p.flags,
            Flags {
                long_term: true,
                passcode: true,
                direct: false
            }
        );
        assert_eq!(
            p.label.as_deref(),
            Some("Back-to-school immunizations for Oliver Brown")
        );
        assert_eq!(p.exp, None);
        // The bare form reads the same.
        let bare = &SPEC_LINK[SPEC_LINK.find('#').unwrap() + 1..];
        assert_eq!(Payload::parse(bare).unwrap(), p);
        // Written again (vault writes v: 1) and read back.
        let again = Payload::parse(&p.to_viewer_link("https://v.example/#").unwrap()).unwrap();
        assert_eq!(again, p);
        assert!(!format!("{p:?}").contains("rxTg"));
    }

    #[test]
    fn writes_minified_json_in_order() {
        let p = Payload {
            url: "https://relay.example/v1/shl/abc".into(),
            key: LinkKey::from_bytes([0; 32]),
            exp: Some(1_900_000_000),
            flags: Flags {
                long_term: false,
                passcode: true,
                direct: false,
            },
            label: Some("Summary".into()),
        };
        assert_eq!(
            &*p.to_json().unwrap(),
            r#"{"url":"https://relay.example/v1/shl/abc","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","exp":1900000000,"flag":"P","label":"Summary","v":1}"#
        );
        assert!(p.to_shlink().unwrap().starts_with("shlink:/eyJ1cmwi"));
        assert!(p.to_viewer_link("https://v.example/").is_err());
    }

    #[test]
    fn refuses_bad_links() {
        let p = Payload::parse(SPEC_LINK).unwrap();
        let good = p.to_shlink().unwrap();
        let enc = |json: &str| format!("shlink:/{}", crate::b64e(json.as_bytes()));
        let key = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q";
        let url = "https://ehr.example.org/qr/x";
        let cases: Vec<(String, &str)> = vec![
            (good[..good.len() - 7].to_string(), "truncated"),
            (good[..good.len() - 1].to_string(), "truncated by one"),
            ("shlink:/".into(), "empty"),
            ("shlink:/!!!".into(), "not base64url"),
            ("https://example.org/#x".into(), "no shlink"),
            (enc("[1,2]"), "array"),
            (
                enc(&format!(r#"{{"url":"{url}","key":"{key}","v":2}}"#)),
                "v 2",
            ),
            (
                enc(&format!(r#"{{"url":"{url}","key":"{key}","flag":"PU"}}"#)),
                "P with U",
            ),
            (
                enc(&format!(r#"{{"url":"{url}","key":"short"}}"#)),
                "short key",
            ),
            (enc(&format!(r#"{{"url":"{url}"}}"#)), "no key"),
            (enc(&format!(r#"{{"key":"{key}"}}"#)), "no url"),
            (
                enc(&format!(r#"{{"url":"ftp://x/y","key":"{key}"}}"#)),
                "ftp",
            ),
            (
                enc(&format!(
                    r#"{{"url":"http://example.org/y","key":"{key}"}}"#
                )),
                "http off loopback",
            ),
            (
                enc(&format!(
                    r#"{{"url":"https://e.org/{}","key":"{key}"}}"#,
                    "a".repeat(120)
                )),
                "long url",
            ),
            (
                enc(&format!(
                    r#"{{"url":"{url}","key":"{key}","label":"{}"}}"#,
                    "é".repeat(81)
                )),
                "long label",
            ),
            (
                enc(&format!(r#"{{"url":"{url}","key":"{key}","exp":-5}}"#)),
                "negative exp",
            ),
            (
                enc(&format!(r#"{{"url":"{url}","key":"{key}","exp":"soon"}}"#)),
                "string exp",
            ),
        ];
        for (link, what) in cases {
            assert!(Payload::parse(&link).is_err(), "{what}: accepted");
        }
        // Unknown properties and flags are ignored, as receivers must.
        let ok = enc(&format!(
            r#"{{"url":"{url}","key":"{key}","flag":"LX","_x":1,"exp":1.5e9}}"#
        ));
        let p = Payload::parse(&ok).unwrap();
        assert!(p.flags.long_term && !p.flags.passcode);
        assert_eq!(p.exp, Some(1_500_000_000));
        assert!(Payload::parse(&enc(&format!(
            r#"{{"url":"http://127.0.0.1:8787/v1/shl/x","key":"{key}"}}"#
        )))
        .is_ok());
    }
}
