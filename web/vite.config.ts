// Build of the patient web app. Two things matter for integrity:
// - the WebAssembly module's SHA-384 is computed here and compiled into the
//   app's JS (`__WASM_INTEGRITY__`), which passes it to `fetch(…, {integrity})`;
// - scripts/seal.mjs then pins every script and stylesheet of index.html by
//   SRI, so the SHA-256 of index.html (the "bundle hash") covers the whole app.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

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

/**
 * The payload worker (src/payload-worker.ts) is inlined into the pinned main
 * chunk and started from a `blob:` URL; it must load no code of its own
 * (decision 56): a `blob:` worker inherits the page's `script-src 'self'`,
 * so an import or importScripts would run a file no SRI pin covers. This
 * fails the build unless the worker is one script that imports no code,
 * names no way to load a script or a WebAssembly module by URL, and emits
 * no file. The wasm-bindgen glue's fallback URL for the module (used
 * only when init is given no module; the worker is always given the
 * page's) is replaced by an error, so the worker never fetches a module of
 * its own and Vite emits no second copy of it.
 */
function selfContainedWorker(): Plugin {
  const moduleUrl = "new URL('vault_wasm_bg.wasm', import.meta.url)";
  return {
    name: 'vault:self-contained-worker',
    enforce: 'pre',
    transform(code, id) {
      if (!id.endsWith('/pkg/vault_wasm.js')) return null;
      if (!code.includes(moduleUrl)) this.error(`the wasm-bindgen glue no longer contains ${moduleUrl}: update vite.config.ts`);
      return code.replace(moduleUrl, `(() => { throw new Error("internal: the payload worker is given the page's module"); })()`);
    },
    generateBundle(_options, bundle) {
      const outputs = Object.values(bundle);
      const chunks = outputs.flatMap((o) => (o.type === 'chunk' ? [o] : []));
      const assets = outputs.filter((o) => o.type === 'asset').map((o) => o.fileName);
      if (chunks.length !== 1 || assets.length) {
        this.error(`the payload worker must be one script and emit no file; it has ${chunks.length} scripts and files [${assets.join(', ')}]`);
      }
      for (const chunk of chunks) {
        if (chunk.imports.length || chunk.dynamicImports.length) this.error(`the payload worker imports ${[...chunk.imports, ...chunk.dynamicImports].join(', ')}`);
        // Names, not calls: an alias (`const f = importScripts`) is caught too.
        for (const loads of ['importScripts', 'import(', 'Worker(', 'instantiateStreaming', 'compileStreaming', 'WebAssembly.instantiate', 'WebAssembly.compile']) {
          if (chunk.code.includes(loads)) this.error(`the payload worker's script contains \`${loads}\`: it must load no code of its own`);
        }
      }
    },
  };
}

export default defineConfig(({ command }) => ({
  base: './',
  define: {
    // In `vite dev` the module is served as-is and may be rebuilt, so no pin.
    __WASM_INTEGRITY__: JSON.stringify(command === 'build' ? wasmIntegrity() : ''),
    __APP_VERSION__: JSON.stringify(pkgJson.version),
  },
  worker: {
    format: 'iife',
    plugins: () => [selfContainedWorker()],
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
