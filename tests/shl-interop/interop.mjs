// SMART Health Links interoperability: what implementations this project
// did not write (npm `jose`, npm `kill-the-clipboard`) make of vault's
// links and files, and files jose makes for vault to read. Driven by
// tests/tests/shl_interop.rs; each command prints one JSON value.
//
//   node interop.mjs jose-decrypt FILE        FILE: {"key", "files": [jwe, ...]}
//   node interop.mjs jose-encrypt KEY         jose-made JWEs of known plaintexts
//   node interop.mjs ktc-resolve LINK RECIPIENT [PASSCODE]
//   node interop.mjs ktc-manifest LINK RECIPIENT [PASSCODE]
//   node interop.mjs raw-manifest URL RECIPIENT [PASSCODE]
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as jose from 'jose';
import { SHLViewer } from 'kill-the-clipboard';

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const key = (b64) => jose.base64url.decode(b64);
const out = (v) => process.stdout.write(JSON.stringify(v) + '\n');

/** The plaintexts jose encrypts: small and large FHIR-like JSON. */
function plaintexts() {
  const small = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [] });
  const big = JSON.stringify({
    resourceType: 'Bundle',
    type: 'collection',
    entry: Array.from({ length: 3000 }, (_, i) => ({
      resource: { resourceType: 'Observation', id: `obs-${i}`, status: 'final', valueQuantity: { value: i / 7 } },
    })),
  });
  return [
    { text: small, zip: true },
    { text: small, zip: false },
    { text: big, zip: false },
    { text: big, zip: true },
  ];
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  switch (cmd) {
    case 'jose-decrypt': {
      const input = JSON.parse(readFileSync(args[0], 'utf8'));
      const k = key(input.key);
      const results = [];
      for (const jwe of input.files) {
        try {
          const { plaintext, protectedHeader } = await jose.compactDecrypt(jwe, k);
          results.push({
            ok: true,
            cty: protectedHeader.cty,
            zip: protectedHeader.zip ?? null,
            alg: protectedHeader.alg,
            enc: protectedHeader.enc,
            sha256: sha256(plaintext),
            length: plaintext.length,
          });
        } catch (e) {
          results.push({ ok: false, error: e.code ?? e.name, message: String(e.message) });
        }
      }
      out(results);
      break;
    }
    case 'jose-encrypt': {
      const k = key(args[0]);
      const results = [];
      for (const p of plaintexts()) {
        const bytes = new TextEncoder().encode(p.text);
        const header = { alg: 'dir', enc: 'A256GCM', cty: 'application/fhir+json' };
        if (p.zip) header.zip = 'DEF';
        const jwe = await new jose.CompactEncrypt(bytes).setProtectedHeader(header).encrypt(k);
        results.push({ jwe, zip: p.zip, sha256: sha256(bytes), length: bytes.length });
      }
      out(results);
      break;
    }
    case 'ktc-resolve':
    case 'ktc-manifest': {
      const [link, recipient, passcode] = args;
      try {
        const viewer = new SHLViewer({ shlinkURI: link });
        if (cmd === 'ktc-resolve') {
          const r = await viewer.resolveSHL({ recipient, ...(passcode ? { passcode } : {}) });
          out({ ok: true, label: viewer.shl.label ?? null, flag: viewer.shl.flag ?? null, fhirResources: r.fhirResources });
        } else {
          const m = await viewer.fetchManifest({ url: viewer.shl.url, recipient, ...(passcode ? { passcode } : {}) });
          out({ ok: true, files: m.files.length });
        }
      } catch (e) {
        out({ ok: false, error: e.name, message: String(e.message) });
      }
      break;
    }
    case 'raw-manifest': {
      const [url, recipient, passcode] = args;
      const resp = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ recipient, ...(passcode ? { passcode } : {}) }),
      });
      out({ status: resp.status, body: await resp.json().catch(() => null) });
      break;
    }
    default:
      process.stderr.write(`unknown command ${cmd}\n`);
      process.exit(2);
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack ?? e}\n`);
  process.exit(1);
});
