// A stand-in chat server in Node, for developing the non-Rust parts of the chat
// example before (or beside) the Rust one: it serves index.html and tether-client.js
// and speaks protocol v1 with the chat events at /ws, the way the lead defined them.
// It is NOT the tether server and proves nothing about it; scripts/chat_peer.py is
// meant to be run against the real one.
//
//   node fake_chat_server.mjs [port]        (default 8080; needs `npm install` here)
//
// Kept simple: unbounded-ish replay buffer (1000 messages), replies and presence on
// the session stream (with `s`), errors 4101/4102/4105-style codes from the brief,
// and 4300 for application errors (not in room, bad payload) — the real server's
// application codes may differ. GET /debug/drop?user=NAME aborts that user's
// connections, to watch the page resume.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';

const here = (f) => fileURLToPath(new URL(f, import.meta.url));
const FILES = {
  '/': ['text/html; charset=utf-8', here('../index.html')],
  '/tether-client.js': ['text/javascript; charset=utf-8', here('../tether-client.js')],
};
const HEARTBEAT_MS = 20000;
const RESUME_WINDOW_MS = 120000;
const BUFFER_MAX = 1000;
const NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;

const sessions = new Map(); // id -> session
const rooms = new Map(); // room -> Set<session>

const hex = (n) => randomBytes(n).toString('hex');
const env = (e, p, c) => (c === undefined ? { v: '1.0', e, p, t: Date.now() } : { v: '1.0', e, p, c, t: Date.now() });

function sendRaw(conn, obj) {
  if (conn && conn.ws.readyState === WebSocket.OPEN) conn.ws.send(JSON.stringify(obj));
}

function push(sess, obj) {
  const m = { ...obj, s: ++sess.seq };
  sess.buffer.push(m);
  if (sess.buffer.length > BUFFER_MAX) { sess.buffer.shift(); sess.overflowed = true; }
  sendRaw(sess.conn, m);
}

function newSession(conn, user) {
  const sess = {
    id: hex(8), user, token: hex(16), used: new Set(), seq: 0, buffer: [], overflowed: false,
    rooms: new Set(), conn, detachedAt: null,
  };
  sessions.set(sess.id, sess);
  conn.session = sess;
  sendRaw(conn, env('sys.session.created', {
    sessionId: sess.id, userId: user, resumeToken: sess.token,
    heartbeatMs: HEARTBEAT_MS, resumeWindowMs: RESUME_WINDOW_MS,
  }));
}

function error(conn, code, message, c, reason) {
  const p = reason ? { code, message, reason } : { code, message };
  sendRaw(conn, env('sys.error', p, c));
}

function leaveRoom(sess, room) {
  const members = rooms.get(room);
  if (!members) return;
  members.delete(sess);
  sess.rooms.delete(room);
  for (const other of members) push(other, env('chat.presence', { room, user: sess.user, joined: false }));
  if (members.size === 0) rooms.delete(room);
}

function expire() {
  const now = Date.now();
  for (const sess of sessions.values()) {
    if (sess.detachedAt !== null && now - sess.detachedAt > RESUME_WINDOW_MS) {
      for (const room of [...sess.rooms]) leaveRoom(sess, room);
      sessions.delete(sess.id);
    }
  }
}
setInterval(expire, 5000).unref();

function onMessage(conn, msg) {
  const p = msg.p && typeof msg.p === 'object' ? msg.p : {};
  const c = typeof msg.c === 'string' ? msg.c : undefined;
  if (msg.e === 'sys.auth' || msg.e === 'sys.reconnect.request') {
    if (conn.session) { error(conn, 4103, 'already authenticated', c); return; }
    if (typeof p.token !== 'string' || !NAME_RE.test(p.token)) {
      error(conn, 4102, 'authentication failed: a user name of 1-32 [A-Za-z0-9_-] is expected', c);
      conn.ws.close(4102, 'authentication failed');
      return;
    }
    if (msg.e === 'sys.auth') { newSession(conn, p.token); return; }
    const sess = sessions.get(p.sessionId);
    let reason = null;
    if (!sess) reason = 'unknown';
    else if (sess.used.has(p.resumeToken)) reason = 'used';
    else if (p.resumeToken !== sess.token) reason = 'invalid';
    else if (sess.user !== p.token) reason = 'foreign';
    else if (sess.detachedAt !== null && Date.now() - sess.detachedAt > RESUME_WINDOW_MS) reason = 'expired';
    else if (sess.overflowed && (sess.buffer.length === 0 || sess.buffer[0].s > p.lastSeq + 1)) reason = 'gap';
    if (reason) {
      error(conn, 4106, `session not restored: ${reason}`, c, reason);
      newSession(conn, p.token);
      return;
    }
    sess.used.add(sess.token);
    sess.token = hex(16);
    if (sess.conn && sess.conn !== conn) { sess.conn.session = null; sess.conn.ws.terminate(); }
    sess.conn = conn;
    sess.detachedAt = null;
    conn.session = sess;
    const missed = sess.buffer.filter((m) => m.s > p.lastSeq);
    sendRaw(conn, env('sys.session.restored', { sessionId: sess.id, resumeToken: sess.token, replayed: missed.length }, c));
    for (const m of missed) sendRaw(conn, m);
    return;
  }
  const sess = conn.session;
  if (!sess) { error(conn, 4101, 'not authenticated: send sys.auth first', c); return; }
  switch (msg.e) {
    case 'sys.pong': return;
    case 'sys.ping': sendRaw(conn, env('sys.pong', msg.p, c)); return;
    case 'sys.ack': {
      const seq = Number(p.seq) || 0;
      while (sess.buffer.length && sess.buffer[0].s <= seq) sess.buffer.shift();
      return;
    }
    case 'chat.join': {
      const room = p.room;
      if (typeof room !== 'string' || room.length < 1 || room.length > 64) { error(conn, 4013, 'room: 1-64 characters', c); return; }
      let members = rooms.get(room);
      if (!members) { members = new Set(); rooms.set(room, members); }
      if (!members.has(sess)) {
        for (const other of members) push(other, env('chat.presence', { room, user: sess.user, joined: true }));
        members.add(sess);
        sess.rooms.add(room);
      }
      push(sess, env('chat.joined', { room, members: [...new Set([...members].map((m) => m.user))] }, c));
      return;
    }
    case 'chat.leave': {
      if (!sess.rooms.has(p.room)) { error(conn, 4300, `not in room ${p.room}`, c); return; }
      leaveRoom(sess, p.room);
      push(sess, env('chat.left', { room: p.room }, c));
      return;
    }
    case 'chat.send': {
      const { room, text } = p;
      if (typeof text !== 'string' || text.length < 1 || text.length > 2000) { error(conn, 4013, 'text: 1-2000 characters', c); return; }
      if (!sess.rooms.has(room)) { error(conn, 4300, `not in room ${room}`, c); return; }
      push(sess, env('chat.sent', { room }, c));
      const m = env('chat.message', { room, user: sess.user, text, ts: Date.now() });
      for (const member of rooms.get(room)) push(member, m);
      return;
    }
    default:
      error(conn, 4300, `unknown event ${msg.e}`, c);
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const path = url.pathname;
  if (path === '/debug/drop') {
    // Try the resume by hand: abort the TCP connections of ?user=NAME (no close
    // handshake), as a network fault would.
    let n = 0;
    for (const sess of sessions.values()) {
      if (sess.conn && sess.user === url.searchParams.get('user')) { sess.conn.ws.terminate(); n += 1; }
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`dropped ${n} connection(s)\n`);
    return;
  }
  const f = FILES[path];
  if (!f || req.method !== 'GET') { res.writeHead(404, { 'content-type': 'text/plain' }); res.end('not found\n'); return; }
  res.writeHead(200, { 'content-type': f[0], 'cache-control': 'no-store' });
  res.end(readFileSync(f[1]));
});

const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => {
  const conn = { ws, session: null, alive: Date.now() };
  const ping = setInterval(() => sendRaw(conn, env('sys.ping', null)), HEARTBEAT_MS);
  ws.on('message', (data, isBinary) => {
    if (isBinary) { ws.close(1003, 'text only'); return; }
    let msg;
    try { msg = JSON.parse(data.toString()); } catch { error(conn, 4002, 'invalid JSON'); return; }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) { error(conn, 4003, 'not an object'); return; }
    if (typeof msg.e !== 'string' || typeof msg.v !== 'string') { error(conn, 4004, 'v and e are required', msg.c); return; }
    onMessage(conn, msg);
  });
  ws.on('close', () => {
    clearInterval(ping);
    const sess = conn.session;
    if (sess && sess.conn === conn) { sess.conn = null; sess.detachedAt = Date.now(); }
  });
});

// `node --test` run from a parent folder would pick this file up (it lies under
// test/): it is a tool, not a test, so it does not start there.
const port = Number(process.argv[2] || 8080);
if (!process.env.NODE_TEST_CONTEXT) server.listen(port, '127.0.0.1', () => {
  console.log(`fake chat server (not tether): http://127.0.0.1:${port}/  ws://127.0.0.1:${port}/ws`);
});
