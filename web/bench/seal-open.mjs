// Seal and open one large record in the browser (vault-core compiled to
// WebAssembly, in headless Chromium) and natively (the same fixture, same
// machine, same run), and print the browser's throughput as a ratio of
// native (target: at least 0.3x; issue 18: 0.5x in the worker), with the
// wasm sizes. The browser half seals and opens on the page and, as the app
// does for large records, in a worker.
//
//   node web/bench/seal-open.mjs [MB=50] [ROUNDS=5]
//
// Builds what it needs: the native example (release) and a bench build of
// vault-wasm (feature `bench`, cargo profile `web`, wasm-bindgen and wasm-opt
// exactly as scripts/build-web does for the app).
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(webDir, '..');
const MB = Number(process.argv[2] ?? 50);
// TASKSET=0 runs the native half on one core (the seal hashes on a second
// thread where one is free).
const TASKSET = process.env.TASKSET;
const ROUNDS = Number(process.argv[3] ?? 5);
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Where cargo puts its output: CARGO_TARGET_DIR when set (as cargo itself
// does), else ./target.
const target = resolve(root, process.env.CARGO_TARGET_DIR ?? 'target');
const run = (cmd, args, opts = {}) =>
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts });

console.log(`seal/open of one ${MB} MB record, best of ${ROUNDS}`);

// Native.
run('cargo', ['build', '--quiet', '--release', '--locked', '-p', 'vault-wasm', '--features', 'bench', '--example', 'seal_open']);
const example = join(target, 'release', 'examples', 'seal_open');
const native = JSON.parse(
  (TASKSET ? run('taskset', ['-c', TASKSET, example, String(MB), String(ROUNDS)]) : run(example, [String(MB), String(ROUNDS)])).trim(),
);

// The bench module, built like the app's.
const out = join(target, 'web-bench');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
run('cargo', ['build', '--quiet', '--locked', '--profile', 'web', '-p', 'vault-wasm', '--features', 'bench', '--target', 'wasm32-unknown-unknown']);
run('wasm-bindgen', ['--target', 'web', '--out-dir', out, join(target, 'wasm32-unknown-unknown', 'web', 'vault_wasm.wasm')]);
run(join(webDir, 'node_modules', '.bin', 'wasm-opt'), [
  process.env.WASM_OPT_LEVEL ?? '-Oz', '--enable-bulk-memory', '--enable-nontrapping-float-to-int', '--enable-sign-ext',
  '--enable-reference-types', '--enable-multivalue', '--enable-mutable-globals', '--enable-simd',
  join(out, 'vault_wasm_bg.wasm'), '-o', join(out, 'vault_wasm_bg.wasm'),
]);
// The best time per repetition of `op` over `rounds` rounds of `reps`, in
// milliseconds: one definition for the page's and the worker's halves.
const BEST = `const best = (op) => {
    let b = Infinity;
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      for (let r = 0; r < reps; r++) op();
      b = Math.min(b, (performance.now() - t) / reps);
    }
    return b;
  };`;
writeFileSync(join(out, 'index.html'), '<!doctype html><meta charset="utf-8"><title>bench</title>');
writeFileSync(
  join(out, 'bench.js'),
  `import init, { SealBench } from './vault_wasm.js';
export async function bench(len, rounds) {
  await init({ module_or_path: './vault_wasm_bg.wasm' });
  const fixture = new SealBench(len);
  const reps = Math.max(1, Math.floor(20_000_000 / Math.max(1, len)));
  ${BEST}
  // Same order as natively: the primitives hash the last ciphertext; the
  // cipher alone runs last (it changes the body in place).
  const seal_ms = best(() => fixture.seal());
  const open_ms = best(() => fixture.open());
  const sha256_ms = best(() => fixture.sha256());
  // The app's path for large records (decision 56): the same seal and open
  // in a worker, the file read as the app's worker reads it.
  const file = new Blob([fixture.body()]);
  const sealJob = fixture.sealJob();
  const [openJob, ciphertext] = fixture.openJob();
  const worker = new Worker('./worker.js', { type: 'module' });
  const inWorker = await new Promise((resolve, reject) => {
    worker.onmessage = (ev) => (ev.data.error ? reject(new Error(ev.data.error)) : resolve(ev.data));
    worker.onerror = (ev) => reject(new Error(ev.message));
    worker.postMessage({ sealJob, openJob, ciphertext, file, reps, rounds, len });
  });
  worker.terminate();
  const blake3_ms = best(() => fixture.blake3());
  const chacha_ms = best(() => fixture.chacha());
  fixture.free();
  return { seal_ms, open_ms, sha256_ms, blake3_ms, chacha_ms, ...inWorker };
}
`,
);
writeFileSync(
  join(out, 'worker.js'),
  `import init, { openPayload, sealPayload } from './vault_wasm.js';
self.onmessage = async (ev) => {
  try {
    const { sealJob, openJob, ciphertext, file, reps, rounds, len } = ev.data;
    await init({ module_or_path: './vault_wasm_bg.wasm' });
    // As the app's worker reads a file (src/payload-worker.ts).
    const bytes = new Uint8Array(await file.arrayBuffer());
    const read = (offset, n) => bytes.subarray(offset, offset + n);
    ${BEST}
    const worker_seal_ms = best(() => sealPayload(sealJob, read, null));
    const worker_open_ms = best(() => {
      if (openPayload(openJob, ciphertext).length !== len) throw new Error('the opened body has the wrong length');
    });
    self.postMessage({ worker_seal_ms, worker_open_ms });
  } catch (e) {
    self.postMessage({ error: String(e && e.message ? e.message : e) });
  }
};
`,
);

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = createServer((req, res) => {
  const file = join(out, new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html');
  try {
    const body = readFileSync(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;
const profile = mkdtempSync(join(tmpdir(), 'vault-bench-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let browser;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(url);
  browser = await page.evaluate(
    async ([len, rounds]) => (await import('./bench.js')).bench(len, rounds),
    [MB * 1_000_000, ROUNDS],
  );
} finally {
  await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

const mbps = (ms) => (MB / (ms / 1000)).toFixed(0);
const row = (name, n, b) =>
  `${name.padEnd(13)} native ${n.toFixed(3).padStart(9)} ms (${mbps(n).padStart(5)} MB/s)   browser ${b.toFixed(3).padStart(9)} ms (${mbps(b).padStart(5)} MB/s)   browser/native ${(n / b).toFixed(2)}x`;
console.log(`native${TASKSET ? ` on core ${TASKSET} only` : ''}; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
for (const k of ['seal', 'open', 'chacha', 'sha256', 'blake3']) console.log(row(k === 'chacha' ? 'chacha20' : k, native[`${k}_ms`], browser[`${k}_ms`]));
// The app's path for large records: in a worker, against the same native seal and open.
console.log(row('seal (worker)', native.seal_ms, browser.worker_seal_ms));
console.log(row('open (worker)', native.open_ms, browser.worker_open_ms));
// Where a seal's time goes: the cipher alone, and the content hash.
for (const [env, t] of [['native', native], ['browser', browser]]) {
  console.log(
    `${env.padEnd(8)} seal at ${(t.chacha_ms / t.seal_ms).toFixed(2)}x the raw cipher, open at ${(t.chacha_ms / t.open_ms).toFixed(2)}x; ` +
      `SHA-256 costs ${(t.sha256_ms / t.chacha_ms).toFixed(2)}x the cipher, BLAKE3 ${(t.blake3_ms / t.chacha_ms).toFixed(2)}x (BLAKE3 ${(t.sha256_ms / t.blake3_ms).toFixed(1)}x faster than SHA-256)`,
  );
}

const size = (file) => {
  const bytes = readFileSync(file);
  return `${bytes.length} B (${gzipSync(bytes, { level: 9 }).length} B gzipped)`;
};
console.log(`bench wasm module: ${size(join(out, 'vault_wasm_bg.wasm'))}`);
const assets = join(webDir, 'dist', 'assets');
try {
  for (const f of readdirSync(assets)) {
    if (f.endsWith('.wasm') || f.endsWith('.js')) console.log(`app bundle ${f}: ${size(join(assets, f))}`);
  }
  const total = readdirSync(assets).reduce((n, f) => n + statSync(join(assets, f)).size, 0);
  console.log(`app bundle total (assets): ${total} B`);
} catch {
  console.log('app bundle: not built (scripts/build-web)');
}
