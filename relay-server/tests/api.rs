//! In-process tests of every route (`app().oneshot(...)`), including each
//! authentication failure and each kind of bad input, asserting that a
//! refused request changes nothing.
//!
//! On SQLite + files by default. `RELAY_TEST_BACKEND=postgres-s3` (with
//! the `postgres` and `s3` features) runs them on PostgreSQL and S3
//! instead: private PostgreSQL and SeaweedFS started on loopback
//! (`tests/services`), a fresh database and bucket prefix per relay. The
//! few tests about the embedded store itself (its files, its backup, its
//! schema upgrades) run on SQLite only; they say so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(feature = "postgres", feature = "s3"))]
mod services;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use relay_server::{Config, Relay};
use serde_json::{json, Value};
use tower::ServiceExt;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{
    IdentityInfo, Keyring, LogEntry, Permission, RecordInfo, Role, SecretIdentity, VaultState,
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The origin in-process relays accept: the loopback origin of the default
/// listen address (`Config::for_data_dir`).
fn origin() -> RelayOrigin {
    RelayOrigin::parse("http://127.0.0.1:8787").unwrap()
}

fn ident(seed: u8, name: &str, role: Role) -> SecretIdentity {
    SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: now() - 1000,
        },
    )
    .unwrap()
}

/// The content address of a ciphertext, as clients write it (BLAKE3,
/// `docs/format.md` §6.3).
fn address(ct: &[u8]) -> [u8; 32] {
    vault_core::address::AddressKind::CURRENT.digest(ct)
}

/// Whether `RELAY_TEST_BACKEND=postgres-s3` asks for PostgreSQL and S3.
fn shared_backend() -> bool {
    let asked = std::env::var("RELAY_TEST_BACKEND").is_ok_and(|v| v == "postgres-s3");
    assert!(
        !asked || cfg!(all(feature = "postgres", feature = "s3")),
        "RELAY_TEST_BACKEND=postgres-s3 needs --features postgres,s3"
    );
    asked
}

/// Whether this test is about the embedded store only; such tests return
/// at once on PostgreSQL and S3.
fn embedded_only(what: &str) -> bool {
    if shared_backend() {
        eprintln!("{what}: SQLite + files only; skipped on PostgreSQL + S3");
        return true;
    }
    false
}

#[cfg(not(all(feature = "postgres", feature = "s3")))]
mod shared {
    pub fn connect(_: relay_server::Config) -> relay_server::Relay {
        unreachable!("checked by shared_backend")
    }
}

/// Relays on the test services: connected on a runtime of their own that
/// lives as long as the test process (a test's runtime ends with it),
/// each on a fresh database and bucket prefix.
#[cfg(all(feature = "postgres", feature = "s3"))]
mod shared {
    use std::sync::{Arc, OnceLock};

    use relay_server::storage::backends::{BlobBackend, MetaBackend};
    use relay_server::{Config, Relay};

    use super::services;

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
    }

    /// The services, kept for the whole process (the watchdog stops them
    /// when it exits).
    static CLUSTER: tokio::sync::OnceCell<Arc<services::Cluster>> =
        tokio::sync::OnceCell::const_new();

    pub fn connect(mut config: Config) -> Relay {
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let cluster = CLUSTER.get_or_init(services::cluster).await;
                let url = cluster.pg.fresh_database(&cluster.unique("api")).await;
                config.storage.meta = MetaBackend::Postgres(url);
                config.storage.blobs = BlobBackend::S3 {
                    location: cluster.s3.location(&cluster.unique("api")),
                    credentials: services::credentials(),
                };
                config.storage.database_pool = 8;
                let relay = Relay::connect(config).await.unwrap();
                assert!(
                    relay.storage.contains("postgres") && relay.storage.contains("s3://"),
                    "not on PostgreSQL and S3: {}",
                    relay.storage
                );
                relay
            })
        })
        .join()
        .unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct T {
    router: Router,
    relay: Relay,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
enum Payload {
    None,
    Json(Vec<u8>),
    Raw(&'static str, Vec<u8>),
}

impl T {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_data_dir(dir.path());
        f(&mut config);
        let relay = if shared_backend() {
            shared::connect(config)
        } else {
            Relay::open(config).unwrap()
        };
        Self {
            router: relay.router(),
            relay,
            _dir: dir,
        }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn json(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (s, _, b) = self.call(req).await;
        let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
        (s, v)
    }

    /// Sends and expects an error with this status and code.
    async fn refused(&self, req: Request<Body>, status: StatusCode, code: &str) -> Value {
        let (s, v) = self.json(req).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
        v
    }

    async fn publish(&self, me: &SecretIdentity) {
        let (s, v) = self
            .json(signed(
                me,
                "PUT",
                "/v1/identities",
                json_payload(json!({ "identity": me.public().to_text() })),
            ))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
    }

    /// Publishes `me`, signed for the relay at `relay`.
    async fn publish_for(&self, me: &SecretIdentity, relay: &RelayOrigin) {
        let body = serde_json::to_vec(&json!({ "identity": me.public().to_text() })).unwrap();
        let auth = RequestAuth::sign(
            me,
            "PUT",
            "/v1/identities",
            relay,
            now(),
            body_digest(&body),
        )
        .unwrap();
        let (s, v) = self
            .json(build(&auth, "PUT", "/v1/identities", Payload::Json(body)))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
    }

    async fn head(&self, me: &SecretIdentity, vault: &str) -> Value {
        let (s, v) = self
            .json(signed(
                me,
                "GET",
                &format!("/v1/vaults/{vault}/head"),
                Payload::None,
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["head"].clone()
    }
}

fn json_payload(v: Value) -> Payload {
    Payload::Json(serde_json::to_vec(&v).unwrap())
}

fn build(auth: &RequestAuth, method: &str, pq: &str, payload: Payload) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(pq);
    for (k, v) in auth.headers() {
        b = b.header(k, v);
    }
    match payload {
        Payload::None => b.body(Body::empty()).unwrap(),
        Payload::Json(bytes) => b
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap(),
        Payload::Raw(ct, bytes) => b
            .header("content-type", ct)
            .body(Body::from(bytes))
            .unwrap(),
    }
}

fn payload_bytes(p: &Payload) -> Vec<u8> {
    match p {
        Payload::None => Vec::new(),
        Payload::Json(b) | Payload::Raw(_, b) => b.clone(),
    }
}

fn signed_at(
    me: &SecretIdentity,
    ts: u64,
    method: &str,
    pq: &str,
    payload: Payload,
) -> Request<Body> {
    let auth = RequestAuth::sign(
        me,
        method,
        pq,
        &origin(),
        ts,
        body_digest(&payload_bytes(&payload)),
    )
    .unwrap();
    build(&auth, method, pq, payload)
}

fn signed(me: &SecretIdentity, method: &str, pq: &str, payload: Payload) -> Request<Body> {
    signed_at(me, now(), method, pq, payload)
}

fn head_json(state: &VaultState) -> Value {
    let h = state.head();
    json!({ "seq": h.seq, "hash": hex::encode(h.head) })
}

fn append_req(me: &SecretIdentity, state: &VaultState, entries: &[&LogEntry]) -> Request<Body> {
    let body = json!({
        "prev": head_json(state),
        "entries": entries.iter().map(|e| b64(e.to_bytes())).collect::<Vec<_>>(),
    });
    signed(
        me,
        "POST",
        &format!("/v1/vaults/{}/log", state.vault().to_hex()),
        json_payload(body),
    )
}

/// A patient with a vault and a "labs" collection on the relay, and two
/// published clinicians.
struct World {
    t: T,
    patient: Arc<SecretIdentity>,
    alice: Arc<SecretIdentity>,
    bob: Arc<SecretIdentity>,
    state: VaultState,
    labs: vault_core::CollectionId,
    vault: String,
}

impl World {
    async fn new() -> Self {
        Self::on(T::new()).await
    }

    async fn on(t: T) -> Self {
        let patient = Arc::new(ident(1, "Pat Patient", Role::Patient));
        let alice = Arc::new(ident(2, "Dr Alice", Role::Clinician));
        let bob = Arc::new(ident(3, "Dr Bob", Role::Clinician));
        for p in [&patient, &alice, &bob] {
            t.publish(p).await;
        }
        let (mut state, genesis) = VaultState::create(&patient, now()).unwrap();
        let (s, v) = t
            .json(signed(
                &patient,
                "POST",
                "/v1/vaults",
                json_payload(json!({ "genesis": b64(genesis.to_bytes()) })),
            ))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (labs, e) = state.create_collection(&patient, "labs", now()).unwrap();
        let (s, v) = t.json(append_req(&patient, &state, &[&e])).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        state.apply(&e).unwrap();
        assert_eq!(v["head"], head_json(&state));
        let vault = state.vault().to_hex();
        Self {
            t,
            patient,
            alice,
            bob,
            state,
            labs,
            vault,
        }
    }

    /// Appends entries as `who`, expecting success.
    async fn append(&mut self, who: &SecretIdentity, entries: &[&LogEntry]) {
        let (s, v) = self.t.json(append_req(who, &self.state, entries)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for e in entries {
            self.state.apply(e).unwrap();
        }
    }

    async fn share(&mut self, member: &SecretIdentity, permission: Permission) {
        let mut kr = Keyring::new(&self.patient, now());
        let e = self
            .state
            .share_collection(&mut kr, &self.labs, member.public(), permission, None)
            .unwrap();
        let patient = self.patient.clone();
        self.append(&patient, &[&e]).await;
    }

    /// Seals a record as `author`, returning its ciphertext and entry
    /// (nothing sent).
    fn seal(&self, author: &SecretIdentity, body: &[u8]) -> (Vec<u8>, LogEntry) {
        self.seal_on(&self.state, author, body).unwrap()
    }

    fn seal_on(
        &self,
        state: &VaultState,
        author: &SecretIdentity,
        body: &[u8],
    ) -> vault_core::Result<(Vec<u8>, LogEntry)> {
        let mut kr = Keyring::new(author, now());
        let mut ct = Vec::new();
        let info = RecordInfo {
            content_type: "text/plain".into(),
            title: "result".into(),
            created_at: now(),
            effective_at: None,
        };
        let (_, e) = state.put_record(
            &mut kr,
            &self.labs,
            None,
            &info,
            vault_core::RecordBody::new(body, body.len() as u64),
            &mut ct,
        )?;
        Ok((ct, e))
    }

    fn blob_path(&self, ct: &[u8]) -> String {
        format!(
            "/v1/vaults/{}/blobs/{}",
            self.vault,
            hex::encode(address(ct))
        )
    }

    fn put_chunk(
        &self,
        who: &SecretIdentity,
        ct: &[u8],
        offset: usize,
        chunk: &[u8],
    ) -> Request<Body> {
        let pq = self.blob_path(ct);
        let auth =
            RequestAuth::sign(who, "PUT", &pq, &origin(), now(), body_digest(chunk)).unwrap();
        let mut req = build(
            &auth,
            "PUT",
            &pq,
            Payload::Raw("application/octet-stream", chunk.to_vec()),
        );
        let h = req.headers_mut();
        h.insert("upload-length", ct.len().to_string().parse().unwrap());
        h.insert("upload-offset", offset.to_string().parse().unwrap());
        req
    }

    async fn upload(&self, who: &SecretIdentity, ct: &[u8]) {
        let (s, v) = self.t.json(self.put_chunk(who, ct, 0, ct)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn put_record(&mut self, who: &SecretIdentity, body: &[u8]) -> Vec<u8> {
        let (ct, e) = self.seal(who, body);
        self.upload(who, &ct).await;
        self.append(who, &[&e]).await;
        ct
    }
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let t = T::new();
    let (s, v) = t
        .json(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let (s, v) = t
        .json(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.is_object());
    // Metrics reveal activity timing: never on the public listener.
    t.refused(
        Request::get("/metrics").body(Body::empty()).unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let resp = t
        .relay
        .admin_router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("relay_requests_total"), "{text}");
    // Counted under the route templates that served them, not `other`.
    for route in ["/healthz", "/v1/openapi.json"] {
        assert!(
            text.contains(&format!("route=\"{route}\",method=\"GET\",status=\"200\"")),
            "{route} is not counted under its template: {text}"
        );
    }
    assert!(text.contains("relay_group_commit_batch_size"), "{text}");
    t.refused(
        Request::get("/nowhere").body(Body::empty()).unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    t.refused(
        Request::delete("/healthz").body(Body::empty()).unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn identities_publish_and_look_up() {
    let t = T::new();
    let alice = ident(2, "Dr Alice", Role::Clinician);
    let bob = ident(3, "Dr Bob", Role::Clinician);
    let body = json_payload(json!({ "identity": alice.public().to_text() }));
    let (s, v) = t
        .json(signed(&alice, "PUT", "/v1/identities", body.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["fingerprint"], alice.fingerprint().to_hex());
    let (s, _) = t
        .json(signed(&alice, "PUT", "/v1/identities", body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK);

    // Bob cannot publish Alice's document, nor his own signed by Alice.
    t.refused(
        signed(&bob, "PUT", "/v1/identities", body.clone()),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    let bobs = json_payload(json!({ "identity": bob.public().to_text() }));
    t.refused(
        signed(&alice, "PUT", "/v1/identities", bobs),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // Garbage documents and bodies.
    t.refused(
        signed(
            &bob,
            "PUT",
            "/v1/identities",
            json_payload(json!({ "identity": "vault-identity:v1:AAAA" })),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_identity",
    )
    .await;
    t.refused(
        signed(
            &bob,
            "PUT",
            "/v1/identities",
            Payload::Json(b"{\"identity\":".to_vec()),
        ),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;

    let pq = format!("/v1/identities/{}", alice.fingerprint().to_hex());
    let (s, v) = t.json(signed(&alice, "GET", &pq, Payload::None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["identity"], alice.public().to_text());
    // Bob was never published: he cannot even look things up, and is told
    // exactly what a bad signature is told.
    t.refused(
        signed(&bob, "GET", &pq, Payload::None),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    let missing = format!("/v1/identities/{}", bob.fingerprint().to_hex());
    t.refused(
        signed(&alice, "GET", &missing, Payload::None),
        StatusCode::NOT_FOUND,
        "identity_not_found",
    )
    .await;
    t.refused(
        signed(&alice, "GET", "/v1/identities/zz", Payload::None),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
}

#[tokio::test]
async fn every_authentication_failure_is_refused() {
    let t = T::new();
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&alice).await;

    // No headers at all; one header missing.
    t.refused(
        Request::get("/v1/inbox").body(Body::empty()).unwrap(),
        StatusCode::UNAUTHORIZED,
        "missing_auth",
    )
    .await;
    let mut req = signed(&alice, "GET", "/v1/inbox", Payload::None);
    req.headers_mut().remove("x-vault-nonce");
    t.refused(req, StatusCode::UNAUTHORIZED, "missing_auth")
        .await;

    // A signature for another path, method or query.
    let auth = RequestAuth::sign(
        &alice,
        "GET",
        "/v1/inbox?x=1",
        &origin(),
        now(),
        body_digest(b""),
    )
    .unwrap();
    t.refused(
        build(&auth, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    let auth = RequestAuth::sign(
        &alice,
        "POST",
        "/v1/inbox",
        &origin(),
        now(),
        body_digest(b""),
    )
    .unwrap();
    t.refused(
        build(&auth, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // A flipped signature bit.
    let mut req = signed(&alice, "GET", "/v1/inbox", Payload::None);
    let sig = req.headers()["x-vault-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    req.headers_mut()
        .insert("x-vault-signature", flipped.parse().unwrap());
    t.refused(req, StatusCode::UNAUTHORIZED, "bad_signature")
        .await;

    // Stale and future timestamps.
    let v = t
        .refused(
            signed_at(&alice, now() - 3600, "GET", "/v1/inbox", Payload::None),
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
        )
        .await;
    assert!(v["server_time"].as_u64().unwrap().abs_diff(now()) < 5);
    t.refused(
        signed_at(&alice, now() + 3600, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "stale_timestamp",
    )
    .await;
    // The future window is much narrower than the past one.
    t.refused(
        signed_at(&alice, now() + 120, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "stale_timestamp",
    )
    .await;
    let (s, _) = t
        .json(signed_at(
            &alice,
            now() + 10,
            "GET",
            "/v1/inbox",
            Payload::None,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t
        .json(signed_at(
            &alice,
            now() - 200,
            "GET",
            "/v1/inbox",
            Payload::None,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);

    // The same request twice: the second is a replay.
    let auth = RequestAuth::sign(
        &alice,
        "GET",
        "/v1/inbox",
        &origin(),
        now(),
        body_digest(b""),
    )
    .unwrap();
    let (s, _) = t
        .json(build(&auth, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(s, StatusCode::OK);
    t.refused(
        build(&auth, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "replayed_nonce",
    )
    .await;

    // A GET that signs a non-empty body digest.
    let auth = RequestAuth::sign(
        &alice,
        "GET",
        "/v1/inbox",
        &origin(),
        now(),
        body_digest(b"x"),
    )
    .unwrap();
    t.refused(
        build(&auth, "GET", "/v1/inbox", Payload::None),
        StatusCode::BAD_REQUEST,
        "body_digest_mismatch",
    )
    .await;
}

/// Issue 12 §6: a request signed for another relay is refused before its
/// signature is even checked, a version-1 request (no relay named) is
/// refused as such, and a relay with public URLs accepts exactly those.
#[tokio::test]
async fn requests_signed_for_another_relay_are_refused() {
    let t = T::new();
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&alice).await;
    // Each of the loopback origins of the relay's port is accepted.
    for o in [
        "http://127.0.0.1:8787",
        "http://localhost:8787",
        "http://[::1]:8787",
    ] {
        let o = RelayOrigin::parse(o).unwrap();
        let auth =
            RequestAuth::sign(&alice, "GET", "/v1/inbox", &o, now(), body_digest(b"")).unwrap();
        let (s, _) = t
            .json(build(&auth, "GET", "/v1/inbox", Payload::None))
            .await;
        assert_eq!(s, StatusCode::OK, "{o}");
    }
    // Another port, another host: another relay.
    for o in ["http://127.0.0.1:8788", "https://relay.example"] {
        let o = RelayOrigin::parse(o).unwrap();
        let auth =
            RequestAuth::sign(&alice, "GET", "/v1/inbox", &o, now(), body_digest(b"")).unwrap();
        let v = t
            .refused(
                build(&auth, "GET", "/v1/inbox", Payload::None),
                StatusCode::UNAUTHORIZED,
                "wrong_relay",
            )
            .await;
        assert_eq!(
            v["relay_origins"],
            json!([
                "http://127.0.0.1:8787",
                "http://localhost:8787",
                "http://[::1]:8787"
            ])
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(o.as_str()));
    }
    // A request signed for another relay whose header names this one: the
    // signature no longer verifies.
    let other = RelayOrigin::parse("https://relay.example").unwrap();
    let auth =
        RequestAuth::sign(&alice, "GET", "/v1/inbox", &other, now(), body_digest(b"")).unwrap();
    let mut req = build(&auth, "GET", "/v1/inbox", Payload::None);
    req.headers_mut()
        .insert("x-vault-relay", "http://127.0.0.1:8787".parse().unwrap());
    t.refused(req, StatusCode::UNAUTHORIZED, "bad_signature")
        .await;
    // Version 1: the five old headers, no relay.
    let mut req = signed(&alice, "GET", "/v1/inbox", Payload::None);
    req.headers_mut().remove("x-vault-relay");
    let v = t
        .refused(req, StatusCode::UNAUTHORIZED, "unsupported_request_version")
        .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("update the client"));
    // Publishing an identity checks the relay too.
    let carol = ident(9, "Dr Carol", Role::Clinician);
    let body = serde_json::to_vec(&json!({"identity": carol.public().to_text()})).unwrap();
    let auth = RequestAuth::sign(
        &carol,
        "PUT",
        "/v1/identities",
        &other,
        now(),
        body_digest(&body),
    )
    .unwrap();
    t.refused(
        build(&auth, "PUT", "/v1/identities", Payload::Json(body)),
        StatusCode::UNAUTHORIZED,
        "wrong_relay",
    )
    .await;

    // With --public-url, only those origins (not the loopback ones).
    let t = T::with(|c| c.public_url = vec![other.clone()]);
    t.publish_for(&alice, &other).await;
    let auth =
        RequestAuth::sign(&alice, "GET", "/v1/inbox", &other, now(), body_digest(b"")).unwrap();
    let (s, _) = t
        .json(build(&auth, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(s, StatusCode::OK);
    t.refused(
        signed(&alice, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "wrong_relay",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_signer_is_answered_exactly_like_a_bad_signature() {
    let t = T::new();
    let alice = ident(2, "Dr Alice", Role::Clinician);
    let stranger = ident(9, "Stranger", Role::Clinician);
    t.publish(&alice).await;
    // Alice's fingerprint with a signature by someone else's key, and a
    // well-signed request by a key that is not published.
    let forged = RequestAuth::sign(
        &stranger,
        "GET",
        "/v1/inbox",
        &origin(),
        now(),
        body_digest(b""),
    )
    .unwrap();
    let mut forged_req = build(&forged, "GET", "/v1/inbox", Payload::None);
    forged_req.headers_mut().insert(
        "x-vault-identity",
        alice.fingerprint().to_hex().parse().unwrap(),
    );
    let bad = t.call(forged_req).await;
    let unknown = t
        .call(signed(&stranger, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(bad.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.0, bad.0);
    assert_eq!(unknown.2, bad.2, "the bodies must be byte-identical");
    let header_names = |h: &axum::http::HeaderMap| {
        let mut v: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| k.as_str() != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(header_names(&unknown.1), header_names(&bad.1));
    let v: Value = serde_json::from_slice(&bad.2).unwrap();
    assert_eq!(v["error"]["code"], "bad_signature");
}

#[tokio::test]
async fn nonces_are_bounded_per_key_so_one_key_cannot_block_another() {
    // rate 1/s, window 10 + 5 s: at most 15 live nonces per key, while the
    // burst would let a key send far more.
    let t = T::with(|c| {
        c.rate = 1;
        c.burst = 1000;
        c.clock_skew = 10;
        c.future_skew = 5;
    });
    let [a, b, c] = [7u8, 8, 9].map(|i| ident(i, "key", Role::Clinician));
    for k in [&a, &b, &c] {
        t.publish(k).await;
    }
    // The attack: two keys send as many requests as they can, dated as
    // far in the future as allowed (their nonces live longest).
    for attacker in [&a, &b] {
        let mut statuses = Vec::new();
        for _ in 0..30 {
            let (s, h, body) = t
                .call(signed_at(
                    attacker,
                    now() + 5,
                    "GET",
                    "/v1/inbox",
                    Payload::None,
                ))
                .await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains("replay window"), "{msg}");
                let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=17).contains(&wait), "{wait}");
            }
            statuses.push(s);
        }
        // The publish request took one nonce: 14 more pass, then refusals.
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(ok, 14, "{statuses:?}");
        assert!(statuses[14..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    }
    // A third key is not affected at all.
    for _ in 0..10 {
        let (s, v) = t
            .json(signed_at(&c, now() + 5, "GET", "/v1/inbox", Payload::None))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // A request dated beyond the future window is refused before it can
    // take a nonce at all.
    t.refused(
        signed_at(&c, now() + 60, "GET", "/v1/inbox", Payload::None),
        StatusCode::UNAUTHORIZED,
        "stale_timestamp",
    )
    .await;
}

#[tokio::test]
async fn the_rate_limit_answers_429() {
    let t = T::with(|c| {
        c.rate = 1;
        c.burst = 3;
    });
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&alice).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, h, _) = t
            .call(signed(&alice, "GET", "/v1/inbox", Payload::None))
            .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(h.contains_key("retry-after"));
        }
        statuses.push(s);
    }
    assert_eq!(statuses[0], StatusCode::OK);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

#[tokio::test]
async fn creating_a_vault() {
    let t = T::new();
    let patient = ident(1, "Pat Patient", Role::Patient);
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&patient).await;
    t.publish(&alice).await;
    let (_, genesis) = VaultState::create(&patient, now()).unwrap();
    let body = json!({ "genesis": b64(genesis.to_bytes()) });
    let vault = genesis.vault().to_hex();

    // Bad input first: nothing may be created by any of it.
    t.refused(
        signed(&alice, "POST", "/v1/vaults", json_payload(body.clone())),
        StatusCode::FORBIDDEN,
        "not_author",
    )
    .await;
    let raw = serde_json::to_vec(&body).unwrap();
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            Payload::Raw("text/plain", raw.clone()),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": "***" })),
        ),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(b"nonsense") })),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entry",
    )
    .await;
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(genesis.to_bytes()), "x": 1 })),
        ),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;
    // The body differs from the one signed.
    let auth = RequestAuth::sign(
        &patient,
        "POST",
        "/v1/vaults",
        &origin(),
        now(),
        body_digest(b"{}"),
    )
    .unwrap();
    t.refused(
        build(&auth, "POST", "/v1/vaults", Payload::Json(raw.clone())),
        StatusCode::BAD_REQUEST,
        "body_digest_mismatch",
    )
    .await;
    // A genesis dated in the future is refused; one dated a day ago is a
    // vault created earlier (a mirror's copy, or one a restore lost) and is
    // accepted from its owner (decision 57).
    let (_, future) = VaultState::create(&patient, now() + 86_400).unwrap();
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(future.to_bytes()) })),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
        "entry_time_out_of_range",
    )
    .await;
    let (_, old) = VaultState::create(&patient, now() - 86_400).unwrap();
    let (s, v) = t
        .json(signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(old.to_bytes()) })),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    t.refused(
        signed(
            &patient,
            "GET",
            &format!("/v1/vaults/{vault}/head"),
            Payload::None,
        ),
        StatusCode::NOT_FOUND,
        "vault_not_found",
    )
    .await;

    let (s, v) = t
        .json(signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(body.clone()),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["vault"], vault);
    assert_eq!(v["head"]["seq"], 0);
    // Retrying the same creation is harmless.
    let (s, _) = t
        .json(signed(&patient, "POST", "/v1/vaults", json_payload(body)))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t.head(&patient, &vault).await["seq"], 0);
}

#[tokio::test]
async fn oversized_json_is_refused() {
    let t = T::with(|c| c.max_json = 4096);
    let patient = ident(1, "Pat Patient", Role::Patient);
    t.publish(&patient).await;
    let big = json_payload(json!({ "genesis": "A".repeat(10_000) }));
    t.refused(
        signed(&patient, "POST", "/v1/vaults", big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn appends_are_compare_and_swap_and_verified() {
    let mut w = World::new().await;
    let before = w.t.head(&w.patient, &w.vault).await;
    assert_eq!(before["seq"], 1);

    // A stale prev: 409 with the relay's head.
    let (_, e) = w
        .state
        .create_collection(&w.patient, "meds", now())
        .unwrap();
    let mut stale = w.state.clone();
    let (_, genesis_only) = VaultState::create(&w.patient, now()).unwrap();
    let _ = genesis_only;
    let mut body = json!({
        "prev": { "seq": 0, "hash": hex::encode([0u8; 32]) },
        "entries": [b64(e.to_bytes())],
    });
    let pq = format!("/v1/vaults/{}/log", w.vault);
    let v =
        w.t.refused(
            signed(&w.patient, "POST", &pq, json_payload(body.clone())),
            StatusCode::CONFLICT,
            "head_moved",
        )
        .await;
    assert_eq!(v["head"], before);

    // An entry whose signature was tampered with.
    let mut forged = e.to_bytes().to_vec();
    let n = forged.len();
    forged[n - 1] ^= 1;
    body["prev"] = head_json(&w.state);
    body["entries"] = json!([b64(&forged)]);
    let v =
        w.t.refused(
            signed(&w.patient, "POST", &pq, json_payload(body.clone())),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
        )
        .await;
    assert!(v["detail"].is_string());

    // An entry written by someone else than the signer.
    w.t.refused(
        append_req(&w.alice, &w.state, &[&e]),
        StatusCode::FORBIDDEN,
        "not_author",
    )
    .await;
    // Empty and oversized batches.
    body["entries"] = json!([]);
    w.t.refused(
        signed(&w.patient, "POST", &pq, json_payload(body.clone())),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;
    body["entries"] = json!(vec![
        b64(e.to_bytes());
        relay_server::routes::vaults::MAX_APPEND + 1
    ]);
    w.t.refused(
        signed(&w.patient, "POST", &pq, json_payload(body)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    // Unknown vault.
    let other = vault_core::VaultId::random().to_hex();
    w.t.refused(
        signed(
            &w.patient,
            "POST",
            &format!("/v1/vaults/{other}/log"),
            json_payload(json!({
                "prev": head_json(&w.state), "entries": [b64(e.to_bytes())]
            })),
        ),
        StatusCode::NOT_FOUND,
        "vault_not_found",
    )
    .await;
    assert_eq!(
        w.t.head(&w.patient, &w.vault).await,
        before,
        "refused appends changed nothing"
    );

    // The real append, then the same entry again on the old head.
    w.append(&w.patient.clone(), &[&e]).await;
    stale.apply(&e).unwrap();
    let (s, _) = w.t.json(append_req(&w.patient, &stale, &[&e])).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a duplicate on the new head is invalid"
    );
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 2);

    // A batch whose second entry is bad is refused whole, and the relay's
    // state is intact afterwards (a good append still works).
    let (_, c1) = w.state.create_collection(&w.patient, "a", now()).unwrap();
    let mut next = w.state.clone();
    next.apply(&c1).unwrap();
    let (_, c2) = next.create_collection(&w.patient, "b", now()).unwrap();
    let mut bad = c2.to_bytes().to_vec();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let body = json!({ "prev": head_json(&w.state), "entries": [b64(c1.to_bytes()), b64(&bad)] });
    let v =
        w.t.refused(
            signed(&w.patient, "POST", &pq, json_payload(body)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
        )
        .await;
    assert_eq!(v["index"], 1);
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 2);
    w.append(&w.patient.clone(), &[&c1, &c2]).await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 4);
}

#[tokio::test]
async fn entry_times_must_be_near_the_relay_clock() {
    let mut w = World::new().await;
    let (_, late) = w
        .state
        .create_collection(&w.patient, "x", now() + 3600)
        .unwrap();
    w.t.refused(
        append_req(&w.patient, &w.state, &[&late]),
        StatusCode::UNPROCESSABLE_ENTITY,
        "entry_time_out_of_range",
    )
    .await;
    let (_, ok) = w.state.create_collection(&w.patient, "x", now()).unwrap();
    w.append(&w.patient.clone(), &[&ok]).await;
}

#[tokio::test]
async fn membership_decides_who_reads_and_writes() {
    let mut w = World::new().await;
    let pq_log = format!("/v1/vaults/{}/log", w.vault);

    // Not a member: no log, no head, no blobs, no appends.
    w.t.refused(
        signed(&w.alice, "GET", &pq_log, Payload::None),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let ct = w.put_record(&w.patient.clone(), b"potassium 4.1").await;
    w.t.refused(
        signed(&w.alice, "GET", &w.blob_path(&ct), Payload::None),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let (ct2, e) = w.seal(&w.patient, b"sodium 140");
    w.t.refused(
        w.put_chunk(&w.alice, &ct2, 0, &ct2),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let _ = e;

    // Read-only member: reads everything in the collection, cannot write.
    w.share(&w.alice.clone(), Permission::Read).await;
    let (s, v) =
        w.t.json(signed(&w.alice, "GET", &pq_log, Payload::None))
            .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["entries"].as_array().unwrap().len(), 4);
    let (s, _, body) =
        w.t.call(signed(&w.alice, "GET", &w.blob_path(&ct), Payload::None))
            .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, ct);
    let before = w.t.head(&w.patient, &w.vault).await;
    // Alice cannot even seal locally; forge her an entry on a private copy
    // of the log where she had write access, and offer it to the relay.
    assert!(w.seal_on(&w.state, &w.alice, b"x").is_err());
    let mut private = w.state.clone();
    let mut kr = Keyring::new(&w.patient, now());
    let upgrade = private
        .share_collection(
            &mut kr,
            &w.labs,
            w.alice.public(),
            Permission::ReadWrite,
            None,
        )
        .unwrap();
    private.apply(&upgrade).unwrap();
    let (ct_private, e) = w.seal_on(&private, &w.alice, b"alice's note").unwrap();
    w.t.refused(
        w.put_chunk(&w.alice, &ct_private, 0, &ct_private),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    w.t.refused(
        append_req(&w.alice, &w.state, &[&e]),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await, before);

    // Read-write member: writes results back.
    w.share(&w.bob.clone(), Permission::ReadWrite).await;
    let ct_bob = w.put_record(&w.bob.clone(), b"bob's result").await;
    let (s, _, body) =
        w.t.call(signed(
            &w.alice,
            "GET",
            &w.blob_path(&ct_bob),
            Payload::None,
        ))
        .await;
    assert_eq!((s, body), (StatusCode::OK, ct_bob.clone()));

    // The inbox lists the grants.
    let (s, v) =
        w.t.json(signed(&w.alice, "GET", "/v1/inbox", Payload::None))
            .await;
    assert_eq!(s, StatusCode::OK);
    let vaults = v["vaults"].as_array().unwrap();
    assert_eq!(vaults.len(), 1);
    assert_eq!(vaults[0]["vault"], w.vault);
    assert_eq!(vaults[0]["is_owner"], false);
    assert_eq!(vaults[0]["collections"][0]["permission"], "read");
    assert_eq!(vaults[0]["collections"][0]["collection"], w.labs.to_hex());

    // Revoking Alice: the relay stops serving her at once.
    let mut kr = Keyring::new(&w.patient, now());
    let e = w
        .state
        .revoke(&mut kr, &w.labs, &[w.alice.fingerprint()])
        .unwrap();
    w.append(&w.patient.clone(), &[&e]).await;
    w.t.refused(
        signed(&w.alice, "GET", &pq_log, Payload::None),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    w.t.refused(
        signed(&w.alice, "GET", &w.blob_path(&ct), Payload::None),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let (_, v) =
        w.t.json(signed(&w.alice, "GET", "/v1/inbox", Payload::None))
            .await;
    assert_eq!(v["vaults"], json!([]));
    // Bob, still a member, still reads.
    let (s, _, _) =
        w.t.call(signed(&w.bob, "GET", &w.blob_path(&ct), Payload::None))
            .await;
    assert_eq!(s, StatusCode::OK);
    // The owner's inbox lists the vault as owned.
    let (_, v) =
        w.t.json(signed(&w.patient, "GET", "/v1/inbox", Payload::None))
            .await;
    assert_eq!(v["vaults"][0]["is_owner"], true);
}

#[tokio::test]
async fn record_puts_need_their_blob_first() {
    let mut w = World::new().await;
    let (ct, e) = w.seal(&w.patient, b"glucose 5.2");
    let before = w.t.head(&w.patient, &w.vault).await;
    w.t.refused(
        append_req(&w.patient, &w.state, &[&e]),
        StatusCode::CONFLICT,
        "blob_missing",
    )
    .await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await, before);
    w.upload(&w.patient, &ct).await;
    w.append(&w.patient.clone(), &[&e]).await;
}

#[tokio::test]
async fn log_pages() {
    let mut w = World::new().await;
    for i in 0..5 {
        let (_, e) = w
            .state
            .create_collection(&w.patient, &format!("c{i}"), now())
            .unwrap();
        w.append(&w.patient.clone(), &[&e]).await;
    }
    let pq = format!("/v1/vaults/{}/log?since=2&limit=3", w.vault);
    let (s, v) =
        w.t.json(signed(&w.patient, "GET", &pq, Payload::None))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let entries: Vec<LogEntry> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            use base64::Engine;
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(e.as_str().unwrap())
                .unwrap();
            LogEntry::from_bytes(&b).unwrap()
        })
        .collect();
    assert_eq!(
        entries.iter().map(LogEntry::seq).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(v["head"]["seq"], 6);
    w.t.refused(
        signed(
            &w.patient,
            "GET",
            &format!("/v1/vaults/{}/log?since=x", w.vault),
            Payload::None,
        ),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
}

#[tokio::test]
async fn blob_uploads_resume_and_are_checked() {
    let w = World::new().await;
    let (ct, _) = w.seal(&w.patient, &vec![7u8; 200_000]);
    let status = |w: &World, ct: &[u8]| {
        signed(
            &w.patient,
            "GET",
            &format!("{}/upload", w.blob_path(ct)),
            Payload::None,
        )
    };
    let half = ct.len() / 2;

    // A chunk whose bytes differ from the signed digest is discarded.
    let pq = w.blob_path(&ct);
    let auth = RequestAuth::sign(
        &w.patient,
        "PUT",
        &pq,
        &origin(),
        now(),
        body_digest(b"other"),
    )
    .unwrap();
    let mut req = build(
        &auth,
        "PUT",
        &pq,
        Payload::Raw("application/octet-stream", ct[..half].to_vec()),
    );
    req.headers_mut()
        .insert("upload-length", ct.len().to_string().parse().unwrap());
    w.t.refused(req, StatusCode::BAD_REQUEST, "body_digest_mismatch")
        .await;
    let (_, v) = w.t.json(status(&w, &ct)).await;
    assert_eq!(v, json!({"stored": false, "offset": 0}));

    // Missing length, wrong content type, chunk overrunning the blob.
    let mut req = w.put_chunk(&w.patient, &ct, 0, &ct[..half]);
    req.headers_mut().remove("upload-length");
    w.t.refused(req, StatusCode::BAD_REQUEST, "malformed_request")
        .await;
    let mut req = w.put_chunk(&w.patient, &ct, 0, &ct[..half]);
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    w.t.refused(
        req,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let mut req = w.put_chunk(&w.patient, &ct, 0, &ct);
    req.headers_mut()
        .insert("upload-length", "10".parse().unwrap());
    w.t.refused(req, StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        .await;

    // First half, then a chunk at the wrong offset, then the rest.
    let (s, v) = w.t.json(w.put_chunk(&w.patient, &ct, 0, &ct[..half])).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::ACCEPTED,
            json!({"stored": false, "offset": half})
        )
    );
    let v =
        w.t.refused(
            w.put_chunk(&w.patient, &ct, 0, &ct[..half]),
            StatusCode::CONFLICT,
            "upload_offset_mismatch",
        )
        .await;
    assert_eq!(v["offset"], half);
    let (_, v) = w.t.json(status(&w, &ct)).await;
    assert_eq!(v, json!({"stored": false, "offset": half}));
    let (s, v) =
        w.t.json(w.put_chunk(&w.patient, &ct, half, &ct[half..]))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, v) = w.t.json(status(&w, &ct)).await;
    assert_eq!(v, json!({"stored": true, "offset": ct.len()}));
    // Uploading again is a no-op.
    let (s, _) = w.t.json(w.put_chunk(&w.patient, &ct, 0, &ct)).await;
    assert_eq!(s, StatusCode::OK);

    // Whole and ranged reads (the uploader may read before any entry names it).
    let (s, h, body) =
        w.t.call(signed(&w.patient, "GET", &pq, Payload::None))
            .await;
    assert_eq!((s, body.len()), (StatusCode::OK, ct.len()));
    assert_eq!(body, ct);
    assert_eq!(h["content-type"], "application/octet-stream");
    let mut req = signed(&w.patient, "GET", &pq, Payload::None);
    req.headers_mut()
        .insert("range", "bytes=100-".parse().unwrap());
    let (s, h, body) = w.t.call(req).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, ct[100..]);
    assert_eq!(
        h["content-range"],
        format!("bytes 100-{}/{}", ct.len() - 1, ct.len())
    );
    let mut req = signed(&w.patient, "GET", &pq, Payload::None);
    req.headers_mut()
        .insert("range", format!("bytes={}-", ct.len()).parse().unwrap());
    w.t.refused(
        req,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;
    let missing = format!("/v1/vaults/{}/blobs/{}", w.vault, hex::encode([9u8; 32]));
    w.t.refused(
        signed(&w.patient, "GET", &missing, Payload::None),
        StatusCode::NOT_FOUND,
        "blob_not_found",
    )
    .await;
    w.t.refused(
        signed(
            &w.patient,
            "GET",
            &format!("/v1/vaults/{}/blobs/xyz", w.vault),
            Payload::None,
        ),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
}

#[tokio::test]
async fn a_blob_that_does_not_hash_to_its_address_is_discarded() {
    let w = World::new().await;
    let (ct, _) = w.seal(&w.patient, b"hello");
    let mut wrong = ct.clone();
    wrong[0] ^= 1;
    // Upload `wrong` under `ct`'s address: every chunk digest is right, the
    // whole is not.
    let pq = w.blob_path(&ct);
    let auth = RequestAuth::sign(
        &w.patient,
        "PUT",
        &pq,
        &origin(),
        now(),
        body_digest(&wrong),
    )
    .unwrap();
    let mut req = build(
        &auth,
        "PUT",
        &pq,
        Payload::Raw("application/octet-stream", wrong.clone()),
    );
    req.headers_mut()
        .insert("upload-length", wrong.len().to_string().parse().unwrap());
    w.t.refused(req, StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch")
        .await;
    let (_, v) =
        w.t.json(signed(
            &w.patient,
            "GET",
            &format!("{pq}/upload"),
            Payload::None,
        ))
        .await;
    assert_eq!(v, json!({"stored": false, "offset": 0}));
    w.t.refused(
        signed(&w.patient, "GET", &pq, Payload::None),
        StatusCode::NOT_FOUND,
        "blob_not_found",
    )
    .await;
}

#[tokio::test]
async fn quotas_and_size_limits() {
    let w = World::on(T::with(|c| {
        c.quota = 100_000;
        c.max_chunk = 64 * 1024;
        c.max_blob = 150_000;
    }))
    .await;
    let (ct, _) = w.seal(&w.patient, &vec![1u8; 120_000]);
    // Over the quota (the blob is larger than what is left).
    w.t.refused(
        w.put_chunk(&w.patient, &ct, 0, &ct[..1000]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
    )
    .await;
    let (big, _) = w.seal(&w.patient, &vec![1u8; 200_000]);
    w.t.refused(
        w.put_chunk(&w.patient, &big, 0, &big[..1000]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    let (small, _) = w.seal(&w.patient, &vec![1u8; 70_000]);
    // A chunk over max_chunk.
    w.t.refused(
        w.put_chunk(&w.patient, &small, 0, &small),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    let (_, v) =
        w.t.json(signed(
            &w.patient,
            "GET",
            &format!("{}/upload", w.blob_path(&small)),
            Payload::None,
        ))
        .await;
    assert_eq!(v["offset"], 0);
}

#[tokio::test]
async fn online_backup_restores_every_log_and_blob() {
    if embedded_only("online_backup_restores_every_log_and_blob") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data2 = data.clone();
    let mut w = World::on(T::with(move |c| c.data_dir = data2)).await;
    let patient = w.patient.clone();
    let ct = w.put_record(&patient, b"haemoglobin 140").await;
    // A small blob of a batch upload lives in the database itself.
    let (small, _) = w.seal(&patient, b"ferritin 45");
    let (s, v) =
        w.t.json(signed(
            &patient,
            "POST",
            &format!("/v1/vaults/{}/blobs", w.vault),
            Payload::Raw("application/octet-stream", frames(&[&small], None)),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let head = w.t.head(&w.patient, &w.vault).await;

    // Backup while the relay is open.
    let out = dir.path().join("relay.backup");
    let sum = relay_server::backup::backup(&data, &out).unwrap();
    assert_eq!((sum.vaults, sum.blobs), (1, 2));
    assert!(
        relay_server::backup::backup(&data, &out).is_err(),
        "never overwrites"
    );
    // The backup holds no plaintext.
    let raw = std::fs::read(&out).unwrap();
    assert!(!raw.windows(11).any(|w| w == b"haemoglobin"));

    // Restore refuses a non-empty target, then restores into a new one.
    assert!(relay_server::backup::restore(&out, &data).is_err());
    let restored = dir.path().join("restored");
    let sum2 = relay_server::backup::restore(&out, &restored).unwrap();
    assert_eq!(sum, sum2);
    let t2 = T::with(|c| c.data_dir = restored.clone());
    t2.publish(&w.patient).await;
    assert_eq!(t2.head(&w.patient, &w.vault).await, head);
    let (s, _, body) = t2
        .call(signed(&w.patient, "GET", &w.blob_path(&ct), Payload::None))
        .await;
    assert_eq!((s, body), (StatusCode::OK, ct.clone()));
    let (s, _, body) = t2
        .call(signed(
            &w.patient,
            "GET",
            &w.blob_path(&small),
            Payload::None,
        ))
        .await;
    assert_eq!((s, body), (StatusCode::OK, small.clone()));
    // ...with ranges, like a file-backed blob.
    let mut req = signed(&w.patient, "GET", &w.blob_path(&small), Payload::None);
    req.headers_mut()
        .insert("range", "bytes=10-19".parse().unwrap());
    let (s, _, body) = t2.call(req).await;
    assert_eq!(
        (s, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &small[10..20])
    );

    // A backup whose database-held blob was altered is refused.
    let mut bad = raw.clone();
    let at = raw
        .windows(small.len())
        .position(|w| w == small.as_slice())
        .unwrap()
        + 10;
    bad[at] ^= 0xff;
    let bad_path = dir.path().join("bad-small.backup");
    std::fs::write(&bad_path, &bad).unwrap();
    assert!(relay_server::backup::restore(&bad_path, &dir.path().join("never-small")).is_err());

    // A backup whose blob was altered is refused and leaves no target.
    let mut bad = raw.clone();
    let at = raw
        .windows(ct.len())
        .position(|w| w == ct.as_slice())
        .unwrap()
        + 10;
    bad[at] ^= 0xff;
    let bad_path = dir.path().join("bad.backup");
    std::fs::write(&bad_path, &bad).unwrap();
    let target = dir.path().join("never");
    assert!(relay_server::backup::restore(&bad_path, &target).is_err());
    assert!(!target.exists());
}

#[tokio::test]
async fn a_stalled_upload_times_out_and_changes_nothing() {
    let w = World::on(T::with(|c| c.timeout = std::time::Duration::from_secs(1))).await;
    let (ct, _) = w.seal(&w.patient, b"slow");
    let mut req = w.put_chunk(&w.patient, &ct, 0, &ct);
    // A body that sends a few bytes and then never finishes.
    let first = bytes::Bytes::copy_from_slice(&ct[..10]);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    *req.body_mut() = Body::from_stream(stream);
    // Without the relay's timeout this would wait forever: fail instead.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        w.t.refused(req, StatusCode::REQUEST_TIMEOUT, "timeout"),
    )
    .await
    .expect("the relay answers a stalled upload with 408");
    let (_, v) =
        w.t.json(signed(
            &w.patient,
            "GET",
            &format!("{}/upload", w.blob_path(&ct)),
            Payload::None,
        ))
        .await;
    assert_eq!(v, json!({"stored": false, "offset": 0}));
}

#[tokio::test]
async fn unacknowledged_upload_bytes_left_by_a_crash_are_cut_off() {
    if embedded_only("unacknowledged_upload_bytes_left_by_a_crash_are_cut_off") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let w = World::on(T::with(move |c| c.data_dir = data)).await;
    let (ct, _) = w.seal(&w.patient, &vec![3u8; 5000]);
    let part =
        dir.path()
            .join("uploads")
            .join(format!("{}-{}.part", w.vault, hex::encode(address(&ct))));
    // What a kill -9 can leave: every byte of the last chunk written to the
    // part file, the chunk never acknowledged (no acknowledged length).
    std::fs::write(&part, &ct).unwrap();
    let status = format!("{}/upload", w.blob_path(&ct));
    let (_, v) =
        w.t.json(signed(&w.patient, "GET", &status, Payload::None))
            .await;
    assert_eq!(v, json!({"stored": false, "offset": 0}));
    w.t.refused(
        signed(&w.patient, "GET", &w.blob_path(&ct), Payload::None),
        StatusCode::NOT_FOUND,
        "blob_not_found",
    )
    .await;
    // Garbage beyond an acknowledged first half is cut off too.
    let (s, _) = w.t.json(w.put_chunk(&w.patient, &ct, 0, &ct[..2500])).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .unwrap();
    std::io::Write::write_all(&mut f, b"unacknowledged garbage").unwrap();
    let (_, v) =
        w.t.json(signed(&w.patient, "GET", &status, Payload::None))
            .await;
    assert_eq!(v, json!({"stored": false, "offset": 2500}));
    let (s, v) =
        w.t.json(w.put_chunk(&w.patient, &ct, 2500, &ct[2500..]))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, _, body) =
        w.t.call(signed(&w.patient, "GET", &w.blob_path(&ct), Payload::None))
            .await;
    assert_eq!(body, ct);
}

#[tokio::test]
async fn abandoned_uploads_are_swept() {
    if embedded_only("abandoned_uploads_are_swept") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let w = World::on(T::with(move |c| c.data_dir = data)).await;
    let (old, _) = w.seal(&w.patient, b"abandoned");
    let (fresh, _) = w.seal(&w.patient, b"in progress");
    for ct in [&old, &fresh] {
        let (s, _) = w.t.json(w.put_chunk(&w.patient, ct, 0, &ct[..100])).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let uploads = dir.path().join("uploads");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for entry in std::fs::read_dir(&uploads).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains(&hex::encode(address(&old))) {
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(two_days_ago).unwrap();
        }
    }
    let removed =
        w.t.relay
            .state
            .blobs
            .sweep_uploads(relay_server::server::ABANDONED_UPLOAD)
            .await
            .unwrap();
    assert_eq!(
        removed, 1,
        "one upload: its part file and its acknowledged length"
    );
    let old_name = hex::encode(address(&old));
    assert!(
        std::fs::read_dir(&uploads).unwrap().all(|e| !e
            .unwrap()
            .path()
            .to_string_lossy()
            .contains(&old_name)),
        "no file of the swept upload is left"
    );
    let status = |ct: &[u8]| {
        signed(
            &w.patient,
            "GET",
            &format!("{}/upload", w.blob_path(ct)),
            Payload::None,
        )
    };
    let (_, v) = w.t.json(status(&old)).await;
    assert_eq!(v["offset"], 0);
    let (_, v) = w.t.json(status(&fresh)).await;
    assert_eq!(v["offset"], 100);
}

#[tokio::test]
async fn holding_a_blob_address_is_not_holding_the_blob() {
    let mut w = World::new().await;
    let patient = w.patient.clone();
    let ct = w.put_record(&patient, b"hiv test: negative").await;

    // Alice learns the address (say from an old copy of the log) and
    // claims it in a vault of her own: the relay wants the bytes.
    let (_, genesis) = VaultState::create(&w.alice, now()).unwrap();
    let (s, _) =
        w.t.json(signed(
            &w.alice,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(genesis.to_bytes()) })),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let own = genesis.vault().to_hex();
    let pq = format!("/v1/vaults/{own}/blobs/{}", hex::encode(address(&ct)));
    let auth = RequestAuth::sign(&w.alice, "PUT", &pq, &origin(), now(), body_digest(b"")).unwrap();
    let mut req = build(
        &auth,
        "PUT",
        &pq,
        Payload::Raw("application/octet-stream", Vec::new()),
    );
    req.headers_mut()
        .insert("upload-length", ct.len().to_string().parse().unwrap());
    let (s, v) = w.t.json(req).await;
    assert_eq!(
        (s, v),
        (StatusCode::ACCEPTED, json!({"stored": false, "offset": 0}))
    );
    w.t.refused(
        signed(&w.alice, "GET", &pq, Payload::None),
        StatusCode::NOT_FOUND,
        "blob_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_record_put_must_name_a_blob_its_author_uploaded() {
    let mut w = World::new().await;
    let alice = w.alice.clone();
    w.share(&alice, Permission::ReadWrite).await;
    let (ct, e) = w.seal(&w.patient, b"uploaded by someone else");
    // Alice, a writer, uploads the bytes; the patient's entry names them.
    w.upload(&w.alice, &ct).await;
    let before = w.t.head(&w.patient, &w.vault).await;
    w.t.refused(
        append_req(&w.patient, &w.state, &[&e]),
        StatusCode::CONFLICT,
        "blob_missing",
    )
    .await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await, before);
    // The relay's state is intact: a proper record-put goes through.
    let patient = w.patient.clone();
    w.put_record(&patient, b"fine").await;
}

/// A batch body: each blob's SHA-256, its length (u32 BE), its bytes.
fn frames(blobs: &[&[u8]], lie_about: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        let mut hash = address(b);
        if lie_about == Some(i) {
            hash[0] ^= 1;
        }
        out.extend_from_slice(&hash);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

#[tokio::test]
async fn small_blobs_upload_in_one_batch() {
    let mut w = World::new().await;
    let batch_path = format!("/v1/vaults/{}/blobs", w.vault);
    let sealed: Vec<(Vec<u8>, LogEntry)> = (0..5)
        .map(|i| w.seal(&w.patient, format!("record {i}").as_bytes()))
        .collect();
    let cts: Vec<&[u8]> = sealed.iter().map(|(c, _)| c.as_slice()).collect();
    let post = |who: &SecretIdentity, body: Vec<u8>| {
        signed(
            who,
            "POST",
            &batch_path,
            Payload::Raw("application/octet-stream", body),
        )
    };

    // One wrong address: nothing of the batch is stored.
    w.t.refused(
        post(&w.patient, frames(&cts, Some(3))),
        StatusCode::UNPROCESSABLE_ENTITY,
        "hash_mismatch",
    )
    .await;
    for ct in &cts {
        w.t.refused(
            signed(&w.patient, "GET", &w.blob_path(ct), Payload::None),
            StatusCode::NOT_FOUND,
            "blob_not_found",
        )
        .await;
    }
    // Cut-off frames, an empty batch, the wrong content type, a body that
    // is not the signed one.
    let mut cut = frames(&cts, None);
    cut.truncate(cut.len() - 1);
    w.t.refused(
        post(&w.patient, cut),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    w.t.refused(
        post(&w.patient, Vec::new()),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    w.t.refused(
        signed(
            &w.patient,
            "POST",
            &batch_path,
            json_payload(json!({"blobs": []})),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // A member without write access may not upload.
    w.share(&w.alice.clone(), Permission::Read).await;
    w.t.refused(
        post(&w.alice, frames(&cts, None)),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // The batch: stored durably, each blob downloadable, repeats skipped.
    let (s, v) = w.t.json(post(&w.patient, frames(&cts[..3], None))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 3, "present": 0}));
    let (s, v) = w.t.json(post(&w.patient, frames(&cts, None))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"stored": 2, "present": 3}));
    for ct in &cts {
        let (s, _, body) =
            w.t.call(signed(&w.patient, "GET", &w.blob_path(ct), Payload::None))
                .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, *ct);
    }
    // ...and each can be named by a record-put of its uploader.
    for (_, e) in &sealed {
        let vault_core::EntryBody::RecordPut { metadata } = e.body() else {
            panic!("not a record-put");
        };
        let e = w
            .state
            .record_put_entry(&w.patient, metadata, now())
            .unwrap();
        w.append(&w.patient.clone(), &[&e]).await;
    }
}

/// A batch read of `blobs` of `w`'s vault by `who`.
fn read_req(w: &World, who: &SecretIdentity, blobs: &[&[u8]]) -> Request<Body> {
    let names: Vec<String> = blobs.iter().map(|b| hex::encode(address(b))).collect();
    signed(
        who,
        "POST",
        &format!("/v1/vaults/{}/blobs/read", w.vault),
        json_payload(json!({ "blobs": names })),
    )
}

/// A batch read's answer as (address, status, bytes) frames.
fn read_frames(mut body: &[u8]) -> Vec<([u8; 32], u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let hash: [u8; 32] = body[..32].try_into().unwrap();
        let status = body[32];
        let len = u32::from_be_bytes(body[33..37].try_into().unwrap()) as usize;
        out.push((hash, status, body[37..37 + len].to_vec()));
        body = &body[37 + len..];
    }
    out
}

/// Answers `who`'s batch read of `blobs` with 200 and returns each blob's
/// status, checking addresses, order and bytes.
async fn read_statuses(w: &World, who: &SecretIdentity, blobs: &[&[u8]]) -> Vec<u8> {
    let (s, h, body) = w.t.call(read_req(w, who, blobs)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/octet-stream");
    let frames = read_frames(&body);
    assert_eq!(frames.len(), blobs.len());
    for ((hash, status, bytes), blob) in frames.iter().zip(blobs) {
        assert_eq!(*hash, address(blob));
        match status {
            0 => assert_eq!(bytes, blob),
            _ => assert!(bytes.is_empty()),
        }
    }
    frames.into_iter().map(|(_, s, _)| s).collect()
}

#[tokio::test]
async fn small_blobs_download_in_one_batch() {
    // A small budget: the answer carries at most 4,096 bytes of blobs.
    let mut w = World::on(T::with(|c| c.max_json = 4096)).await;
    let mut cts = Vec::new();
    for i in 0..3 {
        cts.push(
            w.put_record(&w.patient.clone(), format!("result {i}").as_bytes())
                .await,
        );
    }
    // Uploaded, not yet named by a record; and one too large for a batch.
    let (unnamed, _) = w.seal(&w.patient, b"not yet named");
    w.upload(&w.patient.clone(), &unnamed).await;
    let large = w
        .put_record(&w.patient.clone(), &vec![7u8; 300 * 1024])
        .await;
    let missing = b"never uploaded".as_slice();

    // The owner: every stored small blob, in order; one status per address.
    let asked = [
        &cts[0][..],
        missing,
        &cts[1],
        &unnamed,
        &large,
        &cts[2],
        &cts[0],
    ];
    assert_eq!(
        read_statuses(&w, &w.patient, &asked).await,
        [0, 1, 0, 0, 3, 0, 0]
    );
    // The budget: from the first blob past it, every blob is left to be
    // fetched alone, even one small enough for what is left.
    let tiny = b"ten bytes!".as_slice();
    w.upload(&w.patient.clone(), tiny).await;
    let fit = 4096 / cts[0].len();
    let mut many = vec![&cts[0][..]; fit + 1];
    many.push(tiny);
    let statuses = read_statuses(&w, &w.patient, &many).await;
    let mut want = vec![0u8; fit];
    want.extend([3, 3]);
    assert_eq!(statuses, want);

    // A reading member: the records' blobs, not the blob no record names
    // (only its uploader and the owner may read that), as a download.
    w.share(&w.alice.clone(), Permission::Read).await;
    assert_eq!(
        read_statuses(&w, &w.alice, &[&cts[1], &unnamed]).await,
        [0, 2]
    );
    w.t.refused(
        signed(&w.alice, "GET", &w.blob_path(&unnamed), Payload::None),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Not a member: refused as a whole.
    w.t.refused(
        read_req(&w, &w.bob, &[&cts[0]]),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A writing member reads the blob it uploaded before any record names
    // it; another member may not.
    w.share(&w.bob.clone(), Permission::ReadWrite).await;
    let (bobs, _) = w.seal(&w.bob, b"bob's draft");
    w.upload(&w.bob.clone(), &bobs).await;
    assert_eq!(read_statuses(&w, &w.bob, &[&bobs, &cts[0]]).await, [0, 0]);
    assert_eq!(read_statuses(&w, &w.alice, &[&bobs]).await, [2]);
    // A revoked member: refused as a whole.
    let mut kr = Keyring::new(&w.patient, now());
    let e = w
        .state
        .revoke(&mut kr, &w.labs, &[w.alice.fingerprint()])
        .unwrap();
    w.append(&w.patient.clone(), &[&e]).await;
    w.t.refused(
        read_req(&w, &w.alice, &[&cts[0]]),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // Malformed requests.
    let path = format!("/v1/vaults/{}/blobs/read", w.vault);
    for (body, code) in [
        (json!({ "blobs": [] }), "bad_json"),
        (json!({ "blobs": ["00"] }), "malformed_request"),
        (
            json!({ "blobs": [hex::encode(address(&cts[0])).to_uppercase()] }),
            "malformed_request",
        ),
        (
            json!({ "hashes": [hex::encode(address(&cts[0]))] }),
            "bad_json",
        ),
    ] {
        w.t.refused(
            signed(&w.patient, "POST", &path, json_payload(body)),
            StatusCode::BAD_REQUEST,
            code,
        )
        .await;
    }
    w.t.refused(
        signed(
            &w.patient,
            "POST",
            &path,
            Payload::Raw("application/octet-stream", b"{}".to_vec()),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn a_batch_read_names_at_most_1024_blobs_and_no_more_than_the_burst() {
    let mut w = World::new().await;
    let ct = w.put_record(&w.patient.clone(), b"result").await;
    assert_eq!(
        read_statuses(&w, &w.patient, &vec![&ct[..]; 1024]).await,
        vec![0u8; 1024]
    );
    w.t.refused(
        read_req(&w, &w.patient, &vec![&ct[..]; 1025]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    // A relay whose burst is smaller than a batch: refused for good (413,
    // not 429: waiting would not help), and nothing counted.
    let mut w = World::on(T::with(|c| c.burst = 20)).await;
    let ct = w.put_record(&w.patient.clone(), b"result").await;
    w.share(&w.alice.clone(), Permission::Read).await;
    let v =
        w.t.refused(
            read_req(&w, &w.alice, &vec![&ct[..]; 22]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 20"),
        "{v}"
    );
    assert_eq!(
        read_statuses(&w, &w.alice, &vec![&ct[..]; 17]).await,
        [0; 17]
    );
}

#[tokio::test]
async fn a_batch_read_counts_each_blob_against_the_rate() {
    let mut w = World::on(T::with(|c| {
        c.rate = 1;
        c.burst = 40;
    }))
    .await;
    let ct = w.put_record(&w.patient.clone(), b"result").await;
    w.share(&w.alice.clone(), Permission::Read).await;
    // Alice has sent one request (her identity); 39 of her burst are left.
    assert_eq!(
        read_statuses(&w, &w.alice, &vec![&ct[..]; 30]).await,
        [0; 30]
    );
    // 15 more do not fit the 8 left: refused, and nothing counted...
    let (s, h, body) = w.t.call(read_req(&w, &w.alice, &vec![&ct[..]; 15])).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(h.contains_key("retry-after"));
    // ...but the request itself: 7 single downloads are still allowed.
    for _ in 0..7 {
        let (s, _, _) =
            w.t.call(signed(&w.alice, "GET", &w.blob_path(&ct), Payload::None))
                .await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_batch_upload_respects_the_quota_and_batch_size() {
    let w = World::on(T::with(|c| {
        c.quota = 100_000;
    }))
    .await;
    let batch_path = format!("/v1/vaults/{}/blobs", w.vault);
    let (a, _) = w.seal(&w.patient, &vec![1u8; 40_000]);
    let (b, _) = w.seal(&w.patient, &vec![2u8; 40_000]);
    let (c, _) = w.seal(&w.patient, &vec![3u8; 40_000]);
    let post = |body: Vec<u8>| {
        signed(
            &w.patient,
            "POST",
            &batch_path,
            Payload::Raw("application/octet-stream", body),
        )
    };
    // More than 1,024 blobs in one batch.
    let empty: &[u8] = b"";
    w.t.refused(
        post(frames(&vec![empty; 1025], None)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    // Two 40 kB records fit a 100 kB quota; a third does not: refused
    // whole.
    let (s, v) = w.t.json(post(frames(&[&a, &b], None))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    w.t.refused(
        post(frames(&[&c, &a], None)),
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
    )
    .await;
    w.t.refused(
        signed(&w.patient, "GET", &w.blob_path(&c), Payload::None),
        StatusCode::NOT_FOUND,
        "blob_not_found",
    )
    .await;
}

#[tokio::test]
async fn the_web_app_is_served_with_its_security_headers() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>app</title>",
    )
    .unwrap();
    let t = T::with(|c| c.web_dir = Some(web.path().to_path_buf()));
    let (s, headers, body) = t.call(Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("<title>app</title>"));
    assert_eq!(
        headers["content-security-policy"],
        relay_server::app::WEB_CSP
    );
    // Workers start only from `blob:` URLs, which only the pinned main
    // script can make: one started by URL (same origin or `data:`) would
    // escape the bundle hash (decision 56).
    assert!(relay_server::app::WEB_CSP.contains("worker-src blob:;"));
    assert!(!relay_server::app::WEB_CSP.contains("child-src"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    // The API keeps answering JSON errors, not the app's files.
    t.refused(
        Request::get("/v1/nowhere").body(Body::empty()).unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn only_named_origins_may_call_the_api_from_a_browser() {
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/vaults")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-vault-identity,x-vault-signature",
            )
            .body(Body::empty())
            .unwrap()
    };
    let t = T::with(|c| c.allow_origin = vec!["https://app.example.org".into()]);
    let (_, headers, _) = t.call(preflight("https://app.example.org")).await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.org"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("x-vault-signature"), "{allowed}");
    let (_, headers, _) = t.call(preflight("https://evil.example")).await;
    assert!(headers.get("access-control-allow-origin").is_none());
    // Without the option, no origin is allowed.
    let t = T::new();
    let (_, headers, _) = t.call(preflight("https://app.example.org")).await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

/// `n` new collections, chained on `state` (which is left as it was).
fn collections(w: &World, n: usize) -> Vec<LogEntry> {
    let mut s = w.state.clone();
    (0..n)
        .map(|i| {
            let (_, e) = s
                .create_collection(&w.patient, &format!("c{i}"), now())
                .unwrap();
            s.apply(&e).unwrap();
            e
        })
        .collect()
}

#[tokio::test]
async fn a_vault_is_capped_at_its_entry_limit() {
    // Genesis and "labs" make two entries.
    let mut w = World::on(T::with(|c| c.max_vault_entries = 4)).await;
    let es = collections(&w, 3);
    let all: Vec<&LogEntry> = es.iter().collect();
    let v =
        w.t.refused(
            append_req(&w.patient, &w.state, &all),
            StatusCode::PAYLOAD_TOO_LARGE,
            "vault_full",
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 entries"),
        "{v}"
    );
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 1);
    let patient = w.patient.clone();
    w.append(&patient, &all[..2]).await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 3);
    let more = collections(&w, 1);
    w.t.refused(
        append_req(&w.patient, &w.state, &[&more[0]]),
        StatusCode::PAYLOAD_TOO_LARGE,
        "vault_full",
    )
    .await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 3);
}

#[tokio::test]
async fn a_batch_is_applied_in_place_and_a_refusal_half_way_leaves_the_stored_log() {
    let mut w = World::new().await;
    let loads = w.t.relay.state.vault_loads();
    let patient = w.patient.clone();
    // 1,000 entries in one batch: the vault is no longer cheap to rebuild.
    let es = collections(&w, 1000);
    w.append(&patient, &es.iter().collect::<Vec<_>>()).await;
    assert_eq!(
        w.t.relay.state.vault_loads(),
        loads,
        "a good batch is applied to the live state, never reloaded"
    );
    // The second entry is a duplicate of the first: the first was applied
    // in place when the second is refused.
    let e = collections(&w, 1).remove(0);
    let v =
        w.t.refused(
            append_req(&w.patient, &w.state, &[&e, &e]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
        )
        .await;
    assert_eq!(v["index"], 1, "{v}");
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 1001);
    // For a minute, batches to this vault are refused before anything is
    // applied, so no writer can make the relay rebuild it over and over.
    let again = collections(&w, 2);
    let v =
        w.t.refused(
            append_req(&w.patient, &w.state, &[&again[0], &again[0]]),
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one entry per request"),
        "{v}"
    );
    w.t.refused(
        append_req(&w.patient, &w.state, &[&again[0], &again[1]]),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // The relay's state is the stored log again: the same entry alone is
    // accepted, after exactly one rebuild from storage.
    w.append(&patient, &[&e]).await;
    assert_eq!(w.t.head(&w.patient, &w.vault).await["seq"], 1002);
    assert_eq!(w.t.relay.state.vault_loads(), loads + 1);
}

#[tokio::test]
async fn many_cheap_vaults_do_not_evict_a_busy_one() {
    let mut w = World::on(T::with(|c| c.vault_cache = 4)).await;
    // The patient's vault: 42 entries, expensive to rebuild.
    let patient = w.patient.clone();
    let es = collections(&w, 40);
    w.append(&patient, &es.iter().collect::<Vec<_>>()).await;
    let loads = w.t.relay.state.vault_loads();
    // An outsider creates and reads 12 one-entry vaults, three times the
    // cache's size, and reads them again.
    let mallory = ident(20, "Mallory", Role::Patient);
    w.t.publish(&mallory).await;
    let mut theirs = Vec::new();
    for _ in 0..12 {
        let (_, g) = VaultState::create(&mallory, now()).unwrap();
        let (s, v) =
            w.t.json(signed(
                &mallory,
                "POST",
                "/v1/vaults",
                json_payload(json!({ "genesis": b64(g.to_bytes()) })),
            ))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = g.vault().to_hex();
        w.t.head(&mallory, &id).await;
        theirs.push(id);
    }
    for id in &theirs {
        w.t.head(&mallory, id).await;
    }
    let cheap_loads = w.t.relay.state.vault_loads() - loads;
    assert!(cheap_loads >= 12, "{cheap_loads}");
    // The busy vault was never evicted: reading it loads nothing.
    w.t.head(&w.patient, &w.vault).await;
    assert_eq!(w.t.relay.state.vault_loads() - loads, cheap_loads);
}

async fn usage(t: &T, who: &SecretIdentity) -> u64 {
    t.relay.state.meta.usage(who.fingerprint()).await.unwrap()
}

#[tokio::test]
async fn identities_genesis_entries_and_unfinished_uploads_are_charged() {
    let w = World::new().await;
    // The patient's identity document, genesis and "labs" entries.
    let doc = w.patient.public().to_bytes().len() as u64;
    let log: u64 =
        w.t.relay
            .state
            .meta
            .entries(w.state.vault(), 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.len() as u64)
            .sum();
    assert_eq!(usage(&w.t, &w.patient).await, doc + log);
    let base = usage(&w.t, &w.patient).await;

    // Chunks are charged as they are stored; the complete blob replaces
    // their charge.
    let ct: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let (s, v) = w.t.json(w.put_chunk(&w.patient, &ct, 0, &ct[..400])).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(usage(&w.t, &w.patient).await, base + 400);
    let (s, v) =
        w.t.json(w.put_chunk(&w.patient, &ct, 400, &ct[400..700]))
            .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(usage(&w.t, &w.patient).await, base + 700);
    let (s, v) =
        w.t.json(w.put_chunk(&w.patient, &ct, 700, &ct[700..]))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(usage(&w.t, &w.patient).await, base + 1000);

    // A discarded upload gives its charge back.
    let mut bad = vec![7u8; 600];
    let bad_path = w.blob_path(&bad);
    let (s, _) =
        w.t.json(w.put_chunk(&w.patient, &bad, 0, &bad[..300]))
            .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(usage(&w.t, &w.patient).await, base + 1300);
    bad[599] = 8; // the rest no longer hashes to the address
    let auth = RequestAuth::sign(
        &w.patient,
        "PUT",
        &bad_path,
        &origin(),
        now(),
        body_digest(&bad[300..]),
    )
    .unwrap();
    let mut req = build(
        &auth,
        "PUT",
        &bad_path,
        Payload::Raw("application/octet-stream", bad[300..].to_vec()),
    );
    req.headers_mut()
        .insert("upload-length", "600".parse().unwrap());
    req.headers_mut()
        .insert("upload-offset", "300".parse().unwrap());
    w.t.refused(req, StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch")
        .await;
    assert_eq!(usage(&w.t, &w.patient).await, base + 1000);

    // An abandoned upload's charge is released with it.
    let other = vec![9u8; 500];
    let (s, _) =
        w.t.json(w.put_chunk(&w.patient, &other, 0, &other[..200]))
            .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(usage(&w.t, &w.patient).await, base + 1200);
    assert_eq!(
        w.t.relay
            .state
            .meta
            .release_stale_uploads(3600)
            .await
            .unwrap(),
        0
    );
    assert_eq!(usage(&w.t, &w.patient).await, base + 1200);
    assert_eq!(
        w.t.relay.state.meta.release_stale_uploads(0).await.unwrap(),
        1
    );
    assert_eq!(usage(&w.t, &w.patient).await, base + 1000);
}

#[tokio::test]
async fn unfinished_uploads_count_against_the_quota() {
    let quota = 20_000;
    let w = World::on(T::with(|c| c.quota = quota)).await;
    let room = quota - usage(&w.t, &w.patient).await;
    // Blob A, nearly filling the room, is uploaded in part.
    let a: Vec<u8> = (0..room - 100).map(|i| (i % 251) as u8).collect();
    let first = (room - 900) as usize;
    let (s, v) = w.t.json(w.put_chunk(&w.patient, &a, 0, &a[..first])).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // What is stored of A leaves less room than a 1,000-byte blob needs.
    let b = vec![2u8; 1000];
    w.t.refused(
        w.put_chunk(&w.patient, &b, 0, &b),
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
    )
    .await;
    // Finishing A still fits: its stored part is not counted twice.
    let (s, v) =
        w.t.json(w.put_chunk(&w.patient, &a, first, &a[first..]))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(usage(&w.t, &w.patient).await, quota - 100);
}

#[tokio::test]
async fn a_genesis_entry_is_charged_to_the_owner_s_quota() {
    let patient = ident(1, "Pat Patient", Role::Patient);
    let doc = patient.public().to_bytes().len() as u64;
    let t = T::with(|c| c.quota = doc + 10);
    t.publish(&patient).await;
    assert_eq!(usage(&t, &patient).await, doc);
    let (_, genesis) = VaultState::create(&patient, now()).unwrap();
    t.refused(
        signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(genesis.to_bytes()) })),
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
    )
    .await;
    assert!(t
        .relay
        .state
        .meta
        .head(genesis.vault())
        .await
        .unwrap()
        .is_none());
    assert_eq!(usage(&t, &patient).await, doc);
}

#[tokio::test]
async fn upgrading_a_schema_2_database_charges_identities_and_genesis_entries() {
    if embedded_only("upgrading_a_schema_2_database_charges_identities_and_genesis_entries") {
        return;
    }
    let t = T::new();
    let patient = ident(1, "Pat Patient", Role::Patient);
    t.publish(&patient).await;
    let (_, genesis) = VaultState::create(&patient, now()).unwrap();
    let (s, _) = t
        .json(signed(
            &patient,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(genesis.to_bytes()) })),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let expected = (patient.public().to_bytes().len() + genesis.to_bytes().len()) as u64;
    assert_eq!(usage(&t, &patient).await, expected);
    let T {
        router,
        relay,
        _dir,
    } = t;
    drop(router);
    drop(relay);
    // As schema 2 left it: neither was charged.
    let db = _dir.path().join("relay.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("UPDATE usage SET bytes = 0; PRAGMA user_version = 2;")
        .unwrap();
    drop(conn);
    let relay = Relay::open(Config::for_data_dir(_dir.path())).unwrap();
    let used = relay.state.meta.usage(patient.fingerprint()).await.unwrap();
    assert_eq!(used, expected);
    assert!(relay
        .state
        .meta
        .head(genesis.vault())
        .await
        .unwrap()
        .is_some());
}

fn from(mut req: Request<Body>, ip: &str) -> Request<Body> {
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), 40000);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

fn publish_req(me: &SecretIdentity, invite: Option<&str>) -> Request<Body> {
    let mut req = signed(
        me,
        "PUT",
        "/v1/identities",
        json_payload(json!({ "identity": me.public().to_text() })),
    );
    if let Some(token) = invite {
        req.headers_mut()
            .insert("x-vault-invite", token.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn new_identities_need_an_invitation_when_the_operator_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("invites");
    std::fs::write(
        &file,
        "# clinic tokens\n\n  correct-horse-battery-staple  \nsecond-token-0123456789\n",
    )
    .unwrap();
    let tokens = relay_server::admission::InviteTokens::load(&file).unwrap();
    assert_eq!(format!("{tokens:?}"), "InviteTokens(2 tokens)");
    let t = T::with(|c| c.invite_tokens = tokens);
    let alice = ident(2, "Dr Alice", Role::Clinician);
    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some("correct-horse-battery"),
    ] {
        t.refused(
            publish_req(&alice, token),
            StatusCode::FORBIDDEN,
            "invite_required",
        )
        .await;
    }
    assert!(t
        .relay
        .state
        .meta
        .identity(alice.fingerprint())
        .await
        .unwrap()
        .is_none());
    let (s, v) = t
        .json(publish_req(&alice, Some("second-token-0123456789")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Publishing it again needs no token.
    let (s, v) = t.json(publish_req(&alice, None)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A tokens file without a token, or with a short one, is refused.
    std::fs::write(&file, "# none\n").unwrap();
    assert!(relay_server::admission::InviteTokens::load(&file).is_err());
    std::fs::write(&file, "short\n").unwrap();
    assert!(relay_server::admission::InviteTokens::load(&file).is_err());
}

#[tokio::test]
async fn a_source_address_may_create_only_so_many_identities_and_vaults_an_hour() {
    let t = T::with(|c| c.new_per_hour = 3);
    let [a, b, c, d] = [11u8, 12, 13, 14].map(|i| ident(i, "key", Role::Patient));
    let create = |who: &SecretIdentity| {
        let (_, g) = VaultState::create(who, now()).unwrap();
        signed(
            who,
            "POST",
            "/v1/vaults",
            json_payload(json!({ "genesis": b64(g.to_bytes()) })),
        )
    };
    let here = "203.0.113.7";
    for k in [&a, &b] {
        let (s, v) = t.json(from(publish_req(k, None), here)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = t.json(from(create(&a), here)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The fourth creation from this address this hour is refused...
    let (s, h, body) = t.call(from(create(&b), here)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "creation_limited", "{v}");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait));
    t.refused(
        from(publish_req(&c, None), here),
        StatusCode::TOO_MANY_REQUESTS,
        "creation_limited",
    )
    .await;
    // Republishing a known identity does not count.
    let (s, _) = t.json(from(publish_req(&a, None), here)).await;
    assert_eq!(s, StatusCode::OK);
    // Other addresses, and loopback, are not affected.
    let (s, v) = t.json(from(publish_req(&c, None), "198.51.100.1")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = t.json(from(create(&b), "127.0.0.1")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for i in 0..3 {
        let (s, v) = t
            .json(from(publish_req(&d, None), &format!("2001:db8::{}", i + 1)))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{v}");
    }
    for _ in 0..3 {
        let (s, _) = t.json(from(create(&d), "2001:db8::9")).await;
        if s != StatusCode::CREATED {
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    let (s, v) = t.json(from(create(&d), "2001:db8::77")).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "one /64 shares a budget: {v}"
    );
    let (s, v) = t.json(from(create(&d), "2001:db8:0:1::1")).await;
    assert_eq!(s, StatusCode::CREATED, "another /64 has its own: {v}");
}

/// Every file below `dir` whose name is `name`.
fn files_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, name));
        } else if p.file_name().and_then(|n| n.to_str()) == Some(name) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_purge_deletes_the_purged_versions_blobs_and_gives_their_charge_back() {
    let mut w = World::new().await;
    let patient = w.patient.clone();
    w.share(&w.alice.clone(), Permission::Read).await;
    let v1 = w.put_record(&patient, b"positive (entered in error)").await;
    let record = w.state.records(None)[0].id;
    let mut kr = Keyring::new(&patient, now());
    let info = RecordInfo {
        content_type: "text/plain".into(),
        title: "result".into(),
        created_at: now(),
        effective_at: None,
    };
    let body = b"negative";
    let mut v2 = Vec::new();
    let (_, e) = w
        .state
        .put_record(
            &mut kr,
            &w.labs,
            Some(record),
            &info,
            vault_core::RecordBody::new(&body[..], body.len() as u64),
            &mut v2,
        )
        .unwrap();
    w.upload(&patient, &v2).await;
    w.append(&patient, &[&e]).await;
    let name = hex::encode(address(&v1));
    // On SQLite + files the blob is a file of the data directory (on S3 the
    // 404 below says it is gone).
    if !shared_backend() {
        assert_eq!(files_named(w.t._dir.path(), &name).len(), 1);
    }
    let before = usage(&w.t, &patient).await;

    let purge = w.state.purge_record(&patient, &record, now()).unwrap();
    w.append(&patient, &[&purge]).await;

    // Nobody, the owner included, can fetch the purged version: the relay
    // no longer has it. The current version is still served.
    for who in [&patient, &w.alice] {
        w.t.refused(
            signed(who, "GET", &w.blob_path(&v1), Payload::None),
            StatusCode::NOT_FOUND,
            "blob_not_found",
        )
        .await;
        let (s, _, b) =
            w.t.call(signed(who, "GET", &w.blob_path(&v2), Payload::None))
                .await;
        assert_eq!((s, b), (StatusCode::OK, v2.clone()));
    }
    if !shared_backend() {
        assert!(
            files_named(w.t._dir.path(), &name).is_empty(),
            "the bytes are gone"
        );
    }
    let after = usage(&w.t, &patient).await;
    assert!(
        after + v1.len() as u64 <= before + purge.to_bytes().len() as u64,
        "the purged blob's charge was given back: {before} -> {after}"
    );
}

/// Creates `n` vaults of `owner`, each sharing `collections` collections
/// with `member`; returns their ids.
async fn stranger_vaults(
    t: &T,
    owner: &SecretIdentity,
    member: &SecretIdentity,
    n: usize,
    collections: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (mut state, genesis) = VaultState::create(owner, now()).unwrap();
        let (s, v) = t
            .json(signed(
                owner,
                "POST",
                "/v1/vaults",
                json_payload(json!({ "genesis": b64(genesis.to_bytes()) })),
            ))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // The first append of each collection carries it, then the grant.
        for i in 0..collections {
            let (c, e) = state
                .create_collection(owner, &format!("spam {i}"), now())
                .unwrap();
            let (s, v) = t.json(append_req(owner, &state, &[&e])).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            state.apply(&e).unwrap();
            let mut kr = Keyring::new(owner, now());
            let g = state
                .share_collection(&mut kr, &c, member.public(), Permission::Read, None)
                .unwrap();
            let (s, v) = t.json(append_req(owner, &state, &[&g])).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            state.apply(&g).unwrap();
        }
        ids.push(state.vault().to_hex());
    }
    ids
}

/// Issue 12 §5 (b, c): strangers' shares are capped per owner and per
/// vault; a person's accepted owners are listed in full; the accepted list
/// only moves forward (a replayed or older list is refused with the stored
/// one) and is checked.
#[tokio::test]
async fn strangers_are_capped_until_accepted() {
    let t = T::with(|c| c.inbox_strangers_per_owner = 2);
    let mallory = ident(6, "Mallory", Role::Patient);
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&mallory).await;
    t.publish(&alice).await;
    let mut flood = stranger_vaults(&t, &mallory, &alice, 5, 1).await;
    flood.sort();
    let inbox = |pq: &'static str| t.json(signed(&alice, "GET", pq, Payload::None));
    let (s, v) = inbox("/v1/inbox").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let listed = v["vaults"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{v}");
    assert!(listed.iter().all(|x| x["accepted"] == false));
    assert_eq!(listed[0]["vault"], flood[0], "the lowest vault ids first");
    assert_eq!(v["strangers_held_back"], 3);

    // Accepting mallory lists every vault of hers.
    let (s, v) = inbox("/v1/inbox/accepted").await;
    assert_eq!(
        (s, &v),
        (
            StatusCode::OK,
            &json!({"version": 0, "owners": [], "holder": alice.fingerprint().to_hex()})
        )
    );
    let put = |version: u64, owners: Vec<String>| {
        signed(
            &alice,
            "PUT",
            "/v1/inbox/accepted",
            json_payload(json!({ "version": version, "owners": owners })),
        )
    };
    let m = mallory.fingerprint().to_hex();
    let (s, v) = t.json(put(1, vec![m.clone()])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let a = alice.fingerprint().to_hex();
    assert_eq!(v, json!({"version": 1, "owners": [m.clone()], "holder": a}));
    let (_, v) = inbox("/v1/inbox").await;
    assert_eq!(v["vaults"].as_array().unwrap().len(), 5, "{v}");
    assert!(v["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["accepted"] == true));
    assert_eq!(v["strangers_held_back"], 0);

    // The same version again (a replay, or another device's older list).
    let refused = t
        .refused(put(1, vec![]), StatusCode::CONFLICT, "stale_version")
        .await;
    assert_eq!(
        refused["accepted"],
        json!({"version": 1, "owners": [m.clone()], "holder": a})
    );

    // Forgetting her: strangers again; the views split them.
    let (s, _) = t.json(put(2, vec![])).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = inbox("/v1/inbox?view=accepted").await;
    assert!(v["vaults"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["strangers_not_listed"], 2);
    let (_, v) = inbox("/v1/inbox?view=strangers").await;
    assert_eq!(v["vaults"].as_array().unwrap().len(), 2, "{v}");
    t.refused(
        signed(&alice, "GET", "/v1/inbox?view=everything", Payload::None),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;

    // Malformed lists change nothing.
    for (body, status, code) in [
        (put(0, vec![]), StatusCode::BAD_REQUEST, "malformed_request"),
        (
            put(3, vec!["zz".into()]),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            put(3, vec![m.clone(), m.clone()]),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            put(3, (0..1001).map(|i| format!("{i:064x}")).collect()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
    ] {
        t.refused(body, status, code).await;
    }
    let (_, v) = inbox("/v1/inbox/accepted").await;
    assert_eq!(v, json!({"version": 2, "owners": [], "holder": a}));
}

/// A device reads its inbox for its person once the person's current list
/// in the directory names it: the person's accepted owners are listed in
/// full, the device reads and changes the person's accepted list, and a
/// flood of shares to the device's own public document stays capped. A
/// device the list does not name, or no longer names, is refused.
#[tokio::test]
async fn a_device_reads_the_inbox_and_accepted_owners_of_the_person_listing_it() {
    let t = T::with(|c| c.inbox_strangers_per_owner = 1);
    let dee = ident(2, "Dr Dee", Role::Clinician);
    let phone = ident(20, "phone", Role::Device);
    let other = ident(21, "someone's tablet", Role::Device);
    let pat = ident(3, "Pat", Role::Patient);
    let mallory = ident(6, "Mallory", Role::Patient);
    for who in [&dee, &phone, &other, &pat, &mallory] {
        t.publish(who).await;
    }
    let (v1, keys) =
        vault_core::devices::DeviceList::first(&dee, &[phone.public().clone()], now()).unwrap();
    let publish = |v: &vault_core::devices::DeviceList| {
        signed(
            &dee,
            "PUT",
            &format!("/v1/identities/{}/devices", dee.fingerprint().to_hex()),
            json_payload(json!({ "lists": [b64(v.to_bytes())] })),
        )
    };
    let (s, v) = t.json(publish(&v1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Pat shares two vaults with the phone, Mallory floods it with three;
    // Dee accepted Pat.
    let mut from_pat = stranger_vaults(&t, &pat, &phone, 2, 1).await;
    from_pat.sort();
    stranger_vaults(&t, &mallory, &phone, 3, 1).await;
    let p = pat.fingerprint().to_hex();
    let m = mallory.fingerprint().to_hex();
    let (s, v) = t
        .json(signed(
            &dee,
            "PUT",
            "/v1/inbox/accepted",
            json_payload(json!({ "version": 1, "owners": [p.clone()] })),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let d = dee.fingerprint().to_hex();
    let for_dee = |pq: &str| format!("{pq}?person={d}");
    let accepted_pats = |v: &Value| -> Vec<String> {
        v["vaults"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["accepted"] == true)
            .map(|x| x["vault"].as_str().unwrap().to_owned())
            .collect()
    };
    // For itself, the phone sees Pat as a stranger: one vault of hers.
    let (s, v) = t
        .json(signed(&phone, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(accepted_pats(&v).is_empty(), "{v}");
    assert_eq!(v["strangers_held_back"], 3, "{v}");
    // For Dee, Pat's vaults are listed in full; Mallory stays capped.
    let (s, v) = t
        .json(signed(&phone, "GET", &for_dee("/v1/inbox"), Payload::None))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(accepted_pats(&v), from_pat, "{v}");
    assert_eq!(v["vaults"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["strangers_held_back"], 2, "{v}");

    // The phone reads Dee's list and changes it; Dee sees the change.
    let (s, v) = t
        .json(signed(
            &phone,
            "GET",
            &for_dee("/v1/inbox/accepted"),
            Payload::None,
        ))
        .await;
    assert_eq!(
        (s, &v),
        (
            StatusCode::OK,
            &json!({"version": 1, "owners": [p.clone()], "holder": d})
        )
    );
    let mut both = vec![p.clone(), m.clone()];
    both.sort();
    let (s, v) = t
        .json(signed(
            &phone,
            "PUT",
            &for_dee("/v1/inbox/accepted"),
            json_payload(json!({ "version": 2, "owners": [m.clone(), p.clone()] })),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = t
        .json(signed(&dee, "GET", "/v1/inbox/accepted", Payload::None))
        .await;
    assert_eq!(v, json!({"version": 2, "owners": both, "holder": d}));
    let (_, v) = t
        .json(signed(&phone, "GET", "/v1/inbox/accepted", Payload::None))
        .await;
    assert_eq!(v["version"], 0, "the phone's own list is untouched: {v}");

    // A device Dee's list does not name is refused, reading or writing.
    for (method, pq, body) in [
        ("GET", "/v1/inbox", Payload::None),
        ("GET", "/v1/inbox/accepted", Payload::None),
        (
            "PUT",
            "/v1/inbox/accepted",
            json_payload(json!({ "version": 3, "owners": [] })),
        ),
    ] {
        t.refused(
            signed(&other, method, &for_dee(pq), body),
            StatusCode::FORBIDDEN,
            "not_their_device",
        )
        .await;
    }
    t.refused(
        signed(&phone, "GET", "/v1/inbox?person=zz", Payload::None),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    // A person who published no list has no devices to read for her.
    t.refused(
        signed(
            &phone,
            "GET",
            &format!("/v1/inbox/accepted?person={p}"),
            Payload::None,
        ),
        StatusCode::FORBIDDEN,
        "not_their_device",
    )
    .await;
    // Dee removes the phone and lists the tablet: from that version on,
    // the phone is refused, reading or writing, and the tablet reads
    // Dee's list.
    let (v2, _) = v1
        .next(
            &dee,
            &keys,
            &[other.public().clone()],
            &[phone.fingerprint()],
            now(),
        )
        .unwrap();
    let (s, v) = t.json(publish(&v2)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (method, pq, body) in [
        ("GET", "/v1/inbox", Payload::None),
        (
            "PUT",
            "/v1/inbox/accepted",
            json_payload(json!({ "version": 3, "owners": [] })),
        ),
    ] {
        t.refused(
            signed(&phone, method, &for_dee(pq), body),
            StatusCode::FORBIDDEN,
            "not_their_device",
        )
        .await;
    }
    let (s, v) = t
        .json(signed(
            &other,
            "GET",
            &for_dee("/v1/inbox/accepted"),
            Payload::None,
        ))
        .await;
    assert_eq!(
        (s, &v["version"], &v["holder"]),
        (StatusCode::OK, &json!(2), &json!(d))
    );
    let (s, v) = t
        .json(signed(&dee, "GET", "/v1/inbox/accepted", Payload::None))
        .await;
    assert_eq!((s, v["version"].clone()), (StatusCode::OK, json!(2)));
}

/// A stranger's vault lists at most 64 of its shares with the person
/// (flagged `truncated`); an accepted owner's lists all of them.
#[tokio::test]
async fn a_strangers_vault_lists_a_bounded_number_of_shares() {
    let t = T::new();
    let mallory = ident(6, "Mallory", Role::Patient);
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&mallory).await;
    t.publish(&alice).await;
    stranger_vaults(&t, &mallory, &alice, 1, 70).await;
    let (_, v) = t
        .json(signed(&alice, "GET", "/v1/inbox", Payload::None))
        .await;
    let vault = &v["vaults"][0];
    assert_eq!(vault["collections"].as_array().unwrap().len(), 64, "{v}");
    assert_eq!(vault["truncated"], true);
    let (s, _) = t
        .json(signed(
            &alice,
            "PUT",
            "/v1/inbox/accepted",
            json_payload(json!({ "version": 1, "owners": [mallory.fingerprint().to_hex()] })),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = t
        .json(signed(&alice, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(v["vaults"][0]["collections"].as_array().unwrap().len(), 70);
    assert_eq!(v["vaults"][0]["truncated"], false);
}

/// Issue 12 §5 (a): the inbox is paginated. Pages follow the `next`
/// cursor in vault-id order, `limit` is bounded, a bad cursor is a 400, and
/// a flood of shares never makes one answer larger than a page.
#[tokio::test]
async fn the_inbox_is_paginated() {
    let t = T::new();
    let mallory = ident(6, "Mallory", Role::Patient);
    let alice = ident(2, "Dr Alice", Role::Clinician);
    t.publish(&mallory).await;
    t.publish(&alice).await;
    let mut expected = stranger_vaults(&t, &mallory, &alice, 5, 1).await;
    expected.sort();

    // Pages of two: 2 + 2 + 1, each cursor the last vault of its page.
    let mut listed = Vec::new();
    let mut pq = "/v1/inbox?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (s, v) = t.json(signed(&alice, "GET", &pq, Payload::None)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pages += 1;
        let page: Vec<String> = v["vaults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["vault"].as_str().unwrap().to_owned())
            .collect();
        assert!(page.len() <= 2);
        listed.extend(page.clone());
        match v["next"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), page.last().map(String::as_str));
                pq = format!("/v1/inbox?after={next}&limit=2");
            }
            None => {
                assert!(v["next"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, expected);
    // Without a limit: one page of everything (at most 500), next null.
    let (s, v) = t
        .json(signed(&alice, "GET", "/v1/inbox", Payload::None))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["vaults"].as_array().unwrap().len(), 5);
    assert!(v["next"].is_null());
    // A huge limit is clamped, not refused; a bad cursor is refused.
    let (s, _) = t
        .json(signed(
            &alice,
            "GET",
            "/v1/inbox?limit=99999999",
            Payload::None,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    t.refused(
        signed(&alice, "GET", "/v1/inbox?after=zz", Payload::None),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    t.refused(
        signed(&alice, "GET", "/v1/inbox?mystery=1", Payload::None),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
}

/// Pairing slots (`docs/format.md` §3.8, decision 72) over HTTP: the
/// opener commits; only a device joins, once, and not the opener itself,
/// then sends its nonce, once; only the opener answers, once, after that
/// nonce, naming a published person;
/// nobody else sees the slot; three live slots per identity; the opener
/// closes it.
#[tokio::test]
async fn pairing_slots_follow_their_rules() {
    let t = T::new();
    let patient = ident(1, "Pat", Role::Patient);
    let laptop = ident(6, "laptop", Role::Device);
    let phone = ident(7, "phone", Role::Device);
    let mallory = ident(4, "Mallory", Role::Clinician);
    let stranger = ident(9, "never published", Role::Patient);
    for p in [&patient, &laptop, &phone, &mallory] {
        t.publish(p).await;
    }
    let slot = |n: u8| format!("/v1/pairings/{}", hex::encode([n; 32]));
    let hex32 = |n: u8| hex::encode([n; 32]);
    let open = |who: &SecretIdentity, n: u8| {
        signed(
            who,
            "PUT",
            &slot(n),
            json_payload(json!({ "commit": hex32(0xc0) })),
        )
    };
    let join = |who: &SecretIdentity, n: u8| {
        signed(
            who,
            "POST",
            &format!("{}/join", slot(n)),
            json_payload(json!({})),
        )
    };
    let nonce_of = |who: &SecretIdentity, n: u8, value: u8| {
        signed(
            who,
            "POST",
            &format!("{}/nonce", slot(n)),
            json_payload(json!({ "nonce": hex32(value) })),
        )
    };
    let nonce = |who: &SecretIdentity, n: u8| nonce_of(who, n, 0x0a);
    let reveal = |who: &SecretIdentity, n: u8, person: String| {
        signed(
            who,
            "POST",
            &format!("{}/reveal", slot(n)),
            json_payload(json!({ "person": person, "nonce": hex32(0x0e) })),
        )
    };
    let status = |who: &SecretIdentity, n: u8| signed(who, "GET", &slot(n), Payload::None);

    let (s, v) = t.json(open(&patient, 1)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["expires_at"].as_u64().unwrap() > now());
    t.refused(
        open(&mallory, 1),
        StatusCode::CONFLICT,
        "pairing_code_in_use",
    )
    .await;
    // Nobody but the opener sees it before a join.
    t.refused(
        status(&mallory, 1),
        StatusCode::NOT_FOUND,
        "pairing_not_found",
    )
    .await;
    let (s, v) = t.json(status(&patient, 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["commit"], hex32(0xc0));
    assert!(v.get("device").is_none(), "{v}");
    // An answer before a join; a join by a person, or by the opener.
    t.refused(
        reveal(&patient, 1, patient.fingerprint().to_hex()),
        StatusCode::CONFLICT,
        "pairing_not_joined",
    )
    .await;
    t.refused(join(&mallory, 1), StatusCode::FORBIDDEN, "forbidden")
        .await;
    t.refused(join(&laptop, 2), StatusCode::NOT_FOUND, "pairing_not_found")
        .await;
    let (s, v) = t.json(join(&laptop, 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Joining again before the nonce (a retry) is answered alike.
    let (s, again) = t.json(join(&laptop, 1)).await;
    assert_eq!((s, &again), (StatusCode::OK, &v));
    assert_eq!(v["opener"], patient.fingerprint().to_hex());
    assert_eq!(v["commit"], hex32(0xc0));
    assert_eq!(v["device"], laptop.fingerprint().to_hex());
    assert!(v.get("device_nonce").is_none(), "{v}");
    t.refused(join(&phone, 1), StatusCode::CONFLICT, "pairing_taken")
        .await;
    // The opener cannot answer before the device's nonce; only the device
    // that joined sends it, once.
    t.refused(
        reveal(&patient, 1, patient.fingerprint().to_hex()),
        StatusCode::CONFLICT,
        "pairing_not_joined",
    )
    .await;
    t.refused(nonce(&phone, 1), StatusCode::NOT_FOUND, "pairing_not_found")
        .await;
    let (s, v) = t.json(nonce(&laptop, 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["device_nonce"], hex32(0x0a));
    // The same nonce again (a retry) is answered alike; another is not,
    // nor a join once the nonce is in.
    assert_eq!(t.json(nonce(&laptop, 1)).await.0, StatusCode::OK);
    t.refused(
        nonce_of(&laptop, 1, 0x0b),
        StatusCode::CONFLICT,
        "pairing_nonce_sent",
    )
    .await;
    t.refused(join(&laptop, 1), StatusCode::CONFLICT, "pairing_taken")
        .await;
    // The joiner sees it; the other device does not.
    t.refused(
        status(&phone, 1),
        StatusCode::NOT_FOUND,
        "pairing_not_found",
    )
    .await;
    assert_eq!(t.json(status(&laptop, 1)).await.0, StatusCode::OK);
    // Only the opener answers, with a published person, once.
    t.refused(
        reveal(&mallory, 1, mallory.fingerprint().to_hex()),
        StatusCode::NOT_FOUND,
        "pairing_not_found",
    )
    .await;
    t.refused(
        reveal(&patient, 1, stranger.fingerprint().to_hex()),
        StatusCode::NOT_FOUND,
        "identity_not_found",
    )
    .await;
    let (s, v) = t
        .json(reveal(&patient, 1, patient.fingerprint().to_hex()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = t.json(status(&laptop, 1)).await;
    assert_eq!(v["person"], patient.fingerprint().to_hex());
    assert_eq!(v["opener_nonce"], hex32(0x0e));
    assert_eq!(v["device_nonce"], hex32(0x0a));
    t.refused(
        reveal(&patient, 1, patient.fingerprint().to_hex()),
        StatusCode::CONFLICT,
        "pairing_answered",
    )
    .await;
    // A device cannot pair with itself.
    let (s, v) = t.json(open(&phone, 5)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    t.refused(join(&phone, 5), StatusCode::FORBIDDEN, "forbidden")
        .await;
    // Three live slots per identity.
    for n in [2, 3] {
        assert_eq!(t.json(open(&patient, n)).await.0, StatusCode::CREATED);
    }
    t.refused(open(&patient, 4), StatusCode::CONFLICT, "too_many_pairings")
        .await;
    // Closed by its opener only; then gone, and a slot opens again.
    t.refused(
        signed(&mallory, "DELETE", &slot(1), Payload::None),
        StatusCode::NOT_FOUND,
        "pairing_not_found",
    )
    .await;
    let (s, _, _) = t
        .call(signed(&patient, "DELETE", &slot(1), Payload::None))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    t.refused(
        status(&laptop, 1),
        StatusCode::NOT_FOUND,
        "pairing_not_found",
    )
    .await;
    assert_eq!(t.json(open(&patient, 4)).await.0, StatusCode::CREATED);
}

/// One network address opens only so many pairing codes per ten minutes,
/// whatever number of identities it made (a budget spent from one address
/// leaves others theirs), and an open that did not happen gives its place
/// back.
#[tokio::test]
async fn one_address_opens_only_so_many_pairings_whatever_its_identities() {
    let t = T::with(|c| c.pairings_per_source = 2);
    let [a, b, c] = [21u8, 22, 23].map(|i| ident(i, "opener", Role::Patient));
    for p in [&a, &b, &c] {
        t.publish(p).await;
    }
    let open = |who: &SecretIdentity, n: u8| {
        signed(
            who,
            "PUT",
            &format!("/v1/pairings/{}", hex::encode([n; 32])),
            json_payload(json!({ "commit": hex::encode([0xc0; 32]) })),
        )
    };
    let here = "203.0.113.9";
    let (s, v) = t.json(from(open(&a, 1), here)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // A code in use is refused and does not count.
    t.refused(
        from(open(&b, 1), here),
        StatusCode::CONFLICT,
        "pairing_code_in_use",
    )
    .await;
    let (s, v) = t.json(from(open(&b, 2), here)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The third open from this address, by a third identity, is refused.
    let (s, h, body) = t.call(from(open(&c, 3), here)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "pairings_limited", "{v}");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    // IPv6 is counted by its /64.
    for (n, ip) in [(4, "2001:db8::1"), (5, "2001:db8::2")] {
        let (s, v) = t.json(from(open(&c, n), ip)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    t.refused(
        from(open(&a, 6), "2001:db8::3"),
        StatusCode::TOO_MANY_REQUESTS,
        "pairings_limited",
    )
    .await;
    // Another address has its own budget.
    let (s, v) = t.json(from(open(&a, 6), "198.51.100.4")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
