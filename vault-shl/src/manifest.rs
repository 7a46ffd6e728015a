//! The manifest request a viewer sends (`POST` to the payload's `url`) and
//! the manifest it gets back.
//!
//! Request: `recipient` (required, shown to the sharer), `passcode`
//! (required with flag `P`), `embeddedLengthMax` (the longest `embedded`
//! JWE the viewer wants inline). Answer: `{"files": [{"contentType",
//! "embedded" | "location", …}]}`; a wrong passcode is `401` with
//! `remainingAttempts`; an inactive link (expired, revoked, disabled) is
//! `404`. A `location` must be dereferenced within an hour.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ShlError;

/// The most files a manifest may list (vault's list one to a few).
pub const MAX_FILES: usize = 256;

/// The longest `recipient` a host keeps (longer ones are cut).
pub const MAX_RECIPIENT_CHARS: usize = 256;

/// A manifest request. `Debug` leaves the passcode out.
#[derive(Clone)]
pub struct ManifestRequest {
    /// Who is asking, for the sharer's access record.
    pub recipient: String,
    /// The passcode, with flag `P`.
    pub passcode: Option<Zeroizing<String>>,
    /// The longest `embedded` value wanted.
    pub embedded_length_max: Option<u64>,
}

#[derive(Serialize)]
struct RequestWire<'a> {
    recipient: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    passcode: Option<&'a str>,
    #[serde(rename = "embeddedLengthMax", skip_serializing_if = "Option::is_none")]
    embedded_length_max: Option<u64>,
}

impl ManifestRequest {
    /// The request body (JSON; holds the passcode, zeroized on drop).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let wire = RequestWire {
            recipient: &self.recipient,
            passcode: self.passcode.as_deref().map(|s| s.as_str()),
            embedded_length_max: self.embedded_length_max,
        };
        // Serialising strings and numbers cannot fail.
        Zeroizing::new(serde_json::to_vec(&wire).unwrap_or_default())
    }
}

impl std::fmt::Debug for ManifestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestRequest")
            .field("recipient", &self.recipient)
            .field("passcode", &self.passcode.as_ref().map(|_| "<secret>"))
            .field("embedded_length_max", &self.embedded_length_max)
            .finish()
    }
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// One of [`crate::CONTENT_TYPES`]; the JWE's `cty` must equal it.
    #[serde(rename = "contentType")]
    pub content_type: String,
    /// The JWE itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<String>,
    /// Where to `GET` the JWE (short-lived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the file last changed (ISO 8601).
    #[serde(rename = "lastUpdated", skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// `finalized`, `can-change` or `no-longer-valid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The FHIR version of FHIR content.
    #[serde(rename = "fhirVersion", skip_serializing_if = "Option::is_none")]
    pub fhir_version: Option<String>,
}

/// A manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The files, in order.
    pub files: Vec<ManifestFile>,
}

/// Whether two URLs have the same origin (scheme, host, port).
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Manifest {
    /// Reads a manifest returned for `manifest_url`: a JSON object with a
    /// `files` array of at most [`MAX_FILES`], each with a known
    /// `contentType` and exactly one of `embedded` (a string) and
    /// `location` (a URL on the manifest's own origin: vault's viewer
    /// refuses to be sent elsewhere, so a tampered manifest cannot point
    /// it at another host). Unknown properties are ignored.
    pub fn parse(bytes: &[u8], manifest_url: &str) -> Result<Self, ShlError> {
        let bad = |m: &str| ShlError::MalformedManifest(m.into());
        let base = url::Url::parse(manifest_url).map_err(|_| bad("the link's url is not a URL"))?;
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| bad("the answer is not JSON"))?;
        let files = value
            .as_object()
            .and_then(|o| o.get("files"))
            .and_then(|f| f.as_array())
            .ok_or_else(|| bad("it has no \"files\" array"))?;
        if files.len() > MAX_FILES {
            return Err(bad("it lists too many files"));
        }
        let mut out = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let file: ManifestFile = serde_json::from_value(f.clone()).map_err(|_| {
                ShlError::MalformedManifest(format!("file {i} is not a file entry"))
            })?;
            if !crate::is_content_type(&file.content_type) {
                return Err(ShlError::MalformedManifest(format!(
                    "file {i} has an unknown content type"
                )));
            }
            match (&file.embedded, &file.location) {
                (Some(_), None) => {}
                (None, Some(loc)) => {
                    let u = url::Url::parse(loc).map_err(|_| {
                        ShlError::MalformedManifest(format!("file {i}'s location is not a URL"))
                    })?;
                    if !same_origin(&u, &base) {
                        return Err(ShlError::MalformedManifest(format!(
                            "file {i}'s location is on another host than the link ({}); refused",
                            u.host_str().unwrap_or("no host")
                        )));
                    }
                }
                _ => {
                    return Err(ShlError::MalformedManifest(format!(
                        "file {i} must have exactly one of \"embedded\" and \"location\""
                    )))
                }
            }
            out.push(file);
        }
        Ok(Self { files: out })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const URL: &str = "https://relay.example/v1/shl/abc";

    #[test]
    fn reads_embedded_and_same_origin_locations() {
        let m = Manifest::parse(
            br#"{"files":[{"contentType":"application/fhir+json","embedded":"a.b.c.d.e"},
            {"contentType":"application/fhir+json","location":"https://relay.example/v1/shl/abc/file/x","extra":1}],"list":{}}"#,
            URL,
        )
        .unwrap();
        assert_eq!(m.files.len(), 2);
    }

    #[test]
    fn refuses_other_hosts_and_bad_entries() {
        for body in [
            r#"{"files":[{"contentType":"application/fhir+json","location":"https://evil.example/f"}]}"#,
            r#"{"files":[{"contentType":"application/fhir+json","location":"http://relay.example/f"}]}"#,
            r#"{"files":[{"contentType":"application/fhir+json","location":"https://relay.example:444/f"}]}"#,
            r#"{"files":[{"contentType":"text/html","embedded":"x"}]}"#,
            r#"{"files":[{"contentType":"application/fhir+json"}]}"#,
            r#"{"files":[{"contentType":"application/fhir+json","embedded":"x","location":"https://relay.example/f"}]}"#,
            r#"{"files":{}}"#,
            r#"[]"#,
            r#"nope"#,
        ] {
            assert!(Manifest::parse(body.as_bytes(), URL).is_err(), "{body}");
        }
    }

    #[test]
    fn request_json_and_debug() {
        let r = ManifestRequest {
            recipient: "Dr Who".into(),
            passcode: Some(Zeroizing::new("1234".into())),
            embedded_length_max: Some(10),
        };
        let j = String::from_utf8(r.to_json().to_vec()).unwrap();
        assert_eq!(
            j,
            r#"{"recipient":"Dr Who","passcode":"1234","embeddedLengthMax":10}"#
        );
        assert!(!format!("{r:?}").contains("1234"));
    }
}
