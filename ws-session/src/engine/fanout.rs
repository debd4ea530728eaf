//! Outbound: transmits with outbound-bytes accounting, session-stream delivery
//! (sequence numbers, replay buffers), broadcasts and control events.

use super::*;
use crate::outbound::msgpack_prefix_of;

/// The parts of the engine a transmit touches, borrowed apart from the sessions and
/// rooms so that a broadcast can walk a room while sending.
pub(super) struct Outbox<'a> {
    pub(super) conns: &'a mut IdMap<ConnectionId, Conn>,
    pub(super) actions: &'a mut VecDeque<Action>,
    pub(super) metrics: &'a mut Metrics,
    pub(super) slow: &'a mut Vec<ConnectionId>,
    pub(super) slab: &'a mut PrefixSlab,
    pub(super) config: &'a EngineConfig,
}

impl Outbox<'_> {
    /// Counts `len` more bytes handed to `cid`, unless that would put the connection
    /// over its outbound bound: then it is marked slow (closed when the input ends) and
    /// nothing more is sent to it. Returns whether the bytes may be sent.
    pub(super) fn account(&mut self, cid: ConnectionId, len: usize) -> bool {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return false;
        };
        charge(conn, cid, len, self.config, self.slow, self.metrics)
    }

    /// Appends `entry` to `sid`'s journal, when sessions are shared.
    pub(super) fn journal(&mut self, sid: SessionId, entry: JournalEntry) {
        if self.config.shared_sessions {
            self.actions.push_back(Action::Journal { session: sid, entry });
        }
    }

    /// Queues `message` for `cid` (see [`account`](Self::account)).
    pub(super) fn transmit(&mut self, cid: ConnectionId, message: OutboundMessage) -> bool {
        if !self.account(cid, message.len()) {
            return false;
        }
        self.actions.push_back(Action::Transmit {
            connection: cid,
            message,
        });
        true
    }

    /// Appends a session-stream message to `session` (sequence number, replay buffer)
    /// and, when the session is attached, transmits it in its connection's codec: on
    /// its own, or as one more recipient in `batch` (a broadcast). Returns its `s`.
    pub(super) fn deliver(
        &mut self,
        sid: SessionId,
        session: &mut Session,
        slot: u32,
        batch: Option<&mut Batch>,
    ) -> u64 {
        let seq = session.next_seq;
        session.next_seq += 1;
        let dropped = session.replay.push(
            self.slab,
            seq,
            slot,
            self.config.replay_max_messages,
            self.config.replay_max_bytes,
        );
        if self.config.shared_sessions {
            // In the journal before it goes out: see "accepted" in docs/PROTOCOL.md.
            // The binary form only when it is the payload's own: one made from JSON is
            // made again from the JSON prefix by whoever replays it.
            let prefix = self.slab.json_prefix(slot);
            let msgpack = self.slab.own_msgpack(slot).cloned();
            self.journal(sid, JournalEntry::Message { seq, prefix, msgpack });
            if dropped {
                let first = session.replay.first().unwrap_or(session.next_seq);
                self.journal(sid, JournalEntry::Trimmed { first });
            }
        }
        // One lookup of the connection gives its codec and takes the charge.
        let Some((cid, conn)) = session
            .connection
            .and_then(|cid| Some((cid, self.conns.get_mut(&cid)?)))
        else {
            return seq;
        };
        let codec = conn.codec;
        let (prefix, tail) = self.slab.parts_for(slot, codec);
        let len = tail.len() + OutboundMessage::encoded_len(codec, prefix, Some(seq));
        if !charge(conn, cid, len, self.config, self.slow, self.metrics) {
            return seq;
        }
        match batch {
            // No `Bytes` clone per recipient: its atomic increment is what a broadcast
            // must not pay N times (see the module docs of `replay`).
            Some(batch) => {
                debug_assert!(tail.is_empty(), "a broadcast's prefix is whole");
                batch.of(codec).push((cid, seq));
            }
            None => {
                let message = self.slab.message(slot, codec, seq);
                self.actions.push_back(Action::Transmit {
                    connection: cid,
                    message,
                });
            }
        }
        seq
    }
}

/// Counts `len` more bytes handed to `conn`, unless that would put it over its outbound
/// bound: then it is marked slow (closed when the input ends) and nothing more is sent
/// to it. Returns whether the bytes may be sent.
fn charge(
    conn: &mut Conn,
    cid: ConnectionId,
    len: usize,
    config: &EngineConfig,
    slow: &mut Vec<ConnectionId>,
    metrics: &mut Metrics,
) -> bool {
    if conn.slow {
        return false;
    }
    if conn.queued + len > config.max_outbound_bytes {
        conn.slow = true;
        slow.push(cid);
        return false;
    }
    conn.queued += len;
    metrics.messages_out += 1;
    metrics.bytes_out += len as u64;
    true
}

/// The recipients of one broadcast, by codec: one `TransmitBroadcast` each.
#[derive(Debug, Default)]
pub(super) struct Batch {
    json: Vec<(ConnectionId, u64)>,
    msgpack: Vec<(ConnectionId, u64)>,
}

impl Batch {
    fn of(&mut self, codec: Codec) -> &mut Vec<(ConnectionId, u64)> {
        match codec {
            Codec::MsgPack => &mut self.msgpack,
            _ => &mut self.json,
        }
    }
}

impl Engine {
    /// Borrows the transmit state apart from the sessions and rooms.
    pub(super) fn outbox(&mut self) -> (Outbox<'_>, &mut IdMap<SessionId, Session>, &Rooms) {
        (
            Outbox {
                conns: &mut self.conns,
                actions: &mut self.actions,
                metrics: &mut self.metrics,
                slow: &mut self.slow,
                slab: &mut self.slab,
                config: &self.config,
            },
            &mut self.sessions,
            &self.rooms,
        )
    }

    /// Delivers one encoded message (and its binary form, when made already) to one
    /// session's stream.
    pub(super) fn deliver_prefix(
        &mut self,
        now: Instant,
        sid: SessionId,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
    ) -> Result<u64, ApiError> {
        let slot = self.slab.insert_with(prefix.clone(), msgpack);
        self.deliver_slot(now, sid, slot)
    }

    /// Delivers the message in `slot`, just inserted, to one session's stream, and
    /// drops the inserter's hold on it (the session's replay buffer keeps its own).
    pub(super) fn deliver_slot(&mut self, now: Instant, sid: SessionId, slot: u32) -> Result<u64, ApiError> {
        let (mut out, sessions, _) = self.outbox();
        let result = match sessions.get_mut(&sid) {
            Some(session) => Ok(out.deliver(sid, session, slot, None)),
            None => Err(ApiError::UnknownSession(sid)),
        };
        self.slab.release(slot);
        if result.is_ok() {
            self.finish(now);
        }
        result
    }

    /// A recipient list by codec, reusing handed-back allocations.
    fn batch(&mut self) -> Batch {
        Batch {
            json: self.recipients.pop().unwrap_or_default(),
            msgpack: self.recipients.pop().unwrap_or_default(),
        }
    }

    /// Delivers `prefix` to every session `pick` chooses, as one broadcast action per
    /// codec in use; `msgpack` is its binary form when made already (else made from
    /// `prefix` for the first MessagePack recipient).
    pub(super) fn fan_out_all(
        &mut self,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
        mut pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let mut batch = self.batch();
        let slot = self.slab.insert_with(prefix.clone(), msgpack);
        let (mut out, sessions, _) = self.outbox();
        let mut n = 0;
        for (&sid, session) in sessions.iter_mut() {
            if pick(sid, &session.user) {
                out.deliver(sid, session, slot, Some(&mut batch));
                n += 1;
            }
        }
        self.emit_batch(slot, batch);
        self.slab.release(slot);
        n
    }

    /// Delivers `prefix` to the members of `room` but `except`, as one broadcast
    /// action per codec in use (`msgpack` as for [`fan_out_all`](Self::fan_out_all)).
    /// `offset`: its place in the room's history (room history), which each member
    /// handles once.
    pub(super) fn fan_out_room(
        &mut self,
        room: &str,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
        except: Option<SessionId>,
        offset: Option<RoomOffset>,
    ) -> usize {
        let mut batch = self.batch();
        let slot = self.slab.insert_with(prefix.clone(), msgpack);
        let (mut out, sessions, rooms) = self.outbox();
        let mut n = 0;
        let mut name: Option<Option<Arc<str>>> = None;
        if let Some(members) = rooms.members(room) {
            for sid in members {
                let Some(session) = sessions.get_mut(sid) else {
                    continue;
                };
                if let Some(offset) = offset {
                    // Room history: skip what the session already has (replayed from
                    // the history when it moved here), and remember where it is —
                    // also for the sender left out, whose position moves on too.
                    if session.room_offset(room).is_some_and(|at| at >= offset) {
                        continue;
                    }
                    let Some(name) = name.get_or_insert_with(|| rooms.name(room)) else {
                        continue;
                    };
                    session.set_room_offset(name, offset);
                    if Some(*sid) != except {
                        out.deliver(*sid, session, slot, Some(&mut batch));
                        n += 1;
                    }
                    out.journal(
                        *sid,
                        JournalEntry::RoomPosition {
                            room: name.clone(),
                            offset,
                        },
                    );
                    continue;
                }
                if Some(*sid) == except {
                    continue;
                }
                out.deliver(*sid, session, slot, Some(&mut batch));
                n += 1;
            }
        }
        if let Some(offset) = offset {
            self.rooms.advance(room, offset);
        }
        self.emit_batch(slot, batch);
        self.slab.release(slot);
        n
    }

    /// Queues a broadcast's transmits, one per codec with recipients, and recycles
    /// the empty recipient lists.
    pub(super) fn emit_batch(&mut self, slot: u32, batch: Batch) {
        for (codec, recipients) in [(Codec::Json, batch.json), (Codec::MsgPack, batch.msgpack)] {
            if recipients.is_empty() {
                self.recycle(recipients);
            } else {
                self.actions.push_back(Action::TransmitBroadcast {
                    prefix: self.slab.prefix_for(slot, codec).clone(),
                    codec,
                    recipients,
                });
            }
        }
    }

    /// Hands a broadcast (and its binary form, when made) to the cross-node seam, when
    /// configured.
    pub(super) fn publish(
        &mut self,
        target: PublishTarget,
        except: Option<SessionId>,
        prefix: Bytes,
        msgpack: Option<Bytes>,
    ) {
        if self.config.publish_broadcasts {
            let publication = Publication::new(target, except, prefix).with_msgpack(msgpack);
            self.actions.push_back(Action::Publish(publication));
        }
    }

    /// Sends `message` (volatile: no `s`) to the attached sessions `pick` chooses
    /// among `room`'s members (or all), as one [`Action::TransmitMany`]; a connection
    /// that cannot take it is marked slow and skipped; `msgpack` is its binary form
    /// (no `s`) when made already. Returns the recipients.
    pub(super) fn fan_out_volatile(
        &mut self,
        room: Option<&str>,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
        mut pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let mut connections = Vec::new();
        let mut consider = |sid: &SessionId, sessions: &IdMap<SessionId, Session>| {
            let Some(session) = sessions.get(sid) else {
                return;
            };
            if let Some(cid) = session.connection.filter(|_| pick(*sid, &session.user)) {
                connections.push(cid);
            }
        };
        match room {
            Some(room) => {
                if let Some(members) = self.rooms.members(room) {
                    members.iter().for_each(|sid| consider(sid, &self.sessions));
                }
            }
            None => self.sessions.keys().for_each(|sid| consider(sid, &self.sessions)),
        }
        // Encoded once per codec in use: one `TransmitMany` each.
        let mut n = 0;
        for codec in Codec::ALL {
            let mut of_codec: Vec<ConnectionId> = connections
                .iter()
                .copied()
                .filter(|cid| self.conns.get(cid).is_some_and(|c| c.codec == codec))
                .collect();
            if of_codec.is_empty() {
                continue;
            }
            let prefix = match codec {
                Codec::MsgPack => msgpack
                    .cloned()
                    .unwrap_or_else(|| msgpack_prefix_of(prefix, false)),
                _ => prefix.clone(),
            };
            let message = OutboundMessage::new(prefix, None, codec);
            let len = message.len();
            of_codec.retain(|cid| {
                let Some(conn) = self.conns.get_mut(cid) else {
                    return false;
                };
                if conn.slow || conn.queued + len > self.config.max_outbound_bytes {
                    if !conn.slow {
                        conn.slow = true;
                        self.slow.push(*cid);
                    }
                    return false;
                }
                conn.queued += len;
                true
            });
            if !of_codec.is_empty() {
                n += of_codec.len();
                self.metrics.messages_out += of_codec.len() as u64;
                self.metrics.bytes_out += (of_codec.len() * len) as u64;
                self.actions.push_back(Action::TransmitMany {
                    connections: of_codec,
                    message,
                });
            }
        }
        n
    }

    /// Appends `entry` to `sid`'s journal, when sessions are shared.
    pub(super) fn journal(&mut self, sid: SessionId, entry: JournalEntry) {
        self.outbox().0.journal(sid, entry);
    }

    /// A control message outside the session stream (no `s`).
    pub(super) fn send_system<T: serde::Serialize>(
        &mut self,
        cid: ConnectionId,
        event: &str,
        payload: Option<&T>,
        correlation_id: Option<&str>,
    ) {
        let mut env = OutgoingEnvelope::new(event);
        env.correlation_id = correlation_id;
        let Some(codec) = self.conns.get(&cid).map(|c| c.codec) else {
            return;
        };
        let prefix = self.encoder.control(codec, &env, payload);
        let (mut out, _, _) = self.outbox();
        out.transmit(cid, OutboundMessage::new(prefix, None, codec));
    }

    /// A protocol `sys.error` (control, no `s`); counted in the metrics.
    pub(super) fn send_error(
        &mut self,
        cid: ConnectionId,
        code: u16,
        message: &str,
        reason: Option<&str>,
        correlation_id: Option<&str>,
    ) {
        self.metrics.protocol_errors += 1;
        let payload = SysError {
            code,
            message: message.into(),
            reason: reason.map(Into::into),
        };
        self.send_system(cid, sys::ERROR, Some(&payload), correlation_id);
    }
}
