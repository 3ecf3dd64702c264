// evalflow's results page: runs, a run (timeline, scores, samples), and runs compared.
// It reads the runs API of the start function that serves it, with the login cookie.
// Everything a run holds is put on the page as text, never as HTML.

const main = document.getElementById('main');
const STATUSES = ['pending', 'verifying', 'deploying', 'running', 'storing', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const COLORS = ['#2f6fdf', '#e07b24', '#1f8a4c', '#8e44ad', '#c2362b', '#00838f', '#7f6a00', '#5d6d7e'];

// h builds an element: h('td', {class: 'num'}, 'text', child, ...). Strings are text.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class Unauthenticated extends Error {}

// api reads path from the API; an error answer throws its message.
async function api(path, opts = {}) {
  const r = await fetch(path, { headers: { Accept: 'application/json' }, credentials: 'same-origin', ...opts });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401) throw new Unauthenticated('not logged in');
  if (!r.ok) throw new Error((body && body.error && body.error.message) || `${r.status} ${r.statusText}`);
  return body;
}

function showError(err, where = main) {
  if (err instanceof Unauthenticated) return showLogin();
  where.replaceChildren(h('p', { class: 'error', role: 'alert' }, String(err.message || err)));
}

function showLogin() {
  stopPolling();
  main.replaceChildren(h('div', { class: 'card login' },
    h('h1', {}, 'Log in'),
    h('p', {}, 'Open the address ', h('code', {}, 'evalflow up'), ' printed (it ends in ', h('code', {}, '?token=…'),
      '), or paste a caller\'s token:'),
    h('form', { class: 'toolbar', onsubmit: (e) => {
      e.preventDefault();
      const t = e.target.elements.token.value.trim();
      if (t) location.assign('/ui/?token=' + encodeURIComponent(t) + '&next=' + encodeURIComponent(location.pathname + location.search));
    } }, h('input', { type: 'text', name: 'token', size: 40, autocomplete: 'off', 'aria-label': 'token' }), h('button', {}, 'Log in'))));
}

// One poll at a time: a view that follows a run or the runs list replaces the last.
let timer = null;
function stopPolling() { clearTimeout(timer); timer = null; }
function poll(fn, ms) {
  stopPolling();
  const tick = async () => {
    let again = true;
    try { again = (await fn()) !== false; } catch (err) { showError(err); again = false; }
    if (again) timer = setTimeout(tick, ms);
  };
  tick();
}

const fmt = {
  score: (v) => (v === undefined || v === null ? '–' : v.toFixed(4)),
  pct: (v) => (v * 100).toFixed(1) + '%',
  time: (t) => (t && !t.startsWith('0001') ? new Date(t).toLocaleString() : ''),
  clock: (t) => (t ? new Date(t).toLocaleTimeString() : ''),
  eta: (s) => (s > 0 ? (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`) : ''),
  int: (n) => (n || 0).toLocaleString(),
  short: (id) => id.slice(0, 8),
  datasets: (run) => (run.datasets || []).map((d) => d.name + (d.subjects ? ` (${d.subjects.length} subjects)` : '')).join(', ') || run.engine,
};

function badge(status) { return h('span', { class: 'badge ' + status, 'data-status': status }, status); }

function progressBar(p) {
  const total = Math.max(p.total || 0, 1);
  const fill = h('span');
  fill.style.width = Math.min(100, (100 * (p.done || 0)) / total) + '%';
  return h('span', { class: 'bar', role: 'progressbar', 'aria-valuenow': p.done || 0, 'aria-valuemax': p.total || 0 }, fill);
}

// ---------- Runs ----------

const runsState = { status: '', model: '', selected: new Set() };

function viewRuns() {
  document.title = 'Runs · evalflow';
  const statusSel = h('select', { id: 'filter-status', 'aria-label': 'status', onchange: (e) => { runsState.status = e.target.value; refresh(); } },
    h('option', { value: '' }, 'any status'), STATUSES.map((s) => h('option', { value: s, selected: s === runsState.status }, s)));
  const modelSel = h('select', { id: 'filter-model', 'aria-label': 'model', onchange: (e) => { runsState.model = e.target.value; render(); } },
    h('option', { value: '' }, 'any model'));
  const compareBtn = h('button', { id: 'compare', disabled: true, onclick: () => {
    location.assign('/ui/compare?runs=' + [...runsState.selected].join(','));
  } }, 'Compare selected');
  const body = h('tbody');
  const count = h('span', { class: 'muted', id: 'runs-count' });
  main.replaceChildren(h('h1', {}, 'Runs'),
    h('div', { class: 'toolbar' }, h('label', { for: 'filter-status' }, 'Status'), statusSel,
      h('label', { for: 'filter-model' }, 'Model'), modelSel, compareBtn, count),
    h('table', { id: 'runs' }, h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, 'Run'), h('th', {}, 'Model'),
      h('th', {}, 'Datasets'), h('th', {}, 'Caller'), h('th', {}, 'Status'), h('th', {}, 'Progress'), h('th', {}, 'ETA'),
      h('th', {}, 'Created'))), body));

  let runs = [];
  let modelsShown = '';
  const render = () => {
    const models = [...new Set(runs.map((r) => r.model_name).concat(runsState.model ? [runsState.model] : []))].sort();
    if (models.join('\n') !== modelsShown) { // rebuilt only when it changes: an open list stays open
      modelsShown = models.join('\n');
      const keep = runsState.model;
      modelSel.replaceChildren(h('option', { value: '' }, 'any model'), ...models.map((m) => h('option', { value: m, selected: m === keep }, m)));
    }
    const shown = runs.filter((r) => !runsState.model || r.model_name === runsState.model);
    body.replaceChildren(...shown.map((r) => h('tr', { 'data-run': r.id },
      h('td', {}, h('input', { type: 'checkbox', 'aria-label': 'select ' + r.id, checked: runsState.selected.has(r.id),
        disabled: r.status !== 'succeeded', onchange: (e) => {
          if (e.target.checked) runsState.selected.add(r.id); else runsState.selected.delete(r.id);
          compareBtn.disabled = runsState.selected.size < 2;
        } })),
      h('td', {}, h('a', { href: '/ui/runs/' + encodeURIComponent(r.id), title: r.id }, fmt.short(r.id))),
      h('td', {}, r.model_name), h('td', {}, fmt.datasets(r)), h('td', {}, r.caller === '*' ? 'operator' : r.caller || ''),
      h('td', {}, badge(r.status), r.queued && !TERMINAL.has(r.status) ? h('span', { class: 'muted' }, ` #${r.queue_position} in line`) : ''),
      h('td', {}, progressBar(r.progress), ' ', h('span', { class: 'muted' }, `${fmt.int(r.progress.done)}/${fmt.int(r.progress.total)}`)),
      h('td', {}, r.status === 'running' ? fmt.eta(r.progress.eta_seconds) : ''),
      h('td', {}, fmt.time(r.created_at)))));
    count.textContent = `${shown.length} run${shown.length === 1 ? '' : 's'}`;
    compareBtn.disabled = runsState.selected.size < 2;
  };
  const refresh = async () => {
    const q = new URLSearchParams({ limit: '500' });
    if (runsState.status) q.set('status', runsState.status);
    runs = (await api('/evals?' + q)).runs || [];
    render();
  };
  poll(refresh, 2000);
}

// ---------- A run ----------

function viewRun(id) {
  document.title = `Run ${fmt.short(id)} · evalflow`;
  const head = h('div', { class: 'card', id: 'run-head' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const results = h('section', { id: 'results' });
  main.replaceChildren(h('h1', {}, 'Run ', h('code', {}, id)), head, h('h2', {}, 'Timeline'), h('div', { class: 'card' }, timeline), results);
  let shownResults = false;
  poll(async () => {
    const [run, events] = await Promise.all([api('/evals/' + encodeURIComponent(id)), api(`/evals/${encodeURIComponent(id)}/events`)]);
    renderRunHead(head, run);
    timeline.replaceChildren(...collapse(events.events).map((e) => h('li', { class: e.status, 'data-count': e.count },
      h('span', { class: 'muted' }, fmt.clock(e.time)), h('strong', {}, e.title, e.count > 1 ? ` ×${e.count}` : ''), h('span', {}, e.message || ''))));
    if (run.status === 'succeeded' && !shownResults) {
      shownResults = true;
      await renderResults(results, run);
    }
    return !TERMINAL.has(run.status);
  }, 1000);
}

// collapse folds a run of progress notifications into its last, counting them.
function collapse(events) {
  const out = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.status === 'progress' && last && last.status === 'progress' && last.step === e.step) {
      out[out.length - 1] = { ...e, count: last.count + 1 };
    } else {
      out.push({ ...e, count: 1 });
    }
  }
  return out;
}

function renderRunHead(el, run) {
  const s = run.summary;
  el.replaceChildren(h('dl', { class: 'facts' },
    h('dt', {}, 'Model'), h('dd', {}, run.model_name, ' ', h('span', { class: 'muted' }, run.base_url)),
    h('dt', {}, 'Status'), h('dd', {}, badge(run.status), ' ', h('span', { class: 'muted' }, 'step ' + run.step), run.message ? ' — ' + run.message : ''),
    h('dt', {}, 'Progress'), h('dd', { id: 'run-progress' }, progressBar(run.progress), ` ${fmt.int(run.progress.done)}/${fmt.int(run.progress.total)}`,
      run.status === 'running' && run.progress.eta_seconds ? ` · ETA ${fmt.eta(run.progress.eta_seconds)}` : '',
      run.progress.samples_per_second ? ` · ${run.progress.samples_per_second.toFixed(1)} samples/s` : ''),
    h('dt', {}, 'Datasets'), h('dd', {}, fmt.datasets(run)),
    h('dt', {}, 'Engine'), h('dd', {}, run.engine, ' · ', run.target),
    run.caller ? [h('dt', {}, 'Caller'), h('dd', {}, run.caller === '*' ? 'operator' : run.caller)] : [],
    h('dt', {}, 'Created'), h('dd', {}, fmt.time(run.created_at), run.ended_at && !run.ended_at.startsWith('0001') ? ' · ended ' + fmt.time(run.ended_at) : ''),
    s ? [h('dt', {}, 'Tokens'), h('dd', { id: 'tokens' }, `${fmt.int(s.usage.prompt_tokens)} prompt · ${fmt.int(s.usage.completion_tokens)} completion`),
      h('dt', {}, 'Cost'), h('dd', { id: 'cost' }, s.cost ? '$' + s.cost.toFixed(4) : '— (no prices in the run\'s options)')] : []));
}

async function renderResults(el, run) {
  const samples = samplesView(run.id); // asked for now: the server reads them while the scores draw
  const res = await api(`/evals/${encodeURIComponent(run.id)}/results`);
  const copy = h('button', { class: 'plain', onclick: () => navigator.clipboard && navigator.clipboard.writeText(res.pull_command) }, 'Copy');
  const canvas = h('canvas', { id: 'scores-chart', 'aria-label': 'scores with standard errors' });
  el.replaceChildren(
    h('h2', {}, 'Scores'),
    h('div', { class: 'card' }, h('div', { class: 'chart' }, canvas)),
    scoresTable(res.scores),
    h('h2', {}, 'Artifact'),
    h('div', { class: 'card' }, h('p', {}, h('code', { id: 'artifact-ref' }, res.artifact.reference)),
      h('div', { class: 'cmd' }, h('code', { id: 'pull-command' }, res.pull_command), copy)),
    h('h2', {}, 'Samples'),
    samples);
  barChart(canvas, res.scores.map((s) => s.task), [{ label: run.model_name, values: res.scores.map((s) => s.value), errors: res.scores.map((s) => s.stderr) }]);
}

function scoresTable(scores) {
  return h('table', { id: 'scores' }, h('thead', {}, h('tr', {}, h('th', {}, 'Task'), h('th', {}, 'Metric'), h('th', { class: 'num' }, 'Score'),
    h('th', { class: 'num' }, '± stderr'), h('th', { class: 'num' }, 'Samples'))),
  h('tbody', {}, scores.map((s) => h('tr', { class: s.group ? 'group' : '' }, h('td', {}, s.task), h('td', {}, s.metric + (s.filter && s.filter !== 'none' ? ` (${s.filter})` : '')),
    h('td', { class: 'num' }, fmt.score(s.value)), h('td', { class: 'num' }, fmt.score(s.stderr)), h('td', { class: 'num' }, s.samples ? fmt.int(s.samples) : '')))));
}

// samplesView lists a run's samples, filtered on the server: by task, right or wrong,
// and a text, a page at a time.
function samplesView(id) {
  const q = { task: '', correct: '', q: '', offset: 0, limit: 50 };
  const task = h('select', { id: 'samples-task', 'aria-label': 'task', onchange: (e) => { q.task = e.target.value; q.offset = 0; load(); } },
    h('option', { value: '' }, 'every task'));
  const correct = h('select', { id: 'samples-correct', 'aria-label': 'correct', onchange: (e) => { q.correct = e.target.value; q.offset = 0; load(); } },
    h('option', { value: '' }, 'right and wrong'), h('option', { value: 'true' }, 'right'), h('option', { value: 'false' }, 'wrong'));
  let debounce = null;
  const text = h('input', { type: 'search', id: 'samples-search', placeholder: 'search prompts and answers', 'aria-label': 'search', oninput: (e) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { q.q = e.target.value; q.offset = 0; load(); }, 50);
  } });
  const status = h('span', { class: 'muted', id: 'samples-matched' });
  const body = h('tbody');
  const prev = h('button', { class: 'plain', onclick: () => { q.offset = Math.max(0, q.offset - q.limit); load(); } }, '← Previous');
  const next = h('button', { class: 'plain', onclick: () => { q.offset += q.limit; load(); } }, 'Next →');
  const pageInfo = h('span', { class: 'muted' });
  let seq = 0;
  let tasksShown = false;
  const load = async () => {
    const mine = ++seq;
    const params = new URLSearchParams({ offset: q.offset, limit: q.limit });
    for (const k of ['task', 'correct', 'q']) if (q[k]) params.set(k, q[k]);
    const page = await api(`/evals/${encodeURIComponent(id)}/samples?` + params);
    if (mine !== seq) return; // a later filter answered first
    if (!tasksShown) {
      tasksShown = true;
      task.append(...page.tasks.map((t) => h('option', { value: t.task }, `${t.task} (${t.correct}/${t.samples})`)));
    }
    status.textContent = `${fmt.int(page.matched)} of ${fmt.int(page.total)} samples`;
    status.dataset.matched = page.matched;
    body.replaceChildren(...page.samples.map((s) => h('tr', { 'data-sample': `${s.task}/${s.doc_id}` },
      h('td', {}, s.task, h('br'), h('span', { class: 'muted' }, '#' + s.doc_id)),
      h('td', {}, promptCell(s.prompt)),
      h('td', {}, h('pre', {}, s.response)),
      h('td', {}, h('pre', {}, s.extracted)),
      h('td', {}, h('pre', {}, s.target)),
      h('td', {}, s.correct ? h('span', { class: 'right' }, '✓ right') : h('span', { class: 'wrong' }, '✗ wrong')),
      h('td', { class: 'num' }, `${s.usage.prompt_tokens}+${s.usage.completion_tokens}`))));
    pageInfo.textContent = page.matched ? `${q.offset + 1}–${q.offset + page.samples.length}` : '';
    prev.disabled = q.offset === 0;
    next.disabled = q.offset + page.samples.length >= page.matched;
    performance.mark('evalflow:samples'); // the benchmark reads when the view first showed samples
    document.dispatchEvent(new CustomEvent('evalflow:samples', { detail: { matched: page.matched } }));
  };
  const view = h('div', { id: 'samples' },
    h('div', { class: 'toolbar' }, task, correct, text, status),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Task'), h('th', {}, 'Prompt'), h('th', {}, 'Response'), h('th', {}, 'Extracted'),
      h('th', {}, 'Target'), h('th', {}, 'Correct'), h('th', { class: 'num' }, 'Tokens'))), body),
    h('div', { class: 'pager' }, prev, pageInfo, next));
  load().catch((err) => showError(err, body));
  return view;
}

// promptCell shows a prompt's end (the question asked, after any few-shot examples);
// a click shows all of it, and another its end again.
function promptCell(prompt) {
  const tail = 360;
  const short = prompt.length > tail ? '…' + prompt.slice(-tail) : prompt;
  const pre = h('pre', { class: 'prompt', title: prompt.length > tail ? 'click to show the whole prompt' : null }, short);
  if (prompt.length > tail) {
    pre.addEventListener('click', () => {
      const open = pre.classList.toggle('open');
      pre.textContent = open ? prompt : short;
    });
  }
  return pre;
}

// ---------- Compare ----------

async function viewCompare(ids) {
  stopPolling();
  document.title = 'Compare · evalflow';
  const c = await api('/compare?runs=' + ids.map(encodeURIComponent).join(','));
  const n = c.runs.length;
  const canvas = h('canvas', { id: 'compare-chart', 'aria-label': 'scores by run' });
  const legend = h('ol', { id: 'compared-runs' }, c.runs.map((r, i) => h('li', {},
    h('a', { href: '/ui/runs/' + encodeURIComponent(r.run_id) }, fmt.short(r.run_id)), ' ', r.model, i === 0 ? h('span', { class: 'muted' }, ' (baseline)') : '')));
  const head = [h('th', {}, 'Task'), h('th', {}, 'Metric'), c.runs.map((r, i) => h('th', { class: 'num' }, `[${i + 1}]`))];
  for (let i = 1; i < n; i++) head.push(h('th', { class: 'num' }, `[${i + 1}] − [1]`), h('th', { class: 'num' }, 'p'));
  const rows = c.tasks.map((t) => {
    const cells = [h('td', {}, t.task), h('td', {}, t.metric), t.scores.map((s) => h('td', { class: 'num' }, s ? `${fmt.score(s.value)} ± ${fmt.score(s.stderr)}` : '–'))];
    t.diffs.forEach((d) => {
      if (!d) { cells.push(h('td', { class: 'num' }, '–'), h('td', { class: 'num' }, '–')); return; }
      const cls = d.significant ? 'num sig' + (d.delta > 0 ? ' better' : '') : 'num';
      cells.push(h('td', { class: cls }, (d.delta >= 0 ? '+' : '') + d.delta.toFixed(4)),
        h('td', { class: cls, title: `${d.paired} paired samples: ${d.only_first} right only in [1], ${d.only_this} only in this run` },
          d.p_value < 0.0001 ? '<0.0001' : d.p_value.toFixed(4), d.significant ? ' ★' : ''));
    });
    return h('tr', { class: t.group ? 'group' : '', 'data-task': t.task, 'data-significant': String(t.diffs.some((d) => d && d.significant)) }, cells);
  });
  const dis = c.disagreements;
  const disRows = dis.map((d) => h('tr', {},
    h('td', {}, d.task, h('br'), h('span', { class: 'muted' }, '#' + d.doc_id)),
    h('td', {}, promptCell(d.prompt)),
    h('td', {}, h('pre', {}, d.target)),
    d.answers.map((a) => h('td', {}, h('pre', {}, a.extracted), a.correct ? h('span', { class: 'right' }, '✓') : h('span', { class: 'wrong' }, '✗')))));
  main.replaceChildren(h('h1', {}, `Compare ${n} runs`), h('div', { class: 'card' }, legend),
    h('div', { class: 'card' }, h('div', { class: 'chart' }, canvas)),
    h('table', { id: 'comparison' }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows)),
    h('p', { class: 'muted', id: 'test' }, '★ ', c.test, '.'),
    h('h2', {}, 'Samples on which the runs disagree'),
    h('p', { class: 'muted', id: 'disagreements-count' }, `${fmt.int(c.disagreements_total)} samples` + (c.disagreements_total > dis.length ? ` (the first ${dis.length} shown)` : '')),
    h('table', { id: 'disagreements' }, h('thead', {}, h('tr', {}, h('th', {}, 'Task'), h('th', {}, 'Prompt'), h('th', {}, 'Target'),
      c.runs.map((r, i) => h('th', {}, `[${i + 1}] answer`)))), h('tbody', {}, disRows)));
  const tasks = c.tasks.map((t) => t.task);
  barChart(canvas, tasks, c.runs.map((r, i) => ({ label: `[${i + 1}] ${r.model}`,
    values: c.tasks.map((t) => (t.scores[i] ? t.scores[i].value : null)), errors: c.tasks.map((t) => (t.scores[i] ? t.scores[i].stderr : 0)) })));
}

// ---------- Charts ----------

// errorBars draws each bar's standard error as a whisker (dataset.errors).
const errorBars = {
  id: 'errorBars',
  afterDatasetsDraw(chart) {
    const { ctx, scales: { y } } = chart;
    ctx.save();
    ctx.strokeStyle = '#1d232b';
    ctx.lineWidth = 1.2;
    chart.data.datasets.forEach((ds, i) => {
      const meta = chart.getDatasetMeta(i);
      if (meta.hidden) return;
      meta.data.forEach((bar, j) => {
        const v = ds.data[j], e = ds.errors && ds.errors[j];
        if (v === null || v === undefined || !e) return;
        const top = y.getPixelForValue(Math.min(1, v + e)), bottom = y.getPixelForValue(Math.max(0, v - e));
        const w = Math.min(8, bar.width / 3);
        ctx.beginPath();
        ctx.moveTo(bar.x, top); ctx.lineTo(bar.x, bottom);
        ctx.moveTo(bar.x - w, top); ctx.lineTo(bar.x + w, top);
        ctx.moveTo(bar.x - w, bottom); ctx.lineTo(bar.x + w, bottom);
        ctx.stroke();
      });
    });
    ctx.restore();
  },
};

// chartJS loads Chart.js once, when a chart is first drawn: the page asks for its
// data first, and compiles the library while the server answers.
let chartJS = null;
function loadChartJS() {
  chartJS ??= new Promise((resolve, reject) => {
    const script = h('script', { src: '/ui/static/vendor/chart.umd.min.js' });
    script.addEventListener('load', resolve);
    script.addEventListener('error', () => reject(new Error('Chart.js did not load')));
    document.head.append(script);
  });
  return chartJS;
}

async function barChart(canvas, labels, series) {
  try {
    await loadChartJS();
  } catch (err) {
    canvas.replaceWith(h('p', { class: 'error' }, err.message));
    return;
  }
  // eslint-disable-next-line no-new
  new window.Chart(canvas, {
    type: 'bar',
    data: { labels, datasets: series.map((s, i) => ({ label: s.label, data: s.values, errors: s.errors, backgroundColor: COLORS[i % COLORS.length] + 'cc' })) },
    options: {
      maintainAspectRatio: false, animation: false,
      scales: { y: { min: 0, max: 1, title: { display: true, text: 'score ± standard error' } }, x: { ticks: { autoSkip: false, maxRotation: 60 } } },
      plugins: { legend: { display: series.length > 1 }, tooltip: { callbacks: { afterLabel: (item) => `± ${fmt.score(item.dataset.errors[item.dataIndex])}` } } },
    },
    plugins: [errorBars],
  });
  canvas.dataset.rendered = 'true';
}

// ---------- Routing ----------

async function route() {
  stopPolling();
  const path = location.pathname;
  try {
    if (path.startsWith('/ui/runs/')) return viewRun(decodeURIComponent(path.slice('/ui/runs/'.length)));
    if (path === '/ui/compare') {
      const ids = (new URLSearchParams(location.search).get('runs') || '').split(',').filter(Boolean);
      return await viewCompare(ids);
    }
    return viewRuns();
  } catch (err) {
    showError(err);
  }
}

window.addEventListener('DOMContentLoaded', route);
