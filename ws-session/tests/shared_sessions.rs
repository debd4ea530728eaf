//! Sessions any node can resume: two engines sharing one session store (the `nodes`
//! harness), with the real client engine reconnecting between them.

use std::time::Duration;

use proptest::prelude::*;
use ws_session::client::ClientConfig;
use ws_session::nodes::Nodes;
use ws_session::{EngineConfig, ErrorCode, JournalEntry, ResumeToken, SessionEvent, SessionId};

const A: usize = 0;
const B: usize = 1;

fn ticks(n: std::ops::RangeInclusive<u32>) -> Vec<String> {
    n.map(|i| i.to_string()).collect()
}

/// A client on A with a session; returns the cluster, the client and the session.
fn on_a(seed: u64) -> (Nodes, usize, SessionId) {
    let mut nodes = Nodes::new(EngineConfig::default(), 2, seed);
    let alice = nodes.add_client(ClientConfig::with_credential("alice"), A);
    nodes.settle();
    let session = nodes.session(alice).expect("a session");
    (nodes, alice, session)
}

/// The resume token of the `sys.session.created` / `sys.session.restored` the client
/// got last.
fn last_token(nodes: &Nodes, client: usize) -> String {
    nodes
        .client(client)
        .received
        .iter()
        .rev()
        .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .find_map(|v| v["p"]["resumeToken"].as_str().map(str::to_owned))
        .expect("a token")
}

#[test]
fn a_session_created_on_a_resumes_on_b_with_every_missed_message_once_in_order() {
    let (mut nodes, alice, session) = on_a(1);
    let now = nodes.now;
    nodes.node_mut(A).engine.join_room(now, session, "lobby").unwrap();
    for i in 1..=3 {
        nodes.send_to(A, session, "tick", &i.to_string()).unwrap();
    }
    nodes.cut(alice);
    for i in 4..=6 {
        nodes.send_to(A, session, "tick", &i.to_string()).unwrap();
    }
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert!(nodes.client(alice).engine.is_online());
    assert_eq!(nodes.session(alice), Some(session), "the same session, on B");
    assert_eq!(nodes.client(alice).events_named("tick"), ticks(1..=6));

    // B holds it, in its rooms; A let it go without ending it.
    let info = nodes.node(B).engine.session_info(session).expect("on B");
    assert_eq!(info.rooms, ["lobby".into()]);
    assert_eq!(nodes.node(B).engine.room_len("lobby"), 1);
    assert!(nodes.node(A).engine.session_info(session).is_none());
    assert_eq!(nodes.node(A).engine.room_len("lobby"), 0);
    assert!(nodes.node(A).lifecycle.contains(&SessionEvent::Moved { session }));
    assert!(!nodes
        .node(A)
        .lifecycle
        .iter()
        .any(|e| matches!(e, SessionEvent::Expired { .. } | SessionEvent::Closed { .. })));
    assert_eq!(nodes.node(B).engine.metrics().sessions_loaded, 1);
    assert_eq!(nodes.store.owner(session), Some(nodes.node(B).id));

    // The stream goes on from B; A can no longer write it.
    nodes.send_to(B, session, "tick", "7").unwrap();
    assert_eq!(nodes.client(alice).events_named("tick"), ticks(1..=7));
    assert!(nodes.send_to(A, session, "tick", "x").is_err());
    assert_eq!(nodes.store.record(session).unwrap().next_seq, 8);
}

#[test]
fn after_the_move_a_resume_on_a_with_the_old_token_is_refused_as_used() {
    let (mut nodes, alice, session) = on_a(2);
    let old_token = last_token(&nodes, alice);
    nodes.cut(alice);
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.session(alice), Some(session));
    // The client shows it holds the new token (any message: its heartbeat answer, an ack).
    nodes.advance(Duration::from_secs(30));
    assert!(nodes.store.record(session).unwrap().confirmed);

    let thief = nodes.raw_connect(A, "alice");
    let request = serde_json::json!({
        "v": "1.0", "e": "sys.reconnect.request",
        "p": { "sessionId": session.to_string(), "resumeToken": old_token, "lastSeq": 0 }
    });
    nodes.raw_send(thief, &request.to_string());
    let refused = nodes.raw(thief).received.iter().any(|t| {
        t.contains(&format!("\"code\":{}", ErrorCode::NOT_RECOVERABLE.0)) && t.contains("\"reason\":\"used\"")
    });
    assert!(refused, "{:?}", nodes.raw(thief).received);
    // Refused on the record: B still owns and holds it, the client is undisturbed.
    assert_eq!(nodes.store.owner(session), Some(nodes.node(B).id));
    assert!(nodes.node(A).engine.session_info(session).is_none());
    assert!(nodes.client(alice).engine.is_online());
    nodes.send_to(B, session, "tick", "1").unwrap();
    assert_eq!(nodes.client(alice).events_named("tick"), ["1"]);
}

#[test]
fn a_attached_client_moved_by_a_resume_elsewhere_is_closed_with_4116() {
    let (mut nodes, alice, session) = on_a(3);
    let token = last_token(&nodes, alice);
    // Someone holding the current token resumes on B while alice is attached on A.
    let other = nodes.raw_connect(B, "alice");
    let request = serde_json::json!({
        "v": "1.0", "e": "sys.reconnect.request",
        "p": { "sessionId": session.to_string(), "resumeToken": token, "lastSeq": 0 }
    });
    nodes.raw_send(other, &request.to_string());
    assert!(nodes
        .raw(other)
        .received
        .iter()
        .any(|t| t.contains("sys.session.restored")));
    let closed = nodes.client(alice).seen.iter().any(|a| {
        matches!(
            a,
            ws_session::client::ClientAction::StateChanged(ws_session::client::State::Reconnecting { .. })
        )
    });
    assert!(closed, "alice's connection on A was closed");
    assert_eq!(nodes.node(A).engine.metrics().sessions_moved, 1);
}

#[test]
fn a_killed_node_s_sessions_resume_elsewhere_with_exactly_the_stored_messages() {
    let (mut nodes, alice, session) = on_a(4);
    nodes.cut(alice);
    for i in 1..=3 {
        nodes.send_to(A, session, "tick", &i.to_string()).unwrap();
    }
    // The store stops taking A's writes; A goes on sending, then dies.
    nodes.hold_writes(A, true);
    for i in 4..=5 {
        nodes.send_to(A, session, "tick", &i.to_string()).unwrap();
    }
    nodes.kill(A);
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.session(alice), Some(session));
    // Exactly what was accepted (in the store) — once, in order; 4 and 5 were not.
    assert_eq!(nodes.client(alice).events_named("tick"), ticks(1..=3));
    nodes.send_to(B, session, "tick", "6").unwrap();
    assert_eq!(nodes.client(alice).events_named("tick"), ["1", "2", "3", "6"]);
}

#[test]
fn a_client_that_saw_more_than_the_store_holds_goes_on_after_it() {
    let (mut nodes, alice, session) = on_a(5);
    nodes.send_to(A, session, "tick", "1").unwrap();
    nodes.hold_writes(A, true);
    nodes.send_to(A, session, "tick", "2").unwrap(); // delivered, never stored
    nodes.kill(A);
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.session(alice), Some(session), "not refused as a gap");
    nodes.send_to(B, session, "tick", "3").unwrap();
    assert_eq!(nodes.client(alice).events_named("tick"), ticks(1..=3));
    assert_eq!(nodes.client(alice).engine.last_seq(), 3);
}

#[test]
fn writes_from_a_node_that_lost_the_session_are_fenced_off() {
    let (mut nodes, alice, session) = on_a(6);
    nodes.cut(alice);
    nodes.hold_writes(A, true);
    nodes.send_to(A, session, "tick", "late").unwrap(); // queued behind a slow store
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.session(alice), Some(session));
    nodes.hold_writes(A, false);
    assert!(nodes.node(A).fenced >= 1, "A's late write was refused");
    let record = nodes.store.record(session).unwrap();
    assert!(record.replay.iter().all(|(_, p, _)| !p.ends_with(b"\"late\"")));
    nodes.send_to(B, session, "tick", "1").unwrap();
    assert_eq!(nodes.client(alice).events_named("tick"), ["1"]);
}

#[test]
fn the_store_never_sees_a_token_only_its_verifier() {
    let (mut nodes, alice, session) = on_a(7);
    let first = last_token(&nodes, alice);
    nodes.cut(alice);
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    let second = last_token(&nodes, alice);
    let tokens: Vec<ResumeToken> = [first, second]
        .iter()
        .map(|t| ResumeToken::parse(t).unwrap())
        .collect();
    let mut verifiers = Vec::new();
    for node in [A, B] {
        for (sid, entry) in &nodes.node(node).journal {
            assert_eq!(*sid, session);
            let text = format!("{entry:?}");
            for t in &tokens {
                assert!(!text.contains(&t.to_hex()), "{text}");
            }
            match entry {
                JournalEntry::Created { token, .. } => verifiers.push(*token),
                JournalEntry::Token { token, previous } => {
                    verifiers.push(*token);
                    verifiers.extend(previous);
                }
                _ => {}
            }
        }
    }
    assert!(verifiers.iter().any(|v| *v == tokens[0].verifier()));
    assert!(verifiers.iter().any(|v| *v == tokens[1].verifier()));
    let hex = |b: &[u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for v in &verifiers {
        for t in &tokens {
            assert_ne!(hex(&v.0), t.to_hex());
        }
    }
}

#[test]
fn a_parked_resume_serves_nothing_and_a_failed_load_is_refused_as_unknown() {
    let (mut nodes, alice, session) = on_a(8);
    let token = last_token(&nodes, alice);
    nodes.cut(alice);
    nodes.manual_loads = true;
    let raw = nodes.raw_connect(B, "alice");
    let request = serde_json::json!({
        "v": "1.0", "e": "sys.reconnect.request", "c": "r1",
        "p": { "sessionId": session.to_string(), "resumeToken": token, "lastSeq": 0 }
    });
    nodes.raw_send(raw, &request.to_string());
    assert_eq!(nodes.pending_loads.len(), 1);
    let before = nodes.raw(raw).received.len();
    nodes.raw_send(raw, r#"{"v":"1.0","e":"echo","c":"x","p":1}"#);
    nodes.raw_send(raw, &request.to_string());
    let answers = &nodes.raw(raw).received[before..];
    assert!(
        answers[0].contains(&ErrorCode::NOT_AUTHENTICATED.0.to_string()),
        "{answers:?}"
    );
    assert!(
        answers[1].contains(&ErrorCode::RESUME_IN_PROGRESS.0.to_string()),
        "{answers:?}"
    );
    // The store did not answer (timeout): refused as unknown, the fresh session stays.
    nodes.answer_load(false);
    let last = nodes.raw(raw).received.iter().rev().nth(1).unwrap();
    assert!(
        last.contains("\"reason\":\"unknown\""),
        "{:?}",
        nodes.raw(raw).received
    );
    assert!(nodes
        .raw(raw)
        .received
        .last()
        .unwrap()
        .contains("sys.session.created"));
    assert_eq!(nodes.store.owner(session), Some(nodes.node(A).id), "not claimed");
    // The parked connection is still bound by the authentication deadline.
    let slow = nodes.raw_connect(B, "alice");
    nodes.raw_send(slow, &request.to_string());
    nodes.advance(EngineConfig::DEFAULT_AUTH_TIMEOUT + Duration::from_secs(1));
    assert_eq!(nodes.raw(slow).closed, Some(ErrorCode::AUTH_TIMEOUT.close_code()));
    // The answer that comes too late finds no one waiting, and claims nothing here.
    nodes.answer_load(true);
    assert!(nodes.node(B).engine.session_info(session).is_none());
    let _ = alice;
}

/// The node that holds `session` now.
fn holder(nodes: &Nodes, session: SessionId) -> usize {
    [A, B]
        .into_iter()
        .find(|&n| nodes.node(n).engine.session_info(session).is_some())
        .expect("a node holds it")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the interleaving of sends, cuts and moves between two nodes, every
    /// message sent reaches the client once, in order, when the store keeps up.
    #[test]
    fn moving_between_nodes_loses_and_repeats_nothing(steps in prop::collection::vec(0u8..4, 1..40), seed in 0u64..1000) {
        let (mut nodes, alice, session) = on_a(seed);
        let mut target = A;
        let mut sent = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                0 | 1 => {
                    let payload = i.to_string();
                    let node = holder(&nodes, session);
                    nodes.send_to(node, session, "tick", &payload).unwrap();
                    sent.push(payload);
                }
                2 => nodes.cut(alice),
                _ => {
                    nodes.cut(alice);
                    target = 1 - target;
                    nodes.route(alice, target);
                    nodes.advance(Duration::from_secs(3));
                }
            }
        }
        nodes.advance(Duration::from_secs(10));
        prop_assert_eq!(nodes.session(alice), Some(session));
        prop_assert_eq!(holder(&nodes, session), target);
        prop_assert_eq!(nodes.client(alice).events_named("tick"), sent);
    }
}

/// Node `node` broadcasts `said` with payload `n` to the lobby's members.
fn say(nodes: &mut Nodes, node: usize, n: u32) {
    let payload = n.to_string();
    let envelope = ws_proto::envelope::OutgoingEnvelope::new("said")
        .with_payload(ws_proto::envelope::Payload::Trusted(&payload));
    let now = nodes.now;
    nodes
        .node_mut(node)
        .engine
        .broadcast_room(now, "lobby", &envelope, None);
    nodes.settle();
}

/// Room history: what a room published while a session's node was dead (nobody held
/// the session) is appended to its stream by the node that takes it over, once, in
/// order, after its position — and a member that joined later does not get what was
/// published before it joined. A publication the session already has (a duplicate
/// from the broker) is not delivered again.
#[test]
fn room_history_replays_what_a_room_published_while_nobody_held_the_session() {
    let mut nodes = Nodes::with_room_history(EngineConfig::default(), 2, 11);
    let alice = nodes.add_client(ClientConfig::with_credential("alice"), A);
    let bob = nodes.add_client(ClientConfig::with_credential("bob"), B);
    nodes.settle();
    let (sa, sb) = (nodes.session(alice).unwrap(), nodes.session(bob).unwrap());
    let now = nodes.now;
    nodes.node_mut(A).engine.join_room(now, sa, "lobby").unwrap();
    nodes.node_mut(B).engine.join_room(now, sb, "lobby").unwrap();
    say(&mut nodes, B, 1);
    assert_eq!(nodes.client(alice).events_named("said"), ["1"]);
    assert_eq!(
        nodes.client(bob).events_named("said"),
        ["1"],
        "the publisher's node through the broker"
    );
    // Carol joins on A after 1: her position is A's cursor, so 1 is not hers.
    let carol = nodes.add_client(ClientConfig::with_credential("carol"), A);
    nodes.settle();
    let sc = nodes.session(carol).unwrap();
    let now = nodes.now;
    nodes.node_mut(A).engine.join_room(now, sc, "lobby").unwrap();
    nodes.settle();
    // A duplicate of 1 from the broker is not delivered again.
    let duplicate = nodes.room_history("lobby")[0].clone();
    let now = nodes.now;
    nodes.node_mut(A).engine.handle_remote_publish(now, &duplicate);
    nodes.settle();
    assert_eq!(nodes.client(alice).events_named("said"), ["1"]);
    assert!(nodes.client(carol).events_named("said").is_empty());

    nodes.kill(A);
    for n in 2..=4 {
        say(&mut nodes, B, n);
    }
    nodes.route(alice, B);
    nodes.route(carol, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.client(alice).events_named("said"), ["1", "2", "3", "4"]);
    assert_eq!(nodes.client(carol).events_named("said"), ["2", "3", "4"]);
    assert_eq!(nodes.node(B).engine.metrics().history_replayed, 6);
    // The stream goes on on B after the replayed ones.
    say(&mut nodes, B, 5);
    assert_eq!(
        nodes.client(alice).events_named("said"),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(nodes.client(bob).events_named("said"), ["1", "2", "3", "4", "5"]);
}

#[test]
fn a_reply_made_of_a_shared_prefix_resumes_elsewhere_whole_with_its_own_correlation_id() {
    let (mut nodes, alice, session) = on_a(11);
    let shared =
        ws_session::SharedPrefix::new("who", ws_proto::envelope::Payload::Trusted(r#"["ann","bob"]"#));
    nodes.cut(alice);
    let now = nodes.now;
    let seq = nodes
        .node_mut(A)
        .engine
        .send_shared(now, session, &shared, Some("w1"))
        .unwrap();
    nodes.route(alice, B);
    nodes.advance(Duration::from_secs(5));
    assert_eq!(nodes.session(alice), Some(session), "resumed on B");
    // The journal carried the whole envelope, not the shared part alone.
    let want = format!(r#"{{"v":"1.0","e":"who","p":["ann","bob"],"c":"w1","s":{seq}}}"#);
    let got: Vec<&String> = nodes
        .client(alice)
        .received
        .iter()
        .filter(|text| text.contains(r#""e":"who""#))
        .collect();
    assert_eq!(got, [&want], "replayed once, byte for byte");
}
