// tidewire dashboard: the Topics page (#topics). One card per fan-out
// topic from `GET /api/v1/topics`, refreshed every 2 s: its filters and
// message count, a table of its subscriptions and their figures
// (delivered and failed per second are counter deltas between two
// refreshes), a publish form, a subscribe form, and Delete / Unsubscribe
// for what the API made (the config file's are changed there). Cards and
// rows are updated in place, so a form keeps what is typed in it and a
// button its focus across refreshes.
//
// Loaded after app.js and cards.js, whose helpers it uses ($, el, fill,
// showError, notify, api, views and the formatters; the list, card,
// rate and form helpers). Server text only ever goes in through
// textContent; the markup below is static.
'use strict';

views.topics = (() => {
  const FILTER_CHARS = 40; // a filter's JSON is cut after this many characters
  const cards = keyedViews((topic) => makeCard(topic.name)); // one per topic (see makeCard)

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

  const CARD = cardTemplate('topic', `
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
      </details>`);

  $('#view-topics').append(PAGE.content.cloneNode(true));

  const loadList = listLoader('topics', {
    error: $('#topics-error'),
    shown: (topics) => cards.show($('#topics-list'), topics, () => el('p', { class: 'muted', text: 'no topics' }), Date.now() / 1000),
  });

  /** A card that keeps its elements; update() sets them. */
  function makeCard(name) {
    let topic = null;
    const { node, part, showOrigin } = newCard(CARD, 'topic', name, {
      deleteTitle: `delete topic ${name}, its messages and its subscriptions`,
      onDelete: () => remove(topic, error),
      deletable: 'can be deleted',
    });
    const error = part('.topic-error');
    // One row per subscription (see makeRow).
    const rows = keyedViews((s) => makeRow(name, s.name, error));
    publishForm(part('.topic-publish'), name, part('.publish-error'), part('.publish-status'));
    subscribeForm(part('.topic-subscribe form'), name, part('.subscribe-error'));
    part('.topic-subscribe summary').setAttribute('aria-label', `Subscribe to ${name}…`);

    function update(t, now) {
      topic = t;
      showOrigin(t.origin);
      const from = t.definition.from || [];
      setText(part('.topic-from'), from.length ? from.join(', ') : 'direct publishes only',
        from.length ? 'MQTT topic filters whose messages the topic takes' : 'no topic filters: it takes only what is published to it');
      part('.topic-from').classList.toggle('muted', !from.length);
      part('.topic-from').classList.toggle('mono', from.length > 0);
      setText(part('.topic-messages'), plural(t.messages, 'message'), 'messages the topic took');
      setText(part('.topic-limits'), `kept ${t.definition.retention}, up to ${t.definition.max_message_bytes} each, fsync ${t.definition.fsync}`);

      rows.show(part('.topic-subscriptions tbody'), t.subscriptions,
        () => el('tr', {}, el('td', { colSpan: 13, class: 'muted', text: 'no subscriptions: Subscribe… below adds one' })), now);
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
    let sub = null;
    const unsubscribeButton = actionButton(el('button', { type: 'button', class: 'small danger', text: 'Unsubscribe' }), {
      title: `stop delivering ${topicName} to ${name}`,
      label: `Unsubscribe ${name} from ${topicName}`,
      onclick: () => unsubscribe(sub, error),
    });
    const node = el('tr', { dataset: { subscription: name } }, Object.values(cells), el('td', { class: 'actions' }, unsubscribeButton));
    const drawDefinition = drawWhenChanged(definitionCells);
    const meter = rateMeter();

    function update(s, now) {
      sub = s;
      const { stats } = s;
      drawDefinition(s, [s.definition, s.origin, s.status]);
      unsubscribeButton.hidden = s.origin !== 'api';

      const rates = meter.update(now, { delivered: stats.delivered, failed: stats.failed });
      setText(cells.delivered.firstChild, formatNumber(stats.delivered));
      setText(cells.delivered.lastChild, rateText(rates.delivered), 'per second between the last two refreshes');
      setText(cells.failed.firstChild, formatNumber(stats.failed));
      setText(cells.failed.lastChild, rateText(rates.failed), 'per second between the last two refreshes');
      cells.failed.classList.toggle('bad', stats.failed > 0);
      setText(cells.retries, formatNumber(stats.retries), policyText(s.definition.delivery));
      setText(cells.deadLettered.firstChild, formatNumber(stats.dead_lettered));
      setText(cells.lost, formatNumber(stats.lost));
      cells.lost.classList.toggle('bad', stats.lost > 0);
      setText(cells.pending, formatNumber(stats.pending), `cursor at offset ${stats.cursor}`);
      setText(cells.lag, stats.lag_seconds > 0 ? formatAge(stats.lag_seconds * 1000) : '0 s');
      showLastError(cells.lastError, stats.last_error, '–');
    }

    /** The cells that follow from the definition, origin and status. */
    function definitionCells(s) {
      const def = s.definition;
      fill(cells.name, name, s.origin === 'api' ? null : originBadge(s.origin));
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

  /** A card's publish form: the body as it is typed, its subject and one
   *  String attribute in the query. */
  function publishForm(form, name, error, status) {
    const value = (field) => form.querySelector(`[name="${field}"]`).value;
    sendsForm(form, {
      error,
      status,
      failed: `Could not publish to ${name}`,
      check: () => (!value('attr-name').trim() && value('attr-value') ? 'Could not publish: the attribute value needs a name' : ''),
      send() {
        const query = new URLSearchParams();
        if (value('subject').trim()) query.set('subject', value('subject').trim());
        const attribute = value('attr-name').trim();
        if (attribute) query.set(`attr.${attribute}`, value('attr-value'));
        const body = value('body');
        const qs = query.toString();
        return api(`/api/v1/topics/${encodeURIComponent(name)}/publish${qs ? `?${qs}` : ''}`, {
          method: 'POST',
          // A JSON body says so; other text goes as the browser's text/plain.
          headers: isJson(body) ? { 'content-type': 'application/json' } : {},
          body,
        });
      },
      async done({ message_id: id }) {
        status.textContent = `published ${id} at ${formatTime(Date.now(), false)}`;
        await loadList();
      },
    });
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

  /** A card's Subscribe form. */
  function subscribeForm(form, name, error) {
    sendsForm(form, {
      error,
      failed: 'Could not subscribe',
      send: () => postBody(`/api/v1/topics/${encodeURIComponent(name)}/subscriptions`, subscription(form)),
      async done(body) {
        form.reset();
        notify(`Subscribed ${body.name} to topic ${name}.`);
        await loadList();
      },
    });
  }

  function unsubscribe(sub, error) {
    if (!sub) return;
    const pending = sub.stats.pending;
    const dropped = pending ? ` Its ${plural(pending, 'message')} not yet delivered will not be.` : '';
    confirmed(`Unsubscribe "${sub.name}" from topic "${sub.topic}"? Nothing more goes to ${sub.definition.target}.${dropped} This cannot be undone.`, {
      path: `/api/v1/topics/${encodeURIComponent(sub.topic)}/subscriptions/${encodeURIComponent(sub.name)}`,
      done: `${sub.name} unsubscribed from topic ${sub.topic}.`,
      failed: `Could not unsubscribe ${sub.name}`,
      error,
      reload: loadList,
    });
  }

  // New topic and delete.

  /** The New topic form as a `[[topics]]` definition. */
  function definition() {
    const body = { name: $('#topic-name').value.trim() };
    const from = $('#topic-from').value.split(/[\s,]+/).filter(Boolean);
    if (from.length) body.from = from;
    return body;
  }

  sendsForm($('#topic-form'), {
    error: $('#topic-form-error'),
    failed: 'Could not create the topic',
    send: () => postBody('/api/v1/topics', definition()),
    async done(body) {
      $('#topic-form').reset();
      notify(`Topic ${body.name} created.`);
      await loadList();
    },
  });

  function remove(topic, error) {
    if (!topic) return;
    const messages = `its ${plural(topic.messages, 'message')}`;
    const what = topic.subscriptions.length
      ? `, ${messages} and its ${plural(topic.subscriptions.length, 'subscription')}`
      : ` and ${messages}`;
    confirmed(`Delete topic "${topic.name}"${what}? This cannot be undone.`, {
      path: `/api/v1/topics/${encodeURIComponent(topic.name)}`,
      done: `Topic ${topic.name} deleted.`,
      failed: `Could not delete topic ${topic.name}`,
      error,
      reload: loadList,
    });
  }

  return polledView(loadList);
})();
