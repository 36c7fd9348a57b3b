// tidewire dashboard: the Exports page (#exports). One card per export
// from `GET /api/v1/exports`, refreshed every 2 s: the stream and where
// its Parquet files go, the partition template, the projection and
// filter, and its figures (records, files and bytes written, records per
// second counted between two refreshes, the lag, losses, failures, when
// the next flush is due, the last file and the last error), the columns
// of its files, a New export form and Delete for what the API made (the
// config file's are changed there). Cards are updated in place, so an
// open column list keeps open and a button its focus across refreshes.
//
// Loaded after app.js and cards.js, whose helpers it uses ($, el, fill,
// showError, notify, api, views and the formatters; the list, card,
// rate and form helpers). Server text only ever goes in through
// textContent; the markup below is static.
'use strict';

views.exports = (() => {
  const NOTHING = '—';     // a figure with nothing to show
  const cards = keyedViews((x) => makeCard(x.name)); // one per export (see makeCard)
  let streamNames = null;  // the stream picker's names, as last drawn

  const PAGE = template(`
    <div class="box">
      <h2>Exports <span class="muted">every 2 s; each export copies a stream's records into Parquet files, each record in exactly one file; records/s: between the last two refreshes</span></h2>
      <p class="error" id="exports-error" hidden></p>
      <form class="toolbar stream-form" id="export-form">
        <span class="form-title">New export</span>
        <label class="field">Name <input id="export-name" class="short" required maxlength="128" spellcheck="false" autocomplete="off" placeholder="lake" title="letters, digits, - and _; names its files"></label>
        <label class="field">Stream <select id="export-stream" required title="the stream whose records are exported"><option value="">loading…</option></select></label>
        <label class="field grow">URL <input id="export-url" required spellcheck="false" autocomplete="off" placeholder="file:///var/lib/tidewire-lake or s3://bucket/prefix" title="a directory the broker can write, or an S3 bucket and prefix"></label>
        <label class="field">Max bytes <input id="export-max-bytes" class="short" spellcheck="false" autocomplete="off" placeholder="64MiB" title="flush when this much is buffered (1KiB to 1GiB); empty: 64MiB"></label>
        <label class="field">Max interval <input id="export-max-interval" class="short" spellcheck="false" autocomplete="off" placeholder="5m" title="... or this long after the first buffered record (100ms to 24h); empty: 5m"></label>
        <label class="field grow">Partition <input id="export-partition" class="mono" spellcheck="false" autocomplete="off" value="dt={ts:%Y-%m-%d}/hour={ts:%H}" placeholder="none: every file in the URL's directory" title="the directories under the URL, from each record's broker time: {ts:FORMAT} with strftime's FORMAT; empty for none"></label>
        <label class="field grow">Select <input id="export-select" class="mono" spellcheck="false" autocomplete="off" placeholder="every column; e.g. &quot;offset&quot;, ts, topic, temp" title="optional: a SQL SELECT list over the stream's columns"></label>
        <label class="field grow">Where <input id="export-where" class="mono" spellcheck="false" autocomplete="off" placeholder="every record; e.g. temp > 30" title="optional: a SQL condition; only the records it holds for are exported"></label>
        <button id="export-create" type="submit" class="primary">Create</button>
      </form>
      <p class="error" id="export-form-error" hidden></p>
    </div>
    <div id="exports-list" class="export-cards"><p class="muted">loading…</p></div>`);

  const CARD = cardTemplate('export', `
      <div class="statusline export-facts">
        <span><span class="mono export-stream"></span> → <span class="mono export-url"></span></span>
        <span>partition <span class="export-partition"></span></span>
        <span class="export-flush"></span>
        <span class="export-select" hidden>select <span class="mono"></span></span>
        <span class="export-where" hidden>where <span class="mono"></span></span>
      </div>
      <p class="error export-error" hidden></p>
      <div class="export-figures">
        <div class="figure records"><span class="figure-label">Records</span><span class="figure-value"></span><span class="figure-sub rate"></span></div>
        <div class="figure files"><span class="figure-label">Files</span><span class="figure-value"></span></div>
        <div class="figure bytes"><span class="figure-label">Bytes</span><span class="figure-value"></span></div>
        <div class="figure lag"><span class="figure-label">Lag</span><span class="figure-value"></span><span class="figure-sub lag-seconds"></span></div>
        <div class="figure lost"><span class="figure-label">Lost</span><span class="figure-value"></span></div>
        <div class="figure failures"><span class="figure-label">Failures</span><span class="figure-value"></span></div>
        <div class="figure next-flush"><span class="figure-label">Next flush</span><span class="figure-value"></span></div>
      </div>
      <dl class="export-last">
        <dt>Last file</dt><dd class="mono last-file"></dd>
        <dt>Last error</dt><dd class="last-error"></dd>
      </dl>
      <details class="export-columns">
        <summary></summary>
        <div class="table-wrap">
          <table class="grid"><thead><tr><th>Column</th><th>Type</th></tr></thead><tbody></tbody></table>
        </div>
      </details>`);

  $('#view-exports').append(PAGE.content.cloneNode(true));

  const loadList = listLoader('exports', {
    error: $('#exports-error'),
    shown: (list) => cards.show($('#exports-list'), list, () => el('p', { class: 'muted box', text: 'no exports: New export above adds one' }), Date.now()),
  });

  /** The stream picker's options from `GET /api/v1/streams`, redrawn only
   *  when the names change (an open picker is left alone otherwise); the
   *  chosen stream stays chosen while it exists. */
  async function loadStreams() {
    let streams;
    try {
      ({ streams } = await api('/api/v1/streams'));
    } catch (e) {
      // Until a first list, the picker says why it is empty; after one,
      // it keeps the names it has (the list's error shows the outage).
      if (!streamNames) fill($('#export-stream'), el('option', { value: '', text: 'could not list streams', title: e.message }));
      return;
    }
    const names = streams.map((s) => s.name);
    if (streamNames && names.join('\n') === streamNames.join('\n')) return;
    streamNames = names;
    const picker = $('#export-stream');
    const chosen = picker.value;
    fill(picker, names.length
      ? names.map((name) => el('option', { value: name, text: name }))
      : el('option', { value: '', text: 'no streams' }));
    if (names.includes(chosen)) picker.value = chosen;
  }

  /** When the next flush is due, relative to `now` (ms since the epoch). */
  function nextFlushText(ts, now) {
    if (ts === null || ts === undefined) return NOTHING;
    const ms = ts - now;
    return ms > 0 ? `in ${formatAge(ms)}` : `due ${formatAge(-ms)} ago`;
  }

  /** A card that keeps its elements; update() sets them. */
  function makeCard(name) {
    let exp = null;
    const { node, part, showOrigin } = newCard(CARD, 'export', name, {
      deleteTitle: `stop export ${name} and forget its cursor; its files stay`,
      onDelete: () => remove(exp, error),
      deletable: 'can be deleted (its files stay)',
    });
    const figure = (cls) => part(`.figure.${cls} .figure-value`);
    const error = part('.export-error');
    const drawDefinition = drawWhenChanged(definitionParts);
    const meter = rateMeter();

    function update(x, now) {
      exp = x;
      drawDefinition(x, [x.definition, x.origin, x.columns]);
      const { stats } = x;

      const { records: rate } = meter.update(now / 1000, { records: stats.records });
      setText(figure('records'), formatNumber(stats.records), 'records written to completed files (again after a crash included)');
      setText(part('.figure.records .rate'), rateText(rate), 'records written per second between the last two refreshes');
      setText(figure('files'), formatNumber(stats.files), 'files completed');
      setText(figure('bytes'), formatBytes(stats.bytes), `${formatNumber(stats.bytes)} bytes in completed files`);
      setText(figure('lag'), plural(stats.lag_records, 'record'), `records not yet in a completed file; the next to export is offset ${stats.cursor}`);
      setText(part('.figure.lag .lag-seconds'), stats.lag_seconds > 0 ? formatAge(stats.lag_seconds * 1000) : '0 s',
        'the lag in seconds of broker time');
      setText(figure('lost'), formatNumber(stats.lost), "records the stream's retention removed before they were exported");
      part('.figure.lost').classList.toggle('bad', stats.lost > 0);
      setText(figure('failures'), formatNumber(stats.failures), 'flushes that failed (each is retried)');
      part('.figure.failures').classList.toggle('bad', stats.failures > 0);
      setText(figure('next-flush'), nextFlushText(stats.next_flush_ts, now),
        stats.next_flush_ts === null ? 'nothing is buffered' : `at ${formatTime(stats.next_flush_ts)} at the latest (or once max bytes are buffered)`);
      const lastFile = part('.last-file');
      setText(lastFile, stats.last_file || NOTHING, stats.last_file ? `${x.definition.url.replace(/\/+$/, '')}/${stats.last_file}` : 'no file written yet');
      lastFile.classList.toggle('muted', !stats.last_file);
      showLastError(part('.last-error'), stats.last_error, NOTHING);
    }

    /** What follows from the definition, origin and columns. */
    function definitionParts(x) {
      const def = x.definition;
      showOrigin(x.origin);
      setText(part('.export-stream'), def.stream, 'the stream exported');
      setText(part('.export-url'), def.url, 'where the files go');
      const partition = part('.export-partition');
      setText(partition, def.partition || 'none', def.partition
        ? "directories from each record's broker time"
        : "none: every file in the URL's directory");
      partition.classList.toggle('mono', Boolean(def.partition));
      partition.classList.toggle('muted', !def.partition);
      setText(part('.export-flush'), `flush at ${def.max_bytes} or ${def.max_interval} after the first record`,
        `${def.row_group_rows} rows per row group, zstd`);
      for (const [cls, value] of [['select', def.select], ['where', def.where]]) {
        const fact = part(`.export-${cls}`);
        fact.hidden = !value;
        setText(fact.lastElementChild, value || '');
      }
      setText(part('.export-columns summary'), `Columns of its files (${x.columns.length})`);
      fill(part('.export-columns tbody'), x.columns.map((c) => el('tr', { dataset: { column: c.name } },
        el('td', { class: 'mono', text: c.name }),
        el('td', { class: 'mono muted', text: c.type }))));
    }

    return { node, update };
  }

  // New export and delete.

  /** The form as an `[[exports]]` definition; empty optional fields are
   *  left to the server's defaults, but an empty partition means none. */
  function definition() {
    const value = (id) => $(id).value.trim();
    const body = { name: value('#export-name'), stream: $('#export-stream').value, url: value('#export-url') };
    const maxBytes = value('#export-max-bytes');
    if (maxBytes) body.max_bytes = /^\d+$/.test(maxBytes) ? Number(maxBytes) : maxBytes;
    if (value('#export-max-interval')) body.max_interval = value('#export-max-interval');
    body.partition = value('#export-partition');
    if (value('#export-select')) body.select = value('#export-select');
    if (value('#export-where')) body.where = value('#export-where');
    return body;
  }

  sendsForm($('#export-form'), {
    error: $('#export-form-error'),
    failed: 'Could not create the export',
    send: () => postBody('/api/v1/exports', definition()),
    async done(body) {
      const stream = $('#export-stream').value;
      $('#export-form').reset();
      $('#export-stream').value = stream;
      notify(`Export ${body.name} created: ${body.stream} → ${body.url}.`);
      await loadList();
    },
  });

  function remove(exp, error) {
    if (!exp) return;
    const { stats } = exp;
    const files = stats.files ? ` What it wrote stays in ${exp.definition.url} (${plural(stats.files, 'file')}).` : '';
    const pending = stats.lag_records ? ` Its ${plural(stats.lag_records, 'record')} not yet in a file will not be exported.` : '';
    confirmed(`Delete export "${exp.name}"? It stops and forgets its cursor.${files}${pending} This cannot be undone.`, {
      path: `/api/v1/exports/${encodeURIComponent(exp.name)}`,
      done: `Export ${exp.name} deleted.`,
      failed: `Could not delete export ${exp.name}`,
      error,
      reload: loadList,
    });
  }

  return polledView(() => Promise.all([loadList(), loadStreams()]));
})();
