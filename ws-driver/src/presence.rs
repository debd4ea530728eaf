//! Presence: who is in a room and whether they are connected, announced as it
//! changes ([`App::presence`](crate::App::presence)).
//!
//! The hub sees every change of membership (joins and leaves it carries out) and of
//! connectivity (sessions suspended, resumed, ended); the [`Tracker`] turns them into
//! [`MemberUpdate`]s, a [`MemberTable`] — this node's, or the cluster's behind a
//! [`Membership`](crate::Membership) backend — counts each user's sessions per room,
//! and the changes of those counts are announced ([`transition`]) coalesced: what
//! changed in a room within one [`Presence::flush_interval`] goes out as one
//! [`PresenceDiff`] (split every [`Presence::max_changes`] entries), one volatile room
//! broadcast each: encoded once, sent to the members connected now, on every node, not
//! replayed (a client that comes back asks for the list again, in its join reply or
//! with `ServerHandle::room_presence`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ws_session::{SessionId, UserId};

use crate::error::HandlerError;
use crate::membership::{MemberChange, MemberState, MemberUpdate};
use crate::payloads::EncodedPayload;

/// How presence is announced. `App::presence(Presence::default())` turns it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The event the announcements carry, payload a [`PresenceDiff`]:
    /// `{room, joined: [user, …], left: […], away: […], online: […]}`, each list
    /// left out when empty (entries `{user, session}` when `per_user` is off).
    /// Default: `sys.presence`.
    pub event: String,
    /// One entry per user across their sessions (tabs, devices): `joined` when the
    /// user's first session enters a room, `left` when the last one leaves, `away`
    /// when none of them is connected, `online` when one is again. Off: the same per
    /// session. Default: on.
    pub per_user: bool,
    /// How long the changes of a room are gathered before they are announced: the
    /// first change starts the interval, and everything that changed in the room by its
    /// end goes out together, each user (session, per session) once, with the state it
    /// ended in (a join and a leave within one interval cancel out: nothing is
    /// announced). Zero: what one pass of the hub over its inputs changed (up to a few
    /// hundred inputs). A join storm of `n` members costs `n` × (number of intervals)
    /// messages instead of `n²`. Default: 50 ms.
    pub flush_interval: Duration,
    /// The most entries one announcement carries, its four lists together: a larger
    /// batch is sent as several, in order (a user's entry is in one of them). At
    /// least 1. Default: 500 (about 5 KB with user names of 8 characters).
    pub max_changes: usize,
}

impl Presence {
    /// The default [`flush_interval`](Self::flush_interval).
    pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
    /// The default [`max_changes`](Self::max_changes).
    pub const DEFAULT_MAX_CHANGES: usize = 500;
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            event: "sys.presence".to_owned(),
            per_user: true,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            max_changes: Self::DEFAULT_MAX_CHANGES,
        }
    }
}

/// The payload of a presence announcement ([`Presence::event`], `sys.presence` by
/// default): what changed in `room` since the previous announcement, as four lists of
/// who is now in each [`PresenceState`] — `{"room": …, "joined": [user, …], "left":
/// […], "away": […], "online": […]}`, an empty list left out. At most one entry per
/// user (per session when presence is per session) in the whole announcement, each
/// list in the order of its entries' first change. Entries are user names, or
/// `{"user": …, "session": …}` when presence is per session ([`PresenceEntry`]). A
/// client applies each entry as "this user is now in this state" (`left`: remove),
/// which also makes entries it already knows from the member list of its join reply
/// harmless. Volatile: not replayed after a resume.
///
/// The lists are grouped by state rather than one `{user, state}` object per entry
/// because a join storm sends every member every other member's entry: the names are
/// what must travel, a state per entry would be four times the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The room.
    pub room: String,
    /// Who entered the room (connected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<PresenceEntry>,
    /// Who is no longer in the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<PresenceEntry>,
    /// Who is in the room with no session connected (suspended, may resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub away: Vec<PresenceEntry>,
    /// Who is connected again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<PresenceEntry>,
}

impl PresenceDiff {
    /// An announcement for `room` with no entries yet.
    pub fn new(room: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            ..Self::default()
        }
    }

    /// Adds `entry` to the list of `state`.
    pub fn push(&mut self, state: PresenceState, entry: PresenceEntry) {
        self.list_mut(state).push(entry);
    }

    /// Every entry with its state, list by list (`joined`, `left`, `away`, `online`).
    pub fn entries(&self) -> impl Iterator<Item = (PresenceState, &PresenceEntry)> + '_ {
        use PresenceState::*;
        [Joined, Left, Away, Online]
            .into_iter()
            .flat_map(move |state| self.list(state).iter().map(move |entry| (state, entry)))
    }

    /// How many entries the four lists hold.
    pub fn len(&self) -> usize {
        self.joined.len() + self.left.len() + self.away.len() + self.online.len()
    }

    /// Whether the announcement has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn list(&self, state: PresenceState) -> &Vec<PresenceEntry> {
        match state {
            PresenceState::Joined => &self.joined,
            PresenceState::Left => &self.left,
            PresenceState::Away => &self.away,
            PresenceState::Online => &self.online,
        }
    }

    fn list_mut(&mut self, state: PresenceState) -> &mut Vec<PresenceEntry> {
        match state {
            PresenceState::Joined => &mut self.joined,
            PresenceState::Left => &mut self.left,
            PresenceState::Away => &mut self.away,
            PresenceState::Online => &mut self.online,
        }
    }
}

/// Whose presence an entry of a [`PresenceDiff`] is: the user's name as a JSON string
/// when presence is per user, `{"user": …, "session": …}` when it is per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The user.
    pub user: String,
    /// The session (32 hex digits), when presence is per session.
    pub session: Option<String>,
}

impl PresenceEntry {
    /// The entry of `user` (presence per user).
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            session: None,
        }
    }
}

/// The two shapes of an entry on the wire.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum EntryWire<'a> {
    User(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Session {
        #[serde(borrow)]
        user: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        session: std::borrow::Cow<'a, str>,
    },
}

impl Serialize for PresenceEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::borrow::Cow::Borrowed;
        let wire = match &self.session {
            None => EntryWire::User(Borrowed(&self.user)),
            Some(session) => EntryWire::Session {
                user: Borrowed(&self.user),
                session: Borrowed(session),
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PresenceEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match EntryWire::deserialize(deserializer)? {
            EntryWire::User(user) => Self::user(user),
            EntryWire::Session { user, session } => Self {
                user: user.into_owned(),
                session: Some(session.into_owned()),
            },
        })
    }
}

/// A change of presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PresenceState {
    /// Entered the room.
    Joined,
    /// Left the room (or the session ended).
    Left,
    /// Still in the room, but not connected (suspended, may resume).
    Away,
    /// Connected again.
    Online,
}

/// One member of a room, as [`ServerHandle::room_presence`](crate::ServerHandle::room_presence)
/// lists them: per user when presence is per user, else per session. Serializes as
/// `{"user": …, "online": …}` (and `"session"` per session), to hand to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user: UserId,
    /// The session, when presence is per session.
    pub session: Option<SessionId>,
    /// Whether (one of) its session(s) is connected now.
    pub online: bool,
}

impl Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("user", self.user.as_str())?;
        if let Some(session) = self.session {
            map.serialize_entry("session", &session.to_string())?;
        }
        map.serialize_entry("online", &self.online)?;
        map.end()
    }
}

/// A room's member list as [`ServerHandle::room_presence_shared`] hands it out: the
/// members (it derefs to `[Member]`), shared rather than copied — every caller asking
/// for a room in one pass of the hub gets the same list, and this node's list of a
/// room is handed out again until the room's membership changes — and the payloads
/// made of it, made once ([`encoded`](Self::encoded)). Cloning it shares the list.
///
/// [`ServerHandle::room_presence_shared`]: crate::ServerHandle::room_presence_shared
#[derive(Clone, Default)]
pub struct MemberList(Arc<ListInner>);

#[derive(Default)]
struct ListInner {
    members: Vec<Member>,
    /// The payloads made of the list, per payload type (see [`MemberList::encoded`]).
    encoded: Mutex<Vec<(&'static str, EncodedPayload)>>,
}

impl MemberList {
    /// The payload `make` builds from the list, serialized as JSON once per list and
    /// payload type `T`: the first call with a `T` serializes it, later calls with the
    /// same `T` — on any handler that holds this list — get that serialization without
    /// calling `make`. Answering every join of a crowd with the member list then costs
    /// one serialization per change of the room, not one per join (10,000 joins: a few
    /// dozen instead of 10,000, each up to the whole list long). Send it with
    /// [`Context::reply_encoded`](crate::Context::reply_encoded).
    ///
    /// So what `make` builds must depend on the list alone (and its room, the same
    /// for every holder of the list): a payload that names the caller, or the time,
    /// is made with [`EncodedPayload::new`] or sent with `Context::reply` instead.
    /// Concurrent first calls wait for one serialization rather than each making one
    /// (so `make` must not call `encoded` on the same list: it would wait for itself).
    pub fn encoded<'a, T: Serialize>(
        &'a self,
        make: impl FnOnce(&'a [Member]) -> T,
    ) -> Result<EncodedPayload, HandlerError> {
        let key = std::any::type_name::<T>();
        // A poisoned lock means a `make` panicked; what is cached is still whole.
        let mut cache = self.0.encoded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, encoded)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(encoded.clone());
        }
        let encoded = EncodedPayload::new(&make(&self.0.members))?;
        cache.push((key, encoded.clone()));
        Ok(encoded)
    }

    /// Whether `self` and `other` are the same list (one the hub handed out twice),
    /// not only equal.
    pub fn same_list(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for MemberList {
    type Target = [Member];

    fn deref(&self) -> &[Member] {
        &self.0.members
    }
}

impl std::fmt::Debug for MemberList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Member>> for MemberList {
    fn from(members: Vec<Member>) -> Self {
        Self(Arc::new(ListInner {
            members,
            encoded: Mutex::default(),
        }))
    }
}

/// Sessions in a room (of one user, or one session's own), and how many of them are
/// connected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Sessions in the room.
    pub members: usize,
    /// Of those, connected.
    pub online: usize,
}

/// The presence change that a count going from `before` to `after` announces: `joined`
/// when the first session entered, `left` when the last one went, `away` when none is
/// connected any more, `online` when one is again; nothing otherwise. Applied to a
/// user's counts (presence per user) or to a session's own (per session): one rule for
/// both, and for one node or the cluster.
pub fn transition(before: Count, after: Count) -> Option<PresenceState> {
    match (before.members, after.members) {
        (0, 0) => None,
        (0, _) => Some(PresenceState::Joined),
        (_, 0) => Some(PresenceState::Left),
        _ if before.online == 0 && after.online > 0 => Some(PresenceState::Online),
        _ if before.online > 0 && after.online == 0 => Some(PresenceState::Away),
        _ => None,
    }
}

/// Presence changes gathered for the next announcements, per room: per user (or
/// session) the count before its first change and after its last, so that the batch
/// announces what [`transition`] says of the whole interval.
#[derive(Default)]
pub(crate) struct Pending {
    rooms: Vec<RoomBatch>,
    index: HashMap<Arc<str>, usize>,
}

/// Whose presence an entry is: the user, and the session when per session.
type Key = (UserId, Option<SessionId>);

struct RoomBatch {
    room: Arc<str>,
    /// Keys in the order of their first change.
    order: Vec<Key>,
    /// Per key: the count before its first change, after its last.
    folded: HashMap<Key, (Count, Count)>,
}

impl Pending {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Adds a change of membership, folded into what is pending for its user (per
    /// user) or session.
    pub(crate) fn add(&mut self, per_user: bool, change: &MemberChange) {
        let (key, before, after) = match per_user {
            true => ((change.user.clone(), None), change.user_before, change.user_after),
            false => (
                (change.user.clone(), Some(change.session)),
                change.session_before,
                change.session_after,
            ),
        };
        let at = *self.index.entry(change.room.clone()).or_insert_with(|| {
            self.rooms.push(RoomBatch {
                room: change.room.clone(),
                order: Vec::new(),
                folded: HashMap::new(),
            });
            self.rooms.len() - 1
        });
        let batch = &mut self.rooms[at];
        match batch.folded.get_mut(&key) {
            Some((_, last)) => *last = after,
            None => {
                batch.order.push(key.clone());
                batch.folded.insert(key, (before, after));
            }
        }
    }

    /// Takes everything pending as announcements: per room, the entries whose folded
    /// change [`transition`] announces, at most `max_changes` per announcement.
    pub(crate) fn take(&mut self, max_changes: usize) -> Vec<PresenceDiff> {
        self.index.clear();
        let mut out = Vec::new();
        for batch in std::mem::take(&mut self.rooms) {
            let mut entries = Vec::new();
            for key in batch.order {
                let Some(&(before, after)) = batch.folded.get(&key) else {
                    continue;
                };
                let state = match transition(before, after) {
                    None => continue,
                    // Joined and gone away within the interval: in the room, away.
                    Some(PresenceState::Joined) if after.online == 0 => PresenceState::Away,
                    Some(state) => state,
                };
                let (user, session) = key;
                let entry = PresenceEntry {
                    user: user.as_str().to_owned(),
                    session: session.map(|s| s.to_string()),
                };
                entries.push((state, entry));
            }
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let mut diff = PresenceDiff::new(&*batch.room);
                for (state, entry) in entries.by_ref().take(max_changes.max(1)) {
                    diff.push(state, entry);
                }
                out.push(diff);
            }
        }
        out
    }
}

/// What the hub knows of each session for presence: its user, whether it is
/// connected, its rooms. Each change comes out as the [`MemberUpdate`]s it implies.
#[derive(Default)]
pub(crate) struct Tracker {
    sessions: HashMap<SessionId, (UserId, bool, HashSet<Arc<str>>)>,
}

impl Tracker {
    /// A session this node now holds, connected or not, in `rooms` (created: none;
    /// loaded from the session store on a resume: those of its record).
    pub(crate) fn held(
        &mut self,
        session: SessionId,
        user: UserId,
        online: bool,
        rooms: impl IntoIterator<Item = Arc<str>>,
        out: &mut Vec<MemberUpdate>,
    ) {
        let rooms: HashSet<Arc<str>> = rooms.into_iter().collect();
        let state = state(online);
        out.extend(rooms.iter().map(|room| update(room, session, &user, state)));
        self.sessions.insert(session, (user, online, rooms));
    }

    /// Whether this node holds `session` (as far as presence knows).
    pub(crate) fn holds(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// `session` entered `room`.
    pub(crate) fn joined(&mut self, session: SessionId, room: &str, out: &mut Vec<MemberUpdate>) {
        let Some((user, online, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        let room: Arc<str> = Arc::from(room);
        if rooms.insert(room.clone()) {
            out.push(update(&room, session, user, state(*online)));
        }
    }

    /// `session` left `room`.
    pub(crate) fn left(&mut self, session: SessionId, room: &str, out: &mut Vec<MemberUpdate>) {
        let Some((user, _, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        if let Some(room) = rooms.take(room) {
            out.push(update(&room, session, user, MemberState::Gone));
        }
    }

    /// `session` lost its connection (`false`) or got one again (`true`).
    pub(crate) fn connected(&mut self, session: SessionId, now_online: bool, out: &mut Vec<MemberUpdate>) {
        let Some((user, online, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        if *online != now_online {
            *online = now_online;
            out.extend(
                rooms
                    .iter()
                    .map(|room| update(room, session, user, state(now_online))),
            );
        }
    }

    /// `session` is no longer this node's to report (it moved to a node that reports it
    /// now): forgotten without an update.
    pub(crate) fn forget(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// `session` is gone from this node (ended, expired, moved to another node): it
    /// left every room as far as this node can say.
    pub(crate) fn gone(&mut self, session: SessionId, out: &mut Vec<MemberUpdate>) {
        if let Some((user, _, rooms)) = self.sessions.remove(&session) {
            out.extend(
                rooms
                    .iter()
                    .map(|room| update(room, session, &user, MemberState::Gone)),
            );
        }
    }

    /// Every member this node holds, as updates (to report them all again).
    pub(crate) fn all(&self) -> Vec<MemberUpdate> {
        self.sessions
            .iter()
            .flat_map(|(session, (user, online, rooms))| {
                rooms
                    .iter()
                    .map(|room| update(room, *session, user, state(*online)))
            })
            .collect()
    }
}

fn state(online: bool) -> MemberState {
    if online {
        MemberState::Online
    } else {
        MemberState::Away
    }
}

fn update(room: &Arc<str>, session: SessionId, user: &UserId, state: MemberState) -> MemberUpdate {
    MemberUpdate {
        room: room.clone(),
        session,
        user: user.clone(),
        state,
    }
}

/// The members of a room, given its sessions as `(session, user, online)` in any order:
/// per user (online when one of its sessions is) or per session, sorted by user, then
/// session. For lists that come unordered (a remote backend's).
pub(crate) fn members(
    per_user: bool,
    sessions: impl IntoIterator<Item = (SessionId, UserId, bool)>,
) -> MemberList {
    let mut sessions: Vec<(SessionId, UserId, bool)> = sessions.into_iter().collect();
    sessions.sort_unstable_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    members_ordered(per_user, sessions)
}

/// The members of a room, given its sessions already ordered by user, then session (a
/// [`MemberTable`](crate::MemberTable) walk): one pass, no sort, no copy of the
/// list. Per user, a user's sessions are adjacent, so they fold as they come.
pub(crate) fn members_ordered(
    per_user: bool,
    sessions: impl IntoIterator<Item = (SessionId, UserId, bool)>,
) -> MemberList {
    let sessions = sessions.into_iter();
    let mut members: Vec<Member> = Vec::with_capacity(sessions.size_hint().0);
    for (session, user, online) in sessions {
        if per_user {
            if let Some(last) = members.last_mut().filter(|last| last.user == user) {
                last.online |= online;
                continue;
            }
        }
        members.push(Member {
            user,
            session: (!per_user).then_some(session),
            online,
        });
    }
    members.into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::membership::{MemberChange, MemberTable};

    fn sid(n: u8) -> SessionId {
        SessionId::parse(&format!("{n:032x}")).unwrap()
    }

    /// Runs the tracker's updates through a table, as one node does, and names what
    /// presence announces (per user or per session).
    struct Node {
        tracker: Tracker,
        table: MemberTable,
        per_user: bool,
    }

    impl Node {
        fn new(per_user: bool) -> Self {
            Self {
                tracker: Tracker::default(),
                table: MemberTable::new(Duration::from_secs(30)),
                per_user,
            }
        }

        fn announced(&mut self, f: impl FnOnce(&mut Tracker, &mut Vec<MemberUpdate>)) -> Vec<PresenceState> {
            let mut updates = Vec::new();
            f(&mut self.tracker, &mut updates);
            let mut changes: Vec<MemberChange> = Vec::new();
            for update in &updates {
                self.table.apply(1, 0, update, &mut changes);
            }
            changes
                .iter()
                .filter_map(|c| match self.per_user {
                    true => transition(c.user_before, c.user_after),
                    false => transition(c.session_before, c.session_after),
                })
                .collect()
        }
    }

    #[test]
    fn per_user_presence_counts_tabs_once() {
        use PresenceState::*;
        let mut n = Node::new(true);
        let (tab1, tab2) = (sid(1), sid(2));
        let alice = || UserId::new("alice");
        assert_eq!(n.announced(|t, o| t.held(tab1, alice(), true, [], o)), []);
        assert_eq!(n.announced(|t, o| t.held(tab2, alice(), true, [], o)), []);
        assert_eq!(n.announced(|t, o| t.joined(tab1, "r", o)), [Joined]);
        assert_eq!(n.announced(|t, o| t.joined(tab1, "r", o)), []); // no change
        assert_eq!(n.announced(|t, o| t.joined(tab2, "r", o)), []); // the user was there
        assert_eq!(n.announced(|t, o| t.connected(tab1, false, o)), []); // tab2 online
        assert_eq!(n.announced(|t, o| t.connected(tab2, false, o)), [Away]);
        assert_eq!(n.announced(|t, o| t.connected(tab2, true, o)), [Online]);
        assert_eq!(n.announced(|t, o| t.left(tab2, "r", o)), [Away]); // tab1 (away) is in
        assert_eq!(n.announced(|t, o| t.gone(tab1, o)), [Left]);
        assert!(n.table.members("r", 0).is_empty());
        assert!(n.tracker.all().is_empty());
    }

    #[test]
    fn per_session_presence_announces_every_change() {
        use PresenceState::*;
        let mut n = Node::new(false);
        let bob = UserId::new("bob");
        assert_eq!(n.announced(|t, o| t.held(sid(1), bob, true, [], o)), []);
        assert_eq!(n.announced(|t, o| t.joined(sid(1), "r", o)), [Joined]);
        assert_eq!(n.announced(|t, o| t.connected(sid(1), false, o)), [Away]);
        assert_eq!(n.announced(|t, o| t.connected(sid(1), true, o)), [Online]);
        assert_eq!(n.announced(|t, o| t.left(sid(1), "r", o)), [Left]);
        assert_eq!(n.announced(|t, o| t.left(sid(1), "r", o)), []); // not in it any more
    }

    #[test]
    fn a_session_loaded_with_its_rooms_is_in_them() {
        let mut n = Node::new(true);
        let rooms = [Arc::from("a"), Arc::from("b")];
        let announced = n.announced(|t, o| t.held(sid(7), UserId::new("carol"), true, rooms, o));
        assert_eq!(announced, [PresenceState::Joined, PresenceState::Joined]);
        assert_eq!(n.tracker.all().len(), 2);
        assert!(n.tracker.holds(sid(7)));
    }

    /// A change of `user`'s counts in `room` (one session, per user).
    fn change(room: &str, user: &str, before: (usize, usize), after: (usize, usize)) -> MemberChange {
        let c = |(members, online)| Count { members, online };
        MemberChange {
            room: Arc::from(room),
            session: sid(1),
            user: UserId::new(user),
            session_before: c(before),
            session_after: c(after),
            user_before: c(before),
            user_after: c(after),
        }
    }

    fn taken(pending: &mut Pending, max: usize) -> Vec<(String, Vec<(String, PresenceState)>)> {
        pending
            .take(max)
            .into_iter()
            .map(|d| {
                let entries = d.entries().map(|(state, e)| (e.user.clone(), state)).collect();
                (d.room, entries)
            })
            .collect()
    }

    #[test]
    fn pending_changes_fold_per_user_and_room() {
        use PresenceState::*;
        let mut p = Pending::default();
        p.add(true, &change("r", "a", (0, 0), (1, 1))); // a joins …
        p.add(true, &change("r", "b", (0, 0), (1, 1))); // b joins …
        p.add(true, &change("s", "a", (1, 1), (1, 0))); // (a is away in s)
        p.add(true, &change("r", "a", (1, 1), (0, 0))); // … a leaves: nothing
        p.add(true, &change("r", "b", (1, 1), (1, 0))); // … b goes away: in, away
        p.add(true, &change("r", "c", (1, 0), (1, 1))); // c back online …
        p.add(true, &change("r", "c", (1, 1), (1, 0))); // … and away again: nothing
        p.add(true, &change("r", "d", (2, 1), (0, 0))); // d's two tabs leave
        assert!(!p.is_empty());
        assert_eq!(
            taken(&mut p, 10),
            [
                (
                    "r".to_owned(),
                    // Listed by state: `left` before `away`.
                    vec![("d".to_owned(), Left), ("b".to_owned(), Away)]
                ),
                ("s".to_owned(), vec![("a".to_owned(), Away)]),
            ]
        );
        assert!(p.is_empty());
        assert!(p.take(10).is_empty());
        // The bound splits, in order; a bound of 0 counts as 1.
        for user in ["x", "y", "z"] {
            p.add(true, &change("r", user, (0, 0), (1, 1)));
        }
        let sizes: Vec<usize> = p.take(0).iter().map(|d| d.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }

    #[test]
    fn the_payload_is_the_room_and_a_list_per_state() {
        let mut diff = PresenceDiff::new("r");
        diff.push(PresenceState::Joined, PresenceEntry::user("a"));
        diff.push(PresenceState::Away, PresenceEntry::user("b"));
        diff.push(PresenceState::Joined, PresenceEntry::user("c\"q"));
        let text = serde_json::to_string(&diff).unwrap();
        assert_eq!(text, r#"{"room":"r","joined":["a","c\"q"],"away":["b"]}"#);
        assert_eq!(serde_json::from_str::<PresenceDiff>(&text).unwrap(), diff);
        assert_eq!(diff.len(), 3);
        let states: Vec<_> = diff
            .entries()
            .map(|(state, e)| (state, e.user.as_str()))
            .collect();
        use PresenceState::*;
        assert_eq!(states, [(Joined, "a"), (Joined, "c\"q"), (Away, "b")]);

        // Per session, each entry names its session.
        let mut diff = PresenceDiff::new("r");
        let entry = PresenceEntry {
            user: "a".to_owned(),
            session: Some("0f".to_owned()),
        };
        diff.push(PresenceState::Left, entry);
        let text = serde_json::to_string(&diff).unwrap();
        assert_eq!(text, r#"{"room":"r","left":[{"user":"a","session":"0f"}]}"#);
        assert_eq!(serde_json::from_str::<PresenceDiff>(&text).unwrap(), diff);

        // An entry that is neither shape is refused, as is a missing room.
        assert!(serde_json::from_str::<PresenceDiff>(r#"{"room":"r","left":[7]}"#).is_err());
        assert!(serde_json::from_str::<PresenceDiff>(r#"{"left":["a"]}"#).is_err());
        assert!(PresenceDiff::new("r").is_empty());
    }

    #[test]
    fn a_list_encodes_once_per_payload_type_and_keeps_no_failure() {
        let list = MemberList::from(vec![Member {
            user: UserId::new("a"),
            session: None,
            online: true,
        }]);
        let made = std::cell::Cell::new(0);
        let names = |l: &[Member]| {
            made.set(made.get() + 1);
            l.iter().map(|m| m.user.as_str().to_owned()).collect::<Vec<_>>()
        };
        let first = list.encoded(names).unwrap();
        assert_eq!(first.as_json(), r#"["a"]"#);
        // The same type again, from a clone of the list: kept, `make` not called.
        let again = list
            .clone()
            .encoded(|_| -> Vec<String> { unreachable!("kept") })
            .unwrap();
        assert_eq!((again, made.get()), (first, 1));
        // Another type: made too.
        assert_eq!(list.encoded(|l| l.len()).unwrap().as_json(), "1");
        // A payload that does not serialize (a map keyed by pairs) is an error, and
        // nothing is kept for its type.
        type Bad = HashMap<(u8, u8), u8>;
        assert!(list.encoded(|_| Bad::from([((1, 2), 3)])).is_err());
        assert_eq!(list.encoded(|_| Bad::new()).unwrap().as_json(), "{}");
        assert!(!list.same_list(&MemberList::default()));
        assert!(list.same_list(&list.clone()));
    }

    #[test]
    fn the_transition_rule() {
        let c = |members, online| Count { members, online };
        assert_eq!(transition(c(0, 0), c(1, 0)), Some(PresenceState::Joined));
        assert_eq!(transition(c(2, 1), c(0, 0)), Some(PresenceState::Left));
        assert_eq!(transition(c(2, 0), c(2, 1)), Some(PresenceState::Online));
        assert_eq!(transition(c(2, 1), c(1, 0)), Some(PresenceState::Away));
        assert_eq!(transition(c(2, 1), c(3, 2)), None);
        assert_eq!(transition(c(0, 0), c(0, 0)), None);
    }
}
