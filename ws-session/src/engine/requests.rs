//! Server→client requests: `sys.request` out in the session stream, the table of
//! those waiting, their answers (`sys.reply`, `sys.reply.error`), deadlines, and the
//! failure of those whose session ends.

use serde_json::value::RawValue;

use super::*;

impl Engine {
    /// Asks the client of `session` a question: sends `sys.request` carrying `event`
    /// and `payload`, with a fresh request id as its `c`, **in the session stream**.
    /// Like any stream message it is kept for replay until acknowledged: sent now when
    /// the session is attached, on resume when it is suspended, so a request made or
    /// cut off during a drop is answered after the resume, within its deadline.
    ///
    /// Exactly one [`Action::Response`] with the returned id follows: the client's
    /// answer, [`RequestFailure::Refused`], [`RequestFailure::Timeout`] at
    /// `now + timeout`, or [`RequestFailure::SessionEnded`] when the session ends
    /// first. An answer after that is ignored.
    ///
    /// Refused with [`ApiError::UnknownSession`], [`ApiError::SessionEnded`] (a session
    /// that ended recently) or [`ApiError::TooManyRequests`]
    /// ([`EngineConfig::max_pending_requests`]).
    pub fn request(
        &mut self,
        now: Instant,
        session: SessionId,
        event: &str,
        payload: Option<&RawValue>,
        timeout: std::time::Duration,
    ) -> Result<RequestId, ApiError> {
        let id = self.new_request(session)?;
        let c = id.correlation_id();
        let env = OutgoingEnvelope::new(sys::REQUEST).with_correlation_id(&c);
        let prefix = self.encoder.prefix_with(
            &mut self.slab.pool,
            &env,
            &ServerRequest {
                event: event.into(),
                payload,
            },
        );
        self.start_request(now, session, id, timeout, &prefix, None)
    }

    /// [`request`](Self::request) with the `sys.request` payload (a [`ServerRequest`])
    /// serialized by the caller: as JSON ([`Payload::Trusted`](ws_proto::envelope::Payload::Trusted)),
    /// or in both codecs ([`Payload::Both`](ws_proto::envelope::Payload::Both)) so that
    /// binary data in the application's payload reaches a MessagePack client as `bin`.
    pub fn request_serialized(
        &mut self,
        now: Instant,
        session: SessionId,
        payload: ws_proto::envelope::Payload<'_>,
        timeout: std::time::Duration,
    ) -> Result<RequestId, ApiError> {
        let id = self.new_request(session)?;
        let c = id.correlation_id();
        let env = OutgoingEnvelope::new(sys::REQUEST)
            .with_correlation_id(&c)
            .with_payload(payload);
        let prefix = self.encoder.prefix(&mut self.slab.pool, &env);
        let msgpack = crate::outbound::own_msgpack_prefix(&env, true);
        self.start_request(now, session, id, timeout, &prefix, msgpack.as_ref())
    }

    /// The checks every request passes, and its id.
    fn new_request(&mut self, session: SessionId) -> Result<RequestId, ApiError> {
        let Some(s) = self.sessions.get(&session) else {
            return Err(if self.expired.contains(session) {
                ApiError::SessionEnded(session)
            } else {
                ApiError::UnknownSession(session)
            });
        };
        let max = self.config.max_pending_requests;
        if s.pending_requests as usize >= max {
            return Err(ApiError::TooManyRequests { max });
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        Ok(id)
    }

    /// Registers request `id` of `session` with its deadline and sends it in the
    /// session stream.
    fn start_request(
        &mut self,
        now: Instant,
        session: SessionId,
        id: RequestId,
        timeout: std::time::Duration,
        prefix: &Bytes,
        msgpack: Option<&Bytes>,
    ) -> Result<RequestId, ApiError> {
        let deadline = now + timeout;
        self.requests.insert(id, PendingRequest { session, deadline });
        if let Some(s) = self.sessions.get_mut(&session) {
            s.pending_requests += 1;
        }
        let mut slot = None;
        self.timers.schedule(TimerKey::Request(id), deadline, &mut slot);
        self.deliver_prefix(now, session, prefix, msgpack)?;
        Ok(id)
    }

    /// Server→client requests waiting for an answer, in every session.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// A request's deadline came (the entry may be stale: answered already).
    pub(super) fn on_request_timer(&mut self, now: Instant, id: RequestId) {
        if self.requests.get(&id).is_some_and(|p| p.deadline <= now) {
            self.complete_request(id, Err(RequestFailure::Timeout));
        }
    }

    /// `sys.reply` / `sys.reply.error` from the client of `sid` for the request named by
    /// `correlation_id`. Answers to requests that are over (timed out), or that belong
    /// to another session, are ignored.
    pub(super) fn on_answer(
        &mut self,
        sid: SessionId,
        correlation_id: Option<&str>,
        result: Result<Option<String>, RequestFailure>,
    ) {
        let Some(id) = correlation_id.and_then(RequestId::parse) else {
            return;
        };
        if self.requests.get(&id).is_some_and(|p| p.session == sid) {
            self.complete_request(id, result);
        }
    }

    /// Fails every request of `sid`, which has ended (in id order).
    pub(super) fn fail_requests_of(&mut self, sid: SessionId) {
        let mut ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, p)| p.session == sid)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.complete_request(id, Err(RequestFailure::SessionEnded));
        }
    }

    fn complete_request(&mut self, id: RequestId, result: Result<Option<String>, RequestFailure>) {
        let Some(pending) = self.requests.remove(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&pending.session) {
            s.pending_requests = s.pending_requests.saturating_sub(1);
        }
        self.actions.push_back(Action::Response {
            id,
            session: pending.session,
            result,
        });
    }

    /// The answers of the application's own session to `sys.reply` / `sys.reply.error`.
    pub(super) fn on_reply(&mut self, cid: ConnectionId, envelope: &AnyEnvelope<'_>) {
        let c = envelope.correlation_id();
        let Some(sid) = self.session_of(cid) else {
            self.send_error(cid, ErrorCode::NOT_AUTHENTICATED.0, "not authenticated", None, c);
            return;
        };
        let result = if envelope.event() == sys::REPLY {
            // The answer reaches the application as JSON, whichever codec carried it.
            match envelope.payload_json() {
                Ok(json) => Ok(json.map(std::borrow::Cow::into_owned)),
                Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
            }
        } else {
            match envelope.payload_as::<ReplyError<'_>>() {
                Ok(refusal) => Err(RequestFailure::Refused {
                    code: refusal.code,
                    message: refusal.message.into_owned(),
                }),
                Err(err) => return self.send_error(cid, err.code(), &err.to_string(), None, c),
            }
        };
        self.on_answer(sid, c, result);
    }

    /// `sys.session.end`: the client ends its session now.
    pub(super) fn on_session_end(&mut self, now: Instant, cid: ConnectionId, envelope: &AnyEnvelope<'_>) {
        let c = envelope.correlation_id();
        // The payload is optional (`{"reason": …}`); absent means no reason.
        if let Err(err) = envelope.payload_as::<Option<SessionEnd<'_>>>() {
            return self.send_error(cid, err.code(), &err.to_string(), None, c);
        }
        let Some(sid) = self.session_of(cid) else {
            self.send_error(cid, ErrorCode::NOT_AUTHENTICATED.0, "not authenticated", None, c);
            return;
        };
        self.close_connection_only(cid, CloseCode::NORMAL, "session ended");
        self.remove_session(sid, Ending::Closed(CloseReason::ByClient));
        self.finish(now);
    }
}
