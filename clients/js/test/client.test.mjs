// Unit tests of the tether-client package (src/index.js, imported by its package
// name, so through package.json's `exports`) against a small fake tether server
// written here.
//
// Run: npm ci && node --test test/client.test.mjs   (Node 20; `ws` is both the
// client's WebSocket constructor and the fake server). The fake server implements
// just enough of protocol v1 — auth, sessions with a numbered stream and a replay
// buffer, resume with token rotation, refusals — to drive the client through every
// path, including the ones the real server does not produce on demand (duplicates,
// gaps, replay before `sys.session.restored`); tests reach into it to drop
// connections, push messages, and script refusals. test/real-server.test.mjs runs the
// client against the real Rust server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import WebSocket, { WebSocketServer } from 'ws';
import * as msgpack from '@msgpack/msgpack';
import * as pkg from 'tether-client';
import {
  TetherClient, TetherError, backoffDelay, State, LocalError,
} from 'tether-client';

// ------------------------------------------------------------------ fake server

class FakeServer {
  constructor(opts = {}) {
    // `msgpack`: pick tether.v1.msgpack when offered.
    this.opts = { replayFirst: false, duplicateReplay: false, heartbeatMs: 0, msgpack: false, ...opts };
    this.frames = []; // the kind of every frame received: text or binary
    this.sessions = new Map();
    this.byToken = new Map();
    this.usedTokens = new Set();
    this.received = []; // every envelope from every connection
    this.connections = 0; // how many were ever accepted
    this.live = new Set();
    this.refuseNextResume = null; // a reason, to refuse the next resume with it
    this.nextId = 1;
    this.ended = []; // sessions the client ended: {id, reason}
    this.answers = []; // sys.reply / sys.reply.error envelopes
    this.handlers = {
      echo: (sess, env) => sess.push('echo.reply', env.p, env.c),
      slow: (sess, env) => setTimeout(() => sess.push('slow.reply', env.p, env.c), 40),
      fail: (sess, env) => this.send(sess.conn, {
        v: '1.0', e: 'sys.error', p: { code: 4300, message: 'not in room' }, c: env.c,
      }),
      silent: () => {},
    };
  }

  async start() {
    // As tether servers: MessagePack when it speaks it and it is offered, else JSON
    // when offered (servers before the binary envelope did that), else none.
    const handleProtocols = (offered) => {
      if (this.opts.msgpack && offered.has('tether.v1.msgpack')) return 'tether.v1.msgpack';
      return offered.has('tether.v1.json') ? 'tether.v1.json' : false;
    };
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols });
    await once(this.wss, 'listening');
    this.url = `ws://127.0.0.1:${this.wss.address().port}/ws`;
    this.wss.on('connection', (ws) => this._accept(ws));
    return this;
  }

  async stop() {
    for (const ws of this.live) ws.terminate();
    await new Promise((r) => this.wss.close(r));
  }

  send(conn, env) {
    if (conn && conn.ws.readyState === WebSocket.OPEN) {
      conn.ws.send(conn.ws.protocol === 'tether.v1.msgpack' ? msgpack.encode(env) : JSON.stringify(env));
    }
  }

  /** All envelopes of a given event name received so far. */
  got(event) { return this.received.filter((env) => env.e === event); }

  /** The only session (most tests have one client). */
  get session() { return [...this.sessions.values()].at(-1); }

  /** Drop a session's connection abruptly (no close handshake). */
  drop(sess) { sess.conn.ws.terminate(); }

  /** End a session as the server's application does: sys.session.ended, close 4115. */
  endSession(sess, reason, { withEvent = true } = {}) {
    this.sessions.delete(sess.id);
    if (withEvent) this.send(sess.conn, { v: '1.0', e: 'sys.session.ended', p: { sessionId: sess.id, reason } });
    sess.conn.ws.close(4115, 'session ended');
  }

  /** Ask the client something: a sys.request in the session stream, id `sr<n>`. */
  request(sess, event, payload) {
    const c = `sr${this.nextId++}`;
    const env = { v: '1.0', e: 'sys.request', c, p: { event, payload }, s: ++sess.seq };
    sess.buffer.push(env);
    this.send(sess.conn, env);
    return c;
  }

  /** The answer to request `c`, once it came. */
  answer(c) { return this.answers.find((a) => a.c === c); }

  _accept(ws) {
    this.connections += 1;
    this.live.add(ws);
    const conn = { ws, session: null };
    ws.on('message', (data, isBinary) => {
      this.frames.push(isBinary ? 'binary' : 'text');
      const env = isBinary ? msgpack.decode(data) : JSON.parse(data.toString());
      this.received.push(env);
      this._handle(conn, env);
    });
    ws.on('close', () => {
      this.live.delete(ws);
      if (conn.session && conn.session.conn === conn) conn.session.conn = null;
    });
  }

  _newSession(conn, user) {
    const id = `sess-${this.nextId++}`;
    const server = this;
    const sess = {
      id, user, token: `tok-${id}-0`, rotations: 0, seq: 0, buffer: [], acked: 0, conn,
      push(e, p, c) {
        const env = { v: '1.0', e, p, s: ++this.seq };
        if (c !== undefined) env.c = c;
        this.buffer.push(env);
        server.send(this.conn, env);
        return env;
      },
    };
    this.sessions.set(id, sess);
    conn.session = sess;
    this.send(conn, {
      v: '1.0', e: 'sys.session.created',
      p: {
        sessionId: id, userId: user, resumeToken: sess.token,
        heartbeatMs: this.opts.heartbeatMs, resumeWindowMs: 120000,
      },
    });
    return sess;
  }

  _handle(conn, env) {
    const p = env.p || {};
    switch (env.e) {
      case 'sys.auth':
        if (p.token === 'bad') {
          this.send(conn, { v: '1.0', e: 'sys.error', p: { code: 4102, message: 'auth failed' } });
          conn.ws.close(4102, 'auth failed');
          return;
        }
        this._newSession(conn, p.token);
        return;
      case 'sys.reconnect.request': {
        const sess = this.sessions.get(p.sessionId);
        let reason = this.refuseNextResume;
        this.refuseNextResume = null;
        if (!reason) {
          if (!sess) reason = 'unknown';
          else if (this.usedTokens.has(p.resumeToken)) reason = 'used';
          else if (p.resumeToken !== sess.token) reason = 'invalid';
          else if (p.token !== sess.user) reason = 'foreign';
        }
        if (reason) {
          this.send(conn, {
            v: '1.0', e: 'sys.error', c: env.c,
            p: { code: 4106, message: `session not restored: ${reason}`, reason },
          });
          this._newSession(conn, p.token);
          return;
        }
        this.usedTokens.add(sess.token);
        sess.token = `tok-${sess.id}-${++sess.rotations}`;
        if (sess.conn && sess.conn !== conn) sess.conn.ws.terminate();
        sess.conn = conn;
        conn.session = sess;
        const missed = sess.buffer.filter((m) => m.s > p.lastSeq);
        const restored = {
          v: '1.0', e: 'sys.session.restored', c: env.c,
          p: { sessionId: sess.id, resumeToken: sess.token, replayed: missed.length },
        };
        if (!this.opts.replayFirst) this.send(conn, restored);
        for (const m of missed) this.send(conn, m);
        if (this.opts.duplicateReplay) for (const m of missed) this.send(conn, m);
        if (this.opts.replayFirst) this.send(conn, restored);
        return;
      }
      case 'sys.ack':
        if (conn.session) conn.session.acked = p.seq;
        return;
      case 'sys.session.end':
        if (conn.session) {
          this.sessions.delete(conn.session.id);
          this.ended.push({ id: conn.session.id, reason: p.reason });
          conn.session = null;
        }
        conn.ws.close(1000, 'session ended');
        return;
      case 'sys.reply':
      case 'sys.reply.error':
        this.answers.push(env);
        return;
      case 'sys.pong':
        return;
      default: {
        if (!conn.session) {
          this.send(conn, { v: '1.0', e: 'sys.error', c: env.c, p: { code: 4101, message: 'not authenticated' } });
          return;
        }
        const h = this.handlers[env.e];
        if (h) h(conn.session, env);
      }
    }
  }
}

// ------------------------------------------------------------------ helpers

async function waitFor(pred, what, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const FAST = { initialMs: 5, maxMs: 20, jitter: 0 };

/** A client with tiny delays, recording states, sessions and `tick` events. */
function makeClient(url, opts = {}) {
  const client = new TetherClient(url, {
    token: 'alice', WebSocket, backoff: FAST, ackDelayMs: 20, ...opts,
  });
  const log = { states: [], sessions: [], ticks: [], errors: [] };
  client.onState((s, info) => log.states.push({ s, ...info }));
  client.on('session', (info) => log.sessions.push(info));
  client.on('tick', (p, env) => log.ticks.push(env.s));
  client.on('sys.error', (e) => log.errors.push(e));
  return { client, log };
}

async function withServer(opts, fn) {
  const server = await new FakeServer(opts).start();
  const clients = [];
  try {
    await fn(server, (o) => { const r = makeClient(server.url, o); clients.push(r.client); return r; });
  } finally {
    for (const c of clients) c.close();
    await server.stop();
  }
}

async function connected(client, log, n = 1) {
  client.connect();
  await waitFor(() => log.sessions.length >= n, 'a session');
}

// ------------------------------------------------------------------ tests

test('auth: first message is sys.auth with the token; session event and state connected', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    assert.equal(server.received[0].e, 'sys.auth');
    assert.equal(server.received[0].v, '1.0');
    assert.deepEqual(server.received[0].p, { token: 'alice' });
    assert.deepEqual(log.sessions[0], {
      restored: false, reason: 'new', initial: true, rejected: 0, sessionId: 'sess-1', userId: 'alice',
    });
    assert.deepEqual(log.states.map((x) => x.s), [State.CONNECTING, State.CONNECTED]);
    assert.equal(client.sessionId, 'sess-1');
    assert.equal(client.userId, 'alice');
    assert.ok(client.online);
  }));

test('request/reply: matched by correlation id, replies in any order', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const slow = client.request('slow', { n: 1 });
    const fast = client.request('echo', { n: 2 });
    assert.deepEqual(await fast, { n: 2 });
    assert.deepEqual(await slow, { n: 1 });
    const cs = server.received.filter((e) => e.c).map((e) => e.c);
    assert.equal(new Set(cs).size, 2, 'distinct correlation ids');
    // A matched reply is not also emitted as an event.
    let emitted = 0;
    client.on('echo.reply', () => emitted++);
    await client.request('echo', 'x');
    assert.equal(emitted, 0);
  }));

test('request: sys.error with its c rejects with code and message', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    await assert.rejects(client.request('fail', { room: 'x' }), (e) => {
      assert.ok(e instanceof TetherError);
      assert.equal(e.code, 4300);
      assert.equal(e.message, 'not in room');
      return true;
    });
    // A sys.error that answers nothing pending goes to 'sys.error' listeners.
    server.send(server.session.conn, { v: '1.0', e: 'sys.error', p: { code: 4105, message: 'rate limited' } });
    await waitFor(() => log.errors.length === 1, 'sys.error event');
    assert.equal(log.errors[0].code, 4105);
  }));

test('request: times out after timeoutMs', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const t0 = Date.now();
    await assert.rejects(client.request('silent', {}, { timeoutMs: 50 }), (e) => {
      assert.equal(e.code, LocalError.TIMEOUT);
      return true;
    });
    assert.ok(Date.now() - t0 >= 45);
  }));

test('sys.* event names are refused locally', () =>
  withServer({}, async (server, mk) => {
    const { client } = mk();
    assert.throws(() => client.send('sys.auth', {}), TypeError);
    assert.throws(() => client.send('has space', {}), TypeError);
    await assert.rejects(client.request('sys.ping'), TypeError);
  }));

test('heartbeat: sys.ping is answered with sys.pong carrying the same payload', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    server.send(server.session.conn, { v: '1.0', e: 'sys.ping', p: { n: 7 } });
    await waitFor(() => server.got('sys.pong').length === 1, 'a pong');
    assert.deepEqual(server.got('sys.pong')[0].p, { n: 7 });
  }));

test('idle timeout: a silent connection is dropped and the session resumed', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ idleTimeoutMs: 80 });
    await connected(client, log);
    await waitFor(() => log.sessions.length === 2, 'a resumed session');
    assert.equal(log.sessions[1].restored, true);
    assert.equal(server.got('sys.reconnect.request').length, 1);
  }));

test('stream: duplicates by s are dropped, early ones held until the gap fills; acks', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const sess = server.session;
    const conn = sess.conn;
    const a = sess.push('tick', {});
    const b = sess.push('tick', {});
    server.send(conn, b); // duplicate
    server.send(conn, a); // older duplicate
    const c = { v: '1.0', e: 'tick', p: {}, s: 3 };
    const d = { v: '1.0', e: 'tick', p: {}, s: 4 };
    server.send(conn, d); // ahead of 3: held
    server.send(conn, c);
    server.send(conn, d); // duplicate of a held-then-delivered one
    await waitFor(() => log.ticks.length >= 4, '4 ticks');
    await sleep(30);
    assert.deepEqual(log.ticks, [1, 2, 3, 4]);
    assert.equal(client.lastSeq, 4);
    // Quiet for ackDelayMs: the highest contiguous s is acknowledged.
    await waitFor(() => sess.acked === 4, 'sys.ack 4');
    assert.deepEqual(server.got('sys.ack').at(-1).p, { seq: 4 });
  }));

test('stream: acks every ackEvery messages without waiting for quiet', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ ackEvery: 4, ackDelayMs: 10000 });
    await connected(client, log);
    for (let i = 0; i < 9; i++) server.session.push('tick', {});
    await waitFor(() => log.ticks.length === 9, '9 ticks');
    await waitFor(() => server.got('sys.ack').length === 2, 'two acks');
    assert.deepEqual(server.got('sys.ack').map((e) => e.p.seq), [4, 8]);
  }));

test('stream: a gap that never fills is reported, then delivery goes on', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ gapTimeoutMs: 40 });
    const gaps = [];
    client.on('gap', (g) => gaps.push(g));
    await connected(client, log);
    server.send(server.session.conn, { v: '1.0', e: 'tick', p: {}, s: 3 });
    await waitFor(() => log.ticks.length === 1, 'held tick delivered');
    assert.deepEqual(gaps, [{ from: 1, to: 2 }]);
    assert.equal(client.lastSeq, 3);
  }));

for (const variant of [
  { name: 'restored then replay', opts: {} },
  { name: 'replay then restored', opts: { replayFirst: true } },
  { name: 'replay sent twice', opts: { duplicateReplay: true } },
]) {
  test(`resume (${variant.name}): reconnect.request with lastSeq and token; missed messages once, in order`, () =>
    withServer(variant.opts, async (server, mk) => {
      const { client, log } = mk();
      await connected(client, log);
      const sess = server.session;
      sess.push('tick', {});
      sess.push('tick', {});
      await waitFor(() => log.ticks.length === 2, '2 ticks');
      const firstToken = sess.token;
      server.drop(sess);
      await waitFor(() => sess.conn === null, 'server sees the drop');
      for (let i = 0; i < 3; i++) sess.push('tick', {}); // missed
      await waitFor(() => log.sessions.length === 2, 'restored session');
      const req = server.got('sys.reconnect.request')[0];
      assert.deepEqual(req.p, { sessionId: 'sess-1', resumeToken: firstToken, lastSeq: 2, token: 'alice' });
      assert.deepEqual(log.sessions[1], { restored: true, replayed: 3, sessionId: 'sess-1', userId: 'alice' });
      await waitFor(() => log.ticks.length >= 5, '5 ticks');
      await sleep(30);
      assert.deepEqual(log.ticks, [1, 2, 3, 4, 5]);
      const states = log.states.map((x) => x.s);
      assert.deepEqual(states, [State.CONNECTING, State.CONNECTED, State.RECONNECTING, State.RECONNECTED]);
      assert.equal(log.states[2].code, 1006);

      // The next resume uses the rotated token.
      const rotated = sess.token;
      assert.notEqual(rotated, firstToken);
      server.drop(sess);
      await waitFor(() => log.sessions.length === 3, 'second resume');
      assert.equal(server.got('sys.reconnect.request')[1].p.resumeToken, rotated);
      assert.equal(server.got('sys.reconnect.request')[1].p.lastSeq, 5);
      assert.equal(log.sessions[2].restored, true);
      assert.equal(log.sessions[2].replayed, 0);
      // The replayed ones get acknowledged on the resumed connection.
      await waitFor(() => sess.acked === 5, 'ack of the replayed');
    }));
}

test('refused resume: session {restored:false, reason}, in-flight requests reject, numbering restarts', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const old = server.session;
    old.push('tick', {});
    await waitFor(() => log.ticks.length === 1, 'a tick');
    const inflight = client.request('silent', {}, { timeoutMs: 5000 });
    await waitFor(() => server.got('silent').length === 1, 'request sent');
    server.refuseNextResume = 'expired';
    server.drop(old);
    await assert.rejects(inflight, (e) => {
      assert.equal(e.code, 4106);
      assert.equal(e.reason, 'expired');
      return true;
    });
    await waitFor(() => log.sessions.length === 2, 'new session');
    assert.deepEqual(log.sessions[1], {
      restored: false, reason: 'expired', initial: false, rejected: 1, sessionId: 'sess-2', userId: 'alice',
    });
    assert.equal(client.sessionId, 'sess-2');
    assert.equal(client.lastSeq, 0);
    server.session.push('tick', {}); // s = 1 on the new session: not a duplicate
    await waitFor(() => log.ticks.length === 2, 'tick on new session');
    assert.deepEqual(log.ticks, [1, 1]);
    assert.equal(log.errors.length, 0, 'the 4106 is reported through the session event');
  }));

test('resume refused as used when an old token is replayed (server-side check of the fake)', () =>
  withServer({}, async (server, mk) => {
    // Guards the fake itself, so that the other tests mean something.
    const { client, log } = mk();
    await connected(client, log);
    const sess = server.session;
    const t0 = sess.token;
    server.drop(sess);
    await waitFor(() => log.sessions.length === 2, 'resumed');
    // (The client stays open: its close() would end the session on the fake.)
    const ws = new WebSocket(server.url);
    await once(ws, 'open');
    ws.send(JSON.stringify({ v: '1.0', e: 'sys.reconnect.request', c: 'r1', p: { sessionId: sess.id, resumeToken: t0, lastSeq: 0, token: 'alice' } }));
    const [data] = await once(ws, 'message');
    const err = JSON.parse(data.toString());
    assert.equal(err.e, 'sys.error');
    assert.equal(err.p.code, 4106);
    assert.equal(err.p.reason, 'used');
    assert.equal(err.c, 'r1');
    ws.terminate();
  }));

test('offline queue: sends and requests made while offline go out once, in order, after reconnect', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 60, maxMs: 60, jitter: 0 } });
    await connected(client, log);
    server.drop(server.session);
    await waitFor(() => client.state === State.RECONNECTING, 'reconnecting');
    assert.equal(client.send('note', { i: 1 }), false);
    const reply = client.request('echo', { i: 2 });
    assert.equal(client.send('note', { i: 3 }), false);
    assert.equal(client.queued, 3);
    assert.deepEqual(await reply, { i: 2 });
    await sleep(50);
    const sent = server.received.filter((e) => e.e === 'note' || e.e === 'echo').map((e) => e.p.i);
    assert.deepEqual(sent, [1, 2, 3]);
    assert.equal(client.queued, 0);
    assert.equal(client.send('note', { i: 4 }), true, 'online again: sent at once');
  }));

test('offline queue: full queue refuses new messages (QUEUE_FULL), keeps the old ones', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ queueLimit: 2 });
    client.send('note', { i: 1 });
    client.send('note', { i: 2 });
    assert.throws(() => client.send('note', { i: 3 }), (e) => e.code === LocalError.QUEUE_FULL);
    await assert.rejects(client.request('echo', {}), (e) => e.code === LocalError.QUEUE_FULL);
    await connected(client, log);
    await waitFor(() => server.got('note').length === 2, 'queued notes');
    await sleep(20);
    assert.deepEqual(server.got('note').map((e) => e.p.i), [1, 2]);
  }));

test('offline queue: a queued request that times out is never sent', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await assert.rejects(client.request('echo', { late: true }, { timeoutMs: 20 }), (e) => e.code === LocalError.TIMEOUT);
    assert.equal(client.queued, 0);
    await connected(client, log);
    await sleep(30);
    assert.equal(server.got('echo').length, 0);
  }));

test('close(): stops reconnecting, rejects pending requests, state disconnected', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const pending = client.request('silent', {}, { timeoutMs: 5000 });
    client.close(1000, 'bye');
    await assert.rejects(pending, (e) => e.code === LocalError.CLOSED);
    assert.equal(client.state, State.DISCONNECTED);
    assert.deepEqual(log.states.at(-1), {
      s: State.DISCONNECTED, code: 1000, reason: 'bye', byClient: true, endedBy: 'client',
    });
    await sleep(100);
    assert.equal(server.connections, 1);
    assert.throws(() => client.send('note', {}), (e) => e.code === LocalError.CLOSED);
  }));

test('close(): ends the session on the server first (sys.session.end with the reason)', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    await connected(client, log);
    const id = client.sessionId;
    client.close(1000, 'logout');
    await waitFor(() => server.ended.length === 1, 'the session ended on the server');
    assert.deepEqual(server.ended, [{ id, reason: 'logout' }]);
    assert.equal(client.sessionId, null, 'nothing left to resume');
  }));

test('close() while offline: nothing to end (the session is left to expire)', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 200, maxMs: 200, jitter: 0 } });
    await connected(client, log);
    server.drop(server.session);
    await waitFor(() => client.state === State.RECONNECTING, 'reconnecting');
    client.close();
    assert.equal(log.states.at(-1).endedBy, null);
    assert.equal(server.got('sys.session.end').length, 0);
  }));

for (const withEvent of [true, false]) {
  test(`ended by the server (${withEvent ? 'sys.session.ended + 4115' : 'close 4115 alone'}): disconnected with the reason, no reconnect`, () =>
    withServer({}, async (server, mk) => {
      const { client, log } = mk();
      await connected(client, log);
      const pending = client.request('silent', {}, { timeoutMs: 5000 }).then(() => null, (e) => e);
      await waitFor(() => server.got('silent').length === 1, 'request sent');
      server.endSession(server.session, 'kicked', { withEvent });
      await waitFor(() => client.state === State.DISCONNECTED, 'disconnected');
      const last = log.states.at(-1);
      assert.equal(last.code, 4115);
      assert.equal(last.endedBy, 'server');
      assert.equal(last.byClient, false);
      if (withEvent) assert.equal(last.reason, 'kicked');
      assert.equal((await pending).code, 4115);
      await sleep(80);
      assert.equal(server.connections, 1, 'no reconnect');
      assert.ok(!log.states.some((x) => x.s === State.RECONNECTING));
      assert.throws(() => client.send('note', {}), (e) => e.code === LocalError.CLOSED);
    }));
}

test('close 4116 (session moved, node stopping): resumes at once, not after the backoff', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 5000, maxMs: 5000, jitter: 0 } });
    await connected(client, log);
    const id = client.sessionId;
    server.session.conn.ws.close(4116, 'node stopping: resume elsewhere now');
    await waitFor(() => server.got('sys.reconnect.request').length === 1, 'resumed at once', 1000);
    const reconnecting = log.states.find((x) => x.s === State.RECONNECTING);
    assert.equal(reconnecting.code, 4116);
    assert.equal(reconnecting.delayMs, 0);
    assert.equal(server.got('sys.reconnect.request')[0].p.sessionId, id);
    client.close();
  }));

test('handover: answered with sys.handover; requests the node refuses (4116) go again after the resume, first and in order', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 5000, maxMs: 5000, jitter: 0 } });
    await connected(client, log);
    // Three requests the fake server does not answer; then the node hands over.
    server.handlers.hold = () => {};
    const replies = [client.request('hold', 1), client.request('hold', 2), client.request('hold', 3)];
    await waitFor(() => server.got('hold').length === 3, 'the three requests');
    const conn = server.session.conn;
    server.send(conn, { v: '1.0', e: 'sys.handover' });
    await waitFor(() => server.got('sys.handover').length === 1, 'the client says it sends nothing more');
    assert.equal(client.online, false, 'what is sent now waits for the resume');
    const later = client.request('echo', 'later');
    // The node answered the first before the notice; it refuses the other two.
    const [first, second, third] = server.got('hold');
    server.session.push('hold.reply', 'one', first.c);
    for (const env of [second, third]) {
      server.send(conn, { v: '1.0', e: 'sys.error', c: env.c, p: { code: 4116, message: 'not processed' } });
    }
    assert.equal(await replies[0], 'one');
    conn.ws.close(4116, 'handed over: resume elsewhere now');
    await waitFor(() => server.got('sys.reconnect.request').length === 1, 'resumed at once', 1000);
    // Sent again on the resumed session, in order, before the one queued since.
    await waitFor(() => server.got('hold').length === 5, 'the refused two again');
    const order = server.received.filter((e) => e.e === 'hold' || e.e === 'echo').slice(3).map((e) => e.c);
    assert.deepEqual(order, [second.c, third.c, server.got('echo')[0].c]);
    server.session.push('hold.reply', 'two', second.c);
    server.session.push('hold.reply', 'three', third.c);
    assert.deepEqual(await Promise.all([replies[1], replies[2], later]), ['two', 'three', 'later']);
  }));

test('server requests: answered by the onRequest handler (value or promise), refused by a throw, 4150 without one', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk();
    client.onRequest('client.time', (p) => ({ tz: p.tz, time: '12:00' }));
    const offSlow = client.onRequest('client.slow', async (p) => { await sleep(10); return p * 2; });
    client.onRequest('client.secret', () => { throw new TetherError(4201, 'not telling'); });
    await connected(client, log);
    const sess = server.session;
    const a = server.request(sess, 'client.time', { tz: 'UTC' });
    const b = server.request(sess, 'client.slow', 21);
    const c = server.request(sess, 'client.secret');
    const d = server.request(sess, 'client.unknown');
    await waitFor(() => [a, b, c, d].every((x) => server.answer(x)), 'four answers');
    assert.deepEqual(server.answer(a), { v: '1.0', e: 'sys.reply', p: { tz: 'UTC', time: '12:00' }, c: a, t: server.answer(a).t });
    assert.equal(server.answer(b).p, 42);
    assert.deepEqual([server.answer(c).e, server.answer(c).p], ['sys.reply.error', { code: 4201, message: 'not telling' }]);
    assert.equal(server.answer(d).p.code, 4150);
    offSlow();
    const e = server.request(sess, 'client.slow', 1);
    await waitFor(() => server.answer(e), 'refused');
    assert.equal(server.answer(e).p.code, 4150, 'the handler was removed');
    client.offRequest('client.time');
    const f = server.request(sess, 'client.time', {});
    await waitFor(() => server.answer(f), 'refused');
    assert.equal(server.answer(f).p.code, 4150);
    assert.equal(log.ticks.length, 0, 'requests are not application events');
  }));

test('server requests: made while offline, replayed on resume (even twice) and answered once; an answer made offline waits for its session', () =>
  withServer({ duplicateReplay: true }, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 50, maxMs: 50, jitter: 0 } });
    let calls = 0;
    let release;
    const gate = new Promise((r) => { release = r; });
    client.onRequest('client.time', async () => { calls++; await gate; return 'later'; });
    await connected(client, log);
    const sess = server.session;
    server.drop(sess);
    await waitFor(() => client.state === State.RECONNECTING, 'reconnecting');
    const c = server.request(sess, 'client.time', null); // buffered: the client is away
    await waitFor(() => calls === 1, 'handler called after the resume');
    server.drop(sess); // the answer is not ready yet
    await waitFor(() => client.state === State.RECONNECTING, 'reconnecting again');
    release();
    await sleep(10);
    assert.equal(server.answers.length, 0, 'offline: waits');
    await waitFor(() => server.answer(c), 'answered once the session is restored');
    assert.equal(server.answer(c).p, 'later');
    assert.equal(calls, 1, 'the replayed request was not delivered twice');
    assert.equal(server.answers.length, 1);
  }));

test('close() while waiting to reconnect: no further attempt', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ backoff: { initialMs: 50, maxMs: 50, jitter: 0 } });
    await connected(client, log);
    server.drop(server.session);
    await waitFor(() => client.state === State.RECONNECTING, 'reconnecting');
    client.close();
    await sleep(120);
    assert.equal(server.connections, 1);
    assert.equal(client.state, State.DISCONNECTED);
  }));

test('auth failure (4102): disconnected, no reconnect loop', () =>
  withServer({}, async (server, mk) => {
    const { client, log } = mk({ token: 'bad' });
    const pending = client.request('echo', {}).then(() => null, (e) => e);
    client.connect();
    await waitFor(() => client.state === State.DISCONNECTED, 'disconnected');
    const last = log.states.at(-1);
    assert.equal(last.code, 4102);
    assert.equal(last.byClient, false);
    assert.equal((await pending).code, 4102, 'the queued request rejects with the close code');
    await sleep(80);
    assert.equal(server.connections, 1);
    assert.ok(!log.states.some((x) => x.s === State.RECONNECTING));
  }));

test('token may be a function, called again for each resume', () =>
  withServer({}, async (server, mk) => {
    let calls = 0;
    const { client, log } = mk({ token: async () => { calls++; return 'alice'; } });
    await connected(client, log);
    server.drop(server.session);
    await waitFor(() => log.sessions.length === 2, 'resumed');
    assert.equal(calls, 2);
    assert.equal(server.got('sys.reconnect.request')[0].p.token, 'alice');
  }));

test('backoff: delays double from initialMs up to maxMs, jitter lowers them by at most its share', () => {
  const b = { initialMs: 100, maxMs: 1000, jitter: 0.25 };
  const bases = [100, 200, 400, 800, 1000, 1000];
  bases.forEach((base, i) => {
    assert.equal(backoffDelay(i + 1, b, () => 0), base);
    assert.equal(backoffDelay(i + 1, b, () => 0.999999), Math.round(base * 0.75));
  });
  assert.equal(backoffDelay(10000, b, () => 0), 1000, 'no overflow on large attempts');
});

test('backoff: live reconnect attempts against a dead port grow within bounds', async () => {
  // A port that was just free: nothing listens there any more.
  const tmp = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(tmp, 'listening');
  const url = `ws://127.0.0.1:${tmp.address().port}/ws`;
  await new Promise((r) => tmp.close(r));

  const backoff = { initialMs: 4, maxMs: 32, jitter: 0.5 };
  const { client, log } = makeClient(url, { backoff });
  client.connect();
  try {
    await waitFor(() => log.states.filter((x) => x.s === State.RECONNECTING).length >= 6, '6 attempts', 5000);
  } finally {
    client.close();
  }
  const tries = log.states.filter((x) => x.s === State.RECONNECTING).slice(0, 6);
  tries.forEach((t, i) => {
    const base = Math.min(32, 4 * 2 ** i);
    assert.equal(t.attempt, i + 1);
    assert.ok(t.delayMs >= Math.floor(base * 0.5) && t.delayMs <= base, `attempt ${i + 1}: ${t.delayMs} in [${base / 2}, ${base}]`);
  });
  assert.equal(log.sessions.length, 0);
});

test('codec msgpack: offered, picked, binary frames both ways, bytes stay bytes, resume', () =>
  withServer({ msgpack: true }, async (server, mk) => {
    const { client, log } = mk({ codec: 'msgpack' });
    await connected(client, log);
    assert.equal(client.codec, 'msgpack');
    const bytes = new Uint8Array([0, 1, 254, 255]);
    const reply = await client.request('echo', { name: 'pic', data: bytes, n: -3, f: 1.5 });
    assert.ok(reply.data instanceof Uint8Array, 'bytes come back as a Uint8Array');
    assert.deepEqual([...reply.data], [...bytes]);
    assert.deepEqual({ ...reply, data: null }, { name: 'pic', data: null, n: -3, f: 1.5 });
    // The server got binary frames only, `bin` for the bytes.
    assert.ok(server.frames.length >= 2 && server.frames.every((k) => k === 'binary'), server.frames.join());
    assert.ok(server.got('echo')[0].p.data instanceof Uint8Array);
    server.session.push('tick', 1);
    await waitFor(() => log.ticks.length === 1, 'a tick');
    server.drop(server.session);
    server.session.push('tick', 2);
    await waitFor(() => log.sessions.length === 2, 'the resume');
    assert.equal(log.sessions[1].restored, true);
    await waitFor(() => log.ticks.length === 2, 'the replayed tick');
    // Their `s`: the echo's reply was 1.
    assert.deepEqual(log.ticks, [2, 3]);
    assert.equal(client.codec, 'msgpack');
  }));

test('codec msgpack against a server that names JSON (one before the binary envelope): JSON, text frames', () =>
  withServer({ msgpack: false }, async (server, mk) => {
    const { client, log } = mk({ codec: 'msgpack' });
    await connected(client, log);
    assert.equal(client.codec, 'json');
    assert.deepEqual(await client.request('echo', { a: 1 }), { a: 1 });
    assert.ok(server.frames.every((k) => k === 'text'), server.frames.join());
  }));

test('codec: the MessagePack module may be passed in; an unknown codec is refused', () =>
  withServer({ msgpack: true }, async (server, mk) => {
    let encoded = 0;
    const spy = { encode: (v, o) => { encoded += 1; return msgpack.encode(v, o); }, decode: msgpack.decode };
    const { client, log } = mk({ codec: 'msgpack', msgpack: spy });
    await connected(client, log);
    await client.request('echo', 1);
    assert.ok(encoded >= 2, `${encoded} envelopes through the given encoder`);
    assert.throws(() => new TetherClient(server.url, { token: 'x', WebSocket, codec: 'cbor' }), TypeError);
  }));

test('index.d.ts declares every export of src/index.js and every public member of TetherClient', () => {
  const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(declared.sort(), Object.keys(pkg).sort());

  const body = /^export declare class TetherClient \{\n([\s\S]*?)^\}/m.exec(dts)[1];
  const members = new Set([...body.matchAll(/^ {2}(?:readonly )?(\w+)[<(:?]/gm)].map((m) => m[1]));
  members.delete('constructor');
  const runtime = new Set(['url', ...Object.getOwnPropertyNames(TetherClient.prototype)
    .filter((n) => n !== 'constructor' && !n.startsWith('_'))]);
  assert.deepEqual([...members].sort(), [...runtime].sort());
});
