// Formatting of dates, sizes and fingerprints for display.

const dateFmt = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});
const monthFmt = new Intl.DateTimeFormat(undefined, { month: 'long' });

export function fmtDate(unixSeconds: number): string {
  return dateFmt.format(new Date(unixSeconds * 1000));
}

export function fmtDateTime(unixSeconds: number): string {
  return dateTimeFmt.format(new Date(unixSeconds * 1000));
}

export function fmtMonth(unixSeconds: number): string {
  return monthFmt.format(new Date(unixSeconds * 1000));
}

export function fmtSize(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return 'unknown size';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** "14 Mar 2027 (in 30 days)", "no expiry", "expired 2 days ago". */
export function fmtExpiry(expiresAt: number | null): string {
  if (expiresAt === null) return 'no expiry';
  const now = Date.now() / 1000;
  const days = Math.round((expiresAt - now) / 86400);
  const date = fmtDate(expiresAt);
  if (expiresAt <= now) return `expired ${date}`;
  if (days === 0) return `${date} (today)`;
  return `${date} (in ${days} day${days === 1 ? '' : 's'})`;
}

export function roleLabel(role: string | null): string {
  if (role === 'clinician') return 'clinician';
  if (role === 'patient') return 'patient';
  if (role === 'device') return 'device of a person';
  return 'unknown role';
}

/** A safe file name from a title and content type. */
export function fileNameFor(title: string, contentType: string): string {
  const base = title.replace(/[^\p{L}\p{N} ._()-]+/gu, '_').replace(/^[ .]+/, '').slice(0, 100) || 'record';
  const ext = EXTENSIONS[contentType.split(';')[0].trim().toLowerCase()];
  if (ext && !base.toLowerCase().endsWith(ext)) return `${base}${ext}`;
  return base;
}

const EXTENSIONS: Record<string, string> = {
  'application/pdf': '.pdf',
  'application/json': '.json',
  'application/fhir+json': '.json',
  'image/png': '.png',
  'image/jpeg': '.jpg',
  'image/gif': '.gif',
  'image/webp': '.webp',
  'text/plain': '.txt',
  'text/csv': '.csv',
};

/** Content types opened in a new tab: inert documents only (no HTML, no SVG). */
export const OPENABLE = new Set(['application/pdf', 'image/png', 'image/jpeg', 'image/gif', 'image/webp', 'text/plain']);

export function baseType(contentType: string): string {
  return contentType.split(';')[0].trim().toLowerCase();
}

export function isFhirType(contentType: string): boolean {
  const t = baseType(contentType);
  return t === 'application/fhir+json' || t === 'application/json';
}

/** How a member's permission reads ("read and add", "add only, reads nothing"). */
export function permLabel(p: string): string {
  return p === 'write' ? 'read and write' : p === 'add' ? 'read and add' : p === 'deposit' ? 'add only, reads nothing' : p === 'agent' ? 'agent' : 'read';
}
