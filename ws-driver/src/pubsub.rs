//! The seam for fan-out across server nodes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use futures_channel::mpsc;
use ws_session::{Publication, PublishTarget, RoomOffset};

use crate::handler::BoxFuture;

/// Carries room and global broadcasts, and sends to a user or to a session this node
/// does not hold, between nodes. Each node publishes what its engine hands it
/// ([`Publication`]) and delivers what the others publish (to the sessions it holds
/// that the target names); a publication is never delivered back to the node that
/// made it.
///
/// [`InMemoryPubSub`] connects nodes in one process (tests, several servers in one
/// binary); a broker backend (Redis, NATS) implements the same trait.
pub trait PubSub: Send + Sync + 'static {
    /// Joins the bus as node `node`; returns the stream of other nodes' publications.
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<Publication>;
    /// Publishes `publication` from node `node` to every other node.
    ///
    /// Called on a task of its own, never on the hub, once per publication in the
    /// order the node made them: a slow backend delays only the fan-out to other nodes
    /// (publications wait in an unbounded queue behind it), not the node's clients.
    /// It is a plain function, so it must not block its thread: a backend that does
    /// network I/O hands the publication to its own client task (a channel send) and
    /// returns. A panic is logged and loses that one publication.
    fn publish(&self, node: u64, publication: Publication);

    /// Node `node` now has members in `room`: deliver it the room's publications from
    /// now on. Called like [`publish`](Self::publish), in order with the publications,
    /// so a node receives only the rooms it has members in (fan-out per room, not per
    /// node). The default does nothing: the backend then delivers every room to every
    /// node, which is correct but costs the receivers.
    fn room_occupied(&self, node: u64, room: &str) {
        let _ = (node, room);
    }

    /// Node `node` has no member left in `room`: stop delivering it the room's
    /// publications. The default does nothing.
    fn room_vacated(&self, node: u64, room: &str) {
        let _ = (node, room);
    }

    /// Whether this backend keeps each room's history: then it gives every room
    /// publication (not volatile) an offset ([`Publication::offset`]), delivers it in
    /// that order to every node with members in the room — **the publishing node
    /// included**, which does not deliver room broadcasts to its own members at once —
    /// and answers [`history`](Self::history). Asked once, by
    /// [`App::pubsub`](crate::App::pubsub). The default: `false`.
    fn room_history(&self) -> bool {
        false
    }

    /// The offset of the last publication `room` had before node `node` began to
    /// receive it (as of its latest [`room_occupied`](Self::room_occupied)), `None`
    /// when not known (no history, or the backend was unreachable then). A session
    /// that joins a room as the node's first member starts there: what the room
    /// publishes after it is the session's, even if the node dies before the first of
    /// it arrives. Called after `room_occupied`, in order with it. The default: `None`.
    fn room_cursor(&self, node: u64, room: &str) -> BoxFuture<Option<RoomOffset>> {
        let _ = (node, room);
        Box::pin(async { None })
    }

    /// The publications of `room` after `after`, oldest first, for a session node
    /// `node` takes over. Node `node` receives the room's publications from before the
    /// read on (as after [`room_occupied`](Self::room_occupied), which it implies), so
    /// that nothing published after the read is missed. An error when the history
    /// cannot be read, or no longer reaches back to `after`. The default (no history):
    /// nothing.
    fn history(
        &self,
        node: u64,
        room: &str,
        after: RoomOffset,
    ) -> BoxFuture<Result<Vec<Publication>, HistoryError>> {
        let _ = (node, room, after);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Node `node` now has MessagePack connections (`true`: its first opened) or none
    /// any more (`false`). Called like [`room_occupied`](Self::room_occupied), in order.
    /// A backend shares it with the other nodes, for their
    /// [`msgpack_elsewhere`](Self::msgpack_elsewhere). The default does nothing.
    fn msgpack_connections(&self, node: u64, present: bool) {
        let _ = (node, present);
    }

    /// Whether a node other than `node` has MessagePack connections, as far as the
    /// backend knows. When it does, node `node` serializes the payloads the
    /// application gives it in MessagePack too, and its publications carry that form
    /// ([`Publication::msgpack`]), so that binary data reaches the other node's
    /// MessagePack clients as `bin`. Called on the application's tasks whenever a
    /// payload is serialized (a send, a broadcast): it must answer at once, from what
    /// the backend holds (no I/O). A wrong `true` costs a serialization and bytes on
    /// the wire; a wrong `false` gives another node's MessagePack clients the array of
    /// numbers JSON makes of bytes. The default, for backends that do not track it:
    /// `true`.
    fn msgpack_elsewhere(&self, node: u64) -> bool {
        let _ = node;
        true
    }
}

/// Why a room's history could not be read ([`PubSub::history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryError {
    /// The history no longer reaches back to the offset asked for: publications after
    /// it were dropped (the backend keeps a bounded number per room).
    Trimmed {
        /// The offset asked for.
        after: RoomOffset,
    },
    /// The backend could not answer (unreachable, timed out, refused).
    Unavailable(String),
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trimmed { after } => write!(f, "room history trimmed past {after}"),
            Self::Unavailable(why) => write!(f, "room history unavailable: {why}"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// A node on the bus: its id, where its publications go, the rooms it has members in,
/// whether it has MessagePack connections.
struct Node {
    id: u64,
    tx: mpsc::UnboundedSender<Publication>,
    rooms: HashSet<Arc<str>>,
    msgpack: bool,
    /// With history: per room, its last offset when the node began to receive it.
    cursors: HashMap<Arc<str>, RoomOffset>,
}

/// A bus inside one process, with per-room delivery like a broker's, and, when made
/// with [`with_room_history`](Self::with_room_history), room history like a broker's.
#[derive(Clone, Default)]
pub struct InMemoryPubSub {
    nodes: Arc<Mutex<Vec<Node>>>,
    history: Option<Arc<Mutex<History>>>,
}

/// The rooms' recent publications, each room numbered from 1.
#[derive(Default)]
struct History {
    max_len: usize,
    rooms: HashMap<Arc<str>, VecDeque<Publication>>,
    next: HashMap<Arc<str>, u64>,
}

impl InMemoryPubSub {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bus that keeps the last `max_len` publications of each room
    /// ([`PubSub::room_history`]).
    pub fn with_room_history(max_len: usize) -> Self {
        Self {
            nodes: Arc::default(),
            history: Some(Arc::new(Mutex::new(History {
                max_len: max_len.max(1),
                ..History::default()
            }))),
        }
    }

    fn with_node(&self, node: u64, f: impl FnOnce(&mut Node)) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = nodes.iter_mut().find(|n| n.id == node) {
            f(entry);
        }
    }

    /// Numbers a room publication and keeps it, when this bus keeps history.
    fn record(&self, publication: Publication) -> Publication {
        let (Some(history), PublishTarget::Room(room), false) =
            (&self.history, &publication.target, publication.volatile)
        else {
            return publication;
        };
        let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
        let next = history.next.entry(room.clone()).or_insert(1);
        let publication = publication.clone().at(RoomOffset(0, *next));
        *next += 1;
        let max_len = history.max_len;
        let kept = history.rooms.entry(room.clone()).or_default();
        if kept.len() == max_len {
            kept.pop_front();
        }
        kept.push_back(publication.clone());
        publication
    }
}

impl PubSub for InMemoryPubSub {
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<Publication> {
        let (tx, rx) = mpsc::unbounded();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.push(Node {
            id: node,
            tx,
            rooms: HashSet::new(),
            cursors: HashMap::new(),
            msgpack: false,
        });
        rx
    }

    fn publish(&self, node: u64, publication: Publication) {
        let publication = self.record(publication);
        // A room publication with an offset goes to its publisher's members too.
        let echo = publication.offset.is_some();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        // Nodes that went away are dropped from the bus as they are found.
        nodes.retain(|n| {
            let wanted = match &publication.target {
                PublishTarget::All => true,
                PublishTarget::Room(room) => n.rooms.contains(room),
                // Users and sessions: every node, each delivers to those it holds.
                _ => true,
            };
            (n.id == node && !echo) || !wanted || n.tx.unbounded_send(publication.clone()).is_ok()
        });
    }

    fn room_occupied(&self, node: u64, room: &str) {
        // Where the room's history stands as the node begins to receive it.
        let cursor = self.history.as_ref().map(|history| {
            let history = history.lock().unwrap_or_else(PoisonError::into_inner);
            RoomOffset(0, history.next.get(room).map_or(0, |next| next - 1))
        });
        self.with_node(node, |n| {
            if n.rooms.insert(Arc::from(room)) {
                if let Some(cursor) = cursor {
                    n.cursors.insert(Arc::from(room), cursor);
                }
            }
        });
    }

    fn room_vacated(&self, node: u64, room: &str) {
        self.with_node(node, |n| {
            n.rooms.remove(room);
            n.cursors.remove(room);
        });
    }

    fn room_cursor(&self, node: u64, room: &str) -> BoxFuture<Option<RoomOffset>> {
        let mut cursor = None;
        self.with_node(node, |n| cursor = n.cursors.get(room).copied());
        Box::pin(async move { cursor })
    }

    fn room_history(&self) -> bool {
        self.history.is_some()
    }

    fn history(
        &self,
        node: u64,
        room: &str,
        after: RoomOffset,
    ) -> BoxFuture<Result<Vec<Publication>, HistoryError>> {
        self.room_occupied(node, room);
        let result = match &self.history {
            None => Ok(Vec::new()),
            Some(history) => {
                let history = history.lock().unwrap_or_else(PoisonError::into_inner);
                let kept = history.rooms.get(room);
                match kept.and_then(|k| k.front()).and_then(|p| p.offset) {
                    // Numbered from 1 without holes: `after + 1` must still be there.
                    Some(first) if first.1 > after.1 + 1 => Err(HistoryError::Trimmed { after }),
                    _ => Ok(kept
                        .into_iter()
                        .flatten()
                        .filter(|p| p.offset.is_some_and(|o| o > after))
                        .cloned()
                        .collect()),
                }
            }
        };
        Box::pin(async move { result })
    }

    fn msgpack_connections(&self, node: u64, present: bool) {
        self.with_node(node, |n| n.msgpack = present);
    }

    fn msgpack_elsewhere(&self, node: u64) -> bool {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.iter().any(|n| n.id != node && n.msgpack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> Publication {
        Publication::new(
            PublishTarget::Room(Arc::from(name)),
            None,
            bytes::Bytes::from_static(b"{}"),
        )
    }

    /// With room history every node with members gets a room publication with its
    /// offset, its publisher too; the history answers after an offset, and says when it
    /// no longer reaches back that far.
    #[test]
    fn room_history_orders_echoes_and_answers_after_an_offset() {
        let bus = InMemoryPubSub::with_room_history(3);
        assert!(bus.room_history());
        let (mut one, mut two) = (bus.subscribe(1), bus.subscribe(2));
        bus.room_occupied(1, "r");
        bus.room_occupied(2, "r");
        for _ in 0..4 {
            bus.publish(1, room("r"));
        }
        for rx in [&mut one, &mut two] {
            let offsets: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
                .map(|p| p.offset.unwrap().1)
                .collect();
            assert_eq!(offsets, [1, 2, 3, 4], "the publisher gets its own, in order");
        }
        let read =
            |after| futures_util::FutureExt::now_or_never(bus.history(2, "r", RoomOffset(0, after))).unwrap();
        let after_2: Vec<u64> = read(2).unwrap().iter().map(|p| p.offset.unwrap().1).collect();
        assert_eq!(after_2, [3, 4]);
        assert_eq!(read(1).unwrap().len(), 3, "2, 3, 4 are kept");
        assert_eq!(
            read(0),
            Err(HistoryError::Trimmed {
                after: RoomOffset(0, 0)
            }),
            "1 was dropped"
        );
        // A node that begins to receive the room now starts after the last of them.
        let _three = bus.subscribe(3);
        bus.room_occupied(3, "r");
        let cursor = futures_util::FutureExt::now_or_never(bus.room_cursor(3, "r")).unwrap();
        assert_eq!(cursor, Some(RoomOffset(0, 4)));
        assert_eq!(
            futures_util::FutureExt::now_or_never(bus.room_cursor(3, "elsewhere")).unwrap(),
            None
        );
        // Volatile publications and other targets stay outside the history.
        bus.publish(
            1,
            Publication::new_volatile(PublishTarget::Room(Arc::from("r")), None, bytes::Bytes::new()),
        );
        assert_eq!(two.try_recv().unwrap().offset, None);
        assert!(one.try_recv().is_err(), "no echo of a volatile one");
    }

    /// A node gets a room's publications only while it has members there; broadcasts
    /// to all reach every node; nothing comes back to its sender.
    #[test]
    fn rooms_are_delivered_only_to_nodes_with_members() {
        let bus = InMemoryPubSub::new();
        let (mut one, mut two, mut three) = (bus.subscribe(1), bus.subscribe(2), bus.subscribe(3));
        bus.room_occupied(2, "r");
        bus.room_occupied(1, "r");
        bus.publish(1, room("r"));
        assert!(two.try_recv().is_ok());
        assert!(three.try_recv().is_err(), "node 3 has no member in r");
        assert!(one.try_recv().is_err(), "no echo to the sender");
        bus.room_vacated(2, "r");
        bus.publish(1, room("r"));
        assert!(two.try_recv().is_err(), "vacated");
        bus.publish(1, Publication::new(PublishTarget::All, None, bytes::Bytes::new()));
        assert!(two.try_recv().is_ok() && three.try_recv().is_ok());
    }

    /// A node learns whether another has MessagePack connections, never from itself.
    #[test]
    fn msgpack_connections_are_known_to_the_other_nodes() {
        let bus = InMemoryPubSub::new();
        let (_one, _two) = (bus.subscribe(1), bus.subscribe(2));
        assert!(!bus.msgpack_elsewhere(1) && !bus.msgpack_elsewhere(2));
        bus.msgpack_connections(2, true);
        assert!(bus.msgpack_elsewhere(1));
        assert!(!bus.msgpack_elsewhere(2), "its own do not count");
        bus.msgpack_connections(2, false);
        assert!(!bus.msgpack_elsewhere(1));
    }
}
