//! Pairing a new device with an existing one by a compared code
//! (`docs/format.md` §3.8, decision 72), on both sides, over the relay's
//! pairing slots.
//!
//! On the **existing device** (the person's key file, or one of its
//! devices): [`Offer::open`] draws a code and opens its slot, the person
//! types the code on the new device, [`Offer::wait`] returns the device
//! that joined and the [`ComparedCode`] to show. Once the person confirmed
//! that both screens show it, the caller adds the device (with
//! [`crate::devices::add_by_fingerprint`] for a vault owner, or
//! [`crate::member_devices::change`] for a member) and closes the offer.
//!
//! On the **new device** (an identity of role device): [`Joining::join`]
//! joins with the typed code, [`Joining::wait`] returns the person the
//! other device pairs for and the same compared code. Once the person
//! confirmed, [`Revealed::wait_listed`] waits until the person's list
//! names this device.
//!
//! What the relay learns: the slot (a hash of a 10-digit code), both
//! fingerprints and both nonces. It cannot make the two screens agree: the
//! existing device committed to its nonce before the new device's was
//! known, the new device sends its nonce only once it holds that
//! commitment (a second request after the join), and the existing device
//! reveals its nonce only after the new device's arrived, and answers for
//! no other device or nonce afterwards.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use vault_core::pairing::{self, ComparedCode, PairingCode};
use vault_core::{Fingerprint, PublicIdentity, Role};
use zeroize::Zeroizing;

use crate::client::{DetachedRequest, Mode, Req};
use crate::error::{ClientError, Result};
use crate::wire::hex32;
use crate::{platform, RelayClient};

/// How often [`Offer::wait`], [`Joining::wait`] and
/// [`Revealed::wait_listed`] ask the relay.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The largest answer of a pairing route.
const MAX_ANSWER: u64 = 4096;
/// Codes drawn again when the relay already has a slot of one.
const CODE_DRAWS: usize = 5;

/// A slot as the relay shows it.
#[derive(Deserialize)]
struct SlotAnswer {
    commit: String,
    expires_at: u64,
    device: Option<String>,
    device_nonce: Option<String>,
    person: Option<String>,
    opener_nonce: Option<String>,
}

fn fp(text: &str, what: &str) -> Result<Fingerprint> {
    hex32(text, what).map(Fingerprint::from_bytes)
}

/// `DELETE` of the slot (its opener's, to close it).
fn close_req(slot: &[u8; 32]) -> Req {
    Req::new(Method::DELETE, path(slot, ""), "closing a pairing")
}

fn path(slot: &[u8; 32], tail: &str) -> String {
    format!("/v1/pairings/{}{tail}", hex::encode(slot))
}

async fn status(client: &RelayClient, slot: &[u8; 32]) -> Result<SlotAnswer> {
    let req = Req::new(Method::GET, path(slot, ""), "reading a pairing");
    let (_, body) = client
        .exchange(&req, Mode::Buffer(MAX_ANSWER))
        .await?
        .ok_body()?;
    crate::wire::parse_json(&body, "pairing")
}

/// Slack after a slot's expiry before a wait ends by itself.
const SLACK: u64 = 30;

/// The local time (this device's clock, Unix seconds) by which a slot the
/// relay says expires at `expires_at` is over: at most
/// [`pairing::PAIRING_TTL`] from now whatever the relay says, plus
/// [`SLACK`]. A wait ends by itself then, even if the relay never says the
/// slot is gone.
fn deadline(client: &RelayClient, expires_at: u64) -> u64 {
    let left = expires_at
        .saturating_sub(client.now())
        .min(pairing::PAIRING_TTL);
    platform::unix_now()
        .saturating_add(left)
        .saturating_add(SLACK)
}

/// Whether `deadline` ([`deadline`]) has passed on this device's clock.
fn past(deadline: u64) -> bool {
    platform::unix_now() > deadline
}

/// Seconds until the slot whose [`deadline`] is `deadline` expires.
fn seconds_left(deadline: u64) -> u64 {
    deadline
        .saturating_sub(SLACK)
        .saturating_sub(platform::unix_now())
}

/// Whether `e` is the relay's answer that no live slot of the code exists
/// (expired, closed, or never opened).
fn is_gone(e: &ClientError) -> bool {
    e.code() == "pairing_not_found"
}

/// Checks what the person typed (the 8 digits the other screen shows)
/// against the code this device shows, `ours`: the one step that
/// authenticates a pairing. Digits that differ mean someone else may be in
/// the middle; anything that is not 8 digits cancels.
pub fn confirm(ours: ComparedCode, typed: &str) -> Result<()> {
    match ComparedCode::parse(typed.trim()) {
        Ok(theirs) if theirs == ours => Ok(()),
        Ok(_) => Err(ClientError::Pairing(
            "the two screens show different digits: someone else may be in the middle. Nothing was paired; start again, and pair only when both show the same",
        )),
        Err(_) => Err(ClientError::Pairing(
            "not confirmed (type the 8 digits the other device shows): nothing was paired",
        )),
    }
}

/// The existing device's side: an open slot and the nonce committed to.
pub struct Offer {
    code: PairingCode,
    slot: [u8; 32],
    person: Fingerprint,
    nonce: Zeroizing<[u8; 32]>,
    /// When the slot is over, on this device's clock ([`deadline`]).
    deadline: u64,
    /// The device and its nonce this offer answered, fixed at the first
    /// answer: a later poll never answers for other values (a relay could
    /// pick them knowing this offer's nonce).
    bound: std::sync::Mutex<Option<Joined>>,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("person", &self.person)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What the existing device learns once a device joined: the device, and
/// the code both screens show. Add the device only if the person says the
/// screens agree.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The device that joined (its published document, role device).
    pub device: PublicIdentity,
    /// The code to compare with the new device's screen.
    pub compared: ComparedCode,
}

impl Offer {
    /// Opens a slot at the relay for pairing a device of `person` (the
    /// person this client's identity is, or acts for): draws a code,
    /// commits to `person` and a fresh nonce. Show [`Offer::code`] to the
    /// person.
    pub async fn open(client: &RelayClient, person: &Fingerprint) -> Result<Self> {
        let mut last = None;
        for _ in 0..CODE_DRAWS {
            let code = PairingCode::random();
            let slot = code.slot();
            let nonce = Zeroizing::new(pairing::nonce());
            let commit = pairing::commitment(&slot, person, &nonce);
            let req = Req::new(Method::PUT, path(&slot, ""), "opening a pairing")
                .json(&json!({ "commit": hex::encode(commit) }))?;
            match client
                .exchange(&req, Mode::Buffer(MAX_ANSWER))
                .await?
                .ok_body()
            {
                Ok((_, body)) => {
                    #[derive(Deserialize)]
                    struct Opened {
                        expires_at: u64,
                    }
                    let opened: Opened = crate::wire::parse_json(&body, "pairing")?;
                    return Ok(Self {
                        code,
                        slot,
                        person: *person,
                        nonce,
                        deadline: deadline(client, opened.expires_at),
                        bound: std::sync::Mutex::new(None),
                    });
                }
                Err(e) if e.code() == "pairing_code_in_use" => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Pairing(
            "the relay had a pairing open under every code drawn",
        )))
    }

    /// The code to show, for the person to type on the new device.
    pub fn code(&self) -> &PairingCode {
        &self.code
    }

    /// Seconds until the code stops working (at most
    /// [`pairing::PAIRING_TTL`], whatever the relay says).
    pub fn seconds_left(&self) -> u64 {
        seconds_left(self.deadline)
    }

    fn bound(&self) -> Option<Joined> {
        self.bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks once: `None` until a device joined and sent its nonce. Then
    /// looks its document up (checked against its fingerprint), binds this
    /// offer to that device and nonce for good, reveals the person and this
    /// offer's nonce, and returns the device and the code to compare. Once
    /// bound, a poll only answers again for the same values.
    pub async fn poll(&self, client: &RelayClient) -> Result<Option<Joined>> {
        let joined = match self.bound() {
            Some(j) => j,
            None => {
                let answer = match status(client, &self.slot).await {
                    Ok(a) => a,
                    Err(e) if is_gone(&e) => {
                        return Err(ClientError::Pairing(
                            "the code expired before a device joined: start again",
                        ))
                    }
                    Err(e) => return Err(e),
                };
                let (Some(device), Some(device_nonce)) = (answer.device, answer.device_nonce)
                else {
                    return Ok(None);
                };
                let device = fp(&device, "the device")?;
                let device_nonce = hex32(&device_nonce, "the device's nonce")?;
                let document = client.lookup_identity(&device).await?;
                if document.role() != Role::Device {
                    return Err(ClientError::Pairing(
                        "the identity that joined is not a device's: nothing was added; start again",
                    ));
                }
                let joined = Joined {
                    compared: ComparedCode::of(
                        &self.slot,
                        &self.person,
                        &device,
                        &self.nonce,
                        &device_nonce,
                    ),
                    device: document,
                };
                self.bound
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert(joined)
                    .clone()
            }
        };
        let req = Req::new(
            Method::POST,
            path(&self.slot, "/reveal"),
            "answering a pairing",
        )
        .json(&json!({
            "person": self.person.to_hex(),
            "nonce": hex::encode(*self.nonce),
        }))?;
        match client
            .exchange(&req, Mode::Buffer(MAX_ANSWER))
            .await?
            .ok_body()
        {
            // Answered already: only this offer answers, and only for the
            // values it is bound to.
            Ok(_) => {}
            Err(e) if e.code() == "pairing_answered" => {}
            Err(e) => return Err(e),
        }
        Ok(Some(joined))
    }

    /// [`Offer::poll`] every [`POLL_INTERVAL`] until a device joined (or
    /// the code expired: [`ClientError::Pairing`], from the relay or, at
    /// the latest, by this client's own clock).
    pub async fn wait(&self, client: &RelayClient) -> Result<Joined> {
        loop {
            if let Some(joined) = self.poll(client).await? {
                return Ok(joined);
            }
            if past(self.deadline) {
                return Err(ClientError::Pairing(
                    "the code expired before a device joined: start again",
                ));
            }
            platform::sleep(POLL_INTERVAL).await;
        }
    }

    /// The request that closes the slot, signed now, for a sender that
    /// cannot wait for the answer: a page being left (the web app sends it
    /// with `fetch`'s `keepalive` when its tab is closed or navigated
    /// away, so the code stops working at once instead of in 10 minutes).
    pub fn close_request(&self, client: &RelayClient) -> Result<DetachedRequest> {
        client.detached(&close_req(&self.slot))
    }

    /// Closes the slot (after pairing, or to cancel); a slot already gone
    /// is not an error.
    pub async fn close(&self, client: &RelayClient) -> Result<()> {
        let req = close_req(&self.slot);
        match client
            .exchange(&req, Mode::Buffer(MAX_ANSWER))
            .await?
            .ok_body()
        {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The new device's side: joined a slot, its nonce sent.
pub struct Joining {
    slot: [u8; 32],
    me: Fingerprint,
    commit: [u8; 32],
    nonce: [u8; 32],
    /// When the slot is over, on this device's clock ([`deadline`]).
    deadline: u64,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joining")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What the new device learns once the other side answered: the person
/// it pairs for, and the code both screens show. Go on only if the person
/// says the screens agree.
#[derive(Debug, Clone)]
pub struct Revealed {
    /// The person's published identity (checked against its fingerprint).
    pub person: PublicIdentity,
    /// The code to compare with the existing device's screen.
    pub compared: ComparedCode,
}

impl Joining {
    /// Joins the slot of `code` (typed by the person) as this client's
    /// identity, which must be a device's: publishes it first if the relay
    /// lacks it, then sends a fresh nonce.
    pub async fn join(client: &RelayClient, code: &PairingCode) -> Result<Self> {
        let me = client.identity();
        if me.public().role() != Role::Device {
            return Err(ClientError::Pairing(
                "only a device identity joins a pairing: make one with `vault init --role device`",
            ));
        }
        client.publish_identity().await?;
        let slot = code.slot();
        // First the join, answered with the commitment; only then this
        // device's nonce, so that whoever answers cannot choose the
        // commitment knowing the nonce.
        let req =
            Req::new(Method::POST, path(&slot, "/join"), "joining a pairing").json(&json!({}))?;
        let (_, body) = client
            .exchange(&req, Mode::Buffer(MAX_ANSWER))
            .await?
            .ok_body()?;
        let answer: SlotAnswer = crate::wire::parse_json(&body, "pairing")?;
        let commit = hex32(&answer.commit, "the commitment")?;
        let nonce = pairing::nonce();
        let req = Req::new(Method::POST, path(&slot, "/nonce"), "joining a pairing")
            .json(&json!({ "nonce": hex::encode(nonce) }))?;
        client
            .exchange(&req, Mode::Buffer(MAX_ANSWER))
            .await?
            .ok_body()?;
        Ok(Self {
            slot,
            me: me.fingerprint(),
            commit,
            nonce,
            deadline: deadline(client, answer.expires_at),
        })
    }

    /// Seconds until the code stops working (at most
    /// [`pairing::PAIRING_TTL`], whatever the relay says).
    pub fn seconds_left(&self) -> u64 {
        seconds_left(self.deadline)
    }

    /// Asks once: `None` until the other side answered. Then checks the
    /// answer against the commitment the slot held when this device joined
    /// (a mismatch is refused), looks the person up, and returns the person
    /// and the code to compare.
    pub async fn poll(&self, client: &RelayClient) -> Result<Option<Revealed>> {
        let answer =
            match status(client, &self.slot).await {
                Ok(a) => a,
                Err(e) if is_gone(&e) => return Err(ClientError::Pairing(
                    "the pairing was cancelled or expired on the other device: start again there",
                )),
                Err(e) => return Err(e),
            };
        if answer.device.as_deref() != Some(self.me.to_hex().as_str()) {
            return Err(ClientError::Pairing(
                "the relay no longer shows this device in the pairing: start again",
            ));
        }
        let (Some(person), Some(opener_nonce)) = (answer.person, answer.opener_nonce) else {
            return Ok(None);
        };
        let person = fp(&person, "the person")?;
        let opener_nonce = hex32(&opener_nonce, "the other device's nonce")?;
        pairing::check_commitment(&self.commit, &self.slot, &person, &opener_nonce).map_err(
            |_| {
                ClientError::Pairing(
                    "the answer is not what the other device committed to (someone else answered): nothing was paired; start again",
                )
            },
        )?;
        let document = client.lookup_identity(&person).await?;
        if document.role() == Role::Device {
            return Err(ClientError::Pairing(
                "the other device pairs for a device, not a person: start again",
            ));
        }
        Ok(Some(Revealed {
            compared: ComparedCode::of(&self.slot, &person, &self.me, &opener_nonce, &self.nonce),
            person: document,
        }))
    }

    /// [`Joining::poll`] every [`POLL_INTERVAL`] until the other side
    /// answered (or the pairing ended: [`ClientError::Pairing`]).
    pub async fn wait(&self, client: &RelayClient) -> Result<Revealed> {
        loop {
            if let Some(revealed) = self.poll(client).await? {
                return Ok(revealed);
            }
            if past(self.deadline) {
                return Err(ClientError::Pairing(
                    "the other device did not answer before the code expired: start again there",
                ));
            }
            platform::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Where the new device found itself listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// In the person's own vaults (the person owns these; their logs carry
    /// the person's list, §8.11), as the relay's inbox shows them.
    Owner(Vec<vault_core::VaultId>),
    /// In the person's device list in the relay's directory (a member's
    /// list, §8.12), verified from its root-signed start.
    Member {
        /// The serial of the version naming this device.
        serial: u32,
    },
}

impl Revealed {
    /// Asks once whether a list of the person's names this device.
    async fn listed(
        &self,
        client: &RelayClient,
        me: &Fingerprint,
        person: &Fingerprint,
    ) -> Result<Option<Listed>> {
        let vaults: Vec<_> = client
            .inbox()
            .await?
            .into_iter()
            .filter(|v| v.owner == *person)
            .map(|v| v.vault)
            .collect();
        if !vaults.is_empty() {
            return Ok(Some(Listed::Owner(vaults)));
        }
        let versions = crate::member_devices::fetch(client, &self.person).await?;
        Ok(versions
            .last()
            .filter(|l| l.device(me).is_some())
            .map(|current| Listed::Member {
                serial: current.serial(),
            }))
    }

    /// After the person confirmed: asks every [`POLL_INTERVAL`], for at
    /// most `timeout`, until a list of the person's names this device:
    /// a vault of the person's in this device's inbox (the relay lists a
    /// vault to the devices its verified log names), or the person's list
    /// in the directory. The device's client verifies those lists itself
    /// when it reads the vaults.
    pub async fn wait_listed(&self, client: &RelayClient, timeout: Duration) -> Result<Listed> {
        let me = client.identity().fingerprint();
        let person = self.person.fingerprint();
        let polls = timeout.as_millis() / POLL_INTERVAL.as_millis().max(1);
        for _ in 0..=polls {
            match self.listed(client, &me, &person).await {
                Ok(Some(listed)) => return Ok(listed),
                Ok(None) => {}
                // The relay unreachable for a moment: keep waiting.
                Err(ClientError::Transport(e)) => {
                    tracing::debug!(error = %e, "waiting to be listed: the relay did not answer");
                }
                Err(e) if e.status().is_some_and(|s| s >= 500) => {}
                Err(e) => return Err(e),
            }
            platform::sleep(POLL_INTERVAL).await;
        }
        Err(ClientError::Pairing(
            "the other device did not add this one in time: check it says the device was added, then run `vault inbox`",
        ))
    }
}
