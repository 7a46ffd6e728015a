// Entry point: loads the WebAssembly module (pinned by its SHA-384), then
// shows the unlock screen. Any uncaught failure lands in the alert region.

import { load } from './vault';
import { byId, clear, h } from './dom';
import { showAlert, showError } from './errors';
import { renderStart } from './start';
import { linkInAddress, renderViewer } from './viewer';

window.addEventListener('error', (ev) => {
  showError(ev.error ?? new Error(ev.message || 'Unknown error'), 'Unexpected error');
});
window.addEventListener('unhandledrejection', (ev) => {
  showError(ev.reason, 'Unexpected error');
});

async function boot(): Promise<void> {
  const wasmUrl = new URL('../pkg/vault_wasm_bg.wasm', import.meta.url).href;
  try {
    await load(wasmUrl, __WASM_INTEGRITY__ || undefined);
  } catch (e) {
    const main = byId('main');
    clear(main);
    main.append(
      h(
        'section',
        { class: 'card boot-failed', testid: 'boot-failed' },
        h('h1', null, 'The app could not start'),
        h('p', null, 'Its cryptography module failed its integrity check or could not be loaded. Do not enter your passphrase. Reload the page; if this persists, contact support.'),
      ),
    );
    const detail = e instanceof Error ? e.message : String(e);
    showAlert('tamper', 'The cryptography module was refused or could not load', `The browser could not load the app’s WebAssembly module, or it did not match the hash the app pins (${detail}). Do not enter your passphrase.`);
    return;
  }
  byId('boot').hidden = true;
  if (!window.isSecureContext || !crypto.subtle) {
    showAlert('error', 'Insecure connection', 'This page is not in a secure context (HTTPS): do not use it with real records.');
  }
  // A SMART Health Link (`#shlink:/…`) opens the viewer, with no account.
  const link = linkInAddress();
  if (link) {
    renderViewer(link, leaveViewer);
    return;
  }
  await renderStart();
}

/** Leaves the viewer for the patient app: the link goes from the address bar. */
function leaveViewer(): void {
  history.replaceState(null, '', location.pathname + location.search);
  void renderStart();
}

// A link pasted into the address bar of an open page: show it.
window.addEventListener('hashchange', () => {
  const link = linkInAddress();
  if (link) renderViewer(link, leaveViewer);
});

void boot();
