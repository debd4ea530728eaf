//! Session creation and resume: tokens, the refusal reasons, replay.

use super::*;

/// Where a resume stands when [`Engine::try_resume`] returns without refusing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resumed {
    /// Done: `sys.session.restored` and the replay are queued.
    Now,
    /// Parked: the session is being loaded from the shared store.
    Loading,
}

impl Engine {
    /// Creates a session for `user` on `cid` and announces it (`sys.session.created`).
    pub(super) fn create_session(
        &mut self,
        cid: ConnectionId,
        sid: SessionId,
        user: UserId,
        anonymous: bool,
        correlation_id: Option<&str>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        conn.state = ConnState::Attached {
            session: sid,
            fresh: true,
        };
        let token = ResumeToken::generate(&mut *self.rng);
        let verifier = token.verifier();
        self.sessions.insert(
            sid,
            Session {
                user: user.clone(),
                anonymous,
                token: verifier,
                used_token: None,
                announce: Some(Box::new(token)),
                // Nothing to protect yet: a client that never saw this token never saw
                // the session id either.
                token_confirmed: true,
                connection: Some(cid),
                next_seq: 1,
                replay: Default::default(),
                rooms: Vec::new(),
                room_offsets: None,
                expires_at: None,
                timer_at: None,
                pending_requests: 0,
            },
        );
        self.metrics.sessions_created += 1;
        self.journal(
            sid,
            JournalEntry::Created {
                user: user.clone(),
                anonymous,
                token: verifier,
            },
        );
        self.send_created(cid, sid, correlation_id);
        self.actions.push_back(Action::Session(SessionEvent::Created {
            session: sid,
            user,
            connection: cid,
        }));
        self.schedule_connection(cid);
    }

    /// Sends `sys.session.created` for `sid` (also to re-announce a fresh session).
    pub(super) fn send_created(&mut self, cid: ConnectionId, sid: SessionId, correlation_id: Option<&str>) {
        let Some(session) = self.sessions.get(&sid) else {
            return;
        };
        let Some(token) = session.announce.as_deref() else {
            return; // not fresh: its token went out in `sys.session.restored`
        };
        let session_id = sid.to_string();
        let token = token.to_hex();
        let user = session.user.clone();
        let payload = SessionCreated {
            session_id: session_id.as_str().into(),
            user_id: user.as_str().into(),
            resume_token: token.as_str().into(),
            heartbeat_ms: duration_ms(self.config.heartbeat_interval),
            resume_window_ms: duration_ms(self.config.resume_window),
        };
        self.send_system(cid, sys::SESSION_CREATED, Some(&payload), correlation_id);
    }

    /// Sends the explicit refusal of a resume (`sys.error` 4106 with its reason).
    pub(super) fn refuse_resume(
        &mut self,
        cid: ConnectionId,
        reason: NotRecoverable,
        correlation_id: Option<&str>,
    ) {
        self.metrics.resumes_refused += 1;
        self.metrics.resumes_refused_by.count(reason);
        let message = match reason {
            NotRecoverable::Unknown => "session not recoverable: unknown session",
            NotRecoverable::Expired => "session not recoverable: expired",
            NotRecoverable::Ended => "session not recoverable: the session was ended",
            NotRecoverable::Used => "session not recoverable: resume token already used",
            NotRecoverable::InvalidToken => "session not recoverable: invalid resume token",
            NotRecoverable::Foreign => "session not recoverable: session belongs to another user",
            NotRecoverable::Gap => "session not recoverable: missed messages are no longer buffered",
        };
        self.send_error(
            cid,
            ErrorCode::NOT_RECOVERABLE.0,
            message,
            Some(reason.as_str()),
            correlation_id,
        );
    }

    /// Resumes `request` on `cid` for `user`, parks it while the session is loaded
    /// from the shared store, or refuses it: then the client is told why and gets a
    /// session all the same (`replacing`, the fresh one `cid` carries, announced again;
    /// else a new one).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume_or_fallback(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        user: UserId,
        anonymous: bool,
        request: ResumeRequest,
        replacing: Option<SessionId>,
        may_load: bool,
    ) {
        if let Err(reason) = self.try_resume(now, cid, &user, anonymous, &request, replacing, may_load) {
            self.refuse_and_fallback(cid, reason, &request, user, anonymous, replacing);
        }
    }

    /// Refuses a resume, then gives the client a session all the same: `replacing`, the
    /// fresh one its connection carries, announced again; else a new one.
    fn refuse_and_fallback(
        &mut self,
        cid: ConnectionId,
        reason: NotRecoverable,
        request: &ResumeRequest,
        user: UserId,
        anonymous: bool,
        replacing: Option<SessionId>,
    ) {
        self.refuse_resume(cid, reason, request.correlation_id.as_deref());
        match replacing {
            // The fresh session stands in for a new one: tell the client again.
            Some(fresh) => self.send_created(cid, fresh, None),
            None => {
                let sid = self.new_session_id();
                self.create_session(cid, sid, user, anonymous, None);
            }
        }
    }

    /// The shared store answered a parked resume: rebuild the session from `record`
    /// (unless it is here by now) and decide the resume as a local one.
    pub(super) fn on_session_loaded(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        sid: SessionId,
        record: Option<SessionRecord>,
        history: Option<Vec<Publication>>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        if !matches!(&conn.state, ConnState::Loading(l) if l.session == sid) {
            return;
        }
        let restored = match conn.state {
            ConnState::Loading(ref l) => match l.replacing {
                Some(fresh) => ConnState::Attached {
                    session: fresh,
                    fresh: true,
                },
                None => ConnState::AwaitingAuth,
            },
            _ => return,
        };
        let ConnState::Loading(loading) = std::mem::replace(&mut conn.state, restored) else {
            return;
        };
        let Loading {
            user,
            anonymous,
            request,
            replacing,
            ..
        } = *loading;
        let mut adopted = false;
        let mut missed_history = false;
        if !self.sessions.contains_key(&sid) {
            if let Some(record) = record.filter(|r| !r.ended) {
                match history {
                    Some(history) => {
                        self.adopt(now, sid, record, request.last_seq, history);
                        adopted = true;
                    }
                    // Its rooms published what it can no longer get.
                    None if self.config.room_history && !record.room_offsets.is_empty() => {
                        missed_history = true;
                    }
                    None => {
                        self.adopt(now, sid, record, request.last_seq, Vec::new());
                        adopted = true;
                    }
                }
            }
        }
        let outcome = if missed_history {
            Err(NotRecoverable::Gap)
        } else {
            self.try_resume(now, cid, &user, anonymous, &request, replacing, false)
        };
        match outcome {
            Ok(_) if adopted => self.metrics.sessions_loaded += 1,
            Ok(_) => {}
            Err(reason) => {
                if adopted {
                    // Refused on the record: it was never this node's to keep.
                    self.forget_session(sid);
                }
                self.refuse_and_fallback(cid, reason, &request, user, anonymous, replacing);
            }
        }
        self.schedule_connection(cid);
    }

    /// Rebuilds session `sid` from a shared store's `record`, suspended, for the resume
    /// that asked for it (which reported `last_seq`), and appends what its rooms
    /// published after its positions (`history`).
    fn adopt(
        &mut self,
        now: Instant,
        sid: SessionId,
        record: SessionRecord,
        last_seq: u64,
        mut history: Vec<Publication>,
    ) {
        let mut replay = ReplayBuffer::default();
        for (seq, prefix, msgpack) in record.replay {
            if replay.next().is_some_and(|next| next != seq) {
                // A store that lost an entry: start afresh, as the fold does.
                replay.clear(&mut self.slab);
            }
            // With the payload's own MessagePack form when it was journaled: binary
            // data stays `bin` for a MessagePack client (else made from JSON on use).
            let slot = self.slab.insert_with(prefix, msgpack.as_ref());
            replay.push(
                &mut self.slab,
                seq,
                slot,
                self.config.replay_max_messages,
                self.config.replay_max_bytes,
            );
            self.slab.release(slot);
        }
        // A client that saw more than the record holds got it from the former owner
        // before that owner's journal write landed (or was fenced off): it has those
        // messages, so the stream goes on after them rather than failing as a gap.
        let next_seq = record
            .next_seq
            .max(replay.next().unwrap_or(0))
            .max(last_seq.saturating_add(1));
        let expiry = now + self.config.resume_window;
        self.sessions.insert(
            sid,
            Session {
                user: record.user,
                anonymous: record.anonymous,
                token: record.token,
                used_token: record.previous,
                announce: None,
                token_confirmed: record.confirmed,
                connection: None,
                next_seq,
                replay,
                rooms: Vec::new(),
                room_offsets: None,
                expires_at: Some(expiry),
                timer_at: None,
                pending_requests: 0,
            },
        );
        // Suspended until the resume that asked for it attaches it.
        let sessions = &self.sessions;
        self.suspensions.push(sid, expiry, |sid, at| {
            super::lifecycle::is_suspension(sessions, sid, at)
        });
        let record_offsets = record.room_offsets;
        for room in record.rooms.iter().take(self.config.max_rooms_per_session) {
            let occupied = self.rooms.members(room).is_none();
            let (name, _) = self.rooms.join(room, sid);
            // Where the session is in the room's history: the record's position, or
            // (none known) where this node is, from now on.
            let recorded = record_offsets.iter().find(|(r, _)| r == room).map(|(_, o)| *o);
            let position = recorded.or_else(|| {
                let cursor = self.rooms.cursor(room)?;
                self.journal(
                    sid,
                    JournalEntry::RoomPosition {
                        room: name.clone(),
                        offset: cursor,
                    },
                );
                Some(cursor)
            });
            if let Some(session) = self.sessions.get_mut(&sid) {
                session.rooms.push(name.clone());
                if let Some(offset) = position.filter(|_| self.config.room_history) {
                    session.set_room_offset(&name, offset);
                }
            }
            if occupied && self.config.publish_broadcasts {
                self.actions.push_back(Action::RoomOccupied(name));
            }
        }
        if !self.config.room_history {
            return;
        }
        // Offsets of different rooms are not comparable, but the backend's grow with
        // time (Redis: milliseconds first): their order is close to the publishing one.
        history.sort_by_key(|p| p.offset);
        history.dedup_by_key(|p| (p.offset, p.target.clone()));
        for publication in history {
            let (PublishTarget::Room(room), Some(offset)) = (&publication.target, publication.offset) else {
                continue;
            };
            let Some(session) = self.sessions.get_mut(&sid) else {
                return;
            };
            // Only after a known position: before it the session has them, or was
            // not in the room.
            if !session.room_offset(room).is_some_and(|at| at < offset) {
                continue;
            }
            let Some(name) = session.rooms.iter().find(|r| ***r == **room).cloned() else {
                continue;
            };
            session.set_room_offset(&name, offset);
            if publication.except != Some(sid) && !publication.volatile {
                let slot = self
                    .slab
                    .insert_with(publication.prefix.clone(), publication.msgpack.as_ref());
                let (mut out, sessions, _) = self.outbox();
                if let Some(session) = sessions.get_mut(&sid) {
                    out.deliver(sid, session, slot, None);
                }
                self.slab.release(slot);
                self.metrics.history_replayed += 1;
            }
            self.journal(sid, JournalEntry::RoomPosition { room: name, offset });
        }
    }

    /// Resumes session `request.session_id` on `cid` for `user`, or says why not.
    /// `replacing` is the fresh session `cid` carries, ended on success. With
    /// `may_load` and shared sessions, a session this engine does not hold (and has
    /// not seen end) is asked of the shared store and the resume parked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_resume(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        user: &UserId,
        anonymous: bool,
        request: &ResumeRequest,
        replacing: Option<SessionId>,
        may_load: bool,
    ) -> Result<Resumed, NotRecoverable> {
        let sid = SessionId::parse(&request.session_id).ok_or(NotRecoverable::Unknown)?;
        let Some(session) = self.sessions.get(&sid) else {
            return match self.expired.get(sid) {
                Some(Tomb::Expired) => Err(NotRecoverable::Expired),
                Some(Tomb::Ended) => Err(NotRecoverable::Ended),
                None if may_load && self.config.shared_sessions => {
                    self.park(cid, sid, user, anonymous, request, replacing)
                }
                None => Err(NotRecoverable::Unknown),
            };
        };
        if session.expires_at.is_some_and(|at| now >= at) {
            // Its timer has not fired yet; the window is over all the same.
            self.expire(sid);
            return Err(NotRecoverable::Expired);
        }
        let token = ResumeToken::parse(&request.resume_token).ok_or(NotRecoverable::InvalidToken)?;
        // The previous token still resumes while the client has not shown it received
        // the new one (the restore may have been cut off before reaching it).
        let current = TokenVerifier::check(
            &token.verifier(),
            &session.token,
            session.used_token.as_ref(),
            session.token_confirmed,
        )?;
        let same_user = if session.anonymous || anonymous {
            session.anonymous && anonymous
        } else {
            session.user == *user
        };
        if !same_user {
            return Err(NotRecoverable::Foreign);
        }
        if Some(sid) == replacing {
            // Resuming the session this connection already carries: nothing to swap.
            return Err(NotRecoverable::InvalidToken);
        }
        let last_sent = session.last_sent();
        if request.last_seq > last_sent || !session.replay.covers(request.last_seq, last_sent) {
            // The client holder of a valid token moves to a new session: end this one
            // rather than let it linger unreachable.
            if let Some(old) = session.connection {
                self.close_connection_only(old, ErrorCode::TAKEN_OVER.close_code(), "session taken over");
            }
            self.remove_session(sid, Ending::Closed(CloseReason::Gap));
            return Err(NotRecoverable::Gap);
        }

        // Accepted.
        if let Some(old) = session.connection.filter(|&old| old != cid) {
            self.close_connection_only(old, ErrorCode::TAKEN_OVER.close_code(), "session taken over");
        }
        if let Some(fresh) = replacing {
            self.remove_session(fresh, Ending::Closed(CloseReason::Replaced));
        }
        let new_token = ResumeToken::generate(&mut *self.rng);
        let Some(conn) = self.conns.get_mut(&cid) else {
            return Ok(Resumed::Now);
        };
        conn.state = ConnState::Attached {
            session: sid,
            fresh: false,
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Ok(Resumed::Now);
        };
        if current {
            session.used_token = Some(session.token);
        }
        // Else the client resumed with the previous token: it keeps that one (until it
        // confirms the new), and the unconfirmed token it never received is dropped.
        session.token = new_token.verifier();
        session.announce = None;
        session.token_confirmed = false;
        session.connection = Some(cid);
        if session.expires_at.take().is_some() {
            self.suspensions.left();
        }
        let rotated = JournalEntry::Token {
            token: session.token,
            previous: session.used_token,
        };
        self.journal(sid, rotated);
        self.journal(sid, JournalEntry::Attached);
        self.ack_replay(sid, request.last_seq);
        let Some(session) = self.sessions.get(&sid) else {
            return Ok(Resumed::Now);
        };
        // `sys.session.restored` goes first, then the replayed messages: the client
        // switches to the resumed stream before any of its messages arrive, so it can
        // never mistake one for a message of the fresh session its handshake
        // credential may have announced.
        let replayed = session.replay.after(request.last_seq).count() as u64;
        let session_id = sid.to_string();
        let token = new_token.to_hex();
        self.send_system(
            cid,
            sys::SESSION_RESTORED,
            Some(&SessionRestored {
                session_id: session_id.as_str().into(),
                resume_token: token.as_str().into(),
                replayed,
            }),
            request.correlation_id.as_deref(),
        );
        // Replayed in the codec of the connection it resumes on, whichever codec the
        // messages were first sent in: the slots hold what both need.
        let codec = self.conns.get(&cid).map_or(Codec::Json, |c| c.codec);
        let (mut out, sessions, _) = self.outbox();
        if let Some(session) = sessions.get(&sid) {
            for (seq, slot) in session.replay.after(request.last_seq) {
                let message = out.slab.message(slot, codec, seq);
                out.transmit(cid, message);
            }
        }
        self.metrics.resumes_ok += 1;
        self.actions.push_back(Action::Session(SessionEvent::Resumed {
            session: sid,
            connection: cid,
        }));
        self.schedule_connection(cid);
        Ok(Resumed::Now)
    }

    /// Parks the resume of `sid` on `cid` and asks the shared store for the session.
    fn park(
        &mut self,
        cid: ConnectionId,
        sid: SessionId,
        user: &UserId,
        anonymous: bool,
        request: &ResumeRequest,
        replacing: Option<SessionId>,
    ) -> Result<Resumed, NotRecoverable> {
        // A token that cannot be one is refused here, as for a held session, without
        // bothering the store.
        let token = ResumeToken::parse(&request.resume_token).ok_or(NotRecoverable::InvalidToken)?;
        let Some(conn) = self.conns.get_mut(&cid) else {
            return Ok(Resumed::Loading);
        };
        conn.state = ConnState::Loading(Box::new(Loading {
            user: user.clone(),
            anonymous,
            request: request.clone(),
            session: sid,
            replacing,
        }));
        self.actions.push_back(Action::LoadSession {
            connection: cid,
            session: sid,
            token: token.verifier(),
        });
        Ok(Resumed::Loading)
    }
}
