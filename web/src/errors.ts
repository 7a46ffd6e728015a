// What the patient reads when something fails. Every failure goes through
// `showError`, which writes into the page's role="alert" region.

import { VaultError } from './vault';
import { byId, h, icon, ICONS } from './dom';

/** Codes that mean: data from the relay (or stored here) failed a check. */
export const TAMPER_CODES = new Set([
  'bad_signature',
  'fork',
  'rollback',
  'chain_broken',
  'ciphertext_mismatch',
  'decryption_failed',
  'missing_or_withheld',
  'context_mismatch',
  'checkpoint_mismatch',
  'pinned_key_changed',
  'fingerprint_mismatch',
  'unauthorized_author',
  'invalid_entry',
  'malformed',
  'unsupported_version',
  'weak_public_key',
  'protocol',
  'integrity',
]);

const TAMPER_WHAT: Record<string, string> = {
  bad_signature: 'a signature did not verify',
  fork: 'the relay showed two different histories of this vault (a fork)',
  rollback: 'the relay sent an older state of the vault than this device has already seen (a rollback)',
  chain_broken: 'the vault history is not a continuous chain',
  ciphertext_mismatch: 'stored data does not match what was signed',
  decryption_failed: 'data could not be decrypted (it was altered or is not meant for you)',
  missing_or_withheld: 'data the history names is missing or withheld by the relay',
  context_mismatch: 'data was moved from another vault, collection or record',
  checkpoint_mismatch: 'the checkpoint codes differ: the two devices see different vault histories',
  pinned_key_changed: "a person's key changed since you last checked it",
  fingerprint_mismatch: 'the identity does not match the fingerprint',
  unauthorized_author: 'an entry was written by someone without permission',
  invalid_entry: 'an entry in the vault history is invalid',
  malformed: 'data is malformed',
  unsupported_version: 'data uses an unsupported format version',
  weak_public_key: 'a key is invalid (weak public key)',
  protocol: 'the relay broke the protocol',
  integrity: 'an integrity check failed',
};

export interface Explained {
  severity: 'error' | 'tamper';
  title: string;
  text: string;
}

let currentRelay = '';
/** The relay URL named in "cannot be reached" messages. */
export function setRelayForMessages(url: string): void {
  currentRelay = url;
}

export function explain(e: unknown): Explained {
  if (e instanceof VaultError) {
    const m = e.message;
    if (TAMPER_CODES.has(e.code)) {
      const what = TAMPER_WHAT[e.code] ?? e.code;
      return {
        severity: 'tamper',
        title: 'Tampered data detected',
        text:
          `Vault refused data because ${what} (${e.code}: ${m}). Nothing unverified was shown or used. ` +
          'Do not trust this relay for now, do not share or upload anything more, and contact your ' +
          'provider’s support with this message.' +
          (e.code === 'rollback'
            ? ' If the relay’s operator tells you it was restored from a backup or moved to another site, ' +
              'this device can repair it: it sends back the history it has verified, which the relay checks like any change.'
            : ''),
      };
    }
    switch (e.code) {
      case 'wrong_passphrase':
        return { severity: 'error', title: 'Wrong passphrase', text: 'That passphrase does not open this key file. Check it and try again.' };
      case 'weak_key_file':
        return { severity: 'error', title: 'Key file refused', text: `This key file is protected too weakly to be trusted (${m}).` };
      case 'invalid_input':
        return { severity: 'error', title: 'Please check your input', text: m };
      case 'transport':
        return {
          severity: 'error',
          title: 'Relay unreachable',
          text: `The relay at ${currentRelay || 'the configured address'} cannot be reached — check your connection; nothing was changed. (${m})`,
        };
      case 'insufficient_storage':
        return { severity: 'error', title: 'Relay storage full', text: `The relay has run out of disk space; nothing was stored. Try again later, or tell whoever runs the relay. (${m})` };
      case 'quota_exceeded':
        return { severity: 'error', title: 'Storage full', text: `Your storage quota on the relay is used up; nothing more was stored. (${m})` };
      case 'too_large':
        return { severity: 'error', title: 'Too large', text: `The relay refused this because it is too large. (${m})` };
      case 'file_too_large':
        return { severity: 'error', title: 'File too large for this browser', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      case 'storage_full':
        return { severity: 'error', title: 'Browser storage full', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      case 'length_mismatch':
        return { severity: 'error', title: 'The file changed', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}. Nothing was stored.` };
      case 'io':
        return { severity: 'error', title: "This browser's storage failed", text: `${m.charAt(0).toUpperCase()}${m.slice(1)}. Nothing was changed; try again, or use the vault command line.` };
      case 'invite_required':
        return {
          severity: 'error',
          title: 'Invitation needed',
          text: 'This relay admits new identities by invitation only. Enter the invitation token its operator gave you under Identity → Relay (Invitation token), save, unlock, and try again.',
        };
      case 'rate_limited':
        return { severity: 'error', title: 'Too many requests', text: 'The relay asks to slow down. Wait a minute and try again.' };
      case 'access_denied':
      case 'forbidden':
        return { severity: 'error', title: 'Access denied', text: `You do not have access to this. (${m})` };
      case 'not_found':
      case 'vault_not_found':
        return { severity: 'error', title: 'Not found', text: `The relay does not have it. (${m})` };
      case 'identity_not_found':
        return {
          severity: 'error',
          title: 'Identity not found',
          text: 'No identity with this fingerprint is published on the relay. Ask the person to publish it (vault whoami --publish) or paste their identity text instead.',
        };
      case 'worker_stalled':
        return {
          severity: 'error',
          title: m.startsWith('the decryption') ? 'Decryption stopped responding' : 'Encryption stopped responding',
          text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.`,
        };
      case 'busy':
        return { severity: 'error', title: 'Busy', text: 'Another operation is still running. Try again when it finishes.' };
      case 'expired':
        return { severity: 'error', title: 'Expired', text: `This access has expired. (${m})` };
      case 'wrong_passcode':
        return { severity: 'error', title: 'Passcode', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      case 'link_not_found':
        return { severity: 'error', title: 'Link no longer active', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      case 'invalid_link':
        return { severity: 'error', title: 'Not a valid health link', text: `This link was refused: ${m}. Check that it was copied whole, or ask for a new one.` };
      case 'not_rekeyed':
        return { severity: 'error', title: 'Not written: re-key first', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      case 'not_shareable':
        return { severity: 'error', title: 'Cannot share this in a link', text: `${m.charAt(0).toUpperCase()}${m.slice(1)}.` };
      default:
        return { severity: 'error', title: 'Something went wrong', text: `${e.code}: ${m}` };
    }
  }
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { severity: 'error', title: 'Something went wrong', text };
}

/** A button offered inside an alert; `run` gets a function that removes the alert. */
export interface AlertAction {
  label: string;
  testid: string;
  run: (dismiss: () => void) => void;
}

let rollbackAction: ((e: VaultError) => AlertAction | null) | null = null;

/** What a `rollback` alert offers (the unlocked app offers to repair the relay). */
export function setRollbackAction(f: ((e: VaultError) => AlertAction | null) | null): void {
  rollbackAction = f;
}

/** Shows an error in the alert region (tamper warnings stay until dismissed). */
export function showError(e: unknown, context?: string): Explained {
  const x = explain(e);
  const action = e instanceof VaultError && e.code === 'rollback' ? rollbackAction?.(e) ?? undefined : undefined;
  showAlert(x.severity, context ? `${context}: ${x.title}` : x.title, x.text, action);
  return x;
}

export function showAlert(severity: 'error' | 'tamper' | 'warning', title: string, text: string, action?: AlertAction): void {
  const region = byId('alerts');
  const body = h('div', { class: 'alert-body' }, h('strong', null, title), h('p', null, text));
  const box = h(
    'div',
    { class: `alert alert-${severity}`, testid: severity === 'tamper' ? 'alert-tamper' : 'alert' },
    icon(ICONS.warn),
    body,
    h(
      'button',
      {
        type: 'button',
        class: 'icon-button',
        'aria-label': 'Dismiss this message',
        testid: 'alert-dismiss',
        onclick: () => box.remove(),
      },
      icon(ICONS.close),
    ),
  );
  if (action) {
    body.append(
      h(
        'button',
        { type: 'button', class: 'button secondary small', testid: action.testid, onclick: () => action.run(() => box.remove()) },
        action.label,
      ),
    );
  }
  // The same message twice (two loads that failed alike, one after the
  // other) is shown once: the newer replaces the older, so its action
  // is the one that runs.
  const key = `${severity}\u0000${title}\u0000${text}`;
  box.dataset.key = key;
  for (const old of Array.from(region.querySelectorAll<HTMLElement>('.alert'))) {
    if (old.dataset.key === key) old.remove();
  }
  // Keep at most a few messages; tamper warnings are never pushed out.
  const plain = Array.from(region.querySelectorAll('.alert:not(.alert-tamper)'));
  if (plain.length >= 3) plain[0].remove();
  region.appendChild(box);
}

export function clearAlerts(): void {
  for (const el of Array.from(byId('alerts').querySelectorAll('.alert:not(.alert-tamper)'))) el.remove();
}

/** A short, polite status message (role="status"). */
export function announce(text: string): void {
  const region = byId('status');
  region.textContent = text;
  region.classList.toggle('status-shown', text !== '');
  const snapshot = text;
  setTimeout(() => {
    if (region.textContent === snapshot) {
      region.textContent = '';
      region.classList.remove('status-shown');
    }
  }, 8000);
}
