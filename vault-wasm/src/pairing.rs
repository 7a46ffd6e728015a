//! Pairing by a compared code in the browser (`docs/format.md` §3.8,
//! decision 72): the page's presentation of [`vault_client::pairing`].
//!
//! On the existing device, [`crate::Session::open_pairing`] gives a
//! [`PairingOffer`]: its code to show, `wait()` for the device that joins
//! (with the digits to compare), `confirm(typed)` with the digits the new
//! device shows, then the page adds the device (`addDevice`). On a new
//! device, [`crate::Session::join_pairing`] gives a [`PairingJoin`]:
//! `wait()` for the person (and the digits), `confirm(typed)`; the page
//! then pins the person and waits for its vault. Each object holds its own
//! relay client, so waiting never holds the session.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use serde_json::json;
use vault_client::pairing::{Joined, Joining, Offer, Revealed};
use vault_client::RelayClient;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::failure::{Failure, Result};
use crate::session::json;
use crate::view;

fn not_yet() -> JsValue {
    Failure::new(
        "pairing_failed",
        "nothing to confirm yet: wait for the other device",
    )
    .into_js()
}

/// An open pairing on the existing device.
#[wasm_bindgen]
pub struct PairingOffer {
    offer: Rc<Offer>,
    client: RelayClient,
    joined: Rc<RefCell<Option<Joined>>>,
}

impl PairingOffer {
    pub(crate) fn new(offer: Offer, client: RelayClient) -> Self {
        Self {
            offer: Rc::new(offer),
            client,
            joined: Rc::default(),
        }
    }
}

#[wasm_bindgen]
impl PairingOffer {
    /// The code to show: `12345 67890`.
    pub fn code(&self) -> String {
        self.offer.code().shown()
    }

    /// Seconds until the code stops working.
    #[wasm_bindgen(js_name = secondsLeft)]
    pub fn seconds_left(&self) -> f64 {
        self.offer.seconds_left() as f64
    }

    /// Waits for a device to join: JSON `{device: identity, compared}`
    /// (`compared`: the 8 digits this screen shows, `1234 5678`).
    pub fn wait(&self) -> Promise {
        let (offer, client, joined) =
            (self.offer.clone(), self.client.clone(), self.joined.clone());
        future_to_promise(async move {
            let j = offer
                .wait(&client)
                .await
                .map_err(|e| Failure::from(e).into_js())?;
            let v = json!({
                "device": view::identity(&j.device),
                "compared": j.compared.to_string(),
            });
            *joined.borrow_mut() = Some(j);
            Ok(json(&v))
        })
    }

    /// Checks the 8 digits the person typed (what the new device shows)
    /// against this screen's; returns the device's 64-hex fingerprint to
    /// add. Throws `pairing_failed` when they differ.
    pub fn confirm(&self, typed: &str) -> std::result::Result<String, JsValue> {
        let joined = self.joined.borrow();
        let j = joined.as_ref().ok_or_else(not_yet)?;
        vault_client::pairing::confirm(j.compared, typed)
            .map_err(|e| Failure::from(e).into_js())?;
        Ok(j.device.fingerprint().to_hex())
    }

    /// The request that closes the pairing, signed now, for the page to
    /// send with `fetch`'s `keepalive` as it is left (`pagehide`), when it
    /// can no longer wait for [`PairingOffer::close`]: JSON `{url, method,
    /// headers: {name: value}}`.
    #[wasm_bindgen(js_name = closeRequest)]
    pub fn close_request(&self) -> std::result::Result<String, JsValue> {
        let r = self
            .offer
            .close_request(&self.client)
            .map_err(|e| Failure::from(e).into_js())?;
        serde_json::to_string(&r).map_err(|e| Failure::new("internal", e.to_string()).into_js())
    }

    /// Closes the pairing at the relay (after adding, or to cancel).
    pub fn close(&self) -> Promise {
        let (offer, client) = (self.offer.clone(), self.client.clone());
        future_to_promise(async move {
            offer
                .close(&client)
                .await
                .map_err(|e| Failure::from(e).into_js())?;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// A joined pairing on the new device.
#[wasm_bindgen]
pub struct PairingJoin {
    joining: Rc<Joining>,
    client: RelayClient,
    revealed: Rc<RefCell<Option<Revealed>>>,
}

impl PairingJoin {
    pub(crate) fn new(joining: Joining, client: RelayClient) -> Self {
        Self {
            joining: Rc::new(joining),
            client,
            revealed: Rc::default(),
        }
    }
}

#[wasm_bindgen]
impl PairingJoin {
    /// Waits for the other device to answer: JSON `{person: identity,
    /// compared}` (the answer was checked against its commitment).
    pub fn wait(&self) -> Promise {
        let (joining, client, revealed) = (
            self.joining.clone(),
            self.client.clone(),
            self.revealed.clone(),
        );
        future_to_promise(async move {
            let r = joining
                .wait(&client)
                .await
                .map_err(|e| Failure::from(e).into_js())?;
            let v = json!({
                "person": view::identity(&r.person),
                "compared": r.compared.to_string(),
            });
            *revealed.borrow_mut() = Some(r);
            Ok(json(&v))
        })
    }

    /// Checks the 8 digits the person typed (what the other device shows)
    /// against this screen's; returns the person's identity (JSON) to pin.
    /// Throws `pairing_failed` when they differ.
    pub fn confirm(&self, typed: &str) -> std::result::Result<String, JsValue> {
        let revealed = self.revealed.borrow();
        let r = revealed.as_ref().ok_or_else(not_yet)?;
        vault_client::pairing::confirm(r.compared, typed)
            .map_err(|e| Failure::from(e).into_js())?;
        Ok(view::identity(&r.person).to_string())
    }
}

/// Opens a pairing for the person `person` with `client`.
pub(crate) async fn open(
    client: RelayClient,
    person: vault_core::Fingerprint,
) -> Result<PairingOffer> {
    let offer = Offer::open(&client, &person).await?;
    Ok(PairingOffer::new(offer, client))
}

/// Joins the pairing of `code` with `client`.
pub(crate) async fn join(client: RelayClient, code: &str) -> Result<PairingJoin> {
    let code = vault_core::pairing::PairingCode::parse(code)?;
    let joining = Joining::join(&client, &code).await?;
    Ok(PairingJoin::new(joining, client))
}
