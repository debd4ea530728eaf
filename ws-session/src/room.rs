//! Rooms: named sets of sessions (never connections, so membership survives a
//! reconnect).

use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hasher};
use std::sync::Arc;

use crate::id::IdSet;
use crate::{RoomOffset, SessionId};

/// Room names may come from clients, so their hash is keyed with a secret drawn from
/// the caller's generator (no HashDoS), yet deterministic for a given seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyedBuild(u128);

impl BuildHasher for KeyedBuild {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u128(self.0);
        h
    }
}

#[derive(Debug)]
pub(crate) struct Rooms {
    rooms: HashMap<Arc<str>, Room, KeyedBuild>,
}

#[derive(Debug, Default)]
struct Room {
    members: IdSet<SessionId>,
    /// With room history: the offset of the last publication of the room handled
    /// here, where a session that joins now starts.
    cursor: Option<RoomOffset>,
}

impl Rooms {
    pub(crate) fn new(key: u128) -> Self {
        Self {
            rooms: HashMap::with_hasher(KeyedBuild(key)),
        }
    }

    /// Adds `session` to `room`; returns the shared name, and whether it was new.
    pub(crate) fn join(&mut self, room: &str, session: SessionId) -> (Arc<str>, bool) {
        if let Some(name) = self.rooms.get_key_value(room).map(|(name, _)| name.clone()) {
            let added = self
                .rooms
                .get_mut(room)
                .is_some_and(|r| r.members.insert(session));
            return (name, added);
        }
        let name: Arc<str> = Arc::from(room);
        let mut r = Room::default();
        r.members.insert(session);
        self.rooms.insert(name.clone(), r);
        (name, true)
    }

    /// Removes `session` from `room`, dropping the room when it empties.
    pub(crate) fn leave(&mut self, room: &str, session: SessionId) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        let removed = r.members.remove(&session);
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        removed
    }

    pub(crate) fn members(&self, room: &str) -> Option<&IdSet<SessionId>> {
        self.rooms.get(room).map(|r| &r.members)
    }

    /// The shared name of `room`, if it has members.
    pub(crate) fn name(&self, room: &str) -> Option<Arc<str>> {
        self.rooms.get_key_value(room).map(|(name, _)| name.clone())
    }

    /// Where a session joining `room` now starts in its history.
    pub(crate) fn cursor(&self, room: &str) -> Option<RoomOffset> {
        self.rooms.get(room).and_then(|r| r.cursor)
    }

    /// `room`'s publications up to `offset` were handled here.
    pub(crate) fn advance(&mut self, room: &str, offset: RoomOffset) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.cursor = Some(r.cursor.map_or(offset, |at| at.max(offset)));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }
}
