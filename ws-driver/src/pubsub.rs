//! The seam for fan-out across server nodes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures_channel::mpsc;
use ws_session::{Publication, PublishTarget};

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

/// A node on the bus: its id, where its publications go, the rooms it has members in,
/// whether it has MessagePack connections.
struct Node {
    id: u64,
    tx: mpsc::UnboundedSender<Publication>,
    rooms: HashSet<Arc<str>>,
    msgpack: bool,
}

/// A bus inside one process, with per-room delivery like a broker's.
#[derive(Clone, Default)]
pub struct InMemoryPubSub {
    nodes: Arc<Mutex<Vec<Node>>>,
}

impl InMemoryPubSub {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_node(&self, node: u64, f: impl FnOnce(&mut Node)) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = nodes.iter_mut().find(|n| n.id == node) {
            f(entry);
        }
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
            msgpack: false,
        });
        rx
    }

    fn publish(&self, node: u64, publication: Publication) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        // Nodes that went away are dropped from the bus as they are found.
        nodes.retain(|n| {
            let wanted = match &publication.target {
                PublishTarget::All => true,
                PublishTarget::Room(room) => n.rooms.contains(room),
                // Users and sessions: every node, each delivers to those it holds.
                _ => true,
            };
            n.id == node || !wanted || n.tx.unbounded_send(publication.clone()).is_ok()
        });
    }

    fn room_occupied(&self, node: u64, room: &str) {
        self.with_node(node, |n| {
            n.rooms.insert(Arc::from(room));
        });
    }

    fn room_vacated(&self, node: u64, room: &str) {
        self.with_node(node, |n| {
            n.rooms.remove(room);
        });
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
