#!/usr/bin/env node
// Seals dist/ after `vite build`:
//  1. adds integrity="sha384-…" and crossorigin="anonymous" to every
//     <script src> and <link rel=stylesheet|modulepreload> of dist/index.html,
//     computed from the emitted files (and re-verified after writing);
//  2. checks that the wasm pin compiled into the JS matches the emitted wasm;
//  3. computes the bundle hash, SHA-256 of the final dist/index.html (which
//     pins every script and style, whose JS pins the wasm), writes it to
//     dist/bundle-hash.txt and prints it with the size of every file.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = resolve(process.argv[2] ?? join(webDir, 'dist'));
const indexPath = join(dist, 'index.html');

function fail(msg) {
  console.error(`seal: ${msg}`);
  process.exit(1);
}

const sri = (bytes) => `sha384-${createHash('sha384').update(bytes).digest('base64')}`;

/** The file a same-origin URL in index.html refers to, or null for anything else. */
function localFile(url) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith('//')) return null;
  const clean = url.split(/[?#]/)[0];
  const path = resolve(dist, clean.replace(/^\//, ''));
  if (!path.startsWith(dist + '/')) fail(`${url} points outside dist/`);
  return path;
}

let html = readFileSync(indexPath, 'utf8');
const attr = (tag, name) => {
  const m = new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(tag);
  return m ? (m[2] ?? m[3] ?? m[4]) : null;
};

let pinned = 0;
html = html.replace(/<(script|link)\b[^>]*>/gi, (tag, name) => {
  const isScript = name.toLowerCase() === 'script';
  const rel = isScript ? null : (attr(tag, 'rel') ?? '').toLowerCase();
  if (!isScript && rel !== 'stylesheet' && rel !== 'modulepreload') return tag;
  const url = attr(tag, isScript ? 'src' : 'href');
  if (!url) {
    if (isScript) fail('inline <script> in index.html: the CSP forbids it');
    return tag;
  }
  const file = localFile(url);
  if (!file) fail(`external resource in index.html: ${url} (the app must load nothing from other hosts)`);
  const integrity = sri(readFileSync(file));
  let out = tag.replace(/\s(integrity|crossorigin)(\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?/gi, '');
  out = out.replace(/\s*\/?>$/, (end) => ` integrity="${integrity}" crossorigin="anonymous"${end.includes('/') ? ' />' : '>'}`);
  pinned += 1;
  return out;
});
if (/<style[\s>]/i.test(html)) fail('inline <style> in index.html: the CSP forbids it');
if (/\sstyle\s*=/i.test(html)) fail('style="" attribute in index.html: the CSP forbids it');
if (pinned === 0) fail('no script or stylesheet found in index.html');
writeFileSync(indexPath, html);

// Re-read and verify every pin against the files as they are on disk.
const final = readFileSync(indexPath);
for (const m of final.toString('utf8').matchAll(/<(script|link)\b[^>]*>/gi)) {
  const tag = m[0];
  const url = attr(tag, 'src') ?? attr(tag, 'href');
  const integrity = attr(tag, 'integrity');
  if (!integrity) continue;
  if (integrity !== sri(readFileSync(localFile(url)))) fail(`integrity of ${url} does not match the file`);
  if (attr(tag, 'crossorigin') !== 'anonymous') fail(`${url} lacks crossorigin="anonymous"`);
}

// The wasm: exactly one emitted, and its pin is compiled into the JS.
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(p);
  }
};
walk(dist);
const wasmFiles = files.filter((f) => f.endsWith('.wasm'));
if (wasmFiles.length !== 1) fail(`expected one .wasm in dist, found ${wasmFiles.length}`);
const wasmPin = sri(readFileSync(wasmFiles[0]));
const js = files.filter((f) => f.endsWith('.js')).map((f) => readFileSync(f, 'utf8'));
if (!js.some((text) => text.includes(wasmPin))) fail(`the JS does not pin the emitted wasm (${wasmPin})`);

const bundleHash = createHash('sha256').update(final).digest('hex');
writeFileSync(join(dist, 'bundle-hash.txt'), `${bundleHash}\n`);

console.log(`sealed ${pinned} script/style tag(s) in index.html with SRI; wasm pinned as ${wasmPin}`);
const rows = files
  .filter((f) => !f.endsWith('bundle-hash.txt'))
  .map((f) => {
    const bytes = readFileSync(f);
    return [relative(dist, f), bytes.length, gzipSync(bytes, { level: 9 }).length];
  })
  .sort((a, b) => b[1] - a[1]);
const w = Math.max(...rows.map((r) => r[0].length));
for (const [name, raw, gz] of rows) {
  console.log(`  ${name.padEnd(w)}  ${String(raw).padStart(9)} B  ${String(gz).padStart(9)} B gzipped${name.endsWith('.wasm') ? '  (wasm)' : ''}`);
}
const total = rows.reduce((a, r) => [a[0] + r[1], a[1] + r[2]], [0, 0]);
console.log(`  ${'total'.padEnd(w)}  ${String(total[0]).padStart(9)} B  ${String(total[1]).padStart(9)} B gzipped`);
console.log(`bundle hash: ${bundleHash}`);
