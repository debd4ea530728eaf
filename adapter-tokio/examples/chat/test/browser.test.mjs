// End-to-end test of the chat example in a real headless Chromium.
//
// Run from this folder: npm ci && node --test browser.test.mjs
//
// Needs the release chat binary (`cargo build --release -p adapter-tokio --example chat`;
// env CHAT_BIN overrides its path) and Chromium at /usr/bin/chromium (env CHROMIUM
// overrides it; Debian: `apt-get install chromium`). It is driven with playwright-core,
// which downloads no browser of its own.
//
// alice opens the page straight on the server; bob opens it through a TCP proxy written
// in ../../../../clients/js/test/support.mjs, which can "cut the network": every proxied socket is reset (no close handshake,
// like a phone losing Wi-Fi) and new connections are reset on accept until it is let
// through again. The test checks what a person would see on both pages: members, the
// reconnecting state, the "session restored" notice, missed messages delivered exactly
// once and in order, a message typed while offline delivered once after the resume.
// Screenshots go to target/browser-test/ (for humans, not committed): bob's page just
// after the first resume, and both pages at the end.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
// The chat server and the cutting proxy, shared with the tether-client package's tests.
import { CHAT_BIN, CutProxy, repo, sleep, startChat, stopChat, within } from '../../../../clients/js/test/support.mjs';
import { chatLines, launchChromium, log, members, say, signIn, statusOf, until, untilLine, WAIT_MS } from './page.mjs';
const SHOTS = path.join(repo, 'target/browser-test');

const CUT_MS = 3000; // how long bob's network is down (the resume window is 2 min)
const RESUME_WAIT_MS = 25000; // reconnect backoff after a 3 s cut stays well under this

// ------------------------------------------------------------------ the test

describe('chat example in headless Chromium (bob behind a proxy that cuts the network)', () => {
  let chat = null;
  let proxy = null;
  let browser = null;
  let alice = null;
  let bob = null;
  const pageErrors = [];
  // Safety net if the runner is killed between hooks: never leave the server behind.
  const killChat = () => { try { chat?.proc.kill('SIGKILL'); } catch { /* gone */ } };
  process.once('exit', killChat);

  before(async () => {
    // With permessage-deflate (off by default): the page's frames go compressed.
    chat = await startChat(['--deflate']);
    log(`chat server on 127.0.0.1:${chat.port} (${CHAT_BIN})`);
    proxy = await new CutProxy(chat.port).start();
    log(`proxy on 127.0.0.1:${proxy.port} -> ${chat.port}`);
    browser = await launchChromium(chromium);
    log(`Chromium ${browser.version()}`);
    const open = async (name) => {
      const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
      const page = await ctx.newPage();
      page.setDefaultTimeout(WAIT_MS);
      page.on('pageerror', (e) => { pageErrors.push(`${name}: ${e.message}`); log(`${name} page error: ${e.message}`); });
      return page;
    };
    alice = await open('alice');
    bob = await open('bob');
  }, { timeout: 60000 });

  after(async () => {
    if (bob) {
      mkdirSync(SHOTS, { recursive: true });
      for (const [name, page] of [['bob', bob], ['alice', alice]]) {
        const file = path.join(SHOTS, `${name}.png`);
        await within(10000, `screenshot of ${name}`, page.screenshot({ path: file })).then(
          () => log(`screenshot: ${path.relative(process.cwd(), file)}`),
          (e) => log(`no screenshot of ${name}: ${e.message}`),
        );
      }
    }
    if (browser) await within(10000, 'the browser to close', browser.close()).catch((e) => log(e.message));
    if (proxy) await proxy.stop();
    if (chat) {
      await stopChat(chat.proc);
      const err = chat.proc.stderrText();
      if (err.trim()) log(`chat server stderr (last lines):\n${err.trim().split('\n').slice(-10).join('\n')}`);
    }
    process.removeListener('exit', killChat);
    log('cleaned up: browser, proxy and chat server stopped');
  }, { timeout: 40000 });

  test('alice (direct) and bob (through the proxy) join lobby and talk', { timeout: 60000 }, async () => {
    await signIn(alice, `http://127.0.0.1:${chat.port}/`, 'alice');
    log('alice signed in and joined lobby');
    await signIn(bob, `http://127.0.0.1:${proxy.port}/`, 'bob');
    log('bob signed in through the proxy and joined lobby');
    assert.ok(proxy.accepted > 0, 'bob\'s page went through the proxy');

    const both = (m) => m.includes('alice') && m.includes('bob');
    assert.deepEqual(await until(alice, 'bob in alice\'s members', members, both), ['alice', 'bob']);
    assert.deepEqual(await until(bob, 'alice in bob\'s members', members, both), ['alice', 'bob']);
    log('check: both see alice and bob under "Here now"');

    // Chromium offers permessage-deflate and the chat server, started with --deflate,
    // agrees to it.
    const extensions = await alice.evaluate((url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => { resolve(ws.extensions); ws.close(); };
      ws.onerror = () => reject(new Error('the WebSocket did not open'));
    }), `ws://127.0.0.1:${chat.port}/ws`);
    assert.match(extensions, /^permessage-deflate/, 'the page\'s WebSocket negotiated permessage-deflate');
    log(`check: the page's WebSocket negotiated "${extensions}"`);

    await say(alice, 'hello bob');
    await untilLine(bob, 'alice: hello bob');
    await say(bob, 'hi alice');
    await untilLine(alice, 'bob: hi alice');
    const expected = ['alice: hello bob', 'bob: hi alice'];
    assert.deepEqual(await until(alice, 'both lines on alice\'s page', chatLines, (l) => l.length >= 2), expected);
    assert.deepEqual(await until(bob, 'both lines on bob\'s page', chatLines, (l) => l.length >= 2), expected);
    log('check: a message from alice appears on bob\'s page and one from bob on alice\'s');
  });

  test('bob loses the network for 3 s: resume shows the missed messages once, in order', { timeout: 90000 }, async () => {
    const before = await chatLines(bob);
    const missed = ['missed 1 of 3', 'missed 2 of 3', 'missed 3 of 3'];

    const dropped = proxy.cut();
    log(`network cut: ${dropped} proxied connection(s) reset; new ones refused for ${CUT_MS} ms`);
    const cutAt = Date.now();

    const st = await until(bob, 'bob\'s page to show reconnecting', statusOf, (s) => s.state === 'reconnecting', 5000);
    assert.match(st.text, /^reconnecting \(attempt \d+, in \d+\.\d s\)$/);
    log(`check: bob's page shows "${st.text}"`);

    for (const text of missed) {
      await say(alice, text);
      await untilLine(alice, `alice: ${text}`); // the server has it
    }
    log('alice sent 3 messages while bob is away');
    const same = (want) => (got) => JSON.stringify(got) === JSON.stringify(want);
    await until(alice, 'bob shown away on alice\'s page', members, same(['alice', 'bob (away)']));
    assert.ok((await alice.textContent('#messages')).includes('bob is away'), 'the presence line');
    assert.ok(!(await alice.textContent('#messages')).includes('bob left'), 'no "bob left" on a mere drop');
    log('check: alice sees bob in lobby as away (his session is suspended, not gone)');

    await sleep(Math.max(0, CUT_MS - (Date.now() - cutAt)));
    assert.equal((await statusOf(bob)).state, 'reconnecting', 'bob is still cut off');
    assert.deepEqual(await chatLines(bob), before, 'nothing reached bob while cut off');
    proxy.restore();
    log(`network back after ${Date.now() - cutAt} ms (${proxy.refused} connection attempt(s) refused meanwhile)`);

    const notice = bob.locator('#notice.show.good .text');
    await notice.waitFor({ state: 'visible', timeout: RESUME_WAIT_MS });
    assert.equal(await notice.textContent(), 'Session restored — 3 missed messages delivered.');
    log(`check: bob's page shows "${await notice.textContent()}" ${Date.now() - cutAt} ms after the cut`);
    mkdirSync(SHOTS, { recursive: true });
    await bob.screenshot({ path: path.join(SHOTS, 'bob-restored.png') });
    const back = await until(bob, 'bob\'s page to show reconnected', statusOf, (s) => s.state === 'reconnected');
    log(`check: bob's status is "${back.text}"`);
    await until(alice, 'bob back online on alice\'s page', members, same(['alice', 'bob']));
    log('check: alice sees bob online again');

    // A message bob types once connected again; when it is on both pages, anything
    // replayed has arrived too (the stream is ordered), so the lists are final.
    await say(bob, 'back online');
    await untilLine(alice, 'bob: back online');
    await untilLine(bob, 'bob: back online');
    const expected = [...before, ...missed.map((m) => `alice: ${m}`), 'bob: back online'];
    assert.deepEqual(await chatLines(bob), expected);
    log('check: bob\'s page has the 3 missed messages exactly once, in order, then his own');
    assert.deepEqual(await chatLines(alice), expected);
    log('check: alice got bob\'s message sent after the resume');
  });

  test('a message bob types while cut off is queued and delivered once after the resume', { timeout: 90000 }, async () => {
    const before = await chatLines(alice);
    // Close the notice of the first resume (it would hide itself after 6 s) so the
    // next one is read fresh.
    if (await bob.isVisible('#notice.show')) await bob.click('#notice button');
    await bob.waitForSelector('#notice.show', { state: 'hidden', timeout: WAIT_MS });
    proxy.cut();
    const cutAt = Date.now();
    log('network cut again');
    await until(bob, 'bob\'s page to show reconnecting', statusOf, (s) => s.state === 'reconnecting', 5000);

    await say(bob, 'typed while offline');
    const queued = await until(bob, 'the queued count', (p) => p.textContent('#queued'), (t) => t !== '', 5000);
    assert.equal(queued, '1 waiting to send');
    log(`check: bob's composer shows "${queued}"`);
    await sleep(Math.max(0, CUT_MS - (Date.now() - cutAt)));
    assert.deepEqual(await chatLines(alice), before, 'alice got nothing while bob was cut off');
    proxy.restore();
    log('network back');

    const notice = bob.locator('#notice.show.good .text');
    await notice.waitFor({ state: 'visible', timeout: RESUME_WAIT_MS });
    assert.equal(await notice.textContent(), 'Session restored — 0 missed messages delivered.');
    log(`check: bob's page shows "${await notice.textContent()}"`);

    await untilLine(alice, 'bob: typed while offline');
    await untilLine(bob, 'bob: typed while offline');
    assert.equal(await until(bob, 'the queue to empty', (p) => p.textContent('#queued'), (t) => t === ''), '');
    // One more message after it: once it is on both pages the offline one cannot
    // still arrive a second time.
    await say(alice, 'got it');
    await untilLine(bob, 'alice: got it');
    await untilLine(alice, 'alice: got it');
    const expected = [...before, 'bob: typed while offline', 'alice: got it'];
    assert.deepEqual(await chatLines(alice), expected);
    assert.deepEqual(await chatLines(bob), expected);
    log('check: the offline message reached alice and bob exactly once, and the queue is empty');
    assert.deepEqual(pageErrors, [], 'no uncaught errors on the pages');
  });
});
