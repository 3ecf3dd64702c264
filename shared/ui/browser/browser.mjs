// Launching Debian's chromium with playwright-core for the results page's test and
// benchmark. PLAYWRIGHT_MODULES is the node_modules directory that holds
// playwright-core (hack/install-browser.sh); CHROMIUM the browser.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.PLAYWRIGHT_MODULES, 'x.js'));
const { chromium } = require('playwright-core');

// The flags keep chromium off the network: no background connections, updates or sync.
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

// check fails the script with a message when ok is false.
export function check(ok, message) {
  if (!ok) throw new Error(message);
}

// painted counts a canvas's non-transparent pixels: a chart was drawn.
export async function painted(page, selector) {
  return page.$eval(selector, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
}

// matched waits until the samples view shows n matched samples.
export async function matched(page, n) {
  await page.waitForFunction((want) => document.getElementById('samples-matched')?.dataset.matched === String(want), n, { timeout: 10000 });
}
