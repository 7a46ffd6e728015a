//! Feeds a FHIR R4 JSON document to `vault_fhir::split_bundle`, then
//! every resource it yields to `categorize`, `title`, `effective_at` and
//! `summary` (as the import and the record views do), and every title and
//! summary value to `clean`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_fhir as fhir;

fuzz_target!(|data: &[u8]| {
    let Ok(resources) = fhir::split_bundle(data) else {
        return;
    };
    for r in resources {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&r.json) else {
            panic!("split_bundle produced invalid JSON");
        };
        let _ = fhir::categorize(&value);
        let title = fhir::title(&value);
        assert!(!title.is_empty());
        let _ = fhir::clean(&title);
        if let Some(t) = fhir::effective_at(&value) {
            let _ = fhir::format_date(t);
        }
        for (label, text) in fhir::summary(&value) {
            let _ = (fhir::clean(&label), fhir::clean(&text));
        }
        let ct = fhir::content_type(&r.resource_type, r.id.as_deref());
        let _ = (fhir::resource_type_of(&ct), fhir::resource_id_of(&ct));
    }
});
