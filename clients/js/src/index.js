// tether-client (clients/js/src/index.js) — a small client of tether protocol v1.
//
// One ES module, no dependencies, no build step. It runs in a browser as is and in
// Node 20 when given a WebSocket constructor (for example the one of the npm package
// `ws`): `new TetherClient(url, { WebSocket })`. The binary envelope
// (`codec: 'msgpack'`) needs a MessagePack encoder: `@msgpack/msgpack`, imported when
// the client connects, or any `{encode, decode}` passed as `options.msgpack` (a
// browser without a bundler passes the module it loaded). Types: ../index.d.ts. The chat
// example (adapter-tokio/examples/chat) embeds this file and serves it at
// `/tether-client.js`.
//
// What it does for the application:
// - authenticates with a first `sys.auth` message and waits for `sys.session.created`;
// - answers `sys.ping` with `sys.pong`, and treats a connection on which nothing
//   arrives for too long as dead;
// - numbers: drops every session message whose `s` it has already delivered, delivers
//   the others in `s` order, and acknowledges the highest contiguous `s` (`sys.ack`);
// - reconnects after a drop with exponential backoff and jitter, and resumes the
//   session with `sys.reconnect.request` (session id, resume token, last `s`, token);
//   the messages missed meanwhile are replayed by the server and delivered once;
// - tells the application whether the session was restored (`session` event), and
//   never hides a lost session: requests that were waiting for an answer on it reject;
// - keeps messages sent while offline in a bounded queue and sends each of them once
//   when a session is up again;
// - matches replies to requests by correlation id (`c`), with a timeout;
// - ends its session on `close()` (`sys.session.end`), and stops for good when the
//   server ends it (`sys.session.ended`, close 4115);
// - answers the server's requests (`sys.request`) with the handlers of `onRequest`.
//
// Protocol: docs/PROTOCOL.md of the tether repository.

/** Protocol version written on every envelope. */
export const PROTOCOL_VERSION = '1.0';

/** The subprotocol of the JSON envelope (text frames). */
export const JSON_PROTOCOL = 'tether.v1.json';
/** The subprotocol of the binary envelope (MessagePack in binary frames). */
export const MSGPACK_PROTOCOL = 'tether.v1.msgpack';

/** Connection states reported to {@link TetherClient#onState} listeners. */
export const State = Object.freeze({
  /** Not started yet (before `connect()`). */
  IDLE: 'idle',
  /** First connection attempt in progress. */
  CONNECTING: 'connecting',
  /** First session is up (`sys.session.created`). */
  CONNECTED: 'connected',
  /** The connection was lost (or could not be made); waiting or trying again. */
  RECONNECTING: 'reconnecting',
  /** A session is up again after a loss (restored or not: see the `session` event). */
  RECONNECTED: 'reconnected',
  /** Stopped for good: `close()` was called, the server ended the session, or
   * authentication failed (the `disconnected` info says which). */
  DISCONNECTED: 'disconnected',
});

/** Error codes the client produces itself (server codes are numbers). */
export const LocalError = Object.freeze({
  /** A request got no reply within its `timeoutMs`. */
  TIMEOUT: 'TIMEOUT',
  /** `codec: 'msgpack'` without a MessagePack module: none was passed as
   * `options.msgpack` and `@msgpack/msgpack` could not be imported. */
  NO_MSGPACK: 'NO_MSGPACK',
  /** The offline queue is full: the message was not accepted. */
  QUEUE_FULL: 'QUEUE_FULL',
  /** The client was closed with `close()` before the request was answered. */
  CLOSED: 'CLOSED',
});

/**
 * Every code a tether server sends in `sys.error` or a close frame, by the names of the
 * Rust `ws_session::ErrorCode` (docs/PROTOCOL.md has the table; a Rust test checks that
 * this object and the Rust constants agree). Applications' own codes start at 4200.
 */
export const ErrorCode = Object.freeze({
  INVALID_PAYLOAD: 4013,
  UNKNOWN_SYSTEM_EVENT: 4100,
  NOT_AUTHENTICATED: 4101,
  AUTH_FAILED: 4102,
  AUTH_TIMEOUT: 4103,
  IDLE_TIMEOUT: 4104,
  RATE_LIMITED: 4105,
  NOT_RECOVERABLE: 4106,
  TOO_MANY_ROOMS: 4107,
  ROOM_NAME_TOO_LONG: 4108,
  ALREADY_AUTHENTICATED: 4109,
  SLOW_CONSUMER: 4110,
  TAKEN_OVER: 4111,
  RESUME_IN_PROGRESS: 4112,
  BINARY_NOT_SUPPORTED: 4113,
  ORIGIN_NOT_ALLOWED: 4114,
  SESSION_ENDED: 4115,
  SESSION_MOVED: 4116,
  TEXT_NOT_SUPPORTED: 4117,
  UNKNOWN_EVENT: 4150,
  INTERNAL: 4199,
});

/** Server error code: the session could not be resumed (`reason` says why). */
export const RESUME_NOT_RECOVERABLE = ErrorCode.NOT_RECOVERABLE;
/** Server error / close code: authentication failed. The client does not retry it. */
export const AUTH_FAILED = ErrorCode.AUTH_FAILED;
/** Close code: the server ended the session on purpose (after `sys.session.ended`).
 * The client neither resumes nor reconnects. */
export const SESSION_ENDED = ErrorCode.SESSION_ENDED;
/** Error code of a refused server request when the client has no handler for it. */
export const NO_HANDLER = ErrorCode.UNKNOWN_EVENT;

/**
 * An error of the protocol or of the client.
 *
 * `code` is the server's numeric code for a `sys.error` (e.g. 4105 rate limited,
 * 4106 session not restored) or one of {@link LocalError} for errors found locally.
 */
export class TetherError extends Error {
  /**
   * @param {number|string} code  numeric server code or a {@link LocalError} name
   * @param {string} message      human-readable text
   * @param {object} [extra]
   * @param {string} [extra.reason]  machine-readable detail (e.g. `used` for 4106)
   * @param {object} [extra.envelope] the `sys.error` envelope, when there is one
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'TetherError';
    /** @type {number|string} */
    this.code = code;
    /** @type {string|undefined} */
    this.reason = extra.reason;
    /** @type {object|undefined} */
    this.envelope = extra.envelope;
  }
}

/**
 * Delay before reconnect attempt number `attempt` (1, 2, 3, …): `initialMs` doubled
 * per attempt, capped at `maxMs`, then lowered by a random part of at most `jitter`
 * of itself. The result lies in `[base × (1 − jitter), base]` where
 * `base = min(maxMs, initialMs × 2^(attempt−1))`.
 *
 * @param {number} attempt 1 for the first retry
 * @param {{initialMs:number, maxMs:number, jitter:number}} backoff
 * @param {() => number} [random] uniform in [0, 1); `Math.random` by default
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, backoff, random = Math.random) {
  const exp = Math.min(Math.max(attempt - 1, 0), 52);
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** exp);
  const jitter = Math.min(Math.max(backoff.jitter, 0), 1);
  return Math.round(base * (1 - jitter * random()));
}

const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`

/**
 * @typedef {object} TetherOptions
 * @property {string|(() => (string|Promise<string>))} token
 *   The credential sent in `sys.auth` and again in every `sys.reconnect.request`
 *   (authentication runs again on resume). A function is called before each attempt,
 *   so a token can be refreshed.
 * @property {{initialMs?:number, maxMs?:number, jitter?:number}} [backoff]
 *   Reconnect delays; see {@link backoffDelay}. Defaults: 500 ms, 30 000 ms, 0.5.
 * @property {number} [queueLimit=1000]
 *   How many messages may wait while offline. When full, new messages are
 *   REFUSED (`send` throws, `request` rejects, with code `QUEUE_FULL`); the ones
 *   already queued keep their place. Nothing queued is ever dropped silently.
 * @property {Function} [WebSocket]
 *   The WebSocket constructor; `globalThis.WebSocket` by default (required in Node 20).
 * @property {number} [ackEvery=16]
 *   Send `sys.ack` as soon as this many messages are unacknowledged …
 * @property {number} [ackDelayMs=1000]
 *   … or after this much quiet following the last message delivered.
 * @property {number} [handshakeTimeoutMs=10000]
 *   How long to wait for `sys.session.created` / `sys.session.restored` after the
 *   socket opens before giving the connection up and retrying.
 * @property {number} [idleTimeoutMs]
 *   Drop the connection (and reconnect) when nothing arrives for this long. Default:
 *   twice the `heartbeatMs` the server announced, plus 5 s; 0 turns it off.
 * @property {number} [gapTimeoutMs=5000]
 *   How long a message that arrived ahead of a missing `s` is held waiting for the
 *   gap to fill; after it the held messages are delivered and a `gap` event is emitted.
 * @property {number[]} [fatalCloseCodes=[4102]]
 *   Close codes after which the client stops instead of reconnecting.
 * @property {() => number} [random=Math.random] randomness for jitter (tests).
 */

/**
 * A client of tether protocol v1.
 *
 * Events delivered to {@link TetherClient#on} listeners:
 * - any application event name (`chat.message`, …): `fn(payload, envelope)`, for
 *   messages that are not the reply to a pending request;
 * - `'*'`: `fn(envelope)` for every application envelope delivered;
 * - `'session'`: `fn(info)` each time a session is up:
 *   `{restored: true, replayed, sessionId, userId}` after a successful resume;
 *   `{restored: false, reason, initial, sessionId, userId, rejected}` otherwise —
 *   `initial` is true (and `reason` is `'new'`) for the very first session; after a
 *   refused resume `reason` is the server's (`unknown`, `expired`, `used`, `invalid`,
 *   `foreign`, `gap`) and `rejected` counts the requests that were rejected with it;
 * - `'sys.error'`: `fn(TetherError)` for server errors that answer no pending request;
 * - `'gap'`: `fn({from, to})` when messages `from..to` never arrived (see
 *   `gapTimeoutMs`); the server promises not to let this happen.
 *
 * Delivery rules:
 * - A request sent on a session that is then restored keeps waiting for its reply
 *   (replies on the session stream are replayed); it is never sent twice.
 * - A request sent on a session that is NOT restored rejects with code 4106 and the
 *   server's `reason`: its answer is lost with the session.
 * - Messages still in the offline queue (never sent) are sent once on whatever
 *   session comes up next, restored or new.
 * - Messages sent from inside a `session` listener go out before the offline queue
 *   is flushed, so an application can re-join its rooms after a session was not
 *   restored and before its queued messages are sent.
 */
export class TetherClient {
  /**
   * @param {string} url   e.g. `ws://localhost:8080/ws`
   * @param {TetherOptions} options
   */
  constructor(url, options = {}) {
    this.url = url;
    const b = options.backoff || {};
    this._opts = {
      token: options.token,
      backoff: {
        initialMs: b.initialMs ?? 500,
        maxMs: b.maxMs ?? 30000,
        jitter: b.jitter ?? 0.5,
      },
      queueLimit: options.queueLimit ?? 1000,
      ackEvery: options.ackEvery ?? 16,
      ackDelayMs: options.ackDelayMs ?? 1000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10000,
      idleTimeoutMs: options.idleTimeoutMs,
      gapTimeoutMs: options.gapTimeoutMs ?? 5000,
      fatalCloseCodes: options.fatalCloseCodes ?? [AUTH_FAILED],
      random: options.random ?? Math.random,
      codec: options.codec ?? 'json',
    };
    if (this._opts.codec !== 'json' && this._opts.codec !== 'msgpack') {
      throw new TypeError(`unknown codec ${JSON.stringify(this._opts.codec)}: 'json' or 'msgpack'`);
    }
    /** @type {{encode: Function, decode: Function} | null} */
    this._msgpack = options.msgpack || null;
    this._connCodec = 'json'; // what the current socket agreed on
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('no WebSocket constructor: pass options.WebSocket');
    }

    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {Set<Function>} */
    this._stateListeners = new Set();
    /** @type {Map<string, Function>} server request handlers, by event */
    this._requestHandlers = new Map();
    this._endedBy = null; // {reason} once the server said it ended the session

    this._state = State.IDLE;
    this._ws = null;
    this._stopped = false;
    this._attempt = 0; // failed attempts since the last session was up
    this._reconnectTimer = null;
    this._handshakeTimer = null;
    this._idleTimer = null;

    // Session.
    this._session = null; // {sessionId, userId, resumeToken, heartbeatMs, resumeWindowMs}
    this._established = false; // a session is up on the current socket
    this._everHadSession = false;
    this._resumeRefusal = null; // reason of a 4106 received during this handshake
    this._resumeFromSeq = 0; // lastSeq sent in the current sys.reconnect.request
    this._authError = null; // the sys.error 4102 that precedes a 4102 close

    // Stream numbering.
    this._lastSeq = 0; // highest contiguous `s` delivered
    this._held = new Map(); // s -> envelope, arrived ahead of a gap
    this._gapTimer = null;
    this._lastAckSent = 0;
    this._ackTimer = null;

    // Outgoing.
    this._queue = []; // [{env, pending?}] waiting for a session
    this._pending = new Map(); // c -> {resolve, reject, timer, sent, sessionId}
    this._cPrefix = Math.floor(this._opts.random() * 36 ** 6).toString(36);
    this._cCounter = 0;
  }

  // ---------------------------------------------------------------- public API

  /** Current state (one of {@link State}). */
  get state() { return this._state; }
  /** Id of the current session, or null before the first one. */
  get sessionId() { return this._session ? this._session.sessionId : null; }
  /** User id the server gave the session, or null. */
  get userId() { return this._session ? this._session.userId : null; }
  /** Highest contiguous `s` delivered on the current session. */
  get lastSeq() { return this._lastSeq; }
  /** How many messages wait in the offline queue. */
  get queued() { return this._queue.length; }
  /** The envelope codec of the current (or last) connection: `'msgpack'` when the
   * server picked `tether.v1.msgpack`, else `'json'`. */
  get codec() { return this._connCodec; }
  /** True when a session is up and messages go out at once. */
  get online() { return this._established && this._ws !== null && this._ws.readyState === OPEN; }

  /**
   * Start connecting. Retries with backoff until a session is up, and again after
   * every loss, until {@link TetherClient#close} is called.
   * @returns {this}
   */
  connect() {
    if (this._state !== State.IDLE) return this;
    this._setState(State.CONNECTING);
    if (this._opts.codec === 'msgpack' && !this._msgpack) {
      // Loaded on first use, so that a JSON client (and a browser without a bundler)
      // never needs the package.
      import('@msgpack/msgpack').then((module) => {
        this._msgpack = module;
        if (!this._stopped) this._open();
      }, (e) => {
        if (this._stopped) return;
        this._stopped = true;
        const reason = `${LocalError.NO_MSGPACK}: codec 'msgpack' needs @msgpack/msgpack or options.msgpack (${e && e.message})`;
        this._setState(State.DISCONNECTED, { code: 1006, reason, byClient: false, endedBy: null });
      });
      return this;
    }
    this._open();
    return this;
  }

  /**
   * Close the connection and stop reconnecting. On a live session the session is
   * ended on the server first (`sys.session.end`), which forgets it at once instead
   * of keeping it for its resume window; the `disconnected` info then says
   * `endedBy: 'client'`. Closed while offline, the session is left to expire.
   * Pending requests reject with code `CLOSED`; queued messages are discarded.
   * @param {number} [code=1000]
   * @param {string} [reason='']
   */
  close(code = 1000, reason = '') {
    if (this._stopped) return;
    const ended = this.online && this._rawSend(makeEnvelope('sys.session.end', reason ? { reason } : undefined));
    this._stopped = true;
    this._clearTimers();
    const ws = this._ws;
    this._detach();
    if (ws) {
      try { ws.close(code, reason); } catch { try { ws.close(); } catch { /* already gone */ } }
    }
    const err = new TetherError(LocalError.CLOSED, 'client closed');
    for (const [c, p] of this._pending) { this._pending.delete(c); clearTimeout(p.timer); p.reject(err); }
    this._queue = [];
    if (ended) this._session = null;
    this._setState(State.DISCONNECTED, { code, reason, byClient: true, endedBy: ended ? 'client' : null });
  }

  /**
   * Answer the server's requests for `event` (`ServerHandle::request` on the server).
   * `fn(payload, envelope)` returns the answer, or a promise of it; throwing (or
   * rejecting) refuses the request: with the error's numeric `code` (use 4200 and up)
   * and `message`, else with 4199. One handler per event (a second call replaces the
   * first); requests for an event without a handler are refused with 4150.
   * The answer goes out on the session the request came on: at once, or after a
   * resume if the connection dropped meanwhile; it is dropped if that session is not
   * restored (the server has then failed the request already).
   * @param {string} event
   * @param {(payload: *, envelope: object) => *} fn
   * @returns {() => void} a function that removes the handler
   */
  onRequest(event, fn) {
    this._requestHandlers.set(event, fn);
    return () => { if (this._requestHandlers.get(event) === fn) this._requestHandlers.delete(event); };
  }

  /**
   * Remove the request handler of `event`.
   * @param {string} event
   */
  offRequest(event) {
    this._requestHandlers.delete(event);
  }

  /**
   * Listen to an event (see the class description for the names).
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) { set = new Set(); this._listeners.set(event, set); }
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * Remove a listener added with {@link TetherClient#on}.
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  /**
   * Listen to state changes: `fn(state, info)`. `info` carries, by state:
   * `reconnecting` → `{attempt, delayMs, code, reason}` (the close that caused it);
   * `disconnected` → `{code, reason, byClient}`; others → `{}`.
   * @param {(state: string, info: object) => void} fn
   * @returns {() => void} a function that removes the listener
   */
  onState(fn) {
    this._stateListeners.add(fn);
    return () => this._stateListeners.delete(fn);
  }

  /**
   * Send an application event without waiting for an answer. Goes out at once when
   * online, else waits in the offline queue and is sent once when a session is up.
   * @param {string} event application event name (not `sys.*`)
   * @param {*} [payload]
   * @returns {boolean} true if written to the socket now, false if queued
   * @throws {TetherError} `QUEUE_FULL` when offline and the queue is full;
   *   `CLOSED` after `close()`
   */
  send(event, payload) {
    checkEventName(event);
    if (this._stopped) throw new TetherError(LocalError.CLOSED, 'client closed');
    const env = makeEnvelope(event, payload);
    return this._sendOrQueue({ env });
  }

  /**
   * Send an application event and wait for its reply (matched by correlation id).
   * @param {string} event application event name (not `sys.*`)
   * @param {*} [payload]
   * @param {{timeoutMs?: number}} [options] timeout counted from this call, queue
   *   time included (default 30 000 ms)
   * @returns {Promise<*>} the reply's payload. Rejects with a {@link TetherError}:
   *   the server's `sys.error` (its `code`, `message`, `reason`), `TIMEOUT`,
   *   `QUEUE_FULL`, `CLOSED`, or 4106 when the session it was sent on was lost.
   */
  request(event, payload, { timeoutMs = 30000 } = {}) {
    try { checkEventName(event); } catch (e) { return Promise.reject(e); }
    if (this._stopped) return Promise.reject(new TetherError(LocalError.CLOSED, 'client closed'));
    const c = `${this._cPrefix}-${++this._cCounter}`;
    const env = makeEnvelope(event, payload, c);
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject, timer: null, sent: false, sessionId: null, event, item: null };
      const item = { env, pending };
      pending.item = item; // sent again as it is if a stopping node refuses it (4116)
      pending.timer = setTimeout(() => {
        this._pending.delete(c);
        const i = this._queue.indexOf(item);
        if (i >= 0) this._queue.splice(i, 1); // never sent: it will not be
        reject(new TetherError(LocalError.TIMEOUT, `no reply to ${event} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(c, pending);
      try {
        this._sendOrQueue(item);
      } catch (e) {
        clearTimeout(pending.timer);
        this._pending.delete(c);
        reject(e);
      }
    });
  }

  // ---------------------------------------------------------------- connection

  _open() {
    this._clearConnTimers();
    this._established = false;
    this._resumeRefusal = null;
    let ws;
    try {
      // Asking for MessagePack offers JSON after it: a server that does not speak it
      // names JSON (or nothing) and the connection runs on JSON.
      ws = this._opts.codec === 'msgpack'
        ? new this._WebSocket(this.url, [MSGPACK_PROTOCOL, JSON_PROTOCOL])
        : new this._WebSocket(this.url);
      // Binary frames as ArrayBuffer, in browsers (default 'blob') and in `ws`.
      try { ws.binaryType = 'arraybuffer'; } catch { /* a WebSocket without it */ }
    } catch (e) {
      this._onClose(1006, String(e && e.message || e));
      return;
    }
    this._ws = ws;
    ws.onopen = () => { if (this._ws === ws) this._onOpen(); };
    ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => { if (this._ws === ws) { this._detach(); this._onClose(ev.code, ev.reason); } };
  }

  async _onOpen() {
    const ws = this._ws;
    this._connCodec = ws.protocol === MSGPACK_PROTOCOL && this._msgpack ? 'msgpack' : 'json';
    let token;
    try {
      token = typeof this._opts.token === 'function' ? await this._opts.token() : this._opts.token;
    } catch (e) {
      if (this._ws === ws) this._drop(4000, 'token provider failed');
      return;
    }
    if (this._ws !== ws || this._stopped) return;
    this._armHandshakeTimer();
    this._armIdleTimer();
    if (this._session) {
      this._resumeFromSeq = this._lastSeq;
      this._rawSend(makeEnvelope('sys.reconnect.request', {
        sessionId: this._session.sessionId,
        resumeToken: this._session.resumeToken,
        lastSeq: this._lastSeq,
        token,
      }));
    } else {
      this._rawSend(makeEnvelope('sys.auth', { token }));
    }
  }

  /** Give up the current socket at once (dead or misbehaving) and reconnect. */
  _drop(code, reason) {
    const ws = this._ws;
    this._detach();
    if (ws) { try { ws.close(4000, reason); } catch { /* ignore */ } }
    this._onClose(code, reason);
  }

  _detach() {
    const ws = this._ws;
    if (ws) { ws.onopen = ws.onmessage = ws.onclose = null; ws.onerror = () => {}; }
    this._ws = null;
  }

  _onClose(code, reason) {
    this._clearConnTimers();
    this._established = false;
    if (this._stopped) return;
    if (code === SESSION_ENDED || this._endedBy) {
      // Ended on purpose by the server: no resume, no reconnect.
      const endReason = this._endedBy ? this._endedBy.reason : (reason || '');
      this._stopped = true;
      this._clearTimers();
      const err = new TetherError(SESSION_ENDED, `session ended by the server: ${endReason}`, { reason: endReason });
      for (const [c, p] of this._pending) { this._pending.delete(c); clearTimeout(p.timer); p.reject(err); }
      this._queue = [];
      this._session = null;
      this._setState(State.DISCONNECTED, {
        code: code || SESSION_ENDED, reason: endReason, byClient: false, endedBy: 'server',
      });
      return;
    }
    if (this._opts.fatalCloseCodes.includes(code)) {
      this._stopped = true;
      this._clearTimers();
      const why = reason || (this._authError && this._authError.message) || String(code);
      const err = new TetherError(code, `connection closed: ${why}`);
      for (const [c, p] of this._pending) { this._pending.delete(c); clearTimeout(p.timer); p.reject(err); }
      this._queue = [];
      this._setState(State.DISCONNECTED, { code, reason: why, byClient: false, endedBy: null });
      return;
    }
    this._attempt += 1;
    // 4116: the session is on another node now (taken over, or handed over by a
    // stopping node): the first attempt after it resumes at once; failures after it
    // back off as usual.
    const delayMs = code === ErrorCode.SESSION_MOVED && this._attempt === 1
      ? 0
      : backoffDelay(this._attempt, this._opts.backoff, this._opts.random);
    this._setState(State.RECONNECTING, { attempt: this._attempt, delayMs, code, reason });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._stopped) this._open();
    }, delayMs);
  }

  // ---------------------------------------------------------------- inbound

  _onMessage(data) {
    // The codec is fixed for the connection: a frame of the other kind is ignored.
    let env;
    if (typeof data === 'string') {
      if (this._connCodec !== 'json') return;
      try { env = JSON.parse(data); } catch { return; }
    } else {
      if (this._connCodec !== 'msgpack') return;
      try { env = this._msgpack.decode(bytesOf(data)); } catch { return; }
    }
    if (!env || typeof env !== 'object' || typeof env.e !== 'string') return;
    this._armIdleTimer(); // any inbound message counts as liveness

    if (typeof env.s === 'number' && env.s > 0) {
      this._onSequenced(env);
    } else {
      this._dispatch(env);
    }
  }

  _onSequenced(env) {
    const s = env.s;
    if (s <= this._lastSeq || this._held.has(s)) return; // duplicate
    if (s !== this._lastSeq + 1) {
      this._held.set(s, env);
      if (!this._gapTimer) {
        this._gapTimer = setTimeout(() => this._giveUpGap(), this._opts.gapTimeoutMs);
      }
      return;
    }
    this._deliverSeq(env);
    while (this._held.has(this._lastSeq + 1)) {
      const next = this._held.get(this._lastSeq + 1);
      this._held.delete(this._lastSeq + 1);
      this._deliverSeq(next);
    }
    if (this._held.size === 0 && this._gapTimer) { clearTimeout(this._gapTimer); this._gapTimer = null; }
  }

  _giveUpGap() {
    this._gapTimer = null;
    const seqs = [...this._held.keys()].sort((a, b) => a - b);
    for (const s of seqs) {
      if (s > this._lastSeq + 1) this._emit('gap', { from: this._lastSeq + 1, to: s - 1 });
      const env = this._held.get(s);
      this._held.delete(s);
      this._deliverSeq(env);
    }
  }

  _deliverSeq(env) {
    this._lastSeq = env.s;
    this._dispatch(env);
    this._scheduleAck();
  }

  _dispatch(env) {
    const e = env.e;
    if (e.startsWith('sys.')) { this._onSystem(env); return; }
    if (typeof env.c === 'string' && this._pending.has(env.c)) {
      const p = this._pending.get(env.c);
      this._pending.delete(env.c);
      clearTimeout(p.timer);
      p.resolve(env.p ?? null);
      return;
    }
    this._emit(e, env.p ?? null, env);
    this._emit('*', env);
  }

  _onSystem(env) {
    const p = env.p && typeof env.p === 'object' ? env.p : {};
    switch (env.e) {
      case 'sys.ping': {
        const pong = makeEnvelope('sys.pong', env.p ?? undefined, typeof env.c === 'string' ? env.c : undefined);
        this._rawSend(pong);
        break;
      }
      case 'sys.pong':
        break;
      case 'sys.session.created':
        this._onSessionCreated(p);
        break;
      case 'sys.session.restored':
        this._onSessionRestored(p);
        break;
      case 'sys.error':
        this._onError(env, p);
        break;
      case 'sys.handover':
        // The node stops and hands its sessions over: what is sent from now on waits
        // for the resume; tell it we send nothing more here, and it closes with 4116
        // once its answers and refusals are out (refused requests go again).
        if (this._established) {
          this._established = false;
          if (this._ackTimer) { clearTimeout(this._ackTimer); this._ackTimer = null; }
          this._rawSend(makeEnvelope('sys.handover'));
        }
        break;
      case 'sys.session.ended':
        if (this._session && p.sessionId === this._session.sessionId) {
          this._endedBy = { reason: typeof p.reason === 'string' ? p.reason : '' };
        }
        break;
      case 'sys.request':
        this._onRequest(env, p);
        break;
      default:
        break; // unknown system events are ignored (forward compatibility)
    }
  }

  _onError(env, p) {
    const err = new TetherError(p.code, p.message || `error ${p.code}`, { reason: p.reason, envelope: env });
    if (p.code === RESUME_NOT_RECOVERABLE && !this._established && this._session) {
      this._resumeRefusal = p.reason || 'unknown'; // a fresh sys.session.created follows
      return;
    }
    if (p.code === AUTH_FAILED && !this._established) {
      this._authError = err; // the server closes with 4102 next
    }
    if (typeof env.c === 'string' && this._pending.has(env.c)) {
      const pend = this._pending.get(env.c);
      if (p.code === ErrorCode.SESSION_MOVED && pend.item) {
        // Not processed by a stopping node: it goes out again after the resume,
        // after the other refused ones and before anything queued since.
        pend.sent = false;
        pend.sessionId = null;
        pend.item.resend = true;
        let at = 0;
        while (at < this._queue.length && this._queue[at].resend) at += 1;
        this._queue.splice(at, 0, pend.item);
        return;
      }
      this._pending.delete(env.c);
      clearTimeout(pend.timer);
      pend.reject(err);
      return;
    }
    this._emit('sys.error', err);
  }

  _onRequest(env, p) {
    if (typeof env.c !== 'string' || !this._session) return;
    const c = env.c;
    const sessionId = this._session.sessionId;
    const fn = this._requestHandlers.get(p.event);
    const answer = (reply) => {
      if (this._stopped || !this._session || this._session.sessionId !== sessionId) return; // session gone
      const item = { env: reply, sessionId };
      if (this.online) this._transmit(item);
      else if (this._queue.length < this._opts.queueLimit) this._queue.push(item);
    };
    const refuse = (e) => {
      const code = e && typeof e.code === 'number' ? e.code : 4199;
      const message = (e && e.message) || String(e);
      answer(makeEnvelope('sys.reply.error', { code, message }, c));
    };
    if (!fn) {
      refuse({ code: NO_HANDLER, message: `no handler for request ${p.event} on the client` });
      return;
    }
    let result;
    try { result = fn(p.payload ?? null, env); } catch (e) { refuse(e); return; }
    Promise.resolve(result).then(
      (value) => answer(makeEnvelope('sys.reply', value === undefined ? null : value, c)),
      refuse,
    );
  }

  _onSessionCreated(p) {
    const hadSession = this._session !== null;
    const old = this._session;
    this._session = {
      sessionId: p.sessionId,
      userId: p.userId,
      resumeToken: p.resumeToken,
      heartbeatMs: p.heartbeatMs,
      resumeWindowMs: p.resumeWindowMs,
    };
    // A new stream: numbering starts again at 1.
    this._lastSeq = 0;
    this._lastAckSent = 0;
    this._held.clear();
    if (this._gapTimer) { clearTimeout(this._gapTimer); this._gapTimer = null; }
    if (this._ackTimer) { clearTimeout(this._ackTimer); this._ackTimer = null; }

    let rejected = 0;
    let reason = 'new';
    if (hadSession) {
      reason = this._resumeRefusal || 'unknown';
      // Requests sent on the lost session can never be answered: say so.
      for (const [c, pend] of this._pending) {
        if (pend.sent && pend.sessionId === old.sessionId) {
          this._pending.delete(c);
          clearTimeout(pend.timer);
          pend.reject(new TetherError(RESUME_NOT_RECOVERABLE,
            `session ${old.sessionId} was not restored (${reason}); ${pend.event} got no reply`,
            { reason }));
          rejected += 1;
        }
      }
    }
    this._resumeRefusal = null;
    this._sessionUp({
      restored: false, reason, initial: !hadSession, rejected,
      sessionId: p.sessionId, userId: p.userId,
    });
  }

  _onSessionRestored(p) {
    if (!this._session) return;
    if (p.sessionId && p.sessionId !== this._session.sessionId) return;
    this._session.resumeToken = p.resumeToken; // rotated: the old one is used up
    // The server now knows we have everything up to lastSeq.
    this._lastAckSent = Math.max(this._lastAckSent, this._resumeFromSeq);
    this._sessionUp({
      restored: true, replayed: p.replayed ?? 0,
      sessionId: this._session.sessionId, userId: this._session.userId,
    });
  }

  _sessionUp(info) {
    if (this._handshakeTimer) { clearTimeout(this._handshakeTimer); this._handshakeTimer = null; }
    if (this._established) {
      // A session event on a live connection (server-initiated): just report it.
      this._emit('session', info);
      return;
    }
    this._established = true;
    this._attempt = 0;
    this._armIdleTimer();
    const wasReconnect = this._everHadSession;
    this._everHadSession = true;
    this._setState(wasReconnect ? State.RECONNECTED : State.CONNECTED, {});
    this._emit('session', info);
    this._flushQueue();
    this._scheduleAck();
  }

  // ---------------------------------------------------------------- outbound

  _sendOrQueue(item) {
    if (this.online) {
      this._transmit(item);
      return true;
    }
    if (this._queue.length >= this._opts.queueLimit) {
      throw new TetherError(LocalError.QUEUE_FULL,
        `offline queue full (${this._opts.queueLimit} messages): ${item.env.e} not accepted`);
    }
    this._queue.push(item);
    return false;
  }

  _transmit(item) {
    if (item.pending) {
      item.pending.sent = true;
      item.pending.sessionId = this._session.sessionId;
    }
    this._rawSend(item.env);
  }

  _flushQueue() {
    while (this._queue.length > 0 && this.online) {
      const item = this._queue.shift();
      // An answer to a server request goes out on its own session only.
      if (item.sessionId && item.sessionId !== this._session.sessionId) continue;
      this._transmit(item);
    }
  }

  _rawSend(env) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      // `undefined` left out in both codecs (JSON.stringify drops it).
      ws.send(this._connCodec === 'msgpack'
        ? this._msgpack.encode(env, { ignoreUndefined: true })
        : JSON.stringify(env));
      return true;
    } catch {
      return false;
    }
  }

  _scheduleAck() {
    if (!this._established) return;
    const unacked = this._lastSeq - this._lastAckSent;
    if (unacked <= 0) return;
    if (unacked >= this._opts.ackEvery) {
      this._sendAck();
      return;
    }
    if (this._ackTimer) clearTimeout(this._ackTimer);
    this._ackTimer = setTimeout(() => { this._ackTimer = null; this._sendAck(); }, this._opts.ackDelayMs);
  }

  _sendAck() {
    if (this._ackTimer) { clearTimeout(this._ackTimer); this._ackTimer = null; }
    if (!this.online || this._lastSeq <= this._lastAckSent) return;
    if (this._rawSend(makeEnvelope('sys.ack', { seq: this._lastSeq }))) {
      this._lastAckSent = this._lastSeq;
    }
  }

  // ---------------------------------------------------------------- timers

  _armHandshakeTimer() {
    if (this._handshakeTimer) clearTimeout(this._handshakeTimer);
    this._handshakeTimer = setTimeout(() => {
      this._handshakeTimer = null;
      if (!this._established) this._drop(4000, 'no session within the handshake timeout');
    }, this._opts.handshakeTimeoutMs);
  }

  _idleLimit() {
    if (this._opts.idleTimeoutMs !== undefined) return this._opts.idleTimeoutMs;
    const hb = this._session && this._session.heartbeatMs;
    return hb > 0 ? hb * 2 + 5000 : 0;
  }

  _armIdleTimer() {
    if (this._idleTimer) { clearTimeout(this._idleTimer); this._idleTimer = null; }
    const limit = this._idleLimit();
    if (!limit || !this._ws) return;
    this._idleTimer = setTimeout(() => {
      this._idleTimer = null;
      this._drop(4000, `nothing received for ${limit} ms`);
    }, limit);
  }

  _clearConnTimers() {
    for (const t of ['_handshakeTimer', '_idleTimer', '_ackTimer']) {
      if (this[t]) { clearTimeout(this[t]); this[t] = null; }
    }
  }

  _clearTimers() {
    this._clearConnTimers();
    for (const t of ['_reconnectTimer', '_gapTimer']) {
      if (this[t]) { clearTimeout(this[t]); this[t] = null; }
    }
    for (const p of this._pending.values()) clearTimeout(p.timer);
  }

  // ---------------------------------------------------------------- helpers

  _setState(state, info) {
    this._state = state;
    for (const fn of [...this._stateListeners]) {
      try { fn(state, info); } catch (e) { reportListenerError(e); }
    }
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { reportListenerError(e); }
    }
  }
}

/** The bytes of a binary frame: an ArrayBuffer (browsers, `binaryType` 'arraybuffer'),
 * a Buffer or another view (`ws`). */
function bytesOf(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('not a binary frame');
}

function makeEnvelope(e, p, c) {
  const env = { v: PROTOCOL_VERSION, e };
  if (p !== undefined) env.p = p;
  if (c !== undefined) env.c = c;
  env.t = Date.now();
  return env;
}

function checkEventName(event) {
  if (typeof event !== 'string' || !/^[!-~]{1,128}$/.test(event)) {
    throw new TypeError(`invalid event name: ${JSON.stringify(event)}`);
  }
  if (event.startsWith('sys.')) {
    throw new TypeError(`${event}: sys.* events belong to the protocol and are sent by the client itself`);
  }
}

function reportListenerError(e) {
  // A throwing listener must not break the protocol or the other listeners.
  if (typeof console !== 'undefined') console.error('tether-client: listener threw', e);
}
