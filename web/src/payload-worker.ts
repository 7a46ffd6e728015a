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
import { initSync, openPayload, sealPayload } from '../pkg/vault_wasm.js';

type Job = { job: Uint8Array } & ({ op: 'seal'; file: File } | { op: 'open'; ciphertext: Uint8Array });

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
  try {
    if (m.op === 'seal') {
      // The whole file at once: reading it in slices through FileReaderSync
      // made sealing a third slower (web/bench/seal-open.mjs). It is held
      // here, with its ciphertext, until the worker ends.
      const bytes = new Uint8Array(await m.file.arrayBuffer());
      const read = (offset: number, len: number) => bytes.subarray(offset, offset + len);
      const progress = (done: number, total: number) => self.postMessage({ progress: [done, total] });
      const sealed = sealPayload(m.job, read, progress) as { ciphertext: Uint8Array; hash: Uint8Array };
      self.postMessage({ ciphertext: sealed.ciphertext, hash: sealed.hash }, { transfer: [sealed.ciphertext.buffer] });
    } else {
      const body = openPayload(m.job, m.ciphertext);
      self.postMessage({ body }, { transfer: [body.buffer] });
    }
  } catch (e) {
    self.postMessage({ error: e instanceof Error ? e.message : String(e) });
  } finally {
    m.job.fill(0);
  }
};
