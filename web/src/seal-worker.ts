// The sealing worker (docs/decisions/0056-a-pinned-web-worker.md): seals one
// record version's payload away from the page, so the page answers input
// while a large file is encrypted.
//
// Integrity: this file is bundled into one self-contained script that Vite
// inlines into the main chunk as a string (`?worker&inline`); the main chunk
// is pinned by SRI in index.html, so the bundle hash covers these bytes. The
// page starts it from a `blob:` URL (the CSP allows `worker-src blob:` and
// nothing else), and it loads no code of its own: vite.config.ts fails the
// build if this bundle imports anything, and the WebAssembly module is the
// page's own, compiled once from the SRI-checked fetch and posted here.
//
// What it holds: one record version's payload job (its payload key, header
// and lengths) and the file. Never the passphrase, the identity's keys, the
// collection keys or the data key. It is terminated after one file.
import { initSync, sealPayload } from '../pkg/vault_wasm.js';

/** `FileReaderSync` exists in workers only (not in the DOM typings). */
declare const FileReaderSync: { new (): { readAsArrayBuffer(blob: Blob): ArrayBuffer } };

interface Job {
  module: WebAssembly.Module;
  job: Uint8Array;
  file: File;
}

self.onmessage = (ev: MessageEvent<Job>) => {
  const { module, job, file } = ev.data;
  try {
    initSync({ module });
  } catch (e) {
    job.fill(0);
    self.postMessage({ unavailable: e instanceof Error ? e.message : String(e) });
    return;
  }
  self.postMessage({ ready: true });
  try {
    const reader = new FileReaderSync();
    const read = (offset: number, len: number) => new Uint8Array(reader.readAsArrayBuffer(file.slice(offset, offset + len)));
    const progress = (done: number, total: number) => self.postMessage({ progress: [done, total] });
    const sealed = sealPayload(job, read, progress) as { ciphertext: Uint8Array; hash: Uint8Array };
    self.postMessage({ ciphertext: sealed.ciphertext, hash: sealed.hash }, { transfer: [sealed.ciphertext.buffer] });
  } catch (e) {
    self.postMessage({ error: e instanceof Error ? e.message : String(e) });
  } finally {
    job.fill(0);
  }
};
