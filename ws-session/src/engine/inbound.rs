//! Inbound: envelopes from clients, system events, authentication requests.

use super::*;
use crate::action::Body;

impl Engine {
    /// A text message on a JSON connection: an envelope, dispatched as a system event
    /// or an application event.
    pub(super) fn on_text(&mut self, now: Instant, cid: ConnectionId, text: String) {
        let envelope = match Envelope::decode(&text, &self.config.envelope) {
            Ok(envelope) => envelope,
            Err(err) => {
                let c = Envelope::correlation_id_of(&text, &self.config.envelope);
                self.send_error(cid, err.code(), &err.to_string(), None, c.as_deref());
                return;
            }
        };
        if sys::is_system(&envelope.event) {
            self.on_system(now, cid, &AnyEnvelope::Json(envelope));
            return;
        }
        let Some(sid) = self.attached_for_event(cid, envelope.correlation_id.as_deref()) else {
            return;
        };
        let Some((user, anonymous)) = self.sessions.get(&sid).map(|s| (s.user.clone(), s.anonymous)) else {
            return;
        };
        // Point into the text instead of copying: the event owns the text it came in.
        let span = |part: &str, owned: bool| match offset_in(text.as_bytes(), part) {
            Some(range) if !owned => Span::In(range),
            _ => Span::Owned(part.into()),
        };
        let cow = |c: &std::borrow::Cow<'_, str>| span(c, matches!(c, std::borrow::Cow::Owned(_)));
        let event = cow(&envelope.event);
        let correlation_id = envelope.correlation_id.as_ref().map(cow);
        let payload = envelope.payload.map(|raw| span(raw.get(), false));
        let timestamp = envelope.timestamp;
        drop(envelope);
        self.actions.push_back(Action::Event(InboundEvent {
            session: sid,
            user,
            anonymous,
            connection: cid,
            body: Body::Text(text),
            event,
            payload,
            correlation_id,
            timestamp,
        }));
    }

    /// A binary message on a MessagePack connection: the same as [`on_text`](Self::on_text)
    /// for a binary envelope.
    pub(super) fn on_binary(&mut self, now: Instant, cid: ConnectionId, bytes: bytes::Bytes) {
        let envelope = match MsgPackEnvelope::decode(&bytes, &self.config.envelope) {
            Ok(envelope) => envelope,
            Err(err) => {
                return self.send_error(cid, err.code(), &err.to_string(), None, None);
            }
        };
        if sys::is_system(envelope.event) {
            self.on_system(now, cid, &AnyEnvelope::MsgPack(envelope));
            return;
        }
        let Some(sid) = self.attached_for_event(cid, envelope.correlation_id) else {
            return;
        };
        let Some((user, anonymous)) = self.sessions.get(&sid).map(|s| (s.user.clone(), s.anonymous)) else {
            return;
        };
        // Strings of a binary envelope are never escaped: every part is a range.
        let span = |part: &[u8]| offset_in(&bytes, part).map_or_else(|| Span::Owned("".into()), Span::In);
        let event = span(envelope.event.as_bytes());
        let correlation_id = envelope.correlation_id.map(|c| span(c.as_bytes()));
        let payload = envelope.payload.map(span);
        let timestamp = envelope.timestamp;
        self.actions.push_back(Action::Event(InboundEvent {
            session: sid,
            user,
            anonymous,
            connection: cid,
            body: Body::Binary(Vec::from(bytes).into_boxed_slice()),
            event,
            payload,
            correlation_id,
            timestamp,
        }));
    }

    /// The session an application event on `cid` belongs to; `None` (and the
    /// refusal sent) before the connection has one (4101), or once this node has
    /// stopped taking messages (4116).
    fn attached_for_event(&mut self, cid: ConnectionId, c: Option<&str>) -> Option<SessionId> {
        let conn = self.conns.get_mut(&cid)?;
        let (code, message) = match &mut conn.state {
            ConnState::Attached { session, fresh } if !self.stopping => {
                *fresh = false;
                return Some(*session);
            }
            ConnState::Attached { .. } => (
                ErrorCode::SESSION_MOVED,
                "not processed: this node is handing its sessions over; send it again after resuming",
            ),
            _ => (
                ErrorCode::NOT_AUTHENTICATED,
                "not authenticated: wait for sys.session.created",
            ),
        };
        let c = c.map(str::to_owned);
        self.send_error(cid, code.0, message, None, c.as_deref());
        None
    }

    /// A `sys.*` event from a client.
    pub(super) fn on_system(&mut self, now: Instant, cid: ConnectionId, envelope: &AnyEnvelope<'_>) {
        let c = envelope.correlation_id();
        match envelope.event() {
            sys::PONG => {}
            sys::PING => self.send_system::<()>(cid, sys::PONG, None, c),
            sys::ACK => {
                let ack = match envelope.payload_as::<Ack>() {
                    Ok(ack) => ack,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                match self.session_of(cid) {
                    Some(sid) => self.ack_replay(sid, ack.seq),
                    None => {
                        self.send_error(cid, ErrorCode::NOT_AUTHENTICATED.0, "not authenticated", None, c)
                    }
                }
            }
            sys::AUTH => {
                let auth = match envelope.payload_as::<Auth<'_>>() {
                    Ok(auth) => auth,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                let awaiting = self
                    .conns
                    .get(&cid)
                    .is_some_and(|conn| matches!(conn.state, ConnState::AwaitingAuth));
                if awaiting {
                    self.start_auth(cid, auth.token.into_owned(), None, c.map(Into::into));
                } else {
                    self.send_error(
                        cid,
                        ErrorCode::ALREADY_AUTHENTICATED.0,
                        "already authenticated or authenticating",
                        None,
                        c,
                    );
                }
            }
            sys::RECONNECT_REQUEST => {
                let payload = match envelope.payload_as::<ReconnectRequest<'_>>() {
                    Ok(p) => p,
                    Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
                };
                let request = ResumeRequest {
                    session_id: payload.session_id.into_owned().into(),
                    resume_token: payload.resume_token.into_owned().into(),
                    last_seq: payload.last_seq,
                    correlation_id: c.map(Into::into),
                };
                self.on_reconnect(now, cid, request, payload.token.map(std::borrow::Cow::into_owned));
            }
            sys::SESSION_END => self.on_session_end(now, cid, envelope),
            // The client sends nothing more on this connection (it answers our
            // `sys.handover`): close it now, with 4116, and it resumes elsewhere. Not
            // asked (the server is not stopping), it is an event a client does not send.
            sys::HANDOVER if self.stopping => self.close_connection(
                now,
                cid,
                ErrorCode::SESSION_MOVED.close_code(),
                "handed over: resume elsewhere now",
            ),
            sys::REPLY | sys::REPLY_ERROR => self.on_reply(cid, envelope),
            _ => self.send_error(
                cid,
                ErrorCode::UNKNOWN_SYSTEM_EVENT.0,
                "unknown system event",
                None,
                c,
            ),
        }
    }

    /// `sys.reconnect.request`: decided now, after the pending authentication, or refused, by connection state.
    pub(super) fn on_reconnect(
        &mut self,
        now: Instant,
        cid: ConnectionId,
        request: ResumeRequest,
        credential: Option<String>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let c = request.correlation_id.clone();
        match &mut conn.state {
            ConnState::AwaitingAuth => match credential {
                Some(token) => self.start_auth(cid, token, Some(Box::new(request)), None),
                None => self.send_error(
                    cid,
                    ErrorCode::NOT_AUTHENTICATED.0,
                    "not authenticated: send the credential as \"token\" in sys.reconnect.request",
                    None,
                    c.as_deref(),
                ),
            },
            ConnState::Authenticating { resume, .. } => {
                if resume.is_none() {
                    *resume = Some(Box::new(request));
                } else {
                    self.send_error(
                        cid,
                        ErrorCode::RESUME_IN_PROGRESS.0,
                        "a resume is already waiting for authentication",
                        None,
                        c.as_deref(),
                    );
                }
            }
            ConnState::Loading(_) => self.send_error(
                cid,
                ErrorCode::RESUME_IN_PROGRESS.0,
                "a resume is already waiting for its session",
                None,
                c.as_deref(),
            ),
            ConnState::Attached { session, fresh: true } => {
                // Authenticated in the handshake, then asked to resume: the connection's
                // user is known, so the resume is decided now and replaces the fresh
                // session on success.
                let fresh = *session;
                let Some((user, anonymous)) =
                    self.sessions.get(&fresh).map(|s| (s.user.clone(), s.anonymous))
                else {
                    return;
                };
                self.resume_or_fallback(now, cid, user, anonymous, request, Some(fresh), true);
            }
            ConnState::Attached { fresh: false, .. } => self.send_error(
                cid,
                ErrorCode::ALREADY_AUTHENTICATED.0,
                "this connection already carries a session in use",
                None,
                c.as_deref(),
            ),
        }
    }

    /// Asks the application to authenticate `cid` with `token`.
    pub(super) fn start_auth(
        &mut self,
        cid: ConnectionId,
        token: String,
        resume: Option<Box<ResumeRequest>>,
        correlation_id: Option<Box<str>>,
    ) {
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let id = AuthId(self.next_auth);
        self.next_auth += 1;
        self.auths.insert(id, cid);
        conn.state = ConnState::Authenticating {
            auth: id,
            resume,
            correlation_id,
        };
        let info = conn.info.clone().unwrap_or_default();
        self.actions.push_back(Action::Authenticate(AuthRequest {
            id,
            connection: cid,
            token,
            info,
        }));
    }
}

/// Where `part`, a slice of `body`, lies in it; `None` when it is not a slice of `body`
/// (then the caller copies it).
fn offset_in<P: AsRef<[u8]> + ?Sized>(body: &[u8], part: &P) -> Option<std::ops::Range<usize>> {
    let part = part.as_ref();
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (body.get(start..end)? == part).then_some(start..end)
}
