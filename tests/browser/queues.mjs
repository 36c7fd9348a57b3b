// The Queues page against a real binary: a config with a queue fed by
// `browser/jobs/#` and its dead-letter queue; messages sent through
// `POST /api/v1/queues/NAME/messages` and `POST /api/v1/publish/...`; then,
// in the browser: the depth (table and sparkline), Peek (bodies as text,
// never HTML; keyboard: Escape closes and refocuses), messages moved to the
// DLQ by receives through the API, a Redrive through the UI that
// completes, the New queue form (a refusal, then a queue with a DLQ),
// Purge and Delete behind their confirmations.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SCREENSHOTS, WAIT, assertNoBrowserErrors, call, clickConfirming, openView, step, submitForm, waitForText, withConfiguredServer } from './harness.mjs';

const JOBS = 'browser-jobs';
const DLQ = 'browser-dlq';
const CREATED = 'browser-new';
// Markup that must show as text.
const HTML_BODY = 'job 1 <b id="injected">not bold</b>';

const depthOf = async (ports, name) => (await call(ports, 'GET', `/api/v1/queues/${name}`)).depth;

/** The Queues table's rows by name: their cells' texts and the buttons
 *  shown ("Purge (disabled)" when disabled). */
function readQueues(page) {
  return page.$$eval('#queues-list tbody tr[data-queue]', (rows) => Object.fromEntries(rows.map((tr) => {
    const cells = [...tr.querySelectorAll('td')].map((td) => td.textContent);
    const shown = [...tr.querySelectorAll('button')].filter((b) => !b.hidden).map((b) => (b.disabled ? `${b.textContent} (disabled)` : b.textContent));
    return [tr.dataset.queue, {
      type: cells[1], origin: cells[2], from: cells[3], visible: cells[4], inFlight: cells[5], delayed: cells[6], deadLetters: cells[9], buttons: shown,
    }];
  })));
}

/** Waits until the row of `name` shows `visible` messages. */
async function waitForVisible(page, name, visible) {
  await page.waitForFunction(([queue, count]) => {
    const row = document.querySelector(`#queues-list tbody tr[data-queue="${queue}"]`);
    return row && row.querySelectorAll('td')[4].textContent === count;
  }, [name, String(visible)], { timeout: WAIT });
}

const button = (page, queue, label) => page.locator(`#queues-list tr[data-queue="${queue}"] button`, { hasText: label });

const CONFIG = `[[queues]]
name = "${DLQ}"

[[queues]]
name = "${JOBS}"
from = ["browser/jobs/#"]
dead_letter = { queue = "${DLQ}", max_receive_count = 1 }
`;

export async function queuesScenario(browser) {
  await withConfiguredServer('queues', () => CONFIG, async ({ ports }) => {
    // Three sends (one batch) and a publish to a topic the queue takes.
    const sent = await call(ports, 'POST', `/api/v1/queues/${JOBS}/messages`, {
      messages: [
        { body: HTML_BODY, attributes: { kind: { type: 'String', value: 'html' } } },
        { body: { n: 2 } },
        { body: 'job 3' },
      ],
    });
    assert.ok(sent.results.every((r) => r.message_id), JSON.stringify(sent));
    await call(ports, 'POST', '/api/v1/publish/browser/jobs/4?qos=1', { n: 4 });
    assert.equal((await depthOf(ports, JOBS)).visible, 4);

    const { page, log, requests } = await openView(browser, ports, 'queues');
    await waitForVisible(page, JOBS, 4);
    let list = await readQueues(page);
    assert.deepEqual(list[JOBS], {
      type: 'standard', origin: 'config', from: 'browser/jobs/#', visible: '4', inFlight: '0', delayed: '0',
      deadLetters: `→ ${DLQ} after 1 receive`, buttons: ['Peek', 'Purge'],
    });
    assert.equal(list[DLQ].visible, '0');
    assert.equal(list[DLQ].deadLetters, `DLQ of ${JOBS}`);
    assert.deepEqual(list[DLQ].buttons, ['Peek', 'Redrive', 'Purge (disabled)'], 'a DLQ has Redrive; config queues have no Delete; nothing to purge');
    assert.match(await page.textContent(`tr[data-queue="${JOBS}"] td:nth-child(8)`), /^\d+(\.\d)? s$|^\d+ ms$/, 'age of the oldest');
    await page.locator(`tr[data-queue="${JOBS}"] .spark canvas`).waitFor({ timeout: WAIT });
    assert.match(await page.getAttribute(`tr[data-queue="${JOBS}"] .spark`, 'aria-label'), /at most 4 messages/);
    step('queues: depth 4 shown, with a sparkline; Redrive only on the DLQ, no Delete on config queues');

    // Peek, from the keyboard: the panel takes the focus, Escape gives it back.
    await button(page, JOBS, 'Peek').focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#peek-messages .peek-message').length === 4, null, { timeout: WAIT });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'peek');
    assert.equal(await page.textContent('#peek-queue'), JOBS);
    const bodies = await page.$$eval('#peek-messages .peek-body', (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(bodies, [HTML_BODY, '{"n":2}', 'job 3', '{"n":4}'], 'bodies in queue order, as text');
    assert.equal(await page.locator('#injected').count(), 0, 'a body is never parsed as HTML');
    assert.match(await page.textContent('#peek-messages .peek-message:first-child .peek-attributes'), /^kindhtml \(String\)$/);
    assert.equal(await page.textContent('#peek-messages .peek-message:last-child .tail-topic'), 'browser/jobs/4');
    assert.match(await page.textContent('#peek-status'), /^4 messages at /);
    const peeked = await call(ports, 'GET', `/api/v1/queues/${JOBS}/peek`);
    assert.ok(peeked.messages.every((m) => m.receive_count === 0), 'a peek receives nothing');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-queues-peek.png'), fullPage: true });
    await page.keyboard.press('Escape');
    assert.ok(await page.isHidden('#peek'));
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), `Peek at ${JOBS}`);
    step('queues: Peek shows the 4 bodies as text (keyboard: Enter opens, Escape closes and refocuses)');

    // Into the DLQ: one receive each (visible again at once), then the
    // next receive moves them (max_receive_count = 1).
    const first = await call(ports, 'POST', `/api/v1/queues/${JOBS}/receive?max=10&visibility_ms=0`);
    assert.equal(first.messages.length, 4);
    for (let i = 0; i < 10 && (await depthOf(ports, DLQ)).visible < 4; i += 1) {
      await call(ports, 'POST', `/api/v1/queues/${JOBS}/receive?max=10&visibility_ms=0`);
    }
    assert.equal((await depthOf(ports, DLQ)).visible, 4);
    await waitForVisible(page, DLQ, 4);
    await waitForVisible(page, JOBS, 0);
    step('queues: after a receive each, the next receive moved all 4 to the DLQ; the page shows it');

    // Redrive them back through the UI.
    await button(page, DLQ, 'Redrive').click();
    await page.locator('#redrive').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.textContent('#redrive-queue'), DLQ);
    assert.equal(await page.textContent('#redrive-sources'), JOBS);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'redrive-destination');
    await waitForText(page, '#redrive-status', 'no redrive yet');
    await page.click('#redrive-start');
    await waitForText(page, '#redrive-status', 'redrive completed: 4 of 4 moved');
    assert.ok(await page.isHidden('#redrive-error'));
    assert.equal(await page.getAttribute('#redrive-tasks tbody tr progress', 'value'), '4');
    await waitForVisible(page, JOBS, 4);
    await waitForVisible(page, DLQ, 0);
    assert.equal((await depthOf(ports, JOBS)).visible, 4);
    const { tasks } = await call(ports, 'GET', `/api/v1/queues/${DLQ}/redrive`);
    assert.deepEqual(tasks.map((t) => [t.status, t.moved, t.to_move]), [['completed', 4, 4]]);
    step('queues: Redrive from the DLQ completed (4 of 4 moved), the queue has them back');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-queues-redrive.png'), fullPage: true });
    await page.click('#redrive-close');

    // New queue: the server's refusal, then one with a dead-letter queue.
    const createQueue = (fields) => submitForm(page.locator('#queue-form'), {
      '#queue-name': fields.name,
      '#queue-from': fields.from || '',
      '#queue-visibility': fields.visibility || '',
      '#queue-dlq': fields.dlq || '',
      '#queue-max-receives': fields.maxReceives || '',
    });
    log.expectedErrors.push(/status of 400 .*\/api\/v1\/queues\)$/);
    await createQueue({ name: CREATED, visibility: '13h' });
    assert.ok(await page.isVisible('#queue-form-error'));
    assert.match(await page.textContent('#queue-form-error'), /^Could not create the queue: .*visibility_timeout.*12h/);
    step('queues: a visibility over 12 h refused, the server error shown');

    await createQueue({ name: CREATED, from: 'browser/new/#, browser/other/+', visibility: '45s', dlq: DLQ, maxReceives: '3' });
    await page.locator(`#queues-list tr[data-queue="${CREATED}"]`).waitFor({ timeout: WAIT });
    assert.ok(await page.isHidden('#queue-form-error'), 'a success clears the form error');
    assert.equal(await page.inputValue('#queue-name'), '', 'a success empties the form');
    const created = await call(ports, 'GET', `/api/v1/queues/${CREATED}`);
    assert.equal(created.origin, 'api');
    assert.deepEqual(created.definition.from, ['browser/new/#', 'browser/other/+']);
    assert.equal(created.definition.visibility_timeout, '45s');
    assert.deepEqual(created.definition.dead_letter, { queue: DLQ, max_receive_count: 3 });
    await waitForText(page, `#queues-list tr[data-queue="${DLQ}"] td.dead-letters`, `DLQ of ${JOBS}, ${CREATED}`);
    list = await readQueues(page);
    assert.equal(list[CREATED].origin, 'api');
    assert.deepEqual(list[CREATED].buttons, ['Peek', 'Purge (disabled)', 'Delete'], 'an API queue can be deleted');
    step(`queues: ${CREATED} created through the form, with ${DLQ} as its dead-letter queue`);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-queues.png'), fullPage: true });

    // Purge: a dismissed confirmation sends nothing; an accepted one empties it.
    await clickConfirming(page, button(page, JOBS, 'Purge'), false);
    assert.ok(!requests.includes(`POST /api/v1/queues/${JOBS}/purge`), 'no purge after a dismissed confirmation');
    let question = await clickConfirming(page, button(page, JOBS, 'Purge'), true);
    await waitForVisible(page, JOBS, 0);
    assert.equal(question, `Purge queue "${JOBS}"? Its 4 messages (visible, in flight and delayed) will be deleted. This cannot be undone.`);
    assert.equal((await depthOf(ports, JOBS)).visible, 0);
    step(`queues: ${JOBS} purged after its confirmation`);

    // Delete the API queue.
    question = await clickConfirming(page, button(page, CREATED, 'Delete'), true);
    await page.locator(`#queues-list tr[data-queue="${CREATED}"]`).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(question, `Delete queue "${CREATED}" and its 0 messages? This cannot be undone.`);
    assert.ok(await page.isHidden('#queues-error'));
    await call(ports, 'GET', `/api/v1/queues/${CREATED}`, undefined, 404);
    step(`queues: ${CREATED} deleted after its confirmation, GET answers 404`);

    assertNoBrowserErrors(log);
  });
}
