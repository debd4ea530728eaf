//! Sessions any node can resume: the journal of a session's changes, and the record
//! a shared store folds it into.
//!
//! With [`EngineConfig::shared_sessions`](crate::EngineConfig::shared_sessions) the
//! engine emits, in order, an [`Action::Journal`](crate::Action::Journal) for every
//! change of a session that a resume needs. A store (ws-driver's `SessionStore`)
//! appends them to the session's [`SessionRecord`] with [`SessionRecord::apply`] — the
//! one fold, so that every store agrees on what a journal means. A resume of a session
//! the engine does not hold asks for the record
//! ([`Action::LoadSession`](crate::Action::LoadSession)) and is decided on it by the
//! same checks as a local resume. See `docs/PROTOCOL.md`, "Sessions across nodes".

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::token::TokenVerifier;
use crate::{RoomOffset, SessionId, UserId};

/// One change of a session, in the order the engine made them. The resume token
/// appears only as its [`TokenVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalEntry {
    /// The session was created (attached to a connection). Starts a record.
    Created {
        /// Its user.
        user: UserId,
        /// Whether it is anonymous.
        anonymous: bool,
        /// The verifier of its resume token.
        token: TokenVerifier,
    },
    /// A resume rotated the token: `token` is the new one's verifier, `previous` the
    /// one still accepted until the client confirms it holds the new one.
    Token {
        /// The new token's verifier.
        token: TokenVerifier,
        /// The previous token's verifier.
        previous: Option<TokenVerifier>,
    },
    /// The client showed it holds the current token: the previous one is now "used".
    Confirmed,
    /// The session joined a room.
    Joined(Arc<str>),
    /// The session left a room.
    Left(Arc<str>),
    /// The session has every message of `room` up to `offset` of the room's history
    /// (with [`EngineConfig::room_history`](crate::EngineConfig::room_history)): a
    /// node that takes the session over reads the room's history after it.
    RoomPosition {
        /// The room.
        room: Arc<str>,
        /// The offset of the last of its publications handled for the session.
        offset: RoomOffset,
    },
    /// A message of the session stream: its `s` and its encoded envelope up to `s`
    /// (the frame is `prefix` followed by `,"s":N}`; see
    /// [`OutboundMessage`](crate::OutboundMessage)).
    Message {
        /// Its sequence number.
        seq: u64,
        /// The envelope, encoded up to `s`.
        prefix: Bytes,
        /// Its MessagePack form (the binary prefix, its map counting `s`), when the
        /// payload was given in MessagePack too
        /// ([`Payload::Both`](ws_proto::envelope::Payload::Both)): a node that takes the
        /// session over replays it as it is, so binary data stays `bin`. `None` for a
        /// payload given as JSON only: the binary form is then made from `prefix`, as
        /// on the node that sent it.
        msgpack: Option<Bytes>,
    },
    /// The replay buffer dropped every message before `first` (acknowledged by the
    /// client, or over the buffer's bounds).
    Trimmed {
        /// The `s` of the first message kept.
        first: u64,
    },
    /// The session got a connection (resumed).
    Attached,
    /// The session lost its connection: its resume window starts.
    Suspended,
    /// The session ended (expired, ended on purpose, replaced, abandoned): a store
    /// deletes its record.
    Ended,
}

/// What a resume on any node needs of a session: the fold of its journal
/// ([`SessionRecord::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionRecord {
    /// Its user.
    pub user: UserId,
    /// Whether it is anonymous.
    pub anonymous: bool,
    /// The current token's verifier.
    pub token: TokenVerifier,
    /// The previous token's verifier (see [`JournalEntry::Token`]).
    pub previous: Option<TokenVerifier>,
    /// Whether the client confirmed the current token.
    pub confirmed: bool,
    /// The `s` of the next message (the first is 1).
    pub next_seq: u64,
    /// The rooms it is in, in the order joined.
    pub rooms: Vec<Arc<str>>,
    /// For rooms with history: the offset up to which the session has the room's
    /// messages ([`JournalEntry::RoomPosition`]). A room without one has no known
    /// position (nothing of it was delivered since the join).
    pub room_offsets: Vec<(Arc<str>, RoomOffset)>,
    /// The unacknowledged messages, `(s, prefix, msgpack)` as in
    /// [`JournalEntry::Message`], consecutive and in order.
    pub replay: VecDeque<(u64, Bytes, Option<Bytes>)>,
    /// Whether a connection carries it (else it is suspended).
    pub attached: bool,
    /// Whether it ended ([`JournalEntry::Ended`]): a store drops the record.
    pub ended: bool,
}

impl SessionRecord {
    /// The record a [`JournalEntry::Created`] starts; `None` for any other entry (a
    /// journal whose start a store never saw cannot be folded).
    pub fn start(entry: &JournalEntry) -> Option<Self> {
        match entry {
            JournalEntry::Created {
                user,
                anonymous,
                token,
            } => Some(Self {
                user: user.clone(),
                anonymous: *anonymous,
                token: *token,
                previous: None,
                // As the engine: nothing to protect before the first rotation.
                confirmed: true,
                next_seq: 1,
                rooms: Vec::new(),
                room_offsets: Vec::new(),
                replay: VecDeque::new(),
                attached: true,
                ended: false,
            }),
            _ => None,
        }
    }

    /// Folds the journal `entries` (the first must be `Created`).
    pub fn fold<'a>(entries: impl IntoIterator<Item = &'a JournalEntry>) -> Option<Self> {
        let mut entries = entries.into_iter();
        let mut record = Self::start(entries.next()?)?;
        for entry in entries {
            record.apply(entry);
        }
        Some(record)
    }

    /// Applies the next entry of the session's journal.
    ///
    /// A message whose `s` is not the next one (an entry lost to a failed write) starts
    /// the replay buffer afresh at it: the messages before are gone, so a resume from
    /// before them is refused as a gap rather than served with a hole.
    pub fn apply(&mut self, entry: &JournalEntry) {
        match entry {
            JournalEntry::Created { .. } => {
                if let Some(fresh) = Self::start(entry) {
                    *self = fresh;
                }
            }
            JournalEntry::Token { token, previous } => {
                self.token = *token;
                self.previous = *previous;
                self.confirmed = false;
            }
            JournalEntry::Confirmed => self.confirmed = true,
            JournalEntry::Joined(room) => {
                if !self.rooms.iter().any(|r| r == room) {
                    self.rooms.push(room.clone());
                    // A fresh membership: a position from an earlier one does not hold.
                    self.room_offsets.retain(|(r, _)| r != room);
                }
            }
            JournalEntry::Left(room) => {
                self.rooms.retain(|r| r != room);
                self.room_offsets.retain(|(r, _)| r != room);
            }
            JournalEntry::RoomPosition { room, offset } => {
                if !self.rooms.iter().any(|r| r == room) {
                    return;
                }
                match self.room_offsets.iter_mut().find(|(r, _)| r == room) {
                    Some((_, at)) => *at = (*at).max(*offset),
                    None => self.room_offsets.push((room.clone(), *offset)),
                }
            }
            JournalEntry::Message { seq, prefix, msgpack } => {
                if *seq != self.next_seq {
                    self.replay.clear();
                }
                self.replay.push_back((*seq, prefix.clone(), msgpack.clone()));
                self.next_seq = seq + 1;
            }
            JournalEntry::Trimmed { first } => {
                while self.replay.front().is_some_and(|(s, _, _)| s < first) {
                    self.replay.pop_front();
                }
            }
            JournalEntry::Attached => self.attached = true,
            JournalEntry::Suspended => self.attached = false,
            JournalEntry::Ended => self.ended = true,
        }
    }

    /// Whether a resume presenting a token with verifier `presented` may go on (the
    /// engine's token rule, [`TokenVerifier::check`]): a store lets a node claim the
    /// session only then, so that knowing a session id is not enough to move it.
    pub fn admits(&self, presented: &TokenVerifier) -> bool {
        !self.ended
            && TokenVerifier::check(presented, &self.token, self.previous.as_ref(), self.confirmed).is_ok()
    }

    /// The offset up to which the session has `room`'s history, if known.
    pub fn room_offset(&self, room: &str) -> Option<RoomOffset> {
        self.room_offsets
            .iter()
            .find(|(r, _)| &**r == room)
            .map(|(_, o)| *o)
    }

    /// Bytes of encoded messages held, for a store's accounting: the JSON prefixes and
    /// the MessagePack forms held with them.
    pub fn replay_bytes(&self) -> usize {
        self.replay
            .iter()
            .map(|(_, p, m)| p.len() + m.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// Journal entries refused because the writing node does not own the session (any
/// more): another node claimed it, or its record ended or expired. The writer lets the
/// session go ([`Engine::release_session`](crate::Engine::release_session)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenced;

/// What [`SessionTable::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded {
    /// The record, if there is one (claimed for the loading node only when it
    /// [admits](SessionRecord::admits) the presented token).
    pub record: Option<SessionRecord>,
    /// The node that owned the session until this load claimed it, when that was
    /// another node: it must be told to let the session go.
    pub former_owner: Option<u64>,
}

/// The logic of a shared session store, Sans-IO: records by session, each owned by
/// one node, folded from the journals the nodes append, with the resume window as
/// time to live once suspended. A store wraps it (a lock, a clock, a way to tell
/// former owners); a remote store (Redis) implements the same rules with its own
/// atomic operations, folding with [`SessionRecord::apply`].
///
/// - A `Created` entry starts a record owned by the node that wrote it.
/// - Entries for a session another node owns, or for a record that is gone, are
///   refused whole ([`Fenced`]): a node that lost a session cannot change it.
/// - [`load`](Self::load) claims the session for the loading node when the record
///   admits the presented token, and names the former owner.
/// - A record ends with `Ended`, or `ttl` after its last `Suspended` unless an
///   `Attached` came since. An attached record does not expire (its owner suspends or
///   ends it; see docs/PROTOCOL.md for a killed owner).
#[derive(Debug)]
pub struct SessionTable {
    ttl: Duration,
    records: HashMap<SessionId, Entry>,
}

#[derive(Debug)]
struct Entry {
    owner: u64,
    record: SessionRecord,
    expires_at: Option<Instant>,
}

impl SessionTable {
    /// An empty table whose suspended records live `ttl` (the resume window).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            records: HashMap::new(),
        }
    }

    /// Appends node `node`'s `entries` for `session`, in order; refused whole when the
    /// node does not own the session.
    pub fn append(
        &mut self,
        now: Instant,
        node: u64,
        session: SessionId,
        entries: &[JournalEntry],
    ) -> Result<(), Fenced> {
        self.expire(now, session);
        let mut entries = entries.iter();
        let entry = match self.records.get_mut(&session) {
            Some(entry) if entry.owner == node => entry,
            Some(_) => return Err(Fenced),
            None => {
                let Some(first) = entries.next() else {
                    return Ok(());
                };
                let record = SessionRecord::start(first).ok_or(Fenced)?;
                self.records.entry(session).or_insert(Entry {
                    owner: node,
                    record,
                    expires_at: None,
                })
            }
        };
        for e in entries {
            entry.record.apply(e);
            match e {
                JournalEntry::Suspended => entry.expires_at = Some(now + self.ttl),
                JournalEntry::Attached => entry.expires_at = None,
                _ => {}
            }
        }
        if entry.record.ended {
            self.records.remove(&session);
        }
        Ok(())
    }

    /// The record of `session` for a resume presenting `token` on node `node`;
    /// claimed for `node` when the record admits the token.
    pub fn load(&mut self, now: Instant, node: u64, session: SessionId, token: &TokenVerifier) -> Loaded {
        self.expire(now, session);
        let Some(entry) = self.records.get_mut(&session) else {
            return Loaded {
                record: None,
                former_owner: None,
            };
        };
        let mut former_owner = None;
        if entry.record.admits(token) && entry.owner != node {
            former_owner = Some(entry.owner);
            entry.owner = node;
        }
        Loaded {
            record: Some(entry.record.clone()),
            former_owner,
        }
    }

    /// The node that owns `session`, if its record exists.
    pub fn owner(&self, session: SessionId) -> Option<u64> {
        self.records.get(&session).map(|e| e.owner)
    }

    /// The record of `session`, if any (without claiming it).
    pub fn record(&self, session: SessionId) -> Option<&SessionRecord> {
        self.records.get(&session).map(|e| &e.record)
    }

    /// Drops every record whose time is up.
    pub fn purge(&mut self, now: Instant) {
        self.records
            .retain(|_, e| !e.expires_at.is_some_and(|at| now >= at));
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn expire(&mut self, now: Instant, session: SessionId) {
        if self
            .records
            .get(&session)
            .is_some_and(|e| e.expires_at.is_some_and(|at| now >= at))
        {
            self.records.remove(&session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u8) -> TokenVerifier {
        TokenVerifier([n; 32])
    }

    fn msg(seq: u64) -> JournalEntry {
        JournalEntry::Message {
            seq,
            prefix: Bytes::from(format!("{{\"e\":\"m{seq}\"")),
            msgpack: None,
        }
    }

    #[test]
    fn the_fold_tracks_tokens_rooms_and_the_replay_buffer() {
        let journal = [
            JournalEntry::Created {
                user: UserId::new("alice"),
                anonymous: false,
                token: v(1),
            },
            JournalEntry::Joined("r".into()),
            JournalEntry::Joined("s".into()),
            JournalEntry::Left("r".into()),
            msg(1),
            msg(2),
            msg(3),
            JournalEntry::Trimmed { first: 2 },
            JournalEntry::Suspended,
            JournalEntry::Token {
                token: v(2),
                previous: Some(v(1)),
            },
            JournalEntry::Attached,
        ];
        let record = SessionRecord::fold(&journal).unwrap();
        assert_eq!(record.rooms, [Arc::<str>::from("s")]);
        assert_eq!(record.replay.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(record.next_seq, 4);
        assert!(record.attached && !record.confirmed);
        assert!(record.admits(&v(1)), "previous token, not confirmed yet");
        assert!(record.admits(&v(2)));
        assert!(!record.admits(&v(3)));
        let mut confirmed = record.clone();
        confirmed.apply(&JournalEntry::Confirmed);
        assert!(!confirmed.admits(&v(1)), "used");
        confirmed.apply(&JournalEntry::Ended);
        assert!(!confirmed.admits(&v(2)), "ended");
        assert!(SessionRecord::fold(&journal[1..]).is_none(), "no start");
    }

    #[test]
    fn the_replay_buffer_keeps_the_msgpack_form_and_counts_it() {
        let mut record = SessionRecord::start(&JournalEntry::Created {
            user: UserId::new("a"),
            anonymous: false,
            token: v(1),
        })
        .unwrap();
        record.apply(&msg(1));
        let packed = Bytes::from_static(b"\x82\xa1e\xa1f\xa1p\xc4\x01\x07");
        record.apply(&JournalEntry::Message {
            seq: 2,
            prefix: Bytes::from_static(b"{\"e\":\"f\",\"p\":[7]"),
            msgpack: Some(packed.clone()),
        });
        assert_eq!(record.replay[0].2, None);
        assert_eq!(record.replay[1].2, Some(packed.clone()));
        let json: usize = record.replay.iter().map(|(_, p, _)| p.len()).sum();
        assert_eq!(record.replay_bytes(), json + packed.len(), "both forms are held");
        record.apply(&JournalEntry::Trimmed { first: 2 });
        assert_eq!(record.replay_bytes(), 16 + packed.len());
    }

    #[test]
    fn a_lost_message_entry_is_a_gap_not_a_hole() {
        let mut record = SessionRecord::start(&JournalEntry::Created {
            user: UserId::new("a"),
            anonymous: true,
            token: v(1),
        })
        .unwrap();
        for e in [msg(1), msg(2), msg(4), msg(5)] {
            record.apply(&e);
        }
        assert_eq!(record.replay.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(record.next_seq, 6);
    }

    #[test]
    fn the_table_fences_writers_claims_on_load_and_expires_suspended_records() {
        #[allow(clippy::disallowed_methods)] // a test's origin for the fake clock
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut table = SessionTable::new(window);
        let sid = SessionId(7);
        let created = JournalEntry::Created {
            user: UserId::new("alice"),
            anonymous: false,
            token: v(1),
        };
        assert_eq!(
            table.append(t0, 2, sid, &[msg(1)]),
            Err(Fenced),
            "no start, no record"
        );
        table.append(t0, 1, sid, &[created, msg(1)]).unwrap();
        assert_eq!(table.owner(sid), Some(1));
        assert_eq!(table.append(t0, 2, sid, &[msg(2)]), Err(Fenced), "not the owner");
        // A wrong token reads the record but does not move it.
        let wrong = table.load(t0, 2, sid, &v(9));
        assert_eq!((wrong.record.is_some(), wrong.former_owner), (true, None));
        assert_eq!(table.owner(sid), Some(1));
        let claimed = table.load(t0, 2, sid, &v(1));
        assert_eq!(claimed.former_owner, Some(1));
        assert_eq!(claimed.record.unwrap().next_seq, 2);
        assert_eq!(table.append(t0, 1, sid, &[msg(2)]), Err(Fenced), "fenced off");
        table
            .append(t0, 2, sid, &[msg(2), JournalEntry::Suspended])
            .unwrap();
        assert_eq!(
            table.record(sid).unwrap().next_seq,
            3,
            "the fenced write left no trace"
        );
        table.purge(t0 + window / 2);
        assert_eq!(table.len(), 1);
        assert!(table.load(t0 + window, 2, sid, &v(1)).record.is_none(), "expired");
        let sid2 = SessionId(8);
        table
            .append(
                t0,
                1,
                sid2,
                &[
                    JournalEntry::Created {
                        user: UserId::new("bob"),
                        anonymous: false,
                        token: v(3),
                    },
                    JournalEntry::Ended,
                ],
            )
            .unwrap();
        assert!(table.is_empty(), "ended");
    }
}
