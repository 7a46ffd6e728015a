// The SMART Health Links viewer: what a `…/#shlink:/…` link opens, with no
// account. The link (after `#`, so it never reaches a server) is read by
// vault-wasm; the reader says who they are (the sharer sees it), types the
// passcode if the link has one, and the manifest and files are fetched from
// the link's own origin, decrypted and checked in wasm, and shown as a health
// overview with every shared resource. Nothing is stored in this browser.

import { describeLink, openLink, type LinkDescription, type OpenedLink, type SharedResource } from './vault';
import { byId, clear, downloadBytes, field, h, icon, ICONS } from './dom';
import { announce, clearAlerts, showError } from './errors';
import { fmtDate, fmtExpiry } from './format';
import { renderHealth } from './overview';
import { withBusy } from './ui';

/** The link in the page's address, if it is one (`#shlink:/…`). */
export function linkInAddress(): string | null {
  const hash = location.hash;
  return hash.startsWith('#shlink:/') ? hash.slice(1) : null;
}

/** Shows the viewer for `link` in the main region. */
export function renderViewer(link: string, leave: () => void): void {
  clearAlerts();
  const main = byId('main');
  clear(main);
  document.title = 'Vault — Shared health record';
  let desc: LinkDescription;
  try {
    desc = describeLink(link);
  } catch (e) {
    main.append(refusal('This health link cannot be read', 'It may have been copied only in part or altered. Ask the person who shared it to send it again.', leave));
    showError(e, 'Health link');
    return;
  }
  if (desc.origin !== location.origin) {
    main.append(
      refusal(
        'This link belongs to another service',
        `Its records are kept at ${desc.origin}. This page opens links of its own relay only; open the link in a SMART Health Links viewer of your choice.`,
        leave,
      ),
    );
    return;
  }
  if (desc.expired) {
    main.append(refusal('This link has expired', `It stopped working ${desc.expiresAt ? fmtExpiry(desc.expiresAt) : ''}. Ask the person who shared it for a new one.`, leave));
    return;
  }

  const recipient = h('input', { type: 'text', testid: 'viewer-recipient', autocomplete: 'name', required: true, maxlength: 200 });
  const passcode = desc.passcode ? h('input', { type: 'password', testid: 'viewer-passcode', autocomplete: 'off', required: true }) : null;
  const output = h('div', { testid: 'viewer-output' });
  const openBtn: HTMLButtonElement = h('button', { type: 'submit', class: 'button primary', testid: 'viewer-open' }, icon(ICONS.lock), 'Open');
  const form = h(
    'form',
    {
      class: 'stack',
      testid: 'viewer-form',
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const who = recipient.value.trim();
        if (!who) {
          recipient.focus();
          return;
        }
        void withBusy(
          openBtn,
          'Opening…',
          async () => {
            clearAlerts();
            const opened = await openLink(link, who, passcode?.value);
            if (passcode) passcode.value = '';
            form.hidden = true;
            showOpened(output, opened);
            announce('The shared record is open.');
          },
          'Could not open the link',
        );
      },
    },
    field('Your name and organisation', recipient, 'The person who shared this link sees this name and when you opened it.'),
    passcode ? field('Passcode', passcode, 'The person who shared the link gives it to you separately. Wrong passcodes are counted; after too many the link stops working.') : null,
    h('div', { class: 'actions' }, openBtn),
  );
  main.append(
    h(
      'section',
      { class: 'card', testid: 'viewer', 'aria-labelledby': 'viewer-heading' },
      h('h1', { id: 'viewer-heading' }, 'A health record shared with you'),
      desc.label ? h('p', { class: 'viewer-label', testid: 'viewer-label' }, desc.label) : null,
      h(
        'p',
        { class: 'muted' },
        `Shared with a SMART Health Link${desc.expiresAt ? `, valid until ${fmtExpiry(desc.expiresAt)}` : ''}. It is decrypted in this browser; nothing is stored here, and no account is needed.`,
      ),
      form,
    ),
    output,
  );
  recipient.focus();
}

function refusal(title: string, text: string, leave: () => void): HTMLElement {
  return h(
    'section',
    { class: 'card', testid: 'viewer-refused' },
    h('h1', null, title),
    h('p', null, text),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button secondary', onclick: leave }, 'Open my own vault instead')),
  );
}

/** What the link shares: per file, the overview and every resource. */
function showOpened(el: HTMLElement, opened: OpenedLink): void {
  clear(el);
  opened.files.forEach((f, i) => {
    const download = h(
      'button',
      {
        type: 'button',
        class: 'button secondary',
        testid: 'viewer-download',
        onclick: () => downloadBytes(new TextEncoder().encode(f.text), `shared-${i + 1}.json`, f.contentType),
      },
      icon(ICONS.download),
      'Download the FHIR file',
    );
    const resources = new Map<string, HTMLDetailsElement>();
    const list = groupByType(f.resources).map(([type, rs]) =>
      h(
        'section',
        { class: 'card', testid: 'viewer-type', 'data-type': type },
        h('h2', null, `${type} (${rs.length})`),
        rs.map((r) => {
          const d = h(
            'details',
            { class: 'resource', testid: 'viewer-resource', 'data-key': r.key },
            h('summary', null, r.title || r.key, r.date !== null ? h('span', { class: 'muted' }, ` ${fmtDate(r.date)}`) : null),
            r.summary.length
              ? h(
                  'dl',
                  { class: 'details' },
                  r.summary.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]),
                )
              : h('p', { class: 'muted' }, 'No readable summary; download the file to see everything.'),
          );
          resources.set(r.key, d);
          return d;
        }),
      ),
    );
    const openResource = (key: string) => {
      const d = resources.get(key);
      if (!d) return;
      d.open = true;
      d.scrollIntoView({ block: 'center' });
      d.querySelector('summary')?.focus();
    };
    el.append(
      h(
        'div',
        { class: 'stack', testid: 'viewer-file', 'data-content-type': f.contentType },
        f.health
          ? renderHealth(f.health, {
              title: opened.label ?? (f.bundleType === 'document' ? 'Patient summary' : 'Shared health records'),
              intro: `${f.resources.length} FHIR resources, decrypted in this browser. Current means: conditions active and not resolved, medications active, allergies active.`,
              empty: 'This file has no conditions, medications, allergies, immunizations or repeated measurements; its resources are listed below.',
              openRecord: openResource,
            })
          : h('section', { class: 'card' }, h('h2', null, `A ${f.contentType} file`), h('p', null, 'Download it to read it with a tool for this kind of file.')),
        list,
        h('div', { class: 'actions' }, download),
      ),
    );
  });
}

function groupByType(resources: SharedResource[]): [string, SharedResource[]][] {
  const groups = new Map<string, SharedResource[]>();
  for (const r of resources) {
    const t = r.resourceType ?? 'Other';
    if (t === 'Composition') continue;
    groups.set(t, [...(groups.get(t) ?? []), r]);
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b));
}
