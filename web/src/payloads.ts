// Sealing and opening record payloads for vault-wasm's addFile and
// openRecord: in a worker when the browser allows it (src/payload-worker.ts,
// decision 56), else on the page. Both run the same vault-wasm functions
// (sealPayload, openPayload); the page plans, verifies and finishes records
// (keys, metadata, signatures) either way.

import { openPayload, sealPayload } from '../pkg/vault_wasm.js';
import PayloadWorker from './payload-worker?worker&inline';

/** What a sealer returns to vault-wasm. */
export interface Sealed {
  ciphertext: Uint8Array;
  hash: Uint8Array;
}

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

/**
 * Seals `file` under `job` (from vault-wasm, secret: one record version's
 * payload key). vault-wasm zeroes `job` once this settles; the worker
 * zeroes its copy.
 */
export async function sealFile(job: Uint8Array, file: File, progress: Progress): Promise<Sealed> {
  const answer = await inWorker('encryption', { op: 'seal', job, file }, [], progress);
  if (answer.unavailable === undefined) return { ciphertext: answer.ciphertext as Uint8Array, hash: answer.hash as Uint8Array };
  const bytes = new Uint8Array(await file.arrayBuffer());
  return sealPayload(job, (offset: number, len: number) => bytes.subarray(offset, offset + len), progress) as Sealed;
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

type Answer = { ready?: true; alive?: true; progress?: [number, number, string]; unavailable?: string; error?: string } & Record<string, unknown>;

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
