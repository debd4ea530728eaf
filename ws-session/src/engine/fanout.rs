//! Outbound: transmits with outbound-bytes accounting, session-stream delivery
//! (sequence numbers, replay buffers), broadcasts and control events.

use super::*;

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
        if conn.slow {
            return false;
        }
        if conn.queued + len > self.config.max_outbound_bytes {
            conn.slow = true;
            self.slow.push(cid);
            return false;
        }
        conn.queued += len;
        self.metrics.messages_out += 1;
        self.metrics.bytes_out += len as u64;
        true
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
    /// and, when the session is attached, transmits it: on its own, or as one more
    /// recipient in `batch` (a broadcast). Returns its `s`.
    pub(super) fn deliver(
        &mut self,
        sid: SessionId,
        session: &mut Session,
        prefix: &Bytes,
        slot: u32,
        batch: Option<&mut Vec<(ConnectionId, u64)>>,
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
            self.journal(
                sid,
                JournalEntry::Message {
                    seq,
                    prefix: prefix.clone(),
                },
            );
            if dropped {
                let first = session.replay.first().unwrap_or(session.next_seq);
                self.journal(sid, JournalEntry::Trimmed { first });
            }
        }
        if let Some(cid) = session.connection {
            match batch {
                Some(batch) => {
                    if self.account(cid, OutboundMessage::encoded_len(prefix, Some(seq))) {
                        batch.push((cid, seq));
                    }
                }
                None => {
                    self.transmit(
                        cid,
                        OutboundMessage {
                            prefix: prefix.clone(),
                            seq: Some(seq),
                        },
                    );
                }
            }
        }
        seq
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

    /// Delivers one encoded message to one session's stream.
    pub(super) fn deliver_prefix(
        &mut self,
        now: Instant,
        sid: SessionId,
        prefix: &Bytes,
    ) -> Result<u64, ApiError> {
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, _) = self.outbox();
        let Some(session) = sessions.get_mut(&sid) else {
            self.slab.release(slot);
            return Err(ApiError::UnknownSession(sid));
        };
        let seq = out.deliver(sid, session, prefix, slot, None);
        self.slab.release(slot);
        self.finish(now);
        Ok(seq)
    }

    /// Delivers `prefix` to every session `pick` chooses, as one broadcast action.
    pub(super) fn fan_out_all(
        &mut self,
        prefix: &Bytes,
        mut pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let mut batch = self.recipients.pop().unwrap_or_default();
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, _) = self.outbox();
        let mut n = 0;
        for (&sid, session) in sessions.iter_mut() {
            if pick(sid, &session.user) {
                out.deliver(sid, session, prefix, slot, Some(&mut batch));
                n += 1;
            }
        }
        self.slab.release(slot);
        self.emit_batch(prefix, batch);
        n
    }

    /// Delivers `prefix` to the members of `room` but `except`, as one broadcast action.
    pub(super) fn fan_out_room(&mut self, room: &str, prefix: &Bytes, except: Option<SessionId>) -> usize {
        let mut batch = self.recipients.pop().unwrap_or_default();
        let slot = self.slab.insert(prefix.clone());
        let (mut out, sessions, rooms) = self.outbox();
        let mut n = 0;
        if let Some(members) = rooms.members(room) {
            for sid in members {
                if Some(*sid) == except {
                    continue;
                }
                if let Some(session) = sessions.get_mut(sid) {
                    out.deliver(*sid, session, prefix, slot, Some(&mut batch));
                    n += 1;
                }
            }
        }
        self.slab.release(slot);
        self.emit_batch(prefix, batch);
        n
    }

    /// Queues a broadcast's transmit, or recycles its empty recipient list.
    pub(super) fn emit_batch(&mut self, prefix: &Bytes, recipients: Vec<(ConnectionId, u64)>) {
        if recipients.is_empty() {
            self.recycle(recipients);
        } else {
            self.actions.push_back(Action::TransmitBroadcast {
                prefix: prefix.clone(),
                recipients,
            });
        }
    }

    /// Hands a broadcast to the cross-node seam, when configured.
    pub(super) fn publish(&mut self, target: PublishTarget, except: Option<SessionId>, prefix: Bytes) {
        if self.config.publish_broadcasts {
            self.actions
                .push_back(Action::Publish(Publication::new(target, except, prefix)));
        }
    }

    /// Sends `message` (volatile: no `s`) to the attached sessions `pick` chooses
    /// among `room`'s members (or all), as one [`Action::TransmitMany`]; a connection
    /// that cannot take it is marked slow and skipped. Returns the recipients.
    pub(super) fn fan_out_volatile(
        &mut self,
        room: Option<&str>,
        message: OutboundMessage,
        mut pick: impl FnMut(SessionId, &UserId) -> bool,
    ) -> usize {
        let len = message.len();
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
        connections.retain(|cid| {
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
        let n = connections.len();
        if n > 0 {
            self.metrics.messages_out += n as u64;
            self.metrics.bytes_out += (n * len) as u64;
            self.actions
                .push_back(Action::TransmitMany { connections, message });
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
        let prefix = match payload {
            Some(p) => self.encoder.prefix_with(&env, p),
            None => self.encoder.prefix(&env),
        };
        let (mut out, _, _) = self.outbox();
        out.transmit(cid, OutboundMessage { prefix, seq: None });
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
