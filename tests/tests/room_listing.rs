//! Room member lists (`ServerHandle::room_presence` and `room_presence_shared`) on one
//! node, on the test runtime: sorted by user then session, up to date after every
//! join, leave and session end, the same for every caller asking in one pass of the
//! hub, and the same from both calls — with presence per user, per session, and off
//! (the list is then kept from the first request on).

use std::collections::HashSet;

use futures::future::join_all;
use ws_driver::client::{Client, ClientOptions};
use ws_driver::test_runtime::TestRuntime;
use ws_driver::transport::memory::MemoryDialer;
use ws_driver::{App, Hub, Member, MemberList, Presence, ServerHandle, SessionId};

/// How the app lists members.
#[derive(Clone, Copy, Debug)]
enum Listing {
    PerUser,
    PerSession,
    /// No presence: lists are still per user.
    NoPresence,
}

const LISTINGS: [Listing; 3] = [Listing::PerUser, Listing::PerSession, Listing::NoPresence];

/// A node with `listing` and its connected clients.
struct Node {
    runtime: TestRuntime,
    hub: Hub,
    clients: Vec<Client>,
}

impl Node {
    fn start(listing: Listing) -> Self {
        let app = App::new().authenticate(|token: String, _info| async move { Ok::<_, String>(token) });
        let app = match listing {
            Listing::PerUser => app.presence(Presence::default()),
            Listing::PerSession => app.presence(Presence {
                per_user: false,
                ..Presence::default()
            }),
            Listing::NoPresence => app,
        };
        let runtime = TestRuntime::new();
        let hub = app.try_start(runtime.clone()).expect("the hub starts");
        Self {
            runtime,
            hub,
            clients: Vec::new(),
        }
    }

    fn handle(&self) -> ServerHandle {
        self.hub.handle().clone()
    }

    /// A new session of `user`, connected (its client kept for the node's life).
    fn session(&mut self, user: &str) -> SessionId {
        let handle = self.handle();
        let before: HashSet<SessionId> = self
            .runtime
            .block_on(async move { handle.sessions().await })
            .iter()
            .map(|s| s.id)
            .collect();
        let dialer = MemoryDialer::new(&self.hub, self.runtime.clone());
        let client = Client::start_with(dialer, ClientOptions::with_credential(user), self.runtime.clone());
        let c = client.clone();
        self.runtime
            .block_on(async move { c.connected().await })
            .expect("connected");
        self.clients.push(client);
        let handle = self.handle();
        let mut new: Vec<SessionId> = self
            .runtime
            .block_on(async move { handle.sessions().await })
            .iter()
            .map(|s| s.id)
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(new.len(), 1, "one new session");
        new.pop().unwrap()
    }

    fn join(&self, session: SessionId, room: &'static str) {
        let handle = self.handle();
        let joined = self
            .runtime
            .block_on(async move { handle.join(session, room).await });
        assert_eq!(joined, Ok(true));
    }

    fn leave(&self, session: SessionId, room: &'static str) {
        let handle = self.handle();
        let left = self
            .runtime
            .block_on(async move { handle.leave(session, room).await });
        assert_eq!(left, Ok(true));
    }

    fn end(&self, session: SessionId) {
        self.handle().end_session(session, "done");
        self.runtime.run_until_stalled();
        let handle = self.handle();
        let gone = self
            .runtime
            .block_on(async move { handle.session(session).await });
        assert!(gone.is_none(), "the session ended");
    }

    fn shared(&self, room: &'static str) -> MemberList {
        let handle = self.handle();
        self.runtime
            .block_on(async move { handle.room_presence_shared(room).await })
            .expect("a list")
    }

    fn copied(&self, room: &'static str) -> Vec<Member> {
        let handle = self.handle();
        self.runtime
            .block_on(async move { handle.room_presence(room).await })
            .expect("a list")
    }

    /// The list of `room` from both calls, which must agree.
    fn list(&self, room: &'static str) -> Vec<Member> {
        let shared = self.shared(room);
        let copied = self.copied(room);
        assert_eq!(
            &*shared,
            copied.as_slice(),
            "room_presence and room_presence_shared agree"
        );
        copied
    }
}

/// What `listing` lists for `sessions` (user, session), all online: sorted by user
/// then session, one entry per user unless per session.
fn expected(listing: Listing, sessions: &[(&str, SessionId)]) -> Vec<Member> {
    let mut sorted: Vec<(&str, SessionId)> = sessions.to_vec();
    sorted.sort();
    let mut out: Vec<Member> = Vec::new();
    for (user, session) in sorted {
        let per_session = matches!(listing, Listing::PerSession);
        if !per_session && out.last().is_some_and(|m| m.user.as_str() == user) {
            continue;
        }
        out.push(Member {
            user: ws_driver::UserId::new(user),
            session: per_session.then_some(session),
            online: true,
        });
    }
    out
}

#[test]
fn the_list_is_sorted_by_user_then_session_and_follows_joins_leaves_and_ends() {
    for listing in LISTINGS {
        let mut node = Node::start(listing);
        // Joined in an order that is not the list's; alice has two sessions.
        let users = ["carol", "alice", "dave", "bob", "alice"];
        let mut members: Vec<(&str, SessionId)> = Vec::new();
        for user in users {
            let session = node.session(user);
            node.join(session, "r");
            members.push((user, session));
        }
        assert_eq!(node.list("r"), expected(listing, &members), "{listing:?}");

        // A leave, a join, a session end: each shows in the next list.
        let (_, bob) = members.remove(3);
        node.leave(bob, "r");
        assert_eq!(
            node.list("r"),
            expected(listing, &members),
            "{listing:?}: after a leave"
        );
        let erin = node.session("erin");
        node.join(erin, "r");
        members.push(("erin", erin));
        assert_eq!(
            node.list("r"),
            expected(listing, &members),
            "{listing:?}: after a join"
        );
        let (_, carol) = members.remove(0);
        node.end(carol);
        assert_eq!(
            node.list("r"),
            expected(listing, &members),
            "{listing:?}: after an end"
        );
        // One of alice's two sessions goes: per user she stays, per session one entry
        // goes.
        let (_, alice) = members.remove(0);
        node.end(alice);
        assert_eq!(
            node.list("r"),
            expected(listing, &members),
            "{listing:?}: one tab gone"
        );

        // An unknown room and an emptied one list nobody.
        assert!(node.list("nowhere").is_empty());
        for (_, session) in std::mem::take(&mut members) {
            node.leave(session, "r");
        }
        assert!(node.list("r").is_empty(), "{listing:?}: emptied");
    }
}

#[test]
fn members_who_joined_before_the_first_list_are_in_it() {
    // Without presence nothing tracks rooms until a list is asked for: the first
    // request starts from the rooms as they are.
    for listing in LISTINGS {
        let mut node = Node::start(listing);
        let mut members = Vec::new();
        for user in ["b", "a", "c"] {
            let session = node.session(user);
            node.join(session, "r");
            node.join(session, "other");
            members.push((user, session));
        }
        let late = node.session("late");
        members.push(("late", late));
        assert_eq!(node.list("r"), expected(listing, &members[..3]), "{listing:?}");
        node.join(late, "r");
        assert_eq!(node.list("r"), expected(listing, &members), "{listing:?}");
        assert_eq!(
            node.list("other"),
            expected(listing, &members[..3]),
            "{listing:?}"
        );
    }
}

#[test]
fn a_list_is_shared_until_its_room_changes() {
    for listing in LISTINGS {
        let mut node = Node::start(listing);
        let a = node.session("a");
        node.join(a, "r");
        let first = node.shared("r");
        let again = node.shared("r");
        assert!(first.same_list(&again), "{listing:?}: unchanged room, same list");

        let b = node.session("b");
        node.join(b, "r");
        let after = node.shared("r");
        assert_eq!(after.len(), 2, "{listing:?}");
        assert_eq!(after[1].user.as_str(), "b");
        // The earlier snapshot is unchanged.
        assert_eq!(first.len(), 1);
    }
}

#[test]
fn every_request_of_one_pass_gets_its_rooms_list() {
    for listing in LISTINGS {
        let mut node = Node::start(listing);
        let mut in_a = Vec::new();
        let mut in_b = Vec::new();
        for (n, user) in ["u3", "u1", "u2", "u0"].into_iter().enumerate() {
            let session = node.session(user);
            if n % 2 == 0 {
                node.join(session, "a");
                in_a.push((user, session));
            } else {
                node.join(session, "b");
                in_b.push((user, session));
            }
        }
        let joiner = node.session("u9");
        let handle = node.handle();
        // Sent together, handled in one pass of the hub: a join to `a`, then lists of
        // both rooms asked for several times, by both calls.
        let (joined, lists) = node.runtime.block_on(async move {
            let join = handle.join(joiner, "a");
            let asks = (0..6).map(|n| {
                let handle = handle.clone();
                async move {
                    let room = if n % 2 == 0 { "a" } else { "b" };
                    let list = if n < 4 {
                        handle.room_presence_shared(room).await.expect("a list")
                    } else {
                        MemberList::from(handle.room_presence(room).await.expect("a list"))
                    };
                    (room, list)
                }
            });
            futures::join!(join, join_all(asks))
        });
        assert_eq!(joined, Ok(true));
        in_a.push(("u9", joiner));
        for (room, list) in &lists {
            let want = if *room == "a" { &in_a } else { &in_b };
            assert_eq!(
                &**list,
                expected(listing, want).as_slice(),
                "{listing:?}: room {room}"
            );
        }
        // The shared answers of one room are one list.
        let shared_a: Vec<&MemberList> = lists[..4]
            .iter()
            .filter(|(room, _)| *room == "a")
            .map(|(_, l)| l)
            .collect();
        assert!(shared_a[0].same_list(shared_a[1]), "{listing:?}");
    }
}
