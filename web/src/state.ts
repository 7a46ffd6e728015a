// The unlocked session and what was last read from it. Calls into the wasm
// session run one at a time (the module's contract); after each, the verified
// state is snapshotted into IndexedDB so the relay cannot roll back this
// device on its next visit.

import type { IdentityView, RecordListing, Session, VaultListing, VaultOverview } from './vault';
import { putSnapshot, type Profile } from './db';
import { showError } from './errors';

export type View = 'overview' | 'records' | 'timeline' | 'add' | 'access' | 'links' | 'identity' | 'vault' | 'about';

export interface Ctx {
  session: Session;
  profile: Profile;
  me: IdentityView;
  vaults: VaultListing[] | null;
  vault: string | null;
  overview: VaultOverview | null;
  listing: RecordListing | null;
  view: View;
  /** Selected collection id in the records view (null: all). */
  collection: string | null;
  /** Record shown in detail (null: the list). */
  record: string | null;
}

let ctx: Ctx | null = null;
let queue: Promise<unknown> = Promise.resolve();

export function current(): Ctx | null {
  return ctx;
}

export function ctxOrThrow(): Ctx {
  if (!ctx) throw new Error('The vault is locked');
  return ctx;
}

export function setCtx(next: Ctx | null): void {
  ctx = next;
  queue = Promise.resolve();
}

/** Runs one operation on the session (serialized), then saves the snapshot. */
export function run<T>(f: (s: Session) => Promise<T> | T): Promise<T> {
  const c = ctxOrThrow();
  const p = queue.then(async () => {
    try {
      return await f(c.session);
    } finally {
      if (ctx === c) await saveSnapshot(c);
    }
  });
  queue = p.catch(() => undefined);
  return p;
}

async function saveSnapshot(c: Ctx): Promise<void> {
  try {
    await putSnapshot(c.profile.fingerprintHex, c.session.snapshot());
  } catch (e) {
    showError(e, 'Could not save the verified state on this device');
  }
}
