// The payload worker (docs/decisions/0056-a-pinned-web-worker.md): seals or
// opens one record version's payload away from the page, so the page
// answers input while a large file is encrypted or decrypted.
//
// Integrity: this file is bundled into one self-contained script that Vite
// inlines into the main chunk as a string (`?worker&inline`); the main chunk
// is pinned by SRI in index.html, so the bundle hash covers these bytes. The
// page starts it from a `blob:` URL (the CSP allows `worker-src blob:` and
// nothing else), and it loads no code of its own: vite.config.ts fails the
// build if this bundle imports anything, and the WebAssembly module is the
// page's own, compiled once from the SRI-checked fetch and posted here.
//
// What it holds: one record version's payload job (its payload key and
// what the payload must be) and the file or the downloaded ciphertext.
// Never the passphrase, the identity's keys, the collection keys or the
// data key. It is terminated after one job.
import { initSync, openPayload, openPayloadFrom, sealPayload, sealPayloadInto } from '../pkg/vault_wasm.js';

type Job = { job: Uint8Array } & ({ op: 'seal'; file: File; spool?: string } | { op: 'open'; ciphertext: Uint8Array } | { op: 'open'; spool: string; body: string });

// Worker-only APIs that the DOM library this project type-checks against lacks.
declare global {
  class FileReaderSync {
    readAsArrayBuffer(blob: Blob): ArrayBuffer;
  }
  interface FileSystemSyncAccessHandle {
    read(buffer: ArrayBufferView, options?: { at?: number }): number;
    write(buffer: ArrayBufferView, options?: { at?: number }): number;
    truncate(size: number): void;
    flush(): void;
    close(): void;
  }
  interface FileSystemFileHandle {
    createSyncAccessHandle(): Promise<FileSystemSyncAccessHandle>;
  }
}

/** The largest file sealed in memory where no spool file can be made (src/payloads.ts, MAX_IN_MEMORY). */
const MAX_IN_MEMORY = 512 << 20;

/**
 * How much of the file is read at a time. After each read this worker
 * tells the page it is alive, and sealing and opening report progress
 * every 4 MiB: the page takes a worker that says nothing for a while for
 * stalled (src/payloads.ts).
 */
const READ_STEP = 16 << 20;

/**
 * The whole file, read a step at a time, as a `read(offset, len)` for
 * sealPayload: each read is served from the step holding `offset` (a
 * short read at a step's end is fine; vault-wasm reads on), with no copy
 * into one array.
 */
async function readWhole(file: File): Promise<(offset: number, len: number) => Uint8Array> {
  const steps: Uint8Array[] = [];
  for (let at = 0; at < file.size; at += READ_STEP) {
    const want = Math.min(READ_STEP, file.size - at);
    const part = new Uint8Array(await file.slice(at, at + want).arrayBuffer());
    if (part.length !== want) throw new Error('length_mismatch: the file changed while it was read; add it again');
    steps.push(part);
    self.postMessage({ alive: true });
  }
  return (offset: number, len: number) => {
    const step = steps[Math.floor(offset / READ_STEP)];
    if (!step) return new Uint8Array(0);
    const within = offset % READ_STEP;
    return step.subarray(within, within + len);
  };
}

/**
 * The file read a step at a time through FileReaderSync, as a
 * `read(offset, len)` for sealPayloadInto: only the step being sealed is
 * held (sealing reads front to back), so a file larger than memory seals.
 */
function readStepwise(file: File): (offset: number, len: number) => Uint8Array {
  const reader = new FileReaderSync();
  let stepAt = -1;
  let step = new Uint8Array(0);
  return (offset: number, len: number) => {
    const at = offset - (offset % READ_STEP);
    if (at !== stepAt) {
      if (at >= file.size) return new Uint8Array(0);
      const want = Math.min(READ_STEP, file.size - at);
      step = new Uint8Array(reader.readAsArrayBuffer(file.slice(at, at + want)));
      if (step.length !== want) throw new Error('length_mismatch: the file changed while it was read; add it again');
      stepAt = at;
      self.postMessage({ alive: true });
    }
    const within = offset - at;
    return step.subarray(within, within + len);
  };
}

/** A synchronous access handle on the spool file `name` (created if `create`), which keeps any other tab from touching it meanwhile; null if the browser refuses one. */
async function spoolHandle(name: string, create: boolean): Promise<FileSystemSyncAccessHandle | null> {
  try {
    const root = await navigator.storage.getDirectory();
    return await (await root.getFileHandle(name, { create })).createSyncAccessHandle();
  } catch {
    return null;
  }
}

/** `write(bytes)` appending to `access` from its start (emptied first). */
function appender(access: FileSystemSyncAccessHandle): (bytes: Uint8Array) => void {
  access.truncate(0);
  let at = 0;
  return (bytes: Uint8Array) => {
    const n = access.write(bytes, { at });
    if (n !== bytes.length) throw new Error(`only ${n} of ${bytes.length} bytes were written`);
    at += n;
  };
}

/**
 * Seals `file` under `job` into the spool `access` (the page reads it back
 * for the upload and deletes it), front to back. Returns the ciphertext's
 * hash.
 */
function sealToSpool(job: Uint8Array, file: File, access: FileSystemSyncAccessHandle, progress: Progress): Uint8Array {
  try {
    const hash = sealPayloadInto(job, readStepwise(file), appender(access), progress);
    access.flush();
    return hash;
  } finally {
    access.close();
  }
}

/**
 * Opens the ciphertext spool `name` under `job` into the body spool `body`
 * (both in the origin's private file system; the page reads the body back
 * and deletes both). Returns the body's length, or null if the browser
 * gives no handle for either file (nothing was done).
 */
async function openFromSpool(job: Uint8Array, name: string, body: string, progress: Progress): Promise<number | null> {
  const source = await spoolHandle(name, false);
  if (!source) return null;
  const out = await spoolHandle(body, true);
  if (!out) {
    source.close();
    return null;
  }
  try {
    const read = (offset: number, len: number) => {
      const buf = new Uint8Array(len);
      return buf.subarray(0, source.read(buf, { at: offset }));
    };
    const len = openPayloadFrom(job, read, appender(out), progress);
    out.flush();
    return len;
  } finally {
    source.close();
    out.close();
  }
}

type Progress = (done: number, total: number, phase: string) => void;

/** Whether this browser lets a worker write a spool file (a synchronous access handle in the private file system). */
function canSpool(): boolean {
  return typeof navigator.storage?.getDirectory === 'function' && typeof FileSystemFileHandle !== 'undefined' && 'createSyncAccessHandle' in FileSystemFileHandle.prototype;
}

// First message: the page's module. The job follows only once this worker
// said it is ready, so nothing is handed over to a worker that cannot run.
let ready = false;
self.onmessage = async (ev: MessageEvent<{ module: WebAssembly.Module } | Job>) => {
  if (!ready) {
    try {
      initSync({ module: (ev.data as { module: WebAssembly.Module }).module });
      ready = true;
      self.postMessage({ ready: true });
    } catch (e) {
      self.postMessage({ unavailable: e instanceof Error ? e.message : String(e) });
    }
    return;
  }
  const m = ev.data as Job;
  const progress: Progress = (done, total, phase) => self.postMessage({ progress: [done, total, phase] });
  try {
    // A spool the browser will not give a handle for: a file that fits in memory is sealed there instead.
    const access = m.op === 'seal' && m.spool !== undefined && canSpool() ? await spoolHandle(m.spool, true) : null;
    if (m.op === 'seal' && access) {
      const hash = sealToSpool(m.job, m.file, access, progress);
      self.postMessage({ spooled: true, hash });
    } else if (m.op === 'open' && 'spool' in m) {
      const len = canSpool() ? await openFromSpool(m.job, m.spool, m.body, progress) : null;
      if (len !== null) {
        self.postMessage({ spooledBody: true, len });
      } else {
        // No handle to write the body with: opened in memory, if it fits.
        const file = await (await (await navigator.storage.getDirectory()).getFileHandle(m.spool)).getFile();
        if (file.size > MAX_IN_MEMORY) {
          throw new Error(
            `file_too_large: this browser cannot open records over ${MAX_IN_MEMORY >> 20} MiB (its workers cannot write to its private storage). Open it with the vault command line, or in an up-to-date Chrome, Edge or Firefox`,
          );
        }
        const body = openPayload(m.job, new Uint8Array(await file.arrayBuffer()), progress);
        self.postMessage({ body }, { transfer: [body.buffer] });
      }
    } else if (m.op === 'seal') {
      if (m.file.size > MAX_IN_MEMORY) {
        throw new Error(
          `file_too_large: this browser cannot keep the encrypted copy of a file over ${MAX_IN_MEMORY >> 20} MiB on disk (no private file system for workers). Add it with the vault command line, or in an up-to-date Chrome, Edge, Firefox or Safari`,
        );
      }
      // The whole file first, then sealed from memory: reading small slices
      // through FileReaderSync while sealing made sealing a third slower
      // (web/bench/seal-open.mjs). It is held here, with its ciphertext,
      // until the worker ends.
      const read = await readWhole(m.file);
      const sealed = sealPayload(m.job, read, progress) as { ciphertext: Uint8Array; hash: Uint8Array };
      self.postMessage({ ciphertext: sealed.ciphertext, hash: sealed.hash }, { transfer: [sealed.ciphertext.buffer] });
    } else if (m.op === 'open') {
      const body = openPayload(m.job, m.ciphertext, progress);
      self.postMessage({ body }, { transfer: [body.buffer] });
    }
  } catch (e) {
    // The module's errors are "code: message"; the browser's (a storage handle, a read) get one.
    const text = e instanceof Error ? e.message : String(e);
    const coded = /^[a-z_]+: /.test(text) ? text : `${e instanceof DOMException && e.name === 'QuotaExceededError' ? 'storage_full' : 'io'}: ${text}`;
    self.postMessage({ error: coded });
  } finally {
    m.job.fill(0);
  }
};
