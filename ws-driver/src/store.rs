//! The seam for sessions any node can resume: a shared session store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use ws_session::journal::SessionTable;
use ws_session::{JournalEntry, SessionId, SessionRecord, TokenVerifier};

use crate::handler::BoxFuture;

/// Journal entries of several sessions, each session's in order: one write.
pub type JournalBatch = Vec<(SessionId, Vec<JournalEntry>)>;

/// A store that failed or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Keeps what a resume needs of every session, for every node: the session journals
/// the engines emit, folded into [`SessionRecord`]s with
/// [`SessionRecord::apply`](ws_session::SessionRecord::apply), each record owned by one
/// node. The rules (ownership, fencing, claim on load, time to live) are those of
/// [`SessionTable`], which [`InMemorySessionStore`] wraps; a remote store (Redis)
/// implements them with its own atomic operations. See docs/PROTOCOL.md, "Sessions
/// across nodes".
///
/// The hub calls these off its task and bounds every call with
/// [`App::store_timeout`](crate::App::store_timeout): a slow store delays resumes on
/// other nodes, never this node's clients.
pub trait SessionStore: Send + Sync + 'static {
    /// Joins as node `node`; returns the stream of sessions other nodes took from it
    /// (by a [`load`](Self::load) that claimed them): the hub lets each go
    /// ([`Engine::release_session`](ws_session::Engine::release_session)).
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<SessionId>;

    /// Appends node `node`'s journal entries, each session's in order. Entries for a
    /// session `node` does not own (any more) are refused; their sessions are returned
    /// (the hub lets them go). Batches from one node arrive one at a time, in order.
    fn append(&self, node: u64, batch: JournalBatch) -> BoxFuture<Result<Vec<SessionId>, StoreError>>;

    /// The record of `session`, for a resume on `node` presenting a token with
    /// verifier `token`. When the record [admits](SessionRecord::admits) it, the session
    /// now belongs to `node`, atomically with the read, and its former owner is told
    /// (its [`subscribe`](Self::subscribe) stream).
    fn load(
        &self,
        node: u64,
        session: SessionId,
        token: TokenVerifier,
    ) -> BoxFuture<Result<Option<SessionRecord>, StoreError>>;
}

struct Inner {
    table: SessionTable,
    nodes: Vec<(u64, mpsc::UnboundedSender<SessionId>)>,
}

/// A session store inside one process, shared by the nodes (apps) started there:
/// tests, several servers in one binary. Clone it into each [`App`](crate::App).
#[derive(Clone)]
pub struct InMemorySessionStore {
    inner: Arc<Mutex<Inner>>,
}

impl InMemorySessionStore {
    /// An empty store whose suspended records live `resume_window` (use the
    /// engines' [`EngineConfig::resume_window`](ws_session::EngineConfig::resume_window)).
    pub fn new(resume_window: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                table: SessionTable::new(resume_window),
                nodes: Vec::new(),
            })),
        }
    }

    /// Records held (after dropping those whose time is up).
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        inner.table.purge(Instant::now());
        inner.table.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of `session`, without claiming it (for tests and tools).
    pub fn record(&self, session: SessionId) -> Option<SessionRecord> {
        self.lock().table.record(session).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for InMemorySessionStore {
    fn default() -> Self {
        Self::new(ws_session::EngineConfig::DEFAULT_RESUME_WINDOW)
    }
}

impl SessionStore for InMemorySessionStore {
    fn subscribe(&self, node: u64) -> mpsc::UnboundedReceiver<SessionId> {
        let (tx, rx) = mpsc::unbounded();
        self.lock().nodes.push((node, tx));
        rx
    }

    fn append(&self, node: u64, batch: JournalBatch) -> BoxFuture<Result<Vec<SessionId>, StoreError>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut fenced = Vec::new();
        for (session, entries) in batch {
            if inner.table.append(now, node, session, &entries).is_err() {
                fenced.push(session);
            }
        }
        Box::pin(std::future::ready(Ok(fenced)))
    }

    fn load(
        &self,
        node: u64,
        session: SessionId,
        token: TokenVerifier,
    ) -> BoxFuture<Result<Option<SessionRecord>, StoreError>> {
        let mut inner = self.lock();
        let loaded = inner.table.load(Instant::now(), node, session, &token);
        if let Some(former) = loaded.former_owner {
            // Nodes that went away are dropped as they are found.
            inner
                .nodes
                .retain(|(id, tx)| *id != former || tx.unbounded_send(session).is_ok());
        }
        Box::pin(std::future::ready(Ok(loaded.record)))
    }
}
