//! The seam for fan-out across server nodes.

use std::sync::{Arc, Mutex};

use futures_channel::mpsc;
use ws_session::Publication;

/// Carries room and global broadcasts between nodes. Each node publishes the
/// broadcasts its engine makes and delivers what the others publish; a publication
/// is never delivered back to the node that made it.
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
}

/// A node on the bus: its id and where its publications go.
type Subscriber = (u64, mpsc::UnboundedSender<Publication>);

/// A bus inside one process.
#[derive(Clone, Default)]
pub struct InMemoryPubSub {
    nodes: Arc<Mutex<Vec<Subscriber>>>,
}

impl InMemoryPubSub {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PubSub for InMemoryPubSub {
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<Publication> {
        let (tx, rx) = mpsc::unbounded();
        self.nodes.lock().expect("pubsub lock").push((node, tx));
        rx
    }

    fn publish(&self, node: u64, publication: Publication) {
        let mut nodes = self.nodes.lock().expect("pubsub lock");
        // Nodes that went away are dropped from the bus as they are found.
        nodes.retain(|(id, tx)| *id == node || tx.unbounded_send(publication.clone()).is_ok());
    }
}
