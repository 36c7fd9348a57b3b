// The Exports page against a real binary: a config with a stream
// `browser-readings` (typed `temp` and `site` columns) and a config export
// `browser-archive` of it that flushes only after 10 minutes. In the
// browser: the config export (no Delete, its columns, nothing written);
// the New export form showing the server's 400 for a `select` naming a
// missing column (nothing created), then making `browser-lake` to a temp
// directory with a projection and a filter; records published with
// `POST /api/v1/publish/...` until the page shows them written (records,
// files > 0, lag 0, a records/s rate, the last file), the Parquet files
// checked on disk; a destination made unwritable (the failures
// highlighted, the error cut and whole on hover) and then repaired (the
// records written after the retry); the config export's lag and next
// flush in minutes; Delete behind its confirmation (the files stay).

import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { SCREENSHOTS, WAIT, assertNoBrowserErrors, call, clickConfirming, openView, step, submitForm, waitForText, watchText, withConfiguredServer } from './harness.mjs';

const STREAM = 'browser-readings';
const CONFIG_EXPORT = 'browser-archive';
const EXPORT = 'browser-lake';
const PUBLISHED = 30;
// Published while the destination cannot be written: all kept.
const MORE = 5;
// Readings 6.5 to 35.5: `temp > 20` keeps the last 16.
const temperature = (i) => i + 5.5;
const KEPT = Array.from({ length: PUBLISHED }, (_, i) => temperature(i + 1)).filter((t) => t > 20).length;

const CARD = (name) => `#exports-list article[data-export="${name}"]`;
const card = (page, name) => page.locator(CARD(name));

/** A card's facts, figures and shown buttons as their texts. */
function readCard(page, name) {
  return page.$eval(CARD(name), (article) => {
    const text = (selector) => article.querySelector(selector).textContent;
    const fact = (selector) => (article.querySelector(selector).hidden ? null : text(`${selector} .mono`));
    return {
      origin: text('.export-origin'),
      stream: text('.export-stream'),
      url: text('.export-url'),
      partition: text('.export-partition'),
      flush: text('.export-flush'),
      select: fact('.export-select'),
      where: fact('.export-where'),
      records: text('.figure.records .figure-value'),
      files: text('.figure.files .figure-value'),
      bytes: text('.figure.bytes .figure-value'),
      lag: text('.figure.lag .figure-value'),
      lagSeconds: text('.figure.lag .lag-seconds'),
      lost: text('.figure.lost .figure-value'),
      failures: text('.figure.failures .figure-value'),
      nextFlush: text('.figure.next-flush .figure-value'),
      lastFile: text('.last-file'),
      lastError: text('.last-error'),
      columns: [...article.querySelectorAll('.export-columns tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent).join(' ')),
      buttons: [...article.querySelectorAll('button')].filter((b) => !b.hidden).map((b) => b.textContent),
    };
  });
}

/** Publishes reading `i` over HTTP. */
async function publish(ports, i, temp) {
  const response = await fetch(`http://${ports.http}/api/v1/publish/browser/readings/r${i % 3}?qos=1`, {
    method: 'POST',
    body: JSON.stringify({ temp, site: `site-${i % 3}` }),
  });
  assert.equal(response.status, 200, await response.text());
}

/** Fills the New export form, submits it, and waits for its answer. */
function submitExport(page, fields) {
  return submitForm(page.locator('#export-form'), {
    '#export-name': fields.name,
    '#export-stream': fields.stream,
    '#export-url': fields.url,
    '#export-max-bytes': fields.maxBytes || '',
    '#export-max-interval': fields.maxInterval || '',
    ...(fields.partition === undefined ? {} : { '#export-partition': fields.partition }),
    '#export-select': fields.select || '',
    '#export-where': fields.where || '',
  });
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir) {
  return readdirSync(dir, { recursive: true }).map(String).filter((path) => statSync(join(dir, path)).isFile()).sort();
}

/** Checks the Parquet files in `dir` against a card and its export's
 *  stats: as many as the card shows, named by partition and offsets,
 *  their sizes adding up to the bytes written, the last file among them.
 *  Answers their paths. */
function checkFiles(dir, shown, stats) {
  const files = filesUnder(dir);
  assert.ok(files.length > 0, 'files in the directory');
  assert.equal(shown.files, String(files.length));
  assert.equal(stats.files, files.length);
  for (const file of files) {
    assert.match(file, new RegExp(`^dt=\\d{4}-\\d{2}-\\d{2}/hour=\\d{2}/${EXPORT}-\\d+-\\d+\\.parquet$`));
    assert.ok(isParquet(join(dir, file)), `${file} is Parquet`);
  }
  const bytes = files.reduce((sum, file) => sum + statSync(join(dir, file)).size, 0);
  assert.equal(stats.bytes, bytes, 'the bytes written are the files\' sizes');
  assert.ok(files.includes(shown.lastFile), `the last file ${shown.lastFile} is one of ${files}`);
  assert.equal(shown.lastFile, stats.last_file);
  return files;
}

/** Whether a file starts and ends with Parquet's magic `PAR1`. */
function isParquet(path) {
  const size = statSync(path).size;
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(4);
    const tail = Buffer.alloc(4);
    readSync(fd, head, 0, 4, 0);
    readSync(fd, tail, 0, 4, size - 4);
    return size > 8 && head.toString() === 'PAR1' && tail.toString() === 'PAR1';
  } finally {
    closeSync(fd);
  }
}

/** The config file, with the config export's directory in `dataDir`. */
const config = (dataDir) => `[[streams]]
name = "${STREAM}"
filters = ["browser/readings/#"]
[streams.schema]
temp = { type = "double", path = "temp" }
site = { type = "varchar", path = "site" }

[[exports]]
name = "${CONFIG_EXPORT}"
stream = "${STREAM}"
url = "file://${join(dataDir, 'archive')}"
max_interval = "10m"
partition = ""
`;

export async function exportsScenario(browser) {
  await withConfiguredServer('exports', config, async ({ ports, dataDir }) => {
    const lake = join(dataDir, 'lake');
    const archive = join(dataDir, 'archive');
    mkdirSync(lake);
    const { page, log, requests } = await openView(browser, ports, 'exports');
    await card(page, CONFIG_EXPORT).waitFor({ timeout: WAIT });
    assert.ok(await page.locator('#tab-exports').evaluate((a) => a.classList.contains('active')), 'the Exports tab is the active one');
    await page.waitForFunction((s) => [...document.querySelectorAll('#export-stream option')].some((o) => o.value === s), STREAM, { timeout: WAIT });
    let shown = await readCard(page, CONFIG_EXPORT);
    assert.deepEqual({ ...shown, columns: undefined }, {
      origin: 'config', stream: STREAM, url: `file://${archive}`, partition: 'none',
      flush: 'flush at 64.0 MiB or 10m after the first record', select: null, where: null,
      records: '0', files: '0', bytes: '0 B', lag: '0 records', lagSeconds: '0 s', lost: '0', failures: '0',
      nextFlush: '—', lastFile: '—', lastError: '—', buttons: [], columns: undefined,
    }, 'a config export, nothing written, no Delete button');
    const columns = card(page, CONFIG_EXPORT).locator('.export-columns');
    assert.ok(await columns.locator('table').isHidden(), 'the columns start folded');
    assert.equal(await columns.locator('summary').textContent(), 'Columns of its files (10)');
    await columns.locator('summary').click();
    assert.ok(await columns.locator('table').isVisible());
    assert.deepEqual(shown.columns, [
      'offset Int64', 'ts Timestamp(ms, "UTC")', 'topic Utf8', 'client_id Utf8', 'qos Int8', 'retain Boolean',
      'payload Utf8', 'payload_bytes Binary', 'site Utf8', 'temp Float64',
    ]);
    step('exports: the config export shown (no Delete, nothing written, its 10 columns unfolded)');

    // A select naming a missing column: the server's 400 shows in the form.
    const createPath = 'POST /api/v1/exports';
    log.expectedErrors.push(/status of 400 .*\/api\/v1\/exports\)$/);
    const fields = {
      name: EXPORT, stream: STREAM, url: `file://${lake}`, maxBytes: '1MiB', maxInterval: '1s', select: '"offset", ts, nope',
    };
    await submitExport(page, fields);
    assert.ok(requests.includes(createPath));
    assert.ok(await page.isVisible('#export-form-error'));
    const refusal = await page.textContent('#export-form-error');
    assert.match(refusal, /^Could not create the export: export\.select: Schema error: No field named nope\./);
    assert.match(refusal, /Valid fields are .*input\.temp/);
    await call(ports, 'GET', `/api/v1/exports/${EXPORT}`, undefined, 404);
    assert.equal(await page.inputValue('#export-name'), EXPORT, 'a refusal keeps the form');
    step('exports: a select naming a missing column refused, the server\'s text shown in the form');

    await submitExport(page, { ...fields, select: '"offset", ts, topic, temp', where: 'temp > 20' });
    await card(page, EXPORT).waitFor({ timeout: WAIT });
    assert.ok(await page.isHidden('#export-form-error'), 'a success clears the error');
    assert.equal(await page.inputValue('#export-name'), '', 'a success empties the form');
    assert.equal(await page.inputValue('#export-stream'), STREAM, 'and keeps the stream');
    const created = await call(ports, 'GET', `/api/v1/exports/${EXPORT}`);
    assert.equal(created.origin, 'api');
    assert.deepEqual(created.definition, {
      name: EXPORT, stream: STREAM, url: `file://${lake}`, max_bytes: '1.0 MiB', max_interval: '1s',
      partition: 'dt={ts:%Y-%m-%d}/hour={ts:%H}', select: '"offset", ts, topic, temp', where: 'temp > 20', row_group_rows: 131072,
    });
    shown = await readCard(page, EXPORT);
    assert.deepEqual({ ...shown, lagSeconds: undefined }, {
      origin: 'api', stream: STREAM, url: `file://${lake}`, partition: 'dt={ts:%Y-%m-%d}/hour={ts:%H}',
      flush: 'flush at 1.0 MiB or 1s after the first record', select: '"offset", ts, topic, temp', where: 'temp > 20',
      records: '0', files: '0', bytes: '0 B', lag: '0 records', lagSeconds: undefined, lost: '0', failures: '0',
      nextFlush: '—', lastFile: '—', lastError: '—', buttons: ['Delete'],
      columns: ['offset Int64', 'ts Timestamp(ms, "UTC")', 'topic Utf8', 'temp Float64'],
    });
    step(`exports: ${EXPORT} created through the form (select and where shown, its 4 columns)`);

    // Records: every rate the card shows meanwhile is recorded.
    const rates = await watchText(page, `${CARD(EXPORT)} .figure.records .rate`);
    for (let i = 1; i <= PUBLISHED; i += 1) await publish(ports, i, temperature(i));
    await page.waitForFunction(([name, kept]) => {
      const article = document.querySelector(`#exports-list article[data-export="${name}"]`);
      const value = (cls) => article.querySelector(`.figure.${cls} .figure-value`).textContent;
      return value('records') === String(kept) && Number(value('files')) > 0 && value('lag') === '0 records';
    }, [EXPORT, KEPT], { timeout: WAIT });
    await rates.until(/^[1-9][\d.]*\/s$/);
    const seenRates = await rates.texts();
    shown = await readCard(page, EXPORT);
    let { stats } = await call(ports, 'GET', `/api/v1/exports/${EXPORT}`);
    assert.equal(stats.records, KEPT);
    assert.equal(stats.lag_records, 0);
    assert.equal(stats.cursor, PUBLISHED);
    const files = checkFiles(lake, shown, stats);
    assert.match(shown.bytes, /^(\d+ B|\d+\.\d+ KiB)$/);
    assert.equal(await card(page, EXPORT).locator('.last-file').getAttribute('title'), `file://${lake}/${shown.lastFile}`);
    assert.equal(shown.nextFlush, '—', 'nothing buffered');
    assert.deepEqual([shown.lost, shown.failures, shown.lastError], ['0', '0', '—']);
    step(`exports: ${PUBLISHED} records published, ${KEPT} exported (temp > 20) into ${files.length} Parquet file(s), ${shown.bytes}, lag 0 (rates seen: ${seenRates.join(' ')})`);

    // A destination that cannot be written: the directory is moved away
    // and a file put in its place. The flush fails and is retried; the
    // card shows the failures and the error (cut, whole on hover) until
    // the directory is back and the records are written.
    renameSync(lake, `${lake}.away`);
    writeFileSync(lake, 'not a directory');
    for (let i = 1; i <= MORE; i += 1) await publish(ports, PUBLISHED + i, 30 + i);
    await page.waitForFunction((name) => {
      const article = document.querySelector(`#exports-list article[data-export="${name}"]`);
      return article.querySelector('.figure.failures').classList.contains('bad') && !article.querySelector('.last-error').classList.contains('muted');
    }, EXPORT, { timeout: WAIT });
    shown = await readCard(page, EXPORT);
    ({ stats } = await call(ports, 'GET', `/api/v1/exports/${EXPORT}`));
    assert.ok(stats.failures > 0);
    assert.notEqual(shown.failures, '0');
    assert.equal(shown.records, String(KEPT), 'nothing more written');
    const lastError = card(page, EXPORT).locator('.last-error');
    const fullError = await lastError.getAttribute('title');
    assert.match(fullError, new RegExp(`${EXPORT}-${PUBLISHED}-\\d+\\.parquet: Not a directory`));
    assert.equal(stats.last_error, fullError);
    assert.ok(fullError.length > 60);
    assert.equal(shown.lastError, `${fullError.slice(0, 59)}…`, 'the last error is cut, whole on hover');
    step(`exports: an unwritable destination: ${shown.failures} failure(s) highlighted, the error cut (whole on hover: ${fullError})`);

    rmSync(lake);
    renameSync(`${lake}.away`, lake);
    // Retried with backoff (up to 30 s apart).
    await page.waitForFunction(([name, kept]) => {
      const article = document.querySelector(`#exports-list article[data-export="${name}"]`);
      const value = (cls) => article.querySelector(`.figure.${cls} .figure-value`).textContent;
      return value('records') === String(kept) && value('lag') === '0 records';
    }, [EXPORT, KEPT + MORE], { timeout: 40_000 });
    shown = await readCard(page, EXPORT);
    ({ stats } = await call(ports, 'GET', `/api/v1/exports/${EXPORT}`));
    assert.equal(stats.cursor, PUBLISHED + MORE);
    assert.equal(stats.lost, 0);
    const allFiles = checkFiles(lake, shown, stats);
    assert.ok(files.every((f) => allFiles.includes(f)) && allFiles.length > files.length, `new files beside the first: ${allFiles}`);
    step(`exports: the directory back, the ${MORE} records written after the retry: ${shown.records} records in ${allFiles.length} files, lag 0`);

    // The config export holds every record, due in about 10 minutes.
    await waitForText(page, `${CARD(CONFIG_EXPORT)} .figure.lag .figure-value`, `${PUBLISHED + MORE} records`);
    shown = await readCard(page, CONFIG_EXPORT);
    assert.match(shown.nextFlush, /^in 9 min \d{1,2} s$/);
    assert.equal(shown.files, '0');
    assert.deepEqual(readdirSync(archive), [], 'the config export has written nothing yet');
    step(`exports: ${CONFIG_EXPORT} shows a lag of ${shown.lag}, next flush ${shown.nextFlush}`);
    await page.screenshot({ path: join(SCREENSHOTS, 'dashboard-exports.png'), fullPage: true });

    // Delete: a dismissed confirmation sends nothing.
    const deletePath = `DELETE /api/v1/exports/${EXPORT}`;
    await clickConfirming(page, card(page, EXPORT).locator('.export-delete'), false);
    assert.ok(!requests.includes(deletePath), 'no deletion after a dismissed confirmation');
    const question = await clickConfirming(page, card(page, EXPORT).locator('.export-delete'), true);
    await card(page, EXPORT).waitFor({ state: 'detached', timeout: WAIT });
    const fileCount = `${allFiles.length} file${allFiles.length === 1 ? '' : 's'}`;
    assert.equal(question, `Delete export "${EXPORT}"? It stops and forgets its cursor. What it wrote stays in file://${lake} (${fileCount}). This cannot be undone.`);
    assert.ok(requests.includes(deletePath));
    await call(ports, 'GET', `/api/v1/exports/${EXPORT}`, undefined, 404);
    assert.deepEqual(filesUnder(lake), allFiles, 'its files stay');
    assert.ok(await card(page, CONFIG_EXPORT).isVisible(), 'the config export stays');
    assert.ok(await page.isHidden('#exports-error'));
    step(`exports: ${EXPORT} deleted after its confirmation, GET answers 404, its files stay in ${relative(dataDir, lake)}/`);

    assertNoBrowserErrors(log);
  });
}
