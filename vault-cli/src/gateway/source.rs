//! Where the gateway's resources come from: the trust's FHIR server.

use secrecy::SecretString;

use crate::error::Result;

/// What changed for one patient since a cursor.
#[derive(Debug, Default)]
pub struct Changes {
    /// The resources new or changed since the cursor (possibly several
    /// versions of one resource; the gateway keeps the newest).
    pub resources: Vec<vault_fhir::Resource>,
    /// The cursor the next fetch starts from, if the server gave one.
    pub next: Option<String>,
}

/// A source of FHIR resources per patient.
// The gateway drives its sources on the session's runtime with
// `block_on`, one at a time: no `Send` bound is needed on the futures.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// The resources of `patient` new or changed since `since` (all of them
    /// for `None`), and the cursor to ask from next time. Nothing
    /// half-parsed is returned: a malformed response is an error.
    async fn changes(&self, patient: &str, since: Option<&str>) -> Result<Changes>;
}

/// The trust's FHIR server, read with `Patient/ID/$everything` (and
/// `_since` from the patient's cursor) through vault-client's
/// [`vault_client::fhir_pull::FhirPull`]: only its origin is contacted,
/// pages are size-capped, `next` links that loop or leave the origin are
/// refused, 429 and 5xx are retried within bounds, and a page is parsed
/// whole before any of it is used.
pub struct FhirServer {
    base: String,
    token: Option<SecretString>,
}

impl std::fmt::Debug for FhirServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl FhirServer {
    /// A server at `base` (its FHIR base URL), with an optional bearer
    /// token; the URL is checked now.
    pub fn new(base: &str, token: Option<SecretString>) -> Result<Self> {
        vault_client::fhir_pull::FhirSource::new(base, "check")?;
        Ok(Self {
            base: base.to_owned(),
            token,
        })
    }
}

impl Source for FhirServer {
    async fn changes(&self, patient: &str, since: Option<&str>) -> Result<Changes> {
        use vault_client::fhir_pull::{
            Credentials, Cursor, FhirPull, FhirSource, Mode, PullOptions,
        };
        let source = FhirSource::new(&self.base, patient)?;
        let credentials = match &self.token {
            Some(t) => Credentials::Bearer(t.clone()),
            None => Credentials::None,
        };
        let mut options = PullOptions::new(Mode::Everything);
        options.since = since.and_then(Cursor::parse);
        let mut pull = FhirPull::start(source, credentials, options, &mut |_| {}).await?;
        let mut changes = Changes::default();
        while let Some(batch) = pull.next_batch(&mut |_| {}).await? {
            changes.resources.extend(batch);
        }
        changes.next = pull.cursor().map(|c| c.as_str().to_owned());
        Ok(changes)
    }
}
