#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Keeps the checked-in OpenAPI document (`relay-server/openapi.json`,
//! served at `GET /v1/openapi.json`) in step with the router.
//!
//! The router's routes are read from the source of `src/app.rs` rather than
//! listed here, so adding, removing or changing a route without documenting
//! it fails this test. The scan tokenizes the source (skipping comments,
//! string and char literals) and reads every `.route("PATH", METHOD(..)
//! .METHOD(..)..)` call, however it is laid out over lines.

use std::collections::BTreeSet;

use relay_server::app::OPENAPI;
use serde_json::Value;

/// The router's source.
const APP_RS: &str = include_str!("../src/app.rs");

/// HTTP methods as OpenAPI path-item keys (lowercase), which are also the
/// names of axum's `MethodRouter` constructors and chaining methods.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A token of Rust source, as far as this scan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword (or a number, which never matters here).
    Ident(String),
    /// The value of a string literal (escapes are kept as written).
    Str(String),
    /// A character literal or lifetime (never matters here).
    Other,
    /// One punctuation character.
    Punct(char),
}

/// Tokenizes Rust source: skips whitespace and (nested) comments, reads
/// string, raw string, byte string and char literals whole so that
/// brackets, commas or `.route(` inside them are never seen as code.
fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).copied();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == Some('/') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0usize;
            loop {
                if i >= n {
                    panic!("unterminated block comment in app.rs");
                }
                if chars[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            let (s, next) = read_string(&chars, i + 1);
            toks.push(Tok::Str(s));
            i = next;
        } else if let Some((hashes, quote)) = raw_string_start(&chars, i) {
            let (s, next) = read_raw_string(&chars, quote + 1, hashes);
            toks.push(Tok::Str(s));
            i = next;
        } else if c == 'b' && at(i + 1) == Some('"') {
            let (s, next) = read_string(&chars, i + 2);
            toks.push(Tok::Str(s));
            i = next;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime/label ('a).
            if at(i + 1) == Some('\\') {
                // Skip the escaped character, which may itself be a quote.
                let mut j = i + 3;
                while j < n && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(i + 2) == Some('\'') {
                i += 3;
            } else {
                i += 1;
                while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            toks.push(Tok::Other);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < n && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// Reads a string literal's contents from just after its opening quote;
/// returns them and the index after the closing quote.
fn read_string(chars: &[char], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None => panic!("unterminated string literal in app.rs"),
            Some('\\') => {
                s.push('\\');
                if let Some(e) = chars.get(i + 1) {
                    s.push(*e);
                }
                i += 2;
            }
            Some('"') => return (s, i + 1),
            Some(c) => {
                s.push(*c);
                i += 1;
            }
        }
    }
}

/// If a raw string literal (`r"`, `r#"`, `br"`, …) starts at `i`, the
/// number of `#` and the index of its opening quote.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    // Not the tail of a longer identifier (such as `bar"`).
    if i > 0
        && chars
            .get(i - 1)
            .is_some_and(|p| p.is_alphanumeric() || *p == '_')
    {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j))
}

/// Reads a raw string's contents from just after its opening quote.
fn read_raw_string(chars: &[char], mut i: usize, hashes: usize) -> (String, usize) {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None => panic!("unterminated raw string literal in app.rs"),
            Some('"') if (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) => {
                return (s, i + 1 + hashes);
            }
            Some(c) => {
                s.push(*c);
                i += 1;
            }
        }
    }
}

/// axum's `{*rest}` wildcard is OpenAPI's `{rest}`; `{name}` is the same
/// in both.
fn openapi_template(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// Every (METHOD, path template) registered in `src/app.rs` with
/// `.route(PATH, METHOD(..)[.METHOD(..)]*)`.
fn router_routes(src: &str) -> BTreeSet<(String, String)> {
    let toks = tokenize(src);
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < toks.len() {
        if toks[i] != Tok::Punct('.') {
            i += 1;
            continue;
        }
        let Tok::Ident(name) = &toks[i + 1] else {
            i += 1;
            continue;
        };
        if toks[i + 2] != Tok::Punct('(') {
            i += 1;
            continue;
        }
        match name.as_str() {
            "route" => {}
            // Routes registered these ways would escape the scan below.
            "nest" | "nest_service" | "route_service" => {
                panic!(".{name}(..) in app.rs: teach tests/openapi.rs to read it")
            }
            _ => {
                i += 1;
                continue;
            }
        }
        // `.route(` — the path literal, a comma, then the method router.
        let Some(Tok::Str(path)) = toks.get(i + 3) else {
            panic!("a .route(..) in app.rs whose path is not a string literal");
        };
        assert_eq!(
            toks.get(i + 4),
            Some(&Tok::Punct(',')),
            "expected a comma after the path of .route(\"{path}\", ..)"
        );
        let (methods, end) = method_router(&toks, i + 5, path);
        assert!(
            !methods.is_empty(),
            ".route(\"{path}\", ..) registers no method"
        );
        for m in methods {
            let added = out.insert((m.to_uppercase(), openapi_template(path)));
            assert!(
                added,
                "{} {path} is registered twice in app.rs",
                m.to_uppercase()
            );
        }
        i = end;
    }
    out
}

/// Reads the method-router argument of a `.route(` call starting at token
/// `start`, up to the call's closing parenthesis: the leading constructor
/// (`get(..)`, possibly path-qualified as `routing::get(..)`) and every
/// `.get(..)`/`.post(..)`/… chained on it at the argument's top level.
/// Returns the methods and the index after the call.
fn method_router(toks: &[Tok], start: usize, path: &str) -> (Vec<String>, usize) {
    // The constructor: `a::b::get(`.
    let mut j = start;
    let mut ctor = None;
    while let Some(Tok::Ident(id)) = toks.get(j) {
        if toks.get(j + 1) == Some(&Tok::Punct('(')) {
            ctor = Some(id.clone());
            break;
        }
        if toks.get(j + 1) == Some(&Tok::Punct(':')) && toks.get(j + 2) == Some(&Tok::Punct(':')) {
            j += 3;
        } else {
            break;
        }
    }
    let Some(ctor) = ctor else {
        panic!(".route(\"{path}\", ..): the method router does not start with a call like get(..)");
    };
    assert!(
        METHODS.contains(&ctor.as_str()),
        ".route(\"{path}\", {ctor}(..)): not a per-method constructor; teach tests/openapi.rs to read it"
    );
    let mut methods = vec![ctor];
    let mut depth = 0usize;
    let mut k = j + 1; // at the constructor's `(`
    loop {
        let Some(t) = toks.get(k) else {
            panic!(".route(\"{path}\", ..) is not closed");
        };
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                if depth == 0 {
                    // The `.route(` call's closing parenthesis.
                    return (methods, k + 1);
                }
                depth -= 1;
            }
            Tok::Punct(',') if depth == 0 => {
                // A trailing comma; the call must close right after it.
                assert_eq!(
                    toks.get(k + 1),
                    Some(&Tok::Punct(')')),
                    ".route(\"{path}\", ..) has more than two arguments"
                );
                return (methods, k + 2);
            }
            Tok::Punct('.') if depth == 0 => {
                if let (Some(Tok::Ident(m)), Some(Tok::Punct('('))) =
                    (toks.get(k + 1), toks.get(k + 2))
                {
                    if METHODS.contains(&m.as_str()) {
                        methods.push(m.clone());
                    }
                }
            }
            _ => {}
        }
        k += 1;
    }
}

/// Every (METHOD, path template) operation in the document.
fn document_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for key in item.keys() {
            if METHODS.contains(&key.as_str()) {
                out.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Resolves a local reference (`#/components/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows `$ref` (if any) to the object it names.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
        None => v,
    }
}

/// Collects every `$ref` string in the document, with where it is.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    if let Value::String(r) = child {
                        out.push((at.to_string(), r.clone()));
                    }
                }
                refs(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every operation: (METHOD, path, path item, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, op) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                out.push((key.to_uppercase(), path.clone(), item, op));
            }
        }
    }
    out
}

fn parse() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON")
}

#[test]
fn is_openapi_3_1() {
    let doc = parse();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(
        version.starts_with("3.1"),
        "openapi is {version}, not 3.1.x"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
}

#[test]
fn documents_exactly_the_routes_of_the_router() {
    let router = router_routes(APP_RS);
    let documented = document_routes(&parse());
    let undocumented: Vec<_> = router.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&router).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "openapi.json is out of step with src/app.rs\n  routed but not documented: {undocumented:?}\n  documented but not routed: {stale:?}"
    );
}

#[test]
fn every_operation_lists_responses() {
    let doc = parse();
    for (method, path, _, op) in operations(&doc) {
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        assert!(!responses.is_empty(), "{method} {path} lists no responses");
        for (status, response) in responses {
            assert!(
                status == "default"
                    || (status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit())),
                "{method} {path}: response key {status:?} is not a status code"
            );
            assert!(
                deref(&doc, response)["description"].is_string(),
                "{method} {path} {status}: a response needs a description"
            );
        }
    }
}

#[test]
fn every_ref_resolves() {
    let doc = parse();
    let mut found = Vec::new();
    refs(&doc, "#", &mut found);
    assert!(!found.is_empty());
    for (at, r) in found {
        assert!(
            r.starts_with("#/"),
            "{at}: $ref {r} is not local to the document"
        );
        assert!(
            resolve(&doc, &r).is_some(),
            "{at}: $ref {r} does not resolve"
        );
    }
}

#[test]
fn path_parameters_match_templates() {
    let doc = parse();
    for (method, path, item, op) in operations(&doc) {
        let in_template: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string()))
            .collect();
        let mut declared = BTreeSet::new();
        for params in [&item["parameters"], &op["parameters"]] {
            for p in params.as_array().into_iter().flatten() {
                let p = deref(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(
                        p["required"], true,
                        "{method} {path}: path parameters are required"
                    );
                    assert!(
                        p["schema"]["pattern"].is_string(),
                        "{method} {path}: path parameter {} needs a pattern",
                        p["name"]
                    );
                    declared.insert(p["name"].as_str().unwrap().to_string());
                }
            }
        }
        assert_eq!(in_template, declared, "{method} {path}: path parameters");
    }
}

#[test]
fn signed_routes_require_the_six_headers() {
    use vault_core::request::{
        HEADER_CONTENT_SHA256, HEADER_IDENTITY, HEADER_NONCE, HEADER_RELAY, HEADER_SIGNATURE,
        HEADER_TIMESTAMP,
    };
    let doc = parse();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let headers: BTreeSet<&str> = [
        HEADER_IDENTITY,
        HEADER_TIMESTAMP,
        HEADER_NONCE,
        HEADER_CONTENT_SHA256,
        HEADER_RELAY,
        HEADER_SIGNATURE,
    ]
    .into();
    for (method, path, _, op) in operations(&doc) {
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path}: state `security` explicitly"));
        // Unsigned: outside /v1, the document itself, publishing an
        // identity (signed by the identity in its body, which need not be
        // published yet), and the public SMART Health Links routes.
        let unsigned = !path.starts_with("/v1/")
            || (method == "GET" && path == "/v1/openapi.json")
            || (method == "PUT" && path == "/v1/identities")
            // SMART Health Links' public side: anyone holding a link.
            || path.starts_with("/v1/shl/");
        if unsigned {
            assert!(
                security.is_empty(),
                "{method} {path} should not require the signed-request scheme"
            );
            continue;
        }
        assert_eq!(
            security.len(),
            1,
            "{method} {path}: one requirement, all six headers together"
        );
        let named: BTreeSet<&str> = security[0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| {
                let s = &schemes[k];
                assert_eq!(s["type"], "apiKey", "{k}");
                assert_eq!(s["in"], "header", "{k}");
                s["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(named, headers, "{method} {path}: signed-request headers");
    }
    // Publishing an identity still carries the six headers.
    let publish = &doc["paths"]["/v1/identities"]["put"];
    let params: BTreeSet<&str> = publish["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| deref(&doc, p))
        .filter(|p| p["in"] == "header" && p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params, headers,
        "PUT /v1/identities must document the six headers"
    );
}

#[test]
fn route_scan_handles_chains_layouts_and_noise() {
    let src = r#"
        // .route("/commented", get(nope))
        /* .route("/blocked", /* nested */ post(nope)) */
        let r = Router::new()
            .route("/a/{id}", get(a).post(b))
            .route(
                "/b",
                axum::routing::put(|| async { json!({"x": ")", "y": [1, 2]}) })
                    .layer(Layer::new().get(ignored))
                    .delete(c),
            )
            .route_layer(x)
            .route("/c/{*rest}", get(c),)
            .route("/s", get(|| async { ".route(\"/fake\", get(f))" }));
        let quote = '\'';
        let brace = '(';
        let label = 'a';
    "#;
    let got = router_routes(src);
    let want: BTreeSet<(String, String)> = [
        ("GET", "/a/{id}"),
        ("POST", "/a/{id}"),
        ("PUT", "/b"),
        ("DELETE", "/b"),
        ("GET", "/c/{rest}"),
        ("GET", "/s"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
}
