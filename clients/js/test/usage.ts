// Type check of index.d.ts (`npm run typecheck`: tsc --noEmit, never run): how an
// application uses the package, by its name, and what the declarations must refuse
// (each `@ts-expect-error` fails the check if the line below it type-checks).

import NodeWebSocket from 'ws';
import {
  AUTH_FAILED,
  backoffDelay,
  LocalError,
  PROTOCOL_VERSION,
  NO_HANDLER,
  RESUME_NOT_RECOVERABLE,
  SESSION_ENDED,
  State,
  TetherClient,
  TetherError,
  type Envelope,
  type SessionInfo,
  type StateName,
  type TetherOptions,
} from 'tether-client';

interface ChatMessage {
  room: string;
  user: string;
  text: string;
  ts: number;
}

export async function usage(): Promise<void> {
  // Node: the `ws` package's constructor; browsers: the global one.
  const options: TetherOptions = { token: 'alice', WebSocket: NodeWebSocket, backoff: { initialMs: 100 } };
  const client = new TetherClient('ws://127.0.0.1:8080/ws', options).connect();
  const browser = new TetherClient('ws://127.0.0.1:8080/ws', {
    token: async () => 'bob',
    WebSocket: globalThis.WebSocket,
    queueLimit: 10,
  });

  const off = client.on<ChatMessage>('chat.message', (msg, env) => {
    const text: string = msg.text;
    const s: number | undefined = env.s;
    void text;
    void s;
  });
  off();
  client.on('session', (info) => {
    const typed: SessionInfo = info;
    void typed;
    if (info.restored) {
      const replayed: number = info.replayed;
      void replayed;
    } else {
      const reason: string = info.reason;
      const initial: boolean = info.initial;
      void reason;
      void initial;
    }
  });
  client.on('sys.error', (err) => {
    // @ts-expect-error a sys.error listener gets a TetherError, not a payload
    const text: string = err;
    void text;
    const code: number | string = err.code;
    void code;
  });
  client.on('gap', ({ from, to }) => void (from + to));
  client.on('*', (env: Envelope) => void env.e);
  client.onState((state: StateName, info) => {
    if (state === State.RECONNECTING) void info.delayMs;
  });

  const joined = await client.request<{ room: string; members: string[] }>('chat.join', { room: 'lobby' });
  const members: string[] = joined.members;
  void members;
  const sentNow: boolean = client.send('chat.send', { room: 'lobby', text: 'hi' });
  void sentNow;
  try {
    await client.request('chat.send', { room: 'nowhere', text: 'hi' }, { timeoutMs: 5000 });
  } catch (e) {
    if (e instanceof TetherError && e.code === LocalError.TIMEOUT) void e.reason;
    if (e instanceof TetherError && e.code === RESUME_NOT_RECOVERABLE) void e.envelope;
  }

  const state: StateName = client.state;
  const id: string | null = client.sessionId;
  const user: string | null = client.userId;
  const n: number = client.lastSeq + client.queued;
  const online: boolean = client.online;
  const version: '1.0' = PROTOCOL_VERSION;
  const fatal: 4102 = AUTH_FAILED;
  const delay: number = backoffDelay(3, { initialMs: 500, maxMs: 30000, jitter: 0.5 });
  void [state, id, user, n, online, version, fatal, delay, browser];
  const offTime = client.onRequest<{ tz: string }, { time: string }>('client.time', async (p) => ({ time: p.tz }));
  client.onRequest('client.secret', () => { throw new TetherError(4201, 'no'); });
  offTime();
  client.offRequest('client.secret');
  client.onState((s, info) => {
    if (s === State.DISCONNECTED && info.endedBy === 'server') void info.reason;
  });
  const ended: 4115 = SESSION_ENDED;
  const noHandler: 4150 = NO_HANDLER;
  void [ended, noHandler];
  client.close(1000, 'bye');

  // @ts-expect-error the token is required
  new TetherClient('ws://x', { WebSocket: NodeWebSocket });
  // @ts-expect-error states are a closed set
  const bad: StateName = 'online';
  // @ts-expect-error not a WebSocket constructor
  new TetherClient('ws://x', { token: 't', WebSocket: Date });
  // @ts-expect-error an event name is a string
  client.send(42, {});
  // @ts-expect-error sessionId may be null
  const sid: string = client.sessionId;
  void [bad, sid];
}
