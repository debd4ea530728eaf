//! A [`SessionStore`] on Redis: sessions any node of the cluster can resume.
//!
//! # Layout
//!
//! One hash per session, `{prefix}:session:{id}` (the id in 32 hex digits):
//!
//! | field | what |
//! |---|---|
//! | `o` | the owner, a node id (decimal) |
//! | `n` | the version: bumped by every append and compaction |
//! | `tv` | the token version: bumped by every append that changes what a token check reads, and every claim |
//! | `w` | the owner's last applied batch (appends are retried; one applies once) |
//! | `a` | `1` while attached (the owner refreshes its time to live), `0` once suspended |
//! | `s` | a snapshot: the record folded so far (`broker-redis/src/codec.rs`), after a move or a compaction |
//! | `j{n}` | a chunk of journal entries appended at version `n` |
//!
//! A record is the snapshot (or the first chunk's `Created`) followed by the chunks in
//! version order, folded with [`SessionRecord::apply`] — the one fold, in Rust; Redis
//! never reads the entries. The token appears only as its verifier.
//!
//! # The rules, atomically
//!
//! They are [`SessionTable`](ws_session::journal::SessionTable)'s, checked by the same
//! conformance cases (`tests/tests/redis_sessions.rs` runs them on both stores):
//!
//! - **Append with fencing** (one Lua script per batch): a chunk starting with
//!   `Created` for a missing record creates it, owned by the writer; a chunk for a
//!   record another node owns, or that is gone, is refused whole and its session
//!   returned as fenced. `Ended` deletes the record.
//! - **Claim on load**: the record is read (`HGETALL`) and folded, and
//!   [`SessionRecord::admits`] — the engine's token rule — decides; only then a script
//!   makes the loading node the owner *if the token version is still the one read*
//!   (else the load starts again: a token changed, or another node claimed it), compacts
//!   the record into a snapshot if nothing was appended since the read (else reads it
//!   again, now that it is the owner's alone), and publishes the session on the former
//!   owner's channel `{prefix}:node:{node}`. So the check and the claim are one atomic
//!   step as far as any other client of Redis can tell, the token rule has one
//!   definition, and messages appended meanwhile (a busy session) do not defeat a claim.
//! - **Time to live = the resume window**: set at `Suspended` (later messages do not
//!   extend it), and while attached refreshed by every append and by the owner every
//!   third of the window. A killed owner stops refreshing: its attached records live one
//!   window more, in which their clients can resume elsewhere.
//!
//! # Outages
//!
//! Every Redis command is bounded by [`RedisConfig::command_timeout`].
//!
//! - A **load** that fails or times out is an error: the hub refuses the resume as
//!   `unknown` (4106) and the client gets a new session. Nothing is claimed.
//! - **Appends** wait in a bounded queue ([`StoreOptions::journal_buffer`] entries) and
//!   are retried, in order, every `reconnect_backoff.0` (100 ms by default; not
//!   exponential, so that the held journal reaches Redis at most that long after it is
//!   back) until Redis takes them; a retried batch applies once (the `w` field). Until
//!   then a resume elsewhere reads the record as it was: a session whose token rotated
//!   meanwhile is refused there as `invalid`, one created meanwhile as `unknown`. When the queue is full the oldest batch is dropped, its entries counted
//!   in [`StoreStatus::entries_lost`] and its caller answered with an error; a lost
//!   `Message` then shows as a gap on resume, never as a hole.
//! - **Moved notices** published while a node's subscription is down are not received.
//!   The subscription is tried again every `reconnect_backoff.0`; once it is back, the
//!   node checks which of its sessions it still owns and lets the others go (as it also
//!   does every third of the resume window, and at any fenced append). Until then it
//!   keeps a stale copy: a resume that lands on it is decided on that copy (refused as
//!   `invalid` if the token rotated elsewhere).
//! - Redis restarted **empty** (no persistence) has no records: resumes elsewhere are
//!   refused as unknown, and a node's next write for a session it holds is fenced (its
//!   record is gone), so the session is let go (close 4116) and its client starts a new
//!   one. Run Redis with AOF persistence to keep sessions across a Redis restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::future::FutureExt;
use futures_util::StreamExt;
use ws_driver::adapter::{BoxFuture, Runtime};
use ws_driver::{JournalBatch, SessionStore, StoreError};
use ws_session::{JournalEntry, SessionId, SessionRecord, TokenVerifier};

use crate::commands::Commands;
use crate::{codec, RedisConfig};

/// How the session store behaves, beyond how to reach Redis.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// How long a suspended record lives (use the engines'
    /// [`EngineConfig::resume_window`](ws_session::EngineConfig::resume_window)).
    pub resume_window: Duration,
    /// Most journal entries kept while Redis does not take them; beyond it the oldest
    /// batches are dropped and counted ([`StoreStatus::entries_lost`]). Default: 100 000.
    pub journal_buffer: usize,
    /// Chunks a session's record may gather before its owner folds them into a
    /// snapshot. Default: 64.
    pub compact_after: usize,
    /// Bytes of chunks a session's record may gather before its owner folds them into
    /// a snapshot, whatever their number: folding applies the replay buffer's trims,
    /// so a record stays near the replay bound instead of holding 64 chunks of large
    /// room messages (6–8.5 MB per suspended member was measured in a busy room).
    /// Default: 256 KiB.
    pub compact_after_bytes: usize,
}

impl StoreOptions {
    /// Default journal buffer: 100 000 entries.
    pub const DEFAULT_JOURNAL_BUFFER: usize = 100_000;
    /// Default chunks before a record is folded: 64.
    pub const DEFAULT_COMPACT_AFTER: usize = 64;
    /// Default bytes of chunks before a record is folded: 256 KiB.
    pub const DEFAULT_COMPACT_AFTER_BYTES: usize = 256 * 1024;

    /// The defaults, with suspended records living `resume_window`.
    pub fn new(resume_window: Duration) -> Self {
        Self {
            resume_window,
            journal_buffer: Self::DEFAULT_JOURNAL_BUFFER,
            compact_after: Self::DEFAULT_COMPACT_AFTER,
            compact_after_bytes: Self::DEFAULT_COMPACT_AFTER_BYTES,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::new(ws_session::EngineConfig::DEFAULT_RESUME_WINDOW)
    }
}

/// What the store has done, for metrics and health checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStatus {
    /// Whether the last command on the shared connection succeeded.
    pub connected: bool,
    /// Append batches Redis took.
    pub batches_written: u64,
    /// Journal entries Redis took.
    pub entries_written: u64,
    /// Append attempts that failed and were tried again.
    pub write_retries: u64,
    /// Journal entries waiting for Redis.
    pub entries_buffered: usize,
    /// Journal entries dropped because the buffer was full (never reported as written).
    pub entries_lost: u64,
    /// Sessions whose writes were refused because another node owns them or their
    /// record is gone.
    pub fenced: u64,
    /// Loads answered (with or without a record).
    pub loads: u64,
    /// Loads that failed (Redis unreachable, timed out): refused resumes.
    pub load_failures: u64,
    /// Sessions this store's nodes claimed from another node.
    pub claims: u64,
    /// Moved notices received for this store's nodes.
    pub moved_notices: u64,
    /// Records folded into a snapshot by their owner.
    pub compactions: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A [`SessionStore`] on Redis (see the [module documentation](self)). Cheap to clone;
/// give a clone to every [`App`](ws_driver::App) of the process.
#[derive(Clone)]
pub struct RedisSessionStore {
    shared: Arc<Shared>,
    writes: mpsc::UnboundedSender<ToWriter>,
    subscriptions: mpsc::UnboundedSender<u64>,
}

/// What the writer task is asked.
enum ToWriter {
    Write(Write),
    /// The moved notices were unavailable for a while (their connection is back): check
    /// now which sessions the local nodes still own.
    Reconcile,
}

struct Shared {
    config: RedisConfig,
    options: StoreOptions,
    commands: Commands,
    status: Mutex<StoreStatus>,
    /// Where each local node's moved sessions go.
    nodes: Mutex<Vec<(u64, mpsc::UnboundedSender<SessionId>)>>,
    append: redis::Script,
    claim: redis::Script,
    compact: redis::Script,
    refresh: redis::Script,
}

/// One append, queued for the writer task.
struct Write {
    node: u64,
    batch: JournalBatch,
    answer: oneshot::Sender<Result<Vec<SessionId>, StoreError>>,
}

/// The append script. KEYS: the sessions' records. ARGV: node, batch number, time to
/// live (ms), then per key its flags (`1`/`0`: starts with `Created`; the state the
/// chunk leaves: `a` attached, `s` suspended, `e` ended, `-` unchanged; `t` if it
/// changes the token state, which bumps `tv`) and its chunk.
/// Returns the positions (1-based) of the fenced keys.
const APPEND: &str = r"
local node, batch, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local fenced = {}
for i, key in ipairs(KEYS) do
  local flags, chunk = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local created, state = string.sub(flags, 1, 1), string.sub(flags, 2, 2)
  local owner = redis.call('HGET', key, 'o')
  if not owner and created == '1' then
    redis.call('HSET', key, 'o', node, 'n', 0, 'w', 0, 'a', 1, 'tv', 0)
    owner = node
  end
  if owner ~= node then
    fenced[#fenced + 1] = i
  elseif tonumber(redis.call('HGET', key, 'w')) < batch then
    if state == 'e' then
      redis.call('DEL', key)
    else
      local n = redis.call('HINCRBY', key, 'n', 1)
      redis.call('HSET', key, 'j' .. n, chunk, 'w', batch)
      if string.sub(flags, 3, 3) == 't' then
        redis.call('HINCRBY', key, 'tv', 1)
      end
      if state == 'a' then
        redis.call('HSET', key, 'a', 1)
      elseif state == 's' then
        redis.call('HSET', key, 'a', 0)
        redis.call('PEXPIRE', key, ttl)
      end
      if redis.call('HGET', key, 'a') == '1' then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
end
return fenced
";

/// Drops the chunks of a record and keeps `snapshot` instead, if the version is still
/// `version` (and, for a compaction, the owner still `node`).
const REPLACE_CHUNKS: &str = r"
local function replace(key, snapshot)
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 1) == 'j' then
      redis.call('HDEL', key, field)
    end
  end
  redis.call('HSET', key, 's', snapshot)
  redis.call('HINCRBY', key, 'n', 1)
end
";

/// The claim script. KEYS[1]: the record. ARGV: node, the version read, the snapshot
/// of the record read, time to live (ms), the node channel prefix, the session id, the
/// token version read. Returns the former owner and whether the record was compacted
/// into the snapshot (only if nothing was appended since it was read), or nil if the
/// token state (or the owner) changed since it was read: the token check must be made
/// again. Appends that change only messages do not make a claim fail, so a busy
/// session can still be claimed.
const CLAIM: &str = r"
if redis.call('HGET', KEYS[1], 'tv') ~= ARGV[7] then
  return false
end
local former = redis.call('HGET', KEYS[1], 'o')
local compacted = 0
if redis.call('HGET', KEYS[1], 'n') == ARGV[2] then
  replace(KEYS[1], ARGV[3])
  compacted = 1
end
redis.call('HINCRBY', KEYS[1], 'tv', 1)
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'w', 0, 'a', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if former ~= ARGV[1] then
  redis.call('PUBLISH', ARGV[5] .. former, ARGV[6])
end
return {former, compacted}
";

/// The compaction script. KEYS[1]: the record. ARGV: node, the version read, the
/// snapshot. Returns 1 if compacted.
const COMPACT: &str = r"
if redis.call('HGET', KEYS[1], 'n') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then
  return 0
end
replace(KEYS[1], ARGV[3])
return 1
";

/// The refresh script. KEYS: records the node holds. ARGV: node, time to
/// live (ms). Returns the positions of those it does not own (any more).
const REFRESH: &str = r"
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'o') == ARGV[1] then
    if redis.call('HGET', key, 'a') == '1' then
      redis.call('PEXPIRE', key, ARGV[2])
    end
  else
    lost[#lost + 1] = i
  end
end
return lost
";

impl RedisSessionStore {
    /// Starts the store's tasks on `runtime` (the journal writer, the moved-notice
    /// subscriber); they connect at once, and again whenever the connection is lost.
    pub fn start<R: Runtime>(config: RedisConfig, options: StoreOptions, runtime: R) -> Self {
        let shared = Arc::new(Shared {
            commands: Commands::new(config.clone(), runtime.clone()),
            config,
            options,
            status: Mutex::new(StoreStatus::default()),
            nodes: Mutex::new(Vec::new()),
            append: redis::Script::new(APPEND),
            claim: redis::Script::new(&format!("{REPLACE_CHUNKS}{CLAIM}")),
            compact: redis::Script::new(&format!("{REPLACE_CHUNKS}{COMPACT}")),
            refresh: redis::Script::new(REFRESH),
        });
        let (writes, rx) = mpsc::unbounded();
        runtime.spawn(
            Writer {
                shared: shared.clone(),
                queue: VecDeque::new(),
                buffered: 0,
                batch: 0,
                held: HashMap::new(),
                chunks: HashMap::new(),
            }
            .run(rx),
        );
        let (subscriptions, rx) = mpsc::unbounded();
        runtime.spawn(subscriber(shared.clone(), rx, writes.clone()));
        Self {
            shared,
            writes,
            subscriptions,
        }
    }

    /// What the store has done so far.
    pub fn status(&self) -> StoreStatus {
        self.shared.lock_status().clone()
    }

    /// The key of `session`'s record.
    pub fn key(&self, session: SessionId) -> String {
        self.shared.key(session)
    }

    /// The record of `session` as Redis holds it, without claiming it (for tests and
    /// tools), and its owner.
    pub async fn peek(&self, session: SessionId) -> Result<Option<(u64, SessionRecord)>, StoreError> {
        let (fields, _) = self.shared.read(session).await?;
        Ok(fields.map(|f| (f.owner, f.record)))
    }
}

impl SessionStore for RedisSessionStore {
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<SessionId> {
        let (tx, rx) = mpsc::unbounded();
        self.shared.lock_nodes().push((node, tx));
        let _ = self.subscriptions.unbounded_send(node);
        rx
    }

    fn append(&self, node: u64, batch: JournalBatch) -> BoxFuture<Result<Vec<SessionId>, StoreError>> {
        let (answer, rx) = oneshot::channel();
        let sent = self
            .writes
            .unbounded_send(ToWriter::Write(Write { node, batch, answer }));
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError("the store's writer has stopped".into()));
            }
            rx.await
                .unwrap_or_else(|_| Err(StoreError("the store's writer has stopped".into())))
        })
    }

    fn load(
        &self,
        node: u64,
        session: SessionId,
        token: TokenVerifier,
    ) -> BoxFuture<Result<Option<SessionRecord>, StoreError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let result = shared.load(node, session, token).await;
            let mut status = shared.lock_status();
            match &result {
                Ok(_) => status.loads += 1,
                Err(err) => {
                    status.load_failures += 1;
                    status.last_error = Some(err.0.clone());
                }
            }
            result
        })
    }
}

/// A record as read: owner, version, the fold.
struct Fields {
    owner: u64,
    version: String,
    token_version: String,
    record: SessionRecord,
    chunks: usize,
}

impl Shared {
    fn key(&self, session: SessionId) -> String {
        format!("{}:session:{session}", self.config.prefix)
    }

    fn node_channel_prefix(&self) -> String {
        format!("{}:node:", self.config.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.options.resume_window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, StoreStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Vec<(u64, mpsc::UnboundedSender<SessionId>)>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells local node `node` that `session` is no longer its own.
    fn moved(&self, node: u64, session: SessionId) {
        self.lock_nodes()
            .retain(|(id, tx)| *id != node || tx.unbounded_send(session).is_ok());
    }

    /// `future` within the command timeout, its outcome kept in the status.
    async fn timed<T>(
        &self,
        future: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let result = self.commands.timed(future).await.map_err(StoreError);
        self.record(&result);
        result
    }

    /// The shared (multiplexed) connection, made if there is none.
    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let result = self.commands.connection().await.map_err(StoreError);
        self.record(&result);
        result
    }

    fn record<T>(&self, result: &Result<T, StoreError>) {
        let mut status = self.lock_status();
        status.connected = result.is_ok();
        if let Err(err) = result {
            status.last_error = Some(err.0.clone());
        }
    }

    /// Reads and folds `session`'s record.
    async fn read(&self, session: SessionId) -> Result<(Option<Fields>, ()), StoreError> {
        let mut connection = self.connection().await?;
        let hash: HashMap<String, Vec<u8>> = self
            .timed(
                redis::cmd("HGETALL")
                    .arg(self.key(session))
                    .query_async(&mut connection),
            )
            .await?;
        Ok((fold(hash)?, ()))
    }

    async fn load(
        &self,
        node: u64,
        session: SessionId,
        token: TokenVerifier,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // A claim fails only when the token state changed between read and claim (a
        // rotation, a confirmation, another claim): read again.
        for _ in 0..8 {
            let (fields, ()) = self.read(session).await?;
            let Some(fields) = fields else {
                return Ok(None);
            };
            if fields.owner == node || !fields.record.admits(&token) {
                return Ok(Some(fields.record));
            }
            let mut connection = self.connection().await?;
            let claimed: Option<(String, i64)> = self
                .timed(
                    self.claim
                        .key(self.key(session))
                        .arg(node.to_string())
                        .arg(&fields.version)
                        .arg(codec::encode_record(&fields.record))
                        .arg(self.ttl_ms())
                        .arg(self.node_channel_prefix())
                        .arg(session.to_string())
                        .arg(&fields.token_version)
                        .invoke_async(&mut connection),
                )
                .await?;
            match claimed {
                Some((_, 1)) => {
                    self.lock_status().claims += 1;
                    return Ok(Some(fields.record));
                }
                Some(_) => {
                    // Claimed, but the former owner appended since the read: the record
                    // is ours now (nobody else writes it), read it whole.
                    self.lock_status().claims += 1;
                    let (fresh, ()) = self.read(session).await?;
                    return Ok(fresh.map(|f| f.record));
                }
                None => {}
            }
        }
        Err(StoreError(
            "the record kept changing while it was being claimed".into(),
        ))
    }
}

/// Folds a record's hash; `None` for no record.
fn fold(hash: HashMap<String, Vec<u8>>) -> Result<Option<Fields>, StoreError> {
    if hash.is_empty() {
        return Ok(None);
    }
    let malformed = || StoreError("a session record this version cannot read".into());
    let text = |field: &str| {
        hash.get(field)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
            .ok_or_else(malformed)
    };
    let owner: u64 = text("o")?.parse().map_err(|_| malformed())?;
    let version = text("n")?;
    let token_version = text("tv")?;
    let mut chunks: Vec<(u64, &Vec<u8>)> = hash
        .iter()
        .filter_map(|(field, value)| Some((field.strip_prefix('j')?.parse().ok()?, value)))
        .collect();
    chunks.sort_unstable_by_key(|(n, _)| *n);
    let mut entries = Vec::new();
    for (_, chunk) in &chunks {
        entries.extend(codec::decode_chunk(chunk).map_err(|_| malformed())?);
    }
    let mut record = match hash.get("s") {
        Some(snapshot) => codec::decode_record(snapshot).map_err(|_| malformed())?,
        None => {
            let Some(first) = entries.first() else {
                return Err(malformed());
            };
            let record = SessionRecord::start(first).ok_or_else(malformed)?;
            entries.remove(0);
            record
        }
    };
    for entry in &entries {
        record.apply(entry);
    }
    Ok(Some(Fields {
        owner,
        version,
        token_version,
        record,
        chunks: chunks.len(),
    }))
}

/// What a chunk asks of the append script: whether it starts a record, the state it
/// leaves the session in, and whether it changes what a token check reads (`t`).
fn flags(entries: &[JournalEntry]) -> String {
    let created = matches!(entries.first(), Some(JournalEntry::Created { .. }));
    let mut state = '-';
    let mut token = '-';
    for entry in entries {
        match entry {
            JournalEntry::Created { .. } => {
                state = 'a';
                token = 't';
            }
            JournalEntry::Token { .. } | JournalEntry::Confirmed => token = 't',
            JournalEntry::Attached => state = 'a',
            JournalEntry::Suspended => state = 's',
            JournalEntry::Ended => {
                state = 'e';
                break;
            }
            _ => {}
        }
    }
    [if created { '1' } else { '0' }, state, token].iter().collect()
}

/// A batch waiting for Redis, encoded.
struct Queued {
    node: u64,
    number: u64,
    sessions: Vec<SessionId>,
    flags: Vec<String>,
    chunks: Vec<Vec<u8>>,
    entries: usize,
    answer: oneshot::Sender<Result<Vec<SessionId>, StoreError>>,
}

/// The journal writer: batches in order, each retried until Redis takes it.
struct Writer {
    shared: Arc<Shared>,
    queue: VecDeque<Queued>,
    buffered: usize,
    /// The number of the last batch queued (the `w` of the append script).
    batch: u64,
    /// Sessions each local node holds (as far as its journal says): their time to
    /// live is refreshed while attached, and their ownership checked, every third of the
    /// window and whenever the moved notices were unavailable.
    held: HashMap<u64, HashSet<SessionId>>,
    /// Chunks appended per (node, session) since its last compaction, and their bytes.
    chunks: HashMap<(u64, SessionId), (usize, usize)>,
}

impl Writer {
    async fn run(mut self, mut writes: mpsc::UnboundedReceiver<ToWriter>) {
        let shared = self.shared.clone();
        let period = shared.options.resume_window / 3;
        let mut next_refresh = Instant::now() + period;
        // Not exponential: held entries must reach Redis soon after it is back (a
        // resume elsewhere reads them), and a failed attempt costs one connect.
        let retry_every = shared.config.reconnect_backoff.0;
        loop {
            if self.queue.is_empty() {
                let mut refresh = (shared.commands.sleep)(next_refresh).fuse();
                futures_util::select_biased! {
                    write = writes.next() => match write {
                        Some(op) => self.take(op, &mut next_refresh),
                        None => return,
                    },
                    () = refresh => {}
                }
            }
            while let Ok(op) = writes.try_recv() {
                self.take(op, &mut next_refresh);
            }
            if Instant::now() >= next_refresh {
                // Failed, it is tried again soon (not at once: no busy loop in an outage).
                let wait = match self.refresh().await {
                    Ok(()) => period,
                    Err(_) => period.min(shared.config.reconnect_backoff.1),
                };
                next_refresh = Instant::now() + wait;
            }
            let Some(front) = self.queue.front() else {
                continue;
            };
            match self.write(front).await {
                Ok(fenced) => {
                    let done = self.queue.pop_front().expect("the front");
                    self.written(done, fenced).await;
                }
                Err(err) => {
                    shared.lock_status().write_retries += 1;
                    tracing::warn!(%err, retry_in = ?retry_every, buffered = self.buffered, "journal write failed; retrying");
                    // Wait before trying again, taking (and bounding) new writes meanwhile.
                    let mut retry = (shared.commands.sleep)(Instant::now() + retry_every).fuse();
                    loop {
                        futures_util::select_biased! {
                            write = writes.next() => match write {
                                Some(op) => self.take(op, &mut next_refresh),
                                None => break,
                            },
                            () = retry => break,
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, op: ToWriter, next_refresh: &mut Instant) {
        match op {
            ToWriter::Write(write) => self.enqueue(write),
            ToWriter::Reconcile => *next_refresh = Instant::now(),
        }
    }

    fn enqueue(&mut self, write: Write) {
        // A session may come more than once (batches merged): one chunk each, its
        // entries in order — a retried batch applies once per key, so a key must not
        // appear twice in one script call.
        let mut merged: Vec<(SessionId, Vec<JournalEntry>)> = Vec::with_capacity(write.batch.len());
        let mut at: HashMap<SessionId, usize> = HashMap::with_capacity(write.batch.len());
        for (session, journal) in write.batch {
            match at.get(&session) {
                Some(&i) => merged[i].1.extend(journal),
                None => {
                    at.insert(session, merged.len());
                    merged.push((session, journal));
                }
            }
        }
        let mut sessions = Vec::with_capacity(merged.len());
        let mut flags_ = Vec::with_capacity(merged.len());
        let mut chunks = Vec::with_capacity(merged.len());
        let mut entries = 0;
        for (session, journal) in &merged {
            match codec::encode_chunk(journal) {
                Ok(chunk) => {
                    sessions.push(*session);
                    flags_.push(flags(journal));
                    chunks.push(chunk);
                    entries += journal.len();
                }
                Err(codec::UnknownEntry(entry)) => {
                    tracing::error!(%session, entry, "a journal entry this store cannot write: the session's batch is dropped");
                    self.shared.lock_status().entries_lost += journal.len() as u64;
                }
            }
        }
        self.batch += 1;
        self.buffered += entries;
        self.queue.push_back(Queued {
            node: write.node,
            number: self.batch,
            sessions,
            flags: flags_,
            chunks,
            entries,
            answer: write.answer,
        });
        // Bounded: the oldest batches go first, counted and answered with an error.
        while self.buffered > self.shared.options.journal_buffer && self.queue.len() > 1 {
            let dropped = self.queue.pop_front().expect("more than one");
            self.buffered -= dropped.entries;
            tracing::error!(
                entries = dropped.entries,
                "the journal buffer is full: the oldest batch is dropped"
            );
            self.shared.lock_status().entries_lost += dropped.entries as u64;
            let _ = dropped.answer.send(Err(StoreError(
                "journal buffer full while Redis was unreachable: batch dropped".into(),
            )));
        }
        self.shared.lock_status().entries_buffered = self.buffered;
    }

    /// Runs the append script for `queued`; the fenced sessions.
    async fn write(&self, queued: &Queued) -> Result<Vec<SessionId>, StoreError> {
        if queued.sessions.is_empty() {
            return Ok(Vec::new());
        }
        let shared = &self.shared;
        let mut invocation = shared.append.prepare_invoke();
        invocation
            .arg(queued.node.to_string())
            .arg(queued.number)
            .arg(shared.ttl_ms());
        for ((session, flags), chunk) in queued.sessions.iter().zip(&queued.flags).zip(&queued.chunks) {
            invocation
                .key(shared.key(*session))
                .arg(flags.as_str())
                .arg(&chunk[..]);
        }
        let mut connection = shared.connection().await?;
        let fenced: Vec<usize> = shared.timed(invocation.invoke_async(&mut connection)).await?;
        Ok(fenced
            .into_iter()
            .filter_map(|i| queued.sessions.get(i.checked_sub(1)?).copied())
            .collect())
    }

    /// Bookkeeping after Redis took `done`, then its answer.
    async fn written(&mut self, done: Queued, fenced: Vec<SessionId>) {
        self.buffered -= done.entries;
        {
            let mut status = self.shared.lock_status();
            status.batches_written += 1;
            status.entries_written += done.entries as u64;
            status.entries_buffered = self.buffered;
            status.fenced += fenced.len() as u64;
        }
        let held = self.held.entry(done.node).or_default();
        let mut compact = Vec::new();
        for ((session, flags), chunk) in done.sessions.iter().zip(&done.flags).zip(&done.chunks) {
            if flags.as_bytes()[1] == b'e' {
                held.remove(session);
                self.chunks.remove(&(done.node, *session));
                continue;
            }
            held.insert(*session);
            let (count, bytes) = self.chunks.entry((done.node, *session)).or_default();
            *count += 1;
            *bytes += chunk.len();
            let options = &self.shared.options;
            if *count >= options.compact_after || *bytes >= options.compact_after_bytes {
                compact.push(*session);
            }
        }
        for session in &fenced {
            held.remove(session);
            self.chunks.remove(&(done.node, *session));
        }
        if let Err(fenced) = done.answer.send(Ok(fenced)) {
            // The caller gave up waiting (its timeout): it still must let these go.
            for session in fenced.unwrap_or_default() {
                self.shared.moved(done.node, session);
            }
        }
        for session in compact {
            self.compact(done.node, session).await;
        }
    }

    /// Folds `session`'s chunks into a snapshot (best effort: tried again later).
    async fn compact(&mut self, node: u64, session: SessionId) {
        let shared = self.shared.clone();
        let Ok((Some(fields), ())) = shared.read(session).await else {
            return;
        };
        if fields.owner != node || fields.chunks == 0 {
            self.chunks.remove(&(node, session));
            return;
        }
        let Ok(mut connection) = shared.connection().await else {
            return;
        };
        let done: Result<i64, _> = shared
            .timed(
                shared
                    .compact
                    .key(shared.key(session))
                    .arg(node.to_string())
                    .arg(&fields.version)
                    .arg(codec::encode_record(&fields.record))
                    .invoke_async(&mut connection),
            )
            .await;
        if done == Ok(1) {
            self.chunks.insert((node, session), (0, 0));
            shared.lock_status().compactions += 1;
        }
    }

    /// Refreshes the time to live of every record the local nodes hold attached; lets
    /// go of those they do not own any more.
    async fn refresh(&mut self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        for (node, sessions) in &mut self.held {
            let list: Vec<SessionId> = sessions.iter().copied().collect();
            for part in list.chunks(1000) {
                let mut invocation = shared.refresh.prepare_invoke();
                invocation.arg(node.to_string()).arg(shared.ttl_ms());
                for session in part {
                    invocation.key(shared.key(*session));
                }
                let mut connection = shared.connection().await?;
                let lost: Vec<usize> = shared.timed(invocation.invoke_async(&mut connection)).await?;
                for i in lost {
                    if let Some(session) = i.checked_sub(1).and_then(|i| part.get(i)) {
                        sessions.remove(session);
                        shared.moved(*node, *session);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Receives the moved notices for the local nodes (their channels), reconnecting every
/// `reconnect_backoff.0` (not exponential: a node that misses a notice holds a stale copy
/// of the session until it finds out). After a reconnect the writer checks which
/// sessions the local nodes still own (notices published meanwhile were lost).
async fn subscriber(
    shared: Arc<Shared>,
    mut subscriptions: mpsc::UnboundedReceiver<u64>,
    writer: mpsc::UnboundedSender<ToWriter>,
) {
    let prefix = shared.node_channel_prefix();
    let mut nodes: Vec<u64> = Vec::new();
    let retry_every = shared.config.reconnect_backoff.0;
    let mut lost = false;
    loop {
        while let Ok(node) = subscriptions.try_recv() {
            nodes.push(node);
        }
        let outcome: Result<(), StoreError> = async {
            let (mut sink, stream) = shared.timed(shared.config.client.get_async_pubsub()).await?.split();
            let channels: Vec<String> = nodes.iter().map(|n| format!("{prefix}{n}")).collect();
            if !channels.is_empty() {
                shared.timed(sink.subscribe(&channels)).await?;
            }
            if std::mem::take(&mut lost) {
                tracing::info!("session store: moved notices available again; checking ownership");
                let _ = writer.unbounded_send(ToWriter::Reconcile);
            }
            let mut stream = stream.fuse();
            loop {
                futures_util::select_biased! {
                    node = subscriptions.next() => match node {
                        Some(node) => {
                            nodes.push(node);
                            shared.timed(sink.subscribe(format!("{prefix}{node}"))).await?;
                        }
                        None => return Ok(()),
                    },
                    message = stream.next() => match message {
                        Some(message) => {
                            let node = message.get_channel_name().strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok());
                            let session = std::str::from_utf8(message.get_payload_bytes()).ok().and_then(SessionId::parse);
                            if let (Some(node), Some(session)) = (node, session) {
                                shared.lock_status().moved_notices += 1;
                                shared.moved(node, session);
                            }
                        }
                        None => return Err(StoreError("the subscription connection closed".into())),
                    },
                }
            }
        }
        .await;
        match outcome {
            Ok(()) => return,
            Err(err) => {
                if !lost {
                    tracing::warn!(%err, retry_every = ?retry_every, "session store: moved notices unavailable; reconnecting");
                }
                lost = true;
                (shared.commands.sleep)(Instant::now() + retry_every).await;
            }
        }
    }
}
