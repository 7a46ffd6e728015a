#!/usr/bin/env node
// End-to-end story of the patient web app against a real relay and the real
// CLI: a patient (browser) and a clinician (CLI) share, write back, revoke.
//
//   cd web && npm run build && node e2e/story.mjs
//
// Environment: RELAY_BIN, VAULT_BIN, SHARED, WEB_DIST, ARTIFACTS (see README).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RELAY_BIN = process.env.RELAY_BIN ?? join(webDir, '..', 'target', 'debug', 'relay-server');
const VAULT_BIN = process.env.VAULT_BIN ?? join(webDir, '..', 'target', 'debug', 'vault');
const SHARED = process.env.SHARED ?? join(webDir, '..', '..', 'shared');
const WEB_DIST = resolve(process.env.WEB_DIST ?? join(webDir, 'dist'));
const ARTIFACTS = resolve(process.env.ARTIFACTS ?? join(webDir, 'e2e', 'artifacts'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const PATIENT_PASS = 'correct horse battery staple';
const CLINICIAN_PASS = 'clinician passphrase 1';
const started = Date.now();
const tmp = mkdtempSync(join(tmpdir(), 'vault-e2e-'));
mkdirSync(ARTIFACTS, { recursive: true });

const cleanups = [];
function log(step) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${step}`);
}

// ---------- relay ----------
let relayProcess = null;
// When the story last stopped the relay on purpose, and when it last
// started it: a request the page makes meanwhile is refused by the
// network, which Chromium logs as a console error; the page itself must
// still show no error (noAlerts).
let relayStoppedAt = 0;
let relayStartedAt = 0;
// Even if the test dies on an unexpected error, the relay does not outlive it.
process.on('exit', () => relayProcess?.kill('SIGKILL'));

function startRelay(listen = '127.0.0.1:0') {
  return new Promise((resolveUrl, reject) => {
    const relay = spawn(RELAY_BIN, ['--listen', listen, '--data-dir', join(tmp, 'relay'), '--web-dir', WEB_DIST, '--log', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    relayProcess = relay;
    cleanups.push(() => relay.kill('SIGTERM'));
    let out = '';
    const timer = setTimeout(() => reject(new Error(`relay did not start in 15 s:\n${out}`)), 15_000);
    const onData = (d) => {
      out += d.toString();
      const m = /relay-server listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        relayStartedAt = Date.now();
        resolveUrl(m[1].replace(/\/+$/, ''));
      }
    };
    relay.stdout.on('data', onData);
    relay.stderr.on('data', (d) => {
      out += d.toString();
    });
    relay.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`relay exited (${code}):\n${out}`));
    });
  });
}

/** The patient's page, for a screenshot when the story fails. */
let failurePage = null;

// ---------- CLI ----------
let relayUrl = '';
const cliHome = join(tmp, 'cli');
function cli(args, { input, allowFail = false, home = cliHome } = {}) {
  return new Promise((res, rej) => {
    const p = spawn(VAULT_BIN, args, {
      env: { ...process.env, VAULT_HOME: home, VAULT_RELAY: relayUrl, VAULT_PASSPHRASE: CLINICIAN_PASS, NO_COLOR: '1' },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', rej);
    p.on('close', (code) => {
      if (code !== 0 && !allowFail) rej(new Error(`vault ${args.join(' ')} exited ${code}\n${stderr}${stdout}`));
      else res({ code, stdout, stderr });
    });
    if (input !== undefined) {
      // A command that exits before reading all of stdin closes the pipe:
      // that is its answer, not a test failure (its exit code is checked).
      p.stdin.on('error', () => {});
      p.stdin.end(input);
    }
  });
}

/**
 * Starts `vault <args>` to be driven as a person at a terminal would:
 * `waitFor(re)` resolves with the first match of `re` in its stderr so far
 * or to come, `answer(text)` types a line, `kill()` stops it, `done`
 * resolves when it exits.
 */
function cliInteractive(args, { home = cliHome } = {}) {
  const p = spawn(VAULT_BIN, args, {
    env: { ...process.env, VAULT_HOME: home, VAULT_RELAY: relayUrl, VAULT_PASSPHRASE: CLINICIAN_PASS, NO_COLOR: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiting = [];
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => {
    stderr += d;
    for (const w of waiting.splice(0)) {
      const m = w.re.exec(stderr);
      if (m) w.res(m);
      else waiting.push(w);
    }
  });
  p.stdin.on('error', () => {});
  const done = new Promise((res, rej) => {
    p.on('error', rej);
    p.on('close', (code) => {
      for (const w of waiting.splice(0)) w.rej(new Error(`vault ${args.join(' ')} exited ${code} before printing ${w.re}:\n${stderr}`));
      if (code !== 0) rej(new Error(`vault ${args.join(' ')} exited ${code}\n${stderr}${stdout}`));
      else res({ code, stdout, stderr });
    });
  });
  return {
    waitFor: (re) =>
      new Promise((res, rej) => {
        const m = re.exec(stderr);
        if (m) res(m);
        else waiting.push({ re, res, rej });
      }),
    answer: (text) => p.stdin.write(`${text}\n`),
    kill: () => p.kill('SIGKILL'),
    done,
  };
}

// ---------- fixtures ----------
/** Size of the large file of step 10 (decision 56's responsiveness check). */
const LARGE_FILE_BYTES = 200_000_000;

/** Writes `size` bytes of random-looking content to `path`, each MiB different; returns its SHA-256 (hex). */
function writeLargeFile(path, size) {
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 32) createHash('sha256').update(String(i)).digest().copy(block, i);
  const hash = createHash('sha256');
  const fd = openSync(path, 'w');
  try {
    for (let at = 0, n = 0; at < size; at += block.length, n += 1) {
      block.writeUInt32BE(n, 0);
      const part = block.subarray(0, Math.min(block.length, size - at));
      writeSync(fd, part);
      hash.update(part);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** SHA-256 (hex) of a file, read in chunks. */
function sha256File(path) {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let n; (n = readSync(fd, buf)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

function tinyPdf() {
  const objs = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    null,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  const stream = 'BT /F1 18 Tf 20 70 Td (Discharge letter) Tj ET';
  objs[3] = `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`;
  let pdf = '%PDF-1.4\n';
  const offsets = [];
  objs.forEach((o, i) => {
    offsets.push(pdf.length);
    pdf += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = pdf.length;
  pdf += `xref\n0 ${objs.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) pdf += `${String(off).padStart(10, '0')} 00000 n \n`;
  pdf += `trailer\n<< /Size ${objs.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(pdf, 'latin1');
}

function smallestBundle() {
  const dir = join(SHARED, 'fhir-samples');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => ({ path: join(dir, f), size: statSync(join(dir, f)).size }))
    .sort((a, b) => a.size - b.size);
  assert.ok(files.length > 0, `no FHIR samples in ${dir}`);
  return files[0].path;
}

const observation = {
  resourceType: 'Observation',
  status: 'final',
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '4548-4', display: 'Hemoglobin A1c/Hemoglobin.total in Blood' }], text: 'HbA1c' },
  effectiveDateTime: new Date().toISOString(),
  valueQuantity: { value: 6.1, unit: '%', system: 'http://unitsofmeasure.org', code: '%' },
};

// The policy the relay serves the app with (relay-server's WEB_CSP): the
// story runs under it, so any violation (an inline script, a remote
// request) fails it as a console error.
const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; worker-src blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

const norm = (s) => s.replace(/\s+/g, ' ').trim();

// ---------- the story ----------
async function main() {
  relayUrl = await startRelay();
  log(`relay at ${relayUrl}`);
  const loopback = new Set([new URL(relayUrl).host]);

  // The page the relay serves is the sealed one.
  const expectedHash = readFileSync(join(WEB_DIST, 'bundle-hash.txt'), 'utf8').trim();
  const res = await fetch(`${relayUrl}/`);
  const served = Buffer.from(await res.arrayBuffer());
  assert.equal(createHash('sha256').update(served).digest('hex'), expectedHash, 'served index.html differs from the sealed one');
  log(`bundle hash ${expectedHash}; CSP: ${res.headers.get('content-security-policy') ?? '(none)'}`);

  const context = await chromium.launchPersistentContext(join(tmp, 'chrome'), {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => context.close());
  const problems = [];
  assert.equal(norm(res.headers.get('content-security-policy') ?? ''), norm(CSP), 'the relay serves the app with its Content-Security-Policy');
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  context.on('request', (req) => {
    const u = new URL(req.url());
    if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return;
    const host = u.hostname;
    if (!(loopback.has(u.host) || host === '127.0.0.1' || host === 'localhost' || host === '[::1]')) problems.push(`request to a non-loopback host: ${req.url()}`);
  });
  const page = context.pages()[0] ?? (await context.newPage());
  failurePage = page;
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const whileStopped = relayStoppedAt > relayStartedAt || Date.now() - relayStartedAt < 2_000;
    if (whileStopped && relayStoppedAt > 0 && /net::ERR_CONNECTION_REFUSED/.test(msg.text())) return;
    problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.setDefaultTimeout(30_000);
  const tid = (id) => page.getByTestId(id);
  // Full page up to 2,400 px (long lists are cut); dialogs as the viewport shows them.
  const shot = async (name, { dialog = false } = {}) => {
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    const width = page.viewportSize().width;
    if (dialog) return page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
    return page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, clip: { x: 0, y: 0, width, height: Math.min(height, 2400) } });
  };
  const noAlerts = async (when) => {
    const alerts = await page.locator('[data-testid="alerts"] .alert').allInnerTexts();
    assert.deepEqual(alerts, [], `unexpected alert ${when}: ${alerts.join(' | ')}`);
  };

  // 1. Identity and vault.
  await page.goto(`${relayUrl}/`);
  await tid('create-form').waitFor();
  assert.ok(await tid('boot-message').isHidden(), 'boot message still shown after start');
  await shot('01-welcome-create');
  await tid('create-name').fill('Pat Example');
  await tid('create-passphrase').fill('short');
  await tid('create-passphrase2').fill('short');
  await tid('create-submit').click();
  await page.locator('[data-testid="alerts"] .alert', { hasText: 'too short' }).waitFor();
  await tid('alert-dismiss').click();
  await tid('create-passphrase').fill(PATIENT_PASS);
  await tid('create-passphrase2').fill(PATIENT_PASS);
  await tid('create-submit').click();
  await tid('create-vault-step').waitFor({ timeout: 60_000 });
  log('1. identity created (scrypt 2^18 in the browser)');
  await tid('create-vault').click();
  await tid('view-add').waitFor();
  await noAlerts('after creating the vault');
  log('1. vault created');

  // The identity screen: fingerprint for the clinician's look-up.
  await tid('nav-identity').click();
  const patientHex = (await tid('my-fingerprint-hex').innerText()).trim();
  assert.match(patientHex, /^[0-9a-f]{64}$/);
  const patientDigits = norm(await tid('my-fingerprint').innerText());
  assert.match(patientDigits, /^(\d{5} ){5}\d{5}$/);
  await shot('02-identity');

  // 2. Upload a Synthea bundle and a PDF.
  await tid('nav-add').click();
  const bundle = smallestBundle();
  await tid('upload-input').setInputFiles([
    { name: bundle.split('/').pop(), mimeType: 'application/json', buffer: readFileSync(bundle) },
    { name: 'discharge-letter.pdf', mimeType: 'application/pdf', buffer: tinyPdf() },
  ]);
  assert.equal(await tid('upload-item').count(), 2);
  await tid('upload-start').click();
  // Progress is reported while the bundle is imported.
  await page.waitForFunction(() => {
    const el = document.querySelector('[data-testid="upload-progress-text"]');
    return el && el.textContent && el.textContent.length > 0;
  });
  await tid('import-summary').waitFor({ timeout: 90_000 });
  await tid('upload-file-done').waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector('[data-testid="upload-progress-text"]')?.textContent?.startsWith('Done'));
  assert.equal(await tid('upload-progress').evaluate((el) => el.value), 1);
  const counts = await tid('import-summary-counts').innerText();
  const added = Number(/(\d+) records? added/.exec(counts)?.[1]);
  assert.ok(added > 0, `import added nothing: ${counts}`);
  const summaryRows = await tid('import-summary-row').evaluateAll((rows) => rows.map((r) => [r.cells[0].textContent, Number(r.cells[1].textContent)]));
  const labsRow = summaryRows.find(([name]) => /lab/i.test(name));
  assert.ok(labsRow, `no labs collection in the import: ${JSON.stringify(summaryRows)}`);
  const [labsName, labsCount] = labsRow;
  await noAlerts('after upload');
  await shot('03-upload-summary');
  log(`2. imported ${added} records (${summaryRows.map(([n, c]) => `${n}: ${c}`).join(', ')}) and a PDF`);

  // The health overview: every plotted value is an Observation's value of
  // that code in the bundle, and a point opens its record.
  await tid('nav-overview').click();
  await tid('overview').waitFor();
  const charts = await tid('chart').evaluateAll((els) =>
    els.map((el) => ({
      code: el.dataset.code,
      values: [...el.querySelectorAll('[data-testid="chart-point"]')].map((p) => Number(p.dataset.value)),
    })),
  );
  assert.ok(charts.length > 0, 'the overview charts nothing for a Synthea patient');
  const bundleValues = new Map();
  for (const e of JSON.parse(readFileSync(bundle, 'utf8')).entry ?? []) {
    const r = e.resource;
    if (r?.resourceType !== 'Observation' || ['cancelled', 'entered-in-error'].includes(r.status)) continue;
    if (!r.effectiveDateTime && !r.effectivePeriod?.start && !r.issued) continue;
    for (const part of [r, ...(r.component ?? [])]) {
      const coding = (part.code?.coding ?? []).find((c) => c.code);
      const value = part.valueQuantity?.value;
      if (!coding || typeof value !== 'number') continue;
      const key = `${coding.system ?? ''}|${coding.code}`;
      bundleValues.set(key, [...(bundleValues.get(key) ?? []), value]);
    }
  }
  for (const chart of charts) {
    const expected = (bundleValues.get(chart.code) ?? []).slice().sort((a, b) => a - b);
    assert.deepEqual(chart.values.slice().sort((a, b) => a - b), expected, `chart ${chart.code} plots other values than the bundle's`);
  }
  assert.ok((await tid('overview-conditions-item').count()) + (await tid('overview-immunizations-item').count()) > 0, 'no conditions or immunizations listed');
  await shot('03b-health-overview');
  const point = tid('chart-point').first();
  const pointRecord = await point.getAttribute('data-record-id');
  await point.click();
  await tid('record-detail').waitFor();
  assert.equal(await tid('record-detail').getAttribute('data-record-id'), pointRecord, 'a chart point opened another record');
  log(`2. overview: ${charts.length} charts, values equal to the bundle's Observations`);

  // 2b. SMART Health Links. The patient makes a passcode link to a patient
  // summary and sees its QR code; a reader with no account opens the
  // `#shlink:/` link in another tab: a wrong passcode is counted, the right
  // one shows the summary, whose current conditions are the patient's own
  // overview's. The patient sees who opened it; `vault link open` reads the
  // same link; a direct-file (U) link to a collection opens without a
  // passcode; a revoked link no longer opens.
  await tid('nav-overview').click();
  const currentLists = ['overview-conditions-item', 'overview-medications-item', 'overview-allergies-item', 'overview-immunizations-item'];
  const overviewItems = async (byTid) => Promise.all(currentLists.map(async (id) => (await byTid(id).allInnerTexts()).sort()));
  const mine = await overviewItems(tid);
  assert.ok(mine.some((l) => l.length > 0), 'the patient overview lists nothing to compare the summary with');
  await tid('nav-links').click();
  await tid('link-form').waitFor();
  await tid('links-empty').waitFor();
  await tid('link-what').selectOption('summary');
  await tid('link-label').fill('Summary for the ED');
  await tid('link-passcode').fill('7341-otter');
  assert.ok(await tid('link-direct').isDisabled(), 'a passcode link cannot also be direct (U)');
  await tid('link-create').click();
  await tid('link-made').waitFor({ timeout: 60_000 });
  const shl = (await tid('link-text').inputValue()).trim();
  assert.ok(shl.startsWith(`${relayUrl}/#shlink:/`), `not a viewer link: ${shl}`);
  assert.ok(await tid('link-qr').evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code did not render');
  await tid('link-row').first().waitFor();
  assert.equal(await tid('link-row').count(), 1);
  await noAlerts('after making a link');
  await shot('03c-health-link');

  const reader = await context.newPage();
  reader.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of (401|404)/.test(msg.text())) problems.push(`reader console error: ${msg.text()}`);
  });
  reader.on('pageerror', (err) => problems.push(`reader page error: ${err.message}`));
  reader.setDefaultTimeout(30_000);
  const rtid = (id) => reader.getByTestId(id);
  await reader.goto(shl);
  await rtid('viewer-form').waitFor();
  assert.equal(await rtid('viewer-label').innerText(), 'Summary for the ED');
  assert.equal(await reader.getByTestId('unlock-form').count(), 0, 'the viewer asks for no account');
  await rtid('viewer-recipient').fill('Dr Ed Viewer, St Elsewhere ED');
  await rtid('viewer-passcode').fill('not-the-code');
  await rtid('viewer-open').click();
  await reader.locator('[data-testid="alerts"] .alert', { hasText: '9 attempts remain' }).waitFor();
  await reader.getByTestId('alert-dismiss').click();
  await rtid('viewer-passcode').fill('7341-otter');
  await rtid('viewer-open').click();
  await rtid('viewer-file').waitFor({ timeout: 60_000 });
  assert.deepEqual(await overviewItems(rtid), mine, 'the summary shows other current conditions, medications, allergies or immunizations than the patient sees');
  const sharedResources = await rtid('viewer-resource').count();
  assert.ok(sharedResources > 0, 'the summary lists no resources');
  const sharedConditionCount = await reader.locator('[data-testid="viewer-type"][data-type="Condition"] [data-testid="viewer-resource"]').count();
  await reader.screenshot({ path: join(ARTIFACTS, '03d-health-link-viewer.png'), fullPage: true, clip: { x: 0, y: 0, width: 1280, height: 2400 } });

  // The patient sees the wrong passcode and the opening, with the reader's name.
  await tid('nav-overview').click();
  await tid('nav-links').click();
  await page.waitForFunction(() => document.querySelector('[data-testid="link-accesses"]')?.textContent === '2');
  assert.equal(await tid('link-failed').innerText(), '1 of 10');
  await tid('link-log').click();
  await tid('link-log-list').waitFor();
  const events = await tid('link-log-event').evaluateAll((els) => els.map((e) => [e.dataset.outcome, e.textContent]));
  assert.deepEqual(events.map(([o]) => o), ['wrong_passcode', 'manifest'], JSON.stringify(events));
  assert.ok(events.every(([, t]) => t.includes('Dr Ed Viewer, St Elsewhere ED')), JSON.stringify(events));

  // The command line's viewer reads the same summary.
  const passFile = join(tmp, 'link-passcode.txt');
  writeFileSync(passFile, '7341-otter\n');
  const cliOut = join(tmp, 'link-opened.json');
  await cli(['link', 'open', shl, '--recipient', 'CLI reader', '--passcode-file', passFile, '-o', cliOut]);
  const cliBundle = JSON.parse(readFileSync(cliOut, 'utf8'));
  assert.equal(cliBundle.type, 'document');
  assert.equal(cliBundle.entry[0].resource.resourceType, 'Composition');
  assert.equal(cliBundle.entry.filter((e) => e.resource.resourceType === 'Condition').length, sharedConditionCount);

  // A direct-file (U) link to the labs, no passcode: the open reader tab
  // shows it when the address changes.
  await tid('link-what').selectOption({ label: `Everything in “${labsName}”` });
  await tid('link-direct').check();
  await tid('link-create').click();
  await page.waitForFunction((prev) => {
    const t = document.querySelector('[data-testid="link-text"]');
    return t && t.value && t.value !== prev;
  }, shl);
  const ulink = (await tid('link-text').inputValue()).trim();
  await reader.goto(ulink);
  await rtid('viewer-form').waitFor();
  assert.equal(await rtid('viewer-passcode').count(), 0, 'a U link has no passcode');
  await rtid('viewer-recipient').fill('Dr Lab Reader');
  await rtid('viewer-open').click();
  await rtid('viewer-file').waitFor({ timeout: 60_000 });
  assert.equal(await rtid('viewer-resource').count(), labsCount, 'the labs link shares every labs record');

  // Revoked: the summary link no longer opens.
  await page.locator('[data-testid="link-row"]').last().locator('[data-testid="link-revoke"]').click();
  await tid('link-revoke-dialog-confirm').click();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="link-row"]')].some((r) => r.dataset.status === 'revoked'));
  await reader.goto(shl);
  await rtid('viewer-recipient').fill('Dr Ed Viewer');
  await rtid('viewer-passcode').fill('7341-otter');
  await rtid('viewer-open').click();
  await reader.locator('[data-testid="alerts"] .alert', { hasText: 'no longer active' }).waitFor();
  // A link cut short (copied in part) is refused before any request.
  await reader.getByTestId('alert-dismiss').click();
  await reader.goto(shl.slice(0, -24));
  await rtid('viewer-refused').waitFor();
  await reader.locator('[data-testid="alerts"] .alert', { hasText: 'Not a valid health link' }).waitFor();
  await reader.close();
  await noAlerts('after the health links');
  log(`2b. health links: summary with passcode (${sharedResources} resources) opened with no account after a counted wrong passcode; access record shown; CLI reads it; U link to ${labsCount} labs; revoked and truncated links refused`);

  // The PDF record: detail and download.
  await tid('nav-records').click();
  await page.locator('[data-testid="collection-item"][data-collection-name="documents"]').click();
  await page.locator('[data-testid="record-row"][data-title="discharge-letter.pdf"]').click();
  await tid('record-detail').waitFor();
  assert.match(await tid('record-author-text').innerText(), /Added by you/);
  const [download] = await Promise.all([page.waitForEvent('download'), tid('record-download').click()]);
  const dlPath = join(tmp, 'download.pdf');
  await download.saveAs(dlPath);
  assert.deepEqual(readFileSync(dlPath), tinyPdf(), 'downloaded PDF differs from the uploaded one');
  await tid('record-back').click();

  // 3. A clinician (CLI) and the share.
  await cli(['init', '--name', 'dr-a', '--role', 'clinician', '--work-factor', '15']);
  const identityText = (await cli(['whoami', '--export'])).stdout.trim();
  const who = JSON.parse((await cli(['whoami', '--json'])).stdout);
  assert.match(identityText, /^vault-identity:v1:/);
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  assert.equal(norm(await tid('records-heading').innerText()), labsName);
  assert.equal(await tid('record-row').count(), labsCount);
  await shot('04-records-list');
  await tid('share-collection').click();
  await tid('share-dialog').waitFor();
  await tid('share-identity-text').fill(identityText);
  await tid('share-check-text').click();
  await tid('share-identity-fingerprint').waitFor();
  assert.equal(norm(await tid('share-identity-fingerprint').innerText()), norm(who.fingerprint_digits), 'fingerprint shown differs from the CLI');
  assert.equal(await tid('share-identity-name').innerText(), 'dr-a');
  assert.equal(await tid('share-identity-role').innerText(), 'clinician');
  assert.ok(await tid('share-submit').isDisabled(), 'share allowed before the fingerprint was confirmed');
  await tid('share-confirm-fingerprint').check();
  await tid('share-perm-write').check();
  assert.equal(await tid('share-expiry').inputValue(), '30d');
  await shot('05-share-dialog', { dialog: true });
  await tid('share-submit').click();
  await tid('share-dialog').waitFor({ state: 'detached' });
  await noAlerts('after sharing');
  await tid('nav-access').click();
  const member = page.locator(`[data-testid="access-collection"][data-collection-name="${labsName}"] [data-testid="access-member"][data-name="dr-a"]`);
  await member.waitFor();
  const memberText = norm(await member.innerText());
  assert.match(memberText, /read and write/);
  assert.match(memberText, /in (29|30) days/);
  await shot('06-access-list');
  log(`3. shared "${labsName}" with dr-a (read and write, 30 days)`);

  // 4. The clinician reads the labs.
  await cli(['contacts', 'add', 'patient', '--lookup', patientHex, '--verify', patientHex]);
  const inbox = await cli(['inbox']);
  log(`4. vault inbox:\n${inbox.stdout.trim().split('\n').map((l) => `      ${l}`).join('\n')}`);
  const listed = JSON.parse((await cli(['list', '--vault', 'patient', '--json'])).stdout);
  const records = Array.isArray(listed) ? listed : (listed.records ?? []);
  assert.equal(records.length, labsCount, `clinician sees ${records.length} records, expected the ${labsCount} labs`);
  for (const r of records) {
    assert.equal(r.collection, labsName, `clinician sees a record outside the labs: ${JSON.stringify(r)}`);
  }
  const first = records[0];
  assert.match(first.record, /^[0-9a-f]{32,64}$/);
  const show = await cli(['show', first.record, '--vault', 'patient']);
  assert.ok(show.stdout.includes(first.title), `vault show does not name the record: ${show.stdout}`);
  log(`4. clinician lists ${records.length} lab records; vault show ${first.record.slice(0, 12)}… "${first.title}" ok`);

  // 5. The clinician writes a result back.
  await cli(['add', '-', '-c', labsName, '--title', 'HbA1c result', '--vault', 'patient'], { input: JSON.stringify(observation) });
  log('5. clinician added "HbA1c result"');

  // 6. The patient sees it, with the clinician as verified author.
  await tid('nav-records').click();
  await tid('refresh').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  const row = page.locator('[data-testid="record-row"][data-title="HbA1c result"]');
  await row.waitFor();
  const badge = norm(await row.getByTestId('author-badge').innerText());
  assert.match(badge, /dr-a/);
  assert.match(badge, /clinician/);
  assert.match(badge, /verified/);
  await row.click();
  await tid('record-detail').waitFor();
  assert.match(await tid('record-author-text').innerText(), /dr-a.*clinician/);
  assert.equal(norm(await tid('signature-verified').innerText()), 'Signature verified');
  assert.equal(norm(await tid('record-author-fingerprint').innerText()), norm(who.fingerprint_digits));
  await shot('07-record-detail');
  await tid('nav-timeline').click();
  await tid('timeline').waitFor();
  assert.ok((await page.locator('[data-testid="timeline"] [data-testid="record-row"]').count()) >= added + 2);
  await shot('08-timeline');
  log('6. the patient sees the result written by dr-a, clinician, verified');

  // 7. Revoke dr-a; the CLI is refused.
  await tid('nav-access').click();
  await page.locator('[data-testid="access-person"][data-name="dr-a"]').getByTestId('revoke-everywhere').click();
  await tid('revoke-dialog').waitFor();
  await shot('09-revoke-confirm', { dialog: true });
  await tid('revoke-dialog-confirm').click();
  await tid('revoke-summary').waitFor();
  assert.match(await tid('revoke-summary').innerText(), /1 collection key rotated/);
  await tid('access-empty').waitFor();
  await noAlerts('after revoking');
  const refused = await cli(['list', '--vault', 'patient'], { allowFail: true });
  assert.equal(refused.code, 4, `after revocation vault list should exit 4 (access denied), got ${refused.code}: ${refused.stderr}`);
  log(`7. revoked; vault list --vault patient exits 4: ${refused.stderr.trim().split('\n')[0]}`);

  // 7b. Read-and-add: dr-a may add records to the labs again, but not
  // delete or replace the patient's.
  await tid('nav-records').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  await tid('share-collection').click();
  await tid('share-dialog').waitFor();
  await tid('share-identity-text').fill(identityText);
  await tid('share-check-text').click();
  await tid('share-identity-fingerprint').waitFor();
  await tid('share-confirm-fingerprint').check();
  await tid('share-perm-add').check();
  await tid('share-submit').click();
  await tid('share-dialog').waitFor({ state: 'detached' });
  await noAlerts('after sharing read-and-add');
  await tid('nav-access').click();
  const adder = page.locator(`[data-testid="access-collection"][data-collection-name="${labsName}"] [data-testid="access-member"][data-name="dr-a"]`);
  await adder.waitFor();
  assert.match(norm(await adder.innerText()), /read and add/);
  await cli(['add', '-', '-c', labsName, '--title', 'Clinic note', '--vault', 'patient'], { input: JSON.stringify(observation) });
  const notMine = await cli(['delete', first.record, '--vault', 'patient'], { allowFail: true });
  assert.equal(notMine.code, 4, `a read-and-add member deleting the patient's record should exit 4, got ${notMine.code}: ${notMine.stderr}`);
  log('7b. shared the labs again as read-and-add: dr-a adds "Clinic note", and is refused deleting the patient\'s record');

  // 7b'. dr-a lists a laptop and then removes it (docs/format.md §8.12,
  // decision 70): her list, carried into the labs, moves to a generation
  // the laptop lacks. The page re-keys the labs on its own at its next
  // refresh (as `vault sync` does) and says so; dr-a still reads them.
  const drLaptopHome = join(tmp, 'dr-laptop');
  const drLaptop = (args, opts = {}) => cli(args, { ...opts, home: drLaptopHome });
  await drLaptop(['init', '--name', 'dr-laptop', '--role', 'device', '--work-factor', '15']);
  await drLaptop(['whoami', '--publish', '--no-qr']);
  const drLaptopHex = JSON.parse((await drLaptop(['whoami', '--json'])).stdout).fingerprint;
  // Each list change (her first list, then the removal) is re-keyed at
  // the page's next refresh; the status is cleared before each refresh so
  // that the second message is the second re-keying's.
  const rekeyedOnRefresh = async () => {
    await page.evaluate(() => {
      document.querySelector('[data-testid="status"]').textContent = '';
    });
    await tid('refresh').click();
    await page.waitForFunction(() => /Re-keyed 1 collection after a device list changed/.test(document.querySelector('[data-testid="status"]')?.textContent ?? ''), null, { timeout: 60_000 });
  };
  await tid('nav-records').click();
  await cli(['devices', 'add', drLaptopHex]);
  await rekeyedOnRefresh();
  const drRemoved = JSON.parse((await cli(['--json', 'devices', 'remove', drLaptopHex])).stdout);
  assert.equal(drRemoved.carried?.[0]?.collections?.length, 1, `dr-a's removal was not carried into the labs alone: ${JSON.stringify(drRemoved)}`);
  await rekeyedOnRefresh();
  await noAlerts('after re-keying on its own');
  await cli(['add', '-', '-c', labsName, '--title', 'After the re-keying', '--vault', 'patient'], { input: 'Written under the new key.' });
  const drStillReads = JSON.parse((await cli(['list', '--vault', 'patient', '--json'])).stdout);
  assert.ok(drStillReads.some((r) => r.title === 'After the re-keying'), `dr-a does not read the labs after the re-keying: ${JSON.stringify(drStillReads).slice(0, 300)}`);
  log("7b'. dr-a listed a laptop, then removed it; after each, the page re-keyed the labs on its own at its refresh; dr-a writes and reads them under the new key");

  // 7c. The patient deletes the PDF for good (purge): gone from the list.
  await tid('nav-records').click();
  await tid('refresh').click();
  await page.locator('[data-testid="collection-item"][data-collection-name="documents"]').click();
  await page.locator('[data-testid="record-row"][data-title="discharge-letter.pdf"]').click();
  await tid('record-detail').waitFor();
  await tid('record-delete').click();
  await tid('delete-dialog').waitFor();
  await tid('record-delete-purge').check();
  await tid('delete-dialog-confirm').click();
  await tid('delete-dialog').waitFor({ state: 'detached' });
  await page.waitForFunction(() => /Deleted “discharge-letter\.pdf” and destroyed \d+ version/.test(document.getElementById('status')?.textContent ?? ''));
  await noAlerts('after deleting the PDF');
  // The app reloads the vault after a deletion and then leaves the record's
  // page: navigate only once it has (a click during that re-render can land
  // on another part of the page).
  await tid('record-detail').waitFor({ state: 'detached' });
  await tid('nav-timeline').click();
  await tid('timeline').waitFor();
  assert.equal(await page.locator('[data-testid="timeline"] [data-testid="record-row"][data-title="discharge-letter.pdf"]').count(), 0, 'the deleted PDF is still listed');
  log('7c. the patient deleted and purged the PDF');

  // 7d. A hospital's gateway with deposit rights ("Add only, read
  // nothing"): it adds a result the patient sees with its verified name,
  // and reads nothing, not even what it added.
  const labHome = join(tmp, 'lab-gateway');
  const lab = (args, opts = {}) => cli(args, { ...opts, home: labHome });
  await lab(['init', '--name', "St Mary's lab", '--role', 'clinician', '--work-factor', '15']);
  const labIdentity = (await lab(['whoami', '--export'])).stdout.trim();
  await tid('nav-records').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  await tid('share-collection').click();
  await tid('share-dialog').waitFor();
  await tid('share-identity-text').fill(labIdentity);
  await tid('share-check-text').click();
  await tid('share-identity-fingerprint').waitFor();
  await tid('share-confirm-fingerprint').check();
  await tid('share-perm-deposit').check();
  await tid('share-submit').click();
  await tid('share-dialog').waitFor({ state: 'detached' });
  await noAlerts('after granting deposit rights');
  await lab(['contacts', 'add', 'patient', '--lookup', patientHex, '--verify', patientHex]);
  const labInbox = JSON.parse((await lab(['inbox', '--json'])).stdout);
  const depositColl = labInbox[0].collections.find((c) => c.permission === 'deposit');
  assert.ok(depositColl, `the gateway's inbox shows no deposit collection: ${JSON.stringify(labInbox)}`);
  const deposited = JSON.parse(
    (await lab(['add', '-', '-c', depositColl.id, '--title', 'Potassium', '--vault', 'patient', '--json'], { input: JSON.stringify(observation) })).stdout,
  );
  const labRead = await lab(['show', deposited[0].record, '--vault', 'patient'], { allowFail: true });
  assert.equal(labRead.code, 4, `the gateway reading its own deposit should exit 4, got ${labRead.code}: ${labRead.stderr}`);
  await tid('refresh').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  const depositRow = page.locator('[data-testid="record-row"][data-title="Potassium"]');
  await depositRow.waitFor();
  const depositBadge = norm(await depositRow.getByTestId('author-badge').innerText());
  assert.match(depositBadge, /St Mary's lab/);
  assert.match(depositBadge, /verified/);
  log("7d. St Mary's lab (deposit only) added \"Potassium\"; the patient sees it, verified; the lab cannot read it (exit 4)");

  // 7e. An agent (docs/format.md §8.10): the patient names Jane Doe (CLI)
  // to act for her in the labs, adding and sharing; Jane's note shows as
  // written on the patient's behalf; ending the agency refuses her.
  const agentHome = join(tmp, 'agent-jane');
  const jane = (args, opts = {}) => cli(args, { ...opts, home: agentHome });
  await jane(['init', '--name', 'Jane Doe', '--public-name', 'Jane Doe', '--role', 'patient', '--work-factor', '15']);
  const janeIdentity = (await jane(['whoami', '--export'])).stdout.trim();
  await tid('nav-records').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  await tid('share-collection').click();
  await tid('share-dialog').waitFor();
  await tid('share-identity-text').fill(janeIdentity);
  await tid('share-check-text').click();
  await tid('share-identity-fingerprint').waitFor();
  await tid('share-confirm-fingerprint').check();
  await tid('share-perm-agent').check();
  await tid('agent-powers').waitFor();
  await tid('agent-power-add').check();
  await tid('agent-power-share').check();
  await shot('10b-agent-dialog', { dialog: true });
  await tid('share-submit').click();
  await tid('share-dialog').waitFor({ state: 'detached' });
  await noAlerts('after naming an agent');
  await tid('nav-access').click();
  const agentRow = page.locator(`[data-testid="access-collection"][data-collection-name="${labsName}"] [data-testid="access-member"][data-name="Jane Doe"]`);
  await agentRow.waitFor();
  assert.match(norm(await agentRow.getByTestId('access-permission').innerText()), /agent: read,add,share/);
  await jane(['contacts', 'add', 'patient', '--lookup', patientHex, '--verify', patientHex]);
  await jane(['add', '-', '-c', labsName, '--title', 'Call notes', '--vault', 'patient'], { input: 'Spoke with the GP.' });
  const janeAgents = JSON.parse((await jane(['agents', 'list', '--vault', 'patient', '--json'])).stdout);
  assert.equal(janeAgents[0].powers, 'read,add,share', `Jane's view of her agency: ${JSON.stringify(janeAgents)}`);
  await tid('nav-records').click();
  await tid('refresh').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  const agentNote = page.locator('[data-testid="record-row"][data-title="Call notes"]');
  await agentNote.waitFor();
  const agentBadge = norm(await agentNote.getByTestId('author-badge').innerText());
  assert.match(agentBadge, /Written by Jane Doe on your behalf \(your agent\)/);
  await tid('nav-access').click();
  await agentRow.getByTestId('end-agency').click();
  await tid('revoke-dialog').waitFor();
  assert.match(await tid('revoke-dialog').innerText(), /What they did as your agent stays/);
  await tid('revoke-dialog-confirm').click();
  await tid('revoke-summary').waitFor();
  await noAlerts('after ending the agency');
  assert.equal(await agentRow.count(), 0, 'the ended agent is still listed');
  const janeRefused = await jane(['list', '--vault', 'patient'], { allowFail: true });
  assert.equal(janeRefused.code, 4, `an ended agent listing should exit 4, got ${janeRefused.code}: ${janeRefused.stderr}`);
  log(`7e. Jane Doe named agent (read, add, share) from the page; her note shows "${agentBadge}"; agency ended from the page, her vault list exits 4`);

  // 7f. A second device (docs/format.md §8.11, decision 67), paired by a
  // compared code (§3.8, decision 72): the page shows a code, a CLI profile
  // of role device joins with it, each screen's 8 digits are typed on the
  // other; the laptop reads the labs and writes into them as the patient;
  // removed from the page, the relay refuses it.
  const laptopHome = join(tmp, 'device-laptop');
  const laptop = (args, opts = {}) => cli(args, { ...opts, home: laptopHome });
  await laptop(['init', '--name', 'laptop', '--role', 'device', '--work-factor', '15']);
  await tid('nav-access').click();
  await tid('devices-empty').waitFor();
  // A code whose page is left (here reloaded) stops working at once: the
  // page closes its pairing on the way out (pagehide, a keepalive request).
  await tid('device-pair').click();
  const leftCode = norm(await tid('device-pair-command').innerText()).split(' ').slice(3);
  await page.reload();
  await tid('unlock-passphrase').fill(PATIENT_PASS);
  await tid('unlock-submit').click();
  await tid('overview').waitFor({ timeout: 60_000 });
  // (Were the code still open, the laptop would join and wait for the
  // page: that outcome is reported, and the laptop stopped, not waited out.)
  const leftJoin = cliInteractive(['devices', 'join', ...leftCode, '--contact', 'patient'], { home: laptopHome });
  const leftOutcome = await Promise.race([
    leftJoin.done.then(() => 'the join succeeded', (e) => e.message),
    leftJoin.waitFor(/Joined\. Waiting/).then(() => 'the laptop joined a code whose page was left', (e) => e.message),
  ]);
  leftJoin.kill();
  assert.match(leftOutcome, /no pairing with this code is open/, leftOutcome);
  await tid('nav-access').click();
  await tid('devices-empty').waitFor();
  await tid('device-pair').click();
  const pairCommand = norm(await tid('device-pair-command').innerText());
  assert.match(pairCommand, /^vault devices join \d{5} \d{5}$/, pairCommand);
  const joining = cliInteractive(['--json', 'devices', 'join', ...pairCommand.split(' ').slice(3), '--contact', 'patient'], { home: laptopHome });
  const laptopShows = (await joining.waitFor(/This device shows:\s+(\d{4} \d{4})/))[1];
  await tid('device-pair-compared').waitFor();
  const pageShows = norm(await tid('device-pair-compared').innerText());
  assert.equal(pageShows, laptopShows, 'the page and the laptop show different digits');
  await tid('device-pair-typed').fill(laptopShows);
  await tid('device-pair-confirm').click();
  joining.answer(pageShows);
  const laptopRow = page.locator('[data-testid="device"][data-name="laptop"]');
  await laptopRow.waitFor();
  await noAlerts('after pairing a device');
  const joinedLaptop = JSON.parse((await joining.done).stdout);
  assert.equal(joinedLaptop.listed, 'owner', `the laptop's pairing: ${JSON.stringify(joinedLaptop)}`);
  assert.equal(joinedLaptop.person, patientHex, `the laptop paired for ${JSON.stringify(joinedLaptop)}`);
  await laptop(['add', '-', '-c', labsName, '--title', 'From the laptop', '--vault', 'patient'], { input: 'Written on the laptop.' });
  const laptopDevices = JSON.parse((await laptop(['devices', 'list', '--vault', 'patient', '--json'])).stdout);
  assert.equal(laptopDevices.devices[0].this_device, true, `the laptop's view of the devices: ${JSON.stringify(laptopDevices)}`);
  await tid('nav-records').click();
  await tid('refresh').click();
  await page.locator('[data-testid="collection-item"]', { hasText: labsName }).first().click();
  const laptopNote = page.locator('[data-testid="record-row"][data-title="From the laptop"]');
  await laptopNote.waitFor();
  const laptopBadge = norm(await laptopNote.getByTestId('author-badge').innerText());
  assert.match(laptopBadge, /Written by laptop \(your device\)/);
  await tid('nav-access').click();
  await laptopRow.getByTestId('device-remove').click();
  await tid('device-remove-dialog').waitFor();
  await tid('device-remove-dialog-confirm').click();
  await tid('revoke-summary').waitFor();
  await noAlerts('after removing a device');
  assert.equal(await laptopRow.count(), 0, 'the removed device is still listed');
  const laptopRefused = await laptop(['list', '--vault', 'patient'], { allowFail: true });
  assert.equal(laptopRefused.code, 4, `a removed device listing should exit 4, got ${laptopRefused.code}: ${laptopRefused.stderr}`);
  log(`7f. A code whose page was reloaded no longer works; a CLI laptop paired from the page (both screens showed ${pageShows}); its note shows "${laptopBadge}"; removed from the page, its vault list exits 4`);

  // 7g. The key file takes the list back (`vault devices recover`,
  // decision 68): the page keeps the laptop it removed in 7f; the laptop
  // reads again and its note is still there.
  await tid('devices-recover').click();
  await tid('devices-recover-dialog').waitFor();
  await page.locator('[data-testid="devices-recover-keep"][data-name="laptop"]').check();
  await tid('devices-recover-dialog-confirm').click();
  await laptopRow.waitFor();
  await noAlerts('after taking the device list back');
  const recoveredText = norm(await tid('revoke-summary').innerText());
  assert.match(recoveredText, /Took your device list back: only “laptop” acts for you now/, recoveredText);
  const laptopBack = JSON.parse((await laptop(['list', '--vault', 'patient', '--json'])).stdout);
  assert.ok(
    laptopBack.some((r) => r.title === 'From the laptop'),
    `the laptop, kept, does not list its note: ${JSON.stringify(laptopBack)}`,
  );
  log(`7g. The page took its device list back keeping the laptop: "${recoveredText.slice(0, 80)}…"; the laptop lists the vault again`);

  // 7h. The reverse (issue 17): a browser as a device of a key file on the
  // command line. Another browser (its own storage) creates a device
  // identity; `vault devices add` lists it; it finds the vault, reads the
  // key file's record and writes one the key file sees as its device's;
  // removed, it is refused.
  const keyHome = join(tmp, 'key-file');
  const keyCli = (args, opts = {}) => cli(args, { ...opts, home: keyHome });
  await keyCli(['init', '--name', 'Sam Sample', '--role', 'patient', '--work-factor', '15']);
  await keyCli(['create']);
  await keyCli(['add', '-', '-c', 'notes', '--title', 'From the key file'], { input: 'Written with the key file.' });
  const other = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
  cleanups.push(() => other.close());
  const devicePage = await (await other.newContext({ acceptDownloads: true })).newPage();
  devicePage.setDefaultTimeout(30_000);
  devicePage.on('pageerror', (err) => problems.push(`device page error: ${err.message}`));
  const dtid = (id) => devicePage.getByTestId(id);
  await devicePage.goto(`${relayUrl}/`);
  await dtid('create-form').waitFor();
  await dtid('create-name').fill('Sam on this browser');
  await dtid('create-role-device').check();
  await dtid('create-passphrase').fill(PATIENT_PASS);
  await dtid('create-passphrase2').fill(PATIENT_PASS);
  await dtid('create-submit').click();
  await dtid('device-waiting').waitFor({ timeout: 60_000 });
  const browserHex = (await dtid('device-own-fingerprint-hex').innerText()).trim();
  assert.match(browserHex, /^[0-9a-f]{64}$/);
  assert.equal(norm(await dtid('device-add-command').innerText()), `vault devices add ${browserHex}`);
  // The browser acts only for the person the user names on it: before the
  // key file lists it, checking finds nothing (and shows whom it pinned).
  const keyHex = JSON.parse((await keyCli(['whoami', '--json'])).stdout).fingerprint;
  await dtid('device-person').fill(keyHex);
  await dtid('device-check').click();
  await dtid('device-person-shown').waitFor();
  assert.match(norm(await dtid('device-person-shown').innerText()), /acts for “Patient”, whose fingerprint is: (\d{5} ){5}\d{5}/);
  await devicePage.screenshot({ path: join(ARTIFACTS, '07h-device-waiting.png'), fullPage: true });
  // Anyone can list a published device in a vault of their own: the
  // browser never joins a vault whose owner is not the person pinned on it.
  const strangerHome = join(tmp, 'stranger');
  const stranger = (args, opts = {}) => cli(args, { ...opts, home: strangerHome });
  await stranger(['init', '--name', 'Stranger', '--role', 'patient', '--work-factor', '15']);
  await stranger(['create']);
  await stranger(['devices', 'add', browserHex]);
  await dtid('device-check').click();
  // The check has run when its button is enabled again (or gone, if the
  // page left the waiting view).
  await devicePage.waitForFunction(() => !document.querySelector('[data-testid="device-check"][disabled]'));
  assert.equal(await dtid('device-waiting').count(), 1, 'the browser joined a stranger’s vault that listed it');
  // The key file pairs it by a compared code (§3.8): the browser types the
  // code `vault devices pair` shows, and each screen's digits on the other.
  const pairing = cliInteractive(['--json', 'devices', 'pair'], { home: keyHome });
  const keyCode = (await pairing.waitFor(/vault devices join (\d{5} \d{5})/))[1];
  await dtid('device-join-code').fill(keyCode);
  await dtid('device-join-submit').click();
  const keyShows = (await pairing.waitFor(/This device shows:\s+(\d{4} \d{4})/))[1];
  await dtid('device-join-compared').waitFor();
  const browserShows = norm(await dtid('device-join-compared').innerText());
  assert.equal(browserShows, keyShows, 'the browser and the key file show different digits');
  pairing.answer(browserShows);
  await dtid('device-join-typed').fill(keyShows);
  await dtid('device-join-confirm').click();
  const listedBrowser = JSON.parse((await pairing.done).stdout);
  assert.equal(listedBrowser.name, 'browser', `the key file listed ${JSON.stringify(listedBrowser)}`);
  const deviceAlerts = devicePage.locator('[data-testid="alerts"] .alert');
  await dtid('device-waiting').waitFor({ state: 'detached' }).catch(async (e) => {
    throw new Error(`the device page still waits: ${(await deviceAlerts.allInnerTexts()).join(' | ') || e.message}`);
  });
  await dtid('nav-records').click();
  const keyFileNote = devicePage.locator('[data-testid="record-row"][data-title="From the key file"]');
  await keyFileNote.waitFor();
  // Its title is sealed in the record: listing it means the browser opened it.
  assert.equal(await keyFileNote.getByTestId('author-badge').count(), 0, 'a record of the key file is the person’s own: no author badge');
  await dtid('nav-add').click();
  await dtid('upload-input').setInputFiles([{ name: 'browser-note.txt', mimeType: 'text/plain', buffer: Buffer.from('Written in the browser device.') }]);
  await dtid('upload-start').click();
  await dtid('upload-file-done').waitFor({ timeout: 30_000 });
  const keyList = JSON.parse((await keyCli(['list', '--json'])).stdout);
  const fromBrowser = keyList.find((r) => r.author === browserHex);
  assert.ok(fromBrowser, `the key file does not list the browser's record: ${JSON.stringify(keyList)}`);
  assert.equal(fromBrowser.author_name, 'browser (your device)');
  const opened = await keyCli(['open', fromBrowser.record.slice(0, 8), '-o', '-']);
  assert.equal(opened.stdout, 'Written in the browser device.');
  await dtid('nav-vault').click();
  await dtid('export-elsewhere').waitFor();
  await keyCli(['devices', 'remove', browserHex.slice(0, 8)]);
  await dtid('nav-records').click();
  await dtid('refresh').click();
  const refusedAlert = deviceAlerts.first();
  await refusedAlert.waitFor();
  const refusedText = norm(await refusedAlert.innerText());
  assert.match(refusedText, /Access denied/, refusedText);
  log(`7h. A browser created as a device of a command-line key file; paired with \`vault devices pair\` (both screens showed ${keyShows}), it read the key file's note and wrote one the key file names "${fromBrowser.author_name}"; removed, the page says "${refusedText.slice(0, 70)}…"`);
  await other.close();

  // 8. About / integrity, vault screen, phone width.
  await tid('nav-about').click();
  await page.waitForFunction((h) => document.querySelector('[data-testid="bundle-hash"]')?.textContent === h, expectedHash);
  await shot('10-about-integrity');
  await tid('nav-vault').click();
  const code = (await tid('checkpoint-code').innerText()).trim();
  await tid('checkpoint-input').fill(code);
  await tid('checkpoint-compare').click();
  await page.locator('[data-testid="checkpoint-result"] .inline-ok').waitFor();
  await shot('11-vault-checkpoint-export');
  // The export: a tar of standard age files, the sealed key file and the
  // README, with one file per record and nothing readable in its names.
  const [exported] = await Promise.all([page.waitForEvent('download', { timeout: 60_000 }), tid('export-vault').click()]);
  const tarPath = join(tmp, 'export.tar');
  await exported.saveAs(tarPath);
  const listing = execFileSync('tar', ['-tf', tarPath], { encoding: 'utf8' }).trim().split('\n');
  for (const f of ['identity.vault.age', 'README.txt', 'fhir-bundle.json.age', 'manifest.json.age']) {
    assert.ok(listing.includes(`vault-export/${f}`), `export lacks ${f}: ${listing.join(', ')}`);
  }
  const recordFiles = listing.filter((f) => f.startsWith('vault-export/records/') && f.endsWith('.age'));
  // The import, dr-a's three results, the lab's deposit, the agent's note
  // and the laptop's (the PDF was purged).
  assert.equal(recordFiles.length, added + 6, `export holds ${recordFiles.length} record files, expected ${added + 6}`);
  assert.ok(recordFiles.every((f) => /^vault-export\/records\/[0-9a-f]{32}\/[0-9a-f]{32}\.[a-z0-9]+\.age$/.test(f)), 'export paths carry ids only');
  const exportDir = join(tmp, 'export');
  mkdirSync(exportDir);
  execFileSync('tar', ['-xf', tarPath, '-C', exportDir]);
  for (const f of ['fhir-bundle.json.age', 'manifest.json.age', 'identity.vault.age', recordFiles[0].slice('vault-export/'.length)]) {
    const head = readFileSync(join(exportDir, 'vault-export', f)).subarray(0, 22).toString('latin1');
    assert.equal(head, 'age-encryption.org/v1\n', `${f} is not an age file`);
  }
  log(`export: ${listing.length} files, ${recordFiles.length} records as age files, sealed key file and README`);
  await page.setViewportSize({ width: 375, height: 800 });
  for (const view of ['records', 'timeline', 'access', 'identity', 'add']) {
    await tid(`nav-${view}`).click();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `horizontal scroll at 375 px on ${view}: ${overflow}px`);
  }
  await tid('nav-records').click();
  await shot('12-phone-records');

  // Lock, then unlock with a wrong and then the right passphrase (snapshot restored).
  await tid('lock').click();
  await tid('unlock-form').waitFor();
  await tid('unlock-passphrase').fill('not the passphrase');
  await tid('unlock-submit').click();
  await page.locator('[data-testid="alerts"] .alert', { hasText: 'Wrong passphrase' }).waitFor({ timeout: 60_000 });
  await tid('alert-dismiss').click();
  await tid('unlock-passphrase').fill(PATIENT_PASS);
  await tid('unlock-submit').click();
  // The first screen after unlock is the health overview.
  await tid('overview').waitFor({ timeout: 60_000 });
  await tid('nav-records').click();
  await tid('record-list').waitFor({ timeout: 60_000 });
  await shot('13-unlocked-again');
  log('8. screenshots saved, lock/unlock ok');

  // 9. The relay's operator restores it from an older backup: the page
  // reports a rollback and, with the patient's consent, repairs the relay
  // from what it verified and holds (decision 53).
  const stopRelay = async () => {
    const exited = new Promise((r) => relayProcess.once('exit', r));
    relayStoppedAt = Date.now();
    relayProcess.kill('SIGTERM');
    await exited;
  };
  const listen = new URL(relayUrl).host;
  const relayDir = join(tmp, 'relay');
  const backupDir = join(tmp, 'relay-backup');
  await stopRelay();
  cpSync(relayDir, backupDir, { recursive: true });
  await startRelay(listen);
  await tid('nav-add').click();
  await tid('upload-input').setInputFiles([{ name: 'after-backup.pdf', mimeType: 'application/pdf', buffer: tinyPdf() }]);
  await tid('upload-start').click();
  await tid('upload-file-done').waitFor({ timeout: 30_000 });
  await noAlerts('after adding a record past the backup');
  await stopRelay();
  rmSync(relayDir, { recursive: true, force: true });
  cpSync(backupDir, relayDir, { recursive: true });
  await startRelay(listen);
  await tid('nav-records').click();
  await tid('refresh').click();
  const rollback = page.locator('[data-testid="alert-tamper"]', { hasText: 'rollback' });
  await rollback.waitFor({ timeout: 60_000 });
  assert.match(await rollback.innerText(), /restored from a backup/);
  await shot('16-rollback-repair-offered');
  await rollback.getByTestId('repair').click();
  await tid('repair-dialog').waitFor();
  await tid('repair-dialog-confirm').click();
  await page.waitForFunction(() => /Repaired the relay/.test(document.querySelector('[data-testid="status"]')?.textContent ?? ''), null, { timeout: 60_000 });
  const repaired = await page.getByTestId('status').innerText();
  assert.match(repaired, /\(1 entry, 1 encrypted record uploaded again\)/, `repair summary: ${repaired}`);
  await noAlerts('after the repair');
  await page.locator('[data-testid="record-row"][data-title="after-backup.pdf"]').waitFor();
  // The repaired relay serves the whole history: a fresh unlock verifies it
  // from the saved snapshot without a rollback, and the record opens.
  await tid('lock').click();
  await tid('unlock-passphrase').fill(PATIENT_PASS);
  await tid('unlock-submit').click();
  await tid('overview').waitFor({ timeout: 60_000 });
  await tid('nav-records').click();
  await page.locator('[data-testid="record-row"][data-title="after-backup.pdf"]').click();
  await tid('record-detail').waitFor();
  await noAlerts('after unlocking on the repaired relay');
  await tid('nav-records').click();
  await tid('record-list').waitFor();
  log(`9. relay restored from an older backup: rollback reported, repaired from the page (${repaired.trim()}), the record opens after a fresh unlock`);

  // 10. A 200 MB file is sealed in the worker (decision 56) into a spool
  // file on the browser's disk and uploaded from it (decision 64; deleted
  // after): the page answers input within 100 ms throughout the sealing,
  // and the record downloads back byte for byte, opened in the worker. Then, in a browser
  // that refuses the worker, a file is sealed and opened on the page
  // instead (the fallback), and the page stalls.
  const secs = (ms) => (ms / 1000).toFixed(1);
  const inWorker = await addProbed('scan-200mb.bin', LARGE_FILE_BYTES, 'imaging', { twice: true });
  const worst = (p, phase) => Math.max(0, ...p.keys.filter(([k]) => k === phase).map(([, d]) => d));
  assert.ok(inWorker.probe.spooled, 'the 200 MB file was not sealed into a spool file on disk (decision 64)');
  assert.equal(inWorker.bodies, 1, 'the 200 MB record was not opened from a spool into one body file (downloaded twice)');
  const keysWhileSealing = inWorker.probe.keys.filter(([k]) => k === 'sealing').length;
  assert.ok(keysWhileSealing >= 5, `only ${keysWhileSealing} key presses landed while sealing: ${JSON.stringify(inWorker.probe)}`);
  assert.ok(worst(inWorker.probe, 'sealing') < 100, `a key press waited ${worst(inWorker.probe, 'sealing').toFixed(0)} ms while the file was sealed`);
  assert.ok((inWorker.probe.gaps.sealing ?? 0) < 100, `the page's event loop stalled ${inWorker.probe.gaps.sealing?.toFixed(0)} ms while the file was sealed`);
  // Opening in the worker: the page's longest stall is making the
  // download's Blob (about 100 ms); decrypting 200 MB on the page takes
  // seconds.
  assert.ok(inWorker.openProbe.gap < 400, `the page's event loop stalled ${inWorker.openProbe.gap.toFixed(0)} ms while the 200 MB record was opened`);
  log(
    `10. 200 MB file: sealed in the worker in ${secs(inWorker.sealMs)} s, uploaded in ${secs(inWorker.uploadMs)} s; ` +
      `worst key-press delay ${worst(inWorker.probe, 'sealing').toFixed(0)} ms sealing, ${worst(inWorker.probe, 'uploading').toFixed(0)} ms uploading (${inWorker.probe.keys.length} presses); ` +
      `longest event-loop gap ${(inWorker.probe.gaps.sealing ?? 0).toFixed(0)} ms sealing, ${(inWorker.probe.gaps.uploading ?? 0).toFixed(0)} ms uploading; ` +
      `downloaded and opened in ${secs(inWorker.openMs)} s (worst key-press delay ${inWorker.openProbe.worstKey.toFixed(0)} ms of ${inWorker.openProbe.presses}, longest gap ${inWorker.openProbe.gap.toFixed(0)} ms), identical`,
  );
  // A file over the 512 MiB the app once held in memory: sealed into a
  // spool file on disk, uploaded from it, and back byte for byte.
  const huge = await addProbed('scan-600mib.bin', 600 << 20, 'imaging-large');
  assert.ok(huge.probe.spooled, 'the 600 MiB file was not sealed into a spool file on disk');
  assert.equal(huge.bodies, 1, 'the 600 MiB record was not opened from a spool into a body file');
  log(
    `10. 600 MiB file (over the old 512 MiB limit): sealed into a spool file in ${secs(huge.sealMs)} s, uploaded in ${secs(huge.uploadMs)} s, ` +
      `downloaded into a spool and opened into a body file in ${secs(huge.openMs)} s, identical; no spool file left`,
  );
  // A browser without the private file system cannot spool: a file over
  // 512 MiB is refused as it is picked, naming the command line, and
  // nothing is queued.
  const tooLarge = join(tmp, 'too-large.bin');
  writeFileSync(tooLarge, '');
  truncateSync(tooLarge, 600 << 20);
  await page.evaluate(() => {
    navigator.storage.getDirectory = undefined;
  });
  await tid('nav-add').click();
  await tid('upload-input').setInputFiles(tooLarge);
  const refusedLarge = page.locator('[data-testid="alerts"] .alert', { hasText: 'File too large for this browser' });
  await refusedLarge.waitFor();
  assert.match(await refusedLarge.innerText(), /up to 512(\.0)? MiB.*vault command line/s);
  assert.equal(await page.locator('[data-testid="upload-item"][data-file="too-large.bin"]').count(), 0, 'a file the browser cannot add was queued');
  await refusedLarge.getByTestId('alert-dismiss').click();
  await page.evaluate(() => {
    delete navigator.storage.getDirectory;
  });
  rmSync(tooLarge);
  log('10. without the private file system, a 600 MiB file is refused as it is picked, naming the command line');
  // A worker that starts and then never answers: the page stops it once it
  // has been silent for 20 s (WORKER_SILENCE_MS in src/payloads.ts), says
  // so, and stores nothing.
  await page.evaluate(() => {
    window.__worker = window.Worker;
    window.__stalled = { jobs: 0, terminated: 0 };
    window.Worker = class {
      postMessage(m) {
        if (m && m.module) setTimeout(() => this.onmessage?.(new MessageEvent('message', { data: { ready: true } })), 0);
        else window.__stalled.jobs += 1;
      }
      terminate() {
        window.__stalled.terminated += 1;
      }
    };
  });
  await tid('nav-add').click();
  await tid('upload-collection').fill('imaging');
  await tid('upload-input').setInputFiles([{ name: 'stalled.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(100_000, 7) }]);
  const stallStart = Date.now();
  await tid('upload-start').click();
  const stalled = page.locator('[data-testid="alerts"] .alert', { hasText: 'Encryption stopped responding' });
  await stalled.waitFor({ timeout: 60_000 });
  const stallMs = Date.now() - stallStart;
  assert.match(await stalled.innerText(), /nothing was stored/);
  assert.deepEqual(await page.evaluate(() => window.__stalled), { jobs: 1, terminated: 1 }, 'the stalled worker got the job once and was stopped');
  await stalled.getByTestId('alert-dismiss').click();
  await page.evaluate(() => {
    window.Worker = window.__worker;
  });
  await tid('nav-records').click();
  await page.locator('[data-testid="collection-item"][data-collection-name="imaging"]').click();
  await tid('record-row').first().waitFor();
  assert.equal(await page.locator('[data-testid="record-row"][data-title="stalled.bin"]').count(), 0, 'a record sealed by a stalled worker was stored');
  log(`10. a worker that never answered was stopped after ${secs(stallMs)} s of silence; the page said so and stored nothing`);
  // A browser whose policy refuses the worker: it is constructed, then
  // fails with an error event before it runs (as a CSP refusal does).
  await page.evaluate(() => {
    window.__worker = window.Worker;
    window.Worker = class {
      constructor() {
        setTimeout(() => this.onerror?.(new ErrorEvent('error', { message: 'refused by the test' })), 0);
      }
      postMessage() {}
      terminate() {}
    };
  });
  const onPage = await addProbed('scan-20mb.bin', 20_000_000, 'scans');
  assert.equal(onPage.bodies, 0, 'a 20 MB record opened on the page made a body file');
  await page.evaluate(() => {
    window.Worker = window.__worker;
  });
  log(
    `10. with the worker refused, a 20 MB file sealed on the page in ${secs(onPage.sealMs)} s (longest event-loop gap ${(onPage.probe.gaps.sealing ?? 0).toFixed(0)} ms), opened on the page (longest gap ${onPage.openProbe.gap.toFixed(0)} ms), identical`,
  );

  /**
   * Adds a file of `size` bytes to `collection` through the page while a
   * key is pressed every 25 ms, then downloads the record and compares it
   * (with `twice`, downloads it again from the same view).
   * Returns the sealing and upload times and the probe: each key press's
   * delay and the longest event-loop gap, by phase.
   */
  async function addProbed(name, size, collection, { twice = false } = {}) {
    const path = join(tmp, name);
    const hash = writeLargeFile(path, size);
    await tid('nav-add').click();
    await tid('upload-collection').fill(collection);
    await tid('upload-input').setInputFiles(path);
    await page.evaluate(() => {
      // Input latency: how long after the key was pressed its handler ran.
      // Gaps: the longest the event loop went without running a 10 ms timer.
      // Phases follow the file's status line.
      const probe = { phase: 'before', keys: [], gaps: {}, stop: false };
      const phase = () => {
        const text = document.querySelector('[data-testid="upload-status"]')?.textContent ?? '';
        // Sealing ends when its progress reaches 100%: the first upload
        // chunk is read, hashed and sent before the status says so.
        return /^Encrypting/.test(text) && !/100%/.test(text) ? 'sealing' : /^Uploading/.test(text) ? 'uploading' : probe.phase === 'before' ? 'before' : 'finishing';
      };
      document.addEventListener('keydown', (ev) => probe.stop || probe.keys.push([phase(), performance.now() - ev.timeStamp]), { capture: true });
      let last = performance.now();
      const tick = () => {
        // A gap counts for the phase it began in.
        const now = performance.now();
        probe.gaps[probe.phase] = Math.max(probe.gaps[probe.phase] ?? 0, now - last);
        probe.phase = phase();
        last = now;
        if (!probe.stop) setTimeout(tick, 10);
      };
      setTimeout(tick, 10);
      // Whether a spool file (decision 64) exists while the file is added.
      probe.spooled = false;
      const spoolWatch = setInterval(async () => {
        if (probe.stop) return clearInterval(spoolWatch);
        const root = await navigator.storage.getDirectory();
        for await (const n of root.keys()) if (n.startsWith('vault-spool-')) probe.spooled = true;
      }, 100);
      window.__probe = probe;
    });
    const start = Date.now();
    await tid('upload-start').click();
    let sealedAt = 0;
    for (let done = false; !done; ) {
      await page.keyboard.press('Shift');
      await new Promise((r) => setTimeout(r, 25));
      if (!sealedAt && (await tid('upload-status').innerText()).startsWith('Uploading')) sealedAt = Date.now();
      done = (await page.locator('[data-testid="upload-file-done"]').count()) > 0 || (await page.locator('[data-testid="alerts"] .alert').count()) > 0;
      assert.ok(Date.now() - start < 300_000, `${name} was not added within 5 minutes`);
    }
    const doneAt = Date.now();
    await noAlerts(`after adding ${name}`);
    const probe = await page.evaluate(async () => {
      window.__probe.stop = true;
      const left = [];
      for await (const n of (await navigator.storage.getDirectory()).keys()) if (n.startsWith('vault-spool-')) left.push(n);
      return { keys: window.__probe.keys, gaps: window.__probe.gaps, spooled: window.__probe.spooled, spoolsLeft: left };
    });
    assert.deepEqual(probe.spoolsLeft, [], `${name}: spool files left after the add`);
    await tid('nav-records').click();
    await page.locator(`[data-testid="collection-item"][data-collection-name="${collection}"]`).click();
    await tid('record-row').first().click();
    await tid('record-detail').waitFor();
    // Opening (download, decrypt, hand to the browser), probed the same way.
    await page.evaluate(() => {
      const probe = { keys: [], gap: 0, stop: false };
      document.addEventListener('keydown', (ev) => probe.stop || probe.keys.push(performance.now() - ev.timeStamp), { capture: true });
      let last = performance.now();
      const tick = () => {
        const now = performance.now();
        probe.gap = Math.max(probe.gap, now - last);
        last = now;
        if (!probe.stop) setTimeout(tick, 10);
      };
      setTimeout(tick, 10);
      window.__openProbe = probe;
    });
    const bodyFiles = () =>
      page.evaluate(async () => {
        const names = [];
        for await (const n of (await navigator.storage.getDirectory()).keys()) if (n.startsWith('vault-body-')) names.push(n);
        return names;
      });
    const bodiesBefore = new Set(await bodyFiles());
    const openStart = Date.now();
    let opening = true;
    const presser = (async () => {
      while (opening) {
        await page.keyboard.press('Shift');
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 180_000 }), tid('record-download').click()]);
    const openMs = Date.now() - openStart;
    opening = false;
    await presser;
    const openProbe = await page.evaluate(() => {
      window.__openProbe.stop = true;
      return { worstKey: Math.max(0, ...window.__openProbe.keys), presses: window.__openProbe.keys.length, gap: window.__openProbe.gap };
    });
    const back = join(tmp, `${name}.back`);
    await download.saveAs(back);
    if (twice) {
      // A second download from the same view reuses the decrypted body.
      const [again] = await Promise.all([page.waitForEvent('download', { timeout: 180_000 }), tid('record-download').click()]);
      await again.saveAs(`${back}.2`);
      assert.equal(sha256File(`${back}.2`), hash, `${name} downloaded again differs from the file added`);
      rmSync(`${back}.2`);
    }
    // A record over 64 MiB was downloaded into a spool and decrypted into
    // a body file (decision 64): the spool is gone, the body kept a while.
    const files = await page.evaluate(async () => {
      const names = [];
      for await (const n of (await navigator.storage.getDirectory()).keys()) names.push(n);
      return names;
    });
    assert.deepEqual(files.filter((n) => n.startsWith('vault-spool-')), [], `${name}: a download spool was left`);
    const bodies = (await bodyFiles()).filter((n) => !bodiesBefore.has(n)).length;
    assert.equal(statSync(back).size, size);
    assert.equal(sha256File(back), hash, `${name} downloaded differs from the file added`);
    rmSync(back);
    rmSync(path);
    await tid('record-back').click();
    return { sealMs: (sealedAt || doneAt) - start, uploadMs: doneAt - (sealedAt || doneAt), probe, openMs, openProbe, bodies };
  }

  assert.deepEqual(problems, [], `problems:\n${problems.join('\n')}`);

  // Integrity: a tampered wasm is refused (the app says so), and a tampered
  // script leaves the static warning visible instead of a blank page.
  const tampered = await context.newPage();
  await tampered.route('**/*.wasm', async (route) => {
    const response = await route.fetch();
    const body = Buffer.from(await response.body());
    body[body.length - 1] ^= 1;
    await route.fulfill({ response, body });
  });
  await tampered.goto(`${relayUrl}/`);
  await tampered.getByTestId('boot-failed').waitFor();
  await tampered.screenshot({ path: join(ARTIFACTS, '14-tampered-wasm.png') });
  await tampered.unroute('**/*.wasm');
  await tampered.route('**/assets/*.js', async (route) => {
    const response = await route.fetch();
    await route.fulfill({ response, body: `${await response.text()}\n;void 0;` });
  });
  await tampered.goto(`${relayUrl}/?tampered-js`);
  await tampered.waitForTimeout(1500);
  assert.ok(await tampered.getByTestId('boot-message').isVisible(), 'the loading warning is hidden although the script was refused');
  assert.match(await tampered.getByTestId('boot-message').innerText(), /do not enter your passphrase/);
  await tampered.screenshot({ path: join(ARTIFACTS, '15-tampered-script.png') });
  await tampered.close();
  log('integrity: tampered wasm refused with a message; tampered script leaves the warning shown');

  // The relay goes away: a clear message, not a blank page or a console error.
  relayProcess.kill('SIGKILL');
  await new Promise((r) => relayProcess.once('exit', r));
  await tid('refresh').click();
  const unreachable = page.locator('[data-testid="alerts"] .alert', { hasText: 'Relay unreachable' });
  await unreachable.waitFor({ timeout: 60_000 });
  assert.match(await unreachable.innerText(), /cannot be reached/);
  await tid('record-list').waitFor();
  log('relay stopped: "Relay unreachable … cannot be reached", the list stays on screen');
  log(`PASS (${((Date.now() - started) / 1000).toFixed(1)} s); screenshots in ${ARTIFACTS}`);
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.stack ?? e}`);
  // What the page showed when it failed, and its alerts.
  try {
    await failurePage?.screenshot({ path: join(ARTIFACTS, 'failure.png'), fullPage: true });
    const alerts = await failurePage?.locator('[data-testid="alerts"] .alert').allInnerTexts();
    if (alerts?.length) console.error(`alerts on the page: ${alerts.join(' | ')}`);
  } catch {
    /* the page may be gone */
  }
} finally {
  for (const f of cleanups.reverse()) {
    try {
      await f();
    } catch {
      /* ignore */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
