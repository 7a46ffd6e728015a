// Sharing a collection or one record with a clinician, after the patient has
// compared the clinician's fingerprint with them.

import { describeIdentity, type IdentityView } from './vault';
import { clear, field, h, icon, ICONS, nextId } from './dom';
import { openDialog } from './dialog';
import { announce, clearAlerts, showAlert, showError } from './errors';
import { fmtExpiry, permLabel, roleLabel } from './format';
import { run, type Ctx } from './state';
import { refresh } from './app';
import { fingerprintEl, withBusy } from './ui';

export type ShareTarget = { kind: 'collection' | 'record'; id: string; name: string };

const EXPIRY: [string, string, number | null][] = [
  ['1d', '1 day', 1],
  ['7d', '1 week', 7],
  ['30d', '30 days', 30],
  ['90d', '90 days', 90],
  ['365d', '1 year', 365],
  ['never', 'No expiry', null],
  ['date', 'Until a date…', null],
];

export function openShareDialog(c: Ctx, target: ShareTarget): void {
  const vault = c.vault;
  if (!vault) return;
  let identity: IdentityView | null = null;

  const text = h('textarea', { rows: 3, class: 'mono', testid: 'share-identity-text', spellcheck: false, placeholder: 'vault-identity:v1:…' });
  const fpHex = h('input', { type: 'text', class: 'mono', testid: 'share-fingerprint-hex', spellcheck: false, autocomplete: 'off', placeholder: '64 hex digits' });
  const found = h('div', { class: 'identity-found', testid: 'share-identity', 'aria-live': 'polite' });
  const confirm = h('input', { type: 'checkbox', testid: 'share-confirm-fingerprint', disabled: true });
  const permGroup = nextId('perm');
  const permRead = h('input', { type: 'radio', name: permGroup, value: 'read', checked: true, testid: 'share-perm-read' });
  const permWrite = h('input', { type: 'radio', name: permGroup, value: 'write', testid: 'share-perm-write', disabled: target.kind === 'record' });
  const permAdd = h('input', { type: 'radio', name: permGroup, value: 'add', testid: 'share-perm-add', disabled: target.kind === 'record' });
  const permDeposit = h('input', { type: 'radio', name: permGroup, value: 'deposit', testid: 'share-perm-deposit', disabled: target.kind === 'record' });
  const permAgent = h('input', { type: 'radio', name: permGroup, value: 'agent', testid: 'share-perm-agent', disabled: target.kind === 'record' });
  // An agent acts for the patient here (docs/format.md §8.10): reads always,
  // and with these powers adds, shares and revokes, names further agents.
  const powerAdd = h('input', { type: 'checkbox', testid: 'agent-power-add' });
  const powerShare = h('input', { type: 'checkbox', testid: 'agent-power-share' });
  const powerName = h('input', { type: 'checkbox', testid: 'agent-power-name-agents' });
  const powers = h(
    'fieldset',
    { class: 'agent-powers', testid: 'agent-powers' },
    h('legend', null, 'What your agent may do besides reading'),
    h('label', { class: 'check' }, powerAdd, ' Add records (and new versions of their own)'),
    h('label', { class: 'check' }, powerShare, ' Share this collection with others (read, or read and add) and revoke them'),
    h('label', { class: 'check' }, powerName, ' Name further agents, with no more than these powers'),
    h('p', { class: 'muted' }, 'An agent never deletes records, never changes your keys, and never sees your other collections. What they write is shown as written on your behalf. Revoking them ends the agency at once.'),
  );
  powers.hidden = true;
  for (const r of [permRead, permWrite, permAdd, permDeposit, permAgent]) r.addEventListener('change', () => (powers.hidden = !permAgent.checked));
  const powerList = () => [powerAdd.checked ? 'add' : '', powerShare.checked ? 'share' : '', powerName.checked ? 'name-agents' : ''].filter(Boolean).join(',');
  const expiry = h('select', { testid: 'share-expiry' }, EXPIRY.map(([v, label]) => h('option', { value: v, selected: v === '30d' }, label)));
  const date = h('input', { type: 'date', testid: 'share-expiry-date', min: new Date(Date.now() + 86400_000).toISOString().slice(0, 10) });
  const dateField = field('Expiry date', date);
  dateField.hidden = true;
  const expiryNote = h('p', { class: 'muted', testid: 'share-expiry-note' });
  const submit = h('button', { type: 'submit', class: 'button primary', testid: 'share-submit', disabled: true }, icon(ICONS.share), 'Share');

  const expiresAt = (): number | null | 'invalid' => {
    const v = expiry.value;
    if (v === 'never') return null;
    if (v === 'date') {
      if (!date.value) return 'invalid';
      const [y, m, d] = date.value.split('-').map(Number);
      const t = new Date(y, m - 1, d, 23, 59, 59).getTime() / 1000;
      return t > Date.now() / 1000 ? Math.floor(t) : 'invalid';
    }
    const days = EXPIRY.find(([k]) => k === v)?.[2] ?? 30;
    return Math.floor(Date.now() / 1000) + days * 86400;
  };
  const updateExpiry = () => {
    dateField.hidden = expiry.value !== 'date';
    const e = expiresAt();
    expiryNote.textContent = e === 'invalid' ? 'Choose a date in the future.' : `Access ends: ${fmtExpiry(e)}.`;
  };
  expiry.addEventListener('change', updateExpiry);
  date.addEventListener('change', updateExpiry);
  updateExpiry();

  const updateSubmit = () => {
    submit.disabled = !(identity && confirm.checked);
  };
  confirm.addEventListener('change', updateSubmit);

  const showIdentity = (id: IdentityView | null) => {
    identity = id;
    clear(found);
    confirm.checked = false;
    confirm.disabled = !id;
    if (id) {
      found.append(
        h(
          'div',
          { class: 'identity-card' },
          h('p', { class: 'identity-name' }, h('strong', { testid: 'share-identity-name' }, id.name), ' · ', h('span', { testid: 'share-identity-role' }, roleLabel(id.role)), id.registration ? ` · registration ${id.registration}` : ''),
          h('p', { class: 'muted' }, 'Fingerprint — compare every digit with the clinician:'),
          fingerprintEl(id.fingerprint, 'share-identity-fingerprint'),
          id.role !== 'clinician' ? h('p', { class: 'inline-note' }, 'This identity is not a clinician.') : null,
        ),
      );
    }
    updateSubmit();
  };

  const parseText = () => {
    const t = text.value.trim();
    if (!t) {
      showIdentity(null);
      return;
    }
    try {
      showIdentity(describeIdentity(t));
      fpHex.value = '';
    } catch (e) {
      showIdentity(null);
      showError(e, 'This identity text is not valid');
    }
  };
  text.addEventListener('change', parseText);
  const checkBtn = h('button', { type: 'button', class: 'button secondary', testid: 'share-check-text', onclick: parseText }, 'Check identity');

  const lookupBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'share-lookup',
      onclick: () =>
        withBusy(lookupBtn, 'Looking up…', async () => {
          const hex = fpHex.value.replace(/\s+/g, '').toLowerCase();
          if (!/^[0-9a-f]{64}$/.test(hex)) {
            showAlert('error', 'Fingerprint', 'Type the 64 hex digits of the fingerprint (as `vault whoami` shows).');
            return;
          }
          showIdentity(null);
          const id = await run((s) => s.lookupIdentity(hex));
          text.value = '';
          showIdentity(id);
        }, 'Look-up failed'),
    },
    'Look up',
  );

  const whatLabel = target.kind === 'collection' ? `the collection “${target.name}”` : `the record “${target.name}”`;
  openDialog(`Share ${target.kind === 'collection' ? 'a collection' : 'a record'}`, 'share-dialog', (d) => {
    const form = h(
      'form',
      {
        class: 'share-form',
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          clearAlerts();
          const id = identity;
          if (!id || !confirm.checked) return;
          const exp = expiresAt();
          if (exp === 'invalid') {
            showAlert('error', 'Expiry date', 'Choose an expiry date in the future.');
            date.focus();
            return;
          }
          if (target.kind === 'collection' && permAgent.checked) {
            const list = powerList();
            const named = await withBusy(submit, 'Naming your agent…', async () => {
              return await run((s) => s.nameAgent(vault, target.id, id.identityText, list, exp ?? undefined));
            }, 'Naming the agent failed');
            if (!named) return;
            d.close();
            const rekeyed = named.rotatedFirst ? ' The collection was re-keyed first, so versions you replaced or deleted stay closed to them.' : '';
            announce(`${id.name} is now your agent in ${whatLabel} (${['read', ...list.split(',').filter(Boolean)].join(', ')}), ${fmtExpiry(exp)}.${rekeyed}`);
            await refresh();
            return;
          }
          const permission = target.kind === 'record' ? 'read' : permWrite.checked ? 'write' : permAdd.checked ? 'add' : permDeposit.checked ? 'deposit' : 'read';
          const done = await withBusy(submit, 'Sharing…', async () => {
            return await run((s) => s.share(vault, target.id, target.kind === 'record', id.identityText, permission, exp ?? undefined));
          }, 'Sharing failed');
          if (!done) return;
          d.close();
          const rekeyed = done.rotatedFirst ? ' The collection was re-keyed first, so versions you replaced or deleted stay closed to them.' : '';
          announce(`Shared ${whatLabel} with ${id.name} (${permission === 'read' ? 'read only' : permLabel(permission)}, ${fmtExpiry(exp)}).${rekeyed}`);
          await refresh();
        },
      },
      h('p', null, `You are giving access to ${whatLabel}. Only the person holding this key will be able to read it.`),
      h(
        'fieldset',
        null,
        h('legend', null, 'Who'),
        field('Their identity text', text, 'Paste the text they sent you (vault whoami --export)…'),
        h('div', { class: 'actions' }, checkBtn),
        h('p', { class: 'or' }, 'or'),
        field('Their fingerprint (64 hex digits)', fpHex, '…or type their fingerprint and look it up on the relay.'),
        h('div', { class: 'actions' }, lookupBtn),
        found,
        h('label', { class: 'check' }, confirm, ' I compared this fingerprint with the clinician (in person or by phone) and every digit matches.'),
      ),
      h(
        'fieldset',
        { class: 'radio-row' },
        h('legend', null, 'Permission'),
        h('label', { class: 'check' }, permRead, ' Read'),
        h('label', { class: 'check' }, permAdd, ' Read and add (they can add results, never change or delete yours)'),
        h('label', { class: 'check' }, permWrite, ' Read and write (they can also replace or delete any record here, yours included)'),
        h('label', { class: 'check' }, permDeposit, ' Add only, read nothing (for a hospital or lab system sending you results: it cannot read anything in your vault, not even what it sent)'),
        h('label', { class: 'check' }, permAgent, ' Agent: someone you trust to act for you here (a parent, an adult child, a lawyer)'),
        powers,
        target.kind === 'record' ? h('p', { class: 'muted' }, 'A single record can only be shared read-only.') : null,
      ),
      field('Access expires', expiry),
      dateField,
      expiryNote,
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button secondary', testid: 'share-cancel', onclick: () => d.close() }, 'Cancel'), submit),
    );
    return form;
  });
}
