//! Several server nodes sharing one session store, with real client engines, under one
//! fake clock (feature `sim`): the harness for sessions any node can resume.
//!
//! Each node is an [`Engine`] with [`EngineConfig::shared_sessions`] on; their journals
//! go to one [`SessionTable`] (the reference store logic) and their loads come from it,
//! as ws-driver's in-memory store does. A client connects to the node it is routed to
//! ([`Nodes::route`]); a node can be killed (dropped without letting anything go, its
//! unwritten journal lost), its writes held back to model a slow store
//! ([`Nodes::hold_writes`]), and loads answered by hand ([`Nodes::manual_loads`]).
//! Links are instant; raw connections ([`Nodes::raw_connect`]) script the wire by hand.
//!
//! ```
//! use ws_session::client::ClientConfig;
//! use ws_session::nodes::Nodes;
//! use ws_session::EngineConfig;
//!
//! let mut nodes = Nodes::new(EngineConfig::default(), 2, 1);
//! let alice = nodes.add_client(ClientConfig::with_credential("alice"), 0);
//! nodes.settle();
//! let session = nodes.session(alice).unwrap();
//! nodes.cut(alice);
//! nodes.send_to(0, session, "tick", "1").unwrap();
//! nodes.route(alice, 1);
//! nodes.advance(std::time::Duration::from_secs(5)); // reconnects to node 1 and resumes
//! assert_eq!(nodes.client(alice).events_named("tick"), ["1"]);
//! assert!(nodes.node(1).engine.session_info(session).is_some());
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use ws_proto::envelope::{OutgoingEnvelope, Payload};
use ws_proto::{CloseCode, Message};

use crate::client::{AuthMode, ClientAction, ClientConfig, ClientEngine, Disconnect};
use crate::journal::{JournalEntry, SessionTable};
use crate::{
    Action, ApiError, ConnectionId, ConnectionInfo, Engine, EngineConfig, Publication, PublishTarget,
    RoomOffset, SessionEvent, SessionId, TokenVerifier, UserId,
};

/// One server node.
pub struct Node {
    /// Its engine.
    pub engine: Engine,
    /// Its id in the store (fencing).
    pub id: u64,
    /// Every journal entry it emitted, in order (written or not).
    pub journal: Vec<(SessionId, JournalEntry)>,
    /// Every session lifecycle event it reported, in order.
    pub lifecycle: Vec<SessionEvent>,
    /// Journal entries the store refused (fenced off).
    pub fenced: usize,
    /// Whether its journal writes wait ([`Nodes::hold_writes`]).
    held: bool,
    unwritten: VecDeque<(SessionId, JournalEntry)>,
}

/// A client engine and its end of the link.
pub struct NodePeer {
    /// The client engine.
    pub engine: ClientEngine,
    /// The node its next connection goes to.
    pub target: usize,
    /// The node and the server's id of its transport, while one is open.
    pub connection: Option<(usize, ConnectionId)>,
    /// Connection attempts it made.
    pub connects: usize,
    /// What it reported to its application, in order.
    pub seen: Vec<ClientAction>,
    /// Every text it received, in order (all connections).
    pub received: Vec<String>,
    connect_pending: bool,
    to_server: VecDeque<String>,
}

impl NodePeer {
    /// The payloads (raw JSON) of the application events named `event` it received.
    pub fn events_named(&self, event: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|action| match action {
                ClientAction::Event(env) if &*env.event == event => Some(
                    env.payload
                        .as_ref()
                        .map_or_else(String::new, |p| p.get().to_owned()),
                ),
                _ => None,
            })
            .collect()
    }
}

/// A connection scripted by the test: what it received, and whether it was closed.
pub struct RawConnection {
    /// The node.
    pub node: usize,
    /// The server's id of it.
    pub connection: ConnectionId,
    /// Every text it received, in order.
    pub received: Vec<String>,
    /// The close code, once the server closed it.
    pub closed: Option<CloseCode>,
}

/// A load the test answers by hand ([`Nodes::manual_loads`]).
#[derive(Debug, Clone, Copy)]
pub struct PendingLoad {
    /// The node that asked.
    pub node: usize,
    /// The connection waiting.
    pub connection: ConnectionId,
    /// The session.
    pub session: SessionId,
    /// The presented token's verifier.
    pub token: TokenVerifier,
}

/// Nodes, a shared store and clients under one fake clock. See the [module docs](self).
pub struct Nodes {
    /// The fake clock.
    pub now: Instant,
    /// The shared store.
    pub store: SessionTable,
    /// Whether loads wait for [`Nodes::answer_load`] instead of being answered at once.
    pub manual_loads: bool,
    /// Loads waiting to be answered by hand.
    pub pending_loads: Vec<PendingLoad>,
    nodes: Vec<Option<Node>>,
    peers: Vec<NodePeer>,
    raw: Vec<RawConnection>,
    seed: u64,
    /// With room history ([`Nodes::with_room_history`]): the bus's rooms, each room's
    /// publications with their offsets (numbered from 1), and publications not yet
    /// handed to the nodes.
    history: Option<Bus>,
}

/// A broker with room history, as `InMemoryPubSub::with_room_history` in ws-driver:
/// every room publication is numbered and kept, and delivered to every node with
/// members, its publisher too.
#[derive(Default)]
struct Bus {
    rooms: std::collections::HashMap<std::sync::Arc<str>, Vec<Publication>>,
    queue: VecDeque<Publication>,
}

impl Nodes {
    /// `count` nodes running `config` with shared sessions on, whose authenticators
    /// accept every credential as the user of that name; generators seeded from `seed`.
    pub fn new(config: EngineConfig, count: usize, seed: u64) -> Self {
        let now = crate::sim::origin();
        let config = EngineConfig {
            shared_sessions: true,
            ..config
        };
        let store = SessionTable::new(config.resume_window);
        let nodes = (0..count)
            .map(|i| {
                let rng = ChaCha20Rng::seed_from_u64(seed.wrapping_add(i as u64 * 0x1000_0001));
                Some(Node {
                    engine: Engine::new(config.clone(), rng).expect("a valid EngineConfig"),
                    id: i as u64 + 1,
                    journal: Vec::new(),
                    lifecycle: Vec::new(),
                    fenced: 0,
                    held: false,
                    unwritten: VecDeque::new(),
                })
            })
            .collect();
        Self {
            now,
            store,
            manual_loads: false,
            pending_loads: Vec::new(),
            nodes,
            peers: Vec::new(),
            raw: Vec::new(),
            seed,
            history: None,
        }
    }

    /// [`Nodes::new`] with a broker that keeps room history between the nodes
    /// ([`EngineConfig::room_history`]): room broadcasts reach every node with members
    /// (the publisher's included) through it, in one order, and a load reads the
    /// record's rooms' history after its positions.
    pub fn with_room_history(config: EngineConfig, count: usize, seed: u64) -> Self {
        let config = EngineConfig {
            publish_broadcasts: true,
            room_history: true,
            ..config
        };
        Self {
            history: Some(Bus::default()),
            ..Self::new(config, count, seed)
        }
    }

    /// The publications `room` has in the broker's history, oldest first.
    pub fn room_history(&self, room: &str) -> Vec<Publication> {
        self.history
            .as_ref()
            .and_then(|bus| bus.rooms.get(room).cloned())
            .unwrap_or_default()
    }

    /// Node `index`. Panics if it was killed.
    pub fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("a live node")
    }

    /// Node `index`, mutably. Panics if it was killed.
    pub fn node_mut(&mut self, index: usize) -> &mut Node {
        self.nodes[index].as_mut().expect("a live node")
    }

    /// Adds a client with `config` that connects to node `target`; returns its index.
    pub fn add_client(&mut self, config: ClientConfig, target: usize) -> usize {
        let index = self.peers.len();
        let rng = ChaCha8Rng::seed_from_u64(self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
        self.peers.push(NodePeer {
            engine: ClientEngine::new(self.now, config, rng),
            target,
            connection: None,
            connects: 0,
            seen: Vec::new(),
            received: Vec::new(),
            connect_pending: false,
            to_server: VecDeque::new(),
        });
        index
    }

    /// The client at `index`.
    pub fn client(&self, index: usize) -> &NodePeer {
        &self.peers[index]
    }

    /// Sends client `index`'s next connection to node `node`.
    pub fn route(&mut self, index: usize, node: usize) {
        self.peers[index].target = node;
    }

    /// The session client `index` holds, if any.
    pub fn session(&self, index: usize) -> Option<SessionId> {
        self.peers[index].engine.session_id().and_then(SessionId::parse)
    }

    /// Node `node` sends `event` with the raw JSON `payload` in `session`'s stream.
    pub fn send_to(
        &mut self,
        node: usize,
        session: SessionId,
        event: &str,
        payload: &str,
    ) -> Result<u64, ApiError> {
        let envelope = OutgoingEnvelope::new(event).with_payload(Payload::Trusted(payload));
        let now = self.now;
        let result = self.node_mut(node).engine.send(now, session, &envelope);
        self.settle();
        result
    }

    /// Holds node `node`'s journal writes back (a slow store) or lets them through.
    pub fn hold_writes(&mut self, node: usize, held: bool) {
        self.node_mut(node).held = held;
        self.settle();
    }

    /// Node `node` dies: dropped without letting its sessions go; its unwritten
    /// journal is lost and its clients' transports drop.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node] = None;
        let now = self.now;
        for peer in &mut self.peers {
            if peer.connection.is_some_and(|(n, _)| n == node) {
                peer.connection = None;
                peer.to_server.clear();
                peer.engine
                    .handle_disconnected(now, Disconnect::closed(CloseCode::ABNORMAL, ""));
            }
        }
        self.settle();
    }

    /// The transport of client `index` drops without a close frame, on both sides.
    pub fn cut(&mut self, index: usize) {
        let now = self.now;
        let peer = &mut self.peers[index];
        peer.to_server.clear();
        if let Some((node, connection)) = peer.connection.take() {
            peer.engine
                .handle_disconnected(now, Disconnect::closed(CloseCode::ABNORMAL, ""));
            if let Some(node) = self.nodes[node].as_mut() {
                node.engine.handle_connection_closed(now, connection);
            }
        }
        self.settle();
    }

    /// Opens a connection to `node` carrying `credential` in its handshake; returns its
    /// index for [`Nodes::raw_send`] and [`Nodes::raw`].
    pub fn raw_connect(&mut self, node: usize, credential: &str) -> usize {
        let now = self.now;
        let info = ConnectionInfo::with_token(credential);
        let connection = self.node_mut(node).engine.handle_connection_opened(now, info);
        self.raw.push(RawConnection {
            node,
            connection,
            received: Vec::new(),
            closed: None,
        });
        self.settle();
        self.raw.len() - 1
    }

    /// Sends `text` on raw connection `index`.
    pub fn raw_send(&mut self, index: usize, text: &str) {
        let (node, connection) = (self.raw[index].node, self.raw[index].connection);
        let now = self.now;
        if let Some(n) = self.nodes[node].as_mut() {
            n.engine
                .handle_message(now, connection, Message::Text(text.to_owned()));
        }
        self.settle();
    }

    /// Raw connection `index`.
    pub fn raw(&self, index: usize) -> &RawConnection {
        &self.raw[index]
    }

    /// Answers the oldest load waiting ([`Nodes::manual_loads`]): from the store, or
    /// `None` as a store that failed or timed out would.
    pub fn answer_load(&mut self, from_store: bool) -> bool {
        if self.pending_loads.is_empty() {
            return false;
        }
        let load = self.pending_loads.remove(0);
        self.answer(load, from_store);
        self.settle();
        true
    }

    /// Handles every action of every engine and delivers every message until nothing
    /// moves.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for index in 0..self.peers.len() {
                progressed |= self.drain_client(index);
            }
            for node in 0..self.nodes.len() {
                progressed |= self.drain_node(node);
                progressed |= self.write_journal(node);
            }
            progressed |= self.deliver_bus();
            if !progressed {
                break;
            }
        }
    }

    /// Moves the clock forward by `by`, firing every timer at its own instant.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            self.settle();
            let next = self
                .peers
                .iter()
                .filter_map(|p| p.engine.poll_timeout())
                .chain(
                    self.nodes
                        .iter()
                        .flatten()
                        .filter_map(|n| n.engine.poll_timeout()),
                )
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.fire_timers();
                }
                _ => break,
            }
        }
        self.now = end;
        self.fire_timers();
        self.settle();
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for node in self.nodes.iter_mut().flatten() {
            node.engine.handle_timeout(now);
        }
        for peer in &mut self.peers {
            peer.engine.handle_timeout(now);
        }
    }

    fn answer(&mut self, load: PendingLoad, from_store: bool) {
        let now = self.now;
        let Some(id) = self.nodes[load.node].as_ref().map(|n| n.id) else {
            return;
        };
        let record = if from_store {
            let loaded = self.store.load(now, id, load.session, &load.token);
            if let Some(former) = loaded.former_owner {
                // The former owner is told (through the store, in a real deployment).
                if let Some(node) = self.nodes.iter_mut().flatten().find(|n| n.id == former) {
                    node.engine.release_session(now, load.session);
                }
            }
            loaded.record
        } else {
            None
        };
        // The record's rooms' history after its positions, as the hub reads it.
        let history = match (&self.history, &record) {
            (Some(bus), Some(record)) => record
                .room_offsets
                .iter()
                .flat_map(|(room, after)| {
                    bus.rooms
                        .get(room)
                        .into_iter()
                        .flatten()
                        .filter(|p| p.offset.is_some_and(|o| o > *after))
                        .cloned()
                })
                .collect(),
            _ => Vec::new(),
        };
        if let Some(node) = self.nodes[load.node].as_mut() {
            node.engine
                .handle_session_loaded(now, load.connection, load.session, record, Some(history));
        }
    }

    /// Hands the bus's queued publications to the nodes with members in their room.
    fn deliver_bus(&mut self) -> bool {
        let now = self.now;
        let Some(bus) = self.history.as_mut() else {
            return false;
        };
        let mut progressed = false;
        while let Some(publication) = bus.queue.pop_front() {
            progressed = true;
            let PublishTarget::Room(room) = &publication.target else {
                continue;
            };
            for node in self.nodes.iter_mut().flatten() {
                if node.engine.room_len(room) > 0 {
                    node.engine.handle_remote_publish(now, &publication);
                }
            }
        }
        progressed
    }

    fn write_journal(&mut self, index: usize) -> bool {
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return false;
        };
        if node.held || node.unwritten.is_empty() {
            return false;
        }
        let mut lost = Vec::new();
        while let Some((session, entry)) = node.unwritten.pop_front() {
            if self
                .store
                .append(now, node.id, session, std::slice::from_ref(&entry))
                .is_err()
            {
                node.fenced += 1;
                lost.push(session);
            }
        }
        for session in lost {
            node.engine.release_session(now, session);
        }
        true
    }

    fn drain_client(&mut self, index: usize) -> bool {
        let now = self.now;
        let mut progressed = false;
        while let Some(action) = self.peers[index].engine.poll_action() {
            progressed = true;
            match action {
                ClientAction::Connect => {
                    self.peers[index].connects += 1;
                    self.peers[index].connect_pending = true;
                }
                ClientAction::Transmit(text) => self.peers[index].to_server.push_back(text),
                ClientAction::CloseTransport { code, reason } => {
                    let peer = &mut self.peers[index];
                    peer.connect_pending = false;
                    let written: Vec<_> = peer.to_server.drain(..).collect();
                    if let Some((node, connection)) = peer.connection.take() {
                        if let Some(node) = self.nodes[node].as_mut() {
                            for text in written {
                                node.engine.handle_message(now, connection, Message::Text(text));
                            }
                            node.engine.handle_connection_closed(now, connection);
                        }
                    }
                    self.peers[index]
                        .engine
                        .handle_disconnected(now, Disconnect::closed(code, reason));
                }
                other => self.peers[index].seen.push(other),
            }
        }
        let peer = &mut self.peers[index];
        if std::mem::take(&mut peer.connect_pending) {
            progressed = true;
            match self.nodes[peer.target].as_mut() {
                None => peer
                    .engine
                    .handle_disconnected(now, Disconnect::failed("connection refused")),
                Some(node) => {
                    let config = peer.engine.config();
                    let info = match (config.auth_mode, &config.credential) {
                        (AuthMode::Handshake, Some(c)) => ConnectionInfo::with_token(c.clone()),
                        _ => ConnectionInfo::default(),
                    };
                    let connection = node.engine.handle_connection_opened(now, info);
                    peer.connection = Some((peer.target, connection));
                    peer.engine.handle_connected(now);
                }
            }
        }
        let peer = &mut self.peers[index];
        if let Some((node, connection)) = peer.connection {
            if let Some(n) = self.nodes[node].as_mut() {
                while let Some(text) = peer.to_server.pop_front() {
                    progressed = true;
                    n.engine.handle_message(now, connection, Message::Text(text));
                }
            }
        }
        progressed
    }

    fn drain_node(&mut self, index: usize) -> bool {
        let now = self.now;
        let mut progressed = false;
        loop {
            let Some(action) = self.nodes[index].as_mut().and_then(|n| n.engine.poll_action()) else {
                return progressed;
            };
            progressed = true;
            match action {
                Action::Transmit { connection, message } => {
                    self.transmit(index, connection, message.to_text())
                }
                Action::TransmitBroadcast {
                    prefix,
                    codec,
                    recipients,
                } => {
                    for &(connection, seq) in &recipients {
                        let message = crate::OutboundMessage::new(prefix.clone(), Some(seq), codec);
                        self.transmit(index, connection, message.to_text());
                    }
                }
                Action::TransmitMany { connections, message } => {
                    for connection in connections {
                        self.transmit(index, connection, message.to_text());
                    }
                }
                Action::Close {
                    connection,
                    code,
                    reason,
                } => {
                    if let Some(raw) = self
                        .raw
                        .iter_mut()
                        .find(|r| r.node == index && r.connection == connection)
                    {
                        raw.closed = Some(code);
                    }
                    if let Some(peer) = self
                        .peers
                        .iter_mut()
                        .find(|p| p.connection == Some((index, connection)))
                    {
                        peer.connection = None;
                        peer.to_server.clear();
                        peer.engine
                            .handle_disconnected(now, Disconnect::closed(code, reason));
                    }
                }
                Action::Authenticate(request) => {
                    let user = Ok(UserId::new(request.token.clone()));
                    self.node_mut(index)
                        .engine
                        .handle_auth_result(now, request.id, user)
                        .expect("an authentication the engine asked for");
                }
                Action::Session(event) => self.node_mut(index).lifecycle.push(event),
                Action::Journal { session, entry } => {
                    let node = self.node_mut(index);
                    node.journal.push((session, entry.clone()));
                    node.unwritten.push_back((session, entry));
                }
                Action::Publish(publication) => {
                    // Room stream publications go through the broker's history (the
                    // only kind this harness carries between nodes).
                    if let (Some(bus), PublishTarget::Room(room), false) =
                        (self.history.as_mut(), &publication.target, publication.volatile)
                    {
                        let kept = bus.rooms.entry(room.clone()).or_default();
                        let publication = publication.clone().at(RoomOffset(0, kept.len() as u64 + 1));
                        kept.push(publication.clone());
                        bus.queue.push_back(publication);
                    }
                }
                Action::LoadSession {
                    connection,
                    session,
                    token,
                } => {
                    let load = PendingLoad {
                        node: index,
                        connection,
                        session,
                        token,
                    };
                    if self.manual_loads {
                        self.pending_loads.push(load);
                    } else {
                        // What this node wrote goes first, as one ordered queue would.
                        self.write_journal(index);
                        self.answer(load, true);
                    }
                }
                _ => {}
            }
        }
    }

    fn transmit(&mut self, node: usize, connection: ConnectionId, text: String) {
        let now = self.now;
        if let Some(raw) = self
            .raw
            .iter_mut()
            .find(|r| r.node == node && r.connection == connection)
        {
            raw.received.push(text);
            return;
        }
        if let Some(peer) = self
            .peers
            .iter_mut()
            .find(|p| p.connection == Some((node, connection)))
        {
            peer.received.push(text.clone());
            peer.engine.handle_message(now, &text);
        }
    }
}
