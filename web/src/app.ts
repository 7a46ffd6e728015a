// The unlocked app: navigation, overview, records, timeline, identity, vault, about.

import { Session, version, type PairingJoin, type RecordView, type VaultListing, type VaultOverview } from './vault';
import { byId, clear, copyText, downloadBytes, field, h, icon, ICONS, type Child } from './dom';
import { putProfile, type Profile } from './db';
import { BODY_KEEP_MS } from './payloads';
import { announce, clearAlerts, setRollbackAction, showAlert, showError, setRelayForMessages, type AlertAction } from './errors';
import { baseType, fileNameFor, fmtDate, fmtDateTime, fmtMonth, fmtSize, isFhirType, OPENABLE, roleLabel } from './format';
import { current, ctxOrThrow, run, setCtx, type Ctx, type View } from './state';
import { authorBadge, authorText, emptyState, fingerprintEl, withBusy } from './ui';
import { renderStart } from './start';
import { renderAdd } from './upload';
import { openShareDialog } from './share';
import { renderAccess } from './access';
import { renderOverview } from './overview';
import { offerRecord, renderLinks } from './links';
import { confirmDialog } from './dialog';

const NAV: [View, string][] = [
  ['overview', 'Overview'],
  ['records', 'Records'],
  ['timeline', 'Timeline'],
  ['add', 'Add records'],
  ['access', 'Sharing & access'],
  ['links', 'Health links'],
  ['vault', 'Vault & export'],
  ['identity', 'Identity'],
  ['about', 'About'],
];

export async function enterApp(session: Session, profile: Profile, opts: { justCreated?: boolean } = {}): Promise<void> {
  clearAlerts();
  setRelayForMessages(profile.relayUrl);
  const me = session.me();
  setCtx({
    session,
    profile,
    me,
    vaults: null,
    vault: null,
    overview: null,
    listing: null,
    view: 'overview',
    collection: null,
    record: null,
  });
  setRollbackAction(() => repairAction());
  renderTopbar();
  render();
  await loadVaults();
  if (opts.justCreated) announce('Your identity is ready and sealed with your passphrase.');
}

/**
 * What a rollback alert offers: repairing the relay from this device, after the patient
 * confirms (decision 53). The relay checks what is sent back like any change; a relay whose
 * history differs is refused (`fork`) and nothing is sent.
 */
function repairAction(): AlertAction | null {
  const c = current();
  const vault = c?.vault;
  if (!c || !vault) return null;
  return {
    label: 'Repair the relay from this device…',
    testid: 'repair',
    run: (dismiss) => {
      void (async () => {
        const ok = await confirmDialog({
          title: 'Repair the relay?',
          text: [
            h('p', null, 'Do this only if the relay’s operator told you the relay was restored from a backup or moved to another site.'),
            h(
              'p',
              null,
              'This browser sends back the part of your vault’s history the relay lost: the signed entries it has verified, and the ' +
                'encrypted records it added or opened since you unlocked. The relay cannot read them and checks each one like any new change. ' +
                'If the relay shows a different history rather than an older one, nothing is sent.',
            ),
          ],
          confirm: 'Repair',
          testid: 'repair-dialog',
        });
        if (!ok || current() !== c) return;
        try {
          const r = await run((s) => s.repair(vault));
          dismiss();
          if (r.entries === 0) announce('The relay is not behind this device: nothing to repair.');
          else
            announce(
              `Repaired the relay: ${r.entries === 1 ? `entry ${r.after}` : `entries ${r.before + 1} to ${r.after}`} sent back ` +
                `(${r.entries === 1 ? '1 entry' : `${r.entries} entries`}, ${r.blobs === 1 ? '1 encrypted record' : `${r.blobs} encrypted records`} uploaded again).`,
            );
          if (r.stopped)
            showAlert(
              'warning',
              'Repair stopped early',
              `${r.stopped}. Unlock on the device that added those records (the command line keeps every record it synced: vault sync --repair) and repair from there.`,
            );
        } catch (e) {
          showError(e, 'Repair');
          return;
        }
        await refresh();
      })();
    },
  };
}

export function lock(): void {
  // Drop the unlocked session: its keys live only inside the wasm module,
  // which zeroizes them as soon as no operation still runs.
  const c = current();
  setCtx(null);
  setRollbackAction(null);
  try {
    c?.session.close();
  } catch {
    // Already closed.
  }
  clearAlerts();
  announce('Locked.');
  void renderStart();
}

function renderTopbar(): void {
  const c = ctxOrThrow();
  const bar = byId('topbar-actions');
  clear(bar);
  bar.append(
    h('span', { class: 'who', testid: 'topbar-name' }, icon(ICONS.user), c.profile.name),
    h('button', { type: 'button', class: 'button secondary small', testid: 'lock', onclick: lock }, icon(ICONS.lock), 'Lock'),
  );
}

/** Loads the vault list and picks one (the user's own, usually the only one). */
export async function loadVaults(): Promise<void> {
  const c = ctxOrThrow();
  try {
    const vaults = await run((s) => s.vaults(c.profile.person?.fingerprintHex));
    if (current() !== c) return;
    c.vaults = vaults;
    const mine = vaults.filter((v) => v.mine);
    if (!c.vault || !vaults.some((v) => v.id === c.vault)) c.vault = (mine[0] ?? vaults[0])?.id ?? null;
  } catch (e) {
    showError(e, 'Could not list your vaults');
  }
  if (c.vault) await refresh();
  else render();
}

/**
 * What the last re-keying failure shown for each vault said, so that one
 * that persists (a refusal the next refresh meets again) is not raised
 * again at every refresh.
 */
const rekeyFailureShown = new Map<string, string>();

/**
 * Says what the page re-keyed on its own after a device list changed:
 * only the devices listed now open what is written from now on. Records
 * dropped (their key did not open) and a re-keying that did not finish
 * are alerts: a removed device may still open what is added next.
 */
function announceRekeyed(vault: string, r: NonNullable<VaultOverview['rekeyed']>): void {
  if (r.rotated) announce(`Re-keyed ${r.rotated} collection${r.rotated === 1 ? '' : 's'} after a device list changed: only the devices listed now open what is written from now on.`);
  if (r.dropped) showAlert('warning', 'Records dropped while re-keying', `${r.dropped} record(s) whose key did not open (a faulty writer's) were dropped from the re-keyed collections.`);
  const why = new Map<string, number>();
  if (r.failed) why.set(r.failed, 0);
  for (const n of r.notRotated) why.set(n.error, (why.get(n.error) ?? 0) + 1);
  const failed = [...why].map(([error, n]) => (n ? `${n} collection${n === 1 ? ' was' : 's were'} not re-keyed (${error}).` : `The re-keying did not finish (${error}).`)).join(' ');
  if (!failed) {
    rekeyFailureShown.delete(vault);
    return;
  }
  if (rekeyFailureShown.get(vault) === failed) return;
  rekeyFailureShown.set(vault, failed);
  showAlert('warning', 'A removed device may still open what you add next', `${failed} It is tried again at each refresh; from the command line, \`vault sync\` does the same.`);
}

/** Reloads the overview and the records of the selected vault. */
export async function refresh(rerender = true): Promise<void> {
  const c = ctxOrThrow();
  if (!c.vault) return;
  const vault = c.vault;
  try {
    const overview = await run((s) => s.overview(vault));
    const listing = await run((s) => s.records(vault));
    if (current() !== c) return;
    c.overview = overview;
    c.listing = listing;
    if (overview.rekeyed) announceRekeyed(vault, overview.rekeyed);
    else rekeyFailureShown.delete(vault);
  } catch (e) {
    showError(e, 'Could not load the vault');
  }
  if (rerender) render();
}

export function go(view: View): void {
  const c = ctxOrThrow();
  c.view = view;
  c.record = null;
  render();
  byId('main').focus();
}

export function render(): void {
  const c = current();
  if (!c) return;
  const main = byId('main');
  clear(main);
  const label = NAV.find(([v]) => v === c.view)?.[1] ?? 'Vault';
  document.title = `Vault — ${label}`;
  main.append(navBar(c), h('div', { class: 'view', testid: `view-${c.view}` }, viewContent(c)));
}

function navBar(c: Ctx): HTMLElement {
  return h(
    'nav',
    { class: 'tabs', 'aria-label': 'Sections' },
    h(
      'ul',
      null,
      NAV.map(([view, label]) =>
        h(
          'li',
          null,
          h(
            'button',
            {
              type: 'button',
              class: 'tab',
              testid: `nav-${view}`,
              'aria-current': c.view === view ? 'page' : false,
              onclick: () => go(view),
            },
            label,
          ),
        ),
      ),
    ),
  );
}

function viewContent(c: Ctx): Child {
  if (c.view === 'identity') return identityView(c);
  if (c.view === 'about') return aboutView(c);
  if (c.vaults === null) {
    return h('section', { class: 'card' }, h('h1', null, 'Connecting to the relay…'), h('p', null, c.profile.relayUrl), retryButton());
  }
  if (!c.vault) return c.me.role === 'device' ? deviceWaitingView(c) : createVaultView(c);
  if (!c.overview || !c.listing) return h('section', { class: 'card' }, h('h1', null, 'Loading your vault…'), retryButton());
  switch (c.view) {
    case 'overview':
      return renderOverview(c, (id) => {
        c.record = id;
        c.collection = null;
        c.view = 'records';
        render();
        byId('main').focus();
      });
    case 'records':
      return recordsView(c);
    case 'timeline':
      return timelineView(c);
    case 'add':
      return renderAdd(c);
    case 'access':
      return renderAccess(c);
    case 'links':
      return renderLinks(c);
    case 'vault':
      return vaultView(c);
    default:
      return null;
  }
}

function retryButton(): HTMLElement {
  const b: HTMLButtonElement = h('button', { type: 'button', class: 'button secondary', testid: 'retry', onclick: () => withBusy(b, 'Retrying…', loadVaults) }, 'Retry');
  return h('div', { class: 'actions' }, b);
}

/**
 * A device identity with no vault yet: it never creates one; it acts for the
 * person whose key file lists it (`vault devices add` on the command line),
 * and then finds that person's vault in its inbox.
 */
function deviceWaitingView(c: Ctx): HTMLElement {
  const pinned = c.profile.person;
  const person = h('input', {
    type: 'text',
    id: 'device-person',
    testid: 'device-person',
    autocomplete: 'off',
    spellcheck: false,
    placeholder: '64 hexadecimal digits',
    value: pinned?.fingerprintHex ?? '',
  });
  const check: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button primary',
      testid: 'device-check',
      onclick: () =>
        withBusy(check, 'Checking…', async () => {
          const hex = person.value.replace(/\s+/g, '').toLowerCase();
          if (!/^[0-9a-f]{64}$/.test(hex)) {
            showAlert('error', 'Your identity’s fingerprint', 'Type the 64 hexadecimal digits `vault whoami --json` shows where your key file lives.');
            person.focus();
            return;
          }
          if (hex !== c.profile.person?.fingerprintHex) {
            if (hex === c.me.fingerprintHex) {
              showAlert('error', 'That is this browser', 'Type the fingerprint of your identity on the command line, not this device’s own.');
              return;
            }
            const found = await run((s) => s.lookupIdentity(hex));
            if (found.role === 'device') {
              showAlert('error', 'That is a device', 'A device acts for a person: type the fingerprint of your identity (its key file), not another device’s.');
              return;
            }
            c.profile = { ...c.profile, person: { fingerprintHex: hex, fingerprint: found.fingerprint, name: found.name } };
            await putProfile(c.profile);
          }
          await loadVaults();
          if (!c.vault) announce('Not listed yet: run the command shown where your key file lives, then check again.');
        }, 'Could not check'),
    },
    pinned ? 'Check again' : 'Save and check',
  );
  return h(
    'section',
    { class: 'card step', testid: 'device-waiting' },
    h('h1', null, 'Add this browser to your devices'),
    h('p', null, 'This browser is a device of your identity: it holds its own key, never your key file, and reads and writes your vault as you once your key file (or another of your devices) lists it.'),
    h('h2', null, 'Pair with a code'),
    pairingJoinSection(c),
    h('h2', null, 'Or add it by fingerprints'),
    h(
      'ol',
      { class: 'steps' },
      h('li', { class: pinned ? 'done' : 'current' }, 'Type your identity’s fingerprint (where your key file lives, `vault whoami --json` shows it), so this browser acts only for you'),
      h('li', { class: pinned ? 'current' : undefined }, 'Where your key file lives, run the command shown and compare the fingerprint it prints with this browser’s'),
      h('li', null, 'Check again: your vault opens here'),
    ),
    field('Your identity’s fingerprint', person),
    pinned
      ? h(
          'div',
          { testid: 'device-person-shown' },
          h('p', null, `This browser acts for “${pinned.name}”, whose fingerprint is:`),
          fingerprintEl(pinned.fingerprint, undefined, 'small'),
        )
      : null,
    h('h2', null, 'Where your key file lives, run'),
    h('pre', { class: 'json', testid: 'device-add-command' }, `vault devices add ${c.me.fingerprintHex}`),
    h('p', null, 'It prints the fingerprint of the device it adds: it must be this browser’s.'),
    fingerprintEl(c.me.fingerprint, 'device-own-fingerprint'),
    h('p', { class: 'mono small-break', testid: 'device-own-fingerprint-hex' }, c.me.fingerprintHex),
    h('div', { class: 'actions' }, check),
    h('p', { class: 'muted' }, 'If this device is lost, remove it from another device (`vault devices remove`), or take your list back with your key file (`vault devices recover`).'),
  );
}

/**
 * The new device's side of a pairing, kept across re-renders of one
 * context (a wait lasts minutes); another context (a lock and unlock,
 * another profile) starts afresh.
 */
let joinBox: { ctx: Ctx; box: HTMLElement } | null = null;

/**
 * Pairing this browser as a device by a compared code (docs/format.md
 * §3.8, decision 72): type the code the other device shows, then the 8
 * digits it shows; only if they are this screen's is the person pinned,
 * and the page waits until the person's vault lists this browser.
 */
function pairingJoinSection(c: Ctx): HTMLElement {
    if (joinBox?.ctx === c) return joinBox.box;
  const box = h('div', { class: 'stack', testid: 'device-join' });
  joinBox = { ctx: c, box };
  const idle = () => {
    const code: HTMLInputElement = h('input', {
      type: 'text',
      testid: 'device-join-code',
      inputmode: 'numeric',
      autocomplete: 'off',
      placeholder: '10 digits',
    });
    const join: HTMLButtonElement = h('button', { type: 'submit', class: 'button primary', testid: 'device-join-submit' }, 'Join');
    box.replaceChildren(
      h(
        'form',
        {
          class: 'stack',
          onsubmit: async (e: Event) => {
            e.preventDefault();
            const joining = await withBusy(join, 'Joining…', () => run((s) => s.joinPairing(code.value)), 'Could not join');
            if (joining) void waitFor(joining);
          },
        },
        field('The code your other device shows', code, 'Where your key file or another of your devices lives, run `vault devices pair` (or, in the web app, “Pair a new device” under Access).'),
        h('div', { class: 'actions' }, join),
      ),
    );
  };
    const failed = (e: unknown) => {
    if (current() !== c) return;
    idle();
    showError(e, 'Pairing failed');
  };
  const waitFor = async (joining: PairingJoin) => {
    box.replaceChildren(h('p', { testid: 'device-join-status', role: 'status' }, 'Joined. Waiting for the other device to answer…'));
    let revealed;
    try {
      revealed = await joining.wait();
    } catch (e) {
      failed(e);
      return;
    }
    const typed: HTMLInputElement = h('input', { type: 'text', testid: 'device-join-typed', inputmode: 'numeric', autocomplete: 'off', placeholder: '8 digits' });
    const confirm: HTMLButtonElement = h('button', { type: 'submit', class: 'button primary', testid: 'device-join-confirm' }, 'Confirm');
    box.replaceChildren(
      h(
        'form',
        {
          class: 'stack',
          onsubmit: async (e: Event) => {
            e.preventDefault();
                        let person;
            try {
              person = await joining.confirm(typed.value);
            } catch (err) {
              failed(err);
              return;
            }
            if (current() !== c) return;
            c.profile = { ...c.profile, person: { fingerprintHex: person.fingerprintHex, fingerprint: person.fingerprint, name: person.name } };
            await putProfile(c.profile);
            box.replaceChildren(h('p', { testid: 'device-join-status', role: 'status' }, 'Confirmed. Waiting for the other device to add this browser…'));
            const until = Date.now() + 11 * 60 * 1000;
            while (Date.now() < until) {
              await loadVaults();
              if (current() !== c || c.vault) {
                joinBox = null;
                return;
              }
              await new Promise((r) => setTimeout(r, 2000));
            }
            idle();
            showAlert('error', 'Not added yet', 'The other device did not add this browser in time: check that it says the device was added, then press “Check again”.');
          },
        },
        h('p', null, `Pairing as a device of “${revealed.person.name}”, whose fingerprint is:`),
        fingerprintEl(revealed.person.fingerprint, undefined, 'small'),
        h('p', null, 'This screen shows ', h('strong', { class: 'mono', testid: 'device-join-compared' }, revealed.compared), '. If the other device shows other digits, or this is not you, start again.'),
        field('Type the 8 digits the other device shows', typed),
        h('div', { class: 'actions' }, confirm),
      ),
    );
    typed.focus();
  };
  idle();
  return box;
}

function createVaultView(c: Ctx): HTMLElement {
  const button: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button primary',
      testid: 'create-vault',
      onclick: () =>
        withBusy(button, 'Creating your vault…', async () => {
          const id = await run(async (s) => {
            await s.publish();
            return s.createVault();
          });
          c.vault = id;
          c.vaults = await run((s) => s.vaults(c.profile.person?.fingerprintHex));
          c.view = 'add';
          announce('Your vault is ready. Add your first records.');
          await refresh();
        }, 'Could not create the vault'),
    },
    'Create my vault',
  );
  const others = (c.vaults ?? []).filter((v) => !v.mine);
  return h(
    'section',
    { class: 'card step', testid: 'create-vault-step' },
    h('h1', null, 'Create your vault'),
    h(
      'p',
      null,
      'Your vault is where your records live on the relay, sealed so that only you — and the people you share with — can read them. You need it once; this takes a moment.',
    ),
    h(
      'ol',
      { class: 'steps' },
      h('li', { class: 'done' }, 'Identity created and sealed with your passphrase'),
      h('li', { class: 'current' }, 'Create your vault on the relay'),
      h('li', null, 'Add records: FHIR files from your providers, PDFs, images'),
    ),
    h('div', { class: 'actions' }, button),
    h(
      'p',
      { class: 'muted' },
      'Tip: download a backup of your key file from the Identity screen and keep it away from this device; clearing this browser’s data would delete it.',
    ),
    others.length ? h('p', { class: 'muted' }, `${others.length} vault(s) shared with you also exist.`) : null,
  );
}

// ---------- records ----------

function vaultPicker(c: Ctx): HTMLElement | null {
  const vaults = c.vaults ?? [];
  if (vaults.length < 2) return null;
  const sel = h(
    'select',
    {
      testid: 'vault-picker',
      onchange: () => {
        c.vault = sel.value;
        c.collection = null;
        c.record = null;
        void refresh();
      },
    },
    vaults.map((v: VaultListing) => h('option', { value: v.id, selected: v.id === c.vault }, v.mine ? `My vault (${v.id.slice(0, 8)})` : `${v.owner.name}’s vault (${v.id.slice(0, 8)})`)),
  );
  return h('div', { class: 'vault-picker' }, field('Vault', sel));
}

function recordsView(c: Ctx): HTMLElement {
  const listing = c.listing!;
  if (c.record) {
    const r = listing.records.find((x) => x.id === c.record);
    if (r) return recordDetail(c, r);
    c.record = null;
  }
  const collections = [...c.overview!.collections].sort((a, b) => a.name.localeCompare(b.name));
  const counts = new Map<string, number>();
  for (const r of listing.records) counts.set(r.collection, (counts.get(r.collection) ?? 0) + 1);
  const selected = c.collection ? collections.find((col) => col.id === c.collection) : undefined;
  if (c.collection && !selected) c.collection = null;
  const records = listing.records.filter((r) => !c.collection || r.collection === c.collection).sort(byDateDesc);

  const colButton = (id: string | null, name: string, count: number) =>
    h(
      'li',
      null,
      h(
        'button',
        {
          type: 'button',
          class: 'collection-button',
          testid: id ? 'collection-item' : 'collection-all',
          'data-collection-name': name,
          'aria-current': c.collection === id ? 'true' : false,
          onclick: () => {
            c.collection = id;
            render();
          },
        },
        h('span', { class: 'collection-name' }, name),
        h('span', { class: 'count', testid: 'collection-count' }, String(count)),
      ),
    );

  const shareBtn = selected
    ? h(
        'button',
        { type: 'button', class: 'button secondary', testid: 'share-collection', onclick: () => openShareDialog(c, { kind: 'collection', id: selected.id, name: selected.name }) },
        icon(ICONS.share),
        'Share this collection',
      )
    : null;

  return h(
    'div',
    { class: 'records-layout' },
    h(
      'aside',
      { class: 'sidebar', 'aria-label': 'Collections' },
      vaultPicker(c),
      h('h2', { class: 'sidebar-title' }, 'Collections'),
      h(
        'ul',
        { class: 'collection-list', testid: 'collection-list' },
        colButton(null, 'All records', listing.records.length),
        collections.map((col) => colButton(col.id, col.name, counts.get(col.id) ?? col.records)),
      ),
    ),
    h(
      'section',
      { class: 'records-panel', 'aria-labelledby': 'records-heading' },
      h(
        'div',
        { class: 'panel-head' },
        h('h1', { id: 'records-heading', testid: 'records-heading' }, selected ? selected.name : 'All records'),
        h('div', { class: 'panel-actions' }, shareBtn, refreshButton()),
      ),
      failedWarning(c),
      records.length
        ? h('ul', { class: 'record-list', testid: 'record-list' }, records.map((r) => h('li', null, recordRow(c, r, !c.collection))))
        : emptyState(collections.length ? 'No records here yet.' : 'Your vault is empty. Add records from “Add records”.', 'records-empty'),
    ),
  );
}

function refreshButton(): HTMLButtonElement {
  const b: HTMLButtonElement = h('button', { type: 'button', class: 'button secondary', testid: 'refresh', onclick: () => withBusy(b, 'Refreshing…', refresh) }, 'Refresh');
  return b;
}

function failedWarning(c: Ctx): HTMLElement | null {
  const failed = c.listing?.failed ?? [];
  if (!failed.length) return null;
  return h(
    'div',
    { class: 'inline-warning', testid: 'failed-records', role: 'note' },
    icon(ICONS.warn),
    h(
      'div',
      null,
      h('strong', null, `${failed.length} record${failed.length === 1 ? '' : 's'} failed verification and ${failed.length === 1 ? 'is' : 'are'} hidden.`),
      h('p', null, 'They may have been altered on the relay. Do not trust the relay for these records; contact support if this persists.'),
      h('details', null, h('summary', null, 'Details'), h('ul', null, failed.map((f) => h('li', null, `${f.id.slice(0, 12)}…: ${f.code}: ${f.message}`)))),
    ),
  );
}

function when(r: RecordView): number {
  return r.effectiveAt ?? r.createdAt;
}

function byDateDesc(a: RecordView, b: RecordView): number {
  return when(b) - when(a) || a.title.localeCompare(b.title);
}

function typeLabel(r: RecordView): string {
  return r.resourceType ?? baseType(r.contentType);
}

function recordRow(c: Ctx, r: RecordView, showCollection: boolean): HTMLElement {
  return h(
    'button',
    {
      type: 'button',
      class: 'record-row',
      testid: 'record-row',
      'data-record-id': r.id,
      'data-title': r.title,
      onclick: () => {
        c.record = r.id;
        if (c.view !== 'records') c.view = 'records';
        render();
        byId('main').focus();
      },
    },
    h('span', { class: 'record-icon' }, icon(ICONS.file)),
    h(
      'span',
      { class: 'record-main' },
      h('span', { class: 'record-title', testid: 'record-title' }, r.title),
      h(
        'span',
        { class: 'record-meta' },
        [typeLabel(r), fmtDate(when(r)), showCollection ? r.collectionName : null].filter(Boolean).join(' · '),
      ),
      rowValue(r),
      !r.author.isOwner ? authorBadge(r.author) : null,
      !r.downloaded ? h('span', { class: 'badge badge-neutral' }, 'large file, not downloaded yet') : null,
    ),
  );
}

/** The headline value of a record (an Observation's value), shown in lists. */
function rowValue(r: RecordView): HTMLElement | null {
  const value = r.summary.find(([label]) => label === 'Value')?.[1];
  return value ? h('span', { class: 'record-value', testid: 'record-value' }, value) : null;
}

function recordDetail(c: Ctx, r: RecordView): HTMLElement {
  const vault = c.vault!;
  const output = h('div', { class: 'record-output', testid: 'record-output' });
  const openable = OPENABLE.has(baseType(r.contentType));
  const fhir = isFhirType(r.contentType) || r.resourceType !== null;

  // A large record opened from a spool is a file on disk for BODY_KEEP_MS:
  // this view's Open and Download use it again meanwhile, instead of
  // decrypting the record into another copy.
  let spooled: { body: Blob; until: number } | undefined;
  const openBody = async (): Promise<Uint8Array | Blob> => {
    if (spooled && performance.now() < spooled.until) return spooled.body;
    const bytes = await run((s) => s.openRecord(vault, r.id));
    if (bytes instanceof Blob) spooled = { body: bytes, until: performance.now() + BODY_KEEP_MS - 60_000 };
    if (!r.downloaded) {
      r.downloaded = true;
    }
    return bytes;
  };

  const openBtn: HTMLButtonElement | null = openable
    ? h(
        'button',
        {
          type: 'button',
          class: 'button primary',
          testid: 'record-open',
          onclick: () =>
            withBusy(openBtn, 'Decrypting…', async () => {
              // Open the tab first (synchronously with the click, so it is not blocked), then fill it.
              const tab = window.open('about:blank', '_blank');
              if (tab) tab.opener = null;
              const bytes = await openBody();
              const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type: baseType(r.contentType) }));
              if (tab) tab.location.href = url;
              else window.location.assign(url);
              setTimeout(() => URL.revokeObjectURL(url), 5 * 60_000);
            }, 'Could not open the record'),
        },
        'Open',
      )
    : null;

  const showBtn: HTMLButtonElement | null = fhir
    ? h(
        'button',
        {
          type: 'button',
          class: 'button secondary',
          testid: 'record-show-data',
          onclick: () =>
            withBusy(showBtn, 'Decrypting…', async () => {
              const body = await openBody();
              let text = new TextDecoder().decode(body instanceof Blob ? await body.arrayBuffer() : body);
              try {
                text = JSON.stringify(JSON.parse(text), null, 2);
              } catch {
                /* shown as is */
              }
              clear(output);
              output.append(h('h2', null, 'FHIR data'), h('pre', { class: 'json', tabindex: 0 }, text));
            }, 'Could not open the record'),
        },
        'Show FHIR data',
      )
    : null;

  const dlBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'record-download',
      onclick: () =>
        withBusy(dlBtn, 'Decrypting…', async () => {
          const bytes = await openBody();
          downloadBytes(bytes, fileNameFor(r.title, r.contentType), 'application/octet-stream');
        }, 'Could not download the record'),
    },
    icon(ICONS.download),
    'Download',
  );

  const shareBtn = h(
    'button',
    { type: 'button', class: 'button secondary', testid: 'share-record', onclick: () => openShareDialog(c, { kind: 'record', id: r.id, name: r.title }) },
    icon(ICONS.share),
    'Share this record',
  );
  const linkBtn = fhir
    ? h(
        'button',
        {
          type: 'button',
          class: 'button secondary',
          testid: 'link-record',
          onclick: () => {
            offerRecord(r.id, r.title);
            go('links');
          },
        },
        icon(ICONS.share),
        'Health link for this record',
      )
    : null;

  const mine = (c.vaults ?? []).some((v) => v.id === c.vault && v.mine);
  const deleteBtn: HTMLButtonElement | null = mine
    ? h(
        'button',
        {
          type: 'button',
          class: 'button danger',
          testid: 'record-delete',
          onclick: async () => {
            const vault = c.vault;
            if (!vault) return;
            const purge = h('input', { type: 'checkbox', testid: 'record-delete-purge' });
            const ok = await confirmDialog({
              title: `Delete “${r.title}”?`,
              testid: 'delete-dialog',
              danger: true,
              confirm: 'Delete',
              text: [
                h('p', null, 'The deletion is signed and kept in your vault’s history. Its versions stay readable to you and to those who could already read them; anyone you share this collection with from now on cannot read them.'),
                h('label', { class: 'check' }, purge, ' Also destroy every version for good (the relay and this device delete them; nobody, you included, can open them again).'),
                h('p', { class: 'muted' }, 'Copies someone already downloaded cannot be taken back.'),
              ],
            });
            if (!ok) return;
            const done = await withBusy(deleteBtn, 'Deleting…', () => run((s) => s.deleteRecord(vault, r.id, purge.checked)), 'Delete failed');
            if (!done) return;
            announce(purge.checked ? `Deleted “${r.title}” and destroyed ${done.purgedVersions} version(s) of it.` : `Deleted “${r.title}”.`);
            c.record = null;
            await refresh();
          },
        },
        'Delete',
      )
    : null;

  const a = r.author;
  const rows: [string, string][] = [
    ['Type', r.resourceType ? `${r.resourceType} (FHIR)` : baseType(r.contentType)],
    ['Clinical date', r.effectiveAt ? fmtDate(r.effectiveAt) : '—'],
    ['Added', fmtDateTime(r.createdAt)],
    ['Collection', r.collectionName],
    ['Size', r.bodyLen !== null ? fmtSize(r.bodyLen) : `${fmtSize(r.ciphertextLen)} encrypted`],
    ['Version', String(r.version)],
    ['Record id', r.id],
  ];
  return h(
    'article',
    { class: 'record-detail', testid: 'record-detail', 'data-record-id': r.id, 'aria-labelledby': 'record-title' },
    h(
      'button',
      {
        type: 'button',
        class: 'link-button',
        testid: 'record-back',
        onclick: () => {
          c.record = null;
          render();
        },
      },
      '← Back to the list',
    ),
    h('h1', { id: 'record-title', testid: 'record-detail-title' }, r.title),
    h(
      'section',
      { class: a.isOwner ? 'author-card' : 'author-card author-other', testid: 'record-author', 'aria-label': 'Author' },
      h('span', { class: 'badge badge-ok', testid: 'signature-verified' }, icon(ICONS.shieldCheck), 'Signature verified'),
      h('p', { class: 'author-line', testid: 'record-author-text' }, authorText(a)),
      h('p', { class: 'muted' }, 'Author fingerprint:'),
      fingerprintEl(a.fingerprint, 'record-author-fingerprint', 'small'),
    ),
    !r.downloaded ? h('p', { class: 'inline-note', testid: 'record-not-downloaded' }, 'Large file, not downloaded yet: it is fetched and decrypted when you open or download it.') : null,
    r.summary.length
      ? h(
          'section',
          { 'aria-label': 'Summary' },
          h('h2', null, 'Summary'),
          h('dl', { class: 'summary', testid: 'record-summary' }, r.summary.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
        )
      : null,
    h('div', { class: 'actions' }, openBtn, showBtn, dlBtn, shareBtn, linkBtn, deleteBtn),
    h('h2', null, 'Details'),
    h('dl', { class: 'details', testid: 'record-meta' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
    output,
  );
}

// ---------- timeline ----------

function timelineView(c: Ctx): HTMLElement {
  const records = [...c.listing!.records].sort(byDateDesc);
  const byYear = new Map<number, Map<number, RecordView[]>>();
  for (const r of records) {
    const d = new Date(when(r) * 1000);
    const y = d.getFullYear();
    const m = d.getMonth();
    if (!byYear.has(y)) byYear.set(y, new Map());
    const months = byYear.get(y)!;
    if (!months.has(m)) months.set(m, []);
    months.get(m)!.push(r);
  }
  return h(
    'section',
    { class: 'timeline', testid: 'timeline', 'aria-labelledby': 'timeline-heading' },
    h('div', { class: 'panel-head' }, h('h1', { id: 'timeline-heading' }, 'Timeline'), h('div', { class: 'panel-actions' }, refreshButton())),
    h('p', { class: 'muted' }, 'All records by clinical date (or the date they were added), newest first.'),
    failedWarning(c),
    records.length === 0 ? emptyState('No records yet.') : null,
    Array.from(byYear.entries()).map(([year, months]) =>
      h(
        'section',
        { class: 'tl-year', testid: 'timeline-year' },
        h('h2', null, String(year)),
        Array.from(months.entries()).map(([, rs]) =>
          h(
            'section',
            { class: 'tl-month' },
            h('h3', null, `${fmtMonth(when(rs[0]))} ${year}`),
            h('ul', { class: 'record-list' }, rs.map((r) => h('li', null, recordRow(c, r, true)))),
          ),
        ),
      ),
    ),
  );
}

// ---------- identity ----------

function identityView(c: Ctx): HTMLElement {
  const me = c.me;
  const text = h('textarea', { readonly: true, rows: 4, class: 'mono', testid: 'identity-text', spellcheck: false }, me.identityText);
  const copyBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'copy-identity',
      onclick: async () => {
        const ok = await copyText(me.identityText, text);
        announce(ok ? 'Identity text copied.' : 'Select the text and copy it.');
      },
    },
    icon(ICONS.copy),
    'Copy',
  );
  const relay = h('input', { type: 'url', value: c.profile.relayUrl, testid: 'settings-relay', spellcheck: false });
  const invite = h('input', { type: 'password', value: c.profile.invite ?? '', testid: 'settings-invite', autocomplete: 'off', spellcheck: false, maxlength: 256 });
  const saveRelay: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'settings-relay-save',
      onclick: () =>
        withBusy(saveRelay, 'Saving…', async () => {
          const url = relay.value.trim().replace(/\/+$/, '');
          try {
            const u = new URL(url);
            if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
          } catch {
            showAlert('error', 'Relay address', 'The relay address is not a valid http(s) URL.');
            return;
          }
          c.profile.relayUrl = url;
          c.profile.invite = invite.value.trim() || undefined;
          await putProfile(c.profile);
          announce('Relay address saved. It is used from the next unlock; locking now.');
          lock();
        }),
    },
    'Save and lock',
  );
  const keyBtn = h(
    'button',
    {
      type: 'button',
      class: 'button primary',
      testid: 'download-key-file',
      onclick: () => {
        downloadBytes(c.profile.keyFile, `vault-key-${me.fingerprintHex.slice(0, 8)}.age`);
        announce('Key file downloaded. Keep it somewhere safe, away from this device.');
      },
    },
    icon(ICONS.download),
    'Download my key file',
  );
  return h(
    'div',
    { class: 'stack' },
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'fp-heading' },
      h('h1', { id: 'fp-heading' }, 'Your fingerprint'),
      h('p', null, 'People you share with check these digits with you (in person or by phone) before trusting your key. Your own key never leaves this device unsealed.'),
      fingerprintEl(me.fingerprint, 'my-fingerprint'),
      h('p', { class: 'muted' }, 'As 64 hex digits (for look-ups):'),
      h('p', { class: 'mono small-break', testid: 'my-fingerprint-hex' }, me.fingerprintHex),
      h('dl', { class: 'details' }, h('dt', null, 'Name on this device'), h('dd', null, c.profile.name), h('dt', null, 'Published name'), h('dd', null, me.name), h('dt', null, 'Role'), h('dd', null, roleLabel(me.role))),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'idtext-heading' },
      h('h2', { id: 'idtext-heading' }, 'Your identity text'),
      h('p', null, 'Public: send it to a clinician so they can add you. It contains your public keys only.'),
      field('Identity text', text),
      h('div', { class: 'actions' }, copyBtn),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'backup-heading' },
      h('h2', { id: 'backup-heading' }, 'Back up your key file'),
      h('p', null, 'Your key file is sealed with your passphrase. Keep a copy outside this browser (clearing site data deletes it). Without the key file and the passphrase, your records cannot be opened by anyone.'),
      h('div', { class: 'actions' }, keyBtn),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'relay-heading' },
      h('h2', { id: 'relay-heading' }, 'Relay'),
      field('Relay URL', relay, 'Where your encrypted records are stored. Changing it locks the app.'),
      field('Invitation token', invite, 'Only if the relay\'s operator gave you one: some relays admit new identities by invitation.'),
      h('div', { class: 'actions' }, saveRelay),
    ),
  );
}

// ---------- vault: checkpoint and export ----------

function vaultView(c: Ctx): HTMLElement {
  const ov = c.overview!;
  const vault = c.vault!;
  const code = h('input', { type: 'text', testid: 'checkpoint-input', autocomplete: 'off', spellcheck: false });
  const result = h('div', { testid: 'checkpoint-result', 'aria-live': 'polite' });
  const compareBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary',
      testid: 'checkpoint-compare',
      onclick: async () => {
        clear(result);
        if (!code.value.trim()) {
          showAlert('error', 'Checkpoint code needed', 'Type the code shown on your other device.');
          return;
        }
        try {
          await run((s) => s.compareCheckpoint(vault, code.value.trim()));
          result.append(h('p', { class: 'inline-ok' }, icon(ICONS.check), 'The codes match: both devices see the same vault history.'));
        } catch (e) {
          result.append(
            h(
              'div',
              { class: 'inline-warning' },
              icon(ICONS.warn),
              h('p', null, h('strong', null, 'The codes do not match. '), 'The two devices see different histories of this vault: the relay may be showing them different data. Do not trust this relay for now and contact support.'),
            ),
          );
          showError(e, 'Checkpoint comparison');
        }
      },
    },
    'Compare',
  );
  const exportBtn: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button primary',
      testid: 'export-vault',
      onclick: () =>
        withBusy(exportBtn, 'Exporting…', async () => {
          const tar = await run((s) => s.exportVault(vault));
          const date = new Date().toISOString().slice(0, 10);
          downloadBytes(tar, `vault-export-${date}.tar`, 'application/x-tar');
          announce(`Export ready (${fmtSize(tar.length)}).`);
        }, 'Export failed'),
    },
    icon(ICONS.download),
    'Export my vault',
  );
  return h(
    'div',
    { class: 'stack' },
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'cp-heading' },
      h('h1', { id: 'cp-heading' }, 'Checkpoint code'),
      h('p', null, 'This code summarises the whole verified history of your vault. Another device (or `vault verify` on a computer) should show the same code; if not, the relay is showing them different data.'),
      h('p', { class: 'checkpoint mono', testid: 'checkpoint-code' }, ov.checkpoint),
      h('p', { class: 'muted' }, `Vault ${ov.id} · ${ov.seq} entries in its history`),
      field('Code from another device', code),
      h('div', { class: 'actions' }, compareBtn),
      result,
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'export-heading' },
      h('h2', { id: 'export-heading' }, 'Export'),
      h(
        'p',
        null,
        'Download everything as one .tar archive of standard age-encrypted files (plus a README). It can be decrypted without this app, with the standard `age` tool and your key file — the README inside explains how.',
      ),
      ov.keyFileIsMe
        ? h('div', { class: 'actions' }, exportBtn)
        : h('p', { class: 'muted', testid: 'export-elsewhere' }, 'This browser is one of your devices: export with your key file, where it lives (`vault export` on the command line). An export is sealed to the key file’s own key, which devices never hold.'),
    ),
  );
}

// ---------- about / integrity ----------

async function bundleHash(): Promise<string> {
  const res = await fetch(location.origin + location.pathname, { cache: 'force-cache' });
  if (!res.ok) throw new Error(`could not fetch this page (HTTP ${res.status})`);
  const digest = await crypto.subtle.digest('SHA-256', await res.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function aboutView(c: Ctx): HTMLElement {
  const hashEl = h('p', { class: 'mono small-break', testid: 'bundle-hash' }, 'Computing…');
  bundleHash().then(
    (hex) => {
      hashEl.textContent = hex;
    },
    (e) => {
      hashEl.textContent = 'unavailable';
      showError(e, 'Could not compute the bundle hash');
    },
  );
  let wasmVersion = '?';
  try {
    wasmVersion = version();
  } catch (e) {
    showError(e);
  }
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'about-heading', testid: 'about' },
    h('h1', { id: 'about-heading' }, 'About and integrity'),
    h(
      'dl',
      { class: 'details' },
      h('dt', null, 'App version'),
      h('dd', { testid: 'app-version' }, `${__APP_VERSION__} (cryptography module ${wasmVersion})`),
      h('dt', null, 'Relay'),
      h('dd', { testid: 'about-relay' }, c.profile.relayUrl),
    ),
    h('h2', null, 'Bundle hash'),
    hashEl,
    h(
      'p',
      null,
      'This is the SHA-256 of the page you are running. The page pins every script and style by its hash, and the script pins the cryptography module, so this one value identifies the whole app. Compare it with the hash published by whoever built the app — for example, run ',
      h('code', null, `curl -s ${location.origin + location.pathname} | sha256sum`),
      ' and check both match. If they differ, do not enter your passphrase.',
    ),
    h('h2', null, 'How your data is protected'),
    h(
      'ul',
      null,
      h('li', null, 'Records are encrypted in this page (WebAssembly) before upload; the relay stores ciphertext only.'),
      h('li', null, 'Every record and every change is signed; the app shows a record only after checking its signature and the vault’s history.'),
      h('li', null, 'This browser keeps your passphrase-sealed key file and the verified vault history, never your passphrase or record contents.'),
    ),
  );
}
