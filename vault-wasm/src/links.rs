//! SMART Health Links in the browser, both ends, presenting
//! `vault_client::links` (which encrypts, stores and resolves; decision
//! 49):
//!
//! - the patient's side ([`create`], [`list`], [`revoke`], [`access_log`]):
//!   what a link carries is chosen and built by vault-client, as for
//!   `vault link create`; the link's key exists only in the returned link;
//! - the viewer's side ([`describe`], [`open`]): no account; the link is
//!   parsed, its files fetched from the link's own origin, decrypted and
//!   checked here, and shown as a health overview with every resource.

use serde::Deserialize;
use serde_json::{json, Value};
use vault_client::links::{self, LinkOptions, ShareFile};
use vault_client::sync;
use vault_core::{CollectionId, RecordId, VaultId};
use vault_fhir as fhir;
use vault_shl::Payload;
use zeroize::Zeroizing;

use crate::failure::{Failure, Result};
use crate::records::open_readable;
use crate::unlocked::{collection_id, record_id, Inner};

/// What the page asks a link to carry, and its rules (JSON from the page).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkRequest {
    /// `summary` (a patient summary of the whole vault), `collection` (its
    /// FHIR records as they are) or `records` (chosen FHIR records).
    what: String,
    /// The collection, for `collection`.
    #[serde(default)]
    collection: Option<String>,
    /// The records, for `records`.
    #[serde(default)]
    records: Vec<String>,
    /// Shown to the recipient (at most 80 characters, in the link only).
    #[serde(default)]
    label: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<u64>,
    /// Wrong passcodes allowed (the relay's default when absent).
    #[serde(default)]
    max_attempts: Option<u32>,
    /// Flag `L`.
    #[serde(default)]
    long_term: bool,
    /// Flag `U` (no passcode, one file).
    #[serde(default)]
    direct: bool,
}

/// The QR code of `link` as an SVG document (error-correction level M,
/// [`links::qr_code`]), for an `<img>` on the page.
pub fn qr_svg(link: &str) -> Result<String> {
    use qrcode::render::svg;
    Ok(links::qr_code(link)?
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

/// Makes a link in `vault` as the page asked (`passcode` adds flag `P`):
/// JSON `{link, shlink, handle, qrSvg, resources, encryptedBytes, what}`.
/// The records are opened and authenticated here; only the link's
/// encrypted file reaches the relay.
pub async fn create(
    s: &mut Inner,
    vault: &VaultId,
    req: LinkRequest,
    passcode: Option<Zeroizing<String>>,
) -> Result<Value> {
    if req.direct && passcode.is_some() {
        return Err(Failure::input(
            "a direct-file link (flag U) cannot have a passcode: choose one or the other",
        ));
    }
    let collection: Option<CollectionId> = match req.what.as_str() {
        "collection" => {
            Some(collection_id(req.collection.as_deref().ok_or_else(
                || Failure::input("choose the collection to share"),
            )?)?)
        }
        "summary" | "records" => None,
        other => {
            return Err(Failure::input(format!(
                "a link shares a summary, a collection or chosen records, not {other:?}"
            )))
        }
    };
    let chosen: Vec<RecordId> = req
        .records
        .iter()
        .map(|r| record_id(r))
        .collect::<Result<_>>()?;
    if req.what == "records" && chosen.is_empty() {
        return Err(Failure::input("choose at least one record to share"));
    }
    s.publish().await?;
    let state = sync::pull(&mut s.store, &s.client, vault).await?;
    let listing = open_readable(s, &state, collection.as_ref()).await?;
    let resources = if req.what == "records" {
        links::chosen_listed(&listing, &chosen)?
    } else {
        links::listed_resources(&listing)?
    };
    let count = resources.len();
    let now = s.client.now();
    let bundle = links::bundle(&resources, req.what == "summary", now)?;
    let file = ShareFile::fhir(&bundle)?;
    let options = LinkOptions {
        passcode,
        max_attempts: req.max_attempts,
        expires_at: req.expires_at,
        label: req.label.filter(|l| !l.trim().is_empty()),
        long_term: req.long_term,
        direct: req.direct,
    };
    let created = links::create(&s.client, &[file], &options).await?;
    Ok(json!({
        "link": created.viewer_link.as_str(),
        "shlink": created.shlink.as_str(),
        "handle": created.handle,
        "qrSvg": qr_svg(&created.viewer_link)?,
        "resources": count,
        "encryptedBytes": created.stored_bytes,
        "what": req.what,
    }))
}

/// This identity's links, newest first (JSON list of
/// [`vault_client::links::LinkInfo`], its field names as the relay's).
pub async fn list(s: &mut Inner) -> Result<Value> {
    s.publish().await?;
    let all = s.client.links().await?;
    serde_json::to_value(&all).map_err(|e| Failure::new("internal", e.to_string()))
}

/// Revokes link `handle`: it answers 404 from then on, its file is deleted
/// at the relay.
pub async fn revoke(s: &mut Inner, handle: &str) -> Result<()> {
    s.publish().await?;
    Ok(s.client.revoke_link(handle).await?)
}

/// Who fetched link `handle` (JSON list of `{at, recipient, outcome}`,
/// oldest first; `recipient` is the requester's own word, cleaned).
pub async fn access_log(s: &mut Inner, handle: &str) -> Result<Value> {
    s.publish().await?;
    let events = s.client.link_access_log(handle).await?;
    Ok(Value::Array(
        events
            .into_iter()
            .map(|e| json!({"at": e.at, "recipient": fhir::clean(&e.recipient), "outcome": e.outcome}))
            .collect(),
    ))
}

/// What a link says about itself before it is opened (no request): JSON
/// `{label, expiresAt, expired, passcode, longTerm, direct, origin}`. A
/// malformed, truncated or altered link is refused (`invalid_link`).
pub fn describe(link: &str, now: u64) -> Result<Value> {
    let payload = Payload::parse(link).map_err(vault_client::ClientError::from)?;
    let origin = url::Url::parse(&payload.url)
        .map(|u| u.origin().ascii_serialization())
        .map_err(|_| Failure::new("invalid_link", "the link's address is not a URL"))?;
    Ok(json!({
        "label": payload.label.as_deref().map(fhir::clean),
        "expiresAt": payload.exp,
        "expired": payload.expired_at(now),
        "passcode": payload.flags.passcode,
        "longTerm": payload.flags.long_term,
        "direct": payload.flags.direct,
        "origin": origin,
    }))
}

/// One resource of a shared bundle as the viewer lists it.
fn resource_view(key: &str, r: &Value) -> Value {
    json!({
        "key": key,
        "resourceType": r.get("resourceType").and_then(Value::as_str).map(fhir::clean),
        "title": fhir::clean(&fhir::title(r)),
        "date": fhir::effective_at(r),
        "summary": fhir::summary(r)
            .into_iter()
            .map(|(k, v)| json!([fhir::clean(&k), fhir::clean(&v)]))
            .collect::<Vec<_>>(),
    })
}

/// The resources of a FHIR file: a Bundle's entries (or the one resource),
/// each keyed `Type/id` (or `Type#n` without an id).
fn resources_of(file: &Value) -> Vec<(String, &Value)> {
    let list: Vec<&Value> = match file.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => file
            .get("entry")
            .and_then(Value::as_array)
            .map(|e| e.iter().filter_map(|e| e.get("resource")).collect())
            .unwrap_or_default(),
        Some(_) => vec![file],
        None => Vec::new(),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let ty = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
            let key = match r.get("id").and_then(Value::as_str) {
                Some(id) => format!("{ty}/{id}"),
                None => format!("{ty}#{i}"),
            };
            (key, r)
        })
        .collect()
}

/// Opens `link` as `recipient` (with `passcode` for flag `P`) and shows
/// what it shares: JSON `{label, expiresAt, files: [{contentType, text,
/// bundleType, resources, health}]}`, `health` the overview
/// ([`fhir::health::overview`]) of a FHIR file's resources. Refusals keep
/// their codes: `wrong_passcode` (with the attempts left), `link_not_found`,
/// `invalid_link`.
pub async fn open(
    link: &str,
    recipient: &str,
    passcode: Option<Zeroizing<String>>,
    now: u64,
) -> Result<Value> {
    let resolved = links::resolve(link, recipient, passcode, now).await?;
    let mut files = Vec::with_capacity(resolved.files.len());
    for f in &resolved.files {
        let text = String::from_utf8_lossy(&f.plaintext).into_owned();
        let parsed: Option<Value> = if f.content_type == vault_shl::FHIR_JSON {
            Some(
                serde_json::from_str(&text)
                    .map_err(|_| Failure::new("invalid_fhir", "a shared FHIR file is not JSON"))?,
            )
        } else {
            None
        };
        let (resources, health, bundle_type) = match &parsed {
            Some(v) => {
                let all = resources_of(v);
                let health = fhir::health::overview(all.iter().map(|(k, r)| (k.as_str(), *r)));
                let views: Vec<Value> = all.iter().map(|(k, r)| resource_view(k, r)).collect();
                (
                    views,
                    health,
                    v.get("type").and_then(Value::as_str).map(fhir::clean),
                )
            }
            None => (Vec::new(), Value::Null, None),
        };
        files.push(json!({
            "contentType": f.content_type,
            "text": text,
            "bundleType": bundle_type,
            "resources": resources,
            "health": health,
        }));
    }
    Ok(json!({
        "label": resolved.payload.label.as_deref().map(fhir::clean),
        "expiresAt": resolved.payload.exp,
        "files": files,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_listed_by_resource_with_its_overview() {
        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Condition", "id": "c1",
              "clinicalStatus": {"coding": [{"code": "active"}]},
              "code": {"text": "Asthma"}}},
            {"resource": {"resourceType": "Observation"}},
        ]});
        let all = resources_of(&bundle);
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Condition/c1", "Observation#1"]);
        let view = resource_view(&all[0].0, all[0].1);
        assert_eq!(view["resourceType"], "Condition");
        let health = fhir::health::overview(all.iter().map(|(k, r)| (k.as_str(), *r)));
        assert_eq!(health["conditions"][0]["record"], "Condition/c1");
        // One resource alone is listed too; anything else is nothing.
        assert_eq!(
            resources_of(&json!({"resourceType": "Patient", "id": "p"})).len(),
            1
        );
        assert!(resources_of(&json!([1, 2])).is_empty());
    }

    #[test]
    fn links_are_described_without_a_request_and_damage_is_refused() {
        let payload = Payload {
            url: "https://relay.example/v1/shl/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            key: vault_shl::LinkKey::generate().unwrap_or_else(|e| unreachable!("{e}")),
            exp: Some(1_000),
            flags: vault_shl::Flags {
                long_term: false,
                passcode: true,
                direct: false,
            },
            label: Some("My summary".into()),
        };
        let link = payload
            .to_viewer_link("https://relay.example/#")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let d = describe(&link, 999).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(d["label"], "My summary");
        assert_eq!(d["passcode"], true);
        assert_eq!(d["expired"], false);
        assert_eq!(d["origin"], "https://relay.example");
        assert_eq!(
            describe(&link, 1_000).map(|d| d["expired"].clone()).ok(),
            Some(json!(true))
        );
        let truncated = link.get(..link.len() - 10).unwrap_or("");
        assert!(describe(truncated, 0).is_err_and(|e| e.code == "invalid_link"));
        assert!(describe("https://relay.example/", 0).is_err_and(|e| e.code == "invalid_link"));
        let svg = qr_svg(&link).unwrap_or_default();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    }
}
