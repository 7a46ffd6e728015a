// Adding records: file picker and drag and drop, several files at once.
// FHIR JSON goes to importFhir (one record per resource, sorted into
// collections); anything else is sealed as one record with addFile.

import { clear, field, h, icon, ICONS, nextId } from './dom';
import { announce, explain, showAlert } from './errors';
import { fmtSize } from './format';
import { run, type Ctx } from './state';
import { refresh } from './app';
import { contentTypeOf as wasmContentTypeOf, SNIFF_LEN, type ImportSummary } from './vault';
import { largeFilesSupported, MAX_IN_MEMORY } from './payloads';

const DEFAULT_COLLECTION = 'documents';

interface Pending {
  file: File;
  fhir: boolean;
  title: HTMLInputElement;
  row: HTMLLIElement;
  status: HTMLSpanElement;
  bar: HTMLProgressElement;
  remove: HTMLButtonElement;
}

function isFhirFile(f: File): boolean {
  const t = f.type.toLowerCase();
  return f.name.toLowerCase().endsWith('.json') || t === 'application/json' || t === 'application/fhir+json';
}

/** The file's content type, decided by vault-wasm from its first bytes and name (as the `vault` command decides it). */
async function contentTypeOf(f: File): Promise<string> {
  const head = new Uint8Array(await f.slice(0, SNIFF_LEN).arrayBuffer());
  return wasmContentTypeOf(head, f.name);
}

export function renderAdd(c: Ctx): HTMLElement {
  const pending: Pending[] = [];
  const listId = nextId('collections');
  const collection = h('input', { type: 'text', value: DEFAULT_COLLECTION, list: listId, testid: 'upload-collection', maxlength: 100, autocomplete: 'off' });
  const datalist = h('datalist', { id: listId }, (c.overview?.collections ?? []).map((col) => h('option', { value: col.name })));
  const fileInput = h('input', { type: 'file', multiple: true, testid: 'upload-input', class: 'file-input' });
  const queueList = h('ul', { class: 'upload-list', testid: 'upload-list' });
  const overall = h('progress', { max: 1, value: 0, class: 'progress', testid: 'upload-progress', 'aria-label': 'Upload progress' });
  const overallText = h('p', { class: 'muted', testid: 'upload-progress-text', 'aria-live': 'polite' });
  const results = h('div', { class: 'upload-results', testid: 'upload-results' });
  const startBtn = h('button', { type: 'button', class: 'button primary', testid: 'upload-start', disabled: true }, icon(ICONS.upload), 'Encrypt and upload');

  const updateStart = () => {
    startBtn.disabled = !pending.some((p) => !p.row.classList.contains('done'));
  };

  const addFiles = (files: FileList | File[]) => {
    for (const file of Array.from(files)) {
      if (file.size > MAX_IN_MEMORY && !largeFilesSupported()) {
        showAlert(
          'error',
          'File too large for this browser',
          `“${file.name}” is ${fmtSize(file.size)}; this browser can add files up to ${fmtSize(MAX_IN_MEMORY)} (it lacks a background worker or private storage for the encrypted copy). Add it with the vault command line, or in an up-to-date browser.`,
        );
        continue;
      }
      const fhir = isFhirFile(file);
      const title = h('input', { type: 'text', value: file.name, maxlength: 200, testid: 'upload-title', 'aria-label': `Title for ${file.name}` });
      const status = h('span', { class: 'upload-status', testid: 'upload-status' }, 'Ready');
      const bar = h('progress', { max: 1, value: 0, class: 'progress small', 'aria-label': `Progress of ${file.name}` });
      const remove = h('button', { type: 'button', class: 'icon-button', 'aria-label': `Remove ${file.name}`, testid: 'upload-remove' }, icon(ICONS.close));
      const kind = h('span', { class: 'muted', testid: 'upload-kind' }, `${fmtSize(file.size)}${fhir ? ' · FHIR import' : ''}`);
      if (!fhir) void contentTypeOf(file).then((t) => (kind.textContent = `${fmtSize(file.size)} · ${t}`));
      const row = h(
        'li',
        { class: 'upload-item', testid: 'upload-item', 'data-file': file.name },
        h(
          'div',
          { class: 'upload-item-head' },
          h('span', { class: 'upload-name' }, file.name),
          kind,
          remove,
        ),
        fhir ? h('p', { class: 'muted' }, 'Each FHIR resource becomes a record, sorted into collections (labs, conditions, medications…).') : field('Title', title),
        h('div', { class: 'upload-item-foot' }, bar, status),
      );
      const p: Pending = { file, fhir, title, row, status, bar, remove };
      remove.addEventListener('click', () => {
        pending.splice(pending.indexOf(p), 1);
        row.remove();
        updateStart();
      });
      pending.push(p);
      queueList.append(row);
    }
    updateStart();
  };

  fileInput.addEventListener('change', () => {
    if (fileInput.files) addFiles(fileInput.files);
    fileInput.value = '';
  });

  const drop = h(
    'div',
    { class: 'dropzone', testid: 'upload-dropzone' },
    icon(ICONS.upload),
    h('p', null, h('strong', null, 'Drop files here'), ' or '),
    h('label', { class: 'button secondary', for: (fileInput.id = nextId('file')) }, 'Choose files…'),
    fileInput,
    h('p', { class: 'muted' }, 'FHIR bundles (.json), PDFs, images, notes, scans of any size. Files are encrypted here before upload.'),
  );
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('dragging');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('dragging');
    if (ev.dataTransfer?.files) addFiles(ev.dataTransfer.files);
  });

  startBtn.addEventListener('click', async () => {
    const vault = c.vault;
    if (!vault) return;
    const colName = collection.value.trim() || DEFAULT_COLLECTION;
    const todo = pending.filter((p) => !p.row.classList.contains('done'));
    if (!todo.length) return;
    startBtn.disabled = true;
    startBtn.setAttribute('aria-busy', 'true');
    document.body.classList.add('busy');
    clear(results);
    const totalBytes = todo.reduce((n, p) => n + p.file.size, 0) || 1;
    let doneBytes = 0;
    let ok = 0;
    let failed = 0;
    for (const p of todo) {
      p.row.classList.remove('failed');
      p.row.classList.add('working');
      p.remove.disabled = true;
      p.status.textContent = 'Reading…';
      try {
        const progress = (done: number, total: number, phase: string) => {
          const frac = total > 0 ? Math.min(1, done / total) : 0;
          p.bar.value = frac;
          p.status.textContent = `${phaseLabel(phase)} ${Math.round(frac * 100)}%`;
          overall.value = Math.min(1, (doneBytes + frac * p.file.size) / totalBytes);
          overallText.textContent = `${p.file.name}: ${phaseLabel(phase)} (${done} of ${total})`;
        };
        if (p.fhir) {
          p.status.textContent = 'Encrypting and uploading…';
          const bytes = new Uint8Array(await p.file.arrayBuffer());
          const summary = await run((s) => s.importFhir(vault, bytes, progress));
          p.status.textContent = `Imported: ${summary.added} added, ${summary.skipped} skipped`;
          results.append(summaryCard(p.file.name, summary));
        } else {
          const title = p.title.value.trim() || p.file.name;
          p.status.textContent = 'Encrypting and uploading…';
          const type = await contentTypeOf(p.file);
          await run((s) => s.addFile(vault, colName, title, type, p.file, progress));
          p.status.textContent = `Added to “${colName}”`;
          results.append(h('p', { class: 'inline-ok', testid: 'upload-file-done' }, icon(ICONS.check), `“${title}” added to ${colName}.`));
        }
        p.bar.value = 1;
        p.row.classList.add('done');
        p.title.disabled = true;
        p.remove.hidden = true;
        ok += 1;
      } catch (e) {
        const x = explain(e);
        p.status.textContent = `Failed: ${x.title}`;
        p.row.classList.add('failed');
        p.remove.disabled = false;
        failed += 1;
        showAlert(x.severity, `“${p.file.name}” was not added: ${x.title}`, x.text);
      } finally {
        p.row.classList.remove('working');
        doneBytes += p.file.size;
        overall.value = Math.min(1, doneBytes / totalBytes);
      }
    }
    overallText.textContent = `Done: ${ok} file${ok === 1 ? '' : 's'} added${failed ? `, ${failed} failed` : ''}.`;
    document.body.classList.remove('busy');
    startBtn.removeAttribute('aria-busy');
    announce(overallText.textContent);
    updateStart();
    // Reload the vault's records, keeping this screen (and its summary) as is.
    await refresh(false);
  });

  return h(
    'section',
    { class: 'stack', 'aria-labelledby': 'add-heading', testid: 'upload' },
    h('h1', { id: 'add-heading' }, 'Add records'),
    h('div', { class: 'card' }, drop, queueList, datalist, field('Collection for files other than FHIR', collection, 'Choose an existing collection or type a new name.'), h('div', { class: 'actions' }, startBtn), overall, overallText),
    results,
  );
}

function phaseLabel(phase: string): string {
  const labels: Record<string, string> = {
    sealing: 'Encrypting',
    uploading: 'Uploading',
    done: 'Done',
    checking: 'Checking',
    importing: 'Encrypting and uploading records',
  };
  return labels[phase] ?? (phase ? phase.charAt(0).toUpperCase() + phase.slice(1) : 'Working');
}

function summaryCard(name: string, s: ImportSummary): HTMLElement {
  const entries = Object.entries(s.collections).sort((a, b) => b[1] - a[1]);
  return h(
    'section',
    { class: 'card summary-card', testid: 'import-summary' },
    h('h2', null, `Imported “${name}”`),
    h('p', { testid: 'import-summary-counts' }, `${s.added} record${s.added === 1 ? '' : 's'} added, ${s.skipped} skipped (already in your vault or not importable).`),
    entries.length
      ? h('table', { class: 'table' }, h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Collection'), h('th', { scope: 'col' }, 'Records added'))), h('tbody', null, entries.map(([k, v]) => h('tr', { testid: 'import-summary-row' }, h('td', null, k), h('td', null, String(v))))))
      : null,
  );
}
