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

/** Prefix of ciphertext spool files (an upload's or a download's) in the origin's private file system. */
const SPOOL_PREFIX = 'vault-spool-';
/** Prefix of the files a record opened from a spool is decrypted into. */
const BODY_PREFIX = 'vault-body-';
/**
 * How long a decrypted record's file is kept for the tab or download that
 * shows it: plaintext on the device's disk (in the browser's profile), so
 * not longer.
 */
export const BODY_KEEP_MS = 10 * 60_000;

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

/** Called by vault.ts once the module is compiled; sweeps spool files a closed tab left behind. */
export function rememberModule(module: WebAssembly.Module): void {
  pageModule = module;
  void sweepSpools();
}

/** Whether files over MAX_IN_MEMORY can be added here: a worker seals them into the private file system. */
export function largeFilesSupported(): boolean {
  return !!pageModule && !workersUnavailable && typeof Worker !== 'undefined' && typeof navigator.storage?.getDirectory === 'function';
}

/**
 * A spool file in the origin's private file system: its name, read back
 * as a File, and deleted. While it exists, this tab holds the Web Lock
 * `vault-spool:<name>`; a spool whose lock nobody holds was left by a tab
 * that closed or crashed, and is deleted by the next sweep.
 */
export interface Spool {
  name: string;
  read(): Promise<File>;
  /** Deletes the file (retrying while a stopped worker may still hold it) and releases the lock; safe to call twice. */
  remove(): Promise<void>;
}

/** The spool sink vault-wasm downloads a large record into (vault-wasm `records::open`). */
export interface DownloadSpool {
  name: string;
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** The origin's private file system, or null where the browser lacks it or refuses it. */
async function spoolRoot(): Promise<FileSystemDirectoryHandle | null> {
  if (typeof navigator.storage?.getDirectory !== 'function') return null;
  try {
    return await navigator.storage.getDirectory();
  } catch {
    return null;
  }
}

const lockName = (name: string) => `vault-spool:${name}`;
/** The names makeSpool gives. */
const SPOOL_NAME = /^vault-(spool|body)-[0-9a-f]{24}$/;
const OLD_SPOOL_NAME = /^vault-spool-(\d+)-[0-9a-f]{16}$/;

/** Throws `storage_full` unless the browser says it can keep `len` more bytes for this site. */
async function checkRoom(len: number, what: string): Promise<void> {
  const estimate = await navigator.storage.estimate?.().catch(() => undefined);
  if (estimate?.quota !== undefined && estimate.usage !== undefined && estimate.quota - estimate.usage < len) {
    throw new Error(
      `storage_full: the browser can keep only ${Math.floor((estimate.quota - estimate.usage) / 2 ** 20)} MiB more for this site, and ${what} needs ${Math.ceil(len / 2 ** 20)} MiB meanwhile. Free disk space, or use the vault command line`,
    );
  }
}

/** A new spool named `prefix` + a random suffix, locked for this tab until removed. */
async function makeSpool(root: FileSystemDirectoryHandle, prefix: string): Promise<Spool> {
  await sweepSpools(root);
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  const name = `${prefix}${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  let release = () => {};
  if (navigator.locks) {
    const held = new Promise<void>((r) => (release = r));
    await new Promise<void>((acquired, failed) => {
      navigator.locks
        .request(lockName(name), () => {
          acquired();
          return held;
        })
        .catch(failed);
    });
  }
  let removed: Promise<void> | undefined;
  return {
    name,
    read: async () => (await root.getFileHandle(name)).getFile(),
    remove: () =>
      (removed ??= (async () => {
        await removeEntry(root, name);
        release();
      })()),
  };
}

/** Deletes `name`: done if it is gone; a worker stopped mid-job may hold it a moment longer, so it is tried again for a few seconds, then left to the next sweep. */
async function removeEntry(root: FileSystemDirectoryHandle, name: string): Promise<void> {
  for (const wait of [0, 250, 1000, 4000]) {
    if (wait) await new Promise((r) => setTimeout(r, wait));
    try {
      await root.removeEntry(name);
      return;
    } catch (e) {
      if (e instanceof DOMException && e.name === 'NotFoundError') return;
    }
  }
  console.warn(`vault: a spool file (${name}) could not be deleted yet; it is deleted on the next visit`);
}

/**
 * Deletes the spool files no tab holds a lock for: left by a tab that
 * closed or crashed mid-upload or mid-download (a decrypted body among
 * them). Without Web Locks, those over a day old.
 */
export async function sweepSpools(given?: FileSystemDirectoryHandle): Promise<void> {
  const root = given ?? (await spoolRoot());
  if (!root) return;
  try {
    // keys() is in every browser with the private file system; TypeScript's DOM types lack it.
    for await (const name of (root as unknown as { keys(): AsyncIterable<string> }).keys()) {
      // Spools named by the first build of decision 64 carry their creation time and no lock.
      const old = OLD_SPOOL_NAME.exec(name);
      if (old) {
        if (Date.now() - Number(old[1]) > 24 * 3600 * 1000) await root.removeEntry(name).catch(() => undefined);
        continue;
      }
      // Only this app's own spool names (not a browser's swap files beside them).
      if (!SPOOL_NAME.test(name)) continue;
      if (navigator.locks) {
        await navigator.locks.request(lockName(name), { ifAvailable: true }, async (lock) => {
          if (lock) await root.removeEntry(name).catch(() => undefined);
        });
      } else {
        const file = await (await root.getFileHandle(name)).getFile();
        if (Date.now() - file.lastModified > 24 * 3600 * 1000) await root.removeEntry(name).catch(() => undefined);
      }
    }
  } catch {
    // Sweeping is hygiene; a browser refusing to list leaves them to the next visit.
  }
}

/**
 * Seals `file` under `job` (from vault-wasm, secret: one record version's
 * payload key). vault-wasm zeroes `job` once this settles; the worker
 * zeroes its copy. A file over SPOOL_ABOVE is sealed by the worker into a
 * spool file (the answer's `discard` deletes it); without a worker, the
 * private file system or room in it, in memory, up to MAX_IN_MEMORY.
 */
export async function sealFile(job: Uint8Array, file: File, progress: Progress): Promise<Sealed> {
  let spool: Spool | null = null;
  const root = file.size > SPOOL_ABOVE && largeFilesSupported() ? await spoolRoot() : null;
  if (root) {
    try {
      await checkRoom(file.size + (file.size >> 4) + 65_536, 'the encrypted copy of the file');
      spool = await makeSpool(root, SPOOL_PREFIX);
    } catch (e) {
      // Not enough room on disk: a file that fits in memory is sealed there.
      if (file.size > MAX_IN_MEMORY) throw e;
    }
  }
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

/**
 * A spool for downloading a record of `len` bytes of ciphertext (vault-wasm
 * asks before downloading a record it opens in the worker), added to
 * `made` so the caller deletes it once the open ended; null for a record
 * of SPOOL_ABOVE or less, or where none can be made (the record is then
 * downloaded into memory). Throws `storage_full` when a record too large
 * for memory does not fit on disk either (its ciphertext and its body).
 */
export async function downloadSpool(len: number, made: Spool[]): Promise<DownloadSpool | null> {
  if (len <= SPOOL_ABOVE) return null;
  const root = largeFilesSupported() ? await spoolRoot() : null;
  if (!root) {
    if (len > MAX_IN_MEMORY) throw tooLarge(len, 'open');
    return null;
  }
  try {
    await checkRoom(2 * len, 'the record (encrypted and decrypted)');
  } catch (e) {
    if (len > MAX_IN_MEMORY) throw e;
    return null;
  }
  const spool = await makeSpool(root, SPOOL_PREFIX);
  made.push(spool);
  let writable: FileSystemWritableFileStream;
  try {
    writable = await (await root.getFileHandle(spool.name, { create: true })).createWritable();
  } catch {
    // A browser whose page cannot write the private file system (Safari): in memory if it fits.
    if (len > MAX_IN_MEMORY) throw tooLarge(len, 'open');
    return null;
  }
  let closed = false;
  const remove = spool.remove;
  // A download that failed half-way leaves the stream open: abort it so the file can go.
  spool.remove = async () => {
    if (!closed) await writable.abort().catch(() => undefined);
    closed = true;
    await remove();
  };
  return {
    name: spool.name,
    write: (bytes: Uint8Array) => writable.write(bytes as BufferSource),
    close: async () => {
      await writable.close();
      closed = true;
    },
  };
}

/** The error for a file or record over MAX_IN_MEMORY that this browser cannot spool to disk. */
export function tooLarge(size: number, doing: 'add' | 'open' = 'add'): Error {
  const mib = Math.ceil(size / 2 ** 20);
  return new Error(
    doing === 'add'
      ? `file_too_large: this browser cannot add files over ${MAX_IN_MEMORY >> 20} MiB (it lacks a background worker or private storage for the encrypted copy; this one is ${mib} MiB). Nothing was stored. Add it with the vault command line, or in an up-to-date Chrome, Edge, Firefox or Safari`
      : `file_too_large: this browser cannot open records over ${MAX_IN_MEMORY >> 20} MiB (it cannot write them to its private storage; this one is ${mib} MiB). Open it with the vault command line, or in an up-to-date Chrome, Edge or Firefox`,
  );
}

/**
 * Opens a downloaded `ciphertext` under `job` (from vault-wasm, secret: one
 * verified record version's payload key); resolves to the body. The
 * ciphertext is handed to the worker (it is unusable here afterwards).
 * A ciphertext downloaded into a spool is opened by the worker from there
 * into another file, which resolves as a `File` (plaintext on disk: it is
 * deleted after BODY_KEEP_MS, or by the next visit's sweep).
 * vault-wasm zeroes `job` once this settles.
 */
export async function openCiphertext(job: Uint8Array, ciphertext: Uint8Array | DownloadSpool): Promise<Uint8Array | Blob> {
  if (!(ciphertext instanceof Uint8Array)) return openSpooled(job, ciphertext.name);
  const answer = await inWorker('decryption', { op: 'open', job, ciphertext }, [ciphertext.buffer as ArrayBuffer]);
  if (answer.unavailable === undefined) return answer.body as Uint8Array;
  // Nothing is handed to a worker before it is ready, so the ciphertext is still here.
  return openPayload(job, ciphertext, null);
}

/** Opens the ciphertext spool `name` in the worker into a body file (see openCiphertext). */
async function openSpooled(job: Uint8Array, name: string): Promise<Uint8Array | Blob> {
  const root = await spoolRoot();
  if (!root) throw new Error("io: the browser's private storage went away while the record was downloaded");
  const body = await makeSpool(root, BODY_PREFIX);
  try {
    const answer = await inWorker('decryption', { op: 'open', job, spool: name, body: body.name }, []);
    if (answer.spooledBody) {
      const file = await body.read();
      setTimeout(() => void body.remove(), BODY_KEEP_MS);
      return file;
    }
    if (answer.unavailable === undefined) {
      // The worker could not write the body to disk and opened it in memory.
      await body.remove();
      return answer.body as Uint8Array;
    }
    await body.remove();
    const file = await (await root.getFileHandle(name)).getFile();
    if (file.size > MAX_IN_MEMORY) throw tooLarge(file.size, 'open');
    return openPayload(job, new Uint8Array(await file.arrayBuffer()), null);
  } catch (e) {
    // Chunks are written as they authenticate; a failed open's partial body goes.
    await body.remove();
    throw e;
  }
}

type Answer = { ready?: true; alive?: true; progress?: [number, number, string]; unavailable?: string; error?: string; spooled?: true; spooledBody?: true } & Record<string, unknown>;

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
