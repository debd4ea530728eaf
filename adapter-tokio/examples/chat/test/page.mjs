// What the Chromium tests of the chat example share: reading and driving the page as a
// person would (chat lines, members, status, signing in, sending), with deadlines.

import { sleep } from '../../../../clients/js/test/support.mjs';

/** The longest any single wait on a page may take. */
export const WAIT_MS = 15000;

/** Launches Debian's Chromium (env CHROMIUM overrides the path) through playwright-core. */
export async function launchChromium(chromium) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // playwright-core adds --headless and a fresh temporary --user-data-dir itself.
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    timeout: 30000,
  });
}

const t0 = Date.now();
/** Logs with the seconds since the test started. */
export function log(...args) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s]`, ...args);
}
// ------------------------------------------------------------------ page helpers

/** What a person sees in the message list: chat lines as "user: text". */
export function chatLines(page) {
  return page.$$eval('#messages .msg', (nodes) => nodes.map((n) => {
    const user = n.querySelector('.meta b')?.textContent ?? '?';
    const body = n.querySelector('.body')?.textContent ?? '';
    return `${user}: ${body}`;
  }));
}

export function members(page) {
  return page.$$eval('#members li', (nodes) => nodes.map((n) => n.textContent));
}

/** Waits until `fn(page)` returns something for which `ok` holds; returns it. */
export async function until(page, what, fn, ok, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn(page);
    if (ok(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    }
    await sleep(50);
  }
}

/** Waits until `line` is among the page's chat lines (callers check the whole list after). */
export function untilLine(page, line, ms) {
  return until(page, `"${line}" on the page`, chatLines, (lines) => lines.includes(line), ms);
}

export async function signIn(page, url, name) {
  await page.goto(url, { timeout: WAIT_MS });
  await page.fill('#name', name);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#status[data-state=connected]', { timeout: WAIT_MS });
  await page.fill('#room-name', 'lobby');
  await page.click('#join button[type=submit]');
  await page.waitForSelector('#room-title:text-is("# lobby")', { timeout: WAIT_MS });
}

export async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

export async function statusOf(page) {
  return page.$eval('#status', (el) => ({
    state: el.dataset.state, text: el.querySelector('#status-text').textContent,
  }));
}

