// The results page's samples view, timed in headless chromium against a running
// evalflow: BASE, TOKEN, RUN (a succeeded run), MODE and REPEATS.
//   MODE=open     open the run's page REPEATS times: the time from navigation to the
//                 samples view showing its first page (performance.mark in the page);
//                 with RESTART, a POST there first each time (the server starts cold)
//   MODE=filters  each filter REPEATS times: from the change to the answer painted
// Prints one JSON object: {"open": [ms...]} or {"filters": {name: [ms...]}}.
import { launch, check } from './browser.mjs';

const { BASE, TOKEN, RUN, MODE, RESTART } = process.env;
const REPEATS = Number(process.env.REPEATS || 5);

const browser = await launch();
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  await page.goto(`${BASE}/ui/?token=${encodeURIComponent(TOKEN)}`);
  const open = async () => {
    await page.goto(`${BASE}/ui/runs/${RUN}`);
    await page.waitForFunction(() => performance.getEntriesByName('evalflow:samples').length > 0, null, { timeout: 60000 });
    await page.locator('#samples tbody tr').first().waitFor();
    return page.evaluate(() => performance.getEntriesByName('evalflow:samples')[0].startTime);
  };
  if (MODE === 'open') {
    const times = [];
    for (let i = 0; i < REPEATS; i++) {
      if (RESTART) check((await fetch(RESTART, { method: 'POST' })).ok, 'restart failed');
      times.push(await open());
    }
    console.log(JSON.stringify({ open: times }));
  } else {
    await open();
    // change sets a filter and times it to the answer's paint.
    const change = (selector, value) => page.evaluate(async ([sel, v]) => {
      const el = document.querySelector(sel);
      const answered = new Promise((resolve) => document.addEventListener('evalflow:samples', resolve, { once: true }));
      const t0 = performance.now();
      el.value = v;
      el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input'));
      await answered;
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
      return performance.now() - t0;
    }, [selector, value]);
    const matched = () => page.$eval('#samples-matched', (el) => Number(el.dataset.matched));
    const filters = {
      'wrong answers': ['#samples-correct', 'false', ''],
      'one task (professional_law)': ['#samples-task', 'mmlu_professional_law', ''],
      'text, common ("which")': ['#samples-search', 'which', ''],
      'text, rare ("photosynthesis")': ['#samples-search', 'photosynthesis', ''],
    };
    const out = {};
    const total = await matched();
    for (const [name, [sel, on, off]] of Object.entries(filters)) {
      out[name] = [];
      for (let i = 0; i < REPEATS; i++) {
        out[name].push(await change(sel, on));
        check((await matched()) < total, `${name} selected all ${total} samples`);
        out[name].push(await change(sel, off));
        check((await matched()) === total, `clearing ${name} did not bring back all samples`);
      }
    }
    console.log(JSON.stringify({ filters: out, total }));
  }
} finally {
  await browser.close();
}
