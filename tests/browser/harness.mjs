// What the browser scenarios share: where the binary and screenshots are,
// a step log, a `tidewire serve` on free ports (bare, or with a config
// file in a temp directory), API calls, a page that records the browser's
// console and page errors and the requests it sends, and the steps the
// page scenarios repeat (forms, confirmations, texts seen over time).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = resolve(ROOT, process.env.TIDEWIRE_BIN
  || join(process.env.CARGO_TARGET_DIR || 'target', 'debug', 'tidewire'));
export const SCREENSHOTS = resolve(ROOT, process.env.SCREENSHOT_DIR || 'target/browser');
/** How long a step may wait for the page. */
export const WAIT = 10_000;

export const started = Date.now();
/** Prints one line per step, with the seconds since the start. */
export const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);

/** Starts `tidewire serve` on port 0 (with `--config configFile` if
 *  given); resolves once both listeners are up. */
export function startServer(dataDir, configFile) {
  const config = configFile ? ['--config', configFile] : [];
  const child = spawn(BIN, ['serve', ...config, '--data-dir', dataDir,
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
export async function stopServer(child) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((done) => child.once('exit', done));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** A page in a fresh browser context (its own sessionStorage) that
 *  records console and page errors. Each pattern pushed on
 *  `expectedErrors` excuses one message; while `tolerate` is set, the
 *  messages it matches are excused too. */
export async function openPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const log = { errors: [], expectedErrors: [], tolerate: null, tolerated: 0 };
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = `${message.text()} (${message.location().url})`;
    const expected = log.expectedErrors.findIndex((pattern) => pattern.test(text));
    if (expected >= 0) log.expectedErrors.splice(expected, 1);
    else if (log.tolerate && log.tolerate.test(text)) log.tolerated += 1;
    else log.errors.push(`console: ${text}`);
  });
  page.on('pageerror', (error) => log.errors.push(`page error: ${error.message}`));
  return { page, log };
}

/** Runs `scenario({ ports, dataDir })` against a `tidewire serve` with
 *  the config file `config(dataDir)` in a fresh temp directory (named
 *  after the scenario, `name`); then stops the server and removes the
 *  directory, whatever happened. */
export async function withConfiguredServer(name, config, scenario) {
  const dataDir = mkdtempSync(join(tmpdir(), `tidewire-browser-${name}-`));
  const configFile = join(dataDir, 'tidewire.toml');
  writeFileSync(configFile, config(dataDir));
  const server = startServer(join(dataDir, 'data'), configFile);
  try {
    const ports = await server.ready;
    step(`${name}: server up: http ${ports.http}, mqtt ${ports.mqtt}`);
    await scenario({ ports, dataDir });
  } finally {
    await stopServer(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The JSON answer of an API call, after checking its status. */
export async function call(ports, method, path, body, status = 200) {
  const response = await fetch(`http://${ports.http}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, status, `${method} ${path}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** openPage() on the server's page `#view`; `requests` lists the requests
 *  other than GET that the page sends (`METHOD /path`), so a step can
 *  check that nothing was sent. */
export async function openView(browser, ports, view) {
  const { page, log } = await openPage(browser);
  const requests = [];
  page.on('request', (request) => {
    if (request.method() !== 'GET') requests.push(`${request.method()} ${new URL(request.url()).pathname}`);
  });
  await page.goto(`http://${ports.http}/#${view}`);
  return { page, log, requests };
}

/** Fails on the page's console and page errors, and on expected errors
 *  that never came. */
export function assertNoBrowserErrors(log) {
  assert.deepEqual(log.expectedErrors, [], 'every expected error happened');
  assert.deepEqual(log.errors, [], 'the browser logged errors');
}

/** Fills the fields of `form` (a locator) by selector (a boolean checks a
 *  checkbox, a <select> gets its option picked, anything else is typed),
 *  clicks its submit button and waits until the button is enabled again:
 *  the page disables it while the request runs. */
export async function submitForm(form, fields) {
  for (const [selector, value] of Object.entries(fields)) {
    const field = form.locator(selector);
    if (typeof value === 'boolean') await field.setChecked(value);
    else if (await field.evaluate((node) => node.tagName === 'SELECT')) await field.selectOption(value);
    else await field.fill(value);
  }
  const button = form.locator('button[type="submit"]');
  await button.click();
  await form.page().waitForFunction((node) => !node.disabled, await button.elementHandle(), { timeout: WAIT });
}

/** Clicks `target` (a locator) and accepts (or dismisses) the
 *  confirmation it opens; answers the question asked. */
export async function clickConfirming(page, target, accept) {
  let question = null;
  page.once('dialog', (dialog) => {
    question = dialog.message();
    return accept ? dialog.accept() : dialog.dismiss();
  });
  await target.click();
  return question;
}

/** Waits until the node at `selector` shows `text`. */
export async function waitForText(page, selector, text) {
  await page.waitForFunction(([sel, value]) => {
    const node = document.querySelector(sel);
    return node !== null && node.textContent === value;
  }, [selector, text], { timeout: WAIT });
}

/** Records every text the node at `selector` shows from now on, from its
 *  current one: `until(pattern)` waits until one matches, `texts()`
 *  answers them all. */
export async function watchText(page, selector) {
  await page.evaluate((sel) => {
    const node = document.querySelector(sel);
    window.seenTexts = [node.textContent];
    new MutationObserver(() => window.seenTexts.push(node.textContent)).observe(node, { childList: true, characterData: true, subtree: true });
  }, selector);
  return {
    until: (pattern) => page.waitForFunction(([source, flags]) => window.seenTexts.some((t) => new RegExp(source, flags).test(t)),
      [pattern.source, pattern.flags], { timeout: WAIT }),
    texts: () => page.evaluate(() => window.seenTexts),
  };
}
