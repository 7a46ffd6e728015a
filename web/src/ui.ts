// Shared UI pieces: busy buttons, fingerprints, author badges.

import { h, icon, ICONS } from './dom';
import { showError } from './errors';
import type { Author, Member } from './vault';
import { roleLabel } from './format';

/**
 * Runs `f` with `button` disabled and showing `busyLabel`; errors go to the
 * alert region (and are returned as undefined).
 */
export async function withBusy<T>(
  button: HTMLButtonElement | null,
  busyLabel: string,
  f: () => Promise<T>,
  errorContext?: string,
): Promise<T | undefined> {
  const saved = button ? Array.from(button.childNodes) : [];
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    button.replaceChildren(h('span', { class: 'spinner', 'aria-hidden': 'true' }), busyLabel);
  }
  document.body.classList.add('busy');
  try {
    return await f();
  } catch (e) {
    showError(e, errorContext);
    return undefined;
  } finally {
    document.body.classList.remove('busy');
    if (button) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      button.replaceChildren(...saved);
    }
  }
}

/** Six groups of digits, large and monospace. */
export function fingerprintEl(fingerprint: string, testid?: string, size: 'large' | 'small' = 'large'): HTMLElement {
  const groups = fingerprint.trim().split(/\s+/);
  return h(
    'div',
    { class: `fingerprint fingerprint-${size}`, testid, 'aria-label': `Fingerprint ${groups.join(', ')}` },
    groups.map((g) => h('span', { class: 'fp-group' }, g)),
  );
}

export function authorText(a: Author): string {
  const behalf = a.onBehalfOfMe ? ' on your behalf (your agent)' : a.onBehalfOf ? ` on behalf of ${a.onBehalfOf} (agent)` : null;
  if (a.isMe) return `Added by you${behalf ? ` on behalf of ${a.onBehalfOf}` : ''}`;
  if (a.isOwner && a.ownerIsMe) return 'Written with your key file';
  if (a.isOwner) return `Written by ${a.name ?? 'the vault owner'} (vault owner)`;
  if (a.ownerDevice) return `Written by ${a.name ?? 'a device'} (${a.ownerIsMe ? 'your device' : "the vault owner's device"})`;
  if (a.memberDeviceOf) return `Written by ${a.name ?? 'a device'} (${a.memberDeviceOf}'s device)`;
  return `Written by ${a.name ?? 'an unnamed identity'}${behalf ?? `, ${roleLabel(a.role)}`}`;
}

/** "Written by Dr X, clinician — verified" (shown for records not written by the owner). */
export function authorBadge(a: Author): HTMLElement {
  return h(
    'span',
    { class: a.isOwner ? 'badge badge-neutral' : 'badge badge-author', testid: 'author-badge' },
    icon(ICONS.shieldCheck),
    `${authorText(a)} — verified`,
  );
}

export function memberName(m: Member): string {
  return m.name ?? 'Unnamed identity';
}

export function emptyState(text: string, testid?: string): HTMLElement {
  return h('p', { class: 'empty', testid }, text);
}
