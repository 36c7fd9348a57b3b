// The Topics page against a real binary: a config with a queue `dlq`, a
// queue `small` (1 KiB messages at most) and a topic `browser-alerts`
// whose subscription delivers to `queue:small`, dead letters to `dlq`.
// In the browser: the config topic and subscription (no Delete, no
// Unsubscribe); a message too big for `small` published through the
// card's form shows as failed, dead-lettered, with its last error cut and
// whole on hover; a topic made with the New topic form; the Subscribe
// form refusing a filter that is not JSON (nothing sent) and showing the
// server's 400 for a bad one, then subscribing `queue:dlq` with a filter;
// a matching and a non-matching message published through the page (only
// the first delivered, counted on the page and found in `dlq`);
// Unsubscribe and Delete behind their confirmations.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCREENSHOTS, WAIT, openPage, startServer, step, stopServer } from './harness.mjs';

const DLQ = 'dlq';
const SMALL = 'small';
const CONFIG_TOPIC = 'browser-alerts';
const CONFIG_SUB = 'to-small';
const TOPIC = 'browser-orders';
const SUB = 'big-orders';

/** The JSON answer of an API call, after checking its status. */
async function call(ports, method, path, body, status = 200) {
  const response = await fetch(`http://${ports.http}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, status, `${method} ${path}: ${text}`);
  return text ? JSON.parse(text) : null;
}

const card = (page, topic) => page.locator(`#topics-list article[data-topic="${topic}"]`);
const row = (page, topic, sub) => card(page, topic).locator(`tr[data-subscription="${sub}"]`);

/** A card's facts and shown buttons, and its subscriptions' cells by
 *  name (the counts without their rates). */
function readCard(page, topic) {
  return page.$eval(`#topics-list article[data-topic="${topic}"]`, (article) => {
    const text = (node, selector) => node.querySelector(selector).textContent;
    const shown = (node) => [...node.querySelectorAll('button')].filter((b) => !b.hidden).map((b) => b.textContent);
    return {
      origin: text(article, '.topic-origin'),
      from: text(article, '.topic-from'),
      messages: text(article, '.topic-messages'),
      buttons: shown(article.querySelector('.box-head')),
      subscriptions: Object.fromEntries([...article.querySelectorAll('tr[data-subscription]')].map((tr) => [tr.dataset.subscription, {
        name: text(tr, '.sub-name'),
        target: text(tr, '.target'),
        filter: text(tr, '.filter'),
        status: text(tr, '.status'),
        delivered: text(tr, '.delivered .total'),
        failed: text(tr, '.failed .total'),
        retries: text(tr, '.retries'),
        deadLettered: text(tr, '.dead-lettered .total'),
        deadLetterTarget: text(tr, '.dead-letter-target'),
        lost: text(tr, '.lost'),
        pending: text(tr, '.pending'),
        lastError: text(tr, '.last-error'),
        buttons: shown(tr),
      }])),
    };
  });
}

/** Waits until the cell `selector` of a subscription's row reads `value`. */
async function waitForCell(page, topic, sub, selector, value) {
  await page.waitForFunction(([t, s, sel, v]) => {
    const cell = document.querySelector(`#topics-list article[data-topic="${t}"] tr[data-subscription="${s}"] ${sel}`);
    return cell && cell.textContent === v;
  }, [topic, sub, selector, value], { timeout: WAIT });
}

/** Fills a card's publish form, submits it, and waits for its answer. */
async function publish(page, topic, { body, subject = '', attrName = '', attrValue = '' }) {
  const form = card(page, topic).locator('form.topic-publish');
  await form.locator('[name="body"]').fill(body);
  await form.locator('[name="subject"]').fill(subject);
  await form.locator('[name="attr-name"]').fill(attrName);
  await form.locator('[name="attr-value"]').fill(attrValue);
  await form.locator('button[type="submit"]').click();
  await page.waitForFunction((t) => {
    const article = document.querySelector(`#topics-list article[data-topic="${t}"]`);
    return !article.querySelector('form.topic-publish button').disabled;
  }, topic, { timeout: WAIT });
  assert.ok(await card(page, topic).locator('.publish-error').isHidden(), await card(page, topic).locator('.publish-error').textContent());
  assert.match(await card(page, topic).locator('.publish-status').textContent(), /^published [0-9a-f-]{36} at /);
}

/** Fills a card's Subscribe form, submits it, and waits for its answer. */
async function subscribe(page, topic, fields) {
  const form = card(page, topic).locator('.topic-subscribe form');
  await form.locator('[name="name"]').fill(fields.name);
  await form.locator('[name="target"]').fill(fields.target);
  await form.locator('[name="filter"]').fill(fields.filter || '');
  await form.locator('[name="scope"]').selectOption(fields.scope || 'attributes');
  await form.locator('[name="raw"]').setChecked(fields.raw ?? true);
  await form.locator('[name="retries"]').fill(fields.retries || '');
  await form.locator('[name="dead-letter"]').fill(fields.deadLetter || '');
  await form.locator('button[type="submit"]').click();
  await page.waitForFunction((t) => {
    const article = document.querySelector(`#topics-list article[data-topic="${t}"]`);
    return !article.querySelector('.topic-subscribe button').disabled;
  }, topic, { timeout: WAIT });
}

export async function topicsScenario(browser) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-browser-topics-'));
  const configFile = join(dataDir, 'tidewire.toml');
  writeFileSync(configFile, `[[queues]]
name = "${DLQ}"

[[queues]]
name = "${SMALL}"
max_message_bytes = "1KiB"

[[topics]]
name = "${CONFIG_TOPIC}"
from = ["browser/alerts/#"]

[[topics.subscriptions]]
name = "${CONFIG_SUB}"
target = "queue:${SMALL}"
dead_letter = "queue:${DLQ}"
delivery = { retries = 1, min_delay = "100ms" }
`);
  const server = startServer(join(dataDir, 'data'), configFile);
  try {
    const ports = await server.ready;
    step(`topics: server up: http ${ports.http}, mqtt ${ports.mqtt}`);

    const { page, log } = await openPage(browser);
    const requests = [];
    page.on('request', (request) => {
      if (request.method() !== 'GET') requests.push(`${request.method()} ${new URL(request.url()).pathname}`);
    });
    await page.goto(`http://${ports.http}/#topics`);
    await row(page, CONFIG_TOPIC, CONFIG_SUB).waitFor({ timeout: WAIT });
    assert.ok(await page.locator('#tab-topics').evaluate((a) => a.classList.contains('active')), 'the Topics tab is the active one');
    let shown = await readCard(page, CONFIG_TOPIC);
    assert.deepEqual({ ...shown, subscriptions: undefined }, {
      origin: 'config', from: 'browser/alerts/#', messages: '0 messages', buttons: [], subscriptions: undefined,
    }, 'a config topic has no Delete button');
    assert.deepEqual(shown.subscriptions[CONFIG_SUB], {
      name: `${CONFIG_SUB}config`, target: `queue:${SMALL}`, filter: 'every message', status: 'confirmed',
      delivered: '0', failed: '0', retries: '0', deadLettered: '0', deadLetterTarget: `→ queue:${DLQ}`,
      lost: '0', pending: '0', lastError: '–', buttons: [],
    }, 'a config subscription has no Unsubscribe button');
    step('topics: the config topic and its subscription shown, without Delete or Unsubscribe');

    // Too big for the queue: refused for good, so it goes to the DLQ, and
    // the reason is the row's last error (cut; whole on hover).
    await publish(page, CONFIG_TOPIC, { body: 'x'.repeat(2000) });
    await waitForCell(page, CONFIG_TOPIC, CONFIG_SUB, '.dead-lettered .total', '1');
    await page.waitForFunction((t) => document.querySelector(`#topics-list article[data-topic="${t}"] .topic-messages`).textContent === '1 message', CONFIG_TOPIC, { timeout: WAIT });
    const lastError = row(page, CONFIG_TOPIC, CONFIG_SUB).locator('.last-error');
    const fullError = 'rejected for good: queue "small": the message is 2000 bytes, more than the queue\'s limit of 1024';
    assert.equal(await lastError.getAttribute('title'), fullError);
    assert.equal(await lastError.textContent(), `${fullError.slice(0, 59)}…`);
    shown = (await readCard(page, CONFIG_TOPIC)).subscriptions[CONFIG_SUB];
    assert.equal(shown.failed, '1');
    assert.equal(shown.lost, '0');
    const dead = await call(ports, 'GET', `/api/v1/queues/${DLQ}/peek`);
    assert.equal(dead.messages.length, 1);
    assert.equal(dead.messages[0].body, 'x'.repeat(2000));
    step('topics: a message too big for the queue shows as failed and dead-lettered, its error cut with the whole on hover');

    // New topic.
    await page.fill('#topic-name', TOPIC);
    await page.fill('#topic-from', 'browser/orders/#, browser/more/+');
    await page.click('#topic-create');
    await card(page, TOPIC).waitFor({ timeout: WAIT });
    assert.ok(await page.isHidden('#topic-form-error'));
    assert.equal(await page.inputValue('#topic-name'), '', 'a success empties the form');
    shown = await readCard(page, TOPIC);
    assert.deepEqual(shown, {
      origin: 'api', from: 'browser/orders/#, browser/more/+', messages: '0 messages', buttons: ['Delete'], subscriptions: {},
    });
    const created = await call(ports, 'GET', `/api/v1/topics/${TOPIC}`);
    assert.equal(created.origin, 'api');
    assert.deepEqual(created.definition.from, ['browser/orders/#', 'browser/more/+']);
    step(`topics: ${TOPIC} created through the New topic form`);

    // Subscribe: a filter that is not JSON is refused here (nothing sent),
    // a bad pattern by the server (its 400 text shown).
    await card(page, TOPIC).locator('.topic-subscribe summary').click();
    const subscribeError = card(page, TOPIC).locator('.subscribe-error');
    const subscribePath = `POST /api/v1/topics/${TOPIC}/subscriptions`;
    await subscribe(page, TOPIC, { name: SUB, target: `queue:${DLQ}`, filter: '{"kind": [' });
    assert.ok(await subscribeError.isVisible());
    assert.match(await subscribeError.textContent(), /^Could not subscribe: the filter is not JSON: /);
    assert.ok(!requests.includes(subscribePath), 'a filter that is not JSON is not sent');
    log.expectedErrors.push(new RegExp(`status of 400 .*/api/v1/topics/${TOPIC}/subscriptions\\)$`));
    await subscribe(page, TOPIC, { name: SUB, target: `queue:${DLQ}`, filter: '{"kind": "big"}' });
    assert.ok(await subscribeError.isVisible());
    assert.equal(await subscribeError.textContent(),
      'Could not subscribe: subscription.filter: "kind": a field\'s pattern is a list of values or a nested object, not a string');
    assert.deepEqual((await call(ports, 'GET', `/api/v1/topics/${TOPIC}/subscriptions`)).subscriptions, []);
    step('topics: a filter that is not JSON refused in the page, a bad filter refused with the server\'s text');

    await subscribe(page, TOPIC, { name: SUB, target: `queue:${DLQ}`, filter: '{"kind": ["big"]}', retries: '2', deadLetter: `queue:${DLQ}` });
    await row(page, TOPIC, SUB).waitFor({ timeout: WAIT });
    assert.ok(await subscribeError.isHidden(), 'a success clears the error');
    assert.equal(await card(page, TOPIC).locator('.topic-subscribe [name="name"]').inputValue(), '', 'a success empties the form');
    shown = (await readCard(page, TOPIC)).subscriptions[SUB];
    assert.deepEqual(shown, {
      name: SUB, target: `queue:${DLQ}`, filter: '{"kind":["big"]}attributes', status: 'confirmed',
      delivered: '0', failed: '0', retries: '0', deadLettered: '0', deadLetterTarget: `→ queue:${DLQ}`,
      lost: '0', pending: '0', lastError: '–', buttons: ['Unsubscribe'],
    });
    assert.match(await row(page, TOPIC, SUB).locator('.retries').getAttribute('title'), /^up to 2 retries, 1s to 20s apart$/);
    const sub = await call(ports, 'GET', `/api/v1/topics/${TOPIC}/subscriptions/${SUB}`);
    assert.equal(sub.origin, 'api');
    assert.deepEqual(sub.definition.filter, { kind: ['big'] });
    assert.equal(sub.definition.raw, true);
    assert.equal(sub.definition.delivery.retries, 2);
    assert.equal(sub.definition.dead_letter, `queue:${DLQ}`);
    step(`topics: ${SUB} subscribed through the form (queue:${DLQ}, filter kind = big, 2 retries)`);

    // A matching and a non-matching message through the page: one delivered.
    // Every rate the row shows meanwhile is recorded: one of them must be
    // that delivery (1 message over the 1 s or more between refreshes).
    await page.evaluate(([t, s]) => {
      const rate = document.querySelector(`#topics-list article[data-topic="${t}"] tr[data-subscription="${s}"] .delivered .rate`);
      window.seenRates = [rate.textContent];
      new MutationObserver(() => window.seenRates.push(rate.textContent)).observe(rate, { childList: true, characterData: true, subtree: true });
    }, [TOPIC, SUB]);
    await publish(page, TOPIC, { body: '{"order":1}', subject: 'first', attrName: 'kind', attrValue: 'big' });
    await publish(page, TOPIC, { body: '{"order":2}', attrName: 'kind', attrValue: 'small' });
    await waitForCell(page, TOPIC, SUB, '.delivered .total', '1');
    await page.waitForFunction((t) => document.querySelector(`#topics-list article[data-topic="${t}"] .topic-messages`).textContent === '2 messages', TOPIC, { timeout: WAIT });
    await waitForCell(page, TOPIC, SUB, '.pending', '0');
    await page.waitForFunction(() => window.seenRates.some((r) => /^0\.[1-9]\/s$|^1\/s$/.test(r)), null, { timeout: WAIT });
    const seenRates = await page.evaluate(() => window.seenRates);
    assert.ok(seenRates.every((r) => /^(–|0|0\.[1-9]|1)\/s$/.test(r)), `delivered/s was never above 1: ${seenRates}`);
    shown = (await readCard(page, TOPIC)).subscriptions[SUB];
    assert.equal(shown.failed, '0');
    assert.equal(shown.deadLettered, '0');
    const delivered = await call(ports, 'GET', `/api/v1/queues/${DLQ}/peek`);
    assert.deepEqual(delivered.messages.map((m) => m.body), ['x'.repeat(2000), '{"order":1}'], 'only the matching message reached the queue');
    const stats = (await call(ports, 'GET', `/api/v1/topics/${TOPIC}/subscriptions/${SUB}`)).stats;
    assert.equal(stats.delivered, 1);
    step(`topics: a matching and a non-matching message published in the page; delivered 1 (rates seen: ${seenRates.join(' ')}), the match in the queue`);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-topics.png'), fullPage: true });

    // Unsubscribe: a dismissed confirmation sends nothing.
    const unsubscribePath = `DELETE /api/v1/topics/${TOPIC}/subscriptions/${SUB}`;
    page.once('dialog', (dialog) => dialog.dismiss());
    await row(page, TOPIC, SUB).locator('button', { hasText: 'Unsubscribe' }).click();
    assert.ok(!requests.includes(unsubscribePath), 'no unsubscribe after a dismissed confirmation');
    let question = '';
    page.once('dialog', (dialog) => { question = dialog.message(); dialog.accept(); });
    await row(page, TOPIC, SUB).locator('button', { hasText: 'Unsubscribe' }).click();
    await row(page, TOPIC, SUB).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(question, `Unsubscribe "${SUB}" from topic "${TOPIC}"? Nothing more goes to queue:${DLQ}. This cannot be undone.`);
    assert.ok(requests.includes(unsubscribePath));
    await call(ports, 'GET', `/api/v1/topics/${TOPIC}/subscriptions/${SUB}`, undefined, 404);
    assert.ok(await card(page, TOPIC).locator('.topic-error').isHidden());
    step(`topics: ${SUB} unsubscribed after its confirmation, GET answers 404`);

    // Delete the topic.
    page.once('dialog', (dialog) => { question = dialog.message(); dialog.accept(); });
    await card(page, TOPIC).locator('.topic-delete').click();
    await card(page, TOPIC).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(question, `Delete topic "${TOPIC}" and its 2 messages? This cannot be undone.`);
    await call(ports, 'GET', `/api/v1/topics/${TOPIC}`, undefined, 404);
    assert.ok(await page.isVisible(`#topics-list article[data-topic="${CONFIG_TOPIC}"]`), 'the config topic stays');
    assert.ok(await page.isHidden('#topics-error'));
    step(`topics: ${TOPIC} deleted after its confirmation, GET answers 404`);

    assert.deepEqual(log.expectedErrors, [], 'every expected error happened');
    assert.deepEqual(log.errors, [], 'the browser logged errors');
  } finally {
    await stopServer(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}
