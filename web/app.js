// Ringfence dashboard: one plain ES module, no build step, no framework.
//
// Data flow: after sign-in the page reads rings, rollouts and the event history over the REST
// API, then follows the live event stream (GET /v1/events/stream, read with fetch so that the
// Authorization header can be sent; EventSource cannot). The selected rollout is re-read every
// second while it is active; each read adds a point per stage to that stage's chart of the
// failure rate against the gate's limits, and events that carry gate figures add points too.
// All server text reaches the page through textContent, never as HTML.

const TOKEN_KEY = 'ringfence.token';
const ROLLOUT_POLL_MS = 1000;
const LIST_POLL_MS = 5000;
const MAX_EVENTS = 200;
const MAX_POINTS = 900;
const ACTIVE_STATES = new Set(['pending', 'running', 'paused']);

const state = {
  token: null,
  selected: null, // id of the rollout shown in the detail view
  rollout: null, // its last document
  stageCards: [], // DOM of the detail's stage cards, rebuilt when the rollout changes
  series: new Map(), // "rollout:stage" -> {t, rate, limit, baseline, stat, upper}
  charts: new Map(), // "rollout:stage" -> uPlot instance
  lastEventId: 0,
  streamAbort: null,
  timers: [],
  refreshQueued: false,
};

// ---------------------------------------------------------------- small helpers

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pct = (x) => `${(100 * (Number(x) || 0)).toFixed(1)}%`;
const fixed = (x, digits = 2) => (Number(x) || 0).toFixed(digits);

function clock(ms) {
  const d = new Date(ms > 1e11 ? ms : ms * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}

function selectorText(sel) {
  if (!sel) return '-';
  if (sel.buckets) return `buckets [${sel.buckets[0]}, ${sel.buckets[1]})`;
  if (sel.labels) return `labels ${sel.labels}`;
  if (sel.hosts) return `${sel.hosts.length} listed host${sel.hosts.length === 1 ? '' : 's'}`;
  return JSON.stringify(sel);
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: fall through to the status line
  }
  const err = body && body.error;
  return new ApiError(res.status, err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status} ${res.statusText}`);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'unreachable', 'The server cannot be reached.');
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  return res.json();
}

// ---------------------------------------------------------------- errors

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(`The server refused the token: ${err.message}`);
    return;
  }
  const detail = err instanceof ApiError && err.status ? ` (HTTP ${err.status}, ${err.code})` : '';
  $('#error-text').textContent = `${err.message}${detail}`;
  $('#error').hidden = false;
}

function clearError() {
  $('#error').hidden = true;
  $('#error-text').textContent = '';
}

// Runs an async task and reports its failure instead of throwing.
async function attempt(task) {
  try {
    return await task();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// ---------------------------------------------------------------- sign-in

async function signIn(token) {
  state.token = token;
  try {
    await api('GET', '/v1/rings');
  } catch (err) {
    state.token = null;
    throw err;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

function signOut(message) {
  stop();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('#app').hidden = true;
  $('#signout').hidden = true;
  $('#signin').hidden = false;
  if (message) {
    $('#error-text').textContent = message;
    $('#error').hidden = false;
  }
}

function start() {
  clearError();
  $('#signin').hidden = true;
  $('#app').hidden = false;
  $('#signout').hidden = false;
  state.timers.push(setInterval(() => attempt(refreshLists), LIST_POLL_MS));
  state.timers.push(setInterval(() => attempt(refreshSelected), ROLLOUT_POLL_MS));
  attempt(async () => {
    await refreshLists();
    await loadEventHistory();
    followEvents();
  });
}

function stop() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  setLive(false);
}

// ---------------------------------------------------------------- rings and rollouts

async function refreshLists() {
  const [rings, rollouts, estop] = await Promise.all([
    api('GET', '/v1/rings'),
    api('GET', '/v1/rollouts'),
    api('GET', '/v1/emergency-stop'),
  ]);
  renderRings(rings.rings);
  renderRollouts(rollouts.rollouts);
  const badge = $('#estop');
  badge.hidden = !estop.emergency_stop;
  badge.title = estop.reason || '';
  if (state.selected === null && rollouts.rollouts.length > 0) {
    const active = rollouts.rollouts.find((r) => ACTIVE_STATES.has(r.state));
    await selectRollout((active ?? rollouts.rollouts[0]).id);
  }
}

function renderRings(rings) {
  const body = $('#rings tbody');
  body.replaceChildren(
    ...rings.map((r) =>
      el('tr', { 'data-ring': r.name },
        el('td', { text: String(r.rank) }),
        el('td', { text: r.name, title: r.description || '' }),
        el('td', { text: selectorText(r.selector) }),
        el('td', { class: 'num', text: String(r.hosts ?? 0) }))));
  if (rings.length === 0) body.append(el('tr', {}, el('td', { colSpan: 4, class: 'empty', text: 'No rings yet.' })));
}

function totals(rollout) {
  const sum = { exposed: 0, applied: 0, healthy: 0, failed: 0, silent: 0 };
  for (const s of rollout.stages) for (const k of Object.keys(sum)) sum[k] += s[k] || 0;
  return sum;
}

// A stacked bar of a stage's (or a rollout's) exposed hosts.
function hostBar(counts) {
  const exposed = counts.exposed || 0;
  const failed = Math.min(counts.failed || 0, exposed);
  const healthy = Math.min(counts.healthy || 0, exposed - failed);
  const applied = Math.max(0, Math.min((counts.applied || 0) - failed - healthy, exposed - failed - healthy));
  const bar = el('div', { class: 'bar', title: `${healthy} healthy, ${applied} applied, ${failed} failed of ${exposed} exposed` });
  if (exposed === 0) return bar;
  for (const [cls, n] of [['healthy', healthy], ['applied', applied], ['failed', failed]]) {
    if (n > 0) bar.append(el('span', { class: `seg ${cls}`, style: `width:${(100 * n) / exposed}%` }));
  }
  return bar;
}

function stateBadge(r) {
  const text = r.phase && r.phase !== r.state ? `${r.state} · ${r.phase.replace('_', ' ')}` : r.state;
  return el('span', { class: `state state-${r.state}`, text });
}

function rolloutRow(r) {
  const row = el('tr', { 'data-rollout': String(r.id), class: r.id === state.selected ? 'selected' : '' },
    el('td', { text: `#${r.id}` }),
    el('td', { text: `${r.channel} v${r.version}` }),
    el('td', {}, stateBadge(r)),
    el('td', { text: `${r.stage + 1}/${r.stages.length} ${r.stages[r.stage]?.ring ?? ''}` }),
    el('td', {}, hostBar(totals(r))));
  row.addEventListener('click', () => attempt(() => selectRollout(r.id)));
  return row;
}

function renderRollouts(rollouts) {
  const body = $('#rollouts tbody');
  body.replaceChildren(...rollouts.map(rolloutRow));
  if (rollouts.length === 0) body.append(el('tr', {}, el('td', { colSpan: 5, class: 'empty', text: 'No rollouts yet.' })));
}

// ---------------------------------------------------------------- the selected rollout

async function selectRollout(id) {
  if (state.selected === id) return;
  state.selected = id;
  state.rollout = null;
  for (const row of document.querySelectorAll('#rollouts tr[data-rollout]')) {
    row.classList.toggle('selected', row.dataset.rollout === String(id));
  }
  const rollout = await api('GET', `/v1/rollouts/${id}`);
  await seedSeriesFromEvents(rollout);
  showRollout(rollout);
}

async function refreshSelected() {
  if (state.selected === null) return;
  const known = state.rollout;
  // A finished rollout does not change: stop re-reading it after the final sample.
  if (known && known.id === state.selected && !ACTIVE_STATES.has(known.state) && known.final) return;
  const rollout = await api('GET', `/v1/rollouts/${state.selected}`);
  if (rollout.id !== state.selected) return; // the selection changed meanwhile
  rollout.final = !ACTIVE_STATES.has(rollout.state);
  showRollout(rollout);
}

function showRollout(r) {
  const rebuild = !state.rollout || state.rollout.id !== r.id || state.stageCards.length !== r.stages.length;
  state.rollout = r;
  $('#detail').hidden = false;
  $('#detail-title').textContent = `Rollout #${r.id} · ${r.channel} v${r.version}`;
  $('#detail-state').replaceWith(Object.assign(stateBadge(r), { id: 'detail-state' }));
  const reason = $('#detail-reason');
  // A stage that cannot progress says why (the server's blocked code and sentence).
  const blocked = r.blocked ? `Blocked (${r.blocked.code}): ${r.blocked.message}.` : '';
  // Live hosts that heartbeat but never ask for their desired state: the stage does not wait for them.
  const deaf = r.not_taking_updates_hosts > 0
    ? `${r.not_taking_updates_hosts} live host${r.not_taking_updates_hosts === 1 ? '' : 's'} not taking updates (no poll within the poll bound; not waited for).`
    : '';
  const notes = [r.halt_reason, r.frozen_by_emergency_stop ? 'Frozen by the emergency stop.' : '', blocked, deaf].filter(Boolean);
  reason.hidden = notes.length === 0;
  reason.textContent = notes.join(' ');
  reason.classList.toggle('blocked', Boolean(blocked));
  updateActions(r);
  // Keep the selected rollout's row in the list as fresh as the detail.
  $(`#rollouts tr[data-rollout="${r.id}"]`)?.replaceWith(rolloutRow(r));
  if (rebuild) buildStageCards(r);
  const now = Date.now() / 1000;
  r.stages.forEach((stage, i) => {
    if (ACTIVE_STATES.has(r.state) && stage.started !== null && stage.started !== undefined && i <= r.stage) {
      addPoint(r, i, now, stage.gate);
    }
    updateStageCard(state.stageCards[i], r, stage, i);
  });
}

function updateActions(r) {
  const allowed = {
    start: r.state === 'pending',
    pause: r.state === 'running',
    resume: r.state === 'paused',
    approve: r.phase === 'awaiting_approval',
    abort: ACTIVE_STATES.has(r.state),
  };
  for (const button of document.querySelectorAll('#detail .actions button')) {
    button.disabled = !allowed[button.dataset.action];
  }
}

function buildStageCards(r) {
  for (const chart of state.charts.values()) chart.destroy();
  state.charts.clear();
  state.stageCards = r.stages.map((stage, i) => {
    const card = el('article', { class: 'stage', 'data-stage': String(i) },
      el('header', {},
        el('strong', { text: `Stage ${i}` }),
        el('span', { text: ` ${stage.ring} · ${stage.percent}% · bake ${stage.bake_s}s · min ${stage.min_hosts} hosts` }),
        el('span', { class: 'stage-state' }),
        el('span', { class: 'verdict' })),
      el('div', { class: 'bar-slot' }),
      el('dl', { class: 'counts' },
        ...['exposed', 'applied', 'healthy', 'failed', 'silent'].flatMap((k) => [
          el('dt', { text: k }),
          el('dd', { class: `count-${k}`, text: '0' }),
        ])),
      el('p', { class: 'gate' }),
      el('section', { class: 'strata', hidden: true }),
      el('div', { class: 'stage-chart' }));
    return card;
  });
  $('#stages').replaceChildren(...state.stageCards);
  r.stages.forEach((_, i) => makeChart(r, i, state.stageCards[i].querySelector('.stage-chart')));
}

function updateStageCard(card, r, stage, i) {
  const current = i === r.stage && ACTIVE_STATES.has(r.state);
  card.classList.toggle('current', current);
  card.querySelector('.stage-state').textContent = stage.state || 'not started';
  card.querySelector('.stage-state').className = `stage-state st-${stage.state || 'none'}`;
  const gate = stage.gate || {};
  const verdict = card.querySelector('.verdict');
  verdict.textContent = `gate: ${gate.verdict || '-'}`;
  verdict.className = `verdict v-${gate.verdict || 'none'}`;
  card.querySelector('.bar-slot').replaceChildren(hostBar(stage));
  for (const k of ['exposed', 'applied', 'healthy', 'failed', 'silent']) {
    card.querySelector(`.count-${k}`).textContent = String(stage[k] ?? 0);
  }
  const limit = gate.params?.max_failure_rate;
  card.querySelector('.gate').textContent =
    `SPRT statistic ${fixed(gate.statistic)} of ${fixed(gate.upper)} · failure rate ${pct(gate.failure_rate)}` +
    ` (limit ${pct(limit)}, baseline ${pct(gate.baseline)})` + (gate.reason ? ` — ${gate.reason}` : '') +
    (current && stage.pacing?.window !== undefined
      ? ` · wave ${stage.pacing.window} of ${stage.pacing.ranked_hosts} hosts (${stage.pacing.confirmed} confirmed)`
      : '') +
    (stage.blocked ? ` · blocked: ${stage.blocked.message}` : '');
  updateStrata(card.querySelector('.strata'), stage);
  const chart = state.charts.get(`${r.id}:${i}`);
  const series = state.series.get(`${r.id}:${i}`);
  if (chart && series) chart.setData(seriesData(series));
}

// Stratified coverage of a stage with strata: which strata (label values) it must cover, how many
// live hosts each has and how many are healthy on the release, which are still missing. The
// server sends the per-stratum figures for the current stage of an active rollout only (missing
// strata first, at most 20); other stages show their strata keys.
function updateStrata(box, stage) {
  const st = stage.strata;
  box.hidden = !st;
  if (!st) return;
  const need = st.min_hosts_per_stratum ?? 1;
  const keys = (st.keys || []).join(', ');
  const head = el('p', { class: 'strata-head' },
    el('strong', { text: `Strata by ${keys}` }),
    el('span', { text: ` · ${need} healthy host${need === 1 ? '' : 's'} per stratum of at least ${st.min_stratum_size ?? '-'} live hosts` }));
  if (!Array.isArray(st.coverage)) {
    box.replaceChildren(head);
    return;
  }
  const qualifying = st.qualifying ?? st.coverage.length;
  const summary = el('p', {
    class: `strata-summary${st.covered < qualifying ? ' missing' : ''}`,
    text: `${st.covered} of ${qualifying} qualifying strata covered` +
      (st.strata > qualifying ? ` (${st.strata - qualifying} more too small to qualify)` : ''),
  });
  const rows = st.coverage.map((c) => {
    const covered = c.covered ?? (c.healthy >= need);
    return el('tr', { class: covered ? 'covered' : 'missing', 'data-stratum': c.stratum },
      el('td', { text: c.stratum }),
      el('td', { class: 'num live-hosts', text: String(c.live_hosts ?? 0) }),
      el('td', { class: 'num healthy', text: `${c.healthy ?? 0} of ${need}` }),
      el('td', { class: 'num', text: String(c.failed ?? 0) }),
      el('td', { class: 'status', text: covered ? 'covered' : 'missing' }));
  });
  const table = el('table', { class: 'strata-table' },
    el('thead', {}, el('tr', {},
      el('th', { text: 'stratum' }),
      ...['live hosts', 'healthy on release', 'failed'].map((t) => el('th', { class: 'num', text: t })),
      el('th', { text: '' }))),
    el('tbody', {}, ...rows));
  const more = qualifying > st.coverage.length
    ? [el('p', { class: 'strata-more', text: `${qualifying - st.coverage.length} more strata not listed` })]
    : [];
  box.replaceChildren(head, summary, table, ...more);
}

// ---------------------------------------------------------------- charts

function seriesFor(rolloutId, stage) {
  const key = `${rolloutId}:${stage}`;
  if (!state.series.has(key)) {
    state.series.set(key, { t: [], rate: [], limit: [], baseline: [], stat: [], upper: [] });
  }
  return state.series.get(key);
}

// Adds one sample (time in seconds) keeping the series sorted by time.
function addPoint(rollout, stage, t, gate) {
  if (!gate) return;
  const s = seriesFor(rollout.id, stage);
  const limit = rollout.stages[stage]?.gate?.params?.max_failure_rate ?? gate.params?.max_failure_rate ?? null;
  let at = s.t.length;
  while (at > 0 && s.t[at - 1] > t) at--;
  if (at > 0 && Math.abs(s.t[at - 1] - t) < 0.001) return; // same instant
  const values = { t, rate: gate.failure_rate ?? 0, limit, baseline: gate.baseline ?? null, stat: gate.statistic ?? 0, upper: gate.upper ?? null };
  for (const [k, v] of Object.entries(values)) s[k].splice(at, 0, v);
  if (s.t.length > MAX_POINTS) for (const k of Object.keys(s)) s[k].shift();
}

function seriesData(s) {
  return [s.t, s.rate, s.limit, s.baseline, s.stat, s.upper];
}

// History: events of this rollout that carry gate figures (gate_waiting, advance, finish, halt).
async function seedSeriesFromEvents(rollout) {
  let after = 0;
  for (let page = 0; page < 20; page++) {
    const doc = await api('GET', `/v1/events?rollout=${rollout.id}&after=${after}&limit=1000`);
    for (const ev of doc.events) addPointFromEvent(rollout, ev);
    if (doc.next_after === undefined || doc.events.length < 1000) break;
    after = doc.next_after;
  }
}

function addPointFromEvent(rollout, ev) {
  const data = ev.data || {};
  if (!data.gate || data.stage === undefined) return;
  addPoint(rollout, data.stage, ev.time / 1000, data.gate);
}

function makeChart(rollout, stage, container) {
  if (typeof window.uPlot !== 'function') {
    container.append(el('p', { class: 'muted', text: 'Chart unavailable: uPlot was not vendored (scripts/vendor-web.sh).' }));
    return;
  }
  const width = Math.max(320, container.clientWidth || 600);
  const percentAxis = (u, values) => values.map((v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`);
  const opts = {
    width,
    height: 180,
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true },
      // Headroom above the limit and the halt bound so that neither sits on the top edge.
      rate: { range: (u, min, max) => [0, Math.max(0.05, (max || 0) * 1.5)] },
      llr: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(1, (max || 0) * 1.25)] },
    },
    series: [
      {},
      { label: 'failure rate', scale: 'rate', stroke: '#d14343', width: 2, value: (u, v) => (v == null ? '-' : pct(v)) },
      { label: 'limit', scale: 'rate', stroke: '#8a8f98', dash: [6, 4], width: 1.5, value: (u, v) => (v == null ? '-' : pct(v)) },
      { label: 'baseline', scale: 'rate', stroke: '#3f9f6f', width: 1, value: (u, v) => (v == null ? '-' : pct(v)) },
      { label: 'SPRT statistic', scale: 'llr', stroke: '#3b6fd1', width: 1.5, value: (u, v) => (v == null ? '-' : fixed(v)) },
      { label: 'SPRT halt bound', scale: 'llr', stroke: '#3b6fd1', dash: [2, 4], width: 1, value: (u, v) => (v == null ? '-' : fixed(v)) },
    ],
    axes: [
      {},
      { scale: 'rate', values: percentAxis, size: 56 },
      { scale: 'llr', side: 1, grid: { show: false }, size: 48 },
    ],
  };
  const chart = new window.uPlot(opts, seriesData(seriesFor(rollout.id, stage)), container);
  state.charts.set(`${rollout.id}:${stage}`, chart);
  new ResizeObserver(() => {
    const w = container.clientWidth;
    if (w > 0 && Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height: 180 });
  }).observe(container);
}

// ---------------------------------------------------------------- actions

const ACTION_TEXT = {
  start: 'Start this rollout: stage 0 begins exposing hosts.',
  pause: 'Pause: no new host is exposed; hosts that have the release keep it.',
  resume: 'Resume exposing hosts from the current stage.',
  approve: 'Approve the current stage: it starts exposing hosts.',
  abort: 'Abort: the release is quarantined and every exposed host goes back to the stable release. This cannot be undone.',
};

// Shows the confirmation dialog; resolves to the reason typed, or null when cancelled.
function confirmAction(action, r) {
  const dialog = $('#confirm');
  $('#confirm-title').textContent = `${action[0].toUpperCase()}${action.slice(1)} rollout #${r.id} (${r.channel} v${r.version})?`;
  $('#confirm-text').textContent = ACTION_TEXT[action];
  $('#confirm-reason').value = '';
  $('#confirm-ok').className = action === 'abort' ? 'danger' : '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? $('#confirm-reason').value : null), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

async function runAction(action) {
  const r = state.rollout;
  if (!r) return;
  const reason = await confirmAction(action, r);
  if (reason === null) return;
  const body = reason ? { reason } : {};
  const updated = await api('POST', `/v1/rollouts/${r.id}/${action}`, body);
  clearError();
  updated.final = false; // take one more sample even if it just ended
  showRollout(updated);
  await refreshLists();
}

// ---------------------------------------------------------------- events

function eventSummary(ev) {
  const d = ev.data || {};
  const parts = [];
  if (d.from !== undefined && d.to !== undefined) parts.push(`${d.from} → ${d.to}`);
  if (d.stage !== undefined) parts.push(`stage ${d.stage}`);
  if (d.counts) parts.push(`applied ${d.counts.applied}, healthy ${d.counts.healthy}, failed ${d.counts.failed}`);
  if (d.gate) parts.push(`gate ${d.gate.verdict}, statistic ${fixed(d.gate.statistic)}`);
  if (d.channel !== undefined && d.version !== undefined) parts.push(`${d.channel} v${d.version}`);
  if (d.name) parts.push(d.name);
  if (d.reason) parts.push(d.reason);
  return parts.join(' · ');
}

function eventItem(ev) {
  const item = el('li', { 'data-event': String(ev.id), 'data-kind': ev.kind },
    el('time', { text: clock(ev.time) }),
    el('span', { class: 'kind', text: ev.kind }),
    el('span', { class: 'actor', text: ev.actor }));
  if (ev.rollout !== undefined && ev.rollout !== null) {
    const link = el('a', { href: '#', text: `#${ev.rollout}` });
    link.addEventListener('click', (e) => {
      e.preventDefault();
      attempt(() => selectRollout(ev.rollout));
    });
    item.append(link);
  }
  item.append(el('span', { class: 'summary', text: eventSummary(ev) }));
  if (/halt|abort|quarantine|rollback/.test(ev.kind)) item.classList.add('bad');
  if (/finish|advance/.test(ev.kind)) item.classList.add('good');
  return item;
}

function addEvents(events) {
  const list = $('#events');
  for (const ev of events) {
    if (ev.id <= state.lastEventId) continue;
    state.lastEventId = ev.id;
    list.prepend(eventItem(ev));
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

async function loadEventHistory() {
  let after = 0;
  const recent = [];
  for (let page = 0; page < 50; page++) {
    const doc = await api('GET', `/v1/events?after=${after}&limit=1000`);
    recent.push(...doc.events);
    if (recent.length > MAX_EVENTS) recent.splice(0, recent.length - MAX_EVENTS);
    if (doc.next_after === undefined || doc.events.length < 1000) {
      if (doc.next_after !== undefined) after = doc.next_after;
      break;
    }
    after = doc.next_after;
  }
  addEvents(recent);
  state.lastEventId = Math.max(state.lastEventId, after);
}

function onEvent(ev) {
  addEvents([ev]);
  if (ev.rollout === undefined || ev.rollout === null) return;
  if (state.rollout && ev.rollout === state.rollout.id) {
    addPointFromEvent(state.rollout, ev);
    if (state.rollout.final) state.rollout.final = false;
  }
  queueRefresh();
}

// Coalesces bursts of events into one re-read of the lists and the selected rollout.
function queueRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  setTimeout(() => {
    state.refreshQueued = false;
    attempt(async () => {
      await refreshSelected();
      await refreshLists();
    });
  }, 250);
}

// A server-sent-events parser: feed() text as it arrives; calls onFrame({id, event, data}).
class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.data = [];
    this.event = '';
    this.id = '';
  }

  feed(text) {
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop(); // an incomplete last line waits for more text
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) this.onFrame({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id') this.id = value;
  }
}

function setLive(on) {
  const live = $('#live');
  live.textContent = on ? '● live' : '○ offline';
  live.classList.toggle('on', on);
}

// Follows GET /v1/events/stream, resuming with Last-Event-ID after a drop (with backoff).
async function followEvents() {
  let backoff = 500;
  while (state.token) {
    const abort = new AbortController();
    state.streamAbort = abort;
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
      if (state.lastEventId > 0) headers['Last-Event-ID'] = String(state.lastEventId);
      const res = await fetch('/v1/events/stream', { headers, signal: abort.signal, cache: 'no-store' });
      if (!res.ok) throw await errorFrom(res);
      setLive(true);
      backoff = 500;
      const parser = new SseParser((frame) => {
        try {
          onEvent(JSON.parse(frame.data));
        } catch (err) {
          console.warn('unreadable event', frame, err);
        }
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
    } catch (err) {
      if (abort.signal.aborted) return; // signed out
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
        showError(err);
        if (err.status === 401 || err.status === 403) return;
      }
    }
    setLive(false);
    if (!state.token || abort.signal.aborted) return;
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  $('#signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    clearError();
    signIn(token).catch(showErrorOnSignIn);
  });
  $('#signout').addEventListener('click', () => signOut());
  $('#error-close').addEventListener('click', clearError);
  for (const button of document.querySelectorAll('#detail .actions button')) {
    button.addEventListener('click', () => attempt(() => runAction(button.dataset.action)));
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch(showErrorOnSignIn);
  } else {
    $('#signin').hidden = false;
  }
}

function showErrorOnSignIn(err) {
  $('#signin').hidden = false;
  $('#app').hidden = true;
  const why = err instanceof ApiError && err.status === 401 ? `The server refused this token: ${err.message}` : err.message;
  $('#error-text').textContent = why;
  $('#error').hidden = false;
}

init();
