/** `sha384-…` of pkg/vault_wasm_bg.wasm, computed by vite.config.ts at build time. */
declare const __WASM_INTEGRITY__: string;
/** The web app's version (package.json), shown on the About screen. */
declare const __APP_VERSION__: string;
/** A worker bundled by Vite into one script, inlined into the importing chunk and started from a `blob:` URL. */
declare module '*?worker&inline' {
  const WorkerFactory: new (options?: { name?: string }) => Worker;
  export default WorkerFactory;
}
