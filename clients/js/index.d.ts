// Type declarations of tether-client (src/index.js), a client of tether protocol v1.
// Checked by `npm run typecheck` (test/usage.ts) and, for the list of exports and
// methods, by test/client.test.mjs.

/** Protocol version written on every envelope. */
export declare const PROTOCOL_VERSION: '1.0';

/** Connection states reported to {@link TetherClient.onState} listeners. */
export declare const State: Readonly<{
  /** Not started yet (before `connect()`). */
  IDLE: 'idle';
  /** First connection attempt in progress. */
  CONNECTING: 'connecting';
  /** First session is up (`sys.session.created`). */
  CONNECTED: 'connected';
  /** The connection was lost (or could not be made); waiting or trying again. */
  RECONNECTING: 'reconnecting';
  /** A session is up again after a loss (restored or not: see the `session` event). */
  RECONNECTED: 'reconnected';
  /** Stopped for good: `close()` was called, the server ended the session, or
   * authentication failed (the `disconnected` info says which). */
  DISCONNECTED: 'disconnected';
}>;

/** One of the values of {@link State}. */
export type StateName = (typeof State)[keyof typeof State];

/** Error codes the client produces itself (server codes are numbers). */
export declare const LocalError: Readonly<{
  /** A request got no reply within its `timeoutMs`. */
  TIMEOUT: 'TIMEOUT';
  /** The offline queue is full: the message was not accepted. */
  QUEUE_FULL: 'QUEUE_FULL';
  /** The client was closed with `close()` before the request was answered. */
  CLOSED: 'CLOSED';
  /** `codec: 'msgpack'` without a MessagePack module (none passed as `options.msgpack`,
   * and `@msgpack/msgpack` could not be imported): the client stops, with this in the
   * `disconnected` reason. */
  NO_MSGPACK: 'NO_MSGPACK';
}>;

/** One of the values of {@link LocalError}. */
export type LocalErrorCode = (typeof LocalError)[keyof typeof LocalError];

/** Server error code: the session could not be resumed (`reason` says why). */
/** Every code a tether server sends, by the names of Rust's `ws_session::ErrorCode`. */
export declare const ErrorCode: {
  readonly INVALID_PAYLOAD: 4013;
  readonly UNKNOWN_SYSTEM_EVENT: 4100;
  readonly NOT_AUTHENTICATED: 4101;
  readonly AUTH_FAILED: 4102;
  readonly AUTH_TIMEOUT: 4103;
  readonly IDLE_TIMEOUT: 4104;
  readonly RATE_LIMITED: 4105;
  readonly NOT_RECOVERABLE: 4106;
  readonly TOO_MANY_ROOMS: 4107;
  readonly ROOM_NAME_TOO_LONG: 4108;
  readonly ALREADY_AUTHENTICATED: 4109;
  readonly SLOW_CONSUMER: 4110;
  readonly TAKEN_OVER: 4111;
  readonly RESUME_IN_PROGRESS: 4112;
  readonly BINARY_NOT_SUPPORTED: 4113;
  readonly ORIGIN_NOT_ALLOWED: 4114;
  readonly SESSION_ENDED: 4115;
  readonly SESSION_MOVED: 4116;
  readonly TEXT_NOT_SUPPORTED: 4117;
  readonly UNKNOWN_EVENT: 4150;
  readonly INTERNAL: 4199;
};
export declare const RESUME_NOT_RECOVERABLE: 4106;
/** Server error / close code: authentication failed. The client does not retry it. */
export declare const AUTH_FAILED: 4102;
/** Close code: the server ended the session on purpose (after `sys.session.ended`).
 * The client neither resumes nor reconnects. */
export declare const SESSION_ENDED: 4115;
/** Error code of a refused server request when the client has no handler for it. */
export declare const NO_HANDLER: 4150;

/** A protocol envelope (docs/PROTOCOL.md): `v` version, `e` event, `p` payload,
 * `c` correlation id, `s` session sequence number, `t` sender's clock (ms). */
export interface Envelope<P = unknown> {
  v: string;
  e: string;
  p?: P;
  c?: string;
  s?: number;
  t?: number;
}

/**
 * An error of the protocol or of the client. `code` is the server's numeric code for
 * a `sys.error` (e.g. 4105 rate limited, 4106 session not restored, or an
 * application's own code) or one of {@link LocalError} for errors found locally.
 */
export declare class TetherError extends Error {
  constructor(
    code: number | LocalErrorCode,
    message: string,
    extra?: { reason?: string; envelope?: Envelope },
  );
  name: 'TetherError';
  code: number | LocalErrorCode;
  /** Machine-readable detail (e.g. `used` for 4106). */
  reason: string | undefined;
  /** The `sys.error` envelope, when there is one. */
  envelope: Envelope | undefined;
}

/** Reconnect delays: `initialMs` doubled per attempt up to `maxMs`, each lowered by a
 * random share of at most `jitter` (0..1) of itself. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  jitter: number;
}

/**
 * Delay before reconnect attempt number `attempt` (1, 2, 3, …), in
 * `[base × (1 − jitter), base]` where `base = min(maxMs, initialMs × 2^(attempt−1))`.
 * @param random uniform in [0, 1); `Math.random` by default
 */
export declare function backoffDelay(attempt: number, backoff: Backoff, random?: () => number): number;

/** What the client uses of a WebSocket: the browser's `WebSocket` and the npm `ws`
 * package's both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  /** The subprotocol the server picked ('' for none). */
  readonly protocol?: string;
  /** Set to 'arraybuffer' by the client. */
  binaryType?: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((this: any, ev: any) => any) | null;
  onmessage: ((this: any, ev: any) => any) | null;
  onerror: ((this: any, ev: any) => any) | null;
  onclose: ((this: any, ev: any) => any) | null;
}

/** A WebSocket constructor (`new WebSocket(url)`, with the subprotocols offered for
 * `codec: 'msgpack'`). */
export type WebSocketConstructor = new (url: string, protocols?: string[]) => WebSocketLike;

export interface TetherOptions {
  /** The credential sent in `sys.auth` and again in every `sys.reconnect.request`
   * (authentication runs again on resume). A function is called before each attempt,
   * so a token can be refreshed. */
  token: string | (() => string | Promise<string>);
  /** Reconnect delays; see {@link backoffDelay}. Defaults: 500 ms, 30 000 ms, 0.5. */
  backoff?: Partial<Backoff>;
  /** How many messages may wait while offline (default 1000). When full, new ones are
   * refused with `QUEUE_FULL`; queued ones are never dropped silently. */
  queueLimit?: number;
  /** The WebSocket constructor; `globalThis.WebSocket` by default (required in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Send `sys.ack` as soon as this many messages are unacknowledged (default 16) … */
  ackEvery?: number;
  /** … or after this much quiet following the last message delivered (default 1000 ms). */
  ackDelayMs?: number;
  /** How long to wait for a session after the socket opens before retrying (default 10 000 ms). */
  handshakeTimeoutMs?: number;
  /** Drop the connection (and resume) when nothing arrives for this long. Default: twice
   * the server's `heartbeatMs` plus 5 s; 0 turns it off. */
  idleTimeoutMs?: number;
  /** How long a message ahead of a missing `s` is held before the held ones are
   * delivered and a `gap` event is emitted (default 5000 ms). */
  gapTimeoutMs?: number;
  /** Close codes after which the client stops instead of reconnecting (default [4102]). */
  fatalCloseCodes?: number[];
  /** Randomness for jitter and correlation ids (tests); `Math.random` by default. */
  random?: () => number;
  /** The envelope codec to ask for: `'json'` (default, text frames) or `'msgpack'`
   * (offers `tether.v1.msgpack`, then `tether.v1.json`; binary frames when the server
   * picks it, JSON otherwise). Byte payloads (`Uint8Array`) travel as MessagePack
   * `bin` and arrive as `Uint8Array`. */
  codec?: Codec;
  /** The MessagePack encoder for `codec: 'msgpack'`; by default `@msgpack/msgpack`,
   * imported when the client connects. */
  msgpack?: MsgPackModule;
}

/** An envelope codec. */
export type Codec = 'json' | 'msgpack';

/** What the client needs of a MessagePack library (`@msgpack/msgpack` has both). */
export interface MsgPackModule {
  encode(value: unknown, options?: { ignoreUndefined?: boolean }): Uint8Array;
  decode(data: Uint8Array): unknown;
}

/** The subprotocol of the JSON envelope. */
export declare const JSON_PROTOCOL: 'tether.v1.json';
/** The subprotocol of the binary (MessagePack) envelope. */
export declare const MSGPACK_PROTOCOL: 'tether.v1.msgpack';

/** The `session` event after a successful resume: the same stream continues. */
export interface SessionRestored {
  restored: true;
  /** How many missed messages the server replays (they follow, each once, in order). */
  replayed: number;
  sessionId: string;
  userId: string;
}

/** The `session` event for a new session: the first one (`initial`, reason `'new'`) or
 * one that replaced a session the server refused to resume. */
export interface SessionCreated {
  restored: false;
  /** `'new'` for the first session, else the server's refusal reason (`unknown`,
   * `expired`, `used`, `invalid`, `foreign`, `gap`). */
  reason: string;
  initial: boolean;
  /** How many requests written on the lost session were rejected with 4106. */
  rejected: number;
  sessionId: string;
  userId: string;
}

export type SessionInfo = SessionRestored | SessionCreated;

/** Second argument of {@link TetherClient.onState} listeners: `reconnecting` carries
 * `attempt`, `delayMs`, `code`, `reason` (the close that caused it); `disconnected`
 * carries `code`, `reason`, `byClient`, `endedBy`; the other states carry nothing. */
export interface StateInfo {
  attempt?: number;
  delayMs?: number;
  code?: number;
  /** The close reason; when the server ended the session, its application's reason. */
  reason?: string;
  byClient?: boolean;
  /** Who ended the session on purpose: `'server'` (`sys.session.ended`, close 4115),
   * `'client'` (`close()` on a live session sent `sys.session.end`), or `null` (not
   * ended on purpose: a refused credential, or closed while offline). */
  endedBy?: 'server' | 'client' | null;
}

/** What a server request handler returns: the answer, or a promise of it. Throwing
 * (or rejecting) refuses the request with the error's numeric `code` (4200 and up)
 * and `message`, or 4199. */
export type RequestHandler<P = any, R = unknown> = (payload: P, envelope: Envelope) => R | Promise<R>;

/** Messages `from..to` never arrived (see `gapTimeoutMs`). */
export interface Gap {
  from: number;
  to: number;
}

/** A client of tether protocol v1: authenticates, answers pings, numbers and
 * acknowledges the session stream, resumes after drops, queues while offline. */
export declare class TetherClient {
  constructor(url: string, options: TetherOptions);
  readonly url: string;
  /** Current state. */
  readonly state: StateName;
  /** Id of the current session, or null before the first one. */
  readonly sessionId: string | null;
  /** User id the server gave the session, or null. */
  readonly userId: string | null;
  /** Highest contiguous `s` delivered on the current session. */
  readonly lastSeq: number;
  /** How many messages wait in the offline queue. */
  readonly queued: number;
  /** True when a session is up and messages go out at once. */
  readonly online: boolean;
  /** The codec of the current (or last) connection: what the server picked. */
  readonly codec: Codec;

  /** Start connecting; retries with backoff until `close()`. */
  connect(): this;
  /** Close the connection and stop reconnecting. On a live session, first ends it on
   * the server (`sys.session.end`): `disconnected` then says `endedBy: 'client'`.
   * Pending requests reject with `CLOSED`; queued messages are discarded. */
  close(code?: number, reason?: string): void;

  /** Every time a session is up. */
  on(event: 'session', fn: (info: SessionInfo) => void): () => void;
  /** Server errors that answer no pending request. */
  on(event: 'sys.error', fn: (error: TetherError) => void): () => void;
  /** Messages that never arrived (the server promises this does not happen). */
  on(event: 'gap', fn: (gap: Gap) => void): () => void;
  /** Every application envelope delivered (replies to requests excepted). */
  on(event: '*', fn: (envelope: Envelope) => void): () => void;
  /** An application event (not the reply to a pending request). */
  on<P = any>(event: string, fn: (payload: P, envelope: Envelope<P>) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
  /** State changes; returns a function that removes the listener. */
  onState(fn: (state: StateName, info: StateInfo) => void): () => void;
  /** Answer the server's requests for `event` (one handler per event; without one a
   * request is refused with 4150). Returns a function that removes the handler. */
  onRequest<P = any, R = unknown>(event: string, fn: RequestHandler<P, R>): () => void;
  /** Remove the request handler of `event`. */
  offRequest(event: string): void;

  /** Send without waiting for an answer: true if written now, false if queued.
   * Throws a {@link TetherError} `QUEUE_FULL` or `CLOSED`, a `TypeError` for a
   * `sys.*` or malformed event name. */
  send(event: string, payload?: unknown): boolean;
  /** Send and wait for the reply (matched by correlation id); resolves with its
   * payload. Rejects with a {@link TetherError}: the server's `sys.error`, `TIMEOUT`,
   * `QUEUE_FULL`, `CLOSED`, or 4106 when the session it was sent on was lost. */
  request<R = any>(event: string, payload?: unknown, options?: { timeoutMs?: number }): Promise<R>;
}
