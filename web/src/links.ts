// SMART Health Links, the patient's side: make a link to a patient summary, a
// collection or one record (with an optional passcode and expiry), show it as
// a QR code and as text, list the links with who fetched them, revoke them.
// Everything is done by vault-wasm (vault-client's `links`): the records are
// opened and the link's file encrypted in this page; the relay stores the
// ciphertext and never sees the key, which lives only in the link shown once.

import type { CreatedLink, LinkAccess, LinkInfo, LinkRequest } from './vault';
import { clear, copyText, field, h, icon, ICONS, type Child } from './dom';
import { confirmDialog } from './dialog';
import { announce, showAlert } from './errors';
import { fmtDateTime, fmtExpiry, fmtSize } from './format';
import { run, type Ctx } from './state';
import { emptyState, withBusy } from './ui';

const EXPIRY: [string, string, number | null][] = [
  ['1h', '1 hour', 3600],
  ['1d', '1 day', 86400],
  ['7d', '1 week', 7 * 86400],
  ['30d', '30 days', 30 * 86400],
  ['365d', '1 year', 365 * 86400],
  ['never', 'No expiry (revoke it when done)', null],
];

/** A record the next visit to the links view offers to share (from a record's detail). */
let offeredRecord: { id: string; title: string } | null = null;

/** Offers one record in the links view's "What to share". */
export function offerRecord(id: string, title: string): void {
  offeredRecord = { id, title };
}

const STATUS_TEXT: Record<string, string> = {
  active: 'Active',
  expired: 'Expired',
  revoked: 'Revoked',
  disabled: 'Disabled (too many wrong passcodes)',
};

const OUTCOME_TEXT: Record<string, string> = {
  manifest: 'opened',
  file: 'file fetched',
  wrong_passcode: 'wrong passcode',
};

/** The "Health links" view. */
export function renderLinks(c: Ctx): HTMLElement {
  const vault = c.vault!;
  const collections = c.overview?.collections ?? [];
  const offered = offeredRecord;
  offeredRecord = null;

  const what = h(
    'select',
    { testid: 'link-what' },
    offered ? h('option', { value: `record:${offered.id}`, selected: true }, `This record: ${offered.title}`) : null,
    h('option', { value: 'summary' }, 'My patient summary (problems, medications, allergies, immunizations, results, procedures)'),
    collections.map((col) => h('option', { value: `collection:${col.id}` }, `Everything in “${col.name}”`)),
  );
  const label = h('input', { type: 'text', testid: 'link-label', maxlength: 80, autocomplete: 'off', placeholder: 'e.g. Summary for the emergency department' });
  const expiry = h('select', { testid: 'link-expiry' }, EXPIRY.map(([v, text]) => h('option', { value: v, selected: v === '7d' }, text)));
  const passcode = h('input', { type: 'text', testid: 'link-passcode', autocomplete: 'off', spellcheck: false });
  const direct = h('input', { type: 'checkbox', testid: 'link-direct' });
  const directLabel = h('label', { class: 'check' }, direct, ' Single-request link (flag U): readers fetch the file directly; it cannot have a passcode');
  const syncDirect = () => {
    direct.disabled = passcode.value.length > 0;
    if (direct.disabled) direct.checked = false;
  };
  passcode.addEventListener('input', syncDirect);
  const result = h('div', { testid: 'link-result', 'aria-live': 'polite' });
  const list = h('div', { testid: 'link-list' });

  const submit: HTMLButtonElement = h('button', { type: 'submit', class: 'button primary', testid: 'link-create' }, icon(ICONS.share), 'Make the link');
  const form = h(
    'form',
    {
      class: 'stack',
      testid: 'link-form',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const choice = what.value;
        const request: LinkRequest = choice.startsWith('collection:')
          ? { what: 'collection', collection: choice.slice('collection:'.length) }
          : choice.startsWith('record:')
            ? { what: 'records', records: [choice.slice('record:'.length)] }
            : { what: 'summary' };
        if (label.value.trim()) request.label = label.value.trim();
        const secs = EXPIRY.find(([v]) => v === expiry.value)?.[2] ?? null;
        if (secs !== null) request.expiresAt = Math.floor(Date.now() / 1000) + secs;
        if (direct.checked) request.direct = true;
        const code = passcode.value;
        if (code && code.trim().length < 4) {
          showAlert('error', 'Passcode too short', 'Use at least 4 characters, or leave it empty for a link without a passcode.');
          return;
        }
        void withBusy(
          submit,
          'Encrypting…',
          async () => {
            const made = await run((s) => s.createLink(vault, request, code || undefined));
            passcode.value = '';
            syncDirect();
            showCreated(result, made, Boolean(code), request.expiresAt ?? null);
            announce(`Link made from ${made.resources} records, encrypted.`);
            await loadList(list);
          },
          'Could not make the link',
        );
      },
    },
    field('What to share', what),
    field('Label (optional)', label, 'Shown to the person who opens the link; at most 80 characters; it travels inside the link, never to the relay.'),
    field('Link stops working after', expiry),
    field('Passcode (optional)', passcode, 'The person opening the link must type it; tell it to them separately (for example aloud). After 10 wrong tries the link stops working for good.'),
    directLabel,
    h('div', { class: 'actions' }, submit),
  );

  void loadList(list);
  return h(
    'div',
    { class: 'stack' },
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'links-heading' },
      h('h1', { id: 'links-heading' }, 'Health links'),
      h(
        'p',
        null,
        'A SMART Health Link lets someone without a vault account — a doctor in an emergency department, a new GP, a clinic abroad — read what you choose, by scanning a QR code or opening a link. It is encrypted here; the relay stores only ciphertext and never sees the key, which is only in the link.',
      ),
      form,
      result,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'links-list-heading' },
      h('h2', { id: 'links-list-heading' }, 'Your links'),
      h('p', { class: 'muted' }, 'Each time a link is opened the relay records when, what the reader said their name is (their own word: the relay cannot check it), and whether the passcode was right.'),
      list,
    ),
  );
}

/** The link just made: QR code, text, copy button, and what it means. */
function showCreated(el: HTMLElement, made: CreatedLink, passcode: boolean, expiresAt: number | null): void {
  clear(el);
  const text = h('textarea', { rows: 3, readonly: true, class: 'mono small-break', testid: 'link-text', spellcheck: false }, made.link);
  const copyBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'link-copy',
      onclick: async () => {
        const ok = await copyText(made.link, text);
        announce(ok ? 'Link copied.' : 'Select the link and copy it.');
      },
    },
    icon(ICONS.copy),
    'Copy link',
  );
  // The QR code is an SVG document vault-wasm drew; shown as an image (no script runs in it).
  const qr = h('img', {
    class: 'qr',
    testid: 'link-qr',
    alt: 'QR code of the link',
    src: `data:image/svg+xml;base64,${btoa(made.qrSvg)}`,
  });
  el.append(
    h(
      'div',
      { class: 'link-made', testid: 'link-made', 'data-handle': made.handle },
      h('h2', null, 'Your link is ready'),
      h(
        'p',
        { class: 'inline-warning' },
        icon(ICONS.warn),
        `Anyone holding this link${passcode ? ' and the passcode' : ''} can read what it shares until ${expiresAt === null ? 'you revoke it' : fmtExpiry(expiresAt)}. Copy or scan it now: vault does not keep it, and cannot show it again.`,
      ),
      h('div', { class: 'link-qr-row' }, qr, h('div', { class: 'stack' }, text, h('div', { class: 'actions' }, copyBtn))),
      h('p', { class: 'muted' }, `Made from ${made.resources} FHIR record${made.resources === 1 ? '' : 's'}; ${fmtSize(made.encryptedBytes)} encrypted at the relay.`),
    ),
  );
}

/** Loads the link list into `el`. */
async function loadList(el: HTMLElement): Promise<void> {
  let links: LinkInfo[];
  try {
    links = await run((s) => s.links());
  } catch (e) {
    clear(el);
    el.append(h('p', { class: 'inline-warning' }, 'Could not load your links: ', e instanceof Error ? e.message : String(e)));
    return;
  }
  clear(el);
  if (!links.length) {
    el.append(emptyState('No links yet.', 'links-empty'));
    return;
  }
  el.append(
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'table links-table', testid: 'links-table' },
        h('thead', null, h('tr', null, ['Made', 'Expires', 'Status', 'Passcode', 'Opened', 'Wrong passcodes', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h(
          'tbody',
          null,
          links.map((l) => linkRow(l, el)),
        ),
      ),
    ),
  );
}

function linkRow(l: LinkInfo, listEl: HTMLElement): Child {
  const detail = h('tr', { hidden: true, testid: 'link-log-row' }, h('td', { colspan: 7 }));
  const cell = detail.firstChild as HTMLElement;
  const logBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary small',
      testid: 'link-log',
      onclick: () =>
        withBusy(logBtn, 'Loading…', async () => {
          const events = await run((s) => s.linkLog(l.handle));
          clear(cell);
          cell.append(accessLog(events));
          detail.hidden = false;
        }, 'Could not load who opened the link'),
    },
    'Who opened it',
  );
  const revokeBtn: HTMLButtonElement | null =
    l.status === 'active'
      ? h(
          'button',
          {
            type: 'button',
            class: 'button danger small',
            testid: 'link-revoke',
            onclick: async () => {
              const ok = await confirmDialog({
                title: 'Revoke this link?',
                text: 'It stops working at once for everyone who holds it, and its encrypted file is deleted at the relay. Anyone who already opened it may have kept a copy.',
                confirm: 'Revoke',
                danger: true,
                testid: 'link-revoke-dialog',
              });
              if (!ok) return;
              await withBusy(revokeBtn, 'Revoking…', async () => {
                await run((s) => s.revokeLink(l.handle));
                announce('Link revoked.');
                await loadList(listEl);
              }, 'Could not revoke the link');
            },
          },
          'Revoke',
        )
      : null;
  const passcode = (l.flag ?? '').includes('P');
  return [
    h(
      'tr',
      { testid: 'link-row', 'data-handle': l.handle, 'data-status': l.status },
      h('td', null, fmtDateTime(l.created_at)),
      h('td', null, fmtExpiry(l.expires_at)),
      h('td', { testid: 'link-status' }, STATUS_TEXT[l.status] ?? l.status),
      h('td', null, passcode ? 'Yes' : 'No'),
      h('td', { testid: 'link-accesses' }, String(l.accesses)),
      h('td', { testid: 'link-failed' }, passcode ? `${l.failed_attempts} of ${l.max_attempts}` : '—'),
      h('td', null, h('div', { class: 'actions' }, logBtn, revokeBtn)),
    ),
    detail,
  ];
}

function accessLog(events: LinkAccess[]): HTMLElement {
  if (!events.length) return h('p', { class: 'muted', testid: 'link-log-empty' }, 'Nobody has opened this link yet.');
  return h(
    'ul',
    { class: 'access-log', testid: 'link-log-list' },
    events.map((e) =>
      h(
        'li',
        { testid: 'link-log-event', 'data-outcome': e.outcome },
        `${fmtDateTime(e.at)} — `,
        h('strong', null, e.recipient || '(no name given)'),
        ` — ${OUTCOME_TEXT[e.outcome] ?? e.outcome}`,
      ),
    ),
  );
}
