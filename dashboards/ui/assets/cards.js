// tidewire dashboard: what the pages that list things refreshed in place
// share: the Queues page (in app.js), the Topics page (topics.js) and the
// Exports page (exports.js). A list polled every 2 s whose latest answer
// wins; a card or row per name, made once and updated in place (text and
// titles set only when they change, nodes moved only when their place
// does, so focus, hovers and open forms survive a refresh); rates per
// second between two refreshes; a last error cut with the whole on hover;
// origin badges; forms that send with their button disabled; actions
// behind a confirmation.
//
// Loaded before app.js, so that every page can use it: it only declares.
// What it calls from app.js (el, fill, showError, notify, api, sendJson,
// poller and formatNumber) is there by the time a page calls it. Server text only ever
// goes in through textContent.
'use strict';

/** How often a list page asks for its list again (its heading says so). */
const LIST_REFRESH_MS = 2000;
/** A refresh sooner than this after the last rated one (right after an
 *  action) keeps the last rates. */
const MIN_RATE_SECONDS = 1;
/** A last error is cut after this many characters (whole on hover). */
const LAST_ERROR_CHARS = 60;

// ---------------------------------------------------------------------------
// Markup and text.

/** Static markup as a <template>; its content is cloned, never filled
 *  with server text. */
function template(html) {
  const node = document.createElement('template');
  node.innerHTML = html.trim();
  return node;
}

/** Sets a node's text and title, only when they change (a title
 *  re-set while hovered would flicker). */
function setText(node, text, title) {
  if (node.textContent !== text) node.textContent = text;
  const tip = title || '';
  if (node.title !== tip) node.title = tip;
}

/** `text`, cut to `max` characters with an ellipsis. */
const cut = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** `n` and `word`, plural unless `n` is 1: `1 message`, `1,024 messages`. */
const plural = (n, word) => `${formatNumber(n)} ${word}${n === 1 ? '' : 's'}`;

/** A last error in `node`: cut, whole on hover; or `none`, muted. */
function showLastError(node, error, none) {
  if (error) setText(node, cut(error, LAST_ERROR_CHARS), error);
  else setText(node, none);
  node.classList.toggle('muted', !error);
}

/** The badge of where a thing comes from: `api` (made at run time, which
 *  `what` follows, e.g. "can be deleted") or the config file. */
const originBadge = (origin, what) => (origin === 'api'
  ? el('span', { class: 'badge alt', text: 'api', title: `created at run time; ${what}` })
  : el('span', { class: 'badge', text: origin, title: 'defined in the config file; change it there' }));

/** Gives an action button its tooltip, an accessible name that says what
 *  it acts on ("Delete topic alerts") and its click; answers it. */
function actionButton(button, { title, label, onclick }) {
  button.title = title;
  button.setAttribute('aria-label', label);
  button.addEventListener('click', onclick);
  return button;
}

// ---------------------------------------------------------------------------
// Cards.

/** A card's template: a head with the name of a thing of `kind`
 *  ("topic"), its origin and a Delete button (classes KIND-name,
 *  KIND-origin and KIND-delete), then `body`, static markup. */
function cardTemplate(kind, body) {
  return template(`
    <article class="box ${kind}-card">
      <div class="box-head">
        <h2><span class="mono ${kind}-name"></span> <span class="${kind}-origin"></span></h2>
        <div class="toolbar"><button type="button" class="small danger ${kind}-delete">Delete</button></div>
      </div>
      ${body}
    </article>`);
}

/** A card for the thing `name` from a cardTemplate(kind, ...): answers
 *  its node (data-KIND="name"), part(selector) for what is in it, and
 *  showOrigin(origin), which draws the origin badge (`api`: created at run
 *  time; `deletable`) and shows Delete only for what the API made. Delete
 *  is titled `deleteTitle` and calls `onDelete`. */
function newCard(cardTemplate, kind, name, { deleteTitle, onDelete, deletable }) {
  const node = cardTemplate.content.firstElementChild.cloneNode(true);
  node.dataset[kind] = name;
  const part = (selector) => node.querySelector(selector);
  part(`.${kind}-name`).textContent = name;
  const deleteButton = actionButton(part(`.${kind}-delete`), { title: deleteTitle, label: `Delete ${kind} ${name}`, onclick: onDelete });
  const drawOrigin = drawWhenChanged((origin) => {
    fill(part(`.${kind}-origin`), originBadge(origin, deletable));
    node.dataset.origin = origin;
    deleteButton.hidden = origin !== 'api';
  });
  return { node, part, showOrigin: (origin) => drawOrigin(origin, origin) };
}

// ---------------------------------------------------------------------------
// Updating in place.

/** Puts `nodes` in `parent` in order, moving only those whose place
 *  changed: moving one would take the keyboard focus off it. */
function place(parent, nodes) {
  nodes.forEach((node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

/** The cards (or rows) of a list, one per item's name: `make(item)` makes
 *  one ({node, update(item, ...)}) for a name not seen before, `drop(it)`
 *  lets one go whose name left the list. */
function keyedViews(make, drop = () => {}) {
  const shown = new Map(); // name -> {node, update}
  return {
    get: (name) => shown.get(name),
    /** Updates the views of `items` with `args` and puts their nodes in
     *  `parent` in the items' order, or `empty()` when there are none. */
    show(parent, items, empty, ...args) {
      const names = new Set(items.map((item) => item.name));
      for (const [name, view] of shown) {
        if (!names.has(name)) { drop(view); shown.delete(name); }
      }
      const nodes = items.map((item) => {
        if (!shown.has(item.name)) shown.set(item.name, make(item));
        const view = shown.get(item.name);
        view.update(item, ...args);
        return view.node;
      });
      place(parent, nodes.length ? nodes : [empty()]);
    },
  };
}

/** A function that calls `draw(item)` only when `parts` (anything JSON
 *  can compare) changed since the last call: what seldom changes is not
 *  drawn again on every refresh. */
function drawWhenChanged(draw) {
  let drawn = null;
  return (item, parts) => {
    const key = JSON.stringify(parts);
    if (key === drawn) return;
    draw(item);
    drawn = key;
  };
}

// ---------------------------------------------------------------------------
// Rates.

/** Rates per second of some counters between two refreshes at least
 *  MIN_RATE_SECONDS apart. update(now, counts) takes the time in seconds
 *  and the counters by name, and answers their rates by name: null at the
 *  first look, or when a counter went down (the thing was made again
 *  under its name). */
function rateMeter() {
  let last = null; // {t, counts} the rates are counted from
  let rates = {};
  return {
    update(now, counts) {
      const names = Object.keys(counts);
      if (!last || names.some((name) => counts[name] < last.counts[name])) {
        last = { t: now, counts };
        rates = Object.fromEntries(names.map((name) => [name, null]));
      } else if (now - last.t >= MIN_RATE_SECONDS) {
        const seconds = now - last.t;
        rates = Object.fromEntries(names.map((name) => [name, (counts[name] - last.counts[name]) / seconds]));
        last = { t: now, counts };
      }
      return rates;
    },
  };
}

/** A rate as shown: `–/s` before there is one, one decimal under 10. */
const rateText = (rate) => (rate === null ? '–/s' : `${formatNumber(rate, rate < 10 ? 1 : 0)}/s`);

// ---------------------------------------------------------------------------
// Talking to the API.

/** Where an error text goes: a node (showError) or a function of it. */
const reporter = (error) => (typeof error === 'function' ? error : (text) => showError(error, text));

/** A loader of `GET /api/v1/NAME`'s list (the answer's NAME field): only
 *  the latest request's answer goes to `shown(list)` (one made after a
 *  change can answer before an earlier one). A failure shows in `error` (a
 *  node, or a function of the text), which the next answer clears. */
function listLoader(name, { shown, error }) {
  const report = reporter(error);
  let latest = 0;
  return async () => {
    const request = ++latest;
    let answer;
    try {
      answer = await api(`/api/v1/${name}`);
    } catch (e) {
      if (request === latest) report(`Could not list ${name}: ${e.message}`);
      return;
    }
    if (request !== latest) return; // a later request (after a change) answered first
    report('');
    await shown(answer[name]);
  };
}

/** POSTs `body` as JSON to `path`; answers `body`, for a form's done()
 *  (the server's answer is not needed). */
async function postBody(path, body) {
  await sendJson('POST', path, body);
  return body;
}

/** Sends `form` when submitted. Unless its submit button is busy, the
 *  button is disabled while `send(form)` runs and then `done(answer)`; a
 *  failure shows `${failed}: ` and its reason in `error` (a node, or a
 *  function of the text), which success or typing in the form clears.
 *  `check(form)` may answer a text that refuses the form before anything
 *  is sent; `status`, a node that done() writes to, is emptied when
 *  sending fails. */
function sendsForm(form, { error, failed, send, done = () => {}, check = () => '', status = null }) {
  const report = reporter(error);
  const button = form.querySelector('button[type="submit"]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    const refusal = check(form);
    if (refusal) {
      report(refusal);
      return;
    }
    button.disabled = true;
    try {
      const answer = await send(form);
      report('');
      await done(answer);
    } catch (e) {
      if (status) status.textContent = '';
      report(`${failed}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
  form.addEventListener('input', () => report(''));
}

/** Asks `question` and, if confirmed, sends `method` to `path`: then says
 *  `done`, or shows `${failed}: ` and the server's reason in `error` (a
 *  node, or a function of the text); either way the list is loaded again
 *  with `reload()`. Answers whether it was confirmed. */
async function confirmed(question, { method = 'DELETE', path, done, failed, error, reload }) {
  if (!confirm(question)) return false;
  const report = reporter(error);
  try {
    await api(path, { method });
    report('');
    notify(done);
  } catch (e) {
    report(`${failed}: ${e.message}`);
  }
  await reload();
  return true;
}

/** A view that runs `load` every LIST_REFRESH_MS while it is shown. */
function polledView(load) {
  const listPoller = poller(load, LIST_REFRESH_MS);
  return {
    enter() { listPoller.start(); },
    leave() { listPoller.stop(); },
  };
}
