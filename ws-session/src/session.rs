//! A session: the unit that outlives connections. It owns the sequence numbers, the
//! replay buffer, the resume token and its room memberships.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::id::IdMap;
use crate::replay::ReplayBuffer;
use crate::{ConnectionId, ResumeToken, RoomOffset, SessionId, TokenVerifier, UserId};

/// Per room, the offset up to which a session has the room's history.
pub(crate) type RoomPositions = Vec<(Arc<str>, RoomOffset)>;

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) user: UserId,
    pub(crate) anonymous: bool,
    /// The verifier of the current token (the token itself is not kept).
    pub(crate) token: TokenVerifier,
    /// The token this one replaced, kept so a replay of it is reported as "used".
    pub(crate) used_token: Option<TokenVerifier>,
    /// The token in clear, while the session is fresh (created on its connection and
    /// not resumed yet): `sys.session.created` may have to be sent again. Boxed: it
    /// is dropped at the first resume, and inline it would grow every session.
    pub(crate) announce: Option<Box<ResumeToken>>,
    /// Whether the client has shown it holds `token`: set by its first message on the
    /// connection that received it. Until then a resume may still present
    /// `used_token`, because a connection cut between the rotation and
    /// `sys.session.restored` leaves the client with only the old one.
    pub(crate) token_confirmed: bool,
    /// `None` while suspended.
    pub(crate) connection: Option<ConnectionId>,
    /// The `s` of the next session-stream message (the first is 1).
    pub(crate) next_seq: u64,
    pub(crate) replay: ReplayBuffer,
    pub(crate) rooms: Vec<Arc<str>>,
    /// With room history: per room, the offset of the last publication handled for
    /// it (delivered, or published before it joined). Boxed, and `None` without room
    /// history, so that it costs a session one word.
    pub(crate) room_offsets: Option<Box<RoomPositions>>,
    /// When suspended: the end of the resume window.
    pub(crate) expires_at: Option<Instant>,
    pub(crate) timer_at: Option<Instant>,
    /// Server→client requests waiting for an answer (bounded by
    /// `EngineConfig::max_pending_requests`).
    pub(crate) pending_requests: u32,
}

impl Session {
    pub(crate) fn last_sent(&self) -> u64 {
        self.next_seq - 1
    }

    /// The offset up to which the session has `room`'s history.
    pub(crate) fn room_offset(&self, room: &str) -> Option<RoomOffset> {
        self.room_offsets
            .as_ref()?
            .iter()
            .find(|(r, _)| &**r == room)
            .map(|(_, o)| *o)
    }

    /// Records that the session has `room`'s history up to `offset`.
    pub(crate) fn set_room_offset(&mut self, room: &Arc<str>, offset: RoomOffset) {
        let offsets = self.room_offsets.get_or_insert_with(Box::default);
        match offsets.iter_mut().find(|(r, _)| r == room) {
            Some((_, at)) => *at = (*at).max(offset),
            None => offsets.push((room.clone(), offset)),
        }
    }

    /// Forgets the session's position in `room` (it left).
    pub(crate) fn forget_room_offset(&mut self, room: &str) {
        if let Some(offsets) = &mut self.room_offsets {
            offsets.retain(|(r, _)| &**r != room);
        }
    }
}

/// A read-only view of a session, for applications and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's user.
    pub user: UserId,
    /// Its connection; `None` while suspended.
    pub connection: Option<ConnectionId>,
    /// The `s` of the last message sent (0 before the first).
    pub last_seq: u64,
    /// Messages in the replay buffer.
    pub replay_len: usize,
    /// Bytes in the replay buffer.
    pub replay_bytes: usize,
    /// The rooms it is in, in the order joined.
    pub rooms: Vec<Arc<str>>,
}

impl SessionInfo {
    pub(crate) fn of(session: &Session) -> Self {
        Self {
            user: session.user.clone(),
            connection: session.connection,
            last_seq: session.last_sent(),
            replay_len: session.replay.len(),
            replay_bytes: session.replay.bytes(),
            rooms: session.rooms.clone(),
        }
    }
}

/// How a remembered session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tomb {
    /// Its window passed, or it was replaced or abandoned: a resume is told "expired".
    Expired,
    /// Ended on purpose by the application or its client: a resume is told "ended".
    Ended,
}

/// Recently ended session ids (bounded, oldest forgotten first), so a late resume
/// is told "expired" or "ended" rather than "unknown".
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    order: VecDeque<SessionId>,
    map: IdMap<SessionId, Tomb>,
}

impl Tombstones {
    pub(crate) fn insert(&mut self, id: SessionId, tomb: Tomb, max: usize) {
        if max == 0 {
            return;
        }
        if self.map.insert(id, tomb).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(crate) fn contains(&self, id: SessionId) -> bool {
        self.map.contains_key(&id)
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<Tomb> {
        self.map.get(&id).copied()
    }
}
