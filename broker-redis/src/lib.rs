//! # broker-redis: tether across nodes on Redis
//!
//! A [`PubSub`] backend on Redis pub/sub: the room and global broadcasts of each node,
//! and its sends to a user or a session, reach the others' sessions, encoded once. Fan-out is per room, not per node: a node
//! subscribes to a room's channel only while it has members there
//! ([`PubSub::room_occupied`]), so a publication costs one `PUBLISH` and reaches only
//! the nodes that need it (O(1) commands per publication, never O(recipients)).
//!
//! ```no_run
//! use broker_redis::{RedisConfig, RedisPubSub};
//! use ws_driver::App;
//!
//! # fn app<R: ws_driver::adapter::Runtime>(runtime: R) -> Result<App, Box<dyn std::error::Error>> {
//! let broker = RedisPubSub::start(RedisConfig::new("redis://127.0.0.1:6379")?, runtime);
//! let app = App::new().pubsub(broker);
//! # Ok(app) }
//! ```
//!
//! One task per broker, on the runtime it is given, owns two Redis connections (one
//! subscribed, one to publish, pipelined). Every command has a timeout
//! ([`RedisConfig::command_timeout`]); nothing here ever blocks the hub (it calls
//! [`PubSub`] on a task of its own, and every call here is a channel send). redis-rs
//! runs on tokio when the broker's task runs inside a tokio runtime, on smol's reactor
//! (which async-std shares) otherwise.
//!
//! **Outages.** When Redis is unreachable the node keeps serving its own clients (room
//! publications reach its own members at once then, without history), reconnects with backoff, resubscribes to its
//! rooms, and reports the state ([`RedisPubSub::status`], `tracing` events). Publications
//! made meanwhile wait in a bounded buffer ([`RedisConfig::outage_buffer`], oldest
//! dropped first) and are published once Redis is back, to the nodes subscribed then;
//! those dropped are counted in [`BrokerStatus::dropped`], never reported as sent.
//! Pub/sub itself does not store: a node that was disconnected misses what others
//! published meanwhile. A `PUBLISH` whose connection broke before Redis answered is
//! published again after the reconnect (twice, if Redis had taken it).
//!
//! **Room history** ([`RedisConfig::history_len`], on by default): a room publication is
//! added to the room's stream `{prefix}:history:{room}` and published, its entry id in
//! front, by one script; every node (the publisher too) delivers it from Redis, in the
//! room's one order, and a node that takes a session over reads the room's stream after
//! the session's position ([`PubSub::history`]). See docs/PROTOCOL.md, "Room history".
//!
//! Sends to a user or a session travel on one `{prefix}:direct` channel that every node
//! subscribes to (the nodes that hold them deliver). A publication carries its
//! MessagePack form next to the JSON one when its node made it (binary data stays `bin`
//! for the other nodes' MessagePack clients); which nodes have MessagePack connections
//! travels on `{prefix}:codecs` ([`PubSub::msgpack_elsewhere`]), so a cluster whose
//! clients all speak JSON publishes JSON only. Volatile sends (presence
//! announcements among them) travel as volatile publications, which a node delivers to
//! who is connected and never journals. Sessions any node can resume:
//! [`RedisSessionStore`] (a [`SessionStore`](ws_driver::SessionStore), see its module
//! `store`). Room members and presence counted for the whole cluster:
//! [`RedisMembership`] (a [`Membership`](ws_driver::Membership)).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod commands;
pub mod membership;
mod metrics;
pub mod store;
mod wire;

pub use membership::RedisMembership;
pub use store::{RedisSessionStore, StoreOptions, StoreStatus};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::future::FutureExt;
use futures_util::StreamExt;
use ws_driver::adapter::{BoxFuture, Runtime};
use ws_driver::{HistoryError, PubSub};
use ws_session::{Publication, RoomOffset};

/// How to reach Redis and how to behave when it is not there.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[user:password@]host:port[/db]` (`rediss://` for TLS
    /// once the application turns on one of redis-rs's TLS features, such as
    /// `tokio-rustls-comp`).
    pub client: redis::Client,
    /// Prefix of every channel this broker uses, so that several applications can
    /// share one Redis. Default: [`RedisConfig::DEFAULT_PREFIX`].
    pub prefix: String,
    /// The longest a connect, `PUBLISH`, `SUBSCRIBE` or `UNSUBSCRIBE` may take before
    /// it counts as failed (and the connection is made again). Default: 2 s.
    pub command_timeout: Duration,
    /// First and longest wait between reconnection attempts (doubling). Default:
    /// 100 ms and 5 s.
    pub reconnect_backoff: (Duration, Duration),
    /// Most publications kept while Redis is unreachable, published when it is back;
    /// beyond it the oldest are dropped and counted. Default: 1000.
    pub outage_buffer: usize,
    /// Room history: the least number of publications kept per room (a Redis stream,
    /// `{prefix}:history:{room}`, trimmed back to this length when it reaches twice
    /// it; the newest id trimmed is kept in `{prefix}:history-trim:{room}`), so that a session that
    /// moves to another node gets what its rooms published while nobody held it (see
    /// [`PubSub::room_history`]). `0` turns room history off. Default: 1000.
    pub history_len: usize,
    /// How long a room's history lives after its last publication. Keep it above the
    /// sessions' resume window: a position older than the history is read as "nothing
    /// was published since". Default: 10 minutes.
    pub history_ttl: Duration,
}

impl RedisConfig {
    /// Default channel prefix: `tether`.
    pub const DEFAULT_PREFIX: &'static str = "tether";
    /// Default command timeout: 2 s.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default outage buffer: 1000 publications.
    pub const DEFAULT_OUTAGE_BUFFER: usize = 1000;
    /// Default room history: 1000 publications per room.
    pub const DEFAULT_HISTORY_LEN: usize = 1000;
    /// Default life of a room's history after its last publication: 10 minutes.
    pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(600);

    /// The defaults for the Redis at `url`; fails if the URL cannot be used.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            reconnect_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            outage_buffer: Self::DEFAULT_OUTAGE_BUFFER,
            history_len: Self::DEFAULT_HISTORY_LEN,
            history_ttl: Self::DEFAULT_HISTORY_TTL,
        })
    }
}

/// What the broker has done, for metrics and health checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStatus {
    /// Whether both connections are up now.
    pub connected: bool,
    /// Connections made (the first included).
    pub connects: u64,
    /// Publications Redis accepted (`PUBLISH` answered).
    pub published: u64,
    /// Publications received from other processes' nodes and handed to this process's.
    pub received: u64,
    /// Publications waiting for Redis (to come back, or to answer).
    pub buffered: usize,
    /// Publications dropped because the outage buffer was full.
    pub dropped: u64,
    /// Publications Redis answered with an error (out of memory, a key of another
    /// type): delivered to this process's nodes only, not retried.
    pub refused: u64,
    /// Rooms this node is subscribed to.
    pub rooms: usize,
    /// Nodes known to have MessagePack connections (this process's and others'): while
    /// there are any, publications carry their payload's MessagePack form too
    /// ([`PubSub::msgpack_elsewhere`]).
    pub msgpack_nodes: usize,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A [`PubSub`] on Redis. Cheap to clone; every clone talks to the same task.
#[derive(Clone)]
pub struct RedisPubSub {
    ops: mpsc::UnboundedSender<Op>,
    status: Arc<Mutex<BrokerStatus>>,
    history: bool,
    /// The nodes known to have MessagePack connections, here and elsewhere.
    msgpack: Arc<Mutex<HashSet<u64>>>,
}

enum Op {
    Subscribe(u64, mpsc::UnboundedSender<Publication>),
    Publish(u64, Publication),
    Occupied(u64, String),
    Vacated(u64, String),
    History(
        u64,
        String,
        RoomOffset,
        oneshot::Sender<Result<Vec<Publication>, HistoryError>>,
    ),
    MsgPack(u64, bool),
    Cursor(String, oneshot::Sender<Option<RoomOffset>>),
}

/// A publication waiting for Redis.
struct Pending {
    node: u64,
    publication: Publication,
    /// Goes into the room's history, and reaches the local nodes from Redis (else it
    /// was delivered to them already).
    history: bool,
}

/// Adds to a room's history and publishes the entry, its id in front: one order per
/// room, for every node. Past twice the length asked for, the oldest entries are trimmed
/// down to it and the newest id trimmed is kept beside the stream, so that a reader
/// knows exactly whether what it asks for is still there. KEYS: the stream, its trim
/// mark; ARGV: channel, message, least length, time to live in ms.
const PUBLISH_WITH_HISTORY: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
local keep = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
if len >= 2 * keep then
  local cut = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - keep)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', keep)
  redis.call('SET', KEYS[2], cut[#cut][1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
";

/// A room's history after an offset, and the newest id trimmed from it (`0-0`: none),
/// read together. KEYS: the stream, its trim mark; ARGV: the offset, the most entries.
const READ_HISTORY: &str = r"
local trimmed = redis.call('GET', KEYS[2]) or '0-0'
return {trimmed, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
";

/// A stream entry as `XRANGE` gives it: its id, its fields and values.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Most entries one history read returns; more means the room published too much
/// for the session to catch up (read as trimmed).
const HISTORY_READ_MAX: usize = 100_000;

impl RedisPubSub {
    /// Starts the broker's task on `runtime`; it connects at once (and again whenever
    /// the connection is lost).
    pub fn start<R: Runtime>(config: RedisConfig, runtime: R) -> Self {
        let (ops, rx) = mpsc::unbounded();
        let status = Arc::new(Mutex::new(BrokerStatus::default()));
        let history = config.history_len > 0;
        let msgpack = Arc::new(Mutex::new(HashSet::new()));
        let task = Task {
            publish_script: redis::Script::new(PUBLISH_WITH_HISTORY),
            read_script: redis::Script::new(READ_HISTORY),
            connected: false,
            cursors: HashMap::new(),
            config,
            runtime: runtime.clone(),
            status: status.clone(),
            nodes: Vec::new(),
            rooms: HashMap::new(),
            buffer: VecDeque::new(),
            msgpack: msgpack.clone(),
            notices: Vec::new(),
        };
        runtime.spawn(task.run(rx));
        Self {
            ops,
            status,
            history,
            msgpack,
        }
    }

    /// What the broker has done so far.
    pub fn status(&self) -> BrokerStatus {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn send(&self, op: Op) {
        // Fails only once the task ended (its runtime shut down): nothing to deliver to.
        let _ = self.ops.unbounded_send(op);
    }
}

impl PubSub for RedisPubSub {
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<Publication> {
        let (tx, rx) = mpsc::unbounded();
        self.send(Op::Subscribe(node, tx));
        rx
    }

    fn publish(&self, node: u64, publication: Publication) {
        self.send(Op::Publish(node, publication));
    }

    fn room_occupied(&self, node: u64, room: &str) {
        self.send(Op::Occupied(node, room.to_owned()));
    }

    fn room_vacated(&self, node: u64, room: &str) {
        self.send(Op::Vacated(node, room.to_owned()));
    }

    fn room_history(&self) -> bool {
        self.history
    }

    fn room_cursor(&self, node: u64, room: &str) -> BoxFuture<Option<RoomOffset>> {
        let (tx, rx) = oneshot::channel();
        let _ = node;
        self.send(Op::Cursor(room.to_owned(), tx));
        Box::pin(async move { rx.await.ok().flatten() })
    }

    fn history(
        &self,
        node: u64,
        room: &str,
        after: RoomOffset,
    ) -> BoxFuture<Result<Vec<Publication>, HistoryError>> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::History(node, room.to_owned(), after, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(HistoryError::Unavailable("Redis unreachable".to_owned())))
        })
    }

    /// Told to the other processes' brokers on `{prefix}:codecs`; a broker that
    /// (re)connects asks every node to say again, so a node started later learns it at
    /// once. A node that dies without saying it has none left is still counted until
    /// the broker reconnects: its publications carry a MessagePack form nobody needs,
    /// which costs bytes, not correctness.
    fn msgpack_connections(&self, node: u64, present: bool) {
        self.send(Op::MsgPack(node, present));
    }

    fn msgpack_elsewhere(&self, node: u64) -> bool {
        let nodes = self.msgpack.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.iter().any(|&n| n != node)
    }
}

/// A local node: its id, where its deliveries go, its rooms, whether it has
/// MessagePack connections.
struct Node {
    id: u64,
    tx: mpsc::UnboundedSender<Publication>,
    rooms: HashSet<String>,
    msgpack: bool,
}

/// Most operations taken from the queue at once: the publications among them go to
/// Redis in one pipeline (one round trip).
const BATCH: usize = 256;

struct Task<R> {
    config: RedisConfig,
    runtime: R,
    status: Arc<Mutex<BrokerStatus>>,
    nodes: Vec<Node>,
    /// Room → how many local nodes have members there (subscribed while > 0).
    rooms: HashMap<String, usize>,
    /// Publications not yet accepted by Redis, oldest first: made while it was away,
    /// or whose `PUBLISH` failed.
    buffer: VecDeque<Pending>,
    publish_script: redis::Script,
    read_script: redis::Script,
    /// Whether the link is up (room publications then reach local nodes from Redis).
    connected: bool,
    /// With history: per subscribed room, its last offset read just before the
    /// `SUBSCRIBE` (what a node's first member there starts after).
    cursors: HashMap<String, RoomOffset>,
    /// The nodes known to have MessagePack connections (shared with the handles).
    msgpack: Arc<Mutex<HashSet<u64>>>,
    /// Notices for `{prefix}:codecs` not yet published (dropped on a reconnect, which
    /// says everything again).
    notices: Vec<wire::CodecNotice>,
}

/// The two connections while Redis is up.
struct Link {
    publisher: redis::aio::MultiplexedConnection,
    subscriber: redis::aio::PubSubSink,
    messages: futures_util::stream::Fuse<redis::aio::PubSubStream>,
}

/// What woke the task while connected.
enum Event {
    Op(Option<Op>),
    Message(Option<redis::Msg>),
}

/// What one operation asks of Redis, once the local state is updated.
enum Command {
    None,
    Publish,
    Subscribe(String),
    Unsubscribe(String),
    /// Read a room's history, subscribed first when `subscribe`.
    History {
        subscribe: bool,
        room: String,
        after: RoomOffset,
        reply: oneshot::Sender<Result<Vec<Publication>, HistoryError>>,
    },
}

impl<R: Runtime> Task<R> {
    async fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>) {
        let mut backoff = self.config.reconnect_backoff.0;
        loop {
            let mut link = match self.connect().await {
                Ok(link) => link,
                Err(err) => {
                    self.note_error(&err);
                    tracing::warn!(%err, retry_in = ?backoff, "Redis unreachable; local delivery goes on");
                    // Wait before the next attempt, taking operations meanwhile.
                    let mut retry = self.runtime.sleep_until(Instant::now() + backoff).fuse();
                    backoff = (backoff * 2).min(self.config.reconnect_backoff.1);
                    loop {
                        futures_util::select_biased! {
                            op = ops.next() => match op {
                                Some(op) => { self.apply(op); }
                                // Every handle was dropped: nobody publishes or listens any more.
                                None => return,
                            },
                            () = retry => break,
                        }
                    }
                    continue;
                }
            };
            backoff = self.config.reconnect_backoff.0;
            self.connected = true;
            self.greet();
            let connects = {
                let mut status = self.lock();
                status.connected = true;
                status.connects += 1;
                status.connects
            };
            if connects > 1 {
                tracing::info!(prefix = %self.config.prefix, rooms = self.rooms.len(), buffered = self.buffer.len(), "reconnected to Redis");
            } else {
                tracing::info!(prefix = %self.config.prefix, "connected to Redis");
            }
            let outcome = match self.flush(&mut link).await {
                Ok(()) => self.serve(&mut link, &mut ops).await,
                Err(err) => Err(err),
            };
            drop(link);
            match outcome {
                Ok(()) => return,
                Err(err) => {
                    self.note_error(&err);
                    self.lock().connected = false;
                    self.connected = false;
                    self.deliver_held_locally();
                    tracing::warn!(%err, "lost the connection to Redis; local delivery goes on, reconnecting");
                }
            }
        }
    }

    /// Serves while connected: `Ok` once every handle is dropped, the error that broke
    /// the link otherwise.
    async fn serve(
        &mut self,
        link: &mut Link,
        ops: &mut mpsc::UnboundedReceiver<Op>,
    ) -> redis::RedisResult<()> {
        loop {
            let event = futures_util::select_biased! {
                op = ops.next() => Event::Op(op),
                message = link.messages.next() => Event::Message(message),
            };
            match event {
                Event::Op(None) => return Ok(()),
                Event::Op(Some(op)) => {
                    let mut batch = vec![op];
                    while batch.len() < BATCH {
                        match ops.try_recv() {
                            Ok(op) => batch.push(op),
                            _ => break,
                        }
                    }
                    for op in batch {
                        match self.apply(op) {
                            Command::None | Command::Publish => {}
                            Command::History {
                                subscribe,
                                room,
                                after,
                                reply,
                            } => {
                                self.flush(link).await?;
                                if subscribe {
                                    self.resubscribe(link, Command::Subscribe(room.clone())).await?;
                                }
                                match self.read_history(link, &room, after).await {
                                    Ok(read) => {
                                        let _ = reply.send(read);
                                    }
                                    Err(lost) => {
                                        let _ = reply.send(Err(HistoryError::Unavailable(lost.to_string())));
                                        return Err(lost);
                                    }
                                }
                            }
                            command => {
                                // Publications before a subscription change go first.
                                self.flush(link).await?;
                                self.resubscribe(link, command).await?;
                            }
                        }
                    }
                    self.flush(link).await?;
                }
                Event::Message(Some(message)) => {
                    self.deliver(&message);
                    if !self.notices.is_empty() {
                        self.flush(link).await?;
                    }
                }
                Event::Message(None) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the subscription connection closed",
                    )));
                }
            }
        }
    }

    /// Opens both connections and subscribes to what the local nodes need.
    async fn connect(&mut self) -> redis::RedisResult<Link> {
        let client = self.config.client.clone();
        let mut publisher = self.timed(client.get_multiplexed_async_connection()).await?;
        let (mut subscriber, messages) = self.timed(client.get_async_pubsub()).await?.split();
        let mut channels = vec![
            wire::all_channel(&self.config.prefix),
            wire::direct_channel(&self.config.prefix),
            wire::codecs_channel(&self.config.prefix),
        ];
        channels.extend(
            self.rooms
                .keys()
                .map(|room| wire::room_channel(&self.config.prefix, room)),
        );
        self.timed(subscriber.subscribe(&channels)).await?;
        let mut load = redis::pipe();
        for script in [&self.publish_script, &self.read_script] {
            load.load_script(script).ignore();
        }
        self.timed(load.query_async::<()>(&mut publisher)).await?;
        Ok(Link {
            publisher,
            subscriber,
            messages: messages.fuse(),
        })
    }

    /// Applies `op` to the local state: delivers a publication to the other local
    /// nodes and queues it for Redis, counts a room's nodes. Returns what Redis must be
    /// told.
    fn apply(&mut self, op: Op) -> Command {
        match op {
            Op::Subscribe(id, tx) => {
                self.nodes.retain(|n| n.id != id);
                self.nodes.push(Node {
                    id,
                    tx,
                    rooms: HashSet::new(),
                    msgpack: false,
                });
                Command::None
            }
            Op::MsgPack(node, present) => {
                let Some(n) = self.nodes.iter_mut().find(|n| n.id == node) else {
                    return Command::None;
                };
                n.msgpack = present;
                self.note_msgpack(node, present);
                self.notices.push(wire::CodecNotice {
                    node,
                    msgpack: present,
                    ask: false,
                });
                Command::Publish
            }
            Op::Publish(node, publication) => {
                let history = self.config.history_len > 0
                    && !publication.volatile
                    && matches!(publication.target, ws_session::PublishTarget::Room(_));
                if history && !self.connected {
                    // Redis is away: this node's members get it now, without history.
                    self.deliver_local(None, &publication);
                } else if !history {
                    // Other nodes in this process get it without a round trip (and
                    // `deliver` leaves out its echo from Redis).
                    self.deliver_local(Some(node), &publication);
                }
                if wire::channel(&self.config.prefix, &publication.target).is_none() {
                    return Command::None;
                }
                let history = history && self.connected;
                self.keep(node, publication, history);
                Command::Publish
            }
            Op::Occupied(node, room) => {
                if self.occupy(node, &room) {
                    Command::Subscribe(room)
                } else {
                    Command::None
                }
            }
            Op::Cursor(room, reply) => {
                let _ = reply.send(self.cursors.get(&room).copied());
                Command::None
            }
            Op::History(node, room, after, reply) => Command::History {
                subscribe: self.occupy(node, &room),
                room,
                after,
                reply,
            },
            Op::Vacated(node, room) => {
                let Some(n) = self.nodes.iter_mut().find(|n| n.id == node) else {
                    return Command::None;
                };
                if !n.rooms.remove(&room) {
                    return Command::None;
                }
                let last = match self.rooms.get_mut(&room) {
                    Some(count) if *count > 1 => {
                        *count -= 1;
                        false
                    }
                    _ => {
                        self.rooms.remove(&room);
                        true
                    }
                };
                let rooms = self.rooms.len();
                self.lock().rooms = rooms;
                if last {
                    Command::Unsubscribe(room)
                } else {
                    Command::None
                }
            }
        }
    }

    /// Counts `room` as occupied by local node `node`; whether it is the first (then
    /// the channel must be subscribed).
    fn occupy(&mut self, node: u64, room: &str) -> bool {
        let Some(n) = self.nodes.iter_mut().find(|n| n.id == node) else {
            return false;
        };
        if !n.rooms.insert(room.to_owned()) {
            return false;
        }
        let count = self.rooms.entry(room.to_owned()).or_default();
        *count += 1;
        let first = *count == 1;
        let rooms = self.rooms.len();
        self.lock().rooms = rooms;
        first
    }

    /// What `room` published after `after`, with the check that nothing after it was
    /// trimmed. `Err` only when the connection failed (the link is rebuilt); a read
    /// Redis refused or answered in a form this version cannot read fails only the read.
    async fn read_history(
        &self,
        link: &mut Link,
        room: &str,
        after: RoomOffset,
    ) -> redis::RedisResult<Result<Vec<Publication>, HistoryError>> {
        let key = wire::history_key(&self.config.prefix, room);
        let mut invocation = self.read_script.prepare_invoke();
        invocation
            .key(&key)
            .key(wire::trim_key(&self.config.prefix, room))
            .arg(after.to_string())
            .arg(HISTORY_READ_MAX);
        let value: redis::Value = match self.timed(invocation.invoke_async(&mut link.publisher)).await {
            Ok(value) => value,
            Err(err) if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() => {
                return Err(err)
            }
            Err(err) => return Ok(Err(HistoryError::Unavailable(err.to_string()))),
        };
        Ok(self.history_entries(room, after, value))
    }

    /// The publications of a history read's answer.
    fn history_entries(
        &self,
        room: &str,
        after: RoomOffset,
        value: redis::Value,
    ) -> Result<Vec<Publication>, HistoryError> {
        let malformed = || HistoryError::Unavailable("a history reply this version cannot read".to_owned());
        let redis::Value::Array(parts) = value else {
            return Err(malformed());
        };
        let [trimmed, entries] = parts.as_slice() else {
            // No stream: nothing was published for the history's life.
            return if parts.is_empty() {
                Ok(Vec::new())
            } else {
                Err(malformed())
            };
        };
        let trimmed: String = redis::from_redis_value_ref(trimmed).map_err(|_| malformed())?;
        if wire::parse_offset(&trimmed).is_some_and(|t| t > after) {
            return Err(HistoryError::Trimmed { after });
        }
        let entries: Vec<StreamEntry> = redis::from_redis_value_ref(entries).map_err(|_| malformed())?;
        if entries.len() >= HISTORY_READ_MAX {
            return Err(HistoryError::Trimmed { after });
        }
        let channel = wire::room_channel(&self.config.prefix, room);
        let mut out = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let offset = wire::parse_offset(&id).ok_or_else(malformed)?;
            let Some((_, message)) = fields.iter().find(|(f, _)| f == "m") else {
                continue;
            };
            // A message this version cannot read is skipped, as on the channel.
            if let Some((_, publication)) = wire::decode(&self.config.prefix, &channel, message) {
                out.push(publication.at(offset));
            }
        }
        Ok(out)
    }

    async fn resubscribe(&mut self, link: &mut Link, command: Command) -> redis::RedisResult<()> {
        match command {
            Command::Subscribe(room) => {
                if self.config.history_len > 0 {
                    // Before the subscription: everything that arrives on it comes
                    // after this offset.
                    let key = wire::history_key(&self.config.prefix, &room);
                    let last: Vec<StreamEntry> = self
                        .timed(
                            redis::cmd("XREVRANGE")
                                .arg(key)
                                .arg("+")
                                .arg("-")
                                .arg("COUNT")
                                .arg(1)
                                .query_async(&mut link.publisher),
                        )
                        .await?;
                    let cursor = last
                        .first()
                        .and_then(|(id, _)| wire::parse_offset(id))
                        .unwrap_or(RoomOffset(0, 0));
                    self.cursors.insert(room.clone(), cursor);
                }
                let channel = wire::room_channel(&self.config.prefix, &room);
                self.timed(link.subscriber.subscribe(channel)).await
            }
            Command::Unsubscribe(room) => {
                self.cursors.remove(&room);
                let channel = wire::room_channel(&self.config.prefix, &room);
                self.timed(link.subscriber.unsubscribe(channel)).await
            }
            Command::None | Command::Publish | Command::History { .. } => Ok(()),
        }
    }

    /// Publishes what waits in the buffer, oldest first, in pipelines of at most
    /// [`BATCH`] commands. What Redis did not confirm stays in the buffer.
    async fn flush(&mut self, link: &mut Link) -> redis::RedisResult<()> {
        if !self.notices.is_empty() {
            let channel = wire::codecs_channel(&self.config.prefix);
            let mut pipe = redis::pipe();
            for notice in &self.notices {
                pipe.cmd("PUBLISH").arg(&channel).arg(notice.encode()).ignore();
            }
            self.timed(pipe.query_async::<()>(&mut link.publisher)).await?;
            self.notices.clear();
        }
        while !self.buffer.is_empty() {
            let n = self.buffer.len().min(BATCH);
            let mut pipe = redis::pipe();
            // The buffered publication each command carries.
            let mut carried = Vec::with_capacity(n);
            for (index, pending) in self.buffer.iter().take(n).enumerate() {
                let publication = &pending.publication;
                let Some(channel) = wire::channel(&self.config.prefix, &publication.target) else {
                    continue;
                };
                carried.push(index);
                let message = wire::encode(pending.node, publication);
                match &publication.target {
                    ws_session::PublishTarget::Room(room) if pending.history => {
                        let key = wire::history_key(&self.config.prefix, room);
                        pipe.cmd("EVALSHA")
                            .arg(self.publish_script.get_hash())
                            .arg(2)
                            .arg(&key)
                            .arg(wire::trim_key(&self.config.prefix, room))
                            .arg(channel)
                            .arg(message)
                            .arg(self.config.history_len)
                            .arg(self.config.history_ttl.as_millis() as u64);
                    }
                    _ => {
                        pipe.cmd("PUBLISH").arg(channel).arg(message);
                    }
                }
            }
            // Each command's own answer: one Redis refuses (out of memory, a foreign
            // key of another type) fails that publication, not the link, while the
            // others of the batch were taken. Only losing the connection is an error.
            let answers: Vec<redis::RedisResult<redis::Value>> = self
                .timed(pipe.ignore_errors().query_async(&mut link.publisher))
                .await?;
            let batch: Vec<Pending> = self.buffer.drain(..n).collect();
            let mut refused = 0;
            let mut last_refusal = None;
            for (index, answer) in carried.into_iter().zip(answers) {
                let Err(err) = answer else {
                    continue;
                };
                refused += 1;
                // A room publication with history reaches even its own node through
                // Redis: it was not delivered anywhere yet.
                let pending = &batch[index];
                if pending.history {
                    self.deliver_local(None, &pending.publication);
                }
                last_refusal = Some(err);
            }
            let buffered = self.buffer.len();
            let mut status = self.lock();
            status.published += (n - refused) as u64;
            status.refused += refused as u64;
            status.buffered = buffered;
            if let Some(err) = last_refusal {
                status.last_error = Some(err.to_string());
                drop(status);
                tracing::warn!(%err, refused, "Redis refused publications: they reached this process's nodes only");
            }
        }
        Ok(())
    }

    /// Keeps a publication until Redis accepts it, within the outage buffer.
    fn keep(&mut self, node: u64, publication: Publication, history: bool) {
        let mut dropped = 0;
        if self.config.outage_buffer == 0 {
            dropped = 1;
        } else {
            if self.buffer.len() >= self.config.outage_buffer {
                self.buffer.pop_front();
                dropped = 1;
            }
            self.buffer.push_back(Pending {
                node,
                publication,
                history,
            });
        }
        if dropped > 0 {
            tracing::warn!(
                buffer = self.config.outage_buffer,
                "Redis outage buffer full: a publication is dropped"
            );
        }
        let buffered = self.buffer.len();
        let mut status = self.lock();
        status.dropped += dropped;
        status.buffered = buffered;
    }

    /// A message from Redis: to every local node that wants it, unless a local node
    /// published it (those had it at once).
    fn deliver(&mut self, message: &redis::Msg) {
        if message.get_channel_name() == wire::codecs_channel(&self.config.prefix) {
            return self.heed(message.get_payload_bytes());
        }
        let Some((node, publication)) = wire::decode(
            &self.config.prefix,
            message.get_channel_name(),
            message.get_payload_bytes(),
        ) else {
            tracing::debug!(
                channel = message.get_channel_name(),
                "a message this broker cannot read"
            );
            return;
        };
        // With history every node, the publisher too, takes a room's publications
        // from Redis, in the room's one order.
        let ours = self.nodes.iter().any(|n| n.id == node);
        if publication.offset.is_some() {
            self.deliver_local(None, &publication);
        } else if !ours {
            self.deliver_local(Some(node), &publication);
        }
        if !ours {
            self.lock().received += 1;
        }
    }

    /// The link broke: room publications held for history reach this process's nodes
    /// now, and go to Redis later as plain publications (a `PUBLISH` whose answer was
    /// lost may have been taken: those are published again, as always).
    fn deliver_held_locally(&mut self) {
        let mut held = std::mem::take(&mut self.buffer);
        for pending in held.iter_mut().filter(|p| p.history) {
            self.deliver_local(None, &pending.publication);
            pending.history = false;
        }
        self.buffer = held;
    }

    /// Hands `publication` to the local nodes that want it, but `from` (its publisher,
    /// which had it at once).
    fn deliver_local(&mut self, from: Option<u64>, publication: &Publication) {
        self.nodes.retain(|n| {
            let wanted = Some(n.id) != from
                && match &publication.target {
                    ws_session::PublishTarget::Room(room) => n.rooms.contains(&**room),
                    _ => true,
                };
            !wanted || n.tx.unbounded_send(publication.clone()).is_ok()
        });
    }

    /// Just connected: forgets what other processes' nodes said (they say it again)
    /// and asks them, saying what this process's nodes have.
    fn greet(&mut self) {
        let local: HashSet<u64> = self.nodes.iter().filter(|n| n.msgpack).map(|n| n.id).collect();
        self.msgpack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n| local.contains(n));
        self.lock().msgpack_nodes = local.len();
        self.notices.clear();
        // Node 0 when there is none yet: the question alone.
        let first = self.nodes.first().map_or(0, |n| n.id);
        for node in std::iter::once(first).chain(local.iter().copied().filter(|&n| n != first)) {
            self.notices.push(wire::CodecNotice {
                node,
                msgpack: local.contains(&node),
                ask: node == first,
            });
        }
    }

    /// A notice from `{prefix}:codecs`: remembers another process's node, and answers
    /// a question with this process's nodes that have MessagePack connections.
    fn heed(&mut self, message: &[u8]) {
        let Some(notice) = wire::CodecNotice::decode(message) else {
            tracing::debug!("a codecs notice this broker cannot read");
            return;
        };
        if self.nodes.iter().any(|n| n.id == notice.node) {
            return;
        }
        if notice.node != 0 || notice.msgpack {
            self.note_msgpack(notice.node, notice.msgpack);
        }
        if notice.ask {
            let answers = self
                .nodes
                .iter()
                .filter(|n| n.msgpack)
                .map(|n| wire::CodecNotice {
                    node: n.id,
                    msgpack: true,
                    ask: false,
                });
            self.notices.extend(answers);
        }
    }

    /// Records whether `node` has MessagePack connections.
    fn note_msgpack(&mut self, node: u64, present: bool) {
        let count = {
            let mut nodes = self.msgpack.lock().unwrap_or_else(PoisonError::into_inner);
            match present {
                true => nodes.insert(node),
                false => nodes.remove(&node),
            };
            nodes.len()
        };
        self.lock().msgpack_nodes = count;
    }

    fn note_error(&self, err: &redis::RedisError) {
        let text = err.to_string();
        self.lock().last_error = Some(text);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `future` within the command timeout.
    async fn timed<T>(
        &self,
        future: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let mut deadline = self
            .runtime
            .sleep_until(Instant::now() + self.config.command_timeout)
            .fuse();
        let future = future.fuse();
        futures_util::pin_mut!(future);
        futures_util::select_biased! {
            result = future => result,
            () = deadline => Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis command timed out"))),
        }
    }
}
