//! Session creation and resume: tokens, the refusal reasons, replay.

use super::*;

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
        self.sessions.insert(
            sid,
            Session {
                user: user.clone(),
                anonymous,
                token,
                used_token: None,
                // Nothing to protect yet: a client that never saw this token never saw
                // the session id either.
                token_confirmed: true,
                connection: Some(cid),
                next_seq: 1,
                replay: Default::default(),
                rooms: Vec::new(),
                expires_at: None,
                timer_at: None,
                pending_requests: 0,
            },
        );
        self.metrics.sessions_created += 1;
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
        let session_id = sid.to_string();
        let token = session.token.to_hex();
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

    /// Resumes session `request.session_id` on `cid` for `user`, or says why not.
    /// `replacing` is the fresh session `cid` carries, ended on success.
    pub(super) fn try_resume(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        user: &UserId,
        anonymous: bool,
        request: &ResumeRequest,
        replacing: Option<SessionId>,
    ) -> Result<(), NotRecoverable> {
        let sid = SessionId::parse(&request.session_id).ok_or(NotRecoverable::Unknown)?;
        let Some(session) = self.sessions.get(&sid) else {
            return Err(match self.expired.get(sid) {
                Some(Tomb::Expired) => NotRecoverable::Expired,
                Some(Tomb::Ended) => NotRecoverable::Ended,
                None => NotRecoverable::Unknown,
            });
        };
        if session.expires_at.is_some_and(|at| now >= at) {
            // Its timer has not fired yet; the window is over all the same.
            self.expire(sid);
            return Err(NotRecoverable::Expired);
        }
        let token = ResumeToken::parse(&request.resume_token).ok_or(NotRecoverable::InvalidToken)?;
        let current = session.token.ct_eq(&token);
        let previous = session.used_token.is_some_and(|u| u.ct_eq(&token));
        // The previous token still resumes while the client has not shown it received
        // the new one (the restore may have been cut off before reaching it).
        let resumable = current || (previous && !session.token_confirmed);
        if !resumable {
            return Err(if previous {
                NotRecoverable::Used
            } else {
                NotRecoverable::InvalidToken
            });
        }
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
            return Ok(());
        };
        conn.state = ConnState::Attached {
            session: sid,
            fresh: false,
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        if current {
            session.used_token = Some(session.token);
        }
        // Else the client resumed with the previous token: it keeps that one (until it
        // confirms the new), and the unconfirmed token it never received is dropped.
        session.token = new_token;
        session.token_confirmed = false;
        session.connection = Some(cid);
        session.expires_at = None;
        session.replay.ack(&mut self.slab, request.last_seq);
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
        let (mut out, sessions, _) = self.outbox();
        if let Some(session) = sessions.get(&sid) {
            for (seq, slot) in session.replay.after(request.last_seq) {
                let prefix = out.slab.prefix(slot).clone();
                out.transmit(
                    cid,
                    OutboundMessage {
                        prefix,
                        seq: Some(seq),
                    },
                );
            }
        }
        self.metrics.resumes_ok += 1;
        self.actions.push_back(Action::Session(SessionEvent::Resumed {
            session: sid,
            connection: cid,
        }));
        self.schedule_connection(cid);
        Ok(())
    }
}
