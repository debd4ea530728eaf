// The chat example as two nodes sharing Redis, in headless Chromium: alice on node A,
// bob on node B (through a TCP proxy), chatting across nodes; then bob's network drops,
// alice writes to him, and node B is killed (SIGKILL). The proxy now leads to node A:
// bob's page resumes his session there and shows the messages he missed, once, in
// order — what Redis held for him when his node died.
//
// Run from this folder: npm ci && node --test nodes.test.mjs
//
// Needs what browser.test.mjs needs (the release chat binary, Chromium) and
// redis-server on the PATH (Debian: `apt-get install redis-server`).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CutProxy, sleep, startChat, stopChat, within } from '../../../../clients/js/test/support.mjs';
import { chatLines, launchChromium, log, say, signIn, statusOf, until, untilLine } from './page.mjs';

const RESUME_WAIT_MS = 25000;
// How long the test lets node B's write-behind journal reach Redis before killing it
// (its batches go out within milliseconds; this is slack, not a measured bound).
const JOURNAL_SETTLE_MS = 1000;

/** A free TCP port on 127.0.0.1. */
async function freePort() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/** Starts redis-server on a free port without persistence; resolves with {proc, url, dir}. */
async function startRedis() {
  if (spawnSync('redis-server', ['--version']).error) {
    throw new Error('redis-server not found: install it (Debian: apt-get install redis-server)');
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tether-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await within(10000, 'redis-server to accept connections', new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Ready to accept connections')) resolve();
    });
    proc.on('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
  }));
  proc.stdout.resume();
  return { proc, url: `redis://127.0.0.1:${port}`, dir };
}

describe('chat example on two nodes sharing Redis, in headless Chromium', () => {
  let redis = null;
  let nodeA = null;
  let nodeB = null;
  let proxy = null;
  let browser = null;
  let alice = null;
  let bob = null;
  const pageErrors = [];
  const killAll = () => {
    for (const p of [nodeA?.proc, nodeB?.proc, redis?.proc]) { try { p?.kill('SIGKILL'); } catch { /* gone */ } }
  };
  process.once('exit', killAll);

  before(async () => {
    redis = await startRedis();
    log(`redis-server on ${redis.url}`);
    nodeA = await startChat(['--redis', redis.url]);
    nodeB = await startChat(['--redis', redis.url]);
    log(`node A on 127.0.0.1:${nodeA.port}, node B on 127.0.0.1:${nodeB.port}`);
    proxy = await new CutProxy(nodeB.port).start();
    browser = await launchChromium(chromium);
    const open = async (name) => {
      const ctx = await browser.newContext({ viewport: { width: 1000, height: 640 } });
      const page = await ctx.newPage();
      page.on('pageerror', (e) => { pageErrors.push(`${name}: ${e.message}`); log(`${name} page error: ${e.message}`); });
      return page;
    };
    alice = await open('alice');
    bob = await open('bob');
  }, { timeout: 60000 });

  after(async () => {
    if (browser) await within(10000, 'the browser to close', browser.close()).catch((e) => log(e.message));
    if (proxy) await proxy.stop();
    for (const node of [nodeA, nodeB]) if (node) await stopChat(node.proc);
    if (redis) {
      redis.proc.kill('SIGKILL');
      rmSync(redis.dir, { recursive: true, force: true });
    }
    process.removeListener('exit', killAll);
  }, { timeout: 40000 });

  test('alice on node A and bob on node B talk in one room', { timeout: 60000 }, async () => {
    await signIn(alice, `http://127.0.0.1:${nodeA.port}/`, 'alice');
    await signIn(bob, `http://127.0.0.1:${proxy.port}/`, 'bob');
    log('alice signed in on node A, bob on node B (through the proxy); both joined lobby');
    await say(alice, 'hello from A');
    await untilLine(bob, 'alice: hello from A');
    await say(bob, 'hello from B');
    await untilLine(alice, 'bob: hello from B');
    const expected = ['alice: hello from A', 'bob: hello from B'];
    assert.deepEqual(await chatLines(alice), expected);
    assert.deepEqual(await chatLines(bob), expected);
    log('check: messages cross the nodes both ways, once each');
  });

  test('bob\'s node is killed while he is away: his page resumes on node A with what he missed', { timeout: 90000 }, async () => {
    const before = await chatLines(bob);
    const missed = ['while you were away 1', 'while you were away 2', 'while you were away 3'];
    proxy.cut();
    await until(bob, 'bob\'s page to show reconnecting', statusOf, (s) => s.state === 'reconnecting', 5000);
    log('bob\'s network is down; his session on node B is suspended');
    for (const text of missed) {
      await say(alice, text);
      await untilLine(alice, `alice: ${text}`);
    }
    await sleep(JOURNAL_SETTLE_MS);
    nodeB.proc.kill('SIGKILL');
    await within(5000, 'node B to die', new Promise((r) => (nodeB.proc.exitCode !== null || nodeB.proc.signalCode !== null
      ? r() : nodeB.proc.once('exit', r))));
    log('node B killed with SIGKILL; the proxy now leads to node A');
    proxy.target = nodeA.port;
    proxy.restore();

    const notice = bob.locator('#notice.show.good .text');
    await notice.waitFor({ state: 'visible', timeout: RESUME_WAIT_MS });
    assert.equal(await notice.textContent(), 'Session restored — 3 missed messages delivered.');
    log(`check: bob's page shows "${await notice.textContent()}"`);

    await say(bob, 'back, on node A');
    await untilLine(alice, 'bob: back, on node A');
    await untilLine(bob, 'bob: back, on node A');
    const expected = [...before, ...missed.map((m) => `alice: ${m}`), 'bob: back, on node A'];
    assert.deepEqual(await chatLines(bob), expected);
    assert.deepEqual(await chatLines(alice), expected);
    log('check: bob has the 3 missed messages exactly once, in order, then his own; alice got it');
    assert.deepEqual(pageErrors, [], 'no uncaught errors on the pages');
  });
});
