// IndexedDB `vault`: what this browser keeps between visits. No key and no
// record content in clear: the key file is sealed under the passphrase (age
// scrypt), and the snapshot holds verified logs, pins and cursors. One
// credential is kept in clear: a relay's invitation token (`Profile.invite`),
// until the identity is published there; it admits one identity to that relay
// and opens nothing.

export interface Profile {
  /** 64 hex digits: the key of both stores. */
  fingerprintHex: string;
  /** The passphrase-sealed key file. */
  keyFile: Uint8Array;
  /** `vault-identity:v1:…` (public). */
  identityText: string;
  /** The name shown on this device's unlock screen. */
  name: string;
  relayUrl: string;
  /**
   * The invitation token of a relay that admits new identities by
   * invitation only (kept until the identity is published there).
   */
  invite?: string;
  /** Unix milliseconds. */
  createdAt: number;
  /**
   * For a device identity: the person it acts for, as the user typed the
   * 64-hex fingerprint (and the relay's published identity under it, to
   * compare with that person's own screen). Only that person's vaults are
   * joined.
   */
  person?: { fingerprintHex: string; fingerprint: string; name: string };
}

const DB_NAME = 'vault';
const DB_VERSION = 1;
const PROFILES = 'profiles';
const SNAPSHOTS = 'snapshots';

let dbPromise: Promise<IDBDatabase> | null = null;

function open(): Promise<IDBDatabase> {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(PROFILES)) db.createObjectStore(PROFILES);
        if (!db.objectStoreNames.contains(SNAPSHOTS)) db.createObjectStore(SNAPSHOTS);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error('IndexedDB could not be opened'));
      req.onblocked = () => reject(new Error('IndexedDB is blocked by another tab of this app: close it and reload'));
    });
    dbPromise.catch(() => {
      dbPromise = null;
    });
  }
  return dbPromise;
}

async function tx<T>(store: string, mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const req = f(t.objectStore(store));
    let result: T;
    req.onsuccess = () => {
      result = req.result;
    };
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error ?? req.error ?? new Error('IndexedDB error'));
    t.onabort = () => reject(t.error ?? new Error('IndexedDB transaction aborted (storage full?)'));
  });
}

export async function listProfiles(): Promise<Profile[]> {
  const all = await tx<Profile[]>(PROFILES, 'readonly', (s) => s.getAll() as IDBRequest<Profile[]>);
  return all.sort((a, b) => a.createdAt - b.createdAt);
}

export async function getProfile(fingerprintHex: string): Promise<Profile | undefined> {
  return tx<Profile | undefined>(PROFILES, 'readonly', (s) => s.get(fingerprintHex) as IDBRequest<Profile | undefined>);
}

export async function putProfile(p: Profile): Promise<void> {
  await tx(PROFILES, 'readwrite', (s) => s.put(p, p.fingerprintHex));
}

export async function deleteProfile(fingerprintHex: string): Promise<void> {
  await tx(PROFILES, 'readwrite', (s) => s.delete(fingerprintHex));
  await tx(SNAPSHOTS, 'readwrite', (s) => s.delete(fingerprintHex));
}

export async function getSnapshot(fingerprintHex: string): Promise<Uint8Array | undefined> {
  return tx<Uint8Array | undefined>(SNAPSHOTS, 'readonly', (s) => s.get(fingerprintHex) as IDBRequest<Uint8Array | undefined>);
}

export async function putSnapshot(fingerprintHex: string, snapshot: Uint8Array): Promise<void> {
  await tx(SNAPSHOTS, 'readwrite', (s) => s.put(snapshot, fingerprintHex));
}
