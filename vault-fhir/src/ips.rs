//! A patient summary shaped as an HL7 International Patient Summary (IPS)
//! document: a FHIR R4 `document` Bundle whose first entry is a
//! Composition (LOINC 60591-5, "Patient summary Document"), then the
//! Patient, then the resources its sections reference. It is what a
//! SMART Health Link hands to an emergency department or a new GP.
//!
//! Sections, with IPS's LOINC codes; the first three are always present
//! (IPS requires them; an empty one says "No information" with
//! `emptyReason` `unavailable`), the others only when the data has
//! something for them:
//! - **Problems** (11450-4): current Conditions, the rule of
//!   [`crate::health::is_current_condition`] (clinical status active,
//!   recurrence or relapse or absent; no abatement; not refuted or entered
//!   in error);
//! - **Medications** (10160-0): current MedicationRequests and
//!   MedicationStatements ([`crate::health::is_current_medication`]:
//!   status active, or intended for a statement), with the Medication
//!   resources they reference;
//! - **Allergies and intolerances** (48765-2): current AllergyIntolerances
//!   ([`crate::health::is_current_allergy`]: clinical status active or
//!   absent; not refuted or entered in error);
//! - **Immunizations** (11369-6): completed Immunizations, newest first, at
//!   most [`MAX_IMMUNIZATIONS`];
//! - **Results** (30954-2): for each laboratory Observation code, its
//!   newest Observation (status final, amended, corrected or preliminary),
//!   newest first, at most [`MAX_RESULTS`] codes;
//! - **Procedures** (47519-4): completed Procedures, newest first, at most
//!   [`MAX_PROCEDURES`].
//!
//! References are kept only when they resolve inside the document: an
//! included resource's reference to something not included (an Encounter,
//! a Practitioner) keeps its `display` text and loses its `reference`, so
//! the document is self-contained. Every entry's `fullUrl` is
//! `urn:uuid:<id>` when the id is a UUID (as Synthea's are, so their
//! `urn:uuid:` references resolve), else `<Type>/<id>`.
//!
//! Untrusted input: malformed resources are skipped; narrative text is
//! escaped XHTML; the output is bounded.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::health::{is_current_allergy, is_current_condition, is_current_medication};
use crate::{effective_at, format_date, items, str_field, title};

/// Most immunizations in the summary.
pub const MAX_IMMUNIZATIONS: usize = 50;
/// Most result codes in the summary.
pub const MAX_RESULTS: usize = 50;
/// Most procedures in the summary.
pub const MAX_PROCEDURES: usize = 50;
/// Most entries in one of the always-present sections.
pub const MAX_SECTION: usize = 200;

/// LOINC code of the IPS document type.
pub const IPS_DOCUMENT: &str = "60591-5";

/// One section: LOINC code, display, title.
struct SectionKind {
    code: &'static str,
    display: &'static str,
    title: &'static str,
    required: bool,
}

const PROBLEMS: SectionKind = SectionKind {
    code: "11450-4",
    display: "Problem list - Reported",
    title: "Problems",
    required: true,
};
const MEDICATIONS: SectionKind = SectionKind {
    code: "10160-0",
    display: "History of Medication use Narrative",
    title: "Medications",
    required: true,
};
const ALLERGIES: SectionKind = SectionKind {
    code: "48765-2",
    display: "Allergies and adverse reactions Document",
    title: "Allergies and intolerances",
    required: true,
};
const IMMUNIZATIONS: SectionKind = SectionKind {
    code: "11369-6",
    display: "History of Immunization Narrative",
    title: "Immunizations",
    required: false,
};
const RESULTS: SectionKind = SectionKind {
    code: "30954-2",
    display: "Relevant diagnostic tests/laboratory data Narrative",
    title: "Results",
    required: false,
};
const PROCEDURES: SectionKind = SectionKind {
    code: "47519-4",
    display: "History of Procedures Document",
    title: "Procedures",
    required: false,
};

/// Why no summary could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryError {
    /// No Patient resource among the records.
    NoPatient,
    /// Records of more than one patient.
    SeveralPatients,
}

impl std::fmt::Display for SummaryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoPatient => f.write_str(
                "the records hold no Patient resource: import the patient's FHIR bundle (with its Patient) first",
            ),
            Self::SeveralPatients => f.write_str(
                "the records hold more than one Patient; a summary is about one patient: choose that patient's vault",
            ),
        }
    }
}

impl std::error::Error for SummaryError {}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The `fullUrl` of a resource in a bundle vault makes.
pub fn full_url(resource: &Value) -> Option<String> {
    let rt = str_field(resource, "resourceType")?;
    let id = str_field(resource, "id")?;
    if !crate::is_fhir_id(id) {
        return None;
    }
    Some(if is_uuid(id) {
        format!("urn:uuid:{id}")
    } else {
        format!("{rt}/{id}")
    })
}

/// Unix seconds as an RFC 3339 instant (UTC, seconds).
pub fn instant(t: i64) -> String {
    let day = format_date(t);
    let secs = t.rem_euclid(86_400);
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::clean(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn newest_first(list: &mut [&Value]) {
    list.sort_by_key(|r| std::cmp::Reverse(effective_at(r).unwrap_or(i64::MIN)));
}

fn is_lab(r: &Value) -> bool {
    items(r, "category")
        .any(|c| items(c, "coding").any(|c| str_field(c, "code") == Some("laboratory")))
}

fn first_code(r: &Value) -> Option<String> {
    let c = r.get("code")?;
    items(c, "coding")
        .find_map(|c| {
            Some(format!(
                "{}|{}",
                str_field(c, "system").unwrap_or(""),
                str_field(c, "code")?
            ))
        })
        .or_else(|| str_field(c, "text").map(str::to_owned))
}

/// Keeps only references that resolve inside the document (see the module
/// documentation).
fn localize(v: &mut Value, present: &BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            let dangling =
                matches!(map.get("reference"), Some(Value::String(r)) if !present.contains(r));
            if dangling {
                map.remove("reference");
                if !map.contains_key("display") {
                    map.insert("display".into(), json!("not included in this summary"));
                }
            }
            for (_, child) in map.iter_mut() {
                localize(child, present);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| localize(i, present)),
        _ => {}
    }
}

/// What a summary is built from and stamped with.
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// When it is made, Unix seconds (the Composition's and Bundle's date).
    pub now: i64,
    /// A fresh UUID for the document (the Bundle's identifier; the
    /// Composition's id is derived from it).
    pub document_uuid: String,
}

/// Builds the patient summary from the patient's FHIR resources (see the
/// module documentation for the rules). Fails without exactly one Patient.
pub fn patient_summary(
    resources: &[Value],
    options: &SummaryOptions,
) -> Result<Value, SummaryError> {
    let mut patients: Vec<&Value> = resources
        .iter()
        .filter(|r| str_field(r, "resourceType") == Some("Patient") && full_url(r).is_some())
        .collect();
    patients.dedup_by_key(|p| str_field(p, "id"));
    let patient = match patients.as_slice() {
        [] => return Err(SummaryError::NoPatient),
        [one] => *one,
        _ => return Err(SummaryError::SeveralPatients),
    };
    let patient_url = full_url(patient).ok_or(SummaryError::NoPatient)?;
    let usable = |r: &&Value| full_url(r).is_some();
    let of_type = |t: &str| -> Vec<&Value> {
        resources
            .iter()
            .filter(|r| str_field(r, "resourceType") == Some(t))
            .filter(usable)
            .collect()
    };
    let mut problems: Vec<&Value> = of_type("Condition")
        .into_iter()
        .filter(|r| is_current_condition(r))
        .collect();
    newest_first(&mut problems);
    problems.truncate(MAX_SECTION);
    let mut meds: Vec<&Value> = resources
        .iter()
        .filter(usable)
        .filter(|r| is_current_medication(r))
        .collect();
    newest_first(&mut meds);
    meds.truncate(MAX_SECTION);
    let mut allergies: Vec<&Value> = of_type("AllergyIntolerance")
        .into_iter()
        .filter(|r| is_current_allergy(r))
        .collect();
    newest_first(&mut allergies);
    allergies.truncate(MAX_SECTION);
    let mut immunizations: Vec<&Value> = of_type("Immunization")
        .into_iter()
        .filter(|r| str_field(r, "status") == Some("completed"))
        .collect();
    newest_first(&mut immunizations);
    immunizations.truncate(MAX_IMMUNIZATIONS);
    let mut labs: Vec<&Value> = of_type("Observation")
        .into_iter()
        .filter(|r| is_lab(r))
        .filter(|r| {
            matches!(
                str_field(r, "status"),
                Some("final" | "amended" | "corrected" | "preliminary")
            )
        })
        .collect();
    newest_first(&mut labs);
    let mut seen = BTreeSet::new();
    let mut results: Vec<&Value> = labs
        .into_iter()
        .filter(|r| first_code(r).is_some_and(|c| seen.insert(c)))
        .collect();
    results.truncate(MAX_RESULTS);
    let mut procedures: Vec<&Value> = of_type("Procedure")
        .into_iter()
        .filter(|r| str_field(r, "status") == Some("completed"))
        .collect();
    newest_first(&mut procedures);
    procedures.truncate(MAX_PROCEDURES);

    // Medication resources the medications reference.
    let medications_by_url: BTreeMap<String, &Value> = of_type("Medication")
        .into_iter()
        .filter_map(|m| Some((full_url(m)?, m)))
        .collect();
    let mut referenced_meds: Vec<&Value> = Vec::new();
    for m in &meds {
        if let Some(r) = m
            .get("medicationReference")
            .and_then(|r| str_field(r, "reference"))
        {
            if let Some(med) = medications_by_url.get(r) {
                if !referenced_meds.iter().any(|x| std::ptr::eq(*x, *med)) {
                    referenced_meds.push(med);
                }
            }
        }
    }

    let sections: [(&SectionKind, &Vec<&Value>); 6] = [
        (&PROBLEMS, &problems),
        (&MEDICATIONS, &meds),
        (&ALLERGIES, &allergies),
        (&IMMUNIZATIONS, &immunizations),
        (&RESULTS, &results),
        (&PROCEDURES, &procedures),
    ];
    let mut included: Vec<&Value> = vec![patient];
    for (_, list) in &sections {
        for r in list.iter() {
            if !included.iter().any(|x| std::ptr::eq(*x, *r)) {
                included.push(r);
            }
        }
    }
    included.extend(referenced_meds);
    let composition_id = format!("{}-c", options.document_uuid)
        .chars()
        .take(64)
        .collect::<String>();
    let composition_url = format!("Composition/{composition_id}");
    let mut present: BTreeSet<String> = included.iter().filter_map(|r| full_url(r)).collect();
    present.insert(composition_url.clone());

    let mut section_json = Vec::new();
    for (kind, list) in sections {
        if list.is_empty() && !kind.required {
            continue;
        }
        let mut s = Map::new();
        s.insert("title".into(), json!(kind.title));
        s.insert(
            "code".into(),
            json!({"coding": [{"system": "http://loinc.org", "code": kind.code, "display": kind.display}]}),
        );
        let div = if list.is_empty() {
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">No information</div>".to_string()
        } else {
            let lis: String = list
                .iter()
                .map(|r| {
                    let date = effective_at(r)
                        .map(|t| format!(" ({})", format_date(t)))
                        .unwrap_or_default();
                    format!("<li>{}{}</li>", escape(&title(r)), date)
                })
                .collect();
            format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><ul>{lis}</ul></div>")
        };
        s.insert("text".into(), json!({"status": "generated", "div": div}));
        if list.is_empty() {
            s.insert(
                "emptyReason".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable", "display": "Unavailable"}]}),
            );
        } else {
            s.insert(
                "entry".into(),
                Value::Array(
                    list.iter()
                        .filter_map(|r| full_url(r))
                        .map(|u| json!({"reference": u}))
                        .collect(),
                ),
            );
        }
        section_json.push(Value::Object(s));
    }
    let date = instant(options.now);
    let composition = json!({
        "resourceType": "Composition",
        "id": composition_id,
        "status": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": IPS_DOCUMENT, "display": "Patient summary Document"}]},
        "subject": {"reference": patient_url},
        "date": date,
        "author": [{"reference": patient_url}],
        "title": format!("Patient summary of {}", title(patient)),
        "section": section_json,
    });
    let mut entries = vec![json!({"fullUrl": composition_url, "resource": composition})];
    for r in included {
        let mut r = r.clone();
        localize(&mut r, &present);
        if let Some(url) = full_url(&r) {
            entries.push(json!({"fullUrl": url, "resource": r}));
        }
    }
    Ok(json!({
        "resourceType": "Bundle",
        "id": options.document_uuid,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", options.document_uuid)},
        "type": "document",
        "timestamp": date,
        "entry": entries,
    }))
}

/// A FHIR `collection` Bundle of `resources` (shared as they are: a
/// collection or chosen records), each entry with its `fullUrl`.
pub fn collection_bundle(resources: &[Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| match full_url(r) {
            Some(u) => json!({"fullUrl": u, "resource": r}),
            None => json!({"resource": r}),
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "collection", "entry": entries})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    fn resources_of(path: &std::path::Path) -> Vec<Value> {
        let bytes = std::fs::read(path).unwrap();
        crate::split_bundle(&bytes)
            .unwrap()
            .into_iter()
            .map(|r| serde_json::from_slice(&r.json).unwrap())
            .collect()
    }

    fn options() -> SummaryOptions {
        SummaryOptions {
            now: 1_800_000_000,
            document_uuid: "3f2a4c1e-0000-4000-8000-000000000001".into(),
        }
    }

    /// The shape an IPS validator checks first: a document Bundle, the
    /// Composition first with the IPS type, the Patient as subject and
    /// author, the three required sections, LOINC-coded sections with
    /// narrative, every section entry and every reference resolving inside
    /// the bundle, unique fullUrls, and each section holding only its kind.
    fn check_shape(b: &Value, source: &[Value]) -> BTreeMap<String, usize> {
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "document");
        assert!(b["identifier"]["value"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
        assert_eq!(b["timestamp"], "2027-01-15T08:00:00Z");
        let entries = b["entry"].as_array().unwrap();
        let comp = &entries[0]["resource"];
        assert_eq!(comp["resourceType"], "Composition");
        assert_eq!(comp["type"]["coding"][0]["code"], IPS_DOCUMENT);
        assert_eq!(comp["status"], "final");
        let urls: Vec<&str> = entries
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = urls.iter().copied().collect();
        assert_eq!(unique.len(), urls.len(), "fullUrls are unique");
        assert_eq!(entries[1]["resource"]["resourceType"], "Patient");
        assert_eq!(comp["subject"]["reference"], urls[1]);
        assert_eq!(comp["author"][0]["reference"], urls[1]);
        let mut counts = BTreeMap::new();
        let sections = comp["section"].as_array().unwrap();
        let codes: Vec<&str> = sections
            .iter()
            .map(|s| s["code"]["coding"][0]["code"].as_str().unwrap())
            .collect();
        for required in ["11450-4", "10160-0", "48765-2"] {
            assert!(codes.contains(&required), "{required} in {codes:?}");
        }
        let by_url: BTreeMap<&str, &Value> = entries
            .iter()
            .map(|e| (e["fullUrl"].as_str().unwrap(), &e["resource"]))
            .collect();
        for s in sections {
            assert_eq!(s["code"]["coding"][0]["system"], "http://loinc.org");
            let div = s["text"]["div"].as_str().unwrap();
            assert!(div.starts_with("<div xmlns=\"http://www.w3.org/1999/xhtml\">"));
            let code = s["code"]["coding"][0]["code"].as_str().unwrap();
            let allowed: &[&str] = match code {
                "11450-4" => &["Condition"],
                "10160-0" => &["MedicationRequest", "MedicationStatement"],
                "48765-2" => &["AllergyIntolerance"],
                "11369-6" => &["Immunization"],
                "30954-2" => &["Observation"],
                "47519-4" => &["Procedure"],
                other => panic!("unexpected section {other}"),
            };
            let refs = s["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if refs.is_empty() {
                assert!(s["emptyReason"].is_object(), "an empty section says why");
            }
            for r in refs {
                let target = by_url[r["reference"].as_str().unwrap()];
                assert!(allowed.contains(&target["resourceType"].as_str().unwrap()));
            }
            counts.insert(code.to_string(), refs.len());
        }
        // Every reference anywhere resolves inside the bundle.
        fn refs_of<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("reference") {
                        out.push(r);
                    }
                    m.values().for_each(|c| refs_of(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| refs_of(c, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs_of(b, &mut all);
        for r in all {
            assert!(by_url.contains_key(r), "dangling reference {r}");
        }
        // The rules: each current condition of the source is listed.
        let current = source
            .iter()
            .filter(|r| r["resourceType"] == "Condition" && is_current_condition(r))
            .count();
        assert_eq!(counts["11450-4"], current.min(MAX_SECTION));
        counts
    }

    #[test]
    fn sample_patients_give_ips_shaped_documents() {
        let mut totals = BTreeMap::<String, usize>::new();
        let samples = crate::sample_bundles();
        assert!(samples.len() >= 10);
        for path in samples {
            let resources = resources_of(&path);
            let b = patient_summary(&resources, &options()).unwrap();
            let counts = check_shape(&b, &resources);
            for (k, v) in counts {
                *totals.entry(k).or_default() += v;
            }
            // Deterministic for the same input.
            assert_eq!(b, patient_summary(&resources, &options()).unwrap());
        }
        // The samples exercise every section.
        for code in ["11450-4", "10160-0", "11369-6", "30954-2", "47519-4"] {
            assert!(
                totals.get(code).copied().unwrap_or(0) > 0,
                "{code}: {totals:?}"
            );
        }
    }

    #[test]
    fn rules_for_current_and_refusals() {
        let p = json!({"resourceType": "Patient", "id": "p1", "name": [{"text": "Ann <b>"}]});
        let cond = |id: &str, status: &str, abated: bool| {
            let mut c = json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
                "encounter": {"reference": "Encounter/e9"},
                "clinicalStatus": {"coding": [{"code": status}]}, "code": {"text": id}});
            if abated {
                c["abatementDateTime"] = json!("2020-01-01");
            }
            c
        };
        let lab = |id: &str, code: &str, date: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"code": "laboratory"}]}], "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": date, "valueQuantity": {"value": 1}})
        };
        let resources = vec![
            p.clone(),
            cond("active1", "active", false),
            cond("resolved", "resolved", false),
            cond("abated", "active", true),
            lab("old", "4548-4", "2020-01-01"),
            lab("new", "4548-4", "2024-01-01"),
            lab("other", "2345-7", "2023-01-01"),
            json!({"resourceType": "Procedure", "id": "pr", "status": "not-done"}),
        ];
        let b = patient_summary(&resources, &options()).unwrap();
        let comp = &b["entry"][0]["resource"];
        let section = |code: &str| {
            comp["section"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["code"]["coding"][0]["code"] == code)
                .cloned()
        };
        assert_eq!(
            section("11450-4").unwrap()["entry"],
            json!([{"reference": "Condition/active1"}])
        );
        assert_eq!(
            section("30954-2").unwrap()["entry"],
            json!([{"reference": "Observation/new"}, {"reference": "Observation/other"}])
        );
        assert!(
            section("47519-4").is_none(),
            "no completed procedure: no section"
        );
        assert!(section("48765-2").unwrap()["emptyReason"].is_object());
        // The dangling encounter reference kept its place as text only.
        let c = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["fullUrl"] == "Condition/active1")
            .unwrap();
        assert!(c["resource"]["encounter"].get("reference").is_none());
        assert_eq!(c["resource"]["subject"]["reference"], "Patient/p1");
        // Narrative is escaped.
        assert!(comp["title"].as_str().unwrap().contains("Ann"));
        assert!(!section("11450-4").unwrap()["text"]["div"]
            .as_str()
            .unwrap()
            .contains("<b>"));
        assert_eq!(
            patient_summary(&resources[1..], &options()),
            Err(SummaryError::NoPatient)
        );
        let two = vec![p, json!({"resourceType": "Patient", "id": "p2"})];
        assert_eq!(
            patient_summary(&two, &options()),
            Err(SummaryError::SeveralPatients)
        );
    }
}
