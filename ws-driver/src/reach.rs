//! Reaching sessions from anywhere: the [`ServerHandle`] methods that address an
//! audience (everyone, a room, a user's sessions, one session), list sessions and room
//! members, and move any session in or out of a room.
//!
//! Every send is one command to the hub, serialized once whatever the audience. A
//! filter over sessions runs on the caller's task, never on the hub: the handle takes
//! a snapshot of the audience, filters it, and sends to the sessions chosen.

use std::collections::HashSet;
use std::sync::Arc;

use futures_channel::oneshot;
use serde::Serialize;
use ws_session::{ApiError, SessionId, UserId};

use crate::error::HandlerError;
use crate::hub::{Command, ServerHandle};
use crate::presence::Member;
use crate::state::SessionState;

/// Who a message from [`ServerHandle::to`] goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// Every session.
    All,
    /// Every member of a room.
    Room(String),
    /// Every session of a user (several tabs or devices).
    User(UserId),
    /// One session.
    Session(SessionId),
}

impl Audience {
    /// Every member of `room`.
    pub fn room(room: impl Into<String>) -> Self {
        Self::Room(room.into())
    }

    /// Every session of `user`.
    pub fn user(user: impl Into<String>) -> Self {
        Self::User(UserId::new(user.into()))
    }
}

/// A session as the application sees it from outside its handlers: who, whether it is
/// connected now, its rooms, and the claims and data its handlers see.
#[derive(Clone)]
pub struct SessionView {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user: UserId,
    /// Whether it has a connection now (`false`: suspended, waiting for a resume).
    pub online: bool,
    /// The rooms it is in.
    pub rooms: Vec<Arc<str>>,
    pub(crate) state: Arc<SessionState>,
}

impl SessionView {
    /// The session's data of type `T` ([`Context::set_data`](crate::Context::set_data)).
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state.data()
    }

    /// The claims of the session's latest authentication, if they are a `C`.
    pub fn claims<C: Send + Sync + 'static>(&self) -> Option<Arc<C>> {
        self.state.claims()
    }
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("online", &self.online)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

/// A message on its way to an [`Audience`]: choose who to leave out and whether it is
/// volatile, then [`emit`](Emit::emit) it. Made by [`ServerHandle::to`].
#[must_use = "nothing is sent until `emit`"]
pub struct Emit<'h> {
    handle: &'h ServerHandle,
    audience: Audience,
    except: Option<SessionId>,
    volatile: bool,
}

impl Emit<'_> {
    /// Leaves `session` out (typically the sender).
    pub fn except(mut self, session: SessionId) -> Self {
        self.except = Some(session);
        self
    }

    /// Sends outside the session streams: no `s`, not replayed after a reconnect, and
    /// only to sessions connected now. For what is worthless once stale (typing,
    /// presence, cursor positions).
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Sends `event` with `payload` to the audience. Serialized once here per codec in
    /// use ([`ServerHandle::send`]); fails only
    /// if `payload` cannot be serialized (a local error, 4199 when a handler returns it).
    pub fn emit(self, event: &str, payload: &impl Serialize) -> Result<(), HandlerError> {
        let payload = self.handle.payloads(payload)?;
        self.handle.command(Command::Emit {
            audience: self.audience,
            except: self.except,
            volatile: self.volatile,
            event: event.to_owned(),
            payload: Some(payload),
        });
        Ok(())
    }

    /// Sends `event` with `payload` to the sessions of the audience that `filter`
    /// chooses, by their [`SessionView`] (user, rooms, data, claims). The filter runs
    /// here, on the caller's task, over a snapshot of the audience: a session that
    /// joins meanwhile is not considered. Returns how many sessions were chosen.
    pub async fn emit_filtered(
        self,
        event: &str,
        payload: &impl Serialize,
        filter: impl Fn(&SessionView) -> bool,
    ) -> Result<usize, HandlerError> {
        let payload = self.handle.payloads(payload)?;
        let views = self.handle.snapshot(self.audience.clone()).await;
        let chosen: HashSet<SessionId> = views
            .iter()
            .filter(|view| Some(view.id) != self.except && filter(view))
            .map(|view| view.id)
            .collect();
        let n = chosen.len();
        if n > 0 {
            self.handle.command(Command::EmitTo {
                sessions: chosen,
                volatile: self.volatile,
                event: event.to_owned(),
                payload: Some(payload),
            });
        }
        Ok(n)
    }
}

impl ServerHandle {
    /// Starts a message to `audience`:
    /// `handle.to(Audience::room("lobby")).except(me).volatile().emit("typing", &me)`.
    pub fn to(&self, audience: Audience) -> Emit<'_> {
        Emit {
            handle: self,
            audience,
            except: None,
            volatile: false,
        }
    }

    /// Sends `event` to every session of `user`, in each session's stream.
    pub fn send_to_user(
        &self,
        user: &str,
        event: &str,
        payload: &impl Serialize,
    ) -> Result<(), HandlerError> {
        self.to(Audience::user(user)).emit(event, payload)
    }

    /// Puts `session` in `room`; `Ok(false)` if it already was. Fails for a session
    /// that does not exist and past the room limits.
    pub async fn join(&self, session: SessionId, room: &str) -> Result<bool, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Join {
            session,
            room: room.to_owned(),
            reply,
        });
        answer.await.unwrap_or(Err(ApiError::UnknownSession(session)))
    }

    /// Takes `session` out of `room`; `Ok(false)` if it was not in it.
    pub async fn leave(&self, session: SessionId, room: &str) -> Result<bool, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Leave {
            session,
            room: room.to_owned(),
            reply,
        });
        answer.await.unwrap_or(Err(ApiError::UnknownSession(session)))
    }

    /// Every session of this node, connected or suspended. Empty once the server
    /// stopped.
    pub async fn sessions(&self) -> Vec<SessionView> {
        self.snapshot(Audience::All).await
    }

    /// The members of `room` on this node, connected or suspended.
    pub async fn room_members(&self, room: &str) -> Vec<SessionView> {
        self.snapshot(Audience::room(room)).await
    }

    /// Who is in `room` and whether they are connected: per user (online when one of
    /// their sessions is) unless presence is configured per session
    /// ([`Presence::per_user`](crate::Presence::per_user)), sorted by user (then
    /// session). With a [`Membership`](crate::Membership) backend
    /// ([`App::membership`](crate::App::membership)), the members of every node, and an
    /// error when the backend does not answer; else this node's.
    ///
    /// A copy of [`room_presence_shared`](Self::room_presence_shared)'s list, to own
    /// and change; to read the list (serialize it into a reply, count, look someone
    /// up), that one gives it without a copy.
    pub async fn room_presence(&self, room: &str) -> Result<Vec<Member>, crate::MembershipError> {
        self.room_presence_shared(room).await.map(|list| list.to_vec())
    }

    /// The list of [`room_presence`](Self::room_presence) (same members, same order,
    /// same errors), shared rather than copied: every caller asking for a room in the
    /// same pass of the hub gets the same list, and this node's list of a room is kept
    /// and handed out again until the room's membership changes. Use it where many
    /// sessions ask for one room's list (each join answered with the member list, as
    /// in the chat example): the hub builds the list once per change instead of once
    /// per caller, and no caller copies it. It is a snapshot: it does not follow
    /// later changes. A reply made of it is serialized once per list too:
    /// [`MemberList::encoded`](crate::MemberList::encoded).
    pub async fn room_presence_shared(
        &self,
        room: &str,
    ) -> Result<crate::MemberList, crate::MembershipError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::RoomPresence {
            room: room.to_owned(),
            reply,
        });
        answer.await.unwrap_or_else(|_| Ok(crate::MemberList::default()))
    }

    /// The session `session`, if it exists.
    pub async fn session(&self, session: SessionId) -> Option<SessionView> {
        self.snapshot(Audience::Session(session)).await.pop()
    }

    pub(crate) async fn snapshot(&self, audience: Audience) -> Vec<SessionView> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Sessions { audience, reply });
        answer.await.unwrap_or_default()
    }
}
