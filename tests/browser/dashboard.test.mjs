// Headless-browser test of the dashboard served by a real tidewire binary:
// starts the server on free ports, drives the page with playwright-core and
// the system Chromium, publishes over real MQTT with `tidewire pub`, and
// fails on any failed assertion or browser console error. Five scenarios:
// anonymous access on loopback (the default: no login), a server that
// requires a login (`[auth] allow_anonymous = false`, a user and a token),
// the Queues page (queues.mjs), the Topics page (topics.mjs) and the
// Exports page (exports.mjs).
//
//   npm ci --prefix tests/browser
//   node tests/browser/dashboard.test.mjs
//
// Environment: TIDEWIRE_BIN (default ${CARGO_TARGET_DIR:-target}/debug/tidewire
// under the repository root), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT_DIR (default target/browser).

import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { BIN, SCREENSHOTS, WAIT, openPage, startServer, started, step, stopServer } from './harness.mjs';
import { queuesScenario } from './queues.mjs';
import { topicsScenario } from './topics.mjs';
import { exportsScenario } from './exports.mjs';

/** Publishes one QoS 1 message over MQTT with the real binary. */
async function mqttPublish(mqttAddress, topic, message) {
  const port = mqttAddress.split(':').pop();
  await promisify(execFile)(BIN, ['pub', '-p', port, '-q', '1', topic, message], { timeout: WAIT });
}

/** The SQL result table as {headers, rows} of cell texts. */
function readSqlTable(page) {
  return page.$eval('#sql-result table', (table) => ({
    headers: [...table.querySelectorAll('thead th')].map((th) => th.textContent),
    rows: [...table.querySelectorAll('tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
  }));
}

async function runQuery(page, sql) {
  await page.fill('#sql-input', sql);
  await page.click('#sql-run');
  // The status reads "N rows · M ms" or "failed after M ms" when done.
  await page.waitForFunction(() => / ms$/.test(document.querySelector('#sql-status').textContent), null, { timeout: WAIT });
}

async function testTail(page, ports) {
  await page.click('#tab-tail');
  await page.fill('#tail-filter', 'browser/#');
  await page.click('#tail-subscribe');
  await page.waitForFunction(() => document.querySelector('#tail-status').textContent === 'subscribed to browser/#', null, { timeout: WAIT });
  step('tail: subscribed to browser/#');

  await mqttPublish(ports.mqtt, 'browser/test', '{"hello":"browser"}');
  const row = page.locator('.tail-message', { has: page.locator('.tail-topic', { hasText: /^browser\/test$/ }) });
  await row.first().waitFor({ timeout: WAIT });
  assert.match(await row.first().locator('.tail-payload').textContent(), /browser/);
  step('tail: MQTT message shown');

  await page.click('#tail-pause');
  await mqttPublish(ports.mqtt, 'browser/paused', '{"while":"paused"}');
  await page.waitForFunction(() => document.querySelector('#tail-buffered').textContent.includes('1 buffered'), null, { timeout: WAIT });
  assert.equal(await page.locator('.tail-message').count(), 1, 'a paused tail renders no new rows');
  await page.click('#tail-pause');
  await page.locator('.tail-message .tail-topic', { hasText: /^browser\/paused$/ }).waitFor({ timeout: WAIT });
  assert.equal(await page.locator('.tail-message').count(), 2);
  assert.equal(await page.locator('#tail-pause').textContent(), 'Pause');
  step('tail: pause buffers, resume renders');
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-tail.png'), fullPage: true });
}

async function testSql(page, expectedErrors) {
  await page.click('#tab-sql');
  await runQuery(page, 'SELECT topic, count(*) AS n FROM events GROUP BY topic ORDER BY topic');
  assert.equal(await page.textContent('#sql-error'), '');
  const table = await readSqlTable(page);
  assert.deepEqual(table.headers, ['topic', 'n']);
  assert.ok(table.rows.some((r) => r[0] === 'browser/test' && r[1] === '1'), `no row browser/test 1 in ${JSON.stringify(table.rows)}`);
  assert.match(await page.textContent('#sql-status'), /^\d+ rows? · \d+ ms$/);
  step('sql: query result table');

  // The server answers 400, which Chromium logs as a failed resource.
  expectedErrors.push(/status of 400 .*\/api\/v1\/sql\)$/);
  await runQuery(page, 'SELEC nonsense');
  assert.match(await page.textContent('#sql-error'), /\S/);
  assert.ok(await page.isVisible('#sql-error'));
  step('sql: error shown');

  await runQuery(page, "SELECT date_bin(INTERVAL '1 second', ts) AS t, count(*) AS n FROM events GROUP BY t ORDER BY t");
  await page.click('#sql-chart');
  await page.locator('#sql-chart-area canvas').first().waitFor({ timeout: WAIT });
  step('sql: chart drawn');
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-sql.png'), fullPage: true });
}

/** The Streams table's rows by name: origin, filters, message count and
 *  whether it has a Delete button. */
function readStreamsList(page) {
  return page.$$eval('#streams-list tbody tr[data-stream]', (rows) => Object.fromEntries(rows.map((tr) => {
    const cells = tr.querySelectorAll('td');
    return [tr.dataset.stream, {
      origin: cells[1].querySelector('.badge').textContent,
      filters: cells[2].textContent,
      messages: cells[3].textContent,
      deletable: tr.querySelector('button') !== null,
    }];
  })));
}

/** `GET /api/v1/streams`. */
async function apiStreams(ports) {
  const response = await fetch(`http://${ports.http}/api/v1/streams`);
  assert.equal(response.status, 200);
  return (await response.json()).streams;
}

/** Submits the New stream form and waits for its error or the new row. */
async function createStream(page, fields) {
  await page.fill('#stream-name', fields.name);
  await page.fill('#stream-filters', fields.filters || '');
  await page.fill('#stream-max-age', fields.maxAge || '');
  await page.fill('#stream-max-bytes', fields.maxBytes || '');
  await page.click('#stream-create');
  // The button is disabled while the request runs.
  await page.waitForFunction(() => !document.querySelector('#stream-create').disabled, null, { timeout: WAIT });
}

async function testStreams(page, ports, expectedErrors) {
  const NAME = 'browser_kept';
  const rowOf = (name) => page.locator(`#streams-list tbody tr[data-stream="${name}"]`);
  const deleteRequests = [];
  page.on('request', (request) => {
    if (request.method() === 'DELETE') deleteRequests.push(request.url());
  });

  await page.click('#tab-streams');
  await rowOf('events').waitFor({ timeout: WAIT });
  let list = await readStreamsList(page);
  assert.equal(list.events.origin, 'config');
  assert.equal(list.events.deletable, false, 'a config-file stream has no Delete button');
  step('streams: events listed with origin config, no Delete button');

  // A bad name: the server's 400 and its text, under the form.
  expectedErrors.push(/status of 400 .*\/api\/v1\/streams\)$/);
  await createStream(page, { name: '9bad' });
  assert.ok(await page.isVisible('#stream-form-error'));
  assert.match(await page.textContent('#stream-form-error'), /invalid stream name "9bad": use a letter/);
  assert.ok(!(await apiStreams(ports)).some((s) => s.name === '9bad'));
  step('streams: bad name refused, server error shown');

  // Created through the form: listed, selected, and served by the API.
  await createStream(page, { name: NAME, filters: 'browser/kept/#, browser/also/+', maxAge: '2h', maxBytes: '10MiB' });
  await rowOf(NAME).waitFor({ timeout: WAIT });
  assert.ok(await page.isHidden('#stream-form-error'), 'a success clears the form error');
  assert.equal(await page.inputValue('#stream-name'), '', 'a success empties the form');
  assert.equal(await page.textContent('#records-stream'), NAME, 'the new stream is selected');
  assert.match(await rowOf(NAME).getAttribute('class'), /\bselected\b/);
  list = await readStreamsList(page);
  assert.deepEqual(list[NAME], { origin: 'api', filters: 'browser/kept/#, browser/also/+', messages: '0', deletable: true });
  const created = (await apiStreams(ports)).find((s) => s.name === NAME);
  assert.ok(created, `GET /api/v1/streams lists ${NAME}`);
  assert.equal(created.origin, 'api');
  assert.deepEqual(created.filters, ['browser/kept/#', 'browser/also/+']);
  assert.deepEqual(created.retention, { max_age_ms: 2 * 3600 * 1000, max_bytes: 10 * 1024 * 1024 });
  step(`streams: ${NAME} created through the form`);

  // The same name again: the server's 409.
  expectedErrors.push(/status of 409 .*\/api\/v1\/streams\)$/);
  await createStream(page, { name: NAME });
  assert.ok(await page.isVisible('#stream-form-error'));
  assert.match(await page.textContent('#stream-form-error'), new RegExp(`a stream named "${NAME}" exists`));
  await page.fill('#stream-name', '');
  assert.ok(await page.isHidden('#stream-form-error'), 'editing the form clears its error');
  step('streams: duplicate refused, server error shown');

  // A message on a topic it keeps is counted, and readable in the records.
  const published = await fetch(`http://${ports.http}/api/v1/publish/browser/kept/one?qos=1`, {
    method: 'POST',
    body: JSON.stringify({ kept: true }),
  });
  assert.equal(published.status, 200);
  assert.ok((await published.json()).stored.some((s) => s.stream === NAME), `the message is stored in ${NAME}`);
  await page.waitForFunction((name) => {
    const row = document.querySelector(`#streams-list tbody tr[data-stream="${name}"]`);
    return row && row.querySelectorAll('td')[3].textContent === '1';
  }, NAME, { timeout: WAIT });
  assert.equal((await apiStreams(ports)).find((s) => s.name === NAME).stats.messages, 1);
  await page.click('#records-load');
  await page.locator('#records-table tbody td', { hasText: /^browser\/kept\/one$/ }).waitFor({ timeout: WAIT });
  step('streams: published message counted and shown in its records');
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-streams.png'), fullPage: true });

  // A refused deletion shows the server's text. Being in use needs a NATS
  // bridge, so this one answer is simulated (the real 409 for config
  // streams has no button to reach it).
  const inUse = `cannot delete stream "${NAME}": it is in use by nats bridge "edge" (outbound)`;
  const deleteUrl = `http://${ports.http}/api/v1/streams/${NAME}`;
  await page.route(deleteUrl, (route) => (route.request().method() === 'DELETE'
    ? route.fulfill({ status: 409, contentType: 'application/json', body: JSON.stringify({ error: inUse }) })
    : route.continue()));
  expectedErrors.push(new RegExp(`status of 409 .*/api/v1/streams/${NAME}\\)$`));
  page.once('dialog', (dialog) => dialog.accept());
  await rowOf(NAME).locator('button', { hasText: 'Delete' }).click();
  await page.waitForFunction(() => !document.querySelector('#streams-error').hidden, null, { timeout: WAIT });
  assert.equal(await page.textContent('#streams-error'), `Could not delete stream ${NAME}: ${inUse}`);
  await page.unroute(deleteUrl);
  assert.ok(await rowOf(NAME).isVisible(), 'a refused deletion keeps the row');
  step('streams: refused deletion (simulated 409 in use) shown');

  // Dismissing the confirmation sends nothing.
  page.once('dialog', (dialog) => dialog.dismiss());
  await rowOf(NAME).locator('button', { hasText: 'Delete' }).click();
  assert.equal(deleteRequests.length, 1, 'no DELETE after a dismissed confirmation');

  // Deleted through the UI: gone from the list and from the API.
  let question = '';
  page.once('dialog', (dialog) => { question = dialog.message(); dialog.accept(); });
  await rowOf(NAME).locator('button', { hasText: 'Delete' }).click();
  await rowOf(NAME).waitFor({ state: 'detached', timeout: WAIT });
  assert.equal(question, `Delete stream "${NAME}" and its 1 record? This cannot be undone.`);
  assert.equal(deleteRequests.length, 2);
  assert.ok(await page.isHidden('#streams-error'), 'a deletion clears the earlier error');
  assert.notEqual(await page.textContent('#records-stream'), NAME, 'the deleted stream is no longer selected');
  assert.equal((await fetch(deleteUrl)).status, 404);
  assert.ok(!(await apiStreams(ports)).some((s) => s.name === NAME));
  // Still gone after the next refresh of the list.
  await page.waitForTimeout(3500);
  assert.equal(await rowOf(NAME).count(), 0);
  step(`streams: ${NAME} deleted through the UI, GET answers 404`);
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-streams-deleted.png'), fullPage: true });
}

async function testDashboards(page, ports) {
  const { dashboards } = await (await fetch(`http://${ports.http}/api/v1/dashboards`)).json();
  const demo = dashboards.find((d) => d.id === 'edge-demo');
  assert.ok(demo, 'edge-demo dashboard is served');
  await page.click('#tab-dashboards');
  await page.selectOption('#dashboard-select', 'edge-demo');
  await page.waitForFunction((n) => document.querySelectorAll('#dashboard-panels .panel').length === n, demo.panels.length, { timeout: WAIT });
  const titles = await page.$$eval('#dashboard-panels .panel', (panels) => panels.map((p) => p.dataset.title));
  assert.deepEqual(titles, demo.panels.map((p) => p.title));
  // Every SQL panel gets a first answer without an error.
  const sqlPanels = demo.panels.filter((p) => p.sql).length;
  await page.waitForFunction((n) => document.querySelectorAll('#dashboard-panels .panel[data-state="ok"]').length >= n, sqlPanels, { timeout: WAIT });
  assert.equal(await page.locator('#dashboard-panels .panel[data-state="error"]').count(), 0);
  step(`dashboards: ${demo.panels.length} panels rendered`);
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-dashboards.png'), fullPage: true });
}

async function testOverview(page) {
  await page.click('#tab-overview');
  await page.locator('#overview-streams tbody td a', { hasText: 'events' }).waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelector('#overview-rate-in').textContent !== '–', null, { timeout: WAIT });
  await page.locator('#overview-chart canvas').first().waitFor({ timeout: WAIT });
  step('overview: cards, chart and streams shown');
  await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-overview.png'), fullPage: true });
}

/** The default: anonymous access on a loopback listener, no login. */
async function anonymousScenario(browser) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-browser-'));
  const server = startServer(dataDir);
  try {
    const ports = await server.ready;
    step(`server up: http ${ports.http}, mqtt ${ports.mqtt}`);
    // Demo-like readings, so the dashboard has something to chart.
    for (const temp of [21.0, 21.4, 21.9]) {
      const response = await fetch(`http://${ports.http}/api/v1/publish/demo/sensors/sensor-01?qos=1`, {
        method: 'POST',
        body: JSON.stringify({ device: 'sensor-01', temp, humidity: 45.0, battery: 3.7 }),
      });
      assert.equal(response.status, 200);
    }

    const { page, log } = await openPage(browser);
    const { errors, expectedErrors } = log;

    await page.goto(`http://${ports.http}/`);
    await page.waitForFunction(() => document.querySelector('#ws-status').textContent === 'connected', null, { timeout: WAIT });
    step('page loaded, /ws connected');

    await testTail(page, ports);
    await testSql(page, expectedErrors);
    await testStreams(page, ports, expectedErrors);
    await testDashboards(page, ports);
    await testOverview(page);

    assert.ok(await page.isHidden('#login'), 'no sign-in prompt with anonymous access');
    assert.ok(await page.isHidden('#sign-out'), 'not signed in');
    step('anonymous: never asked to sign in');

    assert.deepEqual(errors, [], 'the browser logged errors');
  } finally {
    await stopServer(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// A server that requires a login.

const USER = 'viewer';
// Characters that need URL- and UTF-8-encoding, in the header and on /ws.
const PASSWORD = 's3cr3t &=+?ü';
const TOKEN = 'browser-test-token';

/** `tidewire hash-password`: the PHC string of `secret`. */
function hashPassword(secret) {
  return execFileSync(BIN, ['hash-password'], { input: `${secret}\n`, timeout: WAIT }).toString().trim();
}

const basic = (user, password) => `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;

/** Publishes over HTTP as `viewer`. */
async function httpPublish(ports, topic, body) {
  const response = await fetch(`http://${ports.http}/api/v1/publish/${topic}?qos=1`, {
    method: 'POST',
    headers: { authorization: basic(USER, PASSWORD) },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, `publish ${topic}: ${await response.text()}`);
}

async function waitForSocket(page) {
  await page.waitForFunction(() => document.querySelector('#ws-status').textContent === 'connected', null, { timeout: WAIT });
}

async function signIn(page, { user, password, token }) {
  await page.check(token ? '#login-kind-token' : '#login-kind-user');
  if (token) {
    await page.fill('#login-token', token);
  } else {
    await page.fill('#login-username', user);
    await page.fill('#login-password', password);
  }
  await page.click('#login-submit');
}

/** `[auth] allow_anonymous = false` with a user (sql, admin) and an API
 *  token (sql only): the page asks for a login, refuses a wrong password,
 *  then works signed in (streams, SQL, the live tail over /ws); a token
 *  without admin gets the server's 403 as an error, not a new prompt. */
async function loginScenario(browser) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-browser-auth-'));
  const configFile = join(dataDir, 'tidewire.toml');
  writeFileSync(configFile, `[auth]
allow_anonymous = false

[[users]]
username = "${USER}"
password_hash = "${hashPassword(PASSWORD)}"
sql = ["*"]
admin = true

[[tokens]]
name = "reader"
token_hash = "${hashPassword(TOKEN)}"
sql = ["*"]
`);
  const server = startServer(join(dataDir, 'data'), configFile);
  try {
    const ports = await server.ready;
    step(`login: server up: http ${ports.http}, mqtt ${ports.mqtt}`);
    const anonymous = await fetch(`http://${ports.http}/api/v1/streams`);
    assert.equal(anonymous.status, 401, 'the API refuses anonymous requests');
    await httpPublish(ports, 'auth/seed', { seeded: true });

    const { page, log } = await openPage(browser);
    const socketUrls = [];
    page.on('websocket', (ws) => socketUrls.push(ws.url()));
    // Refused requests (401 to fetch, and the /ws handshake) are logged by
    // Chromium; they are expected until the page is signed in.
    const REFUSED = /status of 401 |\/ws(\?[^']*)?' failed: (HTTP Authentication failed|.*response code: 401)/;
    log.tolerate = REFUSED;

    await page.goto(`http://${ports.http}/`);
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await page.textContent('#login-reason'), /requires a login/);
    assert.equal(await page.textContent('#ws-status'), 'disconnected');
    assert.ok(await page.isVisible('#login-username'));
    assert.ok(await page.isHidden('#login-cancel'), 'a required sign-in cannot be cancelled');
    assert.ok(await page.isHidden('#login-sign-out'), 'nothing to sign out of');
    step('login: prompt shown');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-login.png') });

    await signIn(page, { user: USER, password: 'wrong password' });
    await page.locator('#login-error').waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await page.textContent('#login-error'), /bad credentials/);
    assert.ok(await page.isVisible('#login'), 'a wrong password keeps the dialog open');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tidewire.credentials')), null);
    step('login: wrong password refused with "bad credentials"');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-login-failed.png') });

    await signIn(page, { user: USER, password: PASSWORD });
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await waitForSocket(page);
    log.tolerate = null;
    assert.equal(await page.textContent('#account-name'), USER);
    assert.ok(await page.isVisible('#sign-out'));
    const socketUrl = new URL(socketUrls[socketUrls.length - 1]);
    assert.equal(socketUrl.searchParams.get('username'), USER);
    assert.equal(socketUrl.searchParams.get('password'), PASSWORD, '/ws gets the password URL-encoded');
    step('login: signed in, /ws connected with the credentials');

    await page.click('#tab-streams');
    await page.locator('#streams-list tbody tr[data-stream="events"]').waitFor({ timeout: WAIT });
    assert.ok(await page.isHidden('#streams-error'));
    step('login: streams listed');

    await page.click('#tab-sql');
    await runQuery(page, 'SELECT topic, count(*) AS n FROM events GROUP BY topic ORDER BY topic');
    assert.equal(await page.textContent('#sql-error'), '');
    const table = await readSqlTable(page);
    assert.ok(table.rows.some((r) => r[0] === 'auth/seed' && r[1] === '1'), `no row auth/seed 1 in ${JSON.stringify(table.rows)}`);
    step('login: SQL query ran');

    await page.click('#tab-tail');
    await page.fill('#tail-filter', 'browser/#');
    await page.click('#tail-subscribe');
    await page.waitForFunction(() => document.querySelector('#tail-status').textContent === 'subscribed to browser/#', null, { timeout: WAIT });
    await httpPublish(ports, 'browser/auth', { signed: 'in' });
    const row = page.locator('.tail-message', { has: page.locator('.tail-topic', { hasText: /^browser\/auth$/ }) });
    await row.first().waitFor({ timeout: WAIT });
    assert.match(await row.first().locator('.tail-payload').textContent(), /signed/);
    step('login: live tail shows a message published over HTTP');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-login-tail.png'), fullPage: true });

    // The credentials last for the tab: a reload asks nothing.
    await page.reload();
    await waitForSocket(page);
    await page.click('#tab-overview');
    await page.locator('#overview-streams tbody td a', { hasText: 'events' }).waitFor({ timeout: WAIT });
    assert.ok(await page.isHidden('#login'));
    assert.equal(await page.textContent('#account-name'), USER);
    step('login: still signed in after a reload');

    // Signing out forgets them; this server then asks again.
    log.tolerate = REFUSED;
    await page.click('#sign-out');
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tidewire.credentials')), null);
    assert.ok(await page.isVisible('#sign-in'));
    step('login: signed out, asked again');

    // An API token without admin: signed in, and a refused action is an
    // error in its place (403), not a new prompt.
    await signIn(page, { token: TOKEN });
    await page.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    await waitForSocket(page);
    log.tolerate = null;
    assert.equal(await page.textContent('#account-name'), 'API token');
    assert.equal(new URL(socketUrls[socketUrls.length - 1]).searchParams.get('token'), TOKEN);
    await page.click('#tab-streams');
    await page.locator('#streams-list tbody tr[data-stream="events"]').waitFor({ timeout: WAIT });
    log.expectedErrors.push(/status of 403 .*\/api\/v1\/streams\)$/);
    await createStream(page, { name: 'denied' });
    assert.ok(await page.isVisible('#stream-form-error'));
    assert.match(await page.textContent('#stream-form-error'), /not allowed to create streams \(the admin permission\)/);
    assert.ok(await page.isHidden('#login'), 'a 403 does not ask to sign in again');
    step('login: API token signed in; its 403 shown as an error');
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-login-forbidden.png'), fullPage: true });

    // Kept credentials the server no longer takes: asked again, and while
    // the dialog waits the pollers send nothing (no stream of failed logins).
    log.tolerate = REFUSED;
    const refused = [];
    page.on('response', (response) => { if (response.status() === 401) refused.push(response.url()); });
    await page.evaluate(() => sessionStorage.setItem('tidewire.credentials', JSON.stringify({ username: 'viewer', password: 'changed' })));
    await page.reload();
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await page.textContent('#login-reason'), /no longer accepts these credentials \(bad credentials\)/);
    await page.waitForTimeout(500);
    const before = refused.length;
    await page.waitForTimeout(3500); // longer than the 3 s list refresh
    assert.deepEqual(refused.slice(before), [], 'no requests while the dialog waits');
    // Its Sign out forgets them; this server then asks for a login.
    await page.click('#login-sign-out');
    await page.waitForFunction(() => /requires a login/.test(document.querySelector('#login-reason').textContent), null, { timeout: WAIT });
    assert.ok(await page.isVisible('#login'));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tidewire.credentials')), null);
    step(`login: stale credentials asked again (${before} refused requests, then none), Sign out forgets them`);

    assert.ok(log.tolerated > 0, 'the refused requests before signing in were seen');
    assert.deepEqual(log.expectedErrors, [], 'every expected error happened');
    assert.deepEqual(log.errors, [], 'the browser logged errors');
  } finally {
    await stopServer(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox'],
  });
  let passed = 0;
  let failed = 0;
  try {
    for (const scenario of [anonymousScenario, loginScenario, queuesScenario, topicsScenario, exportsScenario]) {
      try {
        await scenario(browser);
        passed += 1;
      } catch (error) {
        console.error(`${scenario.name}:`, error);
        failed += 1;
      }
    }
  } finally {
    await browser.close();
  }
  console.log(`browser: ${passed} passed, ${failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  if (failed) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error);
  console.log('browser: 0 passed, 1 failed');
  process.exitCode = 1;
});
