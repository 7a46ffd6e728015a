//! vault-fhir: FHIR R4 JSON for vault, a client-side end-to-end encrypted
//! health-record vault. It splits Bundles into resources, sorts them into
//! vault collections, derives titles, clinical dates and readable
//! summaries, names the content type of FHIR records, and makes untrusted
//! text safe to display ([`clean`]).
//!
//! This is clinical display logic, not cryptography: nothing here reads or
//! writes a format of `docs/format.md`, and no security property of the
//! vault depends on it (a record's content type and title are whatever its
//! verified author sealed). It is a leaf crate: it depends on `serde_json`
//! only, does no I/O, and builds natively and for `wasm32-unknown-unknown`
//! (the CLI, the sync client and the browser bindings share it).
//!
//! Guarantees:
//! - Every input byte is untrusted. Nothing in this crate panics or indexes
//!   slices directly, whatever the input: malformed input gives a
//!   [`FhirError`] whose message tells the user what to do, and malformed
//!   fields inside a resource just give `None` or a fallback text.
//! - Work and output are bounded: at most [`MAX_RESOURCES`] resources per
//!   input, titles of at most [`MAX_TITLE_CHARS`] characters, summary values
//!   of at most 1,000 characters; date strings longer than 64 bytes are not
//!   parsed.
//! - Titles and summaries contain no control characters or invisible
//!   bidirectional overrides ([`is_hidden`]); [`clean`] removes them from
//!   any other text before it is displayed.
#![forbid(unsafe_code)]

pub mod health;
pub mod ips;

/// The sample patients' bundles (`shared/fhir-samples`, or
/// `VAULT_FHIR_SAMPLES`), for tests.
#[cfg(test)]
pub(crate) fn sample_bundles() -> Vec<std::path::PathBuf> {
    let dir = std::env::var_os("VAULT_FHIR_SAMPLES").map_or_else(
        || concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fhir-samples").into(),
        std::path::PathBuf::from,
    );
    std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}; set VAULT_FHIR_SAMPLES", dir.display()))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect()
}

use std::fmt;

use serde_json::{Map, Value};

/// The content type of FHIR R4 JSON records (RFC 6838 registration by HL7).
///
/// `vault_core::export` recognises the same type to gather FHIR records into
/// an export's FHIR bundle; a test in vault-client checks the two agree.
pub const FHIR_CONTENT_TYPE: &str = "application/fhir+json";

/// The most resources [`split_bundle`] accepts from one input.
pub const MAX_RESOURCES: usize = 100_000;

/// The longest [`title`], in characters (Unicode scalar values).
pub const MAX_TITLE_CHARS: usize = 200;

/// The longest value in a [`summary`] line, in characters.
const MAX_VALUE_CHARS: usize = 1_000;

/// Longer strings cannot be FHIR dates; refusing them bounds the parser's work.
const MAX_DATE_LEN: usize = 64;

const SECONDS_PER_DAY: i64 = 86_400;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The collections an imported resource is sorted into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Laboratory results and vital signs.
    Labs,
    /// Problems and diagnoses.
    Conditions,
    /// Prescriptions, medication statements, administrations and dispenses.
    Medications,
    /// Vaccinations.
    Immunizations,
    /// Procedures performed on the patient.
    Procedures,
    /// Visits and admissions.
    Encounters,
    /// Care plans, care teams and goals.
    CarePlans,
    /// Allergies and intolerances.
    Allergies,
    /// Imaging studies and media.
    Imaging,
    /// Documents and non-laboratory reports.
    Documents,
    /// Observations that are neither vital signs nor laboratory results.
    Observations,
    /// Everything else: the patient record, claims, organizations, practitioners...
    Administrative,
}

impl Category {
    /// Every category, in display order; each category appears exactly once.
    pub const ALL: [Category; 12] = [
        Category::Labs,
        Category::Conditions,
        Category::Medications,
        Category::Immunizations,
        Category::Procedures,
        Category::Encounters,
        Category::CarePlans,
        Category::Allergies,
        Category::Imaging,
        Category::Documents,
        Category::Observations,
        Category::Administrative,
    ];

    /// The collection name used in the vault: a fixed lowercase ASCII name,
    /// distinct for every category ("labs", "conditions", "medications",
    /// "immunizations", "procedures", "encounters", "care-plans", "allergies",
    /// "imaging", "documents", "observations", "administrative").
    pub fn collection_name(self) -> &'static str {
        match self {
            Category::Labs => "labs",
            Category::Conditions => "conditions",
            Category::Medications => "medications",
            Category::Immunizations => "immunizations",
            Category::Procedures => "procedures",
            Category::Encounters => "encounters",
            Category::CarePlans => "care-plans",
            Category::Allergies => "allergies",
            Category::Imaging => "imaging",
            Category::Documents => "documents",
            Category::Observations => "observations",
            Category::Administrative => "administrative",
        }
    }
}

/// One FHIR resource ready to be sealed as a record.
#[derive(Clone, Debug)]
pub struct Resource {
    /// The resource type, e.g. "Observation": always an ASCII letter-and-digit
    /// name starting with an uppercase letter, at most 64 bytes.
    pub resource_type: String,
    /// The resource's `id` if it is a valid FHIR id (1 to 64 ASCII letters,
    /// digits, `-` or `.`, so safe in URLs and file names); for Bundle entries
    /// without an id, the UUID of a `urn:uuid:` fullUrl, also written into `json`.
    pub id: Option<String>,
    /// The collection the resource belongs in (see [`categorize`]).
    pub category: Category,
    /// A non-empty human title of at most [`MAX_TITLE_CHARS`] characters
    /// without control characters (see [`title`]).
    pub title: String,
    /// The clinical date as Unix seconds, if the resource has a valid one
    /// (see [`effective_at`]).
    pub effective_at: Option<i64>,
    /// The resource serialized as compact JSON (object keys sorted).
    pub json: Vec<u8>,
}

/// Why an input could not be imported as FHIR.
#[derive(Debug)]
pub enum FhirError {
    /// The input is not well-formed JSON.
    NotJson {
        /// The 1-based line where parsing failed.
        line: usize,
        /// The 1-based column where parsing failed.
        column: usize,
        /// What the JSON parser found wrong.
        reason: String,
    },
    /// The JSON is not an object with a string `resourceType`.
    NotFhir,
    /// The top-level `resourceType` is not a FHIR resource type name.
    InvalidResourceType {
        /// The offending value, sanitized and shortened.
        found: String,
    },
    /// The Bundle itself is malformed.
    InvalidBundle {
        /// What is wrong with the Bundle.
        reason: String,
    },
    /// One Bundle entry is malformed.
    BundleEntry {
        /// The 0-based position of the entry in the Bundle's `entry` list.
        index: usize,
        /// What is wrong with the entry.
        reason: String,
    },
    /// The input holds more resources than one import accepts.
    TooMany {
        /// The maximum number of resources per import.
        limit: usize,
    },
    /// A parsed resource could not be serialized again (should not happen).
    Encode {
        /// The serializer's message.
        reason: String,
    },
}

impl fmt::Display for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FhirError::NotJson {
                line,
                column,
                reason,
            } => write!(
                f,
                "the file is not valid JSON ({reason} at line {line}, column {column}); \
                 export the record as FHIR R4 JSON (not XML or PDF) and try again"
            ),
            FhirError::NotFhir => f.write_str(
                "the JSON has no resourceType: is this a FHIR R4 resource or Bundle? \
                 Export the record as FHIR R4 JSON and try again",
            ),
            FhirError::InvalidResourceType { found } => write!(
                f,
                "resourceType {found:?} is not a FHIR resource type name; \
                 export the record as FHIR R4 JSON and try again"
            ),
            FhirError::InvalidBundle { reason } => write!(
                f,
                "the Bundle is malformed: {reason}; export it again or repair it, then retry"
            ),
            FhirError::BundleEntry { index, reason } => write!(
                f,
                "Bundle entry[{index}] is invalid: {reason}; fix or remove that entry and import again"
            ),
            FhirError::TooMany { limit } => write!(
                f,
                "the file holds more than {limit} resources; \
                 split it into smaller Bundles and import them one at a time"
            ),
            FhirError::Encode { reason } => write!(
                f,
                "could not re-encode a resource as JSON ({reason}); please report this as a bug"
            ),
        }
    }
}

impl std::error::Error for FhirError {}

/// Parses a FHIR R4 Bundle (any type: transaction, batch, collection,
/// searchset, document) or a single resource into resources, in bundle order.
///
/// Guarantees: nested Bundles are flattened; entries without a `resource` are
/// skipped; an entry resource lacking `id` whose fullUrl is `urn:uuid:X` (X a
/// valid FHIR id) gets `id` X inside its JSON; references are left untouched;
/// at most [`MAX_RESOURCES`] resources are returned, otherwise
/// [`FhirError::TooMany`]. Malformed entries give [`FhirError::BundleEntry`]
/// naming the entry index. Never panics, whatever the bytes.
///
/// # Errors
///
/// [`FhirError::NotJson`] for malformed JSON, [`FhirError::NotFhir`] or
/// [`FhirError::InvalidResourceType`] when the top level is not a resource,
/// [`FhirError::InvalidBundle`] or [`FhirError::BundleEntry`] for a malformed
/// Bundle or entry, [`FhirError::TooMany`] above [`MAX_RESOURCES`].
pub fn split_bundle(bytes: &[u8]) -> Result<Vec<Resource>, FhirError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let root: Value = serde_json::from_slice(bytes).map_err(not_json)?;
    let bundle = is_bundle(&root).map_err(|found| match found {
        Some(found) => FhirError::InvalidResourceType { found },
        None => FhirError::NotFhir,
    })?;
    let mut out = Vec::new();
    if bundle {
        flatten(root, &mut out)?;
    } else {
        push_resource(root, &mut out)?;
    }
    Ok(out)
}

fn not_json(err: serde_json::Error) -> FhirError {
    let message = err.to_string();
    let reason = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(reason, _)| reason);
    FhirError::NotJson {
        line: err.line(),
        column: err.column(),
        reason: sanitize(reason, 200),
    }
}

/// Whether `resource` is a Bundle. Fails with `None` if it has no string
/// resourceType, and with the (sanitized) value if that is not a type name:
/// an uppercase ASCII letter then letters and digits, at most 64 bytes.
fn is_bundle(resource: &Value) -> Result<bool, Option<String>> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or(None)?;
    let valid = rt.len() <= 64
        && rt.starts_with(|c: char| c.is_ascii_uppercase())
        && rt.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(rt == "Bundle")
    } else {
        Err(Some(sanitize(rt, 64)))
    }
}

/// Whether `s` is a valid FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn flatten(mut bundle: Value, out: &mut Vec<Resource>) -> Result<(), FhirError> {
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(FhirError::InvalidBundle {
                reason: "its \"entry\" is not a list".to_owned(),
            })
        }
    };
    for (index, entry) in entries.into_iter().enumerate() {
        import_entry(index, entry, out)?;
    }
    Ok(())
}

fn import_entry(index: usize, entry: Value, out: &mut Vec<Resource>) -> Result<(), FhirError> {
    let bad = |reason: String| FhirError::BundleEntry { index, reason };
    let Value::Object(mut entry) = entry else {
        return Err(bad("it is not a JSON object".to_owned()));
    };
    let mut resource = match entry.remove("resource") {
        None | Some(Value::Null) => return Ok(()),
        Some(resource @ Value::Object(_)) => resource,
        Some(_) => return Err(bad("its \"resource\" is not a JSON object".to_owned())),
    };
    let bundle = is_bundle(&resource).map_err(|found| match found {
        Some(found) => bad(format!(
            "resourceType {found:?} is not a FHIR resource type name"
        )),
        None => bad("its resource has no resourceType".to_owned()),
    })?;
    if bundle {
        return flatten(resource, out).map_err(|err| nested_error(index, err));
    }
    set_id_from_full_url(&mut resource, &entry);
    push_resource(resource, out)
}

/// Re-labels an error from a nested Bundle with the outer entry's index.
fn nested_error(index: usize, err: FhirError) -> FhirError {
    let reason = match err {
        FhirError::BundleEntry {
            index: inner,
            reason,
        } => {
            format!("in its nested Bundle, entry[{inner}]: {reason}")
        }
        FhirError::InvalidBundle { reason } => format!("its nested Bundle is malformed: {reason}"),
        other => return other,
    };
    FhirError::BundleEntry { index, reason }
}

fn set_id_from_full_url(resource: &mut Value, entry: &Map<String, Value>) {
    let uuid = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .and_then(|url| url.strip_prefix("urn:uuid:"))
        .filter(|id| is_fhir_id(id));
    if let (Some(uuid), Value::Object(fields)) = (uuid, resource) {
        if !fields.contains_key("id") {
            fields.insert("id".to_owned(), Value::String(uuid.to_owned()));
        }
    }
}

fn push_resource(resource: Value, out: &mut Vec<Resource>) -> Result<(), FhirError> {
    if out.len() >= MAX_RESOURCES {
        return Err(FhirError::TooMany {
            limit: MAX_RESOURCES,
        });
    }
    let json = serde_json::to_vec(&resource).map_err(|err| FhirError::Encode {
        reason: err.to_string(),
    })?;
    out.push(Resource {
        resource_type: str_field(&resource, "resourceType")
            .unwrap_or_default()
            .to_owned(),
        id: str_field(&resource, "id")
            .filter(|id| is_fhir_id(id))
            .map(str::to_owned),
        category: categorize(&resource),
        title: title(&resource),
        effective_at: effective_at(&resource),
        json,
    });
    Ok(())
}

/// Sorts one resource into a category. Total: every JSON value maps to some
/// category, unknown or missing resource types to [`Category::Administrative`].
///
/// Observations with a category code vital-signs or laboratory go to Labs,
/// other Observations to Observations; DiagnosticReports with a category code
/// LAB or laboratory (any case) go to Labs, others to Documents; the other
/// clinical types go to their obvious collection.
pub fn categorize(resource: &Value) -> Category {
    match str_field(resource, "resourceType").unwrap_or_default() {
        // "vital-sign" is a misspelling some Synthea versions emit.
        "Observation" if has_category(resource, &["vital-signs", "vital-sign", "laboratory"]) => {
            Category::Labs
        }
        "Observation" => Category::Observations,
        "DiagnosticReport" if has_category(resource, &["LAB", "laboratory"]) => Category::Labs,
        "DiagnosticReport" | "DocumentReference" | "Composition" | "Binary" => Category::Documents,
        "Condition" => Category::Conditions,
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationAdministration"
        | "MedicationDispense"
        | "Medication" => Category::Medications,
        "Immunization" => Category::Immunizations,
        "Procedure" => Category::Procedures,
        "Encounter" => Category::Encounters,
        "CarePlan" | "CareTeam" | "Goal" => Category::CarePlans,
        "AllergyIntolerance" => Category::Allergies,
        "ImagingStudy" | "Media" => Category::Imaging,
        _ => Category::Administrative,
    }
}

fn has_category(resource: &Value, codes: &[&str]) -> bool {
    items(resource, "category")
        .flat_map(|concept| items(concept, "coding"))
        .filter_map(|coding| str_field(coding, "code"))
        .any(|code| codes.iter().any(|c| c.eq_ignore_ascii_case(code.trim())))
}

/// Where each resource type keeps its title, as JSON pointers tried in order.
#[rustfmt::skip]
fn title_fields(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "MedicationRequest" | "MedicationStatement" | "MedicationAdministration"
        | "MedicationDispense" => &["/medicationCodeableConcept", "/medicationReference"],
        "Immunization" => &["/vaccineCode"],
        "Encounter" => &["/type/0", "/serviceType", "/class"],
        "CarePlan" => &["/title", "/category/0", "/description"],
        "Goal" => &["/description"],
        "CareTeam" => &["/name", "/category/0"],
        "DocumentReference" => &["/description", "/type", "/content/0/attachment/title"],
        "Composition" => &["/title", "/type"],
        "ImagingStudy" => &["/description", "/series/0/modality", "/modality/0"],
        "Media" => &["/content/title", "/type", "/modality"],
        "Binary" => &["/contentType"],
        "Device" => &["/deviceName/0/name", "/type"],
        "Coverage" => &["/type", "/payor/0"],
        _ => &["/code", "/name", "/title", "/type", "/type/0", "/description"],
    }
}

/// A short human title for a resource (what a list shows): the code's text or
/// first coding display, the medication, the vaccine, the encounter type, the
/// person's name, "Claim: " + type for claims..., falling back to the resource
/// type. Guarantees: non-empty, at most [`MAX_TITLE_CHARS`] characters, no
/// control or bidirectional-override characters, whitespace runs collapsed.
pub fn title(resource: &Value) -> String {
    let resource_type = str_field(resource, "resourceType").unwrap_or_default();
    let raw = special_title(resource_type, resource).or_else(|| {
        title_fields(resource_type)
            .iter()
            .find_map(|p| resource.pointer(p).and_then(describe))
            .map(str::to_owned)
    });
    [raw.as_deref().unwrap_or_default(), resource_type]
        .iter()
        .map(|candidate| sanitize(candidate, MAX_TITLE_CHARS))
        .find(|t| !t.is_empty())
        .unwrap_or_else(|| "Resource".to_owned())
}

fn special_title(resource_type: &str, r: &Value) -> Option<String> {
    let type_of = || r.get("type").and_then(describe).unwrap_or("unknown type");
    match resource_type {
        "Patient" | "Practitioner" | "RelatedPerson" | "Person" => human_name(r),
        "Claim" => Some(format!("Claim: {}", type_of())),
        "ExplanationOfBenefit" => Some(format!("Explanation of benefit: {}", type_of())),
        _ => None,
    }
}

/// The official (else first) name: its text, or given names and family name.
fn human_name(r: &Value) -> Option<String> {
    let name = items(r, "name")
        .find(|n| str_field(n, "use") == Some("official"))
        .or_else(|| items(r, "name").next())?;
    if let Some(text) = str_field(name, "text") {
        return Some(text.to_owned());
    }
    let parts: Vec<&str> = items(name, "given")
        .filter_map(Value::as_str)
        .chain(str_field(name, "family"))
        .collect();
    Some(parts.join(" "))
}

/// Where the clinical date lives, as JSON pointers tried in order.
#[rustfmt::skip]
const DATE_FIELDS: &[&str] = &[
    "/effectiveDateTime", "/effectivePeriod/start", "/effectiveInstant",
    "/onsetDateTime", "/onsetPeriod/start", "/occurrenceDateTime", "/occurrencePeriod/start",
    "/performedDateTime", "/performedPeriod/start", "/period/start", "/started",
    "/authoredOn", "/dateAsserted", "/whenHandedOver", "/issued", "/recordedDate", "/recorded",
    "/date", "/startDate", "/billablePeriod/start", "/created",
];
const PATIENT_DATE_FIELDS: &[&str] = &["/birthDate"];

/// The resource's clinical date as Unix seconds (UTC, timezone offset
/// applied): the first field of a fixed list (effectiveDateTime,
/// effectivePeriod.start, onsetDateTime, occurrenceDateTime, performed...,
/// period.start, started, authoredOn, issued, recordedDate, created...;
/// birthDate for Patient) that holds a valid FHIR date. `None` if there is
/// none; never panics.
pub fn effective_at(resource: &Value) -> Option<i64> {
    let fields = if str_field(resource, "resourceType") == Some("Patient") {
        PATIENT_DATE_FIELDS
    } else {
        DATE_FIELDS
    };
    fields.iter().find_map(|p| {
        resource
            .pointer(p)
            .and_then(Value::as_str)
            .and_then(parse_date)
    })
}

/// Parses one FHIR date, dateTime or instant to Unix seconds (UTC): `YYYY`,
/// `YYYY-MM`, `YYYY-MM-DD` (missing parts count as the first month/day,
/// midnight UTC) or `YYYY-MM-DDThh:mm:ss(.fraction)(Z|+hh:mm|-hh:mm)`, the
/// offset applied (a missing offset is read as UTC; the fraction is dropped).
/// Returns `None` for anything else, including impossible calendar dates and
/// strings over 64 bytes; never panics.
pub fn parse_date(s: &str) -> Option<i64> {
    if s.len() > MAX_DATE_LEN {
        return None;
    }
    let mut c = Cursor(s.as_bytes());
    let year = c.number(4).filter(|y| *y >= 1)?;
    let (mut month, mut day, mut seconds) = (1, 1, 0);
    if c.0.first() == Some(&b'-') {
        month = c.field(b'-', 12).filter(|m| *m >= 1)?;
        if c.0.first() == Some(&b'-') {
            day = c
                .field(b'-', days_in_month(year, month))
                .filter(|d| *d >= 1)?;
            if c.eat(b'T') {
                seconds = c.time_of_day()? - c.offset()?;
            }
        }
    }
    c.0.is_empty()
        .then(|| days_from_civil(year, month, day) * SECONDS_PER_DAY + seconds)
}

/// A read position in an ASCII date string.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Exactly `len` ASCII digits as a number.
    fn number(&mut self, len: usize) -> Option<i64> {
        let (digits, rest) = self.0.split_at_checked(len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = rest;
        Some(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }

    /// `separator` then two digits making at most `max`.
    fn field(&mut self, separator: u8, max: i64) -> Option<i64> {
        self.eat(separator)
            .then(|| self.number(2))
            .flatten()
            .filter(|n| *n <= max)
    }

    /// `hh:mm:ss(.fraction)` as seconds since midnight (leap second 60 allowed).
    fn time_of_day(&mut self) -> Option<i64> {
        let hour = self.number(2).filter(|h| *h <= 23)?;
        let minute = self.field(b':', 59)?;
        let second = self.field(b':', 60)?;
        if self.eat(b'.') {
            let len = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
            self.0 = self.0.get(len..).filter(|_| len > 0)?;
        }
        Some(hour * 3600 + minute * 60 + second)
    }

    /// `Z`, `+hh:mm`, `-hh:mm` (at most 14:00) or nothing, as seconds east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            self.eat(b'Z');
            return Some(0);
        };
        let hours = self.number(2)?;
        let minutes = self.field(b':', 59)?;
        let total = hours * 60 + minutes;
        (total <= 14 * 60).then_some(sign * total * 60)
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm); `month` is 1..=12, `day` 1..=31.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats Unix seconds as "YYYY-MM-DD" (UTC, proleptic Gregorian), for
/// display. Total: works for every `i64`, negative values included, and
/// `parse_date(&format_date(t))` gives `t` rounded down to its day for years
/// 1 to 9999.
pub fn format_date(t: i64) -> String {
    let (year, month, day) = civil_from_days(t.div_euclid(SECONDS_PER_DAY));
    format!("{year:04}-{month:02}-{day:02}")
}

/// A readable summary for `vault show`: labelled lines such as
/// `("Test", "Body Height")`, `("Value", "181.2 cm")`, `("Date", "2012-03-04")`.
/// Guarantees: labels are fixed English words; values are non-empty plain
/// text without control characters, at most 1000 characters each; missing or
/// malformed fields are left out; an `("Id", id)` line comes last whenever the
/// resource has an id. Decimals are rounded for display (4 significant
/// digits, integer digits kept); the stored JSON keeps full precision.
pub fn summary(resource: &Value) -> Vec<(String, String)> {
    let mut s = Summary(Vec::new());
    let resource_type = str_field(resource, "resourceType").unwrap_or_default();
    let rows = summary_rows(resource_type);
    if rows.is_empty() {
        let name = title(resource);
        let shown_type = if resource_type.is_empty() {
            "unknown"
        } else {
            resource_type
        };
        s.add("Resource", Some(shown_type));
        s.add(
            "Name",
            (name != resource_type && name != "Resource").then_some(name),
        );
        s.add("Status", str_field(resource, "status"));
        s.add("Date", effective_at(resource).map(format_date));
    }
    for &(label, pointer, show) in rows.iter().chain(&[("Id", "/id", Show::Text)]) {
        if !s.0.iter().any(|(l, _)| l == label) {
            if let Some(value) = resource.pointer(pointer) {
                s.show(label, value, show);
            }
        }
    }
    s.0
}

/// How a summary row renders the JSON found at its pointer.
#[derive(Clone, Copy)]
enum Show {
    /// A string, code, Coding, CodeableConcept, Reference, or a list of them.
    Text,
    /// A date as "YYYY-MM-DD", or a Period as "start to end".
    When,
    /// Money or a Quantity, or ExplanationOfBenefit's list of totals.
    Money,
    /// A positive number, or the length of a non-empty list.
    Count,
    /// The `value[x]` of the element at the pointer.
    Value,
    /// One line per Observation component: "name: value".
    Components,
    /// One line per reference range.
    Ranges,
    /// One line per allergic reaction: "manifestations (severity)".
    Reactions,
    /// A person's name from the resource at the pointer.
    Name,
    /// City, state, postal code and country of the first address.
    Address,
}

/// A summary line: label, JSON pointer, rendering. A row is skipped when an
/// earlier row already produced its label, so later rows act as fallbacks.
type Row = (&'static str, &'static str, Show);

#[rustfmt::skip]
fn summary_rows(resource_type: &str) -> &'static [Row] {
    use Show::*;
    match resource_type {
        "Observation" => &[
            ("Test", "/code", Text), ("Value", "", Value), ("Component", "/component", Components),
            ("Interpretation", "/interpretation", Text),
            ("Reference range", "/referenceRange", Ranges), ("Date", "/effectiveDateTime", When),
            ("Date", "/effectivePeriod", When), ("Date", "/effectiveInstant", When),
            ("Date", "/issued", When), ("Status", "/status", Text), ("Category", "/category", Text),
        ],
        "Condition" => &[
            ("Condition", "/code", Text), ("Clinical status", "/clinicalStatus", Text),
            ("Verification status", "/verificationStatus", Text), ("Onset", "/onsetDateTime", When),
            ("Onset", "/onsetPeriod", When), ("Onset", "/onsetString", Text),
            ("Abatement", "/abatementDateTime", When), ("Abatement", "/abatementPeriod", When),
            ("Abatement", "/abatementString", Text), ("Recorded", "/recordedDate", When),
        ],
        "MedicationRequest" | "MedicationStatement" | "MedicationAdministration"
        | "MedicationDispense" => &[
            ("Medication", "/medicationCodeableConcept", Text),
            ("Medication", "/medicationReference", Text), ("Status", "/status", Text),
            ("Intent", "/intent", Text), ("Dosage", "/dosageInstruction", Text),
            ("Dosage", "/dosage", Text), ("Authored", "/authoredOn", When),
            ("Date", "/effectiveDateTime", When), ("Date", "/effectivePeriod", When),
            ("Date", "/whenHandedOver", When), ("Reason", "/reasonCode", Text),
            ("Reason", "/reasonReference", Text),
        ],
        "Immunization" => &[
            ("Vaccine", "/vaccineCode", Text), ("Status", "/status", Text),
            ("Date", "/occurrenceDateTime", When), ("Date", "/occurrenceString", Text),
        ],
        "AllergyIntolerance" => &[
            ("Substance", "/code", Text), ("Criticality", "/criticality", Text),
            ("Type", "/type", Text), ("Category", "/category", Text),
            ("Clinical status", "/clinicalStatus", Text), ("Reaction", "/reaction", Reactions),
            ("Onset", "/onsetDateTime", When), ("Recorded", "/recordedDate", When),
        ],
        "Encounter" => &[
            ("Encounter", "/type", Text), ("Class", "/class", Text), ("Status", "/status", Text),
            ("Period", "/period", When), ("Reason", "/reasonCode", Text),
        ],
        "Procedure" => &[
            ("Procedure", "/code", Text), ("Status", "/status", Text),
            ("Performed", "/performedDateTime", When), ("Performed", "/performedPeriod", When),
            ("Reason", "/reasonCode", Text),
        ],
        "CarePlan" => &[
            ("Care plan", "/title", Text), ("Category", "/category", Text),
            ("Description", "/description", Text), ("Status", "/status", Text),
            ("Intent", "/intent", Text), ("Period", "/period", When),
        ],
        "Goal" => &[
            ("Goal", "/description", Text), ("Status", "/lifecycleStatus", Text),
            ("Achievement", "/achievementStatus", Text), ("Start", "/startDate", When),
        ],
        "DiagnosticReport" => &[
            ("Report", "/code", Text), ("Status", "/status", Text), ("Category", "/category", Text),
            ("Date", "/effectiveDateTime", When), ("Date", "/effectivePeriod", When),
            ("Issued", "/issued", When), ("Results", "/result", Count),
            ("Conclusion", "/conclusion", Text),
        ],
        "ImagingStudy" => &[
            ("Study", "/description", Text), ("Modality", "/modality", Text),
            ("Modality", "/series/0/modality", Text), ("Body site", "/series/0/bodySite", Text),
            ("Series", "/numberOfSeries", Count), ("Series", "/series", Count),
            ("Instances", "/numberOfInstances", Count), ("Status", "/status", Text),
            ("Started", "/started", When),
        ],
        "Patient" => &[
            ("Name", "", Name), ("Gender", "/gender", Text), ("Birth date", "/birthDate", When),
            ("Deceased", "/deceasedDateTime", When), ("Deceased", "/deceasedBoolean", Text),
            ("Address", "/address/0", Address),
        ],
        "Claim" | "ExplanationOfBenefit" => &[
            ("Type", "/type", Text), ("Status", "/status", Text), ("Use", "/use", Text),
            ("Total", "/total", Money), ("Payment", "/payment/amount", Money),
            ("Billable period", "/billablePeriod", When), ("Created", "/created", When),
        ],
        _ => &[],
    }
}

/// Summary lines under construction; only sanitized, non-empty values get in.
struct Summary(Vec<(String, String)>);

impl Summary {
    fn add(&mut self, label: &str, value: Option<impl AsRef<str>>) {
        if let Some(value) = value {
            let value = sanitize(value.as_ref(), MAX_VALUE_CHARS);
            if !value.is_empty() {
                self.0.push((label.to_owned(), value));
            }
        }
    }

    fn show(&mut self, label: &str, v: &Value, show: Show) {
        let each = v.as_array().into_iter().flatten();
        match show {
            Show::Text => self.add(label, texts(v)),
            Show::When => self.add(label, when_text(v)),
            Show::Money => self.add(label, money_text(v)),
            Show::Count => self.add(label, count_text(v)),
            Show::Value => self.add(label, value_text(v)),
            Show::Name => self.add(label, human_name(v)),
            Show::Address => self.add(label, address_text(v)),
            Show::Components => each.for_each(|c| self.add(label, component_text(c))),
            Show::Ranges => each.for_each(|r| self.add(label, range_text(r))),
            Show::Reactions => each.for_each(|r| self.add(label, reaction_text(r))),
        }
    }
}

/// A described value, or the distinct descriptions of a list joined by ", ".
fn texts(v: &Value) -> Option<String> {
    match v.as_array() {
        Some(list) => describe_all(list.iter()),
        None => describe(v).map(str::to_owned),
    }
}

/// A date string as "YYYY-MM-DD" (raw text if not a date), or a Period.
fn when_text(v: &Value) -> Option<String> {
    match v {
        Value::String(raw) => Some(display_date(raw)),
        _ => period_text(v),
    }
}

/// Money or a Quantity; for a list of {category, amount}: "category: amount; ...".
fn money_text(v: &Value) -> Option<String> {
    let Some(list) = v.as_array() else {
        return quantity_text(v);
    };
    let totals = list.iter().filter_map(|t| {
        let amount = t.get("amount").and_then(quantity_text)?;
        Some(match t.get("category").and_then(describe) {
            Some(category) => format!("{category}: {amount}"),
            None => amount,
        })
    });
    join_distinct(totals, "; ")
}

fn count_text(v: &Value) -> Option<String> {
    let count = v
        .as_u64()
        .or_else(|| v.as_array().map(|a| a.len() as u64))?;
    (count > 0).then(|| count.to_string())
}

fn component_text(component: &Value) -> Option<String> {
    let name = component
        .get("code")
        .and_then(describe)
        .unwrap_or("Component");
    value_text(component).map(|value| format!("{name}: {value}"))
}

fn reaction_text(reaction: &Value) -> Option<String> {
    let manifestation = describe_all(items(reaction, "manifestation"));
    match (manifestation, str_field(reaction, "severity")) {
        (Some(m), Some(severity)) => Some(format!("{m} ({severity})")),
        (m, severity) => m.or_else(|| severity.map(str::to_owned)),
    }
}

fn address_text(address: &Value) -> Option<String> {
    let parts = ["city", "state", "postalCode", "country"];
    join_distinct(parts.iter().filter_map(|key| str_field(address, key)), ", ")
}

/// The `value[x]` of an Observation or component as text.
fn value_text(v: &Value) -> Option<String> {
    let owned = |s: &str| s.to_owned();
    v.get("valueQuantity")
        .and_then(quantity_text)
        .or_else(|| v.get("valueCodeableConcept").and_then(describe).map(owned))
        .or_else(|| str_field(v, "valueString").map(owned))
        .or_else(|| v.get("valueBoolean").and_then(describe).map(owned))
        .or_else(|| v.get("valueInteger").and_then(number_text))
        .or_else(|| v.get("valueRange").and_then(range_text))
        .or_else(|| v.get("valueRatio").and_then(ratio_text))
        .or_else(|| str_field(v, "valueDateTime").map(display_date))
        .or_else(|| v.get("valuePeriod").and_then(period_text))
        .or_else(|| {
            v.get("dataAbsentReason")
                .and_then(describe)
                .map(|d| format!("no value ({d})"))
        })
}

/// A Quantity or Money: comparator, value and unit (or code, or currency).
fn quantity_text(q: &Value) -> Option<String> {
    let value = q.get("value").and_then(number_text)?;
    let comparator = str_field(q, "comparator").unwrap_or_default();
    let unit = ["unit", "code", "currency"]
        .iter()
        .find_map(|k| str_field(q, k));
    Some(match unit {
        Some(unit) => format!("{comparator}{value} {unit}"),
        None => format!("{comparator}{value}"),
    })
}

/// A Range or reference range: "low to high", ">= low", "<= high" or its text.
fn range_text(r: &Value) -> Option<String> {
    let low = r.get("low").and_then(quantity_text);
    let high = r.get("high").and_then(quantity_text);
    let bounds = match (low, high) {
        (Some(low), Some(high)) => Some(format!("{low} to {high}")),
        (Some(low), None) => Some(format!(">= {low}")),
        (None, Some(high)) => Some(format!("<= {high}")),
        (None, None) => None,
    };
    bounds.or_else(|| str_field(r, "text").map(str::to_owned))
}

fn ratio_text(r: &Value) -> Option<String> {
    let numerator = r.get("numerator").and_then(quantity_text)?;
    let denominator = r.get("denominator").and_then(quantity_text)?;
    Some(format!("{numerator} / {denominator}"))
}

fn period_text(p: &Value) -> Option<String> {
    let start = str_field(p, "start").map(display_date);
    let end = str_field(p, "end").map(display_date);
    match (start, end) {
        (Some(start), Some(end)) if start == end => Some(start),
        (Some(start), Some(end)) => Some(format!("{start} to {end}")),
        (Some(start), None) => Some(format!("from {start}")),
        (None, Some(end)) => Some(format!("until {end}")),
        (None, None) => None,
    }
}

/// A FHIR date as "YYYY-MM-DD", or the raw text if it is not a valid date.
fn display_date(raw: &str) -> String {
    parse_date(raw).map_or_else(|| raw.to_owned(), format_date)
}

/// A JSON number for display: integers as is, decimals to 4 significant
/// digits (never dropping integer digits), trailing zeros removed.
fn number_text(v: &Value) -> Option<String> {
    let n = v.as_number()?;
    if n.is_i64() || n.is_u64() {
        return Some(n.to_string());
    }
    let x = n.as_f64()?;
    let magnitude = (x.abs().log10().floor() as i32).clamp(-10, 10);
    let decimals = usize::try_from((3 - magnitude).clamp(0, 6)).unwrap_or_default();
    let text = format!("{x:.decimals$}");
    Some(if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    })
}

/// Human text for a CodeableConcept, Coding, Reference, string or boolean:
/// text, display, first coding display, code, first coding code.
fn describe(v: &Value) -> Option<&str> {
    let text = match v {
        Value::String(s) => Some(s.as_str()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }),
        Value::Object(_) => str_field(v, "text")
            .or_else(|| str_field(v, "display"))
            .or_else(|| items(v, "coding").find_map(|c| str_field(c, "display")))
            .or_else(|| str_field(v, "code"))
            .or_else(|| items(v, "coding").find_map(|c| str_field(c, "code"))),
        _ => None,
    };
    text.filter(|t| !t.trim().is_empty())
}

fn describe_all<'a>(values: impl Iterator<Item = &'a Value>) -> Option<String> {
    join_distinct(values.filter_map(describe), ", ")
}

/// Joins the distinct strings in order, or `None` if there are none.
fn join_distinct<S: AsRef<str>>(parts: impl Iterator<Item = S>, separator: &str) -> Option<String> {
    let mut seen: Vec<S> = Vec::new();
    for part in parts {
        if !seen.iter().any(|s| s.as_ref() == part.as_ref()) {
            seen.push(part);
        }
    }
    let joined: Vec<&str> = seen.iter().map(AsRef::as_ref).collect();
    (!joined.is_empty()).then(|| joined.join(separator))
}

/// A non-blank string field of a JSON object.
fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The elements of an array field (none if absent or not an array).
fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Characters that must never reach a terminal: controls, and the invisible
/// bidirectional overrides that can make text display as something else.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}'
        )
        || matches!(c, '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Plain one-line text: control and bidi characters become spaces, whitespace
/// runs collapse to one space, ends are trimmed, and at most `max_chars`
/// characters are kept (cut on a character boundary).
fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let words = text
        .split(|c: char| c.is_whitespace() || is_hidden(c))
        .filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        let separator = (i > 0).then_some(' ');
        for c in separator.into_iter().chain(word.chars()) {
            if count == max_chars {
                return out.trim_end().to_owned();
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// The content type of a FHIR resource record: the registered FHIR JSON
/// type with the resource type and (when it is a valid FHIR id) the
/// resource id as parameters, so both can be read from a record's header
/// without its body.
pub fn content_type(resource_type: &str, id: Option<&str>) -> String {
    let mut ct = format!("{FHIR_CONTENT_TYPE}; resourceType={resource_type}");
    if let Some(id) = id.filter(|i| is_fhir_id(i)) {
        ct.push_str("; id=");
        ct.push_str(id);
    }
    ct
}

/// Whether a content type denotes FHIR JSON: its media type, parameters
/// aside, is [`FHIR_CONTENT_TYPE`].
pub fn is_fhir(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == FHIR_CONTENT_TYPE
}

/// A parameter of a FHIR record's content type.
fn fhir_param<'a>(content_type: &'a str, name: &str) -> Option<&'a str> {
    if !is_fhir(content_type) {
        return None;
    }
    content_type.split(';').skip(1).find_map(|p| {
        p.trim()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// The resource type of a FHIR record's content type, if it is one.
pub fn resource_type_of(content_type: &str) -> Option<&str> {
    fhir_param(content_type, "resourceType")
}

/// The resource id of a FHIR record's content type, if it names one.
pub fn resource_id_of(content_type: &str) -> Option<&str> {
    fhir_param(content_type, "id")
}

/// The (resource type, id) of a FHIR record's content type, when it names
/// both: what an import compares to skip resources a vault already holds.
pub fn resource_key(content_type: &str) -> Option<(String, String)> {
    Some((
        resource_type_of(content_type)?.to_owned(),
        resource_id_of(content_type)?.to_owned(),
    ))
}

/// Text from a record, an identity or the relay made safe to display:
/// control characters and invisible bidirectional overrides ([`is_hidden`])
/// become spaces, so nothing injects terminal escapes or displays as
/// something else.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if is_hidden(c) { ' ' } else { c })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    fn split(value: &Value) -> Result<Vec<Resource>, FhirError> {
        split_bundle(value.to_string().as_bytes())
    }

    fn line(resource: &Value, label: &str) -> Option<String> {
        summary(resource)
            .into_iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v)
    }

    fn lines(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(l, v)| (l.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn splits_every_sample_bundle() {
        let files = crate::sample_bundles();
        assert!(!files.is_empty(), "no sample bundles");
        let mut units_checked = 0;
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            let raw: Value = serde_json::from_slice(&bytes).unwrap();
            let entries = raw["entry"].as_array().unwrap();
            let resources = split_bundle(&bytes).unwrap();
            let name = path.display();
            assert_eq!(resources.len(), entries.len(), "{name}");
            let patients = resources.iter().filter(|r| r.resource_type == "Patient");
            assert_eq!(patients.count(), 1, "{name}");
            let mut ids = HashSet::new();
            for (resource, entry) in resources.iter().zip(entries) {
                let (id, rt) = (
                    resource.id.clone().unwrap(),
                    resource.resource_type.as_str(),
                );
                assert!(ids.insert(id.clone()), "{name}: duplicate id {id}");
                assert!(!resource.title.is_empty() && resource.title.chars().count() <= 200);
                assert!(
                    !resource.title.chars().any(char::is_control),
                    "{}",
                    resource.title
                );
                let value: Value = serde_json::from_slice(&resource.json).unwrap();
                assert_eq!(value, entry["resource"], "{name}: the JSON must round-trip");
                let dated = [
                    "Observation",
                    "Condition",
                    "Encounter",
                    "Procedure",
                    "Immunization",
                ];
                if dated.contains(&rt) {
                    assert!(
                        resource.effective_at.is_some(),
                        "{name}: {rt} {id} has no date"
                    );
                }
                let summary = summary(&value);
                assert_eq!(summary.last().unwrap(), &("Id".to_owned(), id), "{name}");
                assert!(summary.len() >= 2, "{name}: thin {rt} summary {summary:?}");
                if rt == "Observation" && has_category(&value, &["vital-signs", "laboratory"]) {
                    assert_eq!(resource.category, Category::Labs);
                    let unit = value.pointer("/valueQuantity/unit").and_then(Value::as_str);
                    if let Some(unit) = unit {
                        assert!(
                            line(&value, "Value").unwrap().ends_with(unit),
                            "{summary:?}"
                        );
                        units_checked += 1;
                    }
                }
            }
        }
        assert!(units_checked > 100);
    }

    #[test]
    fn summarizes_labs_and_blood_pressure() {
        let hba1c = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "category": [{"coding": [{"code": "laboratory"}]}],
            "code": {"coding": [{"display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
            "effectiveDateTime": "2012-03-04T10:00:00+00:00",
            "valueQuantity": {"value": 5.84123, "unit": "%"},
            "referenceRange": [{"low": {"value": 4, "unit": "%"}, "high": {"value": 5.6}}]});
        let expected = lines(&[
            ("Test", "Hemoglobin A1c/Hemoglobin.total in Blood"),
            ("Value", "5.841 %"),
            ("Reference range", "4 % to 5.6"),
            ("Date", "2012-03-04"),
            ("Status", "final"),
            ("Category", "laboratory"),
            ("Id", "o1"),
        ]);
        assert_eq!(summary(&hba1c), expected);
        assert_eq!(title(&hba1c), "Hemoglobin A1c/Hemoglobin.total in Blood");

        let bp = json!({"resourceType": "Observation", "code": {"text": "Blood Pressure"},
            "component": [
                {"code": {"text": "Systolic Blood Pressure"},
                    "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                {"code": {"text": "Diastolic Blood Pressure"},
                    "valueQuantity": {"value": 80.04, "unit": "mm[Hg]"}}]});
        let expected = lines(&[
            ("Test", "Blood Pressure"),
            ("Component", "Systolic Blood Pressure: 120 mm[Hg]"),
            ("Component", "Diastolic Blood Pressure: 80.04 mm[Hg]"),
        ]);
        assert_eq!(summary(&bp), expected);
    }

    #[test]
    fn summarizes_people_claims_and_unknown_types() {
        let patient = json!({"resourceType": "Patient", "birthDate": "1950-02-03",
            "address": [{"city": "Quincy", "state": "MA"}],
            "name": [{"use": "nickname", "given": ["Al"]},
                {"use": "official", "given": ["Ann", "B"], "family": "Lee"}]});
        assert_eq!(title(&patient), "Ann B Lee");
        assert_eq!(line(&patient, "Birth date").as_deref(), Some("1950-02-03"));
        assert_eq!(line(&patient, "Address").as_deref(), Some("Quincy, MA"));
        assert_eq!(effective_at(&patient), parse_date("1950-02-03"));

        let eob = json!({"resourceType": "ExplanationOfBenefit",
            "type": {"coding": [{"code": "institutional"}]},
            "total": [{"category": {"text": "Submitted"},
                "amount": {"value": 125, "currency": "USD"}}],
            "billablePeriod": {"start": "1979-09-29T08:33:08+00:00"}});
        assert_eq!(title(&eob), "Explanation of benefit: institutional");
        assert_eq!(line(&eob, "Total").as_deref(), Some("Submitted: 125 USD"));
        assert_eq!(
            line(&eob, "Billable period").as_deref(),
            Some("from 1979-09-29")
        );

        let unknown = json!({"resourceType": "Provenance", "id": "x\u{7}y"});
        assert_eq!(
            summary(&unknown),
            lines(&[("Resource", "Provenance"), ("Id", "x y")])
        );
        assert_eq!(summary(&json!([1])), lines(&[("Resource", "unknown")]));
    }

    #[test]
    fn categorizes_by_type_and_category() {
        let with_category = |rt: &str, code: &str| {
            json!({"resourceType": rt,
                "category": [{"coding": [{"code": code}]}]})
        };
        assert_eq!(
            categorize(&with_category("Observation", "vital-signs")),
            Category::Labs
        );
        assert_eq!(
            categorize(&with_category("Observation", "survey")),
            Category::Observations
        );
        assert_eq!(
            categorize(&with_category("DiagnosticReport", "lab")),
            Category::Labs
        );
        for (rt, category) in [
            ("DiagnosticReport", Category::Documents),
            ("MedicationStatement", Category::Medications),
            ("Goal", Category::CarePlans),
            ("Media", Category::Imaging),
            ("Coverage", Category::Administrative),
        ] {
            assert_eq!(categorize(&json!({ "resourceType": rt })), category, "{rt}");
        }
        assert_eq!(categorize(&json!("text")), Category::Administrative);
        let names: HashSet<_> = Category::ALL.iter().map(|c| c.collection_name()).collect();
        assert_eq!(names.len(), Category::ALL.len());
    }

    #[test]
    #[rustfmt::skip]
    fn parses_every_date_form() {
        let t = 1_564_964_378; // 2019-08-05T00:19:38Z
        for (text, expected) in [
            ("1970", 0), ("1970-01", 0), ("1970-01-02", 86_400),
            ("2019-08-05T00:19:38Z", t), ("2019-08-05T00:19:38.160+00:00", t),
            ("2019-08-05T02:19:38+02:00", t), ("2019-08-04T19:49:38-04:30", t),
            ("2019-08-05T00:19:38", t), ("2016-02-29", 1_456_704_000), ("2000-02-29", 951_782_400),
            ("1969-12-31T23:59:59Z", -1), ("1900-01-01", -2_208_988_800),
            ("0001-01-01", -62_135_596_800), ("9999-12-31T23:59:60+14:00", 253_402_250_400),
        ] {
            assert_eq!(parse_date(text), Some(expected), "{text}");
        }
        for garbage in [
            "", "abcd", "2019-13-01", "2019-00-10", "2019-02-29", "1900-02-29", "2019-04-31",
            "0000", "19", "2019-1-01", "2019-", "2019-01-", "2019-01-01T", "2019-01-01T24:00:00Z",
            "2019-01-01T10:60:00Z", "2019-01-01T10:00Z", "2019-01-01T10:00:00.Z",
            "2019-01-01T10:00:00+15:00", "2019-01-01T10:00:00+0100", "2019-01-01Z",
            "2019-01-01 10:00:00", " 2019", "２０１９", "2019-01-01T10:00:00+01:00x",
        ] {
            assert_eq!(parse_date(garbage), None, "{garbage:?}");
        }
        assert_eq!(parse_date(&format!("2019-01-01T10:00:00.{}Z", "1".repeat(60))), None);
        assert_eq!(parse_date(&"9".repeat(10_000)), None);
    }

    #[test]
    fn format_date_round_trips() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(951_782_400), "2000-02-29");
        let mut t = -62_135_596_800_i64; // 0001-01-01
        while t < 253_402_300_799 {
            assert_eq!(
                parse_date(&format_date(t)),
                Some(t - t.rem_euclid(86_400)),
                "{t}"
            );
            t += 86_400 * 13 + 3_607;
        }
        assert!([i64::MIN, i64::MAX]
            .iter()
            .all(|&t| !format_date(t).is_empty()));
    }

    #[test]
    fn rejects_bad_input_with_helpful_errors() {
        let err = split_bundle(b"{\n  \"resourceType\": \"Bundle\",\n  oops").unwrap_err();
        assert!(
            matches!(
                err,
                FhirError::NotJson {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let expected = "the file is not valid JSON (key must be a string at line 3, column 3)";
        assert!(err.to_string().starts_with(expected), "{err}");
        let deep = "[".repeat(100_000);
        for not_json in [&b""[..], b"<Bundle/>", deep.as_bytes(), b"{} {}"] {
            assert!(matches!(
                split_bundle(not_json),
                Err(FhirError::NotJson { .. })
            ));
        }
        for no_type in [&b"{}"[..], b"[]", b"42", b"{\"resourceType\": 7}"] {
            let err = split_bundle(no_type).unwrap_err();
            assert!(
                err.to_string()
                    .contains("is this a FHIR R4 resource or Bundle?"),
                "{err}"
            );
        }
        let err = split_bundle(br#"{"resourceType": "../etc\u0000"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resourceType \"../etc\" is not a FHIR resource type name; \
             export the record as FHIR R4 JSON and try again"
        );

        let bad = |entries: Value| {
            let err = split(&json!({"resourceType": "Bundle", "entry": entries})).unwrap_err();
            (err.to_string(), err)
        };
        let (message, err) = bad(json!([{"resource": {"resourceType": "Basic"}}, {"resource": 1}]));
        assert!(
            matches!(err, FhirError::BundleEntry { index: 1, .. }),
            "{err:?}"
        );
        assert_eq!(
            message,
            "Bundle entry[1] is invalid: its \"resource\" is not a JSON object; \
             fix or remove that entry and import again"
        );
        let (message, _) = bad(json!([{"resource": {"id": "x"}}]));
        assert!(message.contains("entry[0] is invalid: its resource has no resourceType"));
        let (message, _) = bad(json!([7]));
        assert!(message.contains("entry[0] is invalid: it is not a JSON object"));
        let nested = json!({"resource": {"resourceType": "Bundle", "entry": [{}, 5]}});
        let (message, _) = bad(json!([{}, nested]));
        assert!(message.contains("entry[1] is invalid: in its nested Bundle, entry[1]"));
        assert!(matches!(bad(json!({})).1, FhirError::InvalidBundle { .. }));

        let entry = r#"{"resource":{"resourceType":"Basic"}}"#;
        let entries = vec![entry; MAX_RESOURCES + 1].join(",");
        let too_many = format!(r#"{{"resourceType":"Bundle","entry":[{entries}]}}"#);
        let err = split_bundle(too_many.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                FhirError::TooMany {
                    limit: MAX_RESOURCES
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn splits_single_resources_nested_bundles_and_sets_ids() {
        let condition = json!({"resourceType": "Condition", "id": "c1",
            "code": {"text": "Hypertension"}, "onsetDateTime": "2001-02-03"});
        let resources = split(&condition).unwrap();
        assert_eq!(resources.len(), 1);
        let r = &resources[0];
        assert_eq!(
            (r.id.as_deref(), r.title.as_str()),
            (Some("c1"), "Hypertension")
        );
        assert_eq!(r.category, Category::Conditions);
        assert_eq!(r.effective_at, parse_date("2001-02-03"));
        assert_eq!(serde_json::from_slice::<Value>(&r.json).unwrap(), condition);

        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:aaaa-1", "resource": {"resourceType": "Patient", "id": "keep"}},
            {"request": {"method": "DELETE", "url": "Patient/9"}},
            {"resource": {"resourceType": "Bundle", "type": "document", "entry": [
                {"fullUrl": "urn:uuid:bbbb-2", "resource": {"resourceType": "Observation",
                    "subject": {"reference": "urn:uuid:aaaa-1"}}},
                {"fullUrl": "urn:uuid:bad id!", "resource": {"resourceType": "Goal"}}]}},
            {"fullUrl": "http://x/Encounter/3", "resource": {"resourceType": "Encounter"}}]});
        let resources = split(&bundle).unwrap();
        let found: Vec<_> = resources
            .iter()
            .map(|r| (r.resource_type.as_str(), r.id.as_deref()))
            .collect();
        let expected = [
            ("Patient", Some("keep")),
            ("Observation", Some("bbbb-2")),
            ("Goal", None),
            ("Encounter", None),
        ];
        assert_eq!(found, expected);
        let observation: Value = serde_json::from_slice(&resources[1].json).unwrap();
        assert_eq!(observation["id"], "bbbb-2");
        assert_eq!(observation["subject"]["reference"], "urn:uuid:aaaa-1");

        let with_bom = [UTF8_BOM, br#"{"resourceType": "Bundle"}"#].concat();
        assert!(split_bundle(&with_bom).unwrap().is_empty());
    }

    #[test]
    fn titles_are_sanitized_and_truncated() {
        let condition = |text: &str| json!({"resourceType": "Condition", "code": {"text": text}});
        let messy = " Flu\n\t(seasonal)\u{1b}[31m \u{202E}x ";
        assert_eq!(title(&condition(messy)), "Flu (seasonal) [31m x");
        let long = title(&condition(&("é".repeat(150) + &"€".repeat(150))));
        assert_eq!(long, "é".repeat(150) + &"€".repeat(50));
        assert_eq!(title(&condition("\u{0}\u{7}\n")), "Condition");
        let vaccine = json!({"coding": [{"display": "Td (adult)"}]});
        let modality = json!([{"modality": {"display": "Ultrasound"}}]);
        for (resource, expected) in [
            (
                json!({"resourceType": "Immunization", "vaccineCode": vaccine}),
                "Td (adult)",
            ),
            (
                json!({"resourceType": "Encounter", "class": {"code": "AMB"}}),
                "AMB",
            ),
            (
                json!({"resourceType": "Organization", "name": "Clinic"}),
                "Clinic",
            ),
            (json!({"resourceType": "Claim"}), "Claim: unknown type"),
            (
                json!({"resourceType": "ImagingStudy", "series": modality}),
                "Ultrasound",
            ),
            (json!({}), "Resource"),
            (json!(null), "Resource"),
        ] {
            assert_eq!(title(&resource), expected);
        }
    }
}
