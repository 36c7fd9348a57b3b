// Headless-browser test of the dashboard served by a real tidewire binary:
// starts the server on free ports, drives the page with playwright-core and
// the system Chromium, publishes over real MQTT with `tidewire pub`, and
// fails on any failed assertion or browser console error.
//
//   npm ci --prefix tests/browser
//   node tests/browser/dashboard.test.mjs
//
// Environment: TIDEWIRE_BIN (default ${CARGO_TARGET_DIR:-target}/debug/tidewire
// under the repository root), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT_DIR (default target/browser).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = resolve(ROOT, process.env.TIDEWIRE_BIN
  || join(process.env.CARGO_TARGET_DIR || 'target', 'debug', 'tidewire'));
const SCREENSHOTS = resolve(ROOT, process.env.SCREENSHOT_DIR || 'target/browser');
const WAIT = 10_000;

const started = Date.now();
const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);

/** Starts `tidewire serve` on port 0; resolves once both listeners are up. */
function startServer(dataDir) {
  const child = spawn(BIN, ['serve', '--data-dir', dataDir,
    '--http-listen', '127.0.0.1:0', '--mqtt-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-4000); });
  const ready = new Promise((resolvePorts, reject) => {
    const ports = {};
    const timer = setTimeout(() => reject(new Error(`server not ready in 20 s; stderr:\n${stderr}`)), 20_000);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}; stderr:\n${stderr}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^(mqtt|http) listening on (\S+)$/.exec(line);
      if (match) ports[match[1]] = match[2];
      if (ports.mqtt && ports.http) {
        clearTimeout(timer);
        resolvePorts(ports);
      }
    });
  });
  return { child, ready };
}

/** Stops the server: SIGTERM, then SIGKILL if it lingers. */
async function stopServer(child) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((done) => child.once('exit', done));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

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

async function main() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), 'tidewire-browser-'));
  const server = startServer(dataDir);
  let browser;
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

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless=new', '--no-sandbox'],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = [];
    const expectedErrors = [];
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const text = `${message.text()} (${message.location().url})`;
      // Each expected error excuses one message.
      const expected = expectedErrors.findIndex((pattern) => pattern.test(text));
      if (expected >= 0) expectedErrors.splice(expected, 1);
      else errors.push(`console: ${text}`);
    });
    page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));

    await page.goto(`http://${ports.http}/`);
    await page.waitForFunction(() => document.querySelector('#ws-status').textContent === 'connected', null, { timeout: WAIT });
    step('page loaded, /ws connected');

    await testTail(page, ports);
    await testSql(page, expectedErrors);
    await testDashboards(page, ports);
    await testOverview(page);

    assert.deepEqual(errors, [], 'the browser logged errors');
    console.log(`browser: 1 passed, 0 failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } finally {
    if (browser) await browser.close();
    await stopServer(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  console.log('browser: 0 passed, 1 failed');
  process.exitCode = 1;
});
