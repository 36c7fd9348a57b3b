// tidewire dashboard: one page, eight tabs, talking only to the public API
// (/api/v1/*, /metrics and the /ws JSON protocol). Plain ES2020, no build
// step; charts use the vendored uPlot (global `uPlot`). What the pages
// that list things refreshed in place share (Queues here, Topics and
// Exports) is in cards.js, loaded before this file.
'use strict';

// ---------------------------------------------------------------------------
// DOM helpers. Server text only ever goes in through textContent.

const $ = (selector, root = document) => root.querySelector(selector);

/** Creates an element: `attrs` are properties (class, text, title, on*,
 *  dataset, hidden...), children are nodes or strings (as text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replaces a node's children. */
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

/** Shows `text` in an error element, or hides it when empty. */
function showError(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

/** A short message at the top of the page, gone after a few seconds. */
function notify(text) {
  const notice = $('#notice');
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.hidden = true; }, 6000);
}

// ---------------------------------------------------------------------------
// Formatting.

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** Epoch ms or an RFC 3339 string as local `YYYY-MM-DD HH:MM:SS.mmm`. */
function formatTime(value, withDate = true) {
  if (value === null || value === undefined || value === '') return '–';
  const date = new Date(typeof value === 'number' ? value : Date.parse(value));
  if (Number.isNaN(date.getTime())) return String(value);
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  if (!withDate) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

function formatNumber(value, maxDecimals = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: maxDecimals });
}

function formatDuration(ms) {
  if (ms === null || ms === undefined) return 'forever';
  const units = [['d', 86400000], ['h', 3600000], ['m', 60000], ['s', 1000]];
  for (const [unit, size] of units) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/** An age in milliseconds, short: `850 ms`, `12.5 s`, `4 min 10 s`,
 *  `3 h 5 min`, `2 d 4 h`. */
function formatAge(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const [m, h, d] = [Math.floor(s / 60), Math.floor(s / 3600), Math.floor(s / 86400)];
  if (h === 0) return `${m} min ${Math.floor(s % 60)} s`;
  if (d === 0) return `${h} h ${m % 60} min`;
  return `${d} d ${h % 24} h`;
}

/** A payload for display: pretty JSON, or the text as it came. */
function payloadText(payload, encoding) {
  return encoding === 'json' ? JSON.stringify(payload, null, 2) : String(payload);
}

/** Badges for a message's QoS, retain flag and non-JSON encoding. */
function messageBadges(message) {
  return [
    el('span', { class: 'badge', text: `QoS ${message.qos}`, title: 'quality of service' }),
    message.retain ? el('span', { class: 'badge warn', text: 'retained' }) : null,
    message.encoding === 'base64' ? el('span', { class: 'badge alt', text: 'base64', title: 'binary payload, base64-encoded' }) : null,
  ];
}

// ---------------------------------------------------------------------------
// Credentials. A server that wants them answers 401 (by default anonymous
// access is allowed only on a loopback listener); the page then asks for a
// username and password, or an API token (see Signing in), and sends them
// on every request as an `Authorization` header and on the /ws URL as query
// parameters (browsers cannot set headers on a WebSocket). They are kept in
// sessionStorage: for this tab only, gone when it closes, never written to
// localStorage or a cookie. Without them the page is anonymous.

const CREDENTIALS_KEY = 'tidewire.credentials';

const credentials = {
  generation: 0, // bumped on every change: a 401 to older ones is stale

  /** `{username, password}`, `{token}`, or null (anonymous). */
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY)) || null;
    } catch {
      return null;
    }
  },

  set(value) {
    this.generation += 1;
    sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify(value));
  },

  clear() {
    this.generation += 1;
    sessionStorage.removeItem(CREDENTIALS_KEY);
  },

  /** The `Authorization` header for `value`: Basic for a user, Bearer
   *  for a token; null when anonymous. */
  header(value = this.get()) {
    if (!value) return null;
    if (value.token !== undefined) return `Bearer ${value.token}`;
    const bytes = new TextEncoder().encode(`${value.username}:${value.password}`);
    return `Basic ${btoa(String.fromCharCode(...bytes))}`;
  },

  /** The same as /ws query parameters (URL-encoded), or ''. */
  query(value = this.get()) {
    if (!value) return '';
    const params = value.token !== undefined
      ? { token: value.token }
      : { username: value.username, password: value.password };
    return `?${new URLSearchParams(params)}`;
  },

  /** Who is signed in, for the top bar. */
  label(value = this.get()) {
    if (!value) return '';
    return value.token !== undefined ? 'API token' : value.username;
  },
};

// ---------------------------------------------------------------------------
// HTTP.

/** The error text of a failed answer: its JSON `error`, else the body. */
async function errorText(response) {
  const text = await response.text().catch(() => '');
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  return (body && body.error) || text || `${response.status} ${response.statusText}`;
}

/**
 * fetch() with the tab's credentials. A 401 opens the sign-in dialog
 * (a 403 is an ordinary error: signed in, but not allowed). While the
 * dialog waits for the user, requests fail at once: no stream of 401s
 * from the pollers, and no repeated failed logins, which would make the
 * server slow this address down.
 */
async function authFetch(path, options = {}) {
  if (login.waiting) throw new Error('sign-in required');
  const used = credentials.generation;
  const headers = new Headers(options.headers);
  const authorization = credentials.header();
  if (authorization) headers.set('authorization', authorization);
  // credentials: 'omit' keeps the browser from showing its own login
  // prompt for the 401's `WWW-Authenticate: Basic` challenge; this page
  // asks itself and sends the header (tidewire sets no cookies).
  const response = await fetch(path, { ...options, headers, credentials: 'omit' });
  if (response.status === 401 && used === credentials.generation) {
    login.required(await errorText(response.clone()));
  }
  return response;
}

/** Fetches JSON; a non-2xx answer throws its `error` text. */
async function api(path, options = {}) {
  const response = await authFetch(path, options);
  if (!response.ok) throw new Error(await errorText(response));
  const text = await response.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

/** Sends `body` as JSON with `method`; answers like api(). */
const sendJson = (method, path, body) => api(path, {
  method,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

const runSql = (sql) => sendJson('POST', '/api/v1/sql', { sql });

/** Parses Prometheus text into name -> [{labels, value}]. */
function parseMetrics(text) {
  const metrics = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    if (!metrics.has(match[1])) metrics.set(match[1], []);
    metrics.get(match[1]).push({ labels, value: Number(match[3]) });
  }
  return metrics;
}

/** Sum of a metric's samples whose labels match `where`; 0 when absent. */
function metricSum(metrics, name, where = {}) {
  return (metrics.get(name) || [])
    .filter((s) => Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

// ---------------------------------------------------------------------------
// The shared /ws socket: reconnects with backoff, re-sends subscriptions
// and watches after reconnecting, pings every 20 s, and waits for a
// sign-in when the server refuses the upgrade for want of credentials.

const socket = {
  ws: null,
  opened: false,
  retryMs: 500,
  retryTimer: null,
  pingTimer: null,
  nextId: 1,
  filters: new Map(),   // filter -> {onAck, onError}
  watches: new Map(),   // watch id -> {request, onResult, onError}
  requests: new Map(),  // request id -> {onAck, onError}
  onMessage: null,      // the live tail's handler for message frames

  setStatus(status) {
    $('#ws-status').textContent = status;
    document.body.dataset.ws = status;
  },

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws${credentials.query()}`;
  },

  connect() {
    clearTimeout(this.retryTimer);
    this.setStatus('connecting');
    this.opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => this.onOpen(ws);
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = () => this.onClose(ws);
  },

  /** A new socket now (other credentials); the old one is dropped. */
  reconnect() {
    const old = this.ws;
    this.ws = null;
    clearInterval(this.pingTimer);
    this.requests.clear();
    if (old && old.readyState === WebSocket.CONNECTING) old.onopen = () => old.close();
    else if (old) old.close();
    this.connect();
  },

  onOpen(ws) {
    if (ws !== this.ws) return;
    this.opened = true;
    this.retryMs = 500;
    this.setStatus('connected');
    for (const [filter, handlers] of this.filters) this.sendSubscribe(filter, handlers);
    for (const [id, watch] of this.watches) this.send({ op: 'watch', id, ...watch.request });
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.send({ op: 'ping' }), 20000);
  },

  async onClose(ws) {
    if (ws !== this.ws) return;
    clearInterval(this.pingTimer);
    this.requests.clear();
    this.setStatus('disconnected');
    // Refused before opening while the API answers 401: the server wants
    // credentials (or no longer takes these). The sign-in reconnects, so
    // no retry until then.
    const wantsLogin = !this.opened && await refusesCredentials();
    if (ws !== this.ws || wantsLogin) return;
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, 10000);
  },

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  },

  receive(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    if (frame.type === 'message') {
      if (this.onMessage) this.onMessage(frame);
    } else if (frame.type === 'result') {
      const watch = this.watches.get(frame.id);
      if (watch) watch.onResult(frame);
    } else if (frame.type === 'ack') {
      const request = this.requests.get(frame.id);
      this.requests.delete(frame.id);
      if (request && request.onAck) request.onAck(frame);
    } else if (frame.type === 'error') {
      this.receiveError(frame);
    }
  },

  receiveError(frame) {
    const request = this.requests.get(frame.id);
    const watch = this.watches.get(frame.id);
    this.requests.delete(frame.id);
    if (request && request.onError) request.onError(frame.error);
    else if (watch) watch.onError(frame.error);
    else if (frame.id === null || frame.id === undefined) notify(`WebSocket: ${frame.error}`);
  },

  /** Subscribes now and after every reconnect. */
  subscribe(filter, handlers) {
    this.filters.set(filter, handlers);
    this.sendSubscribe(filter, handlers);
  },

  sendSubscribe(filter, handlers) {
    const id = `sub-${this.nextId++}`;
    this.requests.set(id, handlers);
    if (!this.send({ op: 'subscribe', id, filter })) this.requests.delete(id);
  },

  unsubscribe(filter) {
    this.filters.delete(filter);
    this.send({ op: 'unsubscribe', filter });
  },

  /** Starts a watch (re-sent after reconnects); returns its id. */
  watch(request, onResult, onError) {
    const id = `watch-${this.nextId++}`;
    this.watches.set(id, { request, onResult, onError });
    this.send({ op: 'watch', id, ...request });
    return id;
  },

  unwatch(id) {
    if (this.watches.delete(id)) this.send({ op: 'unwatch', id });
  },
};

/** Whether the API refuses this tab's credentials (or their absence):
 *  401 to `GET /api/v1/streams`, which asks the sign-in dialog. */
async function refusesCredentials() {
  try {
    return (await authFetch('/api/v1/streams')).status === 401;
  } catch {
    return login.waiting; // already waiting for a sign-in
  }
}

// ---------------------------------------------------------------------------
// Signing in: the #login dialog, opened by a 401 (or by "Sign in" in the
// top bar, e.g. when anonymous access is allowed but limited). The
// credentials are checked with `GET /api/v1/streams` (it needs only a
// valid login) before they are kept; then the socket reconnects with them
// and the current view loads again. "Sign out" forgets them.

const login = {
  waiting: false, // the dialog is open because the server wants credentials

  /** The server answered 401 (`message`): asks for credentials, once. */
  required(message) {
    if (this.waiting) return;
    this.open(credentials.get()
      ? `The server no longer accepts these credentials (${message}). Sign in again.`
      : 'This server requires a login: a username and password, or an API token.', true);
  },

  /** Opens the dialog; a `required` one has no Cancel, but Sign out
   *  when credentials are kept (the server may take anonymous ones). */
  open(reason, required = false) {
    this.waiting = required;
    $('#login-reason').textContent = reason;
    $('#login-cancel').hidden = required;
    $('#login-sign-out').hidden = !required || credentials.get() === null;
    showError($('#login-error'), '');
    $('#login').hidden = false;
    this.focus();
  },

  close() {
    this.waiting = false;
    $('#login').hidden = true;
    $('#login-password').value = '';
    $('#login-token').value = '';
    showError($('#login-error'), '');
  },

  /** The first empty field of the chosen kind. */
  focus() {
    const fields = this.byToken() ? [$('#login-token')] : [$('#login-username'), $('#login-password')];
    (fields.find((f) => !f.value) || fields[0]).focus();
  },

  byToken: () => $('#login-kind-token').checked,

  /** Shows the fields of the chosen kind; hidden ones are disabled, so
   *  their `required` does not block the form. */
  showKind() {
    const byToken = this.byToken();
    $('#login-user-fields').hidden = byToken;
    $('#login-token-field').hidden = !byToken;
    $('#login-username').disabled = byToken;
    $('#login-password').disabled = byToken;
    $('#login-token').disabled = !byToken;
  },

  async submit(event) {
    event.preventDefault();
    const button = $('#login-submit');
    if (button.disabled) return;
    const byToken = this.byToken();
    const candidate = byToken
      ? { token: $('#login-token').value.trim() }
      : { username: $('#login-username').value, password: $('#login-password').value };
    button.disabled = true;
    showError($('#login-error'), '');
    try {
      // Not authFetch: these are not the tab's credentials (yet). A 403
      // would still mean they are good.
      const response = await fetch('/api/v1/streams', {
        headers: { authorization: credentials.header(candidate) },
        credentials: 'omit',
      });
      if (!response.ok && response.status !== 403) {
        showError($('#login-error'), `Sign-in failed: ${await errorText(response)}`);
        (byToken ? $('#login-token') : $('#login-password')).select();
        return;
      }
    } catch (e) {
      showError($('#login-error'), `Could not reach the server: ${e.message}`);
      return;
    } finally {
      button.disabled = false;
    }
    credentials.set(candidate);
    this.close();
    notify(`Signed in as ${credentials.label(candidate)}.`);
    this.changed();
  },

  signOut() {
    credentials.clear();
    notify('Signed out.');
    this.changed();
  },

  /** After the credentials changed: the top bar, the socket, the view. */
  changed() {
    this.showAccount();
    socket.reconnect();
    reloadView();
  },

  showAccount() {
    const signedIn = credentials.get() !== null;
    $('#account-name').textContent = credentials.label();
    $('#account-name').hidden = !signedIn;
    $('#sign-out').hidden = !signedIn;
    $('#sign-in').hidden = signedIn;
  },

  setUp() {
    $('#login-form').addEventListener('submit', (e) => this.submit(e));
    $('#login-form').addEventListener('input', () => showError($('#login-error'), ''));
    $('#login-form').addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !this.waiting) this.close();
    });
    for (const radio of document.querySelectorAll('input[name="login-kind"]')) {
      radio.addEventListener('change', () => { this.showKind(); this.focus(); });
    }
    $('#login-cancel').addEventListener('click', () => this.close());
    $('#login-sign-out').addEventListener('click', () => { this.close(); this.signOut(); });
    $('#sign-in').addEventListener('click', () => this.open('Sign in with a username and password, or an API token.'));
    $('#sign-out').addEventListener('click', () => this.signOut());
    this.showKind();
    this.showAccount();
  },
};

// ---------------------------------------------------------------------------
// Tables.

const NUMERIC_TYPE = /^(TINYINT|SMALLINT|INT|BIGINT|FLOAT|DOUBLE|REAL|DECIMAL)/i;
const isNumericType = (type) => NUMERIC_TYPE.test(type || '');
const isTimeType = (type) => /^(TIMESTAMP|DATE)/i.test(type || '');

/** A number as shown in tables: floating-point noise rounded away
 *  (23.601999999999997 shows as 23.602); exports keep the raw value. */
const formatCellNumber = (value) => (Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(12))));

/** One result cell: timestamps in local time, JSON for structures. */
function cell(value, type, nullText) {
  if (value === null || value === undefined) return el('td', { class: 'null', text: nullText });
  if (/^TIMESTAMP/i.test(type || '')) return el('td', { class: 'time', text: formatTime(value), title: String(value) });
  if (typeof value === 'object') return el('td', { text: JSON.stringify(value) });
  if (typeof value === 'number') return el('td', { class: 'num', text: formatCellNumber(value), title: String(value) });
  return el('td', { text: String(value) });
}

/** A result table; column types are shown via CSS from data-type, so a
 *  header's text is exactly the column name. */
function resultTable(columns, rows, { withTypes = true, nullText = 'NULL' } = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', {
    text: c.name,
    class: isNumericType(c.type) ? 'num' : null,
    dataset: withTypes && c.type ? { type: c.type } : {},
  })));
  const body = rows.map((row) => el('tr', {}, row.map((value, i) => cell(value, columns[i] && columns[i].type, nullText))));
  return el('table', { class: 'grid' }, el('thead', {}, head), el('tbody', {}, body));
}

// ---------------------------------------------------------------------------
// Charts: a small wrapper over uPlot, and the shaping of rows into series.

const PALETTE = ['#4e9cf5', '#f5a623', '#3dbd7d', '#e5534b', '#a371f7', '#2bc4c4', '#d4c200', '#ec6cb9'];
const liveCharts = new Set();

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** A uPlot chart in `container` that can be fed new data. */
class Chart {
  constructor(container, { height = 240, bars = false } = {}) {
    this.container = container;
    this.height = height;
    this.bars = bars;
    this.plot = null;
    this.shape = '';
    liveCharts.add(this);
  }

  /** Draws a model from chartModel(); rebuilds only when series change. */
  update(model) {
    const shape = JSON.stringify([model.time, model.series.map((s) => s.label), model.categories]);
    const data = [model.x, ...model.series.map((s) => s.values)];
    if (this.plot && shape === this.shape) {
      this.plot.setData(data);
      return;
    }
    this.destroyPlot();
    this.shape = shape;
    this.plot = new uPlot(this.options(model), data, this.container);
  }

  options(model) {
    const text = cssVar('--muted');
    const grid = cssVar('--grid');
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const xAxis = { ...axis };
    const x = { time: model.time };
    if (model.categories) {
      // Categories sit at 0..n-1, one tick each.
      x.range = [-0.5, model.categories.length - 0.5];
      xAxis.splits = () => model.categories.map((_, i) => i);
      xAxis.values = (u, ticks) => ticks.map((t) => model.categories[t] ?? '');
    } else {
      x.range = model.xRange || ((u) => dataRange(u.data[0], model.time ? 60 : 1));
    }
    return {
      width: this.width(),
      height: this.height,
      axes: [xAxis, { ...axis, size: 56 }],
      scales: { x, y: model.yFromZero ? { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } : {} },
      cursor: { points: { size: 6 } },
      series: [{ label: model.xLabel }, ...model.series.map((s, i) => this.seriesOptions(s.label, i))],
    };
  }

  seriesOptions(label, i) {
    const color = PALETTE[i % PALETTE.length];
    const options = { label, stroke: color, width: 2, value: (u, v) => formatNumber(v, 3) };
    if (this.bars) {
      Object.assign(options, { fill: `${color}bb`, paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } });
    }
    return options;
  }

  /** The container's content width. */
  width() {
    const style = getComputedStyle(this.container);
    const inner = this.container.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.max(inner || 600, 200);
  }

  resize() {
    if (this.plot && this.container.clientWidth > 0) this.plot.setSize({ width: this.width(), height: this.height });
  }

  destroyPlot() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }

  destroy() {
    this.destroyPlot();
    liveCharts.delete(this);
  }
}

/** The x range of sorted data; a lone point gets `margin` either side
 *  (uPlot would widen it to years). */
function dataRange(xs, margin) {
  if (!xs.length) return [0, 1];
  const [first, last] = [xs[0], xs[xs.length - 1]];
  return first === last ? [first - margin, last + margin] : [first, last];
}

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => liveCharts.forEach((c) => c.resize()), 100);
});

/** Value of an x cell on the chart's axis: seconds for time columns. */
function xValue(value, time) {
  if (value === null || value === undefined) return null;
  if (!time) return typeof value === 'number' ? value : Number(value);
  const ms = typeof value === 'number' ? value : Date.parse(value);
  return Number.isNaN(ms) ? null : ms / 1000;
}

/**
 * Shapes a result into chart series. `x` defaults to `defaultX`, `y` to
 * every numeric column but x and series; `series` splits rows into one
 * line per distinct value. A non-numeric, non-time x becomes categories.
 */
function chartModel(columns, rows, { x, y = [], series, defaultX = 0 } = {}) {
  const index = (name) => {
    const i = columns.findIndex((c) => c.name === name);
    if (i < 0) throw new Error(`no column named "${name}"`);
    return i;
  };
  const xi = x ? index(x) : defaultX;
  const si = series ? index(series) : -1;
  const numeric = (i) => isNumericType(columns[i].type)
    || (!columns[i].type && rows.some((r) => typeof r[i] === 'number'));
  const yi = y.length ? y.map(index) : columns.map((_, i) => i).filter((i) => i !== xi && i !== si && numeric(i));
  if (!yi.length) throw new Error('nothing to chart: no numeric column');

  const xType = columns[xi].type;
  const time = isTimeType(xType);
  const categorical = !time && !numeric(xi);
  const categories = categorical ? [...new Set(rows.map((r) => String(r[xi])))] : null;
  const xOf = (row) => (categorical ? categories.indexOf(String(row[xi])) : xValue(row[xi], time));

  // One line per (series value, y column), joined on sorted x.
  const lines = new Map();
  const xs = new Set();
  for (const row of rows) {
    const xv = xOf(row);
    if (xv === null || Number.isNaN(xv)) continue;
    xs.add(xv);
    for (const i of yi) {
      const prefix = si >= 0 ? String(row[si]) : '';
      const label = prefix && yi.length > 1 ? `${prefix} ${columns[i].name}` : prefix || columns[i].name;
      if (!lines.has(label)) lines.set(label, new Map());
      lines.get(label).set(xv, row[i] === null ? null : Number(row[i]));
    }
  }
  const xSorted = [...xs].sort((a, b) => a - b);
  return {
    time,
    categories,
    xLabel: columns[xi].name,
    x: xSorted,
    series: [...lines].map(([label, points]) => ({ label, values: xSorted.map((v) => (points.has(v) ? points.get(v) : null)) })),
  };
}

// ---------------------------------------------------------------------------
// Router: #overview, #tail, #streams, #queues, #topics, #exports, #sql,
// #dashboards[/ID].
// Each view has enter() and leave() so it can start and stop its timers.
// A page in a file of its own (topics.js, exports.js) adds itself to `views`.

const views = {};
let currentView = null;

function route() {
  const [name, arg] = location.hash.replace(/^#/, '').split('/');
  const next = views[name] ? name : 'overview';
  if (currentView && currentView !== next) views[currentView].leave();
  for (const key of Object.keys(views)) {
    $(`#view-${key}`).hidden = key !== next;
    $(`#tab-${key}`).classList.toggle('active', key === next);
  }
  currentView = next;
  views[next].enter(arg ? decodeURIComponent(arg) : undefined);
  liveCharts.forEach((c) => c.resize());
}

/** Leaves and enters the current view, so it loads again. */
function reloadView() {
  if (currentView) views[currentView].leave();
  currentView = null;
  route();
}

/** Runs `task` now and then `ms` after each run ends, until stopped. */
function poller(task, ms) {
  let timer = null;
  let active = false;
  let run = 0; // a tick left over from an earlier start() ends quietly
  const tick = async (id) => {
    try { await task(); } finally {
      if (id === run) timer = setTimeout(() => tick(id), ms);
    }
  };
  return {
    start() {
      if (active) return;
      active = true;
      run += 1;
      tick(run);
    },
    stop() {
      active = false;
      run += 1;
      clearTimeout(timer);
    },
  };
}

// ---------------------------------------------------------------------------
// Overview.

const overview = (() => {
  const HISTORY = 120; // one point a second: two minutes
  const history = { x: [], in: [], out: [] };
  let last = null;
  let chart = null;

  /** Polls /metrics; rates are counter deltas between polls. */
  async function pollMetrics() {
    let metrics;
    try {
      // Open by default; behind a login with `[auth] open_metrics = false`.
      const response = await authFetch('/metrics');
      if (!response.ok) return;
      metrics = parseMetrics(await response.text());
    } catch {
      return;
    }
    const now = Date.now();
    const totals = {
      in: metricSum(metrics, 'tidewire_publish_accepted_messages_total'),
      out: metricSum(metrics, 'tidewire_mqtt_messages_sent_total')
        + metricSum(metrics, 'tidewire_ws_frames_sent_total', { kind: 'message' }),
    };
    if (last) {
      const seconds = (now - last.at) / 1000;
      const rate = (key) => Math.max(0, totals[key] - last[key]) / seconds;
      record(now, rate('in'), rate('out'));
    }
    last = { at: now, ...totals };
    showGauges(metrics);
  }

  function record(now, rateIn, rateOut) {
    history.x.push(now / 1000);
    history.in.push(rateIn);
    history.out.push(rateOut);
    if (history.x.length > HISTORY) ['x', 'in', 'out'].forEach((k) => history[k].shift());
    $('#overview-rate-in').textContent = formatNumber(rateIn, 1);
    $('#overview-rate-out').textContent = formatNumber(rateOut, 1);
    if (currentView === 'overview') drawChart();
  }

  function showGauges(metrics) {
    const wsJson = metricSum(metrics, 'tidewire_ws_connections', { endpoint: 'json' });
    const wsMqtt = metricSum(metrics, 'tidewire_ws_connections', { endpoint: 'mqtt' });
    $('#overview-mqtt-connections').textContent = formatNumber(metricSum(metrics, 'tidewire_mqtt_connections'));
    $('#overview-ws-connections').textContent = formatNumber(wsJson + wsMqtt);
    $('#overview-ws-detail').textContent = `${wsJson} JSON · ${wsMqtt} MQTT`;
    $('#overview-sessions').textContent = formatNumber(metricSum(metrics, 'tidewire_mqtt_sessions'));
    $('#overview-retained').textContent = formatNumber(metricSum(metrics, 'tidewire_mqtt_retained_messages'));
  }

  function drawChart() {
    if (!chart) chart = new Chart($('#overview-chart'), { height: 180 });
    chart.update({
      time: true,
      categories: null,
      xLabel: 'time',
      xRange: (u) => {
        const xs = u.data[0];
        const end = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
        return [end - HISTORY, end];
      },
      yFromZero: true,
      x: history.x,
      series: [{ label: 'in', values: history.in }, { label: 'out', values: history.out }],
    });
  }

  async function pollLists() {
    try {
      const [streams, bridges] = await Promise.all([api('/api/v1/streams'), api('/api/v1/bridges')]);
      showStreams(streams.streams);
      showBridges(bridges.bridges);
      showError($('#overview-error'), '');
    } catch (e) {
      showError($('#overview-error'), `Could not load streams and bridges: ${e.message}`);
    }
  }

  function showStreams(streams) {
    const rows = streams.map((s) => el('tr', {},
      el('td', {}, el('a', { href: `#streams/${encodeURIComponent(s.name)}`, text: s.name })),
      el('td', { class: 'mono', text: s.filters.join(', ') }),
      el('td', { class: 'num', text: formatNumber(s.stats.messages) }),
      el('td', { class: 'num', text: formatBytes(s.stats.bytes) }),
      el('td', { class: 'time', text: formatTime(s.stats.first_time) }),
      el('td', { class: 'time', text: formatTime(s.stats.last_time) })));
    fill($('#overview-streams tbody'), rows.length ? rows : el('tr', {}, el('td', { colSpan: 6, class: 'muted', text: 'no streams configured' })));
  }

  function showBridges(bridges) {
    const list = $('#overview-bridges');
    if (!bridges.length) {
      fill(list, el('p', { class: 'muted', text: 'no bridges configured' }));
      return;
    }
    fill(list, bridges.map(bridgeCard));
  }

  /** A bridge, generically: scalar fields as key/values, arrays of objects
   *  (links) as small tables; `health`/`status`/`state` as a badge. */
  function bridgeCard(bridge) {
    const state = bridge.health ?? bridge.status ?? bridge.state;
    const good = /^(connected|running|ok|up)$/i.test(String(state));
    const fields = [];
    const tables = [];
    for (const [key, value] of Object.entries(bridge)) {
      if (['name', 'health', 'status', 'state'].includes(key)) continue;
      if (Array.isArray(value) && value.every((v) => v && typeof v === 'object')) {
        if (value.length) tables.push(objectsTable(key, value));
      } else if (value !== null && value !== undefined) {
        fields.push(el('dt', { text: key }), el('dd', { text: typeof value === 'object' ? JSON.stringify(value) : String(value) }));
      }
    }
    return el('div', { class: 'bridge' },
      el('div', { class: 'bridge-head' },
        el('strong', { text: bridge.name }),
        state !== undefined ? el('span', { class: `badge ${good ? 'ok' : 'bad'}`, text: String(state) }) : null),
      el('dl', {}, fields),
      tables);
  }

  function objectsTable(title, objects) {
    const keys = [...new Set(objects.flatMap((o) => Object.keys(o)))];
    const columns = keys.map((name) => ({ name }));
    const rows = objects.map((o) => keys.map((k) => o[k]));
    return el('div', { class: 'table-wrap' }, el('div', { class: 'muted', text: title }), resultTable(columns, rows, { withTypes: false, nullText: '–' }));
  }

  const metricsPoller = poller(pollMetrics, 1000);
  const listPoller = poller(pollLists, 3000);
  return {
    start: () => metricsPoller.start(),
    enter() { listPoller.start(); drawChart(); },
    leave() { listPoller.stop(); },
  };
})();
views.overview = overview;

// ---------------------------------------------------------------------------
// Live tail.

views.tail = (() => {
  const MAX_ROWS = 500;
  let filter = null;
  let paused = false;
  let pending = [];   // received, not yet rendered (newest last)
  let buffered = 0;   // received while paused
  let received = 0;
  let thisSecond = 0;
  let flushQueued = false;
  const box = $('#tail-messages');

  function onMessage(message) {
    received += 1;
    thisSecond += 1;
    pending.push(message);
    if (pending.length > 2 * MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    if (paused) {
      buffered += 1;
      showCounts();
    } else if (!flushQueued) {
      flushQueued = true;
      setTimeout(flush, 100); // batch renders at high rates
    }
  }

  /** Renders pending messages newest-first, keeping MAX_ROWS rows. */
  function flush() {
    flushQueued = false;
    if (paused || !pending.length) return;
    const fragment = document.createDocumentFragment();
    const oldest = Math.max(0, pending.length - MAX_ROWS);
    for (let i = pending.length - 1; i >= oldest; i -= 1) fragment.append(messageRow(pending[i]));
    pending = [];
    box.prepend(fragment);
    if (box.childElementCount > MAX_ROWS) {
      const overflow = document.createRange();
      overflow.setStartBefore(box.children[MAX_ROWS]);
      overflow.setEndAfter(box.lastElementChild);
      overflow.deleteContents();
    }
    showCounts();
  }

  function messageRow(message) {
    return el('div', { class: 'tail-message' },
      el('div', { class: 'tail-meta' },
        el('span', { class: 'tail-time', text: formatTime(message.ts, false), title: formatTime(message.ts) }),
        el('span', { class: 'tail-topic', text: message.topic }),
        messageBadges(message)),
      el('pre', { class: `tail-payload ${message.encoding}`, text: payloadText(message.payload, message.encoding) }));
  }

  function showCounts() {
    $('#tail-count').textContent = formatNumber(received);
    const note = $('#tail-buffered');
    note.hidden = !paused;
    note.textContent = `paused: ${formatNumber(buffered)} buffered`;
  }

  function subscribe(event) {
    event.preventDefault();
    const next = $('#tail-filter').value.trim();
    if (!next) return;
    if (filter && filter !== next) socket.unsubscribe(filter);
    filter = next;
    $('#tail-status').textContent = `subscribing to ${next}…`;
    $('#tail-unsubscribe').disabled = false;
    socket.subscribe(next, {
      onAck: () => { if (filter === next) $('#tail-status').textContent = `subscribed to ${next}`; },
      onError: (error) => {
        if (filter !== next) return;
        socket.unsubscribe(next);
        filter = null;
        $('#tail-status').textContent = `subscription failed: ${error}`;
      },
    });
  }

  function unsubscribe() {
    if (filter) socket.unsubscribe(filter);
    filter = null;
    $('#tail-unsubscribe').disabled = true;
    $('#tail-status').textContent = 'not subscribed';
  }

  function togglePause() {
    paused = !paused;
    $('#tail-pause').textContent = paused ? 'Resume' : 'Pause';
    $('#tail-pause').classList.toggle('active', paused);
    if (!paused) { buffered = 0; flush(); }
    showCounts();
  }

  function clear() {
    box.replaceChildren();
    pending = [];
    buffered = 0;
    received = 0;
    showCounts();
  }

  socket.onMessage = onMessage;
  $('#tail-form').addEventListener('submit', subscribe);
  $('#tail-unsubscribe').addEventListener('click', unsubscribe);
  $('#tail-pause').addEventListener('click', togglePause);
  $('#tail-clear').addEventListener('click', clear);
  $('#tail-compact').addEventListener('change', (e) => box.classList.toggle('compact', e.target.checked));
  setInterval(() => { $('#tail-rate').textContent = formatNumber(thisSecond); thisSecond = 0; }, 1000);

  // The subscription outlives the tab, so nothing stops on leave.
  return { enter() {}, leave() {} };
})();

// ---------------------------------------------------------------------------
// Streams: their stats, creating and deleting them, and their records.

views.streams = (() => {
  let selected = null;
  let nextOffset = null;
  let listed = new Set(); // names in the last list shown
  let listRequest = 0;    // only the latest list request is shown

  async function loadList() {
    const request = ++listRequest;
    let streams;
    try {
      ({ streams } = await api('/api/v1/streams'));
    } catch (e) {
      if (request === listRequest) streamsError(`Could not list streams: ${e.message}`, 'list');
      return;
    }
    if (request !== listRequest) return; // a later request (after a change) answered first
    if ($('#streams-error').dataset.source === 'list') showError($('#streams-error'), '');
    // The selected stream was deleted (here or elsewhere): forget it.
    if (selected && listed.has(selected) && !streams.some((s) => s.name === selected)) forget();
    listed = new Set(streams.map((s) => s.name));
    if (!selected && streams.length) select(streams[0].name);
    showList(streams);
  }

  /** Shows an error under the list: a listing failure (`list`, gone
   *  with the next good listing) or a refused deletion (`delete`, kept
   *  until the next deletion). */
  function streamsError(text, source) {
    $('#streams-error').dataset.source = source;
    showError($('#streams-error'), text);
  }

  function showList(streams) {
    const rows = streams.map((s) => {
      const st = s.stats;
      const offsets = st.first_offset === null ? 'empty' : `${st.first_offset}–${st.last_offset}`;
      const origin = s.origin === 'api'
        ? el('span', { class: 'badge alt', text: 'api', title: 'created at run time; can be deleted' })
        : el('span', { class: 'badge', text: s.origin, title: 'defined in the config file; change it there' });
      const deleteButton = s.origin === 'api'
        ? el('button', { class: 'small danger', type: 'button', text: 'Delete', title: `delete stream ${s.name} and its records`, onclick: (e) => { e.stopPropagation(); remove(s); } })
        : null;
      return el('tr', { class: s.name === selected ? 'selected' : null, dataset: { stream: s.name, origin: s.origin }, onclick: () => select(s.name, true) },
        el('td', { class: 'strong', text: s.name }),
        el('td', { class: 'origin' }, origin, deleteButton),
        el('td', { class: 'mono filters', text: s.filters.join(', ') }),
        el('td', { class: 'num', text: formatNumber(st.messages) }),
        el('td', { class: 'num', text: formatBytes(st.bytes) }),
        el('td', { class: 'num', text: formatNumber(st.segments) }),
        el('td', { class: 'num', text: offsets }),
        el('td', { class: 'time', text: formatTime(st.first_time) }),
        el('td', { class: 'time', text: formatTime(st.last_time) }),
        el('td', { text: `${formatDuration(s.retention.max_age_ms)}${s.retention.max_bytes ? `, ${formatBytes(s.retention.max_bytes)}` : ''}` }),
        el('td', { text: s.fsync }));
    });
    fill($('#streams-list tbody'), rows.length ? rows : el('tr', {}, el('td', { colSpan: 11, class: 'muted', text: 'no streams' })));
  }

  /** The form as a `[[streams]]` definition; empty fields are left to
   *  the server's defaults (filters `#`, max age 24h, no size limit). */
  function definition() {
    const body = { name: $('#stream-name').value.trim() };
    const filters = $('#stream-filters').value.split(/[\s,]+/).filter(Boolean);
    if (filters.length) body.filters = filters;
    const maxAge = $('#stream-max-age').value.trim();
    const maxBytes = $('#stream-max-bytes').value.trim();
    if (maxAge || maxBytes) {
      body.retention = {};
      if (maxAge) body.retention.max_age = /^(forever|none)$/i.test(maxAge) ? null : maxAge;
      if (maxBytes) body.retention.max_bytes = /^\d+$/.test(maxBytes) ? Number(maxBytes) : maxBytes;
    }
    return body;
  }

  async function create(event) {
    event.preventDefault();
    const button = $('#stream-create');
    if (button.disabled) return;
    button.disabled = true;
    try {
      const stream = await sendJson('POST', '/api/v1/streams', definition());
      showError($('#stream-form-error'), '');
      $('#stream-form').reset();
      notify(`Stream ${stream.name} created.`);
      select(stream.name, true);
      await loadList();
    } catch (e) {
      showError($('#stream-form-error'), `Could not create the stream: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function remove(stream) {
    const records = stream.stats.messages === 1 ? '1 record' : `${formatNumber(stream.stats.messages)} records`;
    if (!confirm(`Delete stream "${stream.name}" and its ${records}? This cannot be undone.`)) return;
    try {
      await api(`/api/v1/streams/${encodeURIComponent(stream.name)}`, { method: 'DELETE' });
      streamsError('', 'delete');
      notify(`Stream ${stream.name} deleted.`);
    } catch (e) {
      streamsError(`Could not delete stream ${stream.name}: ${e.message}`, 'delete');
    }
    await loadList();
  }

  /** Drops the selection and the records shown for it. */
  function forget() {
    selected = null;
    nextOffset = null;
    $('#records-next').disabled = true;
    fill($('#records-table tbody'));
    $('#records-status').textContent = '';
    $('#records-stream').textContent = '–';
    showError($('#records-error'), '');
  }

  function select(name, load = false) {
    if (selected !== name) {
      selected = name;
      nextOffset = null;
      $('#records-next').disabled = true;
      fill($('#records-table tbody'));
      $('#records-status').textContent = '';
    }
    $('#records-stream').textContent = name;
    for (const row of $('#streams-list tbody').children) row.classList.toggle('selected', row.dataset.stream === name);
    if (load) loadRecords();
  }

  /** The `from` parameter the form describes. */
  async function fromParam(limit) {
    const mode = $('#records-from').value;
    if (mode === 'offset') return `offset:${Math.max(0, Number($('#records-offset').value) || 0)}`;
    if (mode === 'time') {
      const value = $('#records-time').value;
      if (!value) throw new Error('pick a time');
      return `time:${new Date(value).toISOString()}`;
    }
    if (mode === 'last') {
      const { streams } = await api('/api/v1/streams');
      const stream = streams.find((s) => s.name === selected);
      const next = stream ? stream.stats.next_offset : 0;
      const first = stream && stream.stats.first_offset !== null ? stream.stats.first_offset : next;
      return `offset:${Math.max(first, next - limit)}`;
    }
    return mode;
  }

  async function loadRecords(from) {
    if (!selected) return;
    const limit = Math.min(10000, Math.max(1, Number($('#records-limit').value) || 100));
    try {
      const param = from || await fromParam(limit);
      const query = new URLSearchParams({ from: param, limit: String(limit) });
      const page = await api(`/api/v1/streams/${encodeURIComponent(selected)}/records?${query}`);
      showError($('#records-error'), '');
      showRecords(page, param);
    } catch (e) {
      showError($('#records-error'), e.message);
    }
  }

  function showRecords(page, from) {
    nextOffset = page.next_offset;
    $('#records-next').disabled = nextOffset === null || nextOffset === undefined;
    $('#records-status').textContent = page.records.length
      ? `${page.records.length} records from ${from}; next offset ${nextOffset}`
      : `no records from ${from}; next offset ${nextOffset} (Next page reads newer ones)`;
    fill($('#records-table tbody'), page.records.map((r) => el('tr', {},
      el('td', { class: 'num', text: String(r.offset) }),
      el('td', { class: 'time', text: formatTime(r.ts), title: r.time }),
      el('td', { class: 'mono', text: r.topic }),
      el('td', { class: 'mono', text: r.client_id }),
      el('td', {}, messageBadges(r)),
      el('td', {}, el('code', { class: 'payload', text: r.encoding === 'json' ? JSON.stringify(r.payload) : String(r.payload) })))));
  }

  function showFromFields() {
    const mode = $('#records-from').value;
    $('#records-offset-field').hidden = mode !== 'offset';
    $('#records-time-field').hidden = mode !== 'time';
  }

  $('#stream-form').addEventListener('submit', create);
  $('#stream-form').addEventListener('input', () => showError($('#stream-form-error'), ''));
  $('#records-from').addEventListener('change', showFromFields);
  $('#records-form').addEventListener('submit', (e) => { e.preventDefault(); loadRecords(); });
  $('#records-next').addEventListener('click', () => loadRecords(`offset:${nextOffset}`));

  const listPoller = poller(loadList, 3000);
  return {
    enter(name) {
      if (name) select(name, true);
      listPoller.start();
    },
    leave() { listPoller.stop(); },
  };
})();

// ---------------------------------------------------------------------------
// Queues: depth (with a sparkline of its recent history), peek, redrive,
// purge, and creating and deleting them. Rows are updated in place (with
// cards.js's helpers, as on the Topics and Exports pages), so a button
// keeps the keyboard focus across refreshes.

views.queues = (() => {
  const HISTORY_SECONDS = 300; // depth kept per queue while the page is open
  const PEEK_MAX = 10;
  const rows = keyedViews(makeRow, (row) => row.spark.destroy()); // one per queue (see makeRow)
  let queues = [];             // the last list, in its order
  let peeked = null;           // the queue whose messages #peek shows
  let redriven = null;         // the dead-letter queue #redrive shows

  const loadList = listLoader('queues', {
    // A good listing clears a listing failure, not a refused action.
    error: (text) => { if (text || $('#queues-error').dataset.source === 'list') queuesError(text, 'list'); },
    async shown(list) {
      queues = list;
      showList(Date.now() / 1000);
      if (redriven) await loadTasks();
    },
  });

  /** Shows an error under the list: a listing failure (`list`, gone with
   *  the next good listing) or a refused action (`action`, kept until the
   *  next action). */
  function queuesError(text, source) {
    $('#queues-error').dataset.source = source;
    showError($('#queues-error'), text);
  }

  const byName = (name) => queues.find((q) => q.name === name);
  const receives = (n) => `${n} receive${n === 1 ? '' : 's'}`;
  const total = (depth) => depth.visible + depth.in_flight + depth.delayed;

  function showList(now) {
    const names = new Set(queues.map((q) => q.name));
    rows.show($('#queues-list tbody'), queues, () => el('tr', {}, el('td', { colSpan: 11, class: 'muted', text: 'no queues' })), now);
    for (const queue of queues) rows.get(queue.name).spark.draw(now);
    showNames();
    // A queue shown in a panel was deleted (here or elsewhere).
    if (peeked && !names.has(peeked)) closePeek();
    if (redriven && !names.has(redriven)) closeRedrive();
    else if (redriven) $('#redrive-sources').textContent = byName(redriven).dead_letter_sources.join(', ') || 'none';
  }

  /** The queue names offered by the DLQ and destination fields. */
  function showNames() {
    const list = $('#queue-names');
    const names = queues.map((q) => q.name);
    if ([...list.options].map((o) => o.value).join('\n') === names.join('\n')) return;
    fill(list, names.map((name) => el('option', { value: name })));
  }

  /** A table row that keeps its elements; update() sets its cells. */
  function makeRow(queue) {
    const { name } = queue;
    const text = (attrs = {}) => el('td', attrs);
    const cells = {
      name: text({ class: 'strong mono', text: name }),
      type: text(),
      origin: text(),
      from: text({ class: 'mono filters' }),
      visible: text({ class: 'num' }),
      inFlight: text({ class: 'num' }),
      delayed: text({ class: 'num' }),
      oldest: text({ class: 'num' }),
      depth: text({ class: 'depth' }),
      deadLetters: text({ class: 'dead-letters' }),
    };
    // Each button's accessible name says which queue ("Peek at jobs").
    const button = (caption, title, onclick, cls = 'small') => actionButton(el('button', { type: 'button', class: cls, text: caption }), {
      title, label: `${caption} ${caption === 'Peek' ? 'at ' : ''}${name}`, onclick,
    });
    const buttons = {
      peek: button('Peek', `show the first ${PEEK_MAX} messages in ${name} without receiving them`, (e) => openPeek(name, e.currentTarget)),
      redrive: button('Redrive', `move the messages in ${name} back to their source queues`, (e) => openRedrive(name, e.currentTarget)),
      purge: button('Purge', `delete every message in ${name}`, () => purge(name), 'small danger'),
      remove: button('Delete', `delete queue ${name} and its messages`, () => remove(name), 'small danger'),
    };
    buttons.remove.hidden = queue.origin !== 'api';
    const spark = new Sparkline(name);
    cells.depth.append(spark.node);
    const node = el('tr', { dataset: { queue: name, origin: queue.origin } },
      Object.values(cells), el('td', { class: 'actions' }, Object.values(buttons)));

    function update(q, now) {
      const { depth } = q;
      fill(cells.type, el('span', q.fifo
        ? { class: 'badge alt', text: 'FIFO', title: 'order kept within each message group; deduplicated' }
        : { class: 'badge', text: 'standard' }));
      fill(cells.origin, originBadge(q.origin, 'can be deleted'));
      cells.from.textContent = (q.definition.from || []).join(', ');
      cells.visible.textContent = formatNumber(depth.visible);
      cells.inFlight.textContent = formatNumber(depth.in_flight);
      cells.delayed.textContent = formatNumber(depth.delayed);
      cells.oldest.textContent = total(depth) ? formatAge(depth.oldest_age_ms) : '–';
      const dl = q.definition.dead_letter;
      fill(cells.deadLetters,
        dl ? el('div', { title: `after ${receives(dl.max_receive_count)}, the next receive moves a message to ${dl.queue}` },
          '→ ', el('span', { class: 'mono', text: dl.queue }), el('span', { class: 'muted', text: ` after ${receives(dl.max_receive_count)}` })) : null,
        q.dead_letter_sources.length ? el('div', {},
          el('span', { class: 'badge warn', text: 'DLQ', title: 'the dead-letter queue of these queues' }),
          ' of ', el('span', { class: 'mono', text: q.dead_letter_sources.join(', ') })) : null,
        !dl && !q.dead_letter_sources.length ? el('span', { class: 'muted', text: '–' }) : null);
      buttons.redrive.hidden = !q.dead_letter_sources.length;
      buttons.purge.disabled = total(depth) === 0;
      spark.record(now, depth);
    }

    return { node, spark, update };
  }

  /** The depth of one queue over the last HISTORY_SECONDS, as a small
   *  uPlot chart without axes (one line each: visible, in flight,
   *  delayed) from the first sample kept to now. */
  class Sparkline {
    constructor(name) {
      this.name = name;
      this.history = { x: [], visible: [], inFlight: [], delayed: [] };
      this.node = el('div', { class: 'spark', role: 'img' });
      this.plot = null;
    }

    record(now, depth) {
      const h = this.history;
      h.x.push(now);
      h.visible.push(depth.visible);
      h.inFlight.push(depth.in_flight);
      h.delayed.push(depth.delayed);
      while (h.x.length && h.x[0] < now - HISTORY_SECONDS) ['x', 'visible', 'inFlight', 'delayed'].forEach((k) => h[k].shift());
      const peak = Math.max(...h.x.map((_, i) => h.visible[i] + h.inFlight[i] + h.delayed[i]));
      const label = `depth of ${this.name}: at most ${formatNumber(peak)} messages over the last ${formatDuration(HISTORY_SECONDS * 1000)}`;
      this.node.setAttribute('aria-label', label);
      this.node.title = label;
    }

    /** Draws the history (the row must be in the document). */
    draw(now) {
      const h = this.history;
      const data = [h.x, h.visible, h.inFlight, h.delayed];
      this.end = now;
      if (this.plot) {
        this.plot.setData(data);
        return;
      }
      const line = (stroke) => ({ stroke, width: 1.5, points: { show: false } });
      this.plot = new uPlot({
        width: 120,
        height: 30,
        padding: [3, 2, 2, 2],
        legend: { show: false },
        cursor: { show: false },
        select: { show: false },
        axes: [{ show: false }, { show: false }],
        scales: {
          x: { time: true, range: (u) => [Math.min(u.data[0][0] ?? this.end, this.end - 10), this.end] },
          y: { range: (u, min, max) => [0, Math.max(1, max)] },
        },
        series: [{}, line(cssVar('--accent')), line(cssVar('--warn')), line(cssVar('--alt'))],
      }, data, this.node);
    }

    destroy() {
      if (this.plot) this.plot.destroy();
      this.plot = null;
    }
  }

  // Peek.

  let peekOpener = null; // the button that opened a panel, refocused on close

  async function openPeek(name, opener) {
    peeked = name;
    peekOpener = opener || null;
    $('#peek-queue').textContent = name;
    fill($('#peek-messages'));
    $('#peek').hidden = false;
    $('#peek').focus();
    await loadPeek();
  }

  async function loadPeek() {
    const name = peeked;
    if (!name) return;
    $('#peek-status').textContent = 'loading…';
    $('#peek-refresh').disabled = true;
    try {
      const { messages } = await api(`/api/v1/queues/${encodeURIComponent(name)}/peek?max=${PEEK_MAX}`);
      if (name !== peeked) return;
      showError($('#peek-error'), '');
      $('#peek-status').textContent = `${messages.length ? plural(messages.length, 'message') : 'no messages'} at ${formatTime(Date.now(), false)}`;
      fill($('#peek-messages'), messages.map(peekMessage));
    } catch (e) {
      if (name !== peeked) return;
      $('#peek-status').textContent = '';
      showError($('#peek-error'), `Could not peek at ${name}: ${e.message}`);
    } finally {
      $('#peek-refresh').disabled = false;
    }
  }

  /** One peeked message; the body goes in as text, never as HTML. */
  function peekMessage(message) {
    const binary = message.body === null || message.body === undefined;
    const attributes = Object.entries(message.attributes || {});
    return el('li', { class: 'peek-message', dataset: { messageId: message.message_id } },
      el('div', { class: 'tail-meta' },
        el('span', { class: 'tail-time', text: formatTime(message.sent_ts), title: 'sent' }),
        message.topic ? el('span', { class: 'tail-topic', text: message.topic, title: 'MQTT topic' }) : null,
        el('span', { class: 'badge', text: `received ${message.receive_count}×`, title: 'receive count' }),
        message.group !== undefined && message.group !== null ? el('span', { class: 'badge alt', text: `group ${message.group}`, title: 'FIFO message group' }) : null,
        message.sequence_number ? el('span', { class: 'badge', text: `seq ${message.sequence_number}`, title: 'FIFO sequence number' }) : null,
        binary ? el('span', { class: 'badge alt', text: 'base64', title: 'binary body, base64-encoded' }) : null),
      el('div', { class: 'peek-ids muted' },
        el('span', { class: 'mono', text: message.message_id, title: 'message id' }),
        message.sender ? el('span', { text: `from ${message.sender}`, title: 'sender' }) : null),
      attributes.length ? el('dl', { class: 'peek-attributes' }, attributes.flatMap(([key, value]) => [
        el('dt', { class: 'mono', text: key }),
        el('dd', { class: 'mono', text: attributeText(value) }),
      ])) : null,
      el('pre', { class: `tail-payload peek-body${binary ? ' base64' : ''}`, text: binary ? (message.body_base64 ?? '') : message.body }));
  }

  /** A message attribute (`{type, value}`; a Binary value is base64)
   *  as text. */
  function attributeText(attribute) {
    if (attribute === null || typeof attribute !== 'object') return String(attribute);
    if (attribute.value === undefined) return JSON.stringify(attribute);
    return attribute.type ? `${attribute.value} (${attribute.type})` : String(attribute.value);
  }

  function closePeek() {
    peeked = null;
    $('#peek').hidden = true;
    fill($('#peek-messages'));
    showError($('#peek-error'), '');
    refocus(peekOpener);
    peekOpener = null;
  }

  // Redrive.

  let redriveOpener = null;
  let redriveRequest = 0;

  async function openRedrive(name, opener) {
    if (redriven !== name) {
      fill($('#redrive-tasks tbody'));
      $('#redrive-status').textContent = '';
      $('#redrive-destination').value = '';
    }
    redriven = name;
    redriveOpener = opener || null;
    $('#redrive-queue').textContent = name;
    $('#redrive-sources').textContent = (byName(name)?.dead_letter_sources || []).join(', ') || 'none';
    showError($('#redrive-error'), '');
    $('#redrive').hidden = false;
    $('#redrive-destination').focus();
    await loadTasks();
  }

  async function startRedrive(event) {
    event.preventDefault();
    const name = redriven;
    const button = $('#redrive-start');
    if (!name || button.disabled) return;
    const destination = $('#redrive-destination').value.trim();
    button.disabled = true;
    try {
      const { task } = await sendJson('POST', `/api/v1/queues/${encodeURIComponent(name)}/redrive`, destination ? { destination } : {});
      showError($('#redrive-error'), '');
      notify(`Redrive of ${name} started (task ${task}).`);
      await loadTasks();
    } catch (e) {
      showError($('#redrive-error'), `Could not start the redrive: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function loadTasks() {
    const name = redriven;
    if (!name) return; // closed meanwhile
    const request = ++redriveRequest;
    let tasks;
    try {
      ({ tasks } = await api(`/api/v1/queues/${encodeURIComponent(name)}/redrive`));
    } catch (e) {
      if (request === redriveRequest && name === redriven) showError($('#redrive-error'), `Could not list redrive tasks: ${e.message}`);
      return;
    }
    if (request !== redriveRequest || name !== redriven) return;
    $('#redrive-status').textContent = tasks.length ? taskSummary(tasks[0]) : 'no redrive yet';
    fill($('#redrive-tasks tbody'), tasks.length ? tasks.map((t) => el('tr', { dataset: { task: t.task, status: t.status } },
      el('td', { class: 'time', text: formatTime(t.started_ts) }),
      el('td', { class: 'mono', text: t.destination ?? 'their source queues' }),
      el('td', {}, el('span', { class: `badge ${TASK_BADGES[t.status] || ''}`, text: t.status, title: t.failure })),
      el('td', {}, progressBar(t)),
      el('td', { class: 'num', text: `${formatNumber(t.moved)} of ${formatNumber(t.to_move)}` })))
      : el('tr', {}, el('td', { colSpan: 5, class: 'muted', text: 'no redrive tasks' })));
  }

  /** A task's progress; a task with nothing to move shows as full. */
  function progressBar(task) {
    const max = Math.max(1, task.to_move);
    const bar = el('progress', { max, value: task.to_move ? Math.min(task.moved, max) : (task.status === 'running' ? 0 : max) });
    bar.setAttribute('aria-label', `moved ${task.moved} of ${task.to_move}`);
    return bar;
  }

  const TASK_BADGES = { running: 'warn', completed: 'ok', failed: 'bad' };

  /** The newest task, in words (read out by screen readers). */
  function taskSummary(task) {
    const moved = `${formatNumber(task.moved)} of ${formatNumber(task.to_move)} moved`;
    return `redrive ${task.status}: ${moved}${task.failure ? ` (${task.failure})` : ''}`;
  }

  function closeRedrive() {
    redriven = null;
    $('#redrive').hidden = true;
    fill($('#redrive-tasks tbody'));
    showError($('#redrive-error'), '');
    refocus(redriveOpener);
    redriveOpener = null;
  }

  /** Focus back on the button that opened a panel, if it is still shown. */
  function refocus(opener) {
    if (opener && opener.isConnected && !opener.hidden) opener.focus();
  }

  // Purge and delete.

  /** What purging or deleting `name` throws away, in words. */
  function messagesIn(name) {
    const queue = byName(name);
    return plural(queue ? total(queue.depth) : 0, 'message');
  }

  async function purge(name) {
    const purged = await confirmed(`Purge queue "${name}"? Its ${messagesIn(name)} (visible, in flight and delayed) will be deleted. This cannot be undone.`, {
      method: 'POST',
      path: `/api/v1/queues/${encodeURIComponent(name)}/purge`,
      done: `Queue ${name} purged.`,
      failed: `Could not purge queue ${name}`,
      error: (text) => queuesError(text, 'action'),
      reload: loadList,
    });
    if (purged && peeked === name) await loadPeek();
  }

  function remove(name) {
    confirmed(`Delete queue "${name}" and its ${messagesIn(name)}? This cannot be undone.`, {
      path: `/api/v1/queues/${encodeURIComponent(name)}`,
      done: `Queue ${name} deleted.`,
      failed: `Could not delete queue ${name}`,
      error: (text) => queuesError(text, 'action'),
      reload: loadList,
    });
  }

  // New queue.

  /** The form as a `[[queues]]` definition; empty fields are left to the
   *  server's defaults. */
  function definition() {
    const body = { name: $('#queue-name').value.trim() };
    const from = $('#queue-from').value.split(/[\s,]+/).filter(Boolean);
    if (from.length) body.from = from;
    const visibility = $('#queue-visibility').value.trim();
    if (visibility) body.visibility_timeout = visibility;
    const deadLetter = $('#queue-dlq').value.trim();
    if (deadLetter) body.dead_letter = { queue: deadLetter, max_receive_count: Number($('#queue-max-receives').value) };
    return body;
  }

  /** A dead-letter queue and its max receives go together. */
  function pairDeadLetterFields() {
    const dlq = $('#queue-dlq');
    const max = $('#queue-max-receives');
    max.required = dlq.value.trim() !== '';
    dlq.required = max.value !== '';
  }

  sendsForm($('#queue-form'), {
    error: $('#queue-form-error'),
    failed: 'Could not create the queue',
    send: () => postBody('/api/v1/queues', definition()),
    async done(body) {
      $('#queue-form').reset();
      pairDeadLetterFields();
      notify(`Queue ${body.name} created.`);
      await loadList();
    },
  });
  $('#queue-form').addEventListener('input', pairDeadLetterFields);
  $('#peek-refresh').addEventListener('click', loadPeek);
  $('#peek-close').addEventListener('click', closePeek);
  $('#redrive-form').addEventListener('submit', startRedrive);
  $('#redrive-close').addEventListener('click', closeRedrive);
  // Escape closes a panel from anywhere in it.
  $('#peek').addEventListener('keydown', (e) => { if (e.key === 'Escape') closePeek(); });
  $('#redrive').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeRedrive(); });

  return polledView(loadList);
})();

// ---------------------------------------------------------------------------
// SQL console.

views.sql = (() => {
  const SQL_KEY = 'tidewire.sql';
  const EXAMPLES = [
    ['Messages per topic, last hour',
      "SELECT topic, count(*) AS messages\nFROM events\nWHERE ts > now() - INTERVAL '1 hour'\nGROUP BY topic\nORDER BY messages DESC"],
    ['Messages per second',
      "SELECT date_bin(INTERVAL '1 second', ts) AS t, count(*) AS n\nFROM events\nWHERE ts > now() - INTERVAL '10 minutes'\nGROUP BY t\nORDER BY t"],
    ['Average temperature per device',
      "SELECT date_bin(INTERVAL '10 seconds', ts) AS t,\n       json_get_str(payload, 'device') AS device,\n       avg(json_get_float(payload, 'temp')) AS avg_temp\nFROM events\nWHERE topic LIKE 'demo/sensors/%'\nGROUP BY t, device\nORDER BY t"],
    ['Latest 50 records',
      'SELECT "offset", ts, topic, client_id, payload\nFROM events\nORDER BY "offset" DESC\nLIMIT 50'],
  ];
  const input = $('#sql-input');
  let result = null;
  let running = false;
  let chart = null;

  async function run() {
    if (running) return;
    const sql = input.value.trim();
    if (!sql) return;
    running = true;
    localStorage.setItem(SQL_KEY, input.value);
    $('#sql-run').disabled = true;
    $('#sql-status').textContent = 'running…';
    const started = performance.now();
    try {
      result = await runSql(sql);
      const elapsed = Math.round(performance.now() - started);
      showError($('#sql-error'), '');
      $('#sql-status').textContent = `${formatNumber(result.rows.length)} row${result.rows.length === 1 ? '' : 's'} · ${elapsed} ms`;
      fill($('#sql-result'), resultTable(result.columns, result.rows));
    } catch (e) {
      result = null;
      showError($('#sql-error'), e.message);
      $('#sql-status').textContent = `failed after ${Math.round(performance.now() - started)} ms`;
      fill($('#sql-result'));
    } finally {
      running = false;
      $('#sql-run').disabled = false;
      $('#sql-chart').disabled = !result;
      $('#sql-csv').disabled = !result;
      hideChart();
    }
  }

  /** Charts the result: x = first timestamp column (else the first),
   *  split by the one text column when there is exactly one. */
  function showChart() {
    if (!result) return;
    const { columns, rows } = result;
    const timeIndex = columns.findIndex((c) => isTimeType(c.type));
    const defaultX = timeIndex >= 0 ? timeIndex : 0;
    const text = columns.filter((c, i) => i !== defaultX && /^VARCHAR/i.test(c.type));
    const area = $('#sql-chart-area');
    try {
      if (!rows.length) throw new Error('no rows');
      const model = chartModel(columns, rows, { defaultX, series: text.length === 1 ? text[0].name : undefined });
      area.hidden = false;
      // Categories (text on x) read better as bars.
      if (chart) chart.destroy();
      chart = new Chart(area, { height: 300, bars: model.categories !== null });
      chart.update(model);
      showError($('#sql-error'), '');
    } catch (e) {
      hideChart();
      showError($('#sql-error'), `Cannot chart this result: ${e.message}`);
    }
  }

  function hideChart() {
    if (chart) chart.destroy();
    chart = null;
    $('#sql-chart-area').hidden = true;
  }

  /** Downloads the shown result as CSV (built here, so it matches). */
  function exportCsv() {
    if (!result) return;
    const quote = (v) => {
      if (v === null || v === undefined) return '';
      const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
      return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const lines = [result.columns.map((c) => quote(c.name)), ...result.rows.map((r) => r.map(quote))];
    const blob = new Blob([`${lines.map((l) => l.join(',')).join('\r\n')}\r\n`], { type: 'text/csv' });
    const link = el('a', { href: URL.createObjectURL(blob), download: 'tidewire-query.csv' });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  /** Grows the textarea with its text, 6 to 20 lines. */
  const fitInput = () => { input.rows = Math.min(20, Math.max(6, input.value.split('\n').length + 1)); };

  input.value = localStorage.getItem(SQL_KEY) || input.value;
  fitInput();
  input.addEventListener('input', fitInput);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  $('#sql-run').addEventListener('click', run);
  $('#sql-chart').addEventListener('click', showChart);
  $('#sql-csv').addEventListener('click', exportCsv);
  fill($('#sql-examples'), EXAMPLES.map(([title, sql]) => el('button', {
    class: 'link', type: 'button', text: title, title: sql,
    onclick: () => { input.value = sql; fitInput(); run(); },
  })));

  return { enter() {}, leave() {} };
})();

// ---------------------------------------------------------------------------
// Dashboards: panels from /api/v1/dashboards, SQL ones refreshed on their
// interval, watch ones fed by the shared socket.

views.dashboards = (() => {
  const WATCH_POINTS = 120;
  let dashboards = null;
  let chosenId = null; // the dashboard picked last, shown on return
  let panels = [];

  async function load() {
    try {
      dashboards = (await api('/api/v1/dashboards')).dashboards;
      showError($('#dashboard-error'), '');
    } catch (e) {
      showError($('#dashboard-error'), `Could not load dashboards: ${e.message}`);
      return;
    }
    fill($('#dashboard-select'), dashboards.map((d) => el('option', { value: d.id, text: d.title })));
    if (!dashboards.length) $('#dashboard-status').textContent = 'no dashboards configured';
  }

  async function show(id) {
    if (!dashboards) await load();
    if (!dashboards || !dashboards.length || currentView !== 'dashboards') return;
    const dashboard = dashboards.find((d) => d.id === id) || dashboards[0];
    if (chosenId === dashboard.id && panels.length) return;
    stop();
    chosenId = dashboard.id;
    $('#dashboard-select').value = dashboard.id;
    $('#dashboard-status').textContent = `${dashboard.panels.length} panels`;
    panels = dashboard.panels.map(makePanel);
    fill($('#dashboard-panels'), panels.map((p) => p.node));
    panels.forEach((p) => p.start());
  }

  function stop() {
    panels.forEach((p) => p.stop());
    panels = [];
    fill($('#dashboard-panels'));
  }

  /** A panel: its element, and start/stop for its data source. */
  function makePanel(spec) {
    const body = el('div', { class: 'panel-body' });
    const error = el('p', { class: 'panel-error', hidden: true });
    const about = spec.watch
      ? `watch · ${spec.watch.window} windows${spec.watch.hop ? `, hop ${spec.watch.hop}` : ''}`
      : `SQL · every ${formatDuration(spec.refresh_ms ?? 5000)}`;
    const node = el('div', { class: `panel panel-${spec.chart}`, dataset: { title: spec.title, state: 'loading' } },
      el('div', { class: 'panel-head' },
        el('h3', { text: spec.title }),
        el('span', { class: 'muted', text: about, title: spec.sql || spec.watch.sql })),
      body, error);
    const view = panelView(spec, body);
    let drawn = false;
    // Draws rows, or shows why it could not; a panel's failure stays in it.
    const draw = (columns, rows, defaultX) => {
      try {
        view.draw(columns, rows, defaultX);
        drawn = true;
        setError('');
      } catch (e) {
        setError(e.message);
      }
    };
    const setError = (text) => {
      showError(error, text);
      node.dataset.state = text ? 'error' : 'ok';
      if (text && !drawn) view.waiting('no data');
    };
    const source = spec.watch ? watchSource(spec, view, draw, setError) : sqlSource(spec, draw, setError);
    return { node, start: source.start, stop: () => { source.stop(); view.destroy(); } };
  }

  /** Re-runs the panel's SQL every refresh_ms, one request at a time. */
  function sqlSource(spec, draw, setError) {
    return poller(async () => {
      let result;
      try {
        result = await runSql(spec.sql);
      } catch (e) {
        setError(e.message);
        return;
      }
      draw(result.columns, result.rows, 0);
    }, spec.refresh_ms ?? 5000);
  }

  /** Watches the panel's continuous query and keeps the last windows.
   *  Rows become the query's columns followed by window_start and
   *  window_end (the default x). */
  function watchSource(spec, view, draw, setError) {
    let id = null;
    let windows = [];
    const onResult = (frame) => {
      if (frame.error) { setError(frame.error); return; }
      windows.push(frame);
      if (windows.length > WATCH_POINTS) windows = windows.slice(-WATCH_POINTS);
      const names = [...new Set(windows.flatMap((w) => w.rows.flatMap((r) => Object.keys(r))))];
      const columns = [...names.map((name) => ({ name })), { name: 'window_start', type: 'TIMESTAMP' }, { name: 'window_end', type: 'TIMESTAMP' }];
      // Tables and stats show the latest window; charts show them all.
      const shown = spec.chart === 'line' || spec.chart === 'bar' ? windows : windows.slice(-1);
      const rows = shown.flatMap((w) => w.rows.map((r) => [...names.map((n) => r[n] ?? null), w.window_start, w.window_end]));
      draw(columns, rows, names.length + 1);
    };
    return {
      start() {
        view.waiting(`waiting for the first ${spec.watch.window} window…`);
        const { sql, window, hop } = spec.watch;
        id = socket.watch(hop ? { sql, window, hop } : { sql, window }, onResult, setError);
      },
      stop() {
        if (id) socket.unwatch(id);
        id = null;
      },
    };
  }

  /** How a panel draws rows: a chart, a table or a stat. */
  function panelView(spec, body) {
    let chart = null;
    const dropChart = () => {
      if (chart) chart.destroy();
      chart = null;
    };
    const waiting = (text) => {
      dropChart();
      fill(body, el('p', { class: 'muted waiting', text }));
    };
    const draw = (columns, rows, defaultX) => {
      if (spec.chart === 'table') {
        fill(body, el('div', { class: 'table-wrap' }, resultTable(columns, rows)));
      } else if (spec.chart === 'stat') {
        fill(body, statValue(spec, columns, rows));
      } else if (!rows.length) {
        waiting('no data yet');
      } else {
        const model = chartModel(columns, rows, { x: spec.x, y: spec.y, series: spec.series, defaultX });
        if (!chart) {
          body.replaceChildren();
          chart = new Chart(body, { height: 220, bars: spec.chart === 'bar' });
        }
        chart.update(model);
      }
    };
    return { draw, waiting, destroy: dropChart };
  }

  /** The first row's first y column (or first column), big. */
  function statValue(spec, columns, rows) {
    const name = spec.y && spec.y.length ? spec.y[0] : columns[0].name;
    const index = columns.findIndex((c) => c.name === name);
    if (index < 0) throw new Error(`no column named "${name}"`);
    const value = rows.length ? rows[0][index] : null;
    let text;
    if (value === null || value === undefined) text = '–';
    else if (isTimeType(columns[index].type)) text = formatTime(value);
    else if (typeof value === 'number') text = formatNumber(value, 2);
    else text = String(value);
    return el('div', { class: 'stat' }, el('div', { class: 'stat-value', text }), el('div', { class: 'muted', text: name }));
  }

  $('#dashboard-select').addEventListener('change', (e) => {
    location.hash = `#dashboards/${encodeURIComponent(e.target.value)}`;
  });

  return {
    enter(id) { show(id || chosenId); },
    leave() { stop(); },
  };
})();

// ---------------------------------------------------------------------------
// Start, once the scripts loaded after this one have added their views.

document.addEventListener('DOMContentLoaded', () => {
  login.setUp();
  socket.connect();
  overview.start();
  window.addEventListener('hashchange', route);
  route();
});
