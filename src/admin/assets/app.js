// recordhook console: plain script, no dependencies. Everything from the
// API is put into the page as text (textContent), never as HTML.
'use strict';

const TOKEN_KEY = 'recordhook-admin-token';
const REFRESH_MS = 3000;
const $ = (selector) => document.querySelector(selector);

let view = 'events';
let cursor = null;          // the page being shown: null for the newest
let selected = null;        // event id whose detail is open
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (options.body) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { ...options, headers, cache: 'no-store' });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? '' : String(text);
  if (className) td.className = className;
  return td;
}

function status(row, value) {
  const span = document.createElement('span');
  span.className = `status ${value}`;
  span.textContent = value;
  row.insertCell().append(span);
}

function eventName(item) {
  return item.event_name ? `${item.event_name} (${item.event_type})` : String(item.event_type);
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  for (const id of ['events-view', 'sinks-view', 'dead-view', 'reconciliation-view']) $(`#${id}`).hidden = true;
  $('#nav').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
}

async function guarded(work, errorBox) {
  try {
    $(errorBox).textContent = '';
    await work();
  } catch (error) {
    if (error instanceof Unauthorized) showLogin('That token was refused.');
    else $(errorBox).textContent = error.message;
  }
}

function filterQuery() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData($('#filters'))) {
    if (value.trim()) params.set(key, value.trim());
  }
  if (cursor) params.set('cursor', cursor);
  return params;
}

async function loadEvents() {
  const page = await api(`/api/v1/events?${filterQuery()}`);
  const body = $('#events tbody');
  body.replaceChildren();
  for (const item of page.items) {
    const row = body.insertRow();
    row.className = 'clickable';
    row.dataset.id = item.id;
    if (item.id === selected) row.classList.add('selected');
    cell(row, item.received_at);
    const name = cell(row, eventName(item));
    if (item.source === 'reconciled') {
      const badge = document.createElement('span');
      badge.className = 'badge reconciled';
      badge.textContent = 'reconciled';
      badge.title = 'never arrived from CSS; recovered from Tencent\'s records of what CSS sent';
      name.append(' ', badge);
    }
    cell(row, item.stream_id);
    cell(row, item.file_id);
    status(row, item.status);
    cell(row, item.sinks.map((s) => `${s.sink}: ${s.status}`).join(', '));
    row.addEventListener('click', () => guarded(() => showDetail(item.id), '#events-error'));
  }
  const older = $('#older');
  older.hidden = !page.next_cursor;
  older.dataset.cursor = page.next_cursor || '';
  $('#live').textContent = cursor ? 'older page: not updating' : 'updating every 3 s';
}

async function showDetail(id) {
  selected = id;
  const event = await api(`/api/v1/events/${encodeURIComponent(id)}`);
  $('#detail').hidden = false;
  $('#detail-id').textContent = event.id;
  const body = $('#detail-sinks tbody');
  body.replaceChildren();
  for (const sink of event.sinks) {
    const row = body.insertRow();
    row.dataset.sink = sink.sink;
    cell(row, sink.sink);
    status(row, sink.status);
    cell(row, sink.attempts);
    cell(row, sink.last_attempt_at);
    cell(row, sink.next_attempt_at);
    cell(row, sink.last_error);
  }
  const { event: raw, ...typed } = event.record;
  $('#detail-typed').textContent = JSON.stringify(typed, null, 2);
  $('#detail-raw').textContent = JSON.stringify(raw, null, 2);
  for (const row of document.querySelectorAll('#events tbody tr')) {
    row.classList.toggle('selected', row.dataset.id === id);
  }
}

function chart(samples) {
  const svgNs = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', '0 0 180 36');
  const peak = Math.max(1, ...samples.map((s) => s.pending));
  const line = document.createElementNS(svgNs, 'polyline');
  const step = samples.length > 1 ? 178 / (samples.length - 1) : 0;
  line.setAttribute('points', samples.map((s, i) => `${1 + i * step},${35 - (s.pending / peak) * 33}`).join(' '));
  const title = document.createElementNS(svgNs, 'title');
  title.textContent = `peak ${peak} pending, ${samples.length} samples (one a minute)`;
  svg.append(title, line);
  return svg;
}

async function loadSinks() {
  const { sinks } = await api('/api/v1/sinks');
  const body = $('#sinks tbody');
  body.replaceChildren();
  for (const sink of sinks) {
    const row = body.insertRow();
    row.dataset.sink = sink.name;
    cell(row, sink.name);
    cell(row, sink.type);
    cell(row, sink.pending);
    cell(row, sink.dead);
    row.insertCell().append(chart(sink.backlog));
    cell(row, sink.last_success_at);
    cell(row, sink.last_error ? `${sink.last_failure_at}: ${sink.last_error}` : '');
  }
}

async function act(action, selection) {
  const result = await api(`/api/v1/dead-letters/${action}`, {
    method: 'POST',
    body: JSON.stringify(selection),
  });
  $('#dead-result').textContent = `${action === 'retry' ? 'queued again' : 'purged'}: ${result.affected}`;
  await loadDead();
}

async function loadDead() {
  const page = await api('/api/v1/events?status=dead&limit=200');
  const body = $('#dead tbody');
  body.replaceChildren();
  for (const item of page.items) {
    for (const sink of item.sinks.filter((s) => s.status === 'dead')) {
      const row = body.insertRow();
      row.dataset.id = item.id;
      row.dataset.sink = sink.sink;
      cell(row, item.received_at);
      cell(row, eventName(item));
      cell(row, item.file_id);
      cell(row, sink.sink);
      cell(row, sink.attempts);
      cell(row, sink.last_error);
      const actions = row.insertCell();
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.className = 'retry';
      retry.textContent = 'Retry';
      retry.addEventListener('click', () => guarded(
        () => act('retry', { sink: sink.sink, ids: [item.id] }), '#dead-error'));
      const purge = document.createElement('button');
      purge.type = 'button';
      purge.className = 'purge danger';
      purge.textContent = 'Purge';
      purge.addEventListener('click', () => {
        if (confirm(`Purge the dead letter of ${item.id} for ${sink.sink}? It will not be delivered.`)) {
          guarded(() => act('purge', { sink: sink.sink, ids: [item.id] }), '#dead-error');
        }
      });
      actions.append(retry, ' ', purge);
    }
  }
}

async function loadReconciliation() {
  const data = await api('/api/v1/reconciliation');
  const s = data.settings;
  $('#reconciliation-settings').textContent = s.enabled
    ? `Runs every ${s.interval_secs} s against ${s.endpoint}, checking event types ${s.event_types.join(', ')} from ${s.lookback_secs} s to ${s.lag_secs} s ago.`
    : 'Not enabled in this server ([reconcile] enabled = false); runs of `recordhook reconcile` are shown.';
  const runs = $('#runs tbody');
  runs.replaceChildren();
  for (const run of data.runs) {
    const total = Object.values((run.report && run.report.by_type) || {}).reduce((sum, counts) => {
      for (const key of ['sent', 'present', 'recovered', 'unrecoverable']) sum[key] += counts[key];
      return sum;
    }, { sent: 0, present: 0, recovered: 0, unrecoverable: 0 });
    const row = runs.insertRow();
    cell(row, run.started_at);
    cell(row, `${run.window_start} .. ${run.window_end}`);
    status(row, run.status === 'ok' ? 'delivered' : run.status === 'running' ? 'pending' : 'dead');
    row.cells[2].firstChild.textContent = run.status;
    cell(row, total.sent);
    cell(row, total.present);
    cell(row, total.recovered);
    cell(row, total.unrecoverable);
    cell(row, run.report ? run.report.api_calls : '');
    cell(row, run.error);
  }
  $('#gap-count').textContent = String(data.gap_count);
  const gaps = $('#gaps tbody');
  gaps.replaceChildren();
  for (const gap of data.gaps) {
    const row = gaps.insertRow();
    cell(row, gap.event_time);
    cell(row, eventName(gap));
    cell(row, gap.stream);
    cell(row, gap.result_code);
    cell(row, gap.reason);
    cell(row, gap.request_id);
    cell(row, gap.request_excerpt, 'excerpt');
  }
}

const loaders = {
  events: () => guarded(loadEvents, '#events-error'),
  sinks: () => guarded(loadSinks, '#sinks-error'),
  dead: () => guarded(loadDead, '#dead-error'),
  reconciliation: () => guarded(loadReconciliation, '#reconciliation-error'),
};

function show(next) {
  view = next;
  for (const button of document.querySelectorAll('#nav button[data-view]')) {
    button.classList.toggle('active', button.dataset.view === view);
  }
  $('#events-view').hidden = view !== 'events';
  $('#sinks-view').hidden = view !== 'sinks';
  $('#dead-view').hidden = view !== 'dead';
  $('#reconciliation-view').hidden = view !== 'reconciliation';
  loaders[view]();
  clearInterval(timer);
  // Recent callbacks (and sinks, dead letters) update by themselves.
  timer = setInterval(() => {
    if (view !== 'events' || !cursor) loaders[view]();
  }, REFRESH_MS);
}

function start() {
  $('#login').hidden = true;
  $('#nav').hidden = false;
  show(view);
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    start();
  });
  $('#sign-out').addEventListener('click', () => showLogin(''));
  for (const button of document.querySelectorAll('#nav button[data-view]')) {
    button.addEventListener('click', () => show(button.dataset.view));
  }
  $('#filters').addEventListener('submit', (event) => {
    event.preventDefault();
    cursor = null;
    loaders.events();
  });
  $('#older').addEventListener('click', () => {
    cursor = $('#older').dataset.cursor || null;
    loaders.events();
  });
  $('#retry-all').addEventListener('click', () => guarded(() => act('retry', { all: true }), '#dead-error'));
  $('#purge-all').addEventListener('click', () => {
    if (confirm('Purge every dead letter? They will not be delivered.')) {
      guarded(() => act('purge', { all: true }), '#dead-error');
    }
  });
  if (token()) start();
  else showLogin('');
});
