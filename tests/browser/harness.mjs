// What the browser scenarios share: where the binary and screenshots are,
// a step log, a `tidewire serve` on free ports, and a page that records
// the browser's console and page errors.

import { spawn } from 'node:child_process';
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
