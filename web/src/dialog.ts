// Modal dialogs: native <dialog> with showModal() (the rest of the page is
// inert), Escape closes, Tab is kept inside, focus returns to the opener.

import { h, icon, ICONS, nextId, type Child } from './dom';

export interface DialogHandle {
  dialog: HTMLDialogElement;
  body: HTMLDivElement;
  close: () => void;
}

const FOCUSABLE =
  'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

export function openDialog(title: string, testid: string, build: (d: DialogHandle) => Child, onClose?: () => void): DialogHandle {
  const opener = document.activeElement as HTMLElement | null;
  const titleId = nextId('dlg-title');
  const body = h('div', { class: 'dialog-body' });
  const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId, testid });
  const close = () => {
    if (dialog.open) dialog.close();
  };
  const handle: DialogHandle = { dialog, body, close };
  dialog.append(
    h(
      'div',
      { class: 'dialog-head' },
      h('h2', { id: titleId }, title),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close', testid: `${testid}-close`, onclick: close }, icon(ICONS.close)),
    ),
    body,
  );
  const content = build(handle);
  if (content) body.append(...(Array.isArray(content) ? (content.filter(Boolean) as Node[]) : [content as Node]));
  dialog.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Tab') return;
    const items = Array.from(dialog.querySelectorAll<HTMLElement>(FOCUSABLE)).filter((el) => el.offsetParent !== null);
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (ev.shiftKey && document.activeElement === first) {
      ev.preventDefault();
      last.focus();
    } else if (!ev.shiftKey && document.activeElement === last) {
      ev.preventDefault();
      first.focus();
    }
  });
  dialog.addEventListener('close', () => {
    dialog.remove();
    onClose?.();
    if (opener && document.contains(opener)) opener.focus();
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  const firstField = body.querySelector<HTMLElement>(FOCUSABLE);
  (firstField ?? dialog.querySelector<HTMLElement>('button'))?.focus();
  return handle;
}

/** Asks for confirmation; resolves true if confirmed. */
export function confirmDialog(opts: {
  title: string;
  text: Child;
  confirm: string;
  danger?: boolean;
  testid: string;
}): Promise<boolean> {
  return new Promise((resolve) => {
    let answered = false;
    openDialog(
      opts.title,
      opts.testid,
      (d) => [
        h('div', { class: 'dialog-text' }, opts.text),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'button', class: 'button secondary', testid: `${opts.testid}-cancel`, onclick: () => d.close() }, 'Cancel'),
          h(
            'button',
            {
              type: 'button',
              class: opts.danger ? 'button danger' : 'button primary',
              testid: `${opts.testid}-confirm`,
              onclick: () => {
                answered = true;
                resolve(true);
                d.close();
              },
            },
            opts.confirm,
          ),
        ),
      ],
      () => {
        if (!answered) resolve(false);
      },
    );
  });
}
