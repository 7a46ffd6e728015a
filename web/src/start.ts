// The screens before unlocking: welcome, unlock (several profiles), create an
// identity, restore from a key file.

import { createIdentity, describeIdentity, Session } from './vault';
import { byId, clear, field, h } from './dom';
import { getSnapshot, listProfiles, putProfile, type Profile } from './db';
import { showError, showAlert, clearAlerts, setRelayForMessages } from './errors';
import { fingerprintEl, withBusy } from './ui';
import { enterApp } from './app';

const MIN_PASSPHRASE = 8;
const WORK_FACTOR = 18;

export function defaultRelay(): string {
  return location.origin;
}

function validRelay(url: string): string | null {
  try {
    const u = new URL(url);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'The relay address must start with https:// (or http:// for a local relay).';
    return null;
  } catch {
    return 'The relay address is not a valid URL.';
  }
}

export async function renderStart(): Promise<void> {
  const main = byId('main');
  clear(main);
  clear(byId('topbar-actions'));
  document.title = 'Vault — unlock';
  let profiles: Profile[] = [];
  try {
    profiles = await listProfiles();
  } catch (e) {
    showError(e, 'This browser’s storage could not be read');
  }
  const hasProfiles = profiles.length > 0;
  main.append(
    h(
      'div',
      { class: 'start' },
      h(
        'section',
        { class: 'intro' },
        h('h1', null, hasProfiles ? 'Welcome back' : 'Your health records, sealed on this device'),
        h(
          'p',
          { class: 'lead' },
          'Vault encrypts your records in this browser before anything is sent. The relay that stores them sees only ciphertext, and only the people you choose — after checking their fingerprint — can read what you share.',
        ),
      ),
      hasProfiles ? unlockSection(profiles) : null,
      createSection(hasProfiles),
      restoreSection(),
    ),
  );
  const focus = main.querySelector<HTMLElement>(hasProfiles ? '[data-testid="unlock-passphrase"]' : '[data-testid="create-name"]');
  focus?.focus();
}

function unlockSection(profiles: Profile[]): HTMLElement {
  const pass = h('input', { type: 'password', autocomplete: 'current-password', required: true, testid: 'unlock-passphrase' });
  const button = h('button', { type: 'submit', class: 'button primary', testid: 'unlock-submit' }, 'Unlock');
  const group = `profile-${Date.now()}`;
  const radios = profiles.map((p, i) =>
    h(
      'label',
      { class: 'profile-option', testid: 'profile-option' },
      h('input', { type: 'radio', name: group, value: p.fingerprintHex, checked: i === profiles.length - 1, testid: `profile-radio-${i}` }),
      h(
        'span',
        { class: 'profile-text' },
        h('strong', null, p.name),
        fingerprintEl(fingerprintFromText(p), undefined, 'small'),
        h('span', { class: 'muted' }, `Relay: ${p.relayUrl}`),
      ),
    ),
  );
  const form = h(
    'form',
    {
      class: 'card',
      testid: 'unlock-form',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const chosen = form.querySelector<HTMLInputElement>(`input[name="${group}"]:checked`);
        const profile = profiles.find((p) => p.fingerprintHex === chosen?.value);
        if (!profile) return;
        if (!pass.value) {
          showAlert('error', 'Passphrase needed', 'Type the passphrase of this identity.');
          pass.focus();
          return;
        }
        clearAlerts();
        const session = await withBusy(button, 'Unlocking…', async () => {
          const snapshot = await getSnapshot(profile.fingerprintHex);
          setRelayForMessages(profile.relayUrl);
          return Session.unlock(profile.keyFile, pass.value, profile.relayUrl, snapshot, profile.invite);
        }, 'Unlock failed');
        if (!session) {
          pass.focus();
          pass.select();
          return;
        }
        pass.value = '';
        await enterApp(session, profile);
      },
    },
    h('h2', null, 'Unlock'),
    h('fieldset', { class: 'profiles' }, h('legend', null, profiles.length > 1 ? 'Choose your identity' : 'Identity on this browser'), radios),
    field('Passphrase', pass),
    h('div', { class: 'actions' }, button),
  );
  return h('section', { 'aria-label': 'Unlock' }, form);
}

/** The fingerprint digits of a stored profile (from its public identity text). */
function fingerprintFromText(p: Profile): string {
  try {
    return describeCached(p.identityText);
  } catch {
    return p.fingerprintHex.slice(0, 16);
  }
}

const described = new Map<string, string>();
function describeCached(text: string): string {
  let fp = described.get(text);
  if (!fp) {
    fp = describeIdentity(text).fingerprint;
    described.set(text, fp);
  }
  return fp;
}

function relayField(): { input: HTMLInputElement; invite: HTMLInputElement; el: HTMLElement } {
  const input = h('input', { type: 'url', value: defaultRelay(), testid: 'create-relay', autocomplete: 'off', spellcheck: false });
  const invite = h('input', { type: 'password', autocomplete: 'off', spellcheck: false, maxlength: 256, testid: 'create-invite' });
  const el = h(
    'details',
    { class: 'advanced' },
    h('summary', null, 'Relay address (advanced)'),
    field('Relay URL', input, 'Where your encrypted records are stored. Leave as is unless your provider gave you another address.'),
    field('Invitation token', invite, 'Only if the relay\'s operator gave you one: some relays admit new identities by invitation.'),
  );
  return { input, invite, el };
}

function createSection(collapsed: boolean): HTMLElement {
  const name = h('input', { type: 'text', autocomplete: 'name', required: true, maxlength: 100, testid: 'create-name' });
  const publicName = h('input', { type: 'text', autocomplete: 'off', maxlength: 100, placeholder: 'Patient', testid: 'create-public-name' });
  const pass1 = h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_PASSPHRASE, testid: 'create-passphrase' });
  const pass2 = h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: MIN_PASSPHRASE, testid: 'create-passphrase2' });
  const relay = relayField();
  const button = h('button', { type: 'submit', class: 'button primary', testid: 'create-submit' }, 'Create my identity');
  // What this browser is: the person's own identity (its key file here,
  // its vault created here), or a device of an identity whose key file is
  // on the command line (`vault devices add` lists it there).
  const roleGroup = `role-${Date.now()}`;
  const asPerson = h('input', { type: 'radio', name: roleGroup, value: 'patient', checked: true, testid: 'create-role-patient' });
  const asDevice = h('input', { type: 'radio', name: roleGroup, value: 'device', testid: 'create-role-device' });
  const roleField = h(
    'fieldset',
    { class: 'choice' },
    h('legend', null, 'This browser is'),
    h('label', { class: 'check' }, asPerson, ' My identity: my key file lives here and my vault is created here'),
    h('label', { class: 'check' }, asDevice, ' A device of my identity on the command line: the key file stays there, and `vault devices add` lets this browser act for me'),
  );
  const form = h(
    'form',
    {
      class: 'card',
      testid: 'create-form',
      novalidate: true,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        clearAlerts();
        const localName = name.value.trim();
        const role = asDevice.checked ? 'device' : 'patient';
        const shownName = publicName.value.trim() || (role === 'device' ? 'browser' : 'Patient');
        const relayUrl = relay.input.value.trim().replace(/\/+$/, '');
        const problem = !localName
          ? ['Name needed', 'Type a name for this identity (it stays on this device).', name]
          : pass1.value.length < MIN_PASSPHRASE
            ? ['Passphrase too short', `Use at least ${MIN_PASSPHRASE} characters; a few unrelated words are best.`, pass1]
            : pass1.value !== pass2.value
              ? ['Passphrases differ', 'The two passphrases are not the same. Type them again.', pass2]
              : validRelay(relayUrl)
                ? ['Relay address', validRelay(relayUrl), relay.input]
                : null;
        if (problem) {
          showAlert('error', problem[0] as string, problem[1] as string);
          (problem[2] as HTMLElement).focus();
          return;
        }
        setRelayForMessages(relayUrl);
        const passphrase = pass1.value;
        const created = await withBusy(button, 'Creating your keys… (a few seconds)', async () => {
          // Let the busy state paint before the (synchronous) scrypt work.
          await new Promise((r) => setTimeout(r, 50));
          const id = await createIdentity(shownName, role, passphrase, WORK_FACTOR);
          const profile: Profile = {
            fingerprintHex: id.identity.fingerprintHex,
            keyFile: id.keyFile,
            identityText: id.identity.identityText,
            name: localName,
            relayUrl,
            invite: relay.invite.value.trim() || undefined,
            createdAt: Date.now(),
          };
          await putProfile(profile);
          return profile;
        }, 'Could not create the identity');
        if (!created) return;
        pass2.value = '';
        const session = await withBusy(button, 'Unlocking…', async () => {
          const s = await Session.unlock(created.keyFile, passphrase, relayUrl, undefined, created.invite);
          // Publish the public identity so clinicians can look it up by fingerprint.
          await s.publish();
          return s;
        }, 'Your identity was created and saved in this browser, but');
        pass1.value = '';
        if (!session) {
          await renderStart();
          return;
        }
        await enterApp(session, created, { justCreated: true });
      },
    },
    h('h2', null, collapsed ? 'Create another identity' : 'Create your identity'),
    h(
      'p',
      null,
      'Your keys are created in this browser and sealed with your passphrase. Nobody — not the relay, not us — can reset it: if you forget it, your records cannot be opened. Download a backup of your key file afterwards.',
    ),
    field('Your name', name, 'Stays on this device: it labels this identity on the unlock screen.'),
    roleField,
    field('Name shown to people you share with (optional)', publicName, 'Published with your public key. Default: “Patient” (“browser” for a device).'),
    field('Passphrase (at least 8 characters)', pass1),
    field('Passphrase again', pass2),
    relay.el,
    h('div', { class: 'actions' }, button),
  );
  if (collapsed) {
    return h('details', { class: 'card-details', testid: 'create-details' }, h('summary', { testid: 'create-open' }, 'Create a new identity'), form);
  }
  return h('section', { 'aria-label': 'Create your identity' }, form);
}

function restoreSection(): HTMLElement {
  const file = h('input', { type: 'file', testid: 'restore-file' });
  const pass = h('input', { type: 'password', autocomplete: 'current-password', testid: 'restore-passphrase' });
  const name = h('input', { type: 'text', testid: 'restore-name', maxlength: 100 });
  const relay = relayField();
  const button = h('button', { type: 'submit', class: 'button secondary', testid: 'restore-submit' }, 'Restore and unlock');
  const form = h(
    'form',
    {
      class: 'card',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        clearAlerts();
        const f = file.files?.[0];
        if (!f) {
          showAlert('error', 'Key file needed', 'Choose the key file you downloaded as a backup.');
          file.focus();
          return;
        }
        if (f.size > 1024 * 1024) {
          showAlert('error', 'Not a key file', 'This file is too large to be a vault key file.');
          return;
        }
        const relayUrl = relay.input.value.trim().replace(/\/+$/, '');
        const bad = validRelay(relayUrl);
        if (bad) {
          showAlert('error', 'Relay address', bad);
          return;
        }
        setRelayForMessages(relayUrl);
        const result = await withBusy(button, 'Unlocking…', async () => {
          const keyFile = new Uint8Array(await f.arrayBuffer());
          const invite = relay.invite.value.trim() || undefined;
          const session = await Session.unlock(keyFile, pass.value, relayUrl, undefined, invite);
          const me = session.me();
          const profile: Profile = {
            fingerprintHex: me.fingerprintHex,
            keyFile,
            identityText: me.identityText,
            name: name.value.trim() || me.name,
            relayUrl,
            invite,
            createdAt: Date.now(),
          };
          await putProfile(profile);
          return { session, profile };
        }, 'Restore failed');
        if (!result) return;
        pass.value = '';
        await enterApp(result.session, result.profile);
      },
    },
    h('p', null, 'Use the key file you downloaded from the Identity screen, with its passphrase.'),
    field('Key file', file),
    field('Passphrase', pass),
    field('Name on this device (optional)', name),
    relay.el,
    h('div', { class: 'actions' }, button),
  );
  return h('details', { class: 'card-details', testid: 'restore-details' }, h('summary', null, 'Restore from a key file backup'), form);
}
