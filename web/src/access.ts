// Who has access to what, and revocation (which rotates keys).

import { h, icon, ICONS } from './dom';
import { confirmDialog } from './dialog';
import { announce, showError } from './errors';
import { fmtExpiry, permLabel, roleLabel } from './format';
import { run, type Ctx } from './state';
import { refresh } from './app';
import { openShareDialog } from './share';
import { emptyState, fingerprintEl, memberName, withBusy } from './ui';
import type { DeviceView, Elsewhere, Member, PairingOffer, RevokeSummary, VaultOverview } from './vault';

let lastSummary: { text: string } | null = null;

export function renderAccess(c: Ctx): HTMLElement {
  const ov = c.overview!;
  const people = new Map<string, { m: Member; where: string[] }>();
  for (const col of ov.collections) {
    for (const m of col.members) {
      if (m.permission === 'owner') continue;
      const p = people.get(m.fingerprintHex) ?? { m, where: [] };
      p.where.push(`${col.name} (${m.permission === 'agent' ? `agent: ${m.powers ?? 'read'}` : permLabel(m.permission)})`);
      people.set(m.fingerprintHex, p);
    }
  }
  for (const rs of ov.recordShares) {
    const p = people.get(rs.who.fingerprintHex) ?? { m: rs.who, where: [] };
    p.where.push(`record “${rs.title ?? rs.record.slice(0, 8)}”`);
    people.set(rs.who.fingerprintHex, p);
  }

  const summaryEl = lastSummary ? h('p', { class: 'inline-ok', testid: 'revoke-summary' }, icon(ICONS.check), lastSummary.text) : null;
  lastSummary = null;
  // An agent's rotation sealed the patient's own key wrongly (the log
  // cannot check it): ending the agency re-keys from the keys the patient
  // holds (decision 65).
  const withheld = ov.withheldKeys.map(({ collection, signer }) => {
    const name = ov.collections.find((col) => col.id === collection)?.name ?? collection.slice(0, 8);
    return h(
      'div',
      { class: 'alert alert-error', role: 'alert', testid: 'withheld-key' },
      h('p', null, `Your key of “${name}” does not open: ${memberName(signer)}, your agent, sealed it wrongly when re-keying the collection. End their agency: the collection is re-keyed from the keys you hold.`),
      h('div', { class: 'actions' }, endAgencyButton(c, signer)),
    );
  });

  return h(
    'div',
    { class: 'stack', testid: 'access' },
    h('div', { class: 'panel-head' }, h('h1', null, 'Sharing and access')),
    summaryEl,
    withheld,
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'people-heading' },
      h('h2', { id: 'people-heading' }, 'People with access'),
      people.size === 0
        ? emptyState('Nobody but you has access. Share a collection from the Records screen.', 'access-empty')
        : h(
            'ul',
            { class: 'people', testid: 'access-people' },
            Array.from(people.values()).map(({ m, where }) =>
              h(
                'li',
                { class: 'person', testid: 'access-person', 'data-name': memberName(m) },
                h('div', { class: 'person-head' }, h('strong', null, memberName(m)), h('span', { class: 'muted' }, ` · ${roleLabel(m.role)}`)),
                fingerprintEl(m.fingerprint, undefined, 'small'),
                h('p', null, `Access to: ${where.join(', ')}`),
                h('div', { class: 'actions' }, revokeButton(c, m, null, isAgent(ov, m) ? 'End agency and revoke everywhere' : 'Revoke everywhere', 'revoke-everywhere')),
              ),
            ),
          ),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'cols-heading' },
      h('h2', { id: 'cols-heading' }, 'Collections'),
      ov.collections.length === 0
        ? emptyState('No collections yet.')
        : [...ov.collections].sort((a, b) => a.name.localeCompare(b.name)).map((col) =>
            h(
              'section',
              { class: 'access-collection', testid: 'access-collection', 'data-collection-name': col.name },
              h('h3', null, col.name, h('span', { class: 'muted' }, ` · ${col.records} record${col.records === 1 ? '' : 's'} · key epoch ${col.epoch}`)),
              col.members.every((m) => m.permission === 'owner')
                ? h('p', { class: 'muted' }, 'Only you have access.')
                : h(
                    'div',
                    { class: 'table-wrap' },
                    h(
                      'table',
                      { class: 'table' },
                      h('thead', null, h('tr', null, ['Who', 'Permission', 'Expires', ''].map((t) => h('th', { scope: 'col' }, t)))),
                      h(
                        'tbody',
                        null,
                        col.members.map((m) =>
                          h(
                            'tr',
                            { testid: 'access-member', 'data-name': memberName(m) },
                            h('td', null, h('strong', null, m.permission === 'owner' ? 'You' : memberName(m)), h('br'), h('span', { class: 'muted' }, roleLabel(m.role))),
                            h('td', { testid: 'access-permission' }, m.permission === 'owner' ? 'owner' : m.permission === 'agent' ? `agent: ${m.powers ?? 'read'}` : permLabel(m.permission)),
                            h('td', { testid: 'access-expiry' }, m.permission === 'owner' ? '—' : fmtExpiry(m.expiresAt)),
                            h('td', null, m.permission === 'owner' ? null : revokeButton(c, m, { id: col.id, name: col.name }, m.permission === 'agent' ? 'End agency' : 'Revoke', m.permission === 'agent' ? 'end-agency' : 'revoke-collection')),
                          ),
                        ),
                      ),
                    ),
                  ),
              h(
                'div',
                { class: 'actions' },
                h(
                  'button',
                  { type: 'button', class: 'button secondary small', testid: 'access-share', onclick: () => openShareDialog(c, { kind: 'collection', id: col.id, name: col.name }) },
                  icon(ICONS.share),
                  `Share “${col.name}”`,
                ),
              ),
            ),
          ),
    ),
    (c.vaults ?? []).some((v) => v.id === c.vault && v.mine) ? devicesCard(c, ov) : null,
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'rs-heading' },
      h('h2', { id: 'rs-heading' }, 'Single records shared'),
      ov.recordShares.length === 0
        ? emptyState('No single records are shared.')
        : h(
            'ul',
            { class: 'people' },
            ov.recordShares.map((rs) =>
              h('li', { testid: 'access-record-share' }, h('strong', null, rs.title ?? rs.record.slice(0, 12)), ` — ${memberName(rs.who)} (${roleLabel(rs.who.role)}), ${fmtExpiry(rs.who.expiresAt)}`),
            ),
          ),
    ),
  );
}

/**
 * Your devices (docs/format.md §8.11): each has its own key and reads and
 * writes your vault as you; one that is lost is removed alone, and every
 * collection is re-keyed.
 */
function devicesCard(c: Ctx, ov: VaultOverview): HTMLElement {
  const input: HTMLInputElement = h('input', {
    id: 'device-fingerprint',
    type: 'text',
    testid: 'device-fingerprint',
    autocomplete: 'off',
    spellcheck: false,
    placeholder: '64 hexadecimal digits',
    'aria-describedby': 'device-help',
  });
  const add: HTMLButtonElement = h(
    'button',
    {
      type: 'submit',
      class: 'button secondary small',
      testid: 'device-add',
    },
    'Add device',
  );
  const form = h(
    'form',
    {
      class: 'stack',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const vault = c.vault;
        const fp = input.value.replace(/\s+/g, '').toLowerCase();
        if (!vault) return;
        if (!/^[0-9a-f]{64}$/.test(fp)) {
          announce('A device fingerprint is 64 hexadecimal digits, as `vault whoami` shows it on that device.');
          input.focus();
          return;
        }
        const done = await withBusy(add, 'Adding…', () => run((s) => s.addDevice(vault, fp)), 'Adding the device failed');
        if (!done) return;
        await deviceAdded(done);
      },
    },
    h('label', { for: 'device-fingerprint' }, 'Or add a device by its fingerprint'),
    h(
      'p',
      { id: 'device-help', class: 'muted' },
      'On the new device run `vault init --role device --name laptop` and `vault whoami --publish`, then type here the 64-digit fingerprint `vault whoami --json` shows there. Whoever holds that device reads and writes everything here.',
    ),
    input,
    h('div', { class: 'actions' }, add),
  );
  return h(
    'section',
    { class: 'card', 'aria-labelledby': 'devices-heading', testid: 'devices' },
    h('h2', { id: 'devices-heading' }, 'Your devices'),
    ov.devices.length === 0
      ? emptyState('Only this browser acts for you. Add a laptop or another profile as a device of yours.', 'devices-empty')
      : h(
          'ul',
          { class: 'people' },
          ov.devices.map((d) =>
            h(
              'li',
              { class: 'person', testid: 'device', 'data-name': d.name },
              h('div', { class: 'person-head' }, h('strong', null, d.name), h('span', { class: 'muted' }, d.thisDevice ? ' · this device' : '')),
              fingerprintEl(d.fingerprint, undefined, 'small'),
              d.thisDevice ? h('p', { class: 'muted' }, 'Another of your devices, or your key file, removes this one.') : h('div', { class: 'actions' }, removeDeviceButton(c, d)),
            ),
          ),
        ),
    pairingSection(c),
    form,
    ov.keyFileIsMe && ov.devices.length + ov.formerDevices.length > 0 ? recoverDevicesButton(c, ov) : null,
  );
}

/**
 * The pairing in progress, kept across re-renders of the card (a wait
 * lasts up to 10 minutes).
 */
let pairing: { vault: string; box: HTMLElement; offer: PairingOffer | null } | null = null;

// A code this page shows stops working when the page is left (closed,
// reloaded or navigated away), not 10 minutes later: the close is sent
// with `keepalive`, which outlives the page.
addEventListener('pagehide', () => pairing?.offer?.closeOnLeave());
// A page kept in the back/forward cache and shown again lost its code
// that way: it starts over rather than show a code that no longer works.
addEventListener('pageshow', (e: PageTransitionEvent) => {
  if (!e.persisted || !pairing) return;
  pairing = null;
  announce('The pairing code stopped working when you left the page: start again.');
  void refresh();
});

/**
 * Where a change of the device list went beyond this vault, as sentences
 * for a summary (empty when there is nothing to say); `again` is what to
 * do to finish what was not reached ("add it again").
 */
function elsewhereText(e: Elsewhere, again: string): string {
  const vault = (hex: string) => `${hex.slice(0, 16)}…`;
  const parts: string[] = [];
  if (e.owned) parts.push(`Your ${e.owned} other vault${e.owned === 1 ? '' : 's'} took the same list.`);
  if (e.carried) parts.push(`Carried into ${e.carried} vault${e.carried === 1 ? '' : 's'} shared with you, so their owners’ grants reach your devices.`);
  if (e.notPublished) parts.push(`The relay’s directory did not take your list (${e.notPublished}): people who share with you next grant your key file only; ${again} to finish.`);
  for (const n of e.notReached) parts.push(`Vault ${vault(n.vault)} was not brought up to date (${n.error}): ${again} to finish.`);
  if (e.strangersNotReached) parts.push(`${e.strangersNotReached} vault${e.strangersNotReached === 1 ? '' : 's'} shared with you by people this browser has not accepted ${e.strangersNotReached === 1 ? 'was' : 'were'} not brought up to date: where your key file lives, accept their owners (\`vault inbox accept\`) and make the same change again there.`);
  if (e.inboxNotRead) parts.push(`The relay’s inbox could not be read (${e.inboxNotRead}), so vaults shared with you that this browser does not follow were not brought up to date: ${again} to finish.`);
  for (const r of e.refused) parts.push(`Vault ${vault(r.vault)}, collection ${vault(r.collection)}, did not take your list (${r.error}): it carries another list of yours; take your list back with your key file, or ask its owner to share again.`);
  return parts.map((p) => ` ${p}`).join('');
}

/**
 * Says that a device was added (by its fingerprint or by pairing), and
 * which collection keys, if any, still wait to be rotated; then shows the
 * devices again.
 */
async function deviceAdded(done: { name: string; notRekeyed: number; elsewhere: Elsewhere }): Promise<void> {
  const failed = done.notRekeyed ? ` ${done.notRekeyed} collection key(s) could not be rotated: add it again to finish.` : '';
  lastSummary = { text: `Added “${done.name}” to your devices: it now reads and writes your vault as you.${failed}${elsewhereText(done.elsewhere, 'add it again')}` };
  announce(lastSummary.text);
  await refresh();
}

/**
 * Pairing a new device by a compared code (docs/format.md §3.8, decision
 * 72): the page opens a pairing and shows its code; once a device joins,
 * the person types the 8 digits the new device shows, and only if they are
 * this screen's is the device added.
 */
function pairingSection(c: Ctx): HTMLElement {
  if (pairing && pairing.vault === c.vault) return pairing.box;
  const box = h('div', { class: 'stack', testid: 'device-pairing' });
  const reset = () => {
    pairing = null;
    box.replaceChildren(...idle());
  };
  const idle = (): HTMLElement[] => {
    const start: HTMLButtonElement = h(
      'button',
      {
        type: 'button',
        class: 'button primary small',
        testid: 'device-pair',
        onclick: async () => {
          const vault = c.vault;
          if (!vault) return;
          const offer = await withBusy(start, 'Opening…', () => run((s) => s.openPairing(vault)), 'Could not start pairing');
          if (!offer) return;
          pairing = { vault, box, offer };
          void waitFor(offer);
        },
      },
      'Pair a new device',
    );
    return [
      h('p', null, 'Pair a laptop or another profile: this page shows a code to type there, then both screens show the same 8 digits.'),
      h('div', { class: 'actions' }, start),
    ];
  };
  const cancelButton = (offer: PairingOffer) =>
    h(
      'button',
      {
        type: 'button',
        class: 'button secondary small',
        testid: 'device-pair-cancel',
        onclick: async () => {
          reset();
          await offer.close().catch(() => undefined);
          announce('Pairing cancelled: nothing was added.');
        },
      },
      'Cancel',
    );
  const waitFor = async (offer: PairingOffer) => {
    box.replaceChildren(
      h('p', null, 'On the new device run `vault init --role device --name laptop`, then:'),
      h('pre', { class: 'json', testid: 'device-pair-command' }, `vault devices join ${offer.code}`),
      h('p', { class: 'muted', testid: 'device-pair-status', role: 'status' }, 'Waiting for the device… The code works for 10 minutes, for one device.'),
      h('div', { class: 'actions' }, cancelButton(offer)),
    );
    announce(`Pairing code ${offer.code}: type it on the new device.`);
    let joined;
    try {
      joined = await offer.wait();
    } catch (e) {
      // A pairing cancelled (or replaced) meanwhile says nothing.
      if (pairing?.offer !== offer) return;
      reset();
      await offer.close().catch(() => undefined);
      showError(e, 'Pairing failed');
      return;
    }
    if (pairing?.offer !== offer) return;
    const typed: HTMLInputElement = h('input', {
      id: 'device-pair-typed',
      type: 'text',
      testid: 'device-pair-typed',
      inputmode: 'numeric',
      autocomplete: 'off',
      placeholder: '8 digits',
    });
    const confirm: HTMLButtonElement = h('button', { type: 'submit', class: 'button primary small', testid: 'device-pair-confirm' }, 'Add this device');
    const form = h(
      'form',
      {
        class: 'stack',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const vault = pairing?.vault;
          if (!vault) return;
          const done = await withBusy(
            confirm,
            'Adding…',
            async () => {
              let fp: string;
              try {
                fp = await offer.confirm(typed.value);
              } catch (err) {
                reset();
                await offer.close().catch(() => undefined);
                throw err;
              }
              const added = await run((s) => s.addDevice(vault, fp));
              await offer.close().catch(() => undefined);
              return added;
            },
            'Pairing failed',
          );
          if (!done) return;
          reset();
          await deviceAdded(done);
        },
      },
      h('p', { testid: 'device-pair-joined' }, `“${joined.device.name}” joined, with this fingerprint:`),
      fingerprintEl(joined.device.fingerprint, undefined, 'small'),
      h('p', null, 'This screen shows ', h('strong', { class: 'mono', testid: 'device-pair-compared' }, joined.compared), '. If the new device shows other digits, or you do not know this device, cancel.'),
      h('label', { for: 'device-pair-typed' }, 'Type the 8 digits the new device shows'),
      typed,
      h('div', { class: 'actions' }, confirm, cancelButton(offer)),
    );
    box.replaceChildren(form);
    typed.focus();
  };
  box.replaceChildren(...idle());
  return box;
}

/**
 * Takes the device list back with the key file this browser holds: the
 * devices ticked are kept, every other one is removed, and every
 * collection is re-keyed (`vault devices recover`).
 */
function recoverDevicesButton(c: Ctx, ov: VaultOverview): HTMLElement {
  const b: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button secondary small',
      testid: 'devices-recover',
      onclick: async () => {
        const vault = c.vault;
        if (!vault) return;
        const choices = [...ov.devices.map((d) => ({ d, now: true })), ...ov.formerDevices.map((d) => ({ d, now: false }))].map(({ d, now }) => {
          const box: HTMLInputElement = h('input', { type: 'checkbox', id: `keep-${d.fingerprintHex}`, testid: 'devices-recover-keep', 'data-name': d.name });
          return {
            d,
            box,
            el: h(
              'li',
              null,
              box,
              ' ',
              h('label', { for: `keep-${d.fingerprintHex}` }, `Keep “${d.name}” (${d.fingerprintHex.slice(0, 16)}…, ${now ? 'listed now' : 'removed earlier'})`),
            ),
          };
        });
        const ok = await confirmDialog({
          title: 'Take your device list back?',
          testid: 'devices-recover-dialog',
          danger: true,
          confirm: 'Take the list back',
          text: [
            h('p', null, 'Your key file, which this browser holds, replaces the device list: only the devices you tick act for you in this vault, the relay refuses every other one, and every collection is re-keyed to keys no removed device holds.'),
            h('p', null, 'Use it when a device was stolen and the list changed without you. While one of your own devices is still listed, removing the lost one is enough and keeps every record; records only a thief’s keys open cannot be kept.'),
            h('ul', { class: 'choice-list' }, choices.map((x) => x.el)),
          ],
        });
        if (!ok) return;
        const keep = choices.filter((x) => x.box.checked).map((x) => x.d.fingerprintHex);
        const done = await withBusy(b, 'Re-keying…', () => run((s) => s.recoverDevices(vault, keep)), 'Taking the device list back failed');
        if (!done) return;
        const kept = done.kept.length ? `only ${done.kept.map((n) => `“${n}”`).join(', ')} act${done.kept.length === 1 ? 's' : ''} for you now` : 'no device acts for you now, only this key file';
        const removed = done.removed.length ? ` Removed ${done.removed.map((n) => `“${n}”`).join(', ')}.` : '';
        const dropped = done.dropped ? ` ${done.dropped} record(s) only the removed devices’ keys opened were dropped.` : '';
        const shared = done.sharedByRemoved.length ? ` They had shared with ${done.sharedByRemoved.map(memberName).join(', ')}: revoke them here if they should go.` : '';
        const failed = done.notRotated ? ` ${done.notRotated} collection key(s) could not be rotated: take the list back again to finish.` : '';
        lastSummary = {
          text: `${done.alreadyRecovered ? 'The list was taken back already; the re-keying is finished' : `Took your device list back: ${kept}`}; ${done.rotated} collection key${done.rotated === 1 ? '' : 's'} rotated.${removed}${dropped}${failed}${elsewhereText(done.elsewhere, 'take the list back again')}${shared}`,
        };
        announce(lastSummary.text);
        await refresh();
      },
    },
    'Take the list back…',
  );
  return h('div', { class: 'actions' }, b);
}

function removeDeviceButton(c: Ctx, d: DeviceView): HTMLButtonElement {
  const b: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button danger small',
      testid: 'device-remove',
      onclick: async () => {
        const vault = c.vault;
        if (!vault) return;
        const ok = await confirmDialog({
          title: `Remove “${d.name}” (${d.fingerprintHex.slice(0, 16)}…)?`,
          testid: 'device-remove-dialog',
          danger: true,
          confirm: 'Remove device',
          text: [
            h('p', null, 'The relay refuses it in this vault from now on, and every collection is re-keyed: nothing written from now on opens with its keys.'),
            h('p', null, 'It held the keys of every record in this vault until now: treat those records as seen. People it shared with keep their access; you are told who.'),
          ],
        });
        if (!ok) return;
        const done = await withBusy(b, 'Re-keying…', () => run((s) => s.removeDevice(vault, d.fingerprintHex)), 'Removing the device failed');
        if (!done) return;
        const shared = done.sharedByIt.length ? ` It had shared with ${done.sharedByIt.map(memberName).join(', ')}: revoke them here if they should go.` : '';
        const failed = done.notRotated ? ` ${done.notRotated} collection key(s) could not be rotated: remove it again to finish.` : '';
        lastSummary = { text: `Removed “${d.name}”: ${done.rotated} collection key${done.rotated === 1 ? '' : 's'} rotated.${failed}${elsewhereText(done.elsewhere, 'remove it again')}${shared}` };
        announce(lastSummary.text);
        await refresh();
      },
    },
    'Remove',
  );
  return b;
}

/** Ends every agency of `m` and re-keys what it withheld (even after its agency ended). */
function endAgencyButton(c: Ctx, m: Member): HTMLButtonElement {
  const b: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button danger small',
      testid: 'withheld-end-agency',
      onclick: async () => {
        const vault = c.vault;
        if (!vault) return;
        const done = await withBusy(b, 'Re-keying…', () => run((s) => s.endAgency(vault, m.fingerprintHex)), 'Ending the agency failed');
        if (!done) return;
        const failed = done.notRotated.length ? ` ${done.notRotated.length} collection key(s) could not be rotated: ${done.notRotated.map((n) => n.message).join('; ')}.` : '';
        lastSummary = { text: `${memberName(m)}: ${done.ended} agenc${done.ended === 1 ? 'y' : 'ies'} ended, ${done.rotated} collection key${done.rotated === 1 ? '' : 's'} rotated.${failed}` };
        announce(lastSummary.text);
        await refresh();
      },
    },
    'End agency and re-key',
  );
  return b;
}

/** Whether `m` acts as the owner's agent in any collection. */
function isAgent(ov: VaultOverview, m: Member): boolean {
  return ov.collections.some((col) => col.members.some((x) => x.fingerprintHex === m.fingerprintHex && x.permission === 'agent'));
}

function revokeButton(c: Ctx, m: Member, collection: { id: string; name: string } | null, label: string, testid: string): HTMLButtonElement {
  const b: HTMLButtonElement = h(
    'button',
    {
      type: 'button',
      class: 'button danger small',
      testid,
      onclick: async () => {
        const vault = c.vault;
        if (!vault) return;
        const scope = collection ? `the collection “${collection.name}”` : 'everything in your vault';
        const agent = c.overview ? isAgent(c.overview, m) : false;
        const ok = await confirmDialog({
          title: agent ? `End ${memberName(m)}'s agency?` : `Revoke ${memberName(m)}?`,
          testid: 'revoke-dialog',
          danger: true,
          confirm: agent ? 'End agency' : 'Revoke access',
          text: [
            h('p', null, `${memberName(m)} (${agent ? 'your agent' : roleLabel(m.role)}) will lose access to ${scope}.`),
            agent ? h('p', null, 'What they did as your agent stays: the records they added, and the people they shared with (revoke those people here if they should go too).') : null,
            h(
              'p',
              null,
              'The keys of the affected collections are rotated: everything added from now on is sealed under new keys they do not have. Single records shared with them are withdrawn.',
            ),
            h('p', { class: 'muted' }, 'What they already downloaded or copied cannot be taken back.'),
          ],
        });
        if (!ok) return;
        const summary = await withBusy(b, 'Revoking…', () => run((s) => s.revoke(vault, m.fingerprintHex, collection?.id)), 'Revoke failed');
        if (!summary) return;
        lastSummary = { text: summaryText(memberName(m), summary) };
        announce(lastSummary.text);
        await refresh();
      },
    },
    label,
  );
  return b;
}


function summaryText(name: string, s: RevokeSummary): string {
  const base = `${name} was revoked: ${s.rotated} collection key${s.rotated === 1 ? '' : 's'} rotated, ${s.recordSharesWithdrawn} single-record share${s.recordSharesWithdrawn === 1 ? '' : 's'} withdrawn.`;
  if (s.dropped.length === 0) return base;
  const authors = [...new Set(s.dropped.map((d) => d.authorName ?? d.author.slice(0, 16)))].join(', ');
  return `${base} ${s.dropped.length} record${s.dropped.length === 1 ? '' : 's'} that could not be opened with the collection's key (written by ${authors}) ${s.dropped.length === 1 ? 'was' : 'were'} deleted by the rotation; nobody could read ${s.dropped.length === 1 ? 'it' : 'them'}.`;
}
