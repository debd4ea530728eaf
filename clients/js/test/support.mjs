/**
 * What the tests against the real chat server share: running the chat binary, a TCP
 * proxy that can cut the network, and waiting with a deadline that names what it
 * waited for. Used by this package's real-server tests and by the chat example's
 * Chromium test (adapter-tokio/examples/chat/test/browser.test.mjs).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const repo = path.resolve(here, '../../..');
/** The chat server binary: `CHAT_BIN`, or the release build's. */
export const CHAT_BIN = process.env.CHAT_BIN
  ? path.resolve(process.env.CHAT_BIN)
  : path.join(repo, 'target/release/examples/chat');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects after `ms` with a message naming what was awaited. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `pred` until it holds; fails naming `what` (and `show()`, if given). */
export async function waitFor(pred, what, show = () => '', ms = 10000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} ${show()}`);
    await sleep(10);
  }
}

/**
 * Starts the chat binary on a port of its choosing (more arguments after the address
 * in `args`); resolves with {proc, port}. `proc.stderrText()` is what it logged.
 */
export async function startChat(args = []) {
  if (!existsSync(CHAT_BIN)) {
    throw new Error(
      `no chat server binary at ${CHAT_BIN}. Build it from the repository root with ` +
      '`cargo build --release -p adapter-tokio --example chat`, or set CHAT_BIN to its path.',
    );
  }
  const proc = spawn(CHAT_BIN, ['127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const port = await within(10000, 'the chat server to print its address', new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /chat on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.on('error', reject);
    proc.on('exit', (code, sig) => reject(new Error(`chat exited early (${code ?? sig}): ${err}`)));
  }));
  proc.stdout.resume(); // keep draining
  proc.stderrText = () => err;
  return { proc, port };
}

/** Ends the chat server; resolves once it has exited (SIGKILL after 3 s). */
export async function stopChat(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  try {
    await within(3000, 'the chat server to exit', exited);
  } catch {
    proc.kill('SIGKILL');
    await within(3000, 'the chat server to exit after SIGKILL', exited).catch(() => {});
  }
}

/** Drops a socket with a TCP RST: no FIN, no WebSocket close frame. */
export function reset(socket) {
  if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed) {
    try { socket.resetAndDestroy(); return; } catch { /* not connected yet: destroy */ }
  }
  socket.destroy();
}

/**
 * A TCP proxy to 127.0.0.1:target that can cut the network: `cut()` resets every
 * proxied socket on both sides and resets new connections on accept; `restore()` lets
 * them through again. After `start()`: `port`, and `url` (the chat's WebSocket path).
 */
export class CutProxy {
  constructor(target) {
    this.target = target;
    this.pairs = new Set();
    this.down = false;
    this.accepted = 0; // connections let through
    this.refused = 0; // connections reset on accept while down
    this.server = net.createServer((client) => this._accept(client));
  }

  async start() {
    await within(5000, 'the proxy to listen', new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    }));
    this.port = this.server.address().port;
    this.url = `ws://127.0.0.1:${this.port}/ws`;
    return this;
  }

  _accept(client) {
    if (this.down) {
      this.refused += 1;
      reset(client);
      return;
    }
    this.accepted += 1;
    const upstream = net.connect(this.target, '127.0.0.1');
    const pair = { client, upstream };
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resets every proxied connection and refuses new ones until `restore()`; returns how many it cut. */
  cut() {
    this.down = true;
    const n = this.pairs.size;
    for (const { client, upstream } of this.pairs) { reset(client); reset(upstream); }
    this.pairs.clear();
    return n;
  }

  restore() { this.down = false; }

  async stop() {
    this.cut();
    await within(5000, 'the proxy to close', new Promise((r) => this.server.close(r))).catch(() => {});
  }
}
