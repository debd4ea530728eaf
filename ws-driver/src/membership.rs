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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
///
/// Each room's entries are also kept ordered by user, then session, as they change, so
/// that listing a room ([`iter_members`](Self::iter_members)) is a walk in the order
/// member lists are given in, not a scan of every room's entries and a sort.
#[derive(Debug, Default)]
pub struct MemberTable {
    ttl_ms: u64,
    entries: HashMap<(Arc<str>, SessionId), Entry>,
    users: HashMap<(Arc<str>, UserId), Count>,
    by_expiry: BTreeSet<(u64, Arc<str>, SessionId)>,
    /// Per room: its entries by (user, session), each with whether it is online and
    /// its expiry (a copy of the entry's, so that a walk needs no lookup per member).
    rooms: HashMap<Arc<str>, BTreeMap<(UserId, SessionId), Listed>>,
}

/// What a room's ordered listing keeps of an entry.
#[derive(Debug, Clone, Copy)]
struct Listed {
    online: bool,
    expires_ms: u64,
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
            // A refresh of the same user's entry overwrites its listing in place below.
            if update.state == MemberState::Gone || old.user != update.user {
                self.unlist(&key.0, &old.user, key.1);
            }
        }
        let before = old.as_ref().map_or(MemberState::Gone, |e| state_of(e.online));
        if update.state == MemberState::Gone {
            self.entries.remove(&key);
        } else {
            let expires_ms = now_ms.saturating_add(self.ttl_ms);
            self.by_expiry.insert((expires_ms, key.0.clone(), key.1));
            let listed = Listed {
                online: update.state == MemberState::Online,
                expires_ms,
            };
            self.rooms
                .entry(key.0.clone())
                .or_default()
                .insert((update.user.clone(), key.1), listed);
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
            self.unlist(&room, &entry.user, session);
            let before = state_of(entry.online);
            out.extend(self.count(&room, session, &entry.user, before, MemberState::Gone));
        }
    }

    /// The members of `room` whose entries have not expired by `now_ms`, ordered by
    /// user, then session.
    pub fn members(&self, room: &str, now_ms: u64) -> Vec<RoomMember> {
        self.iter_members(room, now_ms).collect()
    }

    /// The members of `room` whose entries have not expired by `now_ms`, ordered by
    /// user, then session, as a walk over the room's entries (no copy of the room, no
    /// sort; each item clones a user id, a reference count).
    pub fn iter_members<'t>(&'t self, room: &str, now_ms: u64) -> impl Iterator<Item = RoomMember> + 't {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(move |(_, listed)| listed.expires_ms > now_ms)
            .map(|((user, session), listed)| RoomMember {
                session: *session,
                user: user.clone(),
                online: listed.online,
            })
    }

    /// Takes `user`'s `session` out of `room`'s ordered listing (and the room, once
    /// empty, out of the table: rooms come and go with their members).
    fn unlist(&mut self, room: &Arc<str>, user: &UserId, session: SessionId) {
        if let Some(listing) = self.rooms.get_mut(room) {
            listing.remove(&(user.clone(), session));
            if listing.is_empty() {
                self.rooms.remove(room);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> SessionId {
        SessionId(u128::from(n))
    }

    fn up(room: &str, session: u8, user: &str, state: MemberState) -> MemberUpdate {
        MemberUpdate {
            room: Arc::from(room),
            session: sid(session),
            user: UserId::new(user),
            state,
        }
    }

    /// `(user, session, online)` of `room`'s listing at `now_ms`.
    fn listed(table: &MemberTable, room: &str, now_ms: u64) -> Vec<(String, u8, bool)> {
        let walk: Vec<_> = table
            .iter_members(room, now_ms)
            .map(|m| (m.user.as_str().to_owned(), m.session.0 as u8, m.online))
            .collect();
        let members: Vec<_> = table
            .members(room, now_ms)
            .into_iter()
            .map(|m| (m.user.as_str().to_owned(), m.session.0 as u8, m.online))
            .collect();
        assert_eq!(walk, members, "the walk and the list agree");
        walk
    }

    fn apply(table: &mut MemberTable, node: u64, now_ms: u64, updates: &[MemberUpdate]) {
        let mut changes = Vec::new();
        for update in updates {
            table.apply(node, now_ms, update, &mut changes);
        }
    }

    fn owned(items: &[(&str, u8, bool)]) -> Vec<(String, u8, bool)> {
        items.iter().map(|&(u, s, o)| (u.to_owned(), s, o)).collect()
    }

    #[test]
    fn a_rooms_listing_is_ordered_by_user_then_session_whatever_the_order_of_updates() {
        use MemberState::*;
        let mut t = MemberTable::new(Duration::from_secs(30));
        apply(
            &mut t,
            1,
            0,
            &[
                up("r", 9, "carol", Online),
                up("r", 5, "alice", Away),
                up("r", 7, "bob", Online),
                up("r", 2, "alice", Online),
                up("other", 1, "zed", Online),
            ],
        );
        assert_eq!(
            listed(&t, "r", 0),
            owned(&[
                ("alice", 2, true),
                ("alice", 5, false),
                ("bob", 7, true),
                ("carol", 9, true)
            ])
        );
        assert_eq!(listed(&t, "other", 0), owned(&[("zed", 1, true)]));
        assert!(listed(&t, "nowhere", 0).is_empty());
    }

    #[test]
    fn the_listing_follows_every_change_of_an_entry() {
        use MemberState::*;
        let mut t = MemberTable::new(Duration::from_secs(30));
        apply(&mut t, 1, 0, &[up("r", 1, "a", Online), up("r", 2, "b", Online)]);
        // Away and online again: the same entry, its flag changed.
        apply(&mut t, 1, 0, &[up("r", 1, "a", Away)]);
        assert_eq!(listed(&t, "r", 0), owned(&[("a", 1, false), ("b", 2, true)]));
        apply(&mut t, 1, 0, &[up("r", 1, "a", Online), up("r", 1, "a", Online)]);
        assert_eq!(listed(&t, "r", 0), owned(&[("a", 1, true), ("b", 2, true)]));
        // A session reported under another user moves to that user's place.
        apply(&mut t, 1, 0, &[up("r", 1, "c", Online)]);
        assert_eq!(listed(&t, "r", 0), owned(&[("b", 2, true), ("c", 1, true)]));
        // Gone from another node than the one that wrote it: stays.
        apply(&mut t, 2, 0, &[up("r", 2, "b", Gone)]);
        assert_eq!(listed(&t, "r", 0), owned(&[("b", 2, true), ("c", 1, true)]));
        apply(&mut t, 1, 0, &[up("r", 2, "b", Gone), up("r", 1, "c", Gone)]);
        assert!(listed(&t, "r", 0).is_empty());
        assert!(t.rooms.is_empty(), "an empty room is dropped");
    }

    #[test]
    fn expired_entries_leave_the_listing() {
        use MemberState::*;
        let mut t = MemberTable::new(Duration::from_millis(100));
        apply(&mut t, 1, 0, &[up("r", 1, "a", Online)]);
        apply(&mut t, 2, 50, &[up("r", 2, "b", Online)]);
        // Not swept yet, but listed only while unexpired at the caller's clock.
        assert_eq!(listed(&t, "r", 99), owned(&[("a", 1, true), ("b", 2, true)]));
        assert_eq!(listed(&t, "r", 100), owned(&[("b", 2, true)]));
        // A refresh extends the entry; the sweep removes what expired.
        apply(&mut t, 2, 120, &[up("r", 2, "b", Online)]);
        let mut changes = Vec::new();
        t.expire(200, &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].session, sid(1));
        assert_eq!(listed(&t, "r", 200), owned(&[("b", 2, true)]));
        t.expire(1000, &mut changes);
        assert!(listed(&t, "r", 0).is_empty());
        assert!(t.rooms.is_empty());
    }
}
