//! Room membership shared by the nodes of a cluster: who is in a room on any node,
//! and the presence changes that follow from it, decided once for the cluster.
//!
//! Each node reports what it knows of its own sessions as [`MemberUpdate`]s: a
//! session is in a room online, in it away (suspended), or gone from it. A
//! [`Membership`] backend applies them atomically with the rules of [`MemberTable`]
//! and answers with the [`MemberChange`]s they caused — a user's count of sessions
//! (and connected sessions) in the room before and after — from which the node
//! announces presence ([`transition`](crate::presence::transition)) to the whole
//! cluster. So a user with a tab on each of two nodes is `joined` once and `left`
//! once, whichever node sees the first join and the last leave.
//!
//! Entries live for the backend's time to live and every node reports all of its
//! members again every [`Membership::refresh_interval`]; the entries of a node that
//! died (SIGKILL, no handover) expire and are announced as gone by whichever node
//! sweeps them first — unless their sessions resumed elsewhere meanwhile, which
//! rewrites them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ws_session::{SessionId, UserId};

use crate::handler::BoxFuture;
use crate::presence::Count;

/// Where a session stands in a room, as its node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// In the room and connected.
    Online,
    /// In the room, suspended (its connection dropped; it may resume).
    Away,
    /// Not in the room (left, ended, expired).
    Gone,
}

impl MemberState {
    /// The session's own count: one member, online or not; none when gone.
    fn count(self) -> Count {
        match self {
            Self::Online => Count {
                members: 1,
                online: 1,
            },
            Self::Away => Count {
                members: 1,
                online: 0,
            },
            Self::Gone => Count::default(),
        }
    }
}

/// One session's state in one room, reported by the node that holds the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberUpdate {
    /// The room.
    pub room: Arc<str>,
    /// The session.
    pub session: SessionId,
    /// Its user.
    pub user: UserId,
    /// Where it stands now.
    pub state: MemberState,
}

/// What an update (or an expiry) changed in a room: the session's count and its
/// user's, before and after. Presence is announced from these
/// ([`transition`](crate::presence::transition)): per user from the user's counts,
/// per session from the session's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// The room.
    pub room: Arc<str>,
    /// The session whose entry changed.
    pub session: SessionId,
    /// Its user.
    pub user: UserId,
    /// The session's count before (0 or 1 member) …
    pub session_before: Count,
    /// … and after.
    pub session_after: Count,
    /// The user's count (sessions in the room, connected ones) before …
    pub user_before: Count,
    /// … and after.
    pub user_after: Count,
}

/// One member of a room, on whichever node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMember {
    /// The session.
    pub session: SessionId,
    /// Its user.
    pub user: UserId,
    /// Whether it is connected.
    pub online: bool,
}

/// A membership backend that failed or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipError(pub String);

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "room membership: {}", self.0)
    }
}

impl std::error::Error for MembershipError {}

/// Keeps every node's room members, for cluster-wide member lists and presence
/// ([`App::membership`](crate::App::membership)). The rules are [`MemberTable`]'s,
/// which [`InMemoryMembership`] wraps; a remote backend (Redis) applies them with its
/// own atomic operations.
///
/// The hub calls it off its task, one call at a time per node, in the order the
/// changes happened, each bounded by [`App::store_timeout`](crate::App::store_timeout).
pub trait Membership: Send + Sync + 'static {
    /// Applies node `node`'s `updates` in order at `now_ms` (milliseconds since the
    /// Unix epoch, the node's clock), and removes the entries that expired by then
    /// (any node's). Returns what changed, in order.
    fn update(
        &self,
        node: u64,
        now_ms: u64,
        updates: Vec<MemberUpdate>,
    ) -> BoxFuture<Result<Vec<MemberChange>, MembershipError>>;

    /// The members of `room` on every node whose entries have not expired by `now_ms`.
    fn members(&self, room: &str, now_ms: u64) -> BoxFuture<Result<Vec<RoomMember>, MembershipError>>;

    /// How often each node reports all of its members again (their entries expire
    /// unless reported within a few of these).
    fn refresh_interval(&self) -> Duration;
}

/// One room member's entry.
#[derive(Debug, Clone)]
struct Entry {
    user: UserId,
    online: bool,
    node: u64,
    expires_ms: u64,
}

/// The rules of room membership, in memory: an entry per (room, session) with the node
/// that reported it and an expiry, and per (room, user) the count of sessions and
/// connected sessions. [`InMemoryMembership`] is this behind a lock; the Redis backend
/// implements the same rules and runs the same conformance cases.
///
/// - An update to `Online` or `Away` from any node writes the entry (a session that
///   moved to another node is that node's now) and sets its expiry to `now + ttl`.
/// - An update to `Gone` removes the entry only if the node reporting it is the one
///   that wrote it: the node a session moved away from cannot remove it from under its
///   new node.
/// - Entries whose expiry passed are removed (as `Gone`) before each update applies.
#[derive(Debug, Default)]
pub struct MemberTable {
    ttl_ms: u64,
    entries: HashMap<(Arc<str>, SessionId), Entry>,
    users: HashMap<(Arc<str>, UserId), Count>,
    by_expiry: BTreeSet<(u64, Arc<str>, SessionId)>,
}

impl MemberTable {
    /// An empty table whose entries live `ttl` after their last update.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ..Self::default()
        }
    }

    /// Applies `update` from `node` at `now_ms`; adds the changes it made to `out`.
    pub fn apply(&mut self, node: u64, now_ms: u64, update: &MemberUpdate, out: &mut Vec<MemberChange>) {
        let key = (update.room.clone(), update.session);
        let old = self.entries.get(&key).cloned();
        if update.state == MemberState::Gone && old.as_ref().is_some_and(|e| e.node != node) {
            return;
        }
        if let Some(old) = &old {
            self.by_expiry.remove(&(old.expires_ms, key.0.clone(), key.1));
        }
        let before = old.as_ref().map_or(MemberState::Gone, |e| state_of(e.online));
        if update.state == MemberState::Gone {
            self.entries.remove(&key);
        } else {
            let expires_ms = now_ms.saturating_add(self.ttl_ms);
            self.by_expiry.insert((expires_ms, key.0.clone(), key.1));
            self.entries.insert(
                key,
                Entry {
                    user: update.user.clone(),
                    online: update.state == MemberState::Online,
                    node,
                    expires_ms,
                },
            );
        }
        // A session keeps its user; should an update name another, the old user
        // leaves and the new one enters.
        if let Some(old) = old.filter(|e| e.user != update.user) {
            out.extend(self.count(&update.room, update.session, &old.user, before, MemberState::Gone));
            out.extend(self.count(
                &update.room,
                update.session,
                &update.user,
                MemberState::Gone,
                update.state,
            ));
        } else {
            out.extend(self.count(&update.room, update.session, &update.user, before, update.state));
        }
    }

    /// Removes the entries expired by `now_ms`, each as a change to `Gone`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<MemberChange>) {
        while let Some((expires_ms, room, session)) = self.by_expiry.first().cloned() {
            if expires_ms > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            let Some(entry) = self.entries.remove(&(room.clone(), session)) else {
                continue;
            };
            let before = state_of(entry.online);
            out.extend(self.count(&room, session, &entry.user, before, MemberState::Gone));
        }
    }

    /// The members of `room` whose entries have not expired by `now_ms`, ordered by
    /// session.
    pub fn members(&self, room: &str, now_ms: u64) -> Vec<RoomMember> {
        let mut members: Vec<RoomMember> = self
            .entries
            .iter()
            .filter(|((r, _), e)| &**r == room && e.expires_ms > now_ms)
            .map(|((_, session), e)| RoomMember {
                session: *session,
                user: e.user.clone(),
                online: e.online,
            })
            .collect();
        members.sort_by_key(|m| m.session);
        members
    }

    /// Moves `user`'s counts in `room` from `before` to `after` for one session.
    fn count(
        &mut self,
        room: &Arc<str>,
        session: SessionId,
        user: &UserId,
        before: MemberState,
        after: MemberState,
    ) -> Option<MemberChange> {
        if before == after {
            return None;
        }
        let (session_before, session_after) = (before.count(), after.count());
        let key = (room.clone(), user.clone());
        let user_before = self.users.get(&key).copied().unwrap_or_default();
        let user_after = Count {
            members: user_before.members.saturating_sub(session_before.members) + session_after.members,
            online: user_before.online.saturating_sub(session_before.online) + session_after.online,
        };
        if user_after.members == 0 {
            self.users.remove(&key);
        } else {
            self.users.insert(key, user_after);
        }
        Some(MemberChange {
            room: room.clone(),
            session,
            user: user.clone(),
            session_before,
            session_after,
            user_before,
            user_after,
        })
    }
}

/// Milliseconds since the Unix epoch: the clock membership entries expire by (one for
/// every node, unlike `Instant`).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn state_of(online: bool) -> MemberState {
    if online {
        MemberState::Online
    } else {
        MemberState::Away
    }
}

/// Room membership inside one process, shared by the nodes (apps) started there:
/// tests, several servers in one binary. Clone it into each [`App`](crate::App).
#[derive(Clone)]
pub struct InMemoryMembership {
    table: Arc<Mutex<MemberTable>>,
    refresh: Duration,
}

impl InMemoryMembership {
    /// Entries live `ttl`; nodes report all of their members every third of it.
    pub fn new(ttl: Duration) -> Self {
        Self {
            table: Arc::new(Mutex::new(MemberTable::new(ttl))),
            refresh: ttl / 3,
        }
    }
}

impl Default for InMemoryMembership {
    /// Entries live 30 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl Membership for InMemoryMembership {
    fn update(
        &self,
        node: u64,
        now_ms: u64,
        updates: Vec<MemberUpdate>,
    ) -> BoxFuture<Result<Vec<MemberChange>, MembershipError>> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changes = Vec::new();
        table.expire(now_ms, &mut changes);
        for update in &updates {
            table.apply(node, now_ms, update, &mut changes);
        }
        Box::pin(std::future::ready(Ok(changes)))
    }

    fn members(&self, room: &str, now_ms: u64) -> BoxFuture<Result<Vec<RoomMember>, MembershipError>> {
        let members = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .members(room, now_ms);
        Box::pin(std::future::ready(Ok(members)))
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh
    }
}
