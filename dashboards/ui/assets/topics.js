// tidewire dashboard: the Topics page (#topics). One card per fan-out
// topic from `GET /api/v1/topics`, refreshed every 2 s: its filters and
// message count, a table of its subscriptions and their figures
// (delivered and failed per second are counter deltas between two
// refreshes), a publish form, a subscribe form, and Delete / Unsubscribe
// for what the API made (the config file's are changed there). Cards and
// rows are updated in place, so a form keeps what is typed in it and a
// button its focus across refreshes.
//
// Loaded after app.js, whose helpers it uses ($, el, fill, showError,
// notify, api, sendJson, poller, views and the formatters). Server text
// only ever goes in through textContent; the markup below is static.
'use strict';

views.topics = (() => {
  const REFRESH_MS = 2000;
  const MIN_RATE_SECONDS = 1; // a refresh sooner than this (right after an action) keeps the last rates
  const FILTER_CHARS = 40;    // a filter's JSON is cut after this many characters
  const ERROR_CHARS = 60;     // and a last error after this many
  const cards = new Map();    // topic name -> card (see makeCard)
  let topics = [];            // the last list, in its order
  let listRequest = 0;        // only the latest list request is shown

  /** Static markup as a <template>; its content is cloned, never filled
   *  with server text. */
  function template(html) {
    const node = document.createElement('template');
    node.innerHTML = html.trim();
    return node;
  }

  const PAGE = template(`
    <div class="box">
      <h2>Topics <span class="muted">every 2 s; a message published to a topic goes to each subscription whose filter it matches; per second: between the last two refreshes</span></h2>
      <p class="error" id="topics-error" hidden></p>
      <form class="toolbar stream-form" id="topic-form">
        <span class="form-title">New topic</span>
        <label class="field">Name <input id="topic-name" required maxlength="256" spellcheck="false" autocomplete="off" placeholder="alerts" title="letters, digits, - and _"></label>
        <label class="field grow">From topic filters <input id="topic-from" spellcheck="false" autocomplete="off" placeholder="none: only publishes to the topic itself (comma- or space-separated)" title="MQTT topic filters whose messages the topic takes"></label>
        <button id="topic-create" type="submit" class="primary">Create</button>
      </form>
      <p class="error" id="topic-form-error" hidden></p>
    </div>
    <div id="topics-list" class="topic-cards"><p class="muted">loading…</p></div>`);

  const CARD = template(`
    <article class="box topic-card">
      <div class="box-head">
        <h2><span class="mono topic-name"></span> <span class="topic-origin"></span></h2>
        <div class="toolbar"><button type="button" class="small danger topic-delete">Delete</button></div>
      </div>
      <div class="statusline topic-facts">
        <span>from <span class="mono topic-from"></span></span>
        <span class="topic-messages"></span>
        <span class="topic-limits"></span>
      </div>
      <p class="error topic-error" hidden></p>
      <div class="table-wrap">
        <table class="grid topic-subscriptions">
          <thead><tr>
            <th>Subscription</th><th>Target</th><th>Filter</th><th>Status</th>
            <th class="num" title="messages the target accepted (repeats after a retry included), and per second">Delivered</th>
            <th class="num" title="attempts that failed, and per second">Failed</th>
            <th class="num" title="attempts repeated under the delivery policy">Retries</th>
            <th class="num" title="messages sent to the dead-letter target">DLQ</th>
            <th class="num" title="messages never delivered">Lost</th>
            <th class="num" title="messages not yet delivered (the lag in records)">Pending</th>
            <th class="num" title="the lag in seconds of broker time">Lag</th>
            <th>Last error</th>
            <th><span class="visually-hidden">Actions</span></th>
          </tr></thead>
          <tbody></tbody>
        </table>
      </div>
      <form class="toolbar topic-publish">
        <span class="form-title">Publish</span>
        <label class="field grow">Body <input name="body" spellcheck="false" autocomplete="off" placeholder='{"severity": "high"}'></label>
        <label class="field">Subject <input name="subject" class="short" spellcheck="false" autocomplete="off" placeholder="none"></label>
        <label class="field">Attribute <input name="attr-name" class="short" spellcheck="false" autocomplete="off" placeholder="name" title="a String message attribute (what a filter in the attributes scope looks at)"></label>
        <label class="field">Value <input name="attr-value" class="short" spellcheck="false" autocomplete="off"></label>
        <button type="submit" class="primary">Publish</button>
        <span class="muted publish-status" role="status"></span>
      </form>
      <p class="error publish-error" hidden></p>
      <details class="topic-subscribe">
        <summary>Subscribe…</summary>
        <form class="toolbar">
          <label class="field">Name <input name="name" class="short" required maxlength="256" spellcheck="false" autocomplete="off" placeholder="to-jobs" title="letters, digits, - and _; unique within the topic"></label>
          <label class="field grow">Target <input name="target" required spellcheck="false" autocomplete="off" placeholder="queue:NAME, https://…, mqtt:TOPIC, stream:NAME, nats:BRIDGE/SUBJECT or mailto:ADDRESS"></label>
          <label class="field grow">Filter <input name="filter" class="mono" spellcheck="false" autocomplete="off" placeholder='none: every message; e.g. {"severity": ["high"]}' title="a JSON pattern (SNS filter policy syntax)"></label>
          <label class="field">Filter scope
            <select name="scope" title="what the filter looks at">
              <option value="attributes">attributes</option>
              <option value="body">body (JSON)</option>
              <option value="envelope">envelope</option>
            </select>
          </label>
          <label class="check" title="deliver the body as is; unchecked: in SNS's JSON envelope"><input type="checkbox" name="raw" checked> Raw</label>
          <label class="field">Retries <input name="retries" class="short" type="number" min="0" max="100" placeholder="until expiry" title="retries per message (0 to 100); empty: retried until the message leaves the topic's retention"></label>
          <label class="field">Dead letter <input name="dead-letter" class="short" spellcheck="false" autocomplete="off" placeholder="none" title="queue:NAME or stream:NAME: where a message goes when its retries are exhausted or the target refuses it for good"></label>
          <button type="submit" class="primary">Subscribe</button>
        </form>
        <p class="error subscribe-error" hidden></p>
      </details>
    </article>`);

  const section = $('#view-topics');
  section.append(PAGE.content.cloneNode(true));

  async function loadList() {
    const request = ++listRequest;
    let list;
    try {
      ({ topics: list } = await api('/api/v1/topics'));
    } catch (e) {
      if (request === listRequest) showError($('#topics-error'), `Could not list topics: ${e.message}`);
      return;
    }
    if (request !== listRequest) return; // a later request (after a change) answered first
    showError($('#topics-error'), '');
    topics = list;
    showList(Date.now() / 1000);
  }

  function showList(now) {
    const names = new Set(topics.map((t) => t.name));
    for (const name of cards.keys()) if (!names.has(name)) cards.delete(name);
    const nodes = topics.map((topic) => {
      if (!cards.has(topic.name)) cards.set(topic.name, makeCard(topic.name));
      const card = cards.get(topic.name);
      card.update(topic, now);
      return card.node;
    });
    if (!nodes.length) nodes.push(el('p', { class: 'muted', text: 'no topics' }));
    place($('#topics-list'), nodes);
  }

  /** Puts `nodes` in `parent` in order, moving only those whose place
   *  changed: moving one would take the keyboard focus off it. */
  function place(parent, nodes) {
    nodes.forEach((node, i) => {
      if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
    });
    while (parent.children.length > nodes.length) parent.lastElementChild.remove();
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
  const plural = (n, word) => `${formatNumber(n)} ${word}${n === 1 ? '' : 's'}`;
  const originBadge = (origin, what) => (origin === 'api'
    ? el('span', { class: 'badge alt', text: 'api', title: `created at run time; ${what}` })
    : el('span', { class: 'badge', text: origin, title: 'defined in the config file; change it there' }));

  /** A card that keeps its elements; update() sets them. */
  function makeCard(name) {
    const node = CARD.content.firstElementChild.cloneNode(true);
    node.dataset.topic = name;
    const part = (selector) => node.querySelector(selector);
    const rows = new Map(); // subscription name -> row (see makeRow)
    const error = part('.topic-error');
    let topic = null;
    let originShown = null;

    part('.topic-name').textContent = name;
    const deleteButton = part('.topic-delete');
    deleteButton.title = `delete topic ${name}, its messages and its subscriptions`;
    deleteButton.setAttribute('aria-label', `Delete topic ${name}`);
    deleteButton.addEventListener('click', () => remove(topic, error));
    const publishForm = part('.topic-publish');
    publishForm.addEventListener('submit', (e) => publish(e, name, part('.publish-error'), part('.publish-status')));
    publishForm.addEventListener('input', () => showError(part('.publish-error'), ''));
    const subscribeForm = part('.topic-subscribe form');
    subscribeForm.addEventListener('submit', (e) => subscribe(e, name, part('.subscribe-error')));
    subscribeForm.addEventListener('input', () => showError(part('.subscribe-error'), ''));
    part('.topic-subscribe summary').setAttribute('aria-label', `Subscribe to ${name}…`);

    function update(t, now) {
      topic = t;
      if (originShown !== t.origin) {
        fill(part('.topic-origin'), originBadge(t.origin, 'can be deleted'));
        originShown = t.origin;
        node.dataset.origin = t.origin;
      }
      deleteButton.hidden = t.origin !== 'api';
      const from = t.definition.from || [];
      setText(part('.topic-from'), from.length ? from.join(', ') : 'direct publishes only',
        from.length ? 'MQTT topic filters whose messages the topic takes' : 'no topic filters: it takes only what is published to it');
      part('.topic-from').classList.toggle('muted', !from.length);
      part('.topic-from').classList.toggle('mono', from.length > 0);
      setText(part('.topic-messages'), plural(t.messages, 'message'), 'messages the topic took');
      setText(part('.topic-limits'), `kept ${t.definition.retention}, up to ${t.definition.max_message_bytes} each, fsync ${t.definition.fsync}`);

      const subs = new Set(t.subscriptions.map((s) => s.name));
      for (const sub of rows.keys()) if (!subs.has(sub)) rows.delete(sub);
      const nodes = t.subscriptions.map((s) => {
        if (!rows.has(s.name)) rows.set(s.name, makeRow(name, s.name, error));
        const row = rows.get(s.name);
        row.update(s, now);
        return row.node;
      });
      if (!nodes.length) nodes.push(el('tr', {}, el('td', { colSpan: 13, class: 'muted', text: 'no subscriptions: Subscribe… below adds one' })));
      place(part('.topic-subscriptions tbody'), nodes);
    }

    return { node, update };
  }

  /** A subscription's row; update() sets its cells and the rates. */
  function makeRow(topicName, name, error) {
    const td = (cls) => el('td', { class: cls });
    // A count, and under it its rate (or the dead-letter target).
    const counter = (cls, under = 'rate') => {
      const cell = td(`num ${cls}`);
      cell.append(el('span', { class: 'total' }), el('span', { class: under }));
      return cell;
    };
    const cells = {
      name: el('td', { class: 'mono sub-name', text: name }),
      target: td('target'),
      filter: td('filter'),
      status: td('status'),
      delivered: counter('delivered'),
      failed: counter('failed'),
      retries: td('num retries'),
      deadLettered: counter('dead-lettered', 'dead-letter-target'),
      lost: td('num lost'),
      pending: td('num pending'),
      lag: td('num lag'),
      lastError: td('last-error'),
    };
    const unsubscribeButton = el('button', {
      type: 'button', class: 'small danger', text: 'Unsubscribe', title: `stop delivering ${topicName} to ${name}`,
    });
    unsubscribeButton.setAttribute('aria-label', `Unsubscribe ${name} from ${topicName}`);
    const node = el('tr', { dataset: { subscription: name } }, Object.values(cells), el('td', { class: 'actions' }, unsubscribeButton));
    let sub = null;
    unsubscribeButton.addEventListener('click', () => unsubscribe(sub, error));

    let shown = null;  // the definition, origin and status last drawn
    let last = null;   // {t, delivered, failed} the rates are counted from
    let rates = { delivered: null, failed: null };

    function update(s, now) {
      sub = s;
      const { stats } = s;
      const key = JSON.stringify([s.definition, s.origin, s.status]);
      if (key !== shown) {
        drawDefinition(s);
        shown = key;
      }
      unsubscribeButton.hidden = s.origin !== 'api';

      if (!last || stats.delivered < last.delivered || stats.failed < last.failed) {
        // The first look, or counters that started again (a subscription
        // made again under this name).
        last = { t: now, delivered: stats.delivered, failed: stats.failed };
        rates = { delivered: null, failed: null };
      } else if (now - last.t >= MIN_RATE_SECONDS) {
        const seconds = now - last.t;
        rates = { delivered: (stats.delivered - last.delivered) / seconds, failed: (stats.failed - last.failed) / seconds };
        last = { t: now, delivered: stats.delivered, failed: stats.failed };
      }
      const rate = (value) => (value === null ? '–/s' : `${formatNumber(value, value < 10 ? 1 : 0)}/s`);
      setText(cells.delivered.firstChild, formatNumber(stats.delivered));
      setText(cells.delivered.lastChild, rate(rates.delivered), 'per second between the last two refreshes');
      setText(cells.failed.firstChild, formatNumber(stats.failed));
      setText(cells.failed.lastChild, rate(rates.failed), 'per second between the last two refreshes');
      cells.failed.classList.toggle('bad', stats.failed > 0);
      setText(cells.retries, formatNumber(stats.retries), policyText(s.definition.delivery));
      setText(cells.deadLettered.firstChild, formatNumber(stats.dead_lettered));
      setText(cells.lost, formatNumber(stats.lost));
      cells.lost.classList.toggle('bad', stats.lost > 0);
      setText(cells.pending, formatNumber(stats.pending), `cursor at offset ${stats.cursor}`);
      setText(cells.lag, stats.lag_seconds > 0 ? formatAge(stats.lag_seconds * 1000) : '0 s');
      if (stats.last_error) setText(cells.lastError, cut(stats.last_error, ERROR_CHARS), stats.last_error);
      else setText(cells.lastError, '–');
      cells.lastError.classList.toggle('muted', !stats.last_error);
    }

    /** The cells that follow from the definition, origin and status. */
    function drawDefinition(s) {
      const def = s.definition;
      fill(cells.name, name, s.origin === 'api' ? null : el('span', { class: 'badge', text: s.origin, title: 'defined in the config file; change it there' }));
      fill(cells.target,
        el('span', { class: 'mono', text: def.target }),
        def.raw === false ? el('span', { class: 'badge alt', text: 'envelope', title: "delivered in SNS's JSON envelope (raw = false)" }) : null);
      if (def.filter === undefined || def.filter === null) {
        fill(cells.filter, el('span', { class: 'muted', text: 'every message' }));
        cells.filter.title = '';
      } else {
        const json = typeof def.filter === 'string' ? def.filter : JSON.stringify(def.filter);
        const scope = def.filter_scope || 'attributes';
        fill(cells.filter, el('span', { class: 'mono filter-json', text: cut(json, FILTER_CHARS) }),
          el('span', { class: 'badge', text: scope, title: 'what the filter looks at' }));
        cells.filter.title = `${scope}: ${typeof def.filter === 'string' ? def.filter : JSON.stringify(def.filter, null, 2)}`;
      }
      fill(cells.status, s.status === 'confirmed'
        ? el('span', { class: 'badge ok', text: 'confirmed' })
        : el('span', {
          class: 'badge warn',
          text: s.status === 'pending_confirmation' ? 'pending confirmation' : s.status,
          title: 'nothing is delivered until the endpoint confirms (it was sent the SubscribeURL)',
        }));
      const dl = def.dead_letter;
      cells.deadLettered.lastChild.textContent = dl ? `→ ${dl}` : '';
      cells.deadLettered.title = dl
        ? `messages sent to ${dl} when their retries ran out or the target refused them for good`
        : 'no dead-letter target: a message the target refuses for good is lost';
    }

    return { node, update };
  }

  /** A delivery policy (`delivery`), in words. */
  function policyText(delivery) {
    if (!delivery) return "retried until the message leaves the topic's retention (1 s doubling to 20 s apart)";
    const backoff = delivery.backoff && delivery.backoff !== 'exponential' ? `, ${delivery.backoff}` : '';
    const retries = `${delivery.retries} ${delivery.retries === 1 ? 'retry' : 'retries'}`;
    return `up to ${retries}, ${delivery.min_delay} to ${delivery.max_delay} apart${backoff}`;
  }

  // Publish.

  const isJson = (text) => { try { JSON.parse(text); return true; } catch { return false; } };

  async function publish(event, name, error, status) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector('button[type="submit"]');
    if (button.disabled) return;
    const value = (field) => form.querySelector(`[name="${field}"]`).value;
    const query = new URLSearchParams();
    if (value('subject').trim()) query.set('subject', value('subject').trim());
    const attribute = value('attr-name').trim();
    if (attribute) query.set(`attr.${attribute}`, value('attr-value'));
    else if (value('attr-value')) {
      showError(error, 'Could not publish: the attribute value needs a name');
      return;
    }
    const body = value('body');
    const qs = query.toString();
    button.disabled = true;
    try {
      const { message_id: id } = await api(`/api/v1/topics/${encodeURIComponent(name)}/publish${qs ? `?${qs}` : ''}`, {
        method: 'POST',
        // A JSON body says so; other text goes as the browser's text/plain.
        headers: isJson(body) ? { 'content-type': 'application/json' } : {},
        body,
      });
      showError(error, '');
      status.textContent = `published ${id} at ${formatTime(Date.now(), false)}`;
      await loadList();
    } catch (e) {
      status.textContent = '';
      showError(error, `Could not publish to ${name}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // Subscribe and unsubscribe.

  /** The subscribe form as a `[[topics.subscriptions]]` definition;
   *  empty fields are left to the server's defaults. Throws when the
   *  filter is not JSON. */
  function subscription(form) {
    const value = (field) => form.querySelector(`[name="${field}"]`).value.trim();
    const body = { name: value('name'), target: value('target') };
    const filter = value('filter');
    if (filter) {
      try {
        body.filter = JSON.parse(filter);
      } catch (e) {
        throw new Error(`the filter is not JSON: ${e.message}`);
      }
      body.filter_scope = value('scope');
    }
    body.raw = form.querySelector('[name="raw"]').checked;
    if (value('retries') !== '') body.delivery = { retries: Number(value('retries')) };
    if (value('dead-letter')) body.dead_letter = value('dead-letter');
    return body;
  }

  async function subscribe(event, name, error) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector('button[type="submit"]');
    if (button.disabled) return;
    button.disabled = true;
    try {
      const body = subscription(form);
      await sendJson('POST', `/api/v1/topics/${encodeURIComponent(name)}/subscriptions`, body);
      showError(error, '');
      form.reset();
      notify(`Subscribed ${body.name} to topic ${name}.`);
      await loadList();
    } catch (e) {
      showError(error, `Could not subscribe: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function unsubscribe(sub, error) {
    if (!sub) return;
    const pending = sub.stats.pending;
    const dropped = pending ? ` Its ${plural(pending, 'message')} not yet delivered will not be.` : '';
    if (!confirm(`Unsubscribe "${sub.name}" from topic "${sub.topic}"? Nothing more goes to ${sub.definition.target}.${dropped} This cannot be undone.`)) return;
    try {
      await api(`/api/v1/topics/${encodeURIComponent(sub.topic)}/subscriptions/${encodeURIComponent(sub.name)}`, { method: 'DELETE' });
      showError(error, '');
      notify(`${sub.name} unsubscribed from topic ${sub.topic}.`);
    } catch (e) {
      showError(error, `Could not unsubscribe ${sub.name}: ${e.message}`);
    }
    await loadList();
  }

  // New topic and delete.

  async function create(event) {
    event.preventDefault();
    const button = $('#topic-create');
    if (button.disabled) return;
    button.disabled = true;
    try {
      const body = { name: $('#topic-name').value.trim() };
      const from = $('#topic-from').value.split(/[\s,]+/).filter(Boolean);
      if (from.length) body.from = from;
      await sendJson('POST', '/api/v1/topics', body);
      showError($('#topic-form-error'), '');
      $('#topic-form').reset();
      notify(`Topic ${body.name} created.`);
      await loadList();
    } catch (e) {
      showError($('#topic-form-error'), `Could not create the topic: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function remove(topic, error) {
    if (!topic) return;
    const messages = `its ${plural(topic.messages, 'message')}`;
    const what = topic.subscriptions.length
      ? `, ${messages} and its ${plural(topic.subscriptions.length, 'subscription')}`
      : ` and ${messages}`;
    if (!confirm(`Delete topic "${topic.name}"${what}? This cannot be undone.`)) return;
    try {
      await api(`/api/v1/topics/${encodeURIComponent(topic.name)}`, { method: 'DELETE' });
      notify(`Topic ${topic.name} deleted.`);
    } catch (e) {
      showError(error, `Could not delete topic ${topic.name}: ${e.message}`);
    }
    await loadList();
  }

  $('#topic-form').addEventListener('submit', create);
  $('#topic-form').addEventListener('input', () => showError($('#topic-form-error'), ''));

  const listPoller = poller(loadList, REFRESH_MS);
  return {
    enter() { listPoller.start(); },
    leave() { listPoller.stop(); },
  };
})();
