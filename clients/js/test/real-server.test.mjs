// The package's client against the real Rust server: the chat example of adapter-tokio
// (its protocol: chat.join / chat.leave / chat.send, replies chat.joined / chat.left /
// chat.sent, room events chat.presence and chat.message; the credential is the user
// name). No fake: every envelope here is tether's.
//
// Run: npm ci && CHAT_BIN=/path/to/chat node --test test/real-server.test.mjs
// CHAT_BIN defaults to <repository>/target/release/examples/chat, built from the
// repository root with `cargo build --release -p adapter-tokio --example chat`. A
// missing binary fails the tests (it never skips them).
//
// Node 20 has no global WebSocket: the npm package `ws` is the client's WebSocket.
// Connections to be cut go through a TCP proxy written here, which resets the sockets
// (no close handshake, like a phone losing its network) and refuses new ones until it
// is let through again.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { TetherClient, TetherError, State, LocalError, AUTH_FAILED } from 'tether-client';
import { CutProxy, sleep, startChat, stopChat, waitFor, within } from './support.mjs';

const WAIT_MS = 10000; // the longest any single wait may take
const NOT_IN_ROOM = 4201; // the chat example's application error code

// ------------------------------------------------------------------ clients

let chat; // {proc, port}
const clients = [];
const proxies = [];
let roomCounter = 0;
const freshRoom = () => `room-${process.pid}-${++roomCounter}`;

/**
 * A client of the package with short reconnect delays, recording what it sees:
 * states, session events, chat messages (`text` by `user`), presence, sequence numbers.
 */
function makeClient(url, token, opts = {}) {
  const client = new TetherClient(url, {
    token, WebSocket, backoff: { initialMs: 100, maxMs: 400, jitter: 0 }, ...opts,
  });
  clients.push(client);
  const log = { states: [], sessions: [], messages: [], presence: [], seqs: [], volatile: [] };
  client.onState((state, info) => log.states.push({ state, ...info }));
  client.on('session', (info) => log.sessions.push(info));
  client.on('chat.message', (p) => log.messages.push(p));
  // Presence comes coalesced, `{room, joined: [user, …], left, away, online}`, and a member hears
  // its own changes too: the log keeps the others', one `{room, user, state}` each.
  client.on('chat.presence', (p) => {
    for (const state of ['joined', 'left', 'away', 'online']) {
      for (const user of p[state] ?? []) if (user !== token) log.presence.push({ room: p.room, user, state });
    }
  });
  // Stream messages carry `s`; volatile ones (the chat's presence) do not.
  client.on('*', (env) => { if (env.s !== undefined) log.seqs.push(env.s); else log.volatile.push(env.e); });
  const texts = (room) => log.messages.filter((m) => m.room === room).map((m) => `${m.user}: ${m.text}`);
  return { client, log, texts };
}

async function connected(c, n = 1) {
  c.client.connect();
  await waitFor(() => c.log.sessions.length >= n, `a session for ${c.client.url}`,
    () => JSON.stringify(c.log.states));
  return c.log.sessions.at(-1);
}

async function proxyToChat() {
  const proxy = await new CutProxy(chat.port).start();
  proxies.push(proxy);
  return proxy;
}

// ------------------------------------------------------------------ tests

describe('tether-client against the real chat server (adapter-tokio example)', () => {
  before(async () => {
    chat = await startChat();
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const p of proxies) await p.stop();
    await stopChat(chat && chat.proc);
  });

  test('a name authenticates; join, presence, messages both ways, leave, an application error', async () => {
    const direct = `ws://127.0.0.1:${chat.port}/ws`;
    const room = freshRoom();
    const alice = makeClient(direct, 'alice');
    const first = await connected(alice);
    assert.equal(alice.client.state, State.CONNECTED);
    assert.deepEqual(
      { restored: first.restored, initial: first.initial, reason: first.reason, userId: first.userId },
      { restored: false, initial: true, reason: 'new', userId: 'alice' },
    );
    assert.match(first.sessionId, /^[0-9a-f]{32}$/);
    assert.equal(alice.client.sessionId, first.sessionId);
    assert.equal(alice.client.userId, 'alice');
    assert.deepEqual(await alice.client.request('chat.join', { room }), { room, members: ['alice'], away: [] });

    const bob = makeClient(direct, 'bob');
    await connected(bob);
    assert.deepEqual(await bob.client.request('chat.join', { room }), { room, members: ['alice', 'bob'], away: [] });
    await waitFor(() => alice.log.presence.length === 1, 'alice to see bob join');
    assert.deepEqual(alice.log.presence, [{ room, user: 'bob', state: 'joined' }]);
    assert.ok(alice.log.volatile.length >= 1 && alice.log.volatile.every((e) => e === 'chat.presence'),
      `presence is volatile, no sequence number: ${alice.log.volatile}`);

    assert.deepEqual(await bob.client.request('chat.send', { room, text: 'hi alice' }), { room });
    assert.equal(alice.client.send('chat.send', { room, text: 'hi bob' }), true, 'sent at once when online');
    const both = ['bob: hi alice', 'alice: hi bob'];
    await waitFor(() => alice.texts(room).length === 2 && bob.texts(room).length === 2, 'both messages on both sides',
      () => JSON.stringify([alice.texts(room), bob.texts(room)]));
    assert.deepEqual(alice.texts(room), both);
    assert.deepEqual(bob.texts(room), both);
    for (const m of alice.log.messages) assert.equal(typeof m.ts, 'number');
    // Room messages are on the session stream: numbered, increasing.
    assert.ok(alice.log.seqs.every((s, i) => Number.isInteger(s) && s > (alice.log.seqs[i - 1] ?? 0)),
      `alice's sequence numbers ${alice.log.seqs}`);
    assert.ok(alice.client.lastSeq >= alice.log.seqs.at(-1), 'lastSeq counts every delivered s (replies too)');

    assert.deepEqual(await bob.client.request('chat.leave', { room }), { room });
    await waitFor(() => alice.log.presence.length === 2, 'alice to see bob leave');
    assert.deepEqual(alice.log.presence[1], { room, user: 'bob', state: 'left' });
    await assert.rejects(bob.client.request('chat.send', { room, text: 'still there?' }), (e) => {
      assert.ok(e instanceof TetherError);
      assert.equal(e.code, NOT_IN_ROOM);
      assert.match(e.message, /join/);
      return true;
    });
  });

  test('a cut connection resumes the same session: missed messages once, in order; a message queued offline goes out once', async () => {
    const room = freshRoom();
    const proxy = await proxyToChat();
    const alice = makeClient(`ws://127.0.0.1:${chat.port}/ws`, 'alice');
    const bob = makeClient(proxy.url, 'bob');
    await connected(alice);
    const first = await connected(bob);
    await alice.client.request('chat.join', { room });
    await bob.client.request('chat.join', { room });
    await alice.client.request('chat.send', { room, text: 'before the cut' });
    await waitFor(() => bob.texts(room).length === 1, 'bob to get the first message');
    const acceptedBefore = proxy.accepted;

    assert.equal(proxy.cut(), 1, 'bob had one connection through the proxy');
    await waitFor(() => bob.client.state === State.RECONNECTING, 'bob to notice the cut');
    assert.equal(bob.client.online, false);

    const missed = ['missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5'];
    for (const text of missed) {
      assert.deepEqual(await alice.client.request('chat.send', { room, text }), { room });
    }
    assert.equal(bob.client.send('chat.send', { room, text: 'typed offline' }), false, 'queued while offline');
    assert.equal(bob.client.queued, 1);
    await waitFor(() => proxy.refused >= 2, 'bob to retry while the network is down');
    proxy.restore();

    await waitFor(() => bob.log.sessions.length === 2, 'bob to resume', () => JSON.stringify(bob.log.states));
    const resumed = bob.log.sessions[1];
    assert.deepEqual(resumed, { restored: true, replayed: missed.length, sessionId: first.sessionId, userId: 'bob' });
    assert.equal(bob.client.sessionId, first.sessionId);
    assert.equal(bob.client.state, State.RECONNECTED);
    assert.ok(proxy.accepted > acceptedBefore, 'a new TCP connection carried the resume');
    const states = bob.log.states.map((s) => s.state);
    assert.deepEqual(states.slice(0, 2), [State.CONNECTING, State.CONNECTED]);
    assert.equal(states.at(-1), State.RECONNECTED);
    assert.ok(states.slice(2, -1).every((s) => s === State.RECONNECTING), states.join(' '));

    const expected = ['alice: before the cut', ...missed.map((t) => `alice: ${t}`), 'bob: typed offline'];
    await waitFor(() => bob.texts(room).length >= expected.length && alice.texts(room).length >= expected.length,
      'the replay and the queued message', () => JSON.stringify([bob.texts(room), alice.texts(room)]));
    await sleep(300); // anything delivered twice would show up by now
    assert.deepEqual(bob.texts(room), expected, 'bob: each message once, in order');
    assert.deepEqual(alice.texts(room), expected, 'alice: the queued message once, after the others');
    assert.equal(bob.client.queued, 0);
    assert.ok(bob.log.seqs.every((s, i) => s > (bob.log.seqs[i - 1] ?? 0)), `bob's s increase: ${bob.log.seqs}`);

    // The restored session goes on: a request on it is answered.
    assert.deepEqual(await bob.client.request('chat.send', { room, text: 'after' }), { room });
  });

  test('codec msgpack: binary frames both ways, a room shared with a JSON client, a cut resumes with the replay in MessagePack', async () => {
    const room = freshRoom();
    const proxy = await proxyToChat();
    // Counts the kinds of frame the server sends to each socket.
    const frames = { text: 0, binary: 0 };
    class Counting extends WebSocket {
      constructor(...args) {
        super(...args);
        this.on('message', (_data, isBinary) => { frames[isBinary ? 'binary' : 'text'] += 1; });
      }
    }
    const packed = makeClient(proxy.url, 'carol', { codec: 'msgpack', WebSocket: Counting });
    const plain = makeClient(`ws://127.0.0.1:${chat.port}/ws`, 'dave');
    const first = await connected(packed);
    await connected(plain);
    assert.equal(packed.client.codec, 'msgpack');
    assert.equal(plain.client.codec, 'json');
    assert.deepEqual(await packed.client.request('chat.join', { room }), { room, members: ['carol'], away: [] });
    await plain.client.request('chat.join', { room });
    // One message from each: both reach both, whatever codec each side speaks.
    await packed.client.request('chat.send', { room, text: 'héllo from msgpack' });
    await plain.client.request('chat.send', { room, text: 'hi from json' });
    const both = ['carol: héllo from msgpack', 'dave: hi from json'];
    await waitFor(() => packed.texts(room).length === 2 && plain.texts(room).length === 2, 'both messages on both sides',
      () => JSON.stringify([packed.texts(room), plain.texts(room)]));
    assert.deepEqual(packed.texts(room), both);
    assert.deepEqual(plain.texts(room), both);

    proxy.cut();
    await waitFor(() => packed.client.state === State.RECONNECTING, 'carol to notice the cut');
    const missed = ['missed 1', 'missed 2', 'missed 3'];
    for (const text of missed) await plain.client.request('chat.send', { room, text });
    proxy.restore();
    await waitFor(() => packed.log.sessions.length === 2, 'carol to resume', () => JSON.stringify(packed.log.states));
    assert.deepEqual(packed.log.sessions[1],
      { restored: true, replayed: missed.length, sessionId: first.sessionId, userId: 'carol' });
    const expected = [...both, ...missed.map((t) => `dave: ${t}`)];
    await waitFor(() => packed.texts(room).length >= expected.length, 'the replay',
      () => JSON.stringify(packed.texts(room)));
    await sleep(200); // anything delivered twice would show up by now
    assert.deepEqual(packed.texts(room), expected);
    assert.equal(packed.client.codec, 'msgpack');
    assert.equal(frames.text, 0, 'no text frame on a MessagePack connection');
    assert.ok(frames.binary >= 8, `${frames.binary} binary frames`);
  });

  test('a resume the server refuses is reported, not hidden (another user: foreign), and a new session goes on', async () => {
    const room = freshRoom();
    const proxy = await proxyToChat();
    let calls = 0;
    // The credential changes between connect and resume: the server refuses to hand
    // bob's session to mallory.
    const bob = makeClient(proxy.url, () => (++calls === 1 ? 'bob' : 'mallory'));
    const first = await connected(bob);
    await bob.client.request('chat.join', { room });
    await bob.client.request('chat.send', { room, text: 'one' });
    assert.ok(bob.client.lastSeq > 0);

    proxy.cut();
    await waitFor(() => bob.client.state === State.RECONNECTING, 'bob to notice the cut');
    proxy.restore();
    await waitFor(() => bob.log.sessions.length === 2, 'a session after the refused resume',
      () => JSON.stringify(bob.log.states));
    const next = bob.log.sessions[1];
    assert.equal(next.restored, false);
    assert.equal(next.initial, false);
    assert.equal(next.reason, 'foreign');
    assert.equal(next.rejected, 0);
    assert.equal(next.userId, 'mallory');
    assert.notEqual(next.sessionId, first.sessionId);
    assert.equal(bob.client.sessionId, next.sessionId);
    assert.equal(bob.client.state, State.RECONNECTED);
    assert.ok(calls >= 2, 'the token function was called again for the resume');
    // A new session: not in bob's room, a new stream.
    await assert.rejects(bob.client.request('chat.send', { room, text: 'two' }), (e) => e.code === NOT_IN_ROOM);
    // bob's old session is suspended, still in the room until its window passes: away.
    assert.deepEqual(await bob.client.request('chat.join', { room }), { room, members: ['mallory'], away: ['bob'] });
  });

  test('close() ends the client: socket closed, no reconnect, pending and later calls fail with CLOSED', async () => {
    const proxy = await proxyToChat();
    const carol = makeClient(proxy.url, 'carol');
    await connected(carol);
    assert.equal(proxy.pairs.size, 1);
    const pending = carol.client.request('chat.join', { room: freshRoom() });
    carol.client.close();
    await assert.rejects(pending, (e) => e instanceof TetherError && e.code === LocalError.CLOSED);
    assert.equal(carol.client.state, State.DISCONNECTED);
    assert.deepEqual(carol.log.states.at(-1), {
      state: State.DISCONNECTED, code: 1000, reason: '', byClient: true, endedBy: 'client',
    });
    assert.throws(() => carol.client.send('chat.send', { room: 'x', text: 'y' }), (e) => e.code === LocalError.CLOSED);
    await assert.rejects(carol.client.request('chat.leave', { room: 'x' }), (e) => e.code === LocalError.CLOSED);
    await waitFor(() => proxy.pairs.size === 0, 'the connection to end');
    await sleep(500);
    assert.equal(proxy.accepted, 1, 'no reconnect after close()');
  });

  test('close() ends the session on the server at once: the others see the user leave now, not after the resume window', async () => {
    const direct = `ws://127.0.0.1:${chat.port}/ws`;
    const room = freshRoom();
    const dave = makeClient(direct, 'dave');
    const erin = makeClient(direct, 'erin');
    await connected(dave);
    await connected(erin);
    await dave.client.request('chat.join', { room });
    await erin.client.request('chat.join', { room });
    await waitFor(() => dave.log.presence.length === 1, 'dave to see erin join');
    const closedAt = Date.now();
    erin.client.close(1000, 'logout');
    assert.equal(erin.log.states.at(-1).endedBy, 'client');
    // The chat's session hook announces the departure when the session ends: at once
    // for an ended session (the resume window is 2 minutes).
    await waitFor(() => dave.log.presence.length === 2, 'dave to see erin leave',
      () => JSON.stringify(dave.log.presence), 3000);
    assert.deepEqual(dave.log.presence[1], { room, user: 'erin', state: 'left' });
    assert.ok(Date.now() - closedAt < 3000);
  });

  test('a name the server refuses (4102) stops the client: disconnected, no retry loop', async () => {
    const proxy = await proxyToChat();
    const bad = makeClient(proxy.url, 'not a name!');
    bad.client.connect();
    await waitFor(() => bad.client.state === State.DISCONNECTED, 'the client to stop',
      () => JSON.stringify(bad.log.states));
    const last = bad.log.states.at(-1);
    assert.equal(last.code, AUTH_FAILED);
    assert.equal(last.byClient, false);
    assert.match(last.reason, /authentication failed/);
    assert.equal(bad.log.sessions.length, 0);
    await sleep(500);
    assert.equal(proxy.accepted, 1, 'no retry after an authentication failure');
  });
});

// ------------------------------------------------------------------ several nodes

/** A redis-server of this test on a free port (fails saying how to install it). */
async function startRedis() {
  const { spawn } = await import('node:child_process');
  const net = await import('node:net');
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  const proc = spawn(process.env.REDIS_SERVER || 'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  await within(10000, 'redis-server to start (apt-get install redis-server if it is missing)', new Promise((resolve, reject) => {
    proc.on('error', (e) => reject(new Error(`redis-server is needed (apt-get install redis-server): ${e.message}`)));
    const probe = () => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(); });
      s.on('error', () => setTimeout(probe, 20));
    };
    probe();
  }));
  return { proc, url: `redis://127.0.0.1:${port}` };
}

describe('the chat on two nodes sharing rooms and sessions through Redis (--redis)', () => {
  let redis;
  const nodes = [];
  before(async () => {
    redis = await startRedis();
    nodes.push(await startChat(['--redis', redis.url]));
    nodes.push(await startChat(['--redis', redis.url]));
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const p of proxies) await p.stop();
    for (const n of nodes) await stopChat(n.proc);
    redis.proc.kill('SIGKILL');
  });

  test('a page cut from node A resumes on node B: the messages it missed once, in order, then the room goes on', async () => {
    const room = freshRoom();
    const proxy = await new CutProxy(nodes[0].port).start();
    proxies.push(proxy);
    const alice = makeClient(proxy.url, 'alice');
    const bob = makeClient(`ws://127.0.0.1:${nodes[1].port}/ws`, 'bob');
    const first = await connected(alice);
    await connected(bob);
    await alice.client.request('chat.join', { room });
    await bob.client.request('chat.join', { room });
    // The room's Redis channel is subscribed asynchronously: until bob's first
    // message reaches alice across nodes.
    const deadline = Date.now() + WAIT_MS;
    while (alice.texts(room).length === 0) {
      assert.ok(Date.now() < deadline, 'a message from node B reaches node A');
      await bob.client.request('chat.send', { room, text: 'hello?' });
      await sleep(50);
    }
    await sleep(100);
    const before = alice.texts(room).length;

    proxy.cut();
    proxy.target = nodes[1].port; // the next connection lands on node B
    await waitFor(() => alice.client.state === State.RECONNECTING, 'alice to notice the cut');
    const missed = ['missed 1', 'missed 2', 'missed 3'];
    for (const text of missed) await bob.client.request('chat.send', { room, text });
    await sleep(200); // node A journals them for alice's suspended session
    proxy.restore();

    await waitFor(() => alice.log.sessions.length === 2, 'alice to resume on node B', () => JSON.stringify(alice.log.states));
    const resumed = alice.log.sessions[1];
    assert.equal(resumed.restored, true, JSON.stringify(resumed));
    assert.equal(resumed.sessionId, first.sessionId);
    await waitFor(() => alice.texts(room).length === before + missed.length, 'the missed messages', () => JSON.stringify(alice.texts(room)));
    assert.deepEqual(alice.texts(room).slice(before), missed.map((t) => `bob: ${t}`));
    await bob.client.request('chat.send', { room, text: 'after' });
    await waitFor(() => alice.texts(room).at(-1) === 'bob: after', 'the room to go on, now on node B');
    await sleep(100);
    assert.equal(alice.texts(room).length, before + missed.length + 1, 'each message once');
    const seqs = alice.log.seqs;
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `s increasing: ${seqs}`);
  });
});
