//! A patient's health overview from their FHIR records: current
//! conditions, current medications, allergies, recent immunizations, and
//! the measurements that repeat over time as series to chart.
//!
//! What counts as **current** (the rules the web app's overview states):
//! - a Condition whose `clinicalStatus` is active, recurrence or relapse
//!   (or absent), that has no `abatement[x]`, and whose
//!   `verificationStatus` is not refuted or entered-in-error;
//! - a MedicationRequest or MedicationStatement whose `status` is active
//!   (or, for a statement, intended);
//! - an AllergyIntolerance whose `clinicalStatus` is active (or absent) and
//!   whose `verificationStatus` is not refuted or entered-in-error;
//! - an Immunization whose `status` is completed, newest first (the ten
//!   most recent).
//!
//! A **series** is one Observation code (or one component code, so a blood
//! pressure gives systolic and diastolic) with a numeric `valueQuantity` at
//! two or more dates, in one unit, from Observations whose `status` is not
//! cancelled or entered-in-error. Each point names the record it comes
//! from, so a chart can link to it.
//!
//! Untrusted input: malformed fields are skipped, never a panic; texts are
//! made safe to display; the output is bounded (at most [`MAX_ITEMS`] per
//! list, [`MAX_SERIES`] series of at most [`MAX_POINTS`] points).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{describe, effective_at, items, sanitize, str_field};

/// The most entries of one list.
pub const MAX_ITEMS: usize = 200;
/// The most series.
pub const MAX_SERIES: usize = 24;
/// The most points of one series (the newest are kept).
pub const MAX_POINTS: usize = 500;
/// How many immunizations the overview lists.
const RECENT_IMMUNIZATIONS: usize = 10;

/// One resource of the overview's input: the record it came from (its id
/// as the caller names it) and its FHIR JSON.
pub type Input<'a> = (&'a str, &'a Value);

fn code_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(|c| items(c, "coding").find_map(|c| str_field(c, "code")))
}

fn not_refuted(r: &Value) -> bool {
    !matches!(
        code_of(r.get("verificationStatus")),
        Some("refuted" | "entered-in-error")
    )
}

/// Whether a Condition is current (see the module documentation).
pub fn is_current_condition(r: &Value) -> bool {
    let active = match code_of(r.get("clinicalStatus")) {
        None => true,
        Some(c) => matches!(c, "active" | "recurrence" | "relapse"),
    };
    let abated = r
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k.starts_with("abatement")));
    active && !abated && not_refuted(r)
}

/// Whether a MedicationRequest or MedicationStatement is current.
pub fn is_current_medication(r: &Value) -> bool {
    matches!(
        (str_field(r, "resourceType"), str_field(r, "status")),
        (Some("MedicationRequest"), Some("active"))
            | (Some("MedicationStatement"), Some("active" | "intended"))
    )
}

/// Whether an AllergyIntolerance is current.
pub fn is_current_allergy(r: &Value) -> bool {
    let active = matches!(code_of(r.get("clinicalStatus")), None | Some("active"));
    active && not_refuted(r)
}

fn label(r: &Value, fields: &[&str]) -> String {
    let text = fields
        .iter()
        .find_map(|f| r.get(*f).and_then(describe))
        .unwrap_or("(unnamed)");
    sanitize(text, 200)
}

fn item(record: &str, r: &Value, fields: &[&str]) -> Value {
    json!({
        "record": record,
        "text": label(r, fields),
        "date": effective_at(r),
    })
}

/// One series' key: the coding system and code, and the unit.
type SeriesKey = (String, String);
/// One series being gathered: its name, and its points (time, value,
/// record).
type Gathered = (String, Vec<(i64, f64, String)>);

/// The overview of `resources` as JSON: `{conditions, medications,
/// allergies, immunizations: [{record, text, date}], series: [{code, name,
/// unit, points: [{at, value, record}]}]}`, lists newest first, points in
/// time order.
pub fn overview<'a>(resources: impl IntoIterator<Item = Input<'a>>) -> Value {
    let mut conditions = Vec::new();
    let mut medications = Vec::new();
    let mut allergies = Vec::new();
    let mut immunizations = Vec::new();
    let mut series: BTreeMap<SeriesKey, Gathered> = BTreeMap::new();
    for (record, r) in resources {
        match str_field(r, "resourceType") {
            Some("Condition") if is_current_condition(r) => {
                conditions.push(item(record, r, &["code"]));
            }
            Some("MedicationRequest" | "MedicationStatement") if is_current_medication(r) => {
                medications.push(item(
                    record,
                    r,
                    &["medicationCodeableConcept", "medicationReference"],
                ));
            }
            Some("AllergyIntolerance") if is_current_allergy(r) => {
                allergies.push(item(record, r, &["code"]));
            }
            Some("Immunization") if str_field(r, "status") == Some("completed") => {
                immunizations.push(item(record, r, &["vaccineCode"]));
            }
            Some("Observation") => add_points(&mut series, record, r),
            _ => {}
        }
    }
    let newest_first = |v: &mut Vec<Value>| {
        v.sort_by_key(|i| std::cmp::Reverse(i["date"].as_i64().unwrap_or(i64::MIN)));
        v.truncate(MAX_ITEMS);
    };
    newest_first(&mut conditions);
    newest_first(&mut medications);
    newest_first(&mut allergies);
    newest_first(&mut immunizations);
    immunizations.truncate(RECENT_IMMUNIZATIONS);
    let mut charted: Vec<Value> = series
        .into_iter()
        .filter(|(_, (_, points))| {
            let mut dates: Vec<i64> = points.iter().map(|p| p.0).collect();
            dates.dedup();
            dates.len() >= 2
        })
        .map(|((code, unit), (name, mut points))| {
            points.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
            let skip = points.len().saturating_sub(MAX_POINTS);
            json!({
                "code": code,
                "name": name,
                "unit": unit,
                "points": points
                    .into_iter()
                    .skip(skip)
                    .map(|(at, value, record)| json!({"at": at, "value": value, "record": record}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    charted.sort_by_key(|s| std::cmp::Reverse(s["points"].as_array().map_or(0, Vec::len)));
    charted.truncate(MAX_SERIES);
    json!({
        "conditions": conditions,
        "medications": medications,
        "allergies": allergies,
        "immunizations": immunizations,
        "series": charted,
    })
}

/// The numeric points of one Observation (its value, and each component's).
fn add_points(series: &mut BTreeMap<SeriesKey, Gathered>, record: &str, r: &Value) {
    if matches!(
        str_field(r, "status"),
        Some("cancelled" | "entered-in-error")
    ) {
        return;
    }
    let Some(at) = effective_at(r) else {
        return;
    };
    let mut add = |code: Option<&Value>, quantity: Option<&Value>| {
        let (Some(code), Some(q)) = (code, quantity) else {
            return;
        };
        let Some(value) = q
            .get("value")
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
        else {
            return;
        };
        let Some(coding) = items(code, "coding").find(|c| str_field(c, "code").is_some()) else {
            return;
        };
        let key = format!(
            "{}|{}",
            str_field(coding, "system").unwrap_or_default(),
            str_field(coding, "code").unwrap_or_default()
        );
        let unit = str_field(q, "unit")
            .or_else(|| str_field(q, "code"))
            .unwrap_or_default();
        let entry = series
            .entry((sanitize(&key, 200), sanitize(unit, 40)))
            .or_insert_with(|| {
                (
                    sanitize(describe(code).unwrap_or("(unnamed)"), 200),
                    Vec::new(),
                )
            });
        entry.1.push((at, value, record.to_owned()));
    };
    add(r.get("code"), r.get("valueQuantity"));
    for c in items(r, "component") {
        add(c.get("code"), c.get("valueQuantity"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(code: &str, display: &str, date: &str, value: f64, status: &str) -> Value {
        json!({"resourceType": "Observation", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "mmol/mol"}})
    }

    #[test]
    fn current_items_and_series_follow_the_stated_rules() {
        let rs = [
            json!({"resourceType": "Condition", "code": {"text": "Diabetes"},
                "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2020-01-01"}),
            json!({"resourceType": "Condition", "code": {"text": "Sprain"},
                "clinicalStatus": {"coding": [{"code": "resolved"}]}}),
            json!({"resourceType": "Condition", "code": {"text": "Flu"},
                "abatementDateTime": "2021-02-01"}),
            json!({"resourceType": "Condition", "code": {"text": "Wrong"},
                "verificationStatus": {"coding": [{"code": "entered-in-error"}]}}),
            json!({"resourceType": "MedicationRequest", "status": "active",
                "medicationCodeableConcept": {"text": "Metformin 500 mg"}}),
            json!({"resourceType": "MedicationRequest", "status": "stopped",
                "medicationCodeableConcept": {"text": "Old drug"}}),
            json!({"resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}}),
            json!({"resourceType": "Immunization", "status": "completed",
                "vaccineCode": {"text": "Influenza"}, "occurrenceDateTime": "2025-10-01"}),
            obs("4548-4", "HbA1c", "2024-01-01", 52.0, "final"),
            obs("4548-4", "HbA1c", "2025-01-01", 48.0, "final"),
            obs("4548-4", "HbA1c", "2025-06-01", 99.0, "entered-in-error"),
            obs("2093-3", "Cholesterol", "2025-01-01", 5.0, "final"),
            json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "Blood pressure"}, "effectiveDateTime": "2024-01-01",
                "component": [
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}]},
                     "valueQuantity": {"value": 130, "unit": "mm[Hg]"}},
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic"}]},
                     "valueQuantity": {"value": 85, "unit": "mm[Hg]"}}]}),
            json!({"resourceType": "Observation", "status": "final",
                "code": {"text": "Blood pressure"}, "effectiveDateTime": "2025-01-01",
                "component": [
                    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"}]},
                     "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}]}),
        ];
        let ids: Vec<String> = (0..rs.len()).map(|i| format!("r{i}")).collect();
        let o = overview(ids.iter().map(String::as_str).zip(rs.iter()));
        let texts = |k: &str| -> Vec<String> {
            o[k].as_array()
                .unwrap()
                .iter()
                .map(|i| i["text"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(texts("conditions"), ["Diabetes"]);
        assert_eq!(texts("medications"), ["Metformin 500 mg"]);
        assert_eq!(texts("allergies"), ["Penicillin"]);
        assert_eq!(texts("immunizations"), ["Influenza"]);
        let series = o["series"].as_array().unwrap();
        let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names.len(),
            2,
            "{names:?}: cholesterol has one date, diastolic one"
        );
        let hba1c = series.iter().find(|s| s["name"] == "HbA1c").unwrap();
        let values: Vec<f64> = hba1c["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_f64().unwrap())
            .collect();
        assert_eq!(
            values,
            [52.0, 48.0],
            "the entered-in-error value is left out"
        );
        assert_eq!(hba1c["points"][0]["record"], "r8");
        assert_eq!(hba1c["unit"], "mmol/mol");
        assert!(names.contains(&"Systolic"));
    }

    #[test]
    fn malformed_resources_are_skipped() {
        let rs = [
            json!(null),
            json!({"resourceType": 5}),
            json!({"resourceType": "Observation", "effectiveDateTime": "2024-01-01",
                "code": {"coding": "x"}, "valueQuantity": {"value": "NaN"}}),
            json!({"resourceType": "Condition", "code": {"text": "\u{202e}evil"}}),
        ];
        let o = overview(rs.iter().map(|r| ("x", r)));
        assert_eq!(o["series"], json!([]));
        assert_eq!(o["conditions"][0]["text"], "evil");
    }
}

#[cfg(test)]
mod samples {
    use super::*;

    /// On every sample patient: the series are the repeated measurements,
    /// and each plotted value is the value of the Observation it names.
    #[test]
    fn sample_patients_chart_their_own_values() {
        let mut charted = 0;
        for path in crate::sample_bundles() {
            let resources = crate::split_bundle(&std::fs::read(&path).unwrap()).unwrap();
            let values: Vec<(String, Value)> = resources
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("r{i}"), serde_json::from_slice(&r.json).unwrap()))
                .collect();
            let o = overview(values.iter().map(|(id, v)| (id.as_str(), v)));
            for s in o["series"].as_array().unwrap() {
                charted += 1;
                for p in s["points"].as_array().unwrap() {
                    let (_, r) = values
                        .iter()
                        .find(|(id, _)| p["record"] == id.as_str())
                        .unwrap();
                    let own = std::iter::once(r.get("valueQuantity"))
                        .chain(items(r, "component").map(|c| c.get("valueQuantity")))
                        .flatten()
                        .filter_map(|q| q.get("value").and_then(Value::as_f64))
                        .any(|v| Some(v) == p["value"].as_f64());
                    assert!(
                        own,
                        "{}: {p} is not its Observation's value",
                        path.display()
                    );
                    assert_eq!(p["at"].as_i64(), effective_at(r));
                }
            }
        }
        assert!(charted >= 12, "only {charted} series across the samples");
    }
}
