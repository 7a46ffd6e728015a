// Sealing and opening record payloads for vault-wasm's addFile and
// openRecord: in a worker when the browser allows it (src/payload-worker.ts,
// decision 56), else on the page. Both run the same vault-wasm functions
// (sealPayload, openPayload); the page plans, verifies and finishes records
// (keys, metadata, signatures) either way.

import { openPayload, sealPayload } from '../pkg/vault_wasm.js';
import PayloadWorker from './payload-worker?worker&inline';

/** What a sealer returns to vault-wasm: the ciphertext in memory, or spooled to a file on the browser's disk (a `File` read back a chunk at a time by the upload). */
export interface Sealed {
  ciphertext: Uint8Array | Blob;
  hash: Uint8Array;
  /** Deletes the spool file, if there is one; call it once the upload ended, whichever way. */
  discard?: () => Promise<void>;
}

/**
 * Files above this are sealed by the worker into a spool file in the
 * origin's private file system (OPFS) and uploaded from there a chunk at a
 * time, so neither the file nor its ciphertext is held in memory; smaller
 * ones are sealed in memory (fewer steps, no disk).
 */
export const SPOOL_ABOVE = 64 << 20;

/**
 * The largest file sealed in memory: what a browser without a worker or
 * without the private file system can add (the file and its ciphertext
 * are both held until the upload ends).
 */
export const MAX_IN_MEMORY = 512 << 20;

/** Prefix of spool files in the origin's private file system; each name also carries its creation time, so leftovers of a closed tab can be swept. */
const SPOOL_PREFIX = 'vault-spool-';
/** Spool files older than this are left from a tab closed mid-upload, and deleted. */
const SPOOL_STALE_MS = 24 * 3600 * 1000;

type Progress = (done: number, total: number, phase: string) => void;

/** The page's WebAssembly module, compiled once from the SRI-checked fetch; the worker instantiates this very module. */
let pageModule: WebAssembly.Module | null = null;
/** Set once a worker could not start here (a browser or policy refusing `blob:` workers): later jobs run on the page. */
let workersUnavailable = false;

/**
 * Longest a worker may go without a word. A working one says it is ready
 * within milliseconds, then reports after every 16 MiB read and every
 * 4 MiB sealed or opened (a fraction of a second each, even on a slow
 * phone). One silent this long is stopped: before it said it was ready,
 * the job runs on the page instead (nothing was handed over); after, the
 * job fails with `worker_stalled` (nothing is stored, or nothing opened).
 */
export const WORKER_SILENCE_MS = 20_000;

/** Called by vault.ts once the module is compiled. */
export function rememberModule(module: WebAssembly.Module): void {
  pageModule = module;
}

/** Whether files over MAX_IN_MEMORY can be added here: a worker seals them into the private file system. */
export function largeFilesSupported(): boolean {
  return !!pageModule && !workersUnavailable && typeof Worker !== 'undefined' && typeof navigator.storage?.getDirectory === 'function';
}

/** A spool file in the origin's private file system: its name, read back as a File, and deleted. */
interface Spool {
  name: string;
  read(): Promise<File>;
  remove(): Promise<void>;
}

/**
 * A new spool file for a ciphertext of `len` bytes, or null where the
 * private file system is missing. Throws `storage_full` if the browser
 * says its storage cannot hold `len` more bytes. Sweeps spool files left
 * by a tab closed mid-upload first.
 */
async function newSpool(len: number): Promise<Spool | null> {
  if (typeof navigator.storage?.getDirectory !== 'function') return null;
  let root: FileSystemDirectoryHandle;
  try {
    root = await navigator.storage.getDirectory();
  } catch {
    return null;
  }
  await sweepSpools(root);
  const estimate = await navigator.storage.estimate?.().catch(() => undefined);
  if (estimate?.quota !== undefined && estimate.usage !== undefined && estimate.quota - estimate.usage < len) {
    throw new Error(
      `storage_full: the browser can keep only ${Math.floor((estimate.quota - estimate.usage) / 2 ** 20)} MiB more for this site, and the encrypted file needs ${Math.ceil(len / 2 ** 20)} MiB while it uploads. Free disk space, or add the file with the vault command line`,
    );
  }
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  const name = `${SPOOL_PREFIX}${Date.now()}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  return {
    name,
    read: async () => (await root.getFileHandle(name)).getFile(),
    // A worker stopped mid-seal may hold the file a moment longer: try again once.
    remove: () =>
      root.removeEntry(name).catch(async () => {
        await new Promise((r) => setTimeout(r, 1000));
        await root.removeEntry(name).catch(() => undefined);
      }),
  };
}

/** Deletes spool files older than SPOOL_STALE_MS (a tab closed mid-upload left them); newer ones may be another tab's. */
async function sweepSpools(root: FileSystemDirectoryHandle): Promise<void> {
  try {
    // keys() is in every browser with the private file system; TypeScript's DOM types lack it.
    for await (const name of (root as unknown as { keys(): AsyncIterable<string> }).keys()) {
      if (!name.startsWith(SPOOL_PREFIX)) continue;
      const made = Number(name.slice(SPOOL_PREFIX.length).split('-')[0]);
      if (Number.isFinite(made) && Date.now() - made > SPOOL_STALE_MS) await root.removeEntry(name).catch(() => undefined);
    }
  } catch {
    // Sweeping is hygiene; a browser refusing to list leaves them to its own quota handling.
  }
}

/**
 * Seals `file` under `job` (from vault-wasm, secret: one record version's
 * payload key). vault-wasm zeroes `job` once this settles; the worker
 * zeroes its copy. A file over SPOOL_ABOVE is sealed by the worker into a
 * spool file (the answer's `discard` deletes it); without a worker or the
 * private file system, in memory, up to MAX_IN_MEMORY.
 */
export async function sealFile(job: Uint8Array, file: File, progress: Progress): Promise<Sealed> {
  const spool = file.size > SPOOL_ABOVE && largeFilesSupported() ? await newSpool(file.size + (file.size >> 4) + 65_536) : null;
  let answer: Answer;
  try {
    answer = await inWorker('encryption', { op: 'seal', job, file, spool: spool?.name }, [], progress);
  } catch (e) {
    await spool?.remove();
    throw e;
  }
  if (answer.unavailable === undefined) {
    if (answer.spooled && spool) {
      try {
        return { ciphertext: await spool.read(), hash: answer.hash as Uint8Array, discard: spool.remove };
      } catch (e) {
        await spool.remove();
        throw new Error(`io: the encrypted file could not be read back from the browser's storage: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    await spool?.remove();
    return { ciphertext: answer.ciphertext as Uint8Array, hash: answer.hash as Uint8Array };
  }
  await spool?.remove();
  if (file.size > MAX_IN_MEMORY) throw tooLarge(file.size);
  const bytes = new Uint8Array(await file.arrayBuffer());
  return sealPayload(job, (offset: number, len: number) => bytes.subarray(offset, offset + len), progress) as Sealed;
}

/** The error for a file over MAX_IN_MEMORY where it cannot be spooled. */
export function tooLarge(size: number): Error {
  return new Error(
    `file_too_large: this browser cannot add files over ${MAX_IN_MEMORY >> 20} MiB (it lacks a background worker or private storage for the encrypted copy; this one is ${Math.ceil(size / 2 ** 20)} MiB). Add it with the vault command line, or in an up-to-date Chrome, Edge, Firefox or Safari`,
  );
}

/**
 * Opens a downloaded `ciphertext` under `job` (from vault-wasm, secret: one
 * verified record version's payload key); resolves to the body. The
 * ciphertext is handed to the worker (it is unusable here afterwards).
 * vault-wasm zeroes `job` once this settles.
 */
export async function openCiphertext(job: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  const answer = await inWorker('decryption', { op: 'open', job, ciphertext }, [ciphertext.buffer as ArrayBuffer]);
  if (answer.unavailable === undefined) return answer.body as Uint8Array;
  // Nothing is handed to a worker before it is ready, so the ciphertext is still here.
  return openPayload(job, ciphertext, null);
}

type Answer = { ready?: true; alive?: true; progress?: [number, number, string]; unavailable?: string; error?: string; spooled?: true } & Record<string, unknown>;

/** A gap between two runs of the watchdog's timer longer than this means the page was suspended (a frozen tab, a sleeping machine): the silence is counted again from then, not judged. */
const SUSPENDED_MS = 5_000;

/**
 * Runs one job in a fresh worker. The worker is first given the module;
 * the job (and what it transfers) only once the worker said it is ready.
 * The answer has `unavailable` set if no worker could start: then nothing
 * was done and nothing was handed over. A worker silent for
 * WORKER_SILENCE_MS is stopped (see there). Whatever happens, the promise
 * settles once, and the worker is terminated and heard no more.
 */
function inWorker(doing: 'encryption' | 'decryption', message: Record<string, unknown>, transfer: Transferable[], progress?: Progress): Promise<Answer> {
  if (!pageModule || workersUnavailable || typeof Worker === 'undefined') return Promise.resolve({ unavailable: 'no worker' });
  const module = pageModule;
  return new Promise((resolve, reject) => {
    let started = false;
    let settled = false;
    let heard = performance.now();
    let ticked = heard;
    let watchdog: ReturnType<typeof setInterval> | undefined;
    let worker: Worker | undefined;
    /** Ends the job once: the worker stopped and detached, the timer cleared. */
    const end = (): boolean => {
      if (settled) return false;
      settled = true;
      clearInterval(watchdog);
      if (worker) {
        worker.onmessage = null;
        worker.onerror = null;
        worker.terminate();
      }
      return true;
    };
    const unavailable = (why: string) => {
      if (!end()) return;
      workersUnavailable = true;
      console.warn(`vault: the payload worker could not start (${why}); records are sealed and opened on the page, which may not answer input meanwhile`);
      resolve({ unavailable: why });
    };
    const fail = (e: Error) => {
      if (end()) reject(e);
    };
    try {
      worker = new PayloadWorker();
    } catch (e) {
      unavailable(e instanceof Error ? e.message : String(e));
      return;
    }
    const w = worker;
    w.onmessage = (ev: MessageEvent) => {
      if (settled) return;
      heard = performance.now();
      const m = ev.data as Answer;
      if (m.ready) {
        started = true;
        try {
          w.postMessage(message, transfer);
        } catch (e) {
          fail(new Error(`internal: the job could not be handed to the payload worker: ${e instanceof Error ? e.message : String(e)}`));
        }
      } else if (m.alive) {
        // Still reading the file.
      } else if (m.progress) {
        progress?.(m.progress[0], m.progress[1], m.progress[2]);
      } else if (m.unavailable !== undefined) {
        unavailable(m.unavailable);
      } else if (m.error !== undefined) {
        fail(new Error(m.error));
      } else if (end()) {
        resolve(m);
      }
    };
    w.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      if (started) fail(new Error(`internal: the payload worker failed: ${ev.message}`));
      else unavailable(ev.message || 'the worker did not start');
    };
    // A timer checks the silence. Timers of a hidden page may run late,
    // which only makes the check late; a page suspended altogether (a
    // frozen tab, a sleeping machine) suspends the worker too, so the
    // silence is counted again from the wake-up.
    watchdog = setInterval(() => {
      const now = performance.now();
      if (now - ticked > SUSPENDED_MS) heard = now;
      ticked = now;
      const silent = now - heard;
      if (silent < WORKER_SILENCE_MS) return;
      const seconds = Math.round(silent / 1000);
      if (!started) unavailable(`it did not start within ${seconds} s`);
      else
        fail(
          new Error(
            doing === 'encryption'
              ? `worker_stalled: the encryption worker stopped answering for ${seconds} s and was stopped; nothing was stored. Try again; if it happens again, reload the page`
              : `worker_stalled: the decryption worker stopped answering for ${seconds} s and was stopped; the record was not opened. Try again; if it happens again, reload the page`,
          ),
        );
    }, 1000);
    try {
      w.postMessage({ module });
    } catch (e) {
      unavailable(e instanceof Error ? e.message : String(e));
    }
  });
}
