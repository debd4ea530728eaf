//! Presence: who is in a room and whether they are connected, announced as it
//! changes ([`App::presence`](crate::App::presence)).
//!
//! The hub sees every change of membership (joins and leaves it carries out) and of
//! connectivity (sessions suspended, resumed, ended), so it keeps the counts here and
//! announces a change as one volatile room broadcast: encoded once, sent to the members
//! connected now, not replayed (a client that comes back asks for the list again, in
//! its join reply or with `ServerHandle::room_presence`).
//!
//! Across nodes: announcements are room broadcasts and travel like them; the counts
//! here are this node's. A broker that shares membership gives the cluster-wide list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use ws_session::{SessionId, UserId};

/// How presence is announced. `App::presence(Presence::default())` turns it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The event the announcements carry, payload `{room, user, state}` with `state`
    /// one of [`PresenceState`]'s names (`session` too when `per_user` is off).
    /// Default: `sys.presence`.
    pub event: String,
    /// One entry per user across their sessions (tabs, devices): `joined` when the
    /// user's first session enters a room, `left` when the last one leaves, `away`
    /// when none of them is connected, `online` when one is again. Off: the same per
    /// session. Default: on.
    pub per_user: bool,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            event: "sys.presence".to_owned(),
            per_user: true,
        }
    }
}

/// A change of presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// An announcement to make: to `room`, about `user` (and `session`), leaving `except`
/// out (the session whose change it is knows it).
#[derive(Debug)]
pub(crate) struct Announcement {
    pub(crate) room: Arc<str>,
    pub(crate) user: UserId,
    pub(crate) session: Option<SessionId>,
    pub(crate) state: PresenceState,
    pub(crate) except: SessionId,
}

/// Sessions of one user in one room.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    members: usize,
    online: usize,
}

/// The hub's presence bookkeeping.
pub(crate) struct Tracker {
    pub(crate) options: Presence,
    /// Each session's user, whether it is connected, and its rooms.
    sessions: HashMap<SessionId, (UserId, bool, HashSet<Arc<str>>)>,
    /// Per room and user: sessions in the room, and how many are connected.
    counts: HashMap<(Arc<str>, UserId), Count>,
}

impl Tracker {
    pub(crate) fn new(options: Presence) -> Self {
        Self {
            options,
            sessions: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// A session was created (connected).
    pub(crate) fn created(&mut self, session: SessionId, user: UserId) {
        self.sessions.insert(session, (user, true, HashSet::new()));
    }

    /// `session` entered `room`.
    pub(crate) fn joined(&mut self, session: SessionId, room: &str, out: &mut Vec<Announcement>) {
        let Some((user, online, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        let room: Arc<str> = Arc::from(room);
        if !rooms.insert(room.clone()) {
            return;
        }
        let (user, online) = (user.clone(), *online);
        let count = self.counts.entry((room.clone(), user.clone())).or_default();
        let before = *count;
        count.members += 1;
        count.online += usize::from(online);
        let state = if !self.options.per_user || before.members == 0 {
            Some(PresenceState::Joined)
        } else if before.online == 0 && online {
            Some(PresenceState::Online)
        } else {
            None
        };
        self.announce(out, room, user, session, state);
    }

    /// `session` left `room`.
    pub(crate) fn left(&mut self, session: SessionId, room: &str, out: &mut Vec<Announcement>) {
        let Some((user, online, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(room) = rooms.take(room) else {
            return;
        };
        let (user, online) = (user.clone(), *online);
        self.leave_one(session, room, user, online, out);
    }

    /// `session` lost its connection (`false`) or got one again (`true`).
    pub(crate) fn connected(&mut self, session: SessionId, now_online: bool, out: &mut Vec<Announcement>) {
        let Some((user, online, rooms)) = self.sessions.get_mut(&session) else {
            return;
        };
        if *online == now_online {
            return;
        }
        *online = now_online;
        let (user, rooms) = (user.clone(), rooms.clone());
        for room in rooms {
            let count = self.counts.entry((room.clone(), user.clone())).or_default();
            let before = count.online;
            if now_online {
                count.online += 1;
            } else {
                count.online = count.online.saturating_sub(1);
            }
            let state = match (now_online, self.options.per_user) {
                (true, false) => Some(PresenceState::Online),
                (false, false) => Some(PresenceState::Away),
                (true, true) if before == 0 => Some(PresenceState::Online),
                (false, true) if count.online == 0 => Some(PresenceState::Away),
                _ => None,
            };
            self.announce(out, room, user.clone(), session, state);
        }
    }

    /// `session` ended: it left every room.
    pub(crate) fn ended(&mut self, session: SessionId, out: &mut Vec<Announcement>) {
        let Some((user, online, rooms)) = self.sessions.remove(&session) else {
            return;
        };
        for room in rooms {
            self.leave_one(session, room, user.clone(), online, out);
        }
    }
}

/// The members of a room, given its sessions as `(session, user, online)`: per user
/// (online when one of its sessions is) or per session.
pub(crate) fn members(
    per_user: bool,
    sessions: impl IntoIterator<Item = (SessionId, UserId, bool)>,
) -> Vec<Member> {
    {
        if !per_user {
            return sessions
                .into_iter()
                .map(|(session, user, online)| Member {
                    user,
                    session: Some(session),
                    online,
                })
                .collect();
        }
        let mut by_user: HashMap<UserId, bool> = HashMap::new();
        for (_, user, online) in sessions {
            *by_user.entry(user).or_default() |= online;
        }
        let mut members: Vec<Member> = by_user
            .into_iter()
            .map(|(user, online)| Member {
                user,
                session: None,
                online,
            })
            .collect();
        members.sort_by(|a, b| a.user.as_str().cmp(b.user.as_str()));
        members
    }
}

impl Tracker {
    fn leave_one(
        &mut self,
        session: SessionId,
        room: Arc<str>,
        user: UserId,
        online: bool,
        out: &mut Vec<Announcement>,
    ) {
        let key = (room.clone(), user.clone());
        let Some(count) = self.counts.get_mut(&key) else {
            return;
        };
        let before = *count;
        count.members = count.members.saturating_sub(1);
        count.online = count.online.saturating_sub(usize::from(online));
        let after = *count;
        if after.members == 0 {
            self.counts.remove(&key);
        }
        let state = if !self.options.per_user || after.members == 0 {
            Some(PresenceState::Left)
        } else if before.online > 0 && after.online == 0 {
            Some(PresenceState::Away)
        } else {
            None
        };
        self.announce(out, room, user, session, state);
    }

    fn announce(
        &self,
        out: &mut Vec<Announcement>,
        room: Arc<str>,
        user: UserId,
        session: SessionId,
        state: Option<PresenceState>,
    ) {
        if let Some(state) = state {
            out.push(Announcement {
                room,
                user,
                session: (!self.options.per_user).then_some(session),
                state,
                except: session,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> SessionId {
        SessionId::parse(&format!("{n:032x}")).unwrap()
    }

    fn states(out: &mut Vec<Announcement>) -> Vec<(String, PresenceState)> {
        out.drain(..).map(|a| (a.user.to_string(), a.state)).collect()
    }

    #[test]
    fn per_user_presence_counts_tabs_once() {
        let mut t = Tracker::new(Presence::default());
        let mut out = Vec::new();
        let (tab1, tab2) = (sid(1), sid(2));
        t.created(tab1, UserId::new("alice"));
        t.created(tab2, UserId::new("alice"));
        t.joined(tab1, "r", &mut out);
        t.joined(tab1, "r", &mut out); // no change
        t.joined(tab2, "r", &mut out); // the user was already there
        assert_eq!(states(&mut out), [("alice".into(), PresenceState::Joined)]);
        t.connected(tab1, false, &mut out); // tab2 still online
        assert_eq!(states(&mut out), []);
        t.connected(tab2, false, &mut out);
        assert_eq!(states(&mut out), [("alice".into(), PresenceState::Away)]);
        t.connected(tab2, true, &mut out);
        assert_eq!(states(&mut out), [("alice".into(), PresenceState::Online)]);
        t.left(tab2, "r", &mut out); // tab1 (away) is still in
        assert_eq!(states(&mut out), [("alice".into(), PresenceState::Away)]);
        t.ended(tab1, &mut out);
        assert_eq!(states(&mut out), [("alice".into(), PresenceState::Left)]);
        assert!(t.counts.is_empty());
    }

    #[test]
    fn per_session_presence_announces_every_change() {
        let mut t = Tracker::new(Presence {
            per_user: false,
            ..Presence::default()
        });
        let mut out = Vec::new();
        t.created(sid(1), UserId::new("bob"));
        t.joined(sid(1), "r", &mut out);
        t.connected(sid(1), false, &mut out);
        t.connected(sid(1), true, &mut out);
        t.left(sid(1), "r", &mut out);
        t.left(sid(1), "r", &mut out); // not in it any more
        assert_eq!(
            states(&mut out),
            [
                ("bob".into(), PresenceState::Joined),
                ("bob".into(), PresenceState::Away),
                ("bob".into(), PresenceState::Online),
                ("bob".into(), PresenceState::Left),
            ]
        );
    }
}
