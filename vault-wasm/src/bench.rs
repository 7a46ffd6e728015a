//! The seal/open benchmark fixture (feature `bench`, not in the app's
//! bundle): one record of a given size sealed and opened with exactly the
//! code the app uses (`VaultState::put_record`, `Keyring::open`), so
//! `web/bench/seal-open.mjs` can time it in the browser and natively, in the
//! same run on the same machine. Beside them, the raw primitives over the
//! same bytes: ChaCha20-Poly1305 in 64 KiB chunks (the cipher alone), and
//! SHA-256 and BLAKE3 over the ciphertext (the content address as it is, and
//! the candidate of issue 18), to show where the time of a seal goes.

use vault_core::{
    CollectionId, IdentityInfo, Keyring, RecordInfo, RecordMetadata, Role, SecretIdentity,
    VaultState,
};
use wasm_bindgen::prelude::*;

use crate::failure::{Failure, Result};

/// A vault with one collection and a body to seal into it.
#[wasm_bindgen]
pub struct SealBench {
    owner: SecretIdentity,
    state: VaultState,
    collection: CollectionId,
    body: Vec<u8>,
    sealed: Option<(RecordMetadata, Vec<u8>)>,
}

impl SealBench {
    /// A fixture with a `len`-byte body (deterministic bytes).
    pub fn create(len: usize) -> Result<Self> {
        let owner = SecretIdentity::from_seed(
            &[7; 32],
            &IdentityInfo {
                display_name: "Bench".into(),
                role: Role::Patient,
                registration: None,
                created_at: 1,
            },
        )?;
        let (mut state, _) = VaultState::create(&owner, 2)?;
        let (collection, entry) = state.create_collection(&owner, "bench", 3)?;
        state.apply(&entry)?;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes().first().copied().unwrap_or(0)
            })
            .collect();
        Ok(Self {
            owner,
            state,
            collection,
            body,
            sealed: None,
        })
    }

    /// Seals the body as a new record; returns the ciphertext length.
    pub fn seal_once(&mut self) -> Result<usize> {
        let mut keyring = Keyring::new(&self.owner, 4);
        let mut ciphertext = Vec::with_capacity(self.body.len() + 4096);
        let info = RecordInfo {
            content_type: "application/octet-stream".into(),
            title: "bench".into(),
            created_at: 4,
            effective_at: None,
        };
        let (metadata, entry) = self.state.put_record(
            &mut keyring,
            &self.collection,
            None,
            &info,
            vault_core::RecordBody::new(self.body.as_slice(), self.body.len() as u64),
            &mut ciphertext,
        )?;
        self.state.apply(&entry)?;
        let len = ciphertext.len();
        self.sealed = Some((metadata, ciphertext));
        Ok(len)
    }

    /// Opens (decrypts and authenticates) the last sealed record; returns
    /// the body length, after checking the body came back unchanged.
    pub fn open_once(&mut self) -> Result<usize> {
        let (metadata, ciphertext) = self
            .sealed
            .as_ref()
            .ok_or_else(|| Failure::input("seal first"))?;
        let verified = self.state.record(&metadata.record())?;
        let mut keyring = Keyring::new(&self.owner, 5);
        let mut body = Vec::with_capacity(self.body.len());
        keyring.open(&self.state, &verified, ciphertext.as_slice(), &mut body)?;
        if body != self.body {
            return Err(Failure::new("bench", "the opened body differs"));
        }
        Ok(body.len())
    }
}

/// The raw primitives a seal and an open are made of, over a body's bytes.
impl SealBench {
    /// ChaCha20-Poly1305 over the body in 64 KiB chunks, in place, with
    /// per-chunk nonces (what STREAM does, without its framing); returns a
    /// checksum so the work is not optimised away.
    pub fn chacha_once(&mut self) -> u8 {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut sum = 0u8;
        for (i, chunk) in self.body.chunks_mut(vault_core::CHUNK_LEN).enumerate() {
            let mut nonce = [0u8; 12];
            if let Some(n) = nonce.get_mut(..8) {
                n.copy_from_slice(&(i as u64).to_be_bytes());
            }
            if let Ok(tag) = cipher.encrypt_in_place_detached(&nonce.into(), &[], chunk) {
                sum ^= tag.first().copied().unwrap_or(0);
            }
        }
        sum
    }

    /// SHA-256 of the last ciphertext (or of the body before any seal).
    pub fn sha256_once(&self) -> u8 {
        use sha2::Digest;
        let data = self.sealed.as_ref().map_or(self.body.as_slice(), |s| &s.1);
        sha2::Sha256::digest(data).first().copied().unwrap_or(0)
    }

    /// BLAKE3 (one thread) of the last ciphertext (or of the body).
    pub fn blake3_once(&self) -> u8 {
        let data = self.sealed.as_ref().map_or(self.body.as_slice(), |s| &s.1);
        blake3::hash(data).as_bytes().first().copied().unwrap_or(0)
    }
}

#[wasm_bindgen]
impl SealBench {
    /// The cipher alone over the body (see [`SealBench::chacha_once`]).
    pub fn chacha(&mut self) -> u8 {
        self.chacha_once()
    }

    /// SHA-256 of the last ciphertext.
    pub fn sha256(&self) -> u8 {
        self.sha256_once()
    }

    /// BLAKE3 of the last ciphertext.
    pub fn blake3(&self) -> u8 {
        self.blake3_once()
    }

    /// A fixture with a `len`-byte body.
    #[wasm_bindgen(constructor)]
    pub fn new(len: usize) -> std::result::Result<SealBench, JsValue> {
        Self::create(len).map_err(Failure::into_js)
    }

    /// Seals the body; returns the ciphertext length.
    pub fn seal(&mut self) -> std::result::Result<usize, JsValue> {
        self.seal_once().map_err(Failure::into_js)
    }

    /// Opens the last sealed record; returns the body length.
    pub fn open(&mut self) -> std::result::Result<usize, JsValue> {
        self.open_once().map_err(Failure::into_js)
    }

    /// The body, for the worker's half of the bench (as the file it reads).
    pub fn body(&self) -> js_sys::Uint8Array {
        js_sys::Uint8Array::from(self.body.as_slice())
    }

    /// A payload job for a new record of the body's length: what the app's
    /// page hands its worker to seal ([`crate::worker::seal_payload`]).
    #[wasm_bindgen(js_name = sealJob)]
    pub fn seal_job(&self) -> std::result::Result<js_sys::Uint8Array, JsValue> {
        let info = RecordInfo {
            content_type: "application/octet-stream".into(),
            title: "bench".into(),
            created_at: 4,
            effective_at: None,
        };
        let plan = self
            .state
            .plan_record(
                &Keyring::new(&self.owner, 4),
                &self.collection,
                vault_core::RecordTarget::New(vault_core::RecordId::random()),
                &info,
                self.body.len() as u64,
            )
            .map_err(|e| Failure::from(e).into_js())?;
        Ok(js_sys::Uint8Array::from(plan.job().to_bytes().as_slice()))
    }

    /// The open job and ciphertext of the last sealed record: what the
    /// app's page hands its worker to open ([`crate::worker::open_payload`]).
    #[wasm_bindgen(js_name = openJob)]
    pub fn open_job(&self) -> std::result::Result<js_sys::Array, JsValue> {
        let (metadata, ciphertext) = self
            .sealed
            .as_ref()
            .ok_or_else(|| Failure::input("seal first").into_js())?;
        let verified = self
            .state
            .record(&metadata.record())
            .map_err(|e| Failure::from(e).into_js())?;
        let job = Keyring::new(&self.owner, 5)
            .open_job(&self.state, &verified)
            .map_err(|e| Failure::from(e).into_js())?;
        Ok(js_sys::Array::of2(
            &js_sys::Uint8Array::from(job.to_bytes().as_slice()),
            &js_sys::Uint8Array::from(ciphertext.as_slice()),
        ))
    }
}
