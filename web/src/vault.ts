// The typed face of vault-wasm: every cryptographic operation, every check of
// what the relay sends, and every request to the relay happens inside the
// WebAssembly module (vault-core and vault-client compiled to wasm32). This
// file only converts between JSON strings and typed objects and turns the
// module's errors ("code: message") into VaultError.

import init, * as wasm from '../pkg/vault_wasm.js';
import { downloadSpool, openCiphertext, rememberModule, sealFile, type Sealed, type Spool } from './payloads';

/**
 * An error from vault-wasm with a stable code: vault-core's (`wrong_passphrase`,
 * `fork`, `rollback`, `missing_or_withheld`, …), the relay's (`quota_exceeded`,
 * `forbidden`, …), the client's (`transport`: relay unreachable) or the module's
 * own (`invalid_input`, `local_state`, `busy`, `too_large`, `invalid_fhir`).
 */
export class VaultError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = 'VaultError';
  }
}

function toVaultError(e: unknown): VaultError {
  if (e instanceof VaultError) return e;
  const text = e instanceof Error ? e.message : String(e);
  const m = /^([a-z_]+): ([\s\S]*)$/.exec(text);
  return m ? new VaultError(m[1], m[2]) : new VaultError('internal', text);
}

async function call<T>(f: () => T | Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toVaultError(e);
  }
}

/**
 * Loads the WebAssembly module, checking its Subresource Integrity hash. It
 * is compiled once; the sealing worker instantiates the same module.
 */
export async function load(wasmUrl: string, integrity: string | undefined): Promise<void> {
  await call(async () => {
    const response = await fetch(wasmUrl, integrity ? { integrity } : {});
    if (!response.ok) throw new Error(`transport: the app's WebAssembly module could not be loaded (HTTP ${response.status})`);
    const module =
      response.headers.get('content-type') === 'application/wasm'
        ? await WebAssembly.compileStreaming(response)
        : await WebAssembly.compile(await response.arrayBuffer());
    await init({ module_or_path: module });
    rememberModule(module);
  });
}

export type Role = 'patient' | 'clinician' | 'device';

/** A verified public identity. */
export interface IdentityView {
  name: string;
  role: Role;
  registration: string | null;
  /** Six groups of five digits, space separated: what people compare. */
  fingerprint: string;
  /** 64 hex digits: what the relay lookup takes. */
  fingerprintHex: string;
  /** `vault-identity:v1:…`: what the patient pastes to share. */
  identityText: string;
}

export interface NewIdentity {
  /** The passphrase-sealed key file (an age file): store it, never anything else secret. */
  keyFile: Uint8Array;
  identity: IdentityView;
}

export interface VaultListing {
  id: string;
  owner: IdentityView;
  /** The owner is this identity, or this identity is one of the owner's devices. */
  mine: boolean;
}

export interface Member {
  fingerprintHex: string;
  fingerprint: string;
  name: string | null;
  role: Role | null;
  permission: 'owner' | 'read' | 'write' | 'add' | 'deposit' | 'agent';
  /** Unix seconds. */
  expiresAt: number | null;
  /** For an agent of the owner: its powers, e.g. "read,add,share" (docs/format.md §8.10). */
  powers: string | null;
}

export interface CollectionView {
  id: string;
  name: string;
  epoch: number;
  records: number;
  members: Member[];
}

export interface RecordShare {
  record: string;
  title: string | null;
  who: Member;
}

export interface VaultOverview {
  id: string;
  owner: IdentityView;
  /** Checkpoint code: compare it with another device (`vault verify --compare`). */
  checkpoint: string;
  seq: number;
  collections: CollectionView[];
  recordShares: RecordShare[];
  /** Collections whose current key an agent's rotation withheld from the owner, with that agent. */
  withheldKeys: { collection: string; signer: Member }[];
  /** The owner's devices (docs/format.md §8.11): each writes the vault as the owner. */
  devices: DeviceView[];
  /** Devices an earlier version of the list named and the current one does not. */
  formerDevices: DeviceView[];
  /** This identity is the vault owner's key file (not one of its devices). */
  keyFileIsMe: boolean;
  /**
   * Collections re-keyed on the way (the owner's duty after a member, or
   * the owner, removed a device: decision 70), or null when none was due.
   */
  rekeyed: { rotated: number; dropped: number; notRotated: { collection: string; error: string }[]; failed: string | null } | null;
}

/**
 * Where a change of your device list went beyond this vault: the relay's
 * directory (`notPublished`: why it did not take the list, or null), your
 * other vaults (`owned`), vaults shared with you (`carried`), and what it
 * did not reach (`notReached`: do it again to finish; `refused`: another
 * list of yours is there, a fork).
 */
export interface Elsewhere {
  notPublished: string | null;
  owned: number;
  carried: number;
  notReached: { vault: string; error: string }[];
  /** Why the relay's inbox could not be read, so vaults shared with you that this browser does not follow were not reached (null: they were). */
  inboxNotRead: string | null;
  /** Vaults shared with you by owners you have not accepted, not reached. */
  strangersNotReached: number;
  refused: { vault: string; collection: string; error: string }[];
}

export interface DeviceView {
  fingerprintHex: string;
  fingerprint: string;
  name: string;
  addedAt: number;
  thisDevice: boolean;
}

export interface Author {
  fingerprint: string;
  fingerprintHex: string;
  name: string | null;
  role: Role | null;
  isOwner: boolean;
  /** The author is a device the vault owner listed (it wrote as the owner). */
  ownerDevice: boolean;
  /** The member's name, when the author is a device of a member's (it wrote as the member). */
  memberDeviceOf: string | null;
  /** The reader is the vault owner. */
  ownerIsMe: boolean;
  isMe: boolean;
  /** The owner's name, when the author wrote this as the owner's agent. */
  onBehalfOf: string | null;
  /** The author wrote this as the reader's own agent. */
  onBehalfOfMe: boolean;
}

export interface RecordView {
  id: string;
  collection: string;
  collectionName: string;
  version: number;
  title: string;
  contentType: string;
  /** FHIR resource type, for FHIR records. */
  resourceType: string | null;
  /** Unix seconds. */
  createdAt: number;
  /** Clinical date, Unix seconds. */
  effectiveAt: number | null;
  /** Verified author of this version (signature checked by vault-core). */
  author: Author;
  bodyLen: number | null;
  ciphertextLen: number;
  /** False for a large record not downloaded just to list it. */
  downloaded: boolean;
  /** Readable lines for common FHIR resources: [label, value]. */
  summary: [string, string][];
}

export interface RecordListing {
  records: RecordView[];
  /** Records that failed verification (never shown as content). */
  failed: { id: string; code: string; message: string }[];
  /** The health overview of the whole vault (null for one collection's listing). */
  health: Health | null;
}

/** One current condition, medication, allergy or immunization. */
export interface HealthItem {
  record: string;
  text: string;
  /** Unix seconds. */
  date: number | null;
}

/** A measurement that repeats over time (one code, one unit). */
export interface HealthSeries {
  code: string;
  name: string;
  unit: string;
  points: { at: number; value: number; record: string }[];
}

/** The health overview (vault-fhir `health::overview`). */
export interface Health {
  conditions: HealthItem[];
  medications: HealthItem[];
  allergies: HealthItem[];
  immunizations: HealthItem[];
  series: HealthSeries[];
}

export interface ImportSummary {
  added: number;
  skipped: number;
  collections: Record<string, number>;
}

export interface RevokeSummary {
  rotated: number;
  recordSharesWithdrawn: number;
  /** Records the rotation deleted because their key did not open (a faulty or malicious writer's). */
  dropped: { record: string; collection: string; author: string; authorName: string | null }[];
}

/** What a repair pushed back to a relay that had lost part of the vault's history. */
export interface RepairSummary {
  /** The relay's last entry number before and after the repair. */
  before: number;
  after: number;
  /** Entries pushed back, and record ciphertexts uploaded again from this browser. */
  entries: number;
  blobs: number;
  /** Why the repair stopped short of this device's state, or null. */
  stopped: string | null;
}

export interface ShareSummary {
  /** The collection's key was rotated before the grant: versions replaced or deleted before stay closed to the new member. */
  rotatedFirst: boolean;
}

/** What a SMART Health Link carries: a patient summary, a collection, or chosen records. */
export interface LinkRequest {
  what: 'summary' | 'collection' | 'records';
  collection?: string;
  records?: string[];
  /** Shown to the recipient; at most 80 characters; in the link only. */
  label?: string;
  /** Unix seconds. */
  expiresAt?: number;
  maxAttempts?: number;
  /** Flag L. */
  longTerm?: boolean;
  /** Flag U: one file fetched directly, no passcode. */
  direct?: boolean;
}

/** A link just made. `link` holds the key: show it to the patient, store it nowhere. */
export interface CreatedLink {
  /** The viewer link, `https://relay/#shlink:/…`. */
  link: string;
  /** The bare `shlink:/…`. */
  shlink: string;
  handle: string;
  /** The QR code (error-correction level M) as an SVG document. */
  qrSvg: string;
  resources: number;
  encryptedBytes: number;
}

/** One of the patient's links, as the relay lists it (its field names). */
export interface LinkInfo {
  handle: string;
  status: 'active' | 'expired' | 'revoked' | 'disabled';
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  flag: string | null;
  files: number;
  bytes: number;
  accesses: number;
  failed_attempts: number;
  max_attempts: number;
}

/** One fetch of a link: when, who the requester said it was, and the outcome. */
export interface LinkAccess {
  at: number;
  recipient: string;
  outcome: 'manifest' | 'file' | 'wrong_passcode' | string;
}

/** What a link says about itself, read without any request. */
export interface LinkDescription {
  label: string | null;
  expiresAt: number | null;
  expired: boolean;
  passcode: boolean;
  longTerm: boolean;
  direct: boolean;
  /** The origin its files come from. */
  origin: string;
}

/** One resource of a shared bundle. */
export interface SharedResource {
  /** `Type/id`: what the overview's items point at. */
  key: string;
  resourceType: string | null;
  title: string;
  /** Unix seconds. */
  date: number | null;
  summary: [string, string][];
}

/** A link opened: its files decrypted and checked in wasm. */
export interface OpenedLink {
  label: string | null;
  expiresAt: number | null;
  files: {
    contentType: string;
    /** The decrypted file, as text. */
    text: string;
    bundleType: string | null;
    resources: SharedResource[];
    health: Health | null;
  }[];
}

/** Reads a SMART Health Link (bare or behind a viewer) without any request; throws `invalid_link`. */
export function describeLink(link: string): LinkDescription {
  try {
    return JSON.parse(wasm.describeLink(link));
  } catch (e) {
    throw toVaultError(e);
  }
}

/** Opens a link as `recipient` (no account): manifest and files fetched, decrypted and checked in wasm. */
export async function openLink(link: string, recipient: string, passcode?: string): Promise<OpenedLink> {
  return JSON.parse(await call(() => wasm.openLink(link, recipient, passcode)));
}

/** The QR code of a link as an SVG document. */
export function linkQrSvg(link: string): string {
  try {
    return wasm.linkQrSvg(link);
  } catch (e) {
    throw toVaultError(e);
  }
}

/** Progress of long work: bytes or records done of total, and the phase. */
export type Progress = (done: number, total: number, phase: string) => void;

/**
 * A pairing this device opened for a new device of the vault's owner
 * (docs/format.md §3.8): show `code`, `wait` for the device, then have the
 * person type the 8 digits the new device shows into `confirm`; only then
 * add it (`Session.addDevice`) and `close`.
 */
export class PairingOffer {
  constructor(private readonly inner: wasm.PairingOffer) {}
  /** The 10-digit code to show, `12345 67890`. */
  get code(): string {
    return this.inner.code();
  }
  /** Seconds until the code stops working. */
  get secondsLeft(): number {
    return this.inner.secondsLeft();
  }
  /** Waits for a device to join; `compared` is what this screen shows. */
  async wait(): Promise<{ device: IdentityView; compared: string }> {
    return JSON.parse(await call(() => this.inner.wait()));
  }
  /** Checks the digits typed; returns the device's 64-hex fingerprint. Throws `pairing_failed`. */
  async confirm(typed: string): Promise<string> {
    return call(() => this.inner.confirm(typed));
  }
  /** Closes the pairing at the relay. */
  async close(): Promise<void> {
    await call(() => this.inner.close());
  }
  /**
   * Closes the pairing as the page is left (`pagehide`): the request is
   * signed now and sent with `keepalive`, which outlives the page, so the
   * code stops working at once instead of in 10 minutes. Best effort:
   * nothing can be reported to a page that is going away.
   */
  closeOnLeave(): void {
    try {
      const r: { url: string; method: string; headers: Record<string, string> } = JSON.parse(this.inner.closeRequest());
      void fetch(r.url, { method: r.method, headers: r.headers, keepalive: true, cache: 'no-store' }).catch(() => undefined);
    } catch {
      // The code expires on its own.
    }
  }
}

/**
 * This device identity joined another device's pairing: `wait` for the
 * person, then have the person type the 8 digits the other device shows
 * into `confirm`, which returns the person to pin.
 */
export class PairingJoin {
  constructor(private readonly inner: wasm.PairingJoin) {}
  /** Waits for the other device to answer; `compared` is what this screen shows. */
  async wait(): Promise<{ person: IdentityView; compared: string }> {
    return JSON.parse(await call(() => this.inner.wait()));
  }
  /** Checks the digits typed; returns the person. Throws `pairing_failed`. */
  async confirm(typed: string): Promise<IdentityView> {
    return JSON.parse(await call(() => this.inner.confirm(typed)));
  }
}

export function version(): string {
  return wasm.version();
}

/** How many leading bytes `contentTypeOf` looks at. */
export const SNIFF_LEN = 132;

/** The content type of a file from its first `SNIFF_LEN` bytes and its name: the same detection as the `vault` command's. */
export function contentTypeOf(head: Uint8Array, fileName: string): string {
  return wasm.contentTypeOf(head, fileName);
}

export function describeIdentity(identityText: string): IdentityView {
  try {
    return JSON.parse(wasm.describeIdentity(identityText));
  } catch (e) {
    throw toVaultError(e);
  }
}

/** Creates a new identity, sealed under `passphrase` (scrypt work factor `workFactor`, 15–20). */
export async function createIdentity(
  name: string,
  role: Role,
  passphrase: string,
  workFactor = 18,
): Promise<NewIdentity> {
  return call(() => {
    const id = wasm.createIdentity(name, role, passphrase, workFactor);
    return { keyFile: id.keyFile(), identity: JSON.parse(id.identity()) };
  });
}

/** An unlocked identity talking to one relay. Operations run one at a time. */
export class Session {
  private constructor(private readonly inner: wasm.Session) {}

  /**
   * Opens `keyFile` with `passphrase` (error code `wrong_passphrase`) and
   * restores the verified local state from `snapshot` (from `snapshot()`).
   * `invite` is the invitation token of a relay that admits new identities
   * by invitation only.
   */
  static async unlock(
    keyFile: Uint8Array,
    passphrase: string,
    relayUrl: string,
    snapshot?: Uint8Array,
    invite?: string,
  ): Promise<Session> {
    return call(async () => new Session(await wasm.Session.unlock(keyFile, passphrase, relayUrl, snapshot, invite)));
  }

  /**
   * Drops the unlocked identity now (the secret keys are zeroized in wasm memory
   * as soon as no operation still runs), instead of at garbage collection.
   */
  close(): void {
    this.inner.free();
  }

  me(): IdentityView {
    return JSON.parse(this.inner.me());
  }

  /** The verified logs, pins and cursors, to keep in IndexedDB (no secrets, no record content). */
  snapshot(): Uint8Array {
    return this.inner.snapshot();
  }

  publish(): Promise<void> {
    return call(() => this.inner.publish());
  }

  async vaults(personHex?: string): Promise<VaultListing[]> {
    return JSON.parse(await call(() => this.inner.vaults(personHex)));
  }

  createVault(): Promise<string> {
    return call(() => this.inner.createVault());
  }

  async overview(vault: string): Promise<VaultOverview> {
    return JSON.parse(await call(() => this.inner.overview(vault)));
  }

  async records(vault: string, collection?: string): Promise<RecordListing> {
    return JSON.parse(await call(() => this.inner.records(vault, collection)));
  }

  /** Deletes a record; with `purge`, destroys every version of it for good (owner only). */
  async deleteRecord(vault: string, record: string, purge: boolean): Promise<{ deleted: string; purgedVersions: number }> {
    return JSON.parse(await call(() => this.inner.deleteRecord(vault, record, purge)));
  }

  /**
   * The record's body, decrypted and authenticated (large records in a
   * worker, src/payloads.ts): bytes, or for a record over 64 MiB a file on
   * the browser's disk (downloaded into a spool and decrypted into another;
   * decision 64), deleted BODY_KEEP_MS later.
   */
  async openRecord(vault: string, record: string): Promise<Uint8Array | Blob> {
    const made: Spool[] = [];
    const spooler = (len: number) => downloadSpool(len, made);
    try {
      return await call(() => this.inner.openRecord(vault, record, openCiphertext, spooler));
    } finally {
      // The downloaded ciphertext's spool goes once the record is open (or failed to).
      for (const spool of made) await spool.remove();
    }
  }

  /**
   * Seals and uploads one file into the named collection (created if
   * missing). The payload is sealed in a worker (src/payloads.ts), so the
   * page stays responsive. Returns the record id.
   */
  async addFile(vault: string, collectionName: string, title: string, contentType: string, file: File, progress: Progress): Promise<string> {
    let sealed: Sealed | undefined;
    const sealer = async (job: Uint8Array) => (sealed = await sealFile(job, file, progress));
    try {
      return await call(() => this.inner.addFile(vault, collectionName, title, contentType, file.size, sealer, progress));
    } finally {
      // A large file's ciphertext was spooled to the browser's disk: gone once uploaded (or failed).
      await sealed?.discard?.();
    }
  }

  /** Imports a FHIR R4 Bundle (or one resource): each resource a record, sorted into collections. */
  async importFhir(vault: string, bytes: Uint8Array, progress: Progress): Promise<ImportSummary> {
    return JSON.parse(await call(() => this.inner.importFhir(vault, bytes, progress)));
  }

  /** Fetches an identity by its fingerprint (the relay cannot substitute another key). */
  async lookupIdentity(fingerprintHex: string): Promise<IdentityView> {
    return JSON.parse(await call(() => this.inner.lookupIdentity(fingerprintHex)));
  }

  /** Shares a collection (or, with `isRecord`, one record) with the identity. `expiresAt` in Unix seconds. */
  async share(
    vault: string,
    target: string,
    isRecord: boolean,
    identityText: string,
    permission: 'read' | 'write' | 'add' | 'deposit',
    expiresAt?: number,
  ): Promise<ShareSummary> {
    return JSON.parse(await call(() => this.inner.share(vault, target, isRecord, identityText, permission, expiresAt)));
  }

  /**
   * Names the identity an agent of the owner in a collection, with powers
   * ("add", "share", "name-agents", comma-separated; read is implied).
   * `expiresAt` in Unix seconds. Revoking an agent ends its agency.
   */
  async nameAgent(vault: string, collection: string, identityText: string, powers: string, expiresAt?: number): Promise<{ delegation: string; rotatedFirst: boolean }> {
    return JSON.parse(await call(() => this.inner.nameAgent(vault, collection, identityText, powers, expiresAt)));
  }

  /** Opens a pairing for a new device of the vault's owner. */
  async openPairing(vault: string): Promise<PairingOffer> {
    return new PairingOffer(await call(() => this.inner.openPairing(vault)));
  }

  /** Joins, as this device identity, the pairing of a 10-digit code another device shows. */
  async joinPairing(code: string): Promise<PairingJoin> {
    return new PairingJoin(await call(() => this.inner.joinPairing(code)));
  }

  /** Adds a device (its whole fingerprint, published on the relay) to your devices. */
  async addDevice(vault: string, fingerprintHex: string): Promise<{ name: string; serial: number; generation: number; rekeyed: number; notRekeyed: number; elsewhere: Elsewhere }> {
    return JSON.parse(await call(() => this.inner.addDevice(vault, fingerprintHex)));
  }

  /** Removes one of your devices and re-keys every collection. */
  async removeDevice(vault: string, fingerprintHex: string): Promise<{ rotated: number; notRotated: number; dropped: number; elsewhere: Elsewhere; sharedByIt: Member[] }> {
    return JSON.parse(await call(() => this.inner.removeDevice(vault, fingerprintHex)));
  }

  /**
   * Takes your device list back with your key file (after a device was
   * stolen or the list changed without you), keeping only the devices
   * named by their 64-hex fingerprints, and re-keys every collection.
   */
  async recoverDevices(
    vault: string,
    keepHex: string[],
  ): Promise<{ kept: string[]; removed: string[]; alreadyRecovered: boolean; rotated: number; notRotated: number; dropped: number; elsewhere: Elsewhere; sharedByRemoved: Member[] }> {
    return JSON.parse(await call(() => this.inner.recoverDevices(vault, keepHex.join(','))));
  }

  /** Ends every agency of an agent and re-keys what it could read, or whose key it withheld from you. */
  async endAgency(vault: string, fingerprintHex: string): Promise<{ ended: number; rotated: number; notRotated: { collection: string; message: string }[] }> {
    return JSON.parse(await call(() => this.inner.endAgency(vault, fingerprintHex)));
  }

  /** Revokes a member everywhere (or in one collection): rotates the keys and withdraws record shares. */
  async revoke(vault: string, fingerprintHex: string, collection?: string): Promise<RevokeSummary> {
    return JSON.parse(await call(() => this.inner.revoke(vault, fingerprintHex, collection)));
  }

  /**
   * Pushes back to a relay restored from an older backup the entries this device verified and
   * the ciphertexts it holds; the relay checks them as any change. Throws `fork` (nothing sent)
   * if the relay's history differs. Only with the patient's consent.
   */
  async repair(vault: string): Promise<RepairSummary> {
    return JSON.parse(await call(() => this.inner.repair(vault)));
  }

  /** Makes a SMART Health Link; `passcode` adds flag P. The key is only in the returned link. */
  async createLink(vault: string, request: LinkRequest, passcode?: string): Promise<CreatedLink> {
    return JSON.parse(await call(() => this.inner.createLink(vault, JSON.stringify(request), passcode)));
  }

  /** The patient's links, newest first. */
  async links(): Promise<LinkInfo[]> {
    return JSON.parse(await call(() => this.inner.links()));
  }

  /** Revokes a link: it stops answering and its file is deleted at the relay. */
  revokeLink(handle: string): Promise<void> {
    return call(() => this.inner.revokeLink(handle));
  }

  /** Who fetched a link, oldest first. */
  async linkLog(handle: string): Promise<LinkAccess[]> {
    return JSON.parse(await call(() => this.inner.linkLog(handle)));
  }

  /** A tar archive of standard age files (see its README.txt), decryptable with `age`. */
  exportVault(vault: string): Promise<Uint8Array> {
    return call(() => this.inner.exportVault(vault));
  }

  /**
   * Throws `checkpoint_mismatch` if the vault's checkpoint, as this device
   * verified it, differs from `code` (two different histories: a forking relay).
   */
  compareCheckpoint(vault: string, code: string): void {
    try {
      this.inner.compareCheckpoint(vault, code);
    } catch (e) {
      throw toVaultError(e);
    }
  }
}
