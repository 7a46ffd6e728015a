// The health overview: the first screen after unlock. Current conditions,
// medications, allergies and recent immunizations, and a chart of each
// measurement that repeats over time, each item and point linked to its
// record. Computed in wasm from the decrypted records (vault-fhir's
// `health::overview`, whose doc comment states what counts as current);
// drawn here as SVG. Nothing leaves the page.

import { h, type Child } from './dom';
import { fmtDate } from './format';
import type { Ctx } from './state';
import type { Health, HealthItem, HealthSeries } from './vault';
import { emptyState } from './ui';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: Record<string, string | number>, ...children: (SVGElement | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** The overview view; `openRecord` shows one record's detail. */
export function renderOverview(c: Ctx, openRecord: (id: string) => void): Child {
  const health = c.listing?.health;
  if (!health) return null;
  return renderHealth(health, {
    title: 'Your health at a glance',
    intro: 'Drawn on this device from your decrypted records. Current means: conditions active and not resolved, medications active, allergies active; immunizations newest first.',
    empty: 'Nothing to summarise yet: add FHIR records from your providers (Add records) and your conditions, medications and measurements appear here.',
    openRecord,
  });
}

/**
 * A health overview: lists of the current conditions, medications, allergies
 * and immunizations, and a chart per repeated measurement. Each item and
 * point calls `openRecord` with its record (a record id in the vault, a
 * `Type/id` in a shared bundle).
 */
export function renderHealth(
  health: Health,
  opts: { title: string; intro: string; empty: string; openRecord: (id: string) => void },
): HTMLElement {
  const { openRecord } = opts;
  const empty =
    !health.conditions.length && !health.medications.length && !health.allergies.length && !health.immunizations.length && !health.series.length;
  if (empty) {
    return h('section', { class: 'card', testid: 'overview-empty' }, h('h1', null, opts.title), emptyState(opts.empty));
  }
  const list = (title: string, testid: string, items: HealthItem[], none: string) =>
    h(
      'section',
      { class: 'card overview-list', testid },
      h('h2', null, title),
      items.length
        ? h(
            'ul',
            null,
            items.map((i) =>
              h(
                'li',
                null,
                h(
                  'button',
                  { type: 'button', class: 'link-button', testid: `${testid}-item`, 'data-record-id': i.record, onclick: () => openRecord(i.record) },
                  i.text,
                ),
                i.date !== null ? h('span', { class: 'muted' }, ` ${fmtDate(i.date)}`) : null,
              ),
            ),
          )
        : h('p', { class: 'muted' }, none),
    );
  return h(
    'div',
    { class: 'overview', testid: 'overview' },
    h('h1', null, opts.title),
    h('p', { class: 'muted' }, opts.intro),
    h(
      'div',
      { class: 'overview-grid' },
      list('Current conditions', 'overview-conditions', health.conditions, 'None recorded as current.'),
      list('Current medications', 'overview-medications', health.medications, 'None recorded as active.'),
      list('Allergies and intolerances', 'overview-allergies', health.allergies, 'None recorded.'),
      list('Recent immunizations', 'overview-immunizations', health.immunizations, 'None recorded.'),
    ),
    health.series.length
      ? h(
          'section',
          { class: 'card', testid: 'overview-charts' },
          h('h2', null, 'Measurements over time'),
          h('div', { class: 'chart-grid' }, health.series.map((s) => chart(s, openRecord))),
        )
      : null,
  );
}

/** One series as an SVG line chart; each point is a link to its record. */
function chart(s: HealthSeries, openRecord: (id: string) => void): HTMLElement {
  const W = 320;
  const H = 160;
  const pad = { l: 44, r: 12, t: 12, b: 28 };
  const xs = s.points.map((p) => p.at);
  const ys = s.points.map((p) => p.value);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) {
    y0 -= 1;
    y1 += 1;
  }
  const margin = (y1 - y0) * 0.1;
  y0 -= margin;
  y1 += margin;
  const x = (t: number) => pad.l + ((t - x0) / (x1 - x0 || 1)) * (W - pad.l - pad.r);
  const y = (v: number) => H - pad.b - ((v - y0) / (y1 - y0)) * (H - pad.t - pad.b);
  const line = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
  const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString());
  const title = `${s.name}${s.unit ? ` (${s.unit})` : ''}`;
  const plot = svg(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${s.points.length} values from ${fmtDate(x0)} to ${fmtDate(x1)}`, class: 'chart' },
    svg('line', { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: 'axis' }),
    svg('line', { x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b, class: 'axis' }),
    svg('text', { x: pad.l - 4, y: y(y1 - margin) + 4, 'text-anchor': 'end', class: 'tick' }, fmt(y1 - margin)),
    svg('text', { x: pad.l - 4, y: y(y0 + margin) + 4, 'text-anchor': 'end', class: 'tick' }, fmt(y0 + margin)),
    svg('text', { x: pad.l, y: H - 8, class: 'tick' }, fmtDate(x0)),
    svg('text', { x: W - pad.r, y: H - 8, 'text-anchor': 'end', class: 'tick' }, fmtDate(x1)),
    svg('path', { d: line, class: 'series' }),
  );
  for (const p of s.points) {
    const dot = svg(
      'circle',
      {
        cx: x(p.at).toFixed(1),
        cy: y(p.value).toFixed(1),
        r: 4,
        class: 'point',
        tabindex: 0,
        role: 'link',
        'data-testid': 'chart-point',
        'data-value': p.value,
        'data-record-id': p.record,
        'aria-label': `${fmt(p.value)} ${s.unit} on ${fmtDate(p.at)}: open the record`,
      },
      svg('title', {}, `${fmt(p.value)} ${s.unit} — ${fmtDate(p.at)}`),
    );
    dot.addEventListener('click', () => openRecord(p.record));
    dot.addEventListener('keydown', (e) => {
      if ((e as KeyboardEvent).key === 'Enter' || (e as KeyboardEvent).key === ' ') openRecord(p.record);
    });
    plot.append(dot);
  }
  return h('figure', { class: 'chart-card', testid: 'chart', 'data-code': s.code, 'data-name': s.name }, h('figcaption', null, title), plot);
}
