//! SMART Backend Services (SMART App Launch 2.x, "client-confidential-
//! asymmetric"): an access token from the server's token endpoint for a
//! client-credentials grant authenticated by a JWT the client signs with
//! its private key (ES384, ES256 or RS384), never by a shared secret.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

use super::error::{server_text, FhirPullError};
use super::http::{origin_text, outcome_text, read_limited, transport_error};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Largest token or discovery answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Lifetime of a client assertion (the specification allows at most five
/// minutes).
const ASSERTION_LIFETIME: u64 = 240;

/// Which JWS algorithm the key signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Es384,
    Es256,
    Rs384,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Es384 => "ES384",
            Alg::Es256 => "ES256",
            Alg::Rs384 => "RS384",
        }
    }
}

/// A SMART Backend Services client: its id, its private key (PKCS#8, kept
/// in a [`SecretBox`] that is zeroized when dropped), the scope it asks for
/// and optionally the token endpoint (discovered from the server's
/// `.well-known/smart-configuration` otherwise).
///
/// Guarantees: `Debug` shows the client id and algorithm only, never the
/// key; the key signs client assertions and nothing else.
pub struct SmartClient {
    client_id: String,
    key: SecretBox<Vec<u8>>,
    alg: Alg,
    kid: Option<String>,
    scope: String,
    token_url: Option<Url>,
}

impl std::fmt::Debug for SmartClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            client_id,
            key: _,
            alg,
            kid,
            scope,
            token_url,
        } = self;
        f.debug_struct("SmartClient")
            .field("client_id", client_id)
            .field("alg", &alg.name())
            .field("kid", kid)
            .field("scope", scope)
            .field("token_url", &token_url.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl SmartClient {
    /// A client from its registered id and its private key as PEM
    /// (`-----BEGIN PRIVATE KEY-----`, PKCS#8: an EC P-384 or P-256 key, or
    /// an RSA key). `scope` defaults to `system/*.read`.
    ///
    /// # Errors
    ///
    /// [`FhirPullError::Config`] if the PEM holds no usable PKCS#8 key (the
    /// message never quotes the key).
    pub fn from_pem(
        client_id: &str,
        pem: &SecretBox<Vec<u8>>,
        kid: Option<String>,
        scope: Option<String>,
        token_url: Option<Url>,
    ) -> Result<Self, FhirPullError> {
        if client_id.is_empty() || client_id.len() > 256 {
            return Err(FhirPullError::Config(
                "the SMART client id must be 1 to 256 characters".into(),
            ));
        }
        let der = pkcs8_der(pem.expose_secret())?;
        let rng = SystemRandom::new();
        let alg = if EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            der.expose_secret(),
            &rng,
        )
        .is_ok()
        {
            Alg::Es384
        } else if EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.expose_secret(),
            &rng,
        )
        .is_ok()
        {
            Alg::Es256
        } else if RsaKeyPair::from_pkcs8(der.expose_secret()).is_ok() {
            Alg::Rs384
        } else {
            return Err(FhirPullError::Config(
                "the SMART client key is not an unencrypted PKCS#8 EC P-384, P-256 or RSA private key".into(),
            ));
        };
        Ok(Self {
            client_id: client_id.to_owned(),
            key: der,
            alg,
            kid,
            scope: scope.unwrap_or_else(|| "system/*.read".to_owned()),
            token_url,
        })
    }

    /// A signed client assertion for `token_url`, valid for four minutes.
    fn assertion(&self, token_url: &Url, now: u64) -> Result<SecretString, FhirPullError> {
        let mut header = serde_json::json!({ "alg": self.alg.name(), "typ": "JWT" });
        if let (Some(kid), Some(h)) = (&self.kid, header.as_object_mut()) {
            h.insert("kid".into(), serde_json::Value::String(kid.clone()));
        }
        let mut jti = [0u8; 16];
        getrandom::getrandom(&mut jti)
            .map_err(|_| FhirPullError::Config("no randomness for the assertion's id".into()))?;
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url.as_str(),
            "exp": now + ASSERTION_LIFETIME,
            "jti": hex::encode(jti),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let unusable = || FhirPullError::Config("the SMART client key cannot sign".into());
        let sig = match self.alg {
            Alg::Es384 | Alg::Es256 => {
                let alg = if self.alg == Alg::Es384 {
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                } else {
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                };
                let pair = EcdsaKeyPair::from_pkcs8(alg, self.key.expose_secret(), &rng)
                    .map_err(|_| unusable())?;
                pair.sign(&rng, signing_input.as_bytes())
                    .map_err(|_| unusable())?
                    .as_ref()
                    .to_vec()
            }
            Alg::Rs384 => {
                let pair =
                    RsaKeyPair::from_pkcs8(self.key.expose_secret()).map_err(|_| unusable())?;
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA384,
                    &rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| unusable())?;
                sig
            }
        };
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }
}

/// The DER of the first `PRIVATE KEY` block of a PEM text.
fn pkcs8_der(pem: &[u8]) -> Result<SecretBox<Vec<u8>>, FhirPullError> {
    let bad = || {
        FhirPullError::Config(
            "the SMART client key file holds no `-----BEGIN PRIVATE KEY-----` (PKCS#8) block"
                .into(),
        )
    };
    let text = std::str::from_utf8(pem).map_err(|_| bad())?;
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = text.find(begin).ok_or_else(bad)? + begin.len();
    let rest = text.get(start..).ok_or_else(bad)?;
    let stop = rest.find(end).ok_or_else(bad)?;
    let body: String = rest
        .get(..stop)
        .ok_or_else(bad)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let body = zeroize::Zeroizing::new(body);
    let der = STANDARD.decode(body.as_bytes()).map_err(|_| bad())?;
    Ok(SecretBox::new(Box::new(der)))
}

/// Whether plain http to `url` is acceptable (loopback only).
fn secure_enough(url: &Url) -> bool {
    url.scheme() == "https"
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost"))
}

/// The token endpoint from `{base}.well-known/smart-configuration`.
async fn discover(http: &reqwest::Client, base: &Url) -> Result<Url, FhirPullError> {
    let url = base
        .join(".well-known/smart-configuration")
        .map_err(|_| FhirPullError::Config("cannot form the SMART configuration URL".into()))?;
    let resp = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| transport_error(base, &e))?;
    if !resp.status().is_success() {
        return Err(FhirPullError::Unauthorized(format!(
            "the server offers no SMART configuration ({}); give the token endpoint with --smart-token-url",
            resp.status().as_u16()
        )));
    }
    let body = read_limited(resp, MAX_ANSWER, "the SMART configuration").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FhirPullError::malformed("the SMART configuration", e.to_string()))?;
    let endpoint = v
        .get("token_endpoint")
        .and_then(|t| t.as_str())
        .ok_or_else(|| FhirPullError::malformed("the SMART configuration", "no token_endpoint"))?;
    let url = Url::parse(endpoint).map_err(|_| {
        FhirPullError::malformed("the SMART configuration", "token_endpoint is not a URL")
    })?;
    if !secure_enough(&url) {
        return Err(FhirPullError::ForeignLink {
            what: "token endpoint (plain http)",
            found: origin_text(&url),
        });
    }
    Ok(url)
}

/// An access token for `client`, with the instant it expires.
pub(crate) async fn access_token(
    http: &reqwest::Client,
    base: &Url,
    client: &SmartClient,
) -> Result<(SecretString, Instant), FhirPullError> {
    let token_url = match &client.token_url {
        Some(u) => u.clone(),
        None => discover(http, base).await?,
    };
    let assertion = client.assertion(&token_url, crate::platform::unix_now())?;
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", client.scope.as_str()),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.expose_secret()),
    ];
    let resp = http
        .post(token_url.clone())
        .header("accept", "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| transport_error(&token_url, &e))?;
    let status = resp.status();
    let body = read_limited(resp, MAX_ANSWER, "the token answer").await?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let reason = v
            .get("error_description")
            .or_else(|| v.get("error"))
            .and_then(|e| e.as_str())
            .map(server_text)
            .or_else(|| outcome_text(&body))
            .unwrap_or_default();
        return Err(FhirPullError::Unauthorized(format!(
            "the token endpoint answered {}: {reason}",
            status.as_u16()
        )));
    }
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| {
            !t.is_empty() && t.len() <= 16 * 1024 && t.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| FhirPullError::malformed("the token answer", "no usable access_token"))?;
    let lifetime = v
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(300)
        .clamp(30, 86_400);
    Ok((
        SecretString::from(token.to_owned()),
        Instant::now() + Duration::from_secs(lifetime),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EC P-256 PKCS#8 key made by ring for the test.
    fn p256_pem() -> SecretBox<Vec<u8>> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(doc.as_ref())
        );
        SecretBox::new(Box::new(pem.into_bytes()))
    }

    #[test]
    fn an_assertion_is_a_signed_jwt_for_the_token_url() {
        let c = SmartClient::from_pem("vault-test", &p256_pem(), None, None, None).unwrap();
        assert_eq!(c.alg, Alg::Es256);
        let url = Url::parse("https://fhir.example/auth/token").unwrap();
        let jwt = c.assertion(&url, 1_000).unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "vault-test");
        assert_eq!(claims["sub"], "vault-test");
        assert_eq!(claims["aud"], url.as_str());
        assert_eq!(claims["exp"], 1_240);
        // ES256 signatures are r ‖ s, 64 bytes.
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        // Debug never shows the key.
        let debug = format!("{c:?}");
        assert!(debug.contains("vault-test") && !debug.contains("key:"));
    }

    #[test]
    fn a_bad_key_is_refused_without_quoting_it() {
        let pem = SecretBox::new(Box::new(
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----"
                .to_vec(),
        ));
        let e = SmartClient::from_pem("x", &pem, None, None, None).unwrap_err();
        assert!(!e.to_string().contains("c2Vj"));
        let none = SecretBox::new(Box::new(b"hello".to_vec()));
        assert!(SmartClient::from_pem("x", &none, None, None, None).is_err());
    }
}
