// The results page in headless chromium, against a running evalflow: BASE (its API),
// TOKEN (an operator's), RUN_A and RUN_B (two succeeded runs of the same samples that
// answer differently), RUN_LIVE (a run still running), SHOTS (where screenshots go).
// It exits non-zero naming the first thing that is not as it should be.
import { launch, check, painted, matched } from './browser.mjs';

const { BASE, TOKEN, RUN_A, RUN_B, RUN_LIVE, SHOTS } = process.env;

const browser = await launch();
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  const apiGet = async (path) => {
    const r = await ctx.request.get(BASE + path, { headers: { Authorization: 'Bearer ' + TOKEN } });
    check(r.ok(), `GET ${path}: ${r.status()}`);
    return r.json();
  };

  // Without the cookie, the page asks to log in.
  await page.goto(BASE + '/ui/');
  await page.getByRole('heading', { name: 'Log in' }).waitFor();

  // Logging in with ?token= once: the token leaves the address and becomes a cookie.
  await page.goto(`${BASE}/ui/?token=${encodeURIComponent(TOKEN)}`);
  check(page.url() === BASE + '/ui/', `after login the address is ${page.url()}, want ${BASE}/ui/ (no token)`);
  const cookie = (await ctx.cookies()).find((c) => c.name === 'evalflow_token');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', 'no HttpOnly, SameSite=Strict login cookie: ' + JSON.stringify(cookie));
  const failed = []; // from here on, logged in, nothing may fail
  page.on('pageerror', (e) => failed.push('page error: ' + e.message));
  page.on('requestfailed', (r) => failed.push('request failed: ' + r.url()));
  page.on('console', (m) => { if (m.type() === 'error') failed.push('console: ' + m.text()); });

  // Runs: both runs listed as succeeded; the live one's progress moves without a reload.
  for (const id of [RUN_A, RUN_B]) {
    await page.locator(`tr[data-run="${id}"] [data-status="succeeded"]`).waitFor({ timeout: 10000 });
  }
  const liveProgress = () => page.locator(`tr[data-run="${RUN_LIVE}"] [role=progressbar]`).getAttribute('aria-valuenow');
  const before = await liveProgress();
  await page.waitForFunction(([id, was]) => {
    const bar = document.querySelector(`tr[data-run="${id}"] [role=progressbar]`);
    return bar && bar.getAttribute('aria-valuenow') !== was;
  }, [RUN_LIVE, before], { timeout: 30000, polling: 250 });
  await page.screenshot({ path: `${SHOTS}/runs.png`, fullPage: true });

  // Filters: by status, then by model.
  await page.selectOption('#filter-status', 'failed');
  await page.waitForFunction((id) => !document.querySelector(`tr[data-run="${id}"]`), RUN_A);
  const statuses = await page.$$eval('#runs tbody [data-status]', (els) => els.map((e) => e.dataset.status));
  check(statuses.every((s) => s === 'failed'), 'the status filter shows runs of other statuses: ' + statuses);
  await page.selectOption('#filter-status', 'succeeded');
  await page.locator(`tr[data-run="${RUN_A}"]`).waitFor();
  check(await page.locator(`tr[data-run="${RUN_LIVE}"]`).count() === 0, 'the status filter shows a running run among the succeeded');
  await page.selectOption('#filter-model', { index: 1 });
  check(await page.locator('#runs tbody tr').count() >= 2, 'the model filter hides the runs of its model');

  // Compare: pick both runs, then the button.
  await page.check(`tr[data-run="${RUN_A}"] input[type=checkbox]`);
  await page.check(`tr[data-run="${RUN_B}"] input[type=checkbox]`);
  await page.click('#compare');
  await page.waitForURL(`**/ui/compare?runs=${RUN_A},${RUN_B}`);
  await page.locator('#comparison tbody tr').first().waitFor();
  const cmp = await apiGet(`/compare?runs=${RUN_A},${RUN_B}`);
  check(await page.locator('#comparison tbody tr').count() === cmp.tasks.length, 'the compare table lacks tasks');
  check((await page.textContent('#test')).includes("McNemar's exact test"), 'the page does not name its test');
  const significant = cmp.tasks.filter((t) => t.diffs[0] && t.diffs[0].significant).length;
  check(significant > 0, 'the two runs differ significantly nowhere: choose runs that do');
  check(await page.locator('#comparison tr[data-significant=true]').count() === significant, 'the significant rows are not the API\'s');
  check((await page.textContent('#disagreements-count')).startsWith(cmp.disagreements_total.toLocaleString('en-US') + ' samples'), 'wrong count of disagreements');
  check(await page.locator('#disagreements tbody tr').count() === Math.min(cmp.disagreements_total, 500), 'the disagreements are not listed');
  check(await painted(page, '#compare-chart') > 2000, 'the compare chart is blank');
  await page.screenshot({ path: `${SHOTS}/compare.png` });

  // A run: its timeline, chart, scores, artifact and pull command.
  await page.click(`#compared-runs a[href="/ui/runs/${RUN_A}"]`);
  await page.locator('#scores tbody tr').first().waitFor();
  const res = await apiGet(`/evals/${RUN_A}/results`);
  const events = await apiGet(`/evals/${RUN_A}/events`);
  check(await page.locator('#scores tbody tr').count() === res.scores.length, 'the scores table lacks scores');
  const counted = await page.$$eval('#timeline li', (lis) => lis.reduce((n, li) => n + Number(li.dataset.count), 0));
  check(counted === events.events.length, `the timeline shows ${counted} of the run's ${events.events.length} events`);
  check((await page.textContent('#timeline')).includes('Artifact succeeded'), 'the timeline lacks the artifact step');
  check((await page.textContent('#pull-command')) === res.pull_command && res.pull_command.startsWith('oras pull '), 'no oras pull command');
  check((await page.textContent('#tokens')).includes(res.summary.usage.prompt_tokens.toLocaleString('en-US')), 'the tokens are not shown');
  check(await painted(page, '#scores-chart') > 2000, 'the scores chart is blank');
  await page.screenshot({ path: `${SHOTS}/run.png` });

  // Samples: every filter answers as the API does.
  const all = await apiGet(`/evals/${RUN_A}/samples?limit=1`);
  await matched(page, all.matched);
  await page.selectOption('#samples-correct', 'false');
  await matched(page, (await apiGet(`/evals/${RUN_A}/samples?correct=false&limit=1`)).matched);
  const task = all.tasks[1].task;
  await page.selectOption('#samples-task', task);
  await matched(page, (await apiGet(`/evals/${RUN_A}/samples?correct=false&task=${task}&limit=1`)).matched);
  await page.selectOption('#samples-correct', '');
  await page.selectOption('#samples-task', '');
  await page.fill('#samples-search', 'Answer:');
  await matched(page, (await apiGet(`/evals/${RUN_A}/samples?q=Answer%3A&limit=1`)).matched);
  await page.fill('#samples-search', 'no sample says this');
  await matched(page, 0);
  await page.fill('#samples-search', '');
  await matched(page, all.matched);
  await page.locator('#samples tbody tr').first().waitFor();
  await page.locator('#samples').screenshot({ path: `${SHOTS}/samples.png` });

  check(failed.length === 0, 'the page had errors:\n' + failed.join('\n'));
  console.log('ok: login, runs, live progress, filters, compare, run, samples; screenshots in ' + SHOTS);
} finally {
  await browser.close();
}
