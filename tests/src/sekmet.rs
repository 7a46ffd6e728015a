//! A real FHIR R4 server for the `vault pull` tests: `sekmet` (PyPI's
//! `sekmet-fhir`, a small hospital-system simulator with `$everything`,
//! Bulk Data and SMART Backend Services), started on a free loopback port
//! with its own data directory and its base URL on loopback, stopped when
//! dropped. `scripts/services install` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISSING: &str = "sekmet (PyPI's sekmet-fhir) was not found: run `scripts/services install` (pip installs it into ~/.cache/vault-services/venv), or set VAULT_SEKMET to the binary";

/// The `sekmet` binary: `VAULT_SEKMET`, else the services venv
/// (`VAULT_SERVICES_DIR`, `XDG_CACHE_HOME/vault-services` or
/// `~/.cache/vault-services`).
pub fn sekmet_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VAULT_SEKMET") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("VAULT_SERVICES_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("vault-services"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vault-services"))
        });
    match cache
        .map(|c| c.join("venv/bin/sekmet"))
        .filter(|p| p.is_file())
    {
        Some(p) => p,
        None => panic!("{MISSING}"),
    }
}

/// The FHIR sample patients (Synthea transaction bundles) in
/// `../shared/fhir-samples/` beside the checkout.
pub fn sample(name_prefix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fhir-samples");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (CI needs shared/ beside the checkout)",
                dir.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(name_prefix) && n.ends_with(".json"))
        })
        .unwrap_or_else(|| panic!("no sample {name_prefix}* in {}", dir.display()))
}

/// A running sekmet server.
pub struct Sekmet {
    child: Child,
    /// Its FHIR base URL (`http://127.0.0.1:<port>/fhir`).
    pub base: String,
    /// Its root (`http://127.0.0.1:<port>`).
    pub root: String,
    /// Its directory (settings, data, log).
    pub dir: PathBuf,
    /// A bearer token the helpers send (for a server started with
    /// `server_auth`).
    pub token: Option<String>,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Sekmet {
    /// Starts sekmet in `dir` with no authentication.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// Starts sekmet in `dir` with extra YAML settings appended (for
    /// example `server_auth:`), and waits until it answers.
    pub fn start_with(dir: &Path, extra_yaml: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let port = crate::free_loopback_port();
        let root = format!("http://127.0.0.1:{port}");
        let base = format!("{root}/fhir");
        let settings = dir.join("settings.yaml");
        std::fs::write(
            &settings,
            format!(
                "data_dir: {data}\nhost: 127.0.0.1\nport: {port}\nbase_url: {base}\n\
                 simulator:\n  enabled: false\nvalidation:\n  inbound: \"off\"\nlog_inbound: false\n{extra_yaml}\n",
                data = dir.join("data").display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", settings.display()));
        let log = std::fs::File::create(dir.join("sekmet.log"))
            .unwrap_or_else(|e| panic!("sekmet log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("sekmet log: {e}"));
        let child = Command::new(sekmet_binary())
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--config")
            .arg(&settings)
            .env("SEKMET_BASE_URL", &base)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sekmet: {e}; {MISSING}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let server = Self {
            child,
            base,
            root,
            dir: dir.to_path_buf(),
            token: None,
            rt,
            // No pooled connections: the runtime runs only inside
            // block_on, so a connection the server closed meanwhile would
            // be reused and fail.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_else(|e| panic!("http client: {e}")),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/metadata", self.base);
        while Instant::now() < deadline {
            let ok = self.rt.block_on(async {
                matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.join("sekmet.log")).unwrap_or_default();
        panic!("sekmet did not answer on {url} within 60 s:\n{log}");
    }

    /// Sends a request and returns the status and JSON body.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method, &url)
                .header("accept", "application/fhir+json");
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/fhir+json").body(b);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap_or_default();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        })
    }

    /// Loads a Synthea transaction bundle; returns the id the server gave
    /// its Patient.
    pub fn load(&self, bundle: &Path) -> String {
        let bytes = std::fs::read(bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
        let (status, answer) = self.request(reqwest::Method::POST, "", Some(bytes));
        assert_eq!(status, 200, "loading {}: {answer}", bundle.display());
        answer
            .get("entry")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("response")?.get("location")?.as_str())
            .find_map(|l| {
                let rest = l.split("/Patient/").nth(1)?;
                Some(rest.split('/').next()?.to_owned())
            })
            .unwrap_or_else(|| panic!("no Patient in {}", bundle.display()))
    }

    /// `Patient/{id}/$everything` as the server answers it.
    pub fn everything(&self, patient: &str) -> serde_json::Value {
        let (status, b) = self.request(
            reqwest::Method::GET,
            &format!("Patient/{patient}/$everything"),
            None,
        );
        assert_eq!(status, 200, "$everything: {b}");
        b
    }

    /// (resource type, id) of every resource in `$everything`.
    pub fn everything_keys(&self, patient: &str) -> std::collections::BTreeSet<(String, String)> {
        keys_of(&self.everything(patient))
    }

    /// Replaces a resource (`PUT Type/id`); the server gives it a new
    /// `meta.versionId` and `meta.lastUpdated`.
    pub fn put(&self, resource: &serde_json::Value) {
        let path = format!(
            "{}/{}",
            resource
                .get("resourceType")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
            resource
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        );
        let (status, b) = self.request(
            reqwest::Method::PUT,
            &path,
            Some(resource.to_string().into_bytes()),
        );
        assert!(status == 200 || status == 201, "PUT {path}: {status} {b}");
    }
}

impl Drop for Sekmet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (resource type, id) of every resource in a Bundle.
pub fn keys_of(bundle: &serde_json::Value) -> std::collections::BTreeSet<(String, String)> {
    bundle
        .get("entry")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = e.get("resource")?;
            Some((
                r.get("resourceType")?.as_str()?.to_owned(),
                r.get("id")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}
