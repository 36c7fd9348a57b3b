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
import { join } from 'node:path';
import { SCREENSHOTS, WAIT, assertNoBrowserErrors, call, clickConfirming, openView, step, submitForm, waitForText, watchText, withConfiguredServer } from './harness.mjs';

const DLQ = 'dlq';
const SMALL = 'small';
const CONFIG_TOPIC = 'browser-alerts';
const CONFIG_SUB = 'to-small';
const TOPIC = 'browser-orders';
const SUB = 'big-orders';

const CARD = (topic) => `#topics-list article[data-topic="${topic}"]`;
const ROW = (topic, sub) => `${CARD(topic)} tr[data-subscription="${sub}"]`;
const card = (page, topic) => page.locator(CARD(topic));
const row = (page, topic, sub) => page.locator(ROW(topic, sub));

/** A card's facts and shown buttons, and its subscriptions' cells by
 *  name (the counts without their rates). */
function readCard(page, topic) {
  return page.$eval(CARD(topic), (article) => {
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

/** Fills a card's publish form, submits it, and waits for its answer. */
async function publish(page, topic, { body, subject = '', attrName = '', attrValue = '' }) {
  await submitForm(card(page, topic).locator('form.topic-publish'), {
    '[name="body"]': body, '[name="subject"]': subject, '[name="attr-name"]': attrName, '[name="attr-value"]': attrValue,
  });
  assert.ok(await card(page, topic).locator('.publish-error').isHidden(), await card(page, topic).locator('.publish-error').textContent());
  assert.match(await card(page, topic).locator('.publish-status').textContent(), /^published [0-9a-f-]{36} at /);
}

/** Fills a card's Subscribe form, submits it, and waits for its answer. */
async function subscribe(page, topic, fields) {
  await submitForm(card(page, topic).locator('.topic-subscribe form'), {
    '[name="name"]': fields.name,
    '[name="target"]': fields.target,
    '[name="filter"]': fields.filter || '',
    '[name="scope"]': fields.scope || 'attributes',
    '[name="raw"]': fields.raw ?? true,
    '[name="retries"]': fields.retries || '',
    '[name="dead-letter"]': fields.deadLetter || '',
  });
}

const CONFIG = `[[queues]]
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
`;

export async function topicsScenario(browser) {
  await withConfiguredServer('topics', () => CONFIG, async ({ ports }) => {
    const { page, log, requests } = await openView(browser, ports, 'topics');
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
    await waitForText(page, `${ROW(CONFIG_TOPIC, CONFIG_SUB)} .dead-lettered .total`, '1');
    await waitForText(page, `${CARD(CONFIG_TOPIC)} .topic-messages`, '1 message');
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
    await submitForm(page.locator('#topic-form'), { '#topic-name': TOPIC, '#topic-from': 'browser/orders/#, browser/more/+' });
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
    const rates = await watchText(page, `${ROW(TOPIC, SUB)} .delivered .rate`);
    await publish(page, TOPIC, { body: '{"order":1}', subject: 'first', attrName: 'kind', attrValue: 'big' });
    await publish(page, TOPIC, { body: '{"order":2}', attrName: 'kind', attrValue: 'small' });
    await waitForText(page, `${ROW(TOPIC, SUB)} .delivered .total`, '1');
    await waitForText(page, `${CARD(TOPIC)} .topic-messages`, '2 messages');
    await waitForText(page, `${ROW(TOPIC, SUB)} .pending`, '0');
    await rates.until(/^0\.[1-9]\/s$|^1\/s$/);
    const seenRates = await rates.texts();
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
    const unsubscribeButton = row(page, TOPIC, SUB).locator('button', { hasText: 'Unsubscribe' });
    await clickConfirming(page, unsubscribeButton, false);
    assert.ok(!requests.includes(unsubscribePath), 'no unsubscribe after a dismissed confirmation');
    let question = await clickConfirming(page, unsubscribeButton, true);
    await row(page, TOPIC, SUB).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(question, `Unsubscribe "${SUB}" from topic "${TOPIC}"? Nothing more goes to queue:${DLQ}. This cannot be undone.`);
    assert.ok(requests.includes(unsubscribePath));
    await call(ports, 'GET', `/api/v1/topics/${TOPIC}/subscriptions/${SUB}`, undefined, 404);
    assert.ok(await card(page, TOPIC).locator('.topic-error').isHidden());
    step(`topics: ${SUB} unsubscribed after its confirmation, GET answers 404`);

    // Delete the topic.
    question = await clickConfirming(page, card(page, TOPIC).locator('.topic-delete'), true);
    await card(page, TOPIC).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(question, `Delete topic "${TOPIC}" and its 2 messages? This cannot be undone.`);
    await call(ports, 'GET', `/api/v1/topics/${TOPIC}`, undefined, 404);
    assert.ok(await card(page, CONFIG_TOPIC).isVisible(), 'the config topic stays');
    assert.ok(await page.isHidden('#topics-error'));
    step(`topics: ${TOPIC} deleted after its confirmation, GET answers 404`);

    assertNoBrowserErrors(log);
  });
}
