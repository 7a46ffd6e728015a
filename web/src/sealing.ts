// Sealing a file's payload for vault-wasm's addFile: in a worker when the
// browser allows it (src/seal-worker.ts, decision 56), else on the page.
// Both run the same vault-wasm function, sealPayload; the page plans and
// finishes the record version (keys, metadata, signature) either way.

import { sealPayload } from '../pkg/vault_wasm.js';
import SealWorker from './seal-worker?worker&inline';

/** What a sealer returns to vault-wasm. */
export interface Sealed {
  ciphertext: Uint8Array;
  hash: Uint8Array;
}

type Progress = (done: number, total: number, phase: string) => void;

/** The page's WebAssembly module, compiled once from the SRI-checked fetch; the worker instantiates this very module. */
let pageModule: WebAssembly.Module | null = null;
/** Set once a worker could not start here (a browser or policy refusing `blob:` workers): later files seal on the page. */
let workersUnavailable = false;

/** Called by vault.ts once the module is compiled. */
export function rememberModule(module: WebAssembly.Module): void {
  pageModule = module;
}

/** Whether files are sealed in a worker (false until a worker failed to start, or without the module). */
export function sealsInWorker(): boolean {
  return pageModule !== null && !workersUnavailable && typeof Worker !== 'undefined';
}

/**
 * Seals `file` under `job` (from vault-wasm, secret: one record version's
 * payload key). The job's bytes are zeroed here and in the worker once used.
 */
export async function sealFile(job: Uint8Array, file: File, progress: Progress): Promise<Sealed> {
  try {
    if (pageModule && sealsInWorker()) {
      const sealed = await inWorker(pageModule, job, file, progress);
      if (sealed) return sealed;
      workersUnavailable = true;
      console.warn('vault: the sealing worker could not start; sealing on the page, which may not answer input while a large file is encrypted');
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    return sealPayload(job, (offset: number, len: number) => bytes.subarray(offset, offset + len), (done: number, total: number) => progress(done, total, 'sealing')) as Sealed;
  } finally {
    job.fill(0);
  }
}

/** Seals in a fresh worker; `null` if no worker could start (then nothing was sealed). */
function inWorker(module: WebAssembly.Module, job: Uint8Array, file: File, progress: Progress): Promise<Sealed | null> {
  return new Promise((resolve, reject) => {
    let worker: Worker;
    try {
      worker = new SealWorker();
    } catch {
      resolve(null);
      return;
    }
    let started = false;
    worker.onmessage = (ev: MessageEvent) => {
      const m = ev.data as { ready?: true; progress?: [number, number]; unavailable?: string; error?: string; ciphertext?: Uint8Array; hash?: Uint8Array };
      if (m.ready) {
        started = true;
      } else if (m.progress) {
        progress(m.progress[0], m.progress[1], 'sealing');
      } else {
        worker.terminate();
        if (m.unavailable !== undefined) resolve(null);
        else if (m.error !== undefined) reject(new Error(m.error));
        else if (m.ciphertext && m.hash) resolve({ ciphertext: m.ciphertext, hash: m.hash });
        else reject(new Error('internal: the sealing worker gave no answer'));
      }
    };
    worker.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      worker.terminate();
      if (started) reject(new Error(`internal: the sealing worker failed: ${ev.message}`));
      else resolve(null);
    };
    worker.postMessage({ module, job, file });
  });
}
