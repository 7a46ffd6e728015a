// Build of the patient web app. Two things matter for integrity:
// - the WebAssembly module's SHA-384 is computed here and compiled into the
//   app's JS (`__WASM_INTEGRITY__`), which passes it to `fetch(…, {integrity})`;
// - scripts/seal.mjs then pins every script and stylesheet of index.html by
//   SRI, so the SHA-256 of index.html (the "bundle hash") covers the whole app.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));
const wasmPath = `${root}pkg/vault_wasm_bg.wasm`;
const pkgJson = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string };

function wasmIntegrity(): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(wasmPath);
  } catch {
    throw new Error(`${wasmPath} is missing: run scripts/build-web (wasm-bindgen output) first`);
  }
  return `sha384-${createHash('sha384').update(bytes).digest('base64')}`;
}

export default defineConfig(({ command }) => ({
  base: './',
  define: {
    // In `vite dev` the module is served as-is and may be rebuilt, so no pin.
    __WASM_INTEGRITY__: JSON.stringify(command === 'build' ? wasmIntegrity() : ''),
    __APP_VERSION__: JSON.stringify(pkgJson.version),
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Never inline assets as data: URLs (the wasm must be fetched with SRI;
    // the CSP's connect-src is 'self').
    assetsInlineLimit: 0,
    // The polyfill is not needed by the browsers we support; no inline code.
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
  server: {
    fs: { allow: [root] },
  },
}));
