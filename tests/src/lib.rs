//! Cross-crate tests of tether live in `tests/tests/`; this library holds what they
//! share: the integration suite every server adapter runs ([`suite`]), the harness that
//! starts a server on a chosen runtime ([`harness`]) and the test client ([`client`]).
#![deny(missing_docs)]

pub mod client;
pub mod harness;
pub mod raw;
pub mod redis_server;
pub mod suite;

/// The envelope codecs (the suite's client speaks one per test: [`client::with_codec`]).
pub use ws_proto::envelope::Codec;

/// Instantiates every body of [`suite`] as a `#[tokio::test]` against a server on
/// `$runtime` (a [`harness::ServerRuntime`]), reached over `$transport`
/// (`WebSocket`, the default; `Tcp`; `Memory`: a [`harness::TransportKind`]). Use it
/// once per runtime and transport, in a module of its own:
///
/// ```text
/// mod smol_tcp {
///     tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol, Tcp);
/// }
/// ```
///
/// `WebSocketMsgPack` is WebSocket with the client asking for the binary envelope
/// (`tether.v1.msgpack`): the same bodies as WebSocket, in MessagePack frames.
///
/// The bodies every transport runs come first; then those of one transport:
/// WebSocket's are about the upgrade (an `Origin` refused with 403, the query and
/// headers reaching handlers, permessage-deflate) and its control frames (a ping
/// flood); raw TCP's about its preamble (an HTTP client refused with 400) and its own
/// flood. The in-memory transport has none of its own.
#[macro_export]
macro_rules! runtime_suite {
    ($runtime:expr) => {
        $crate::runtime_suite!($runtime, WebSocket);
    };
    ($runtime:expr, WebSocket) => {
        $crate::runtime_suite!(@common $runtime, WebSocket);
        $crate::runtime_suite!(@each $runtime, WebSocket;
            an_origin_outside_the_allow_list_is_refused_with_403,
            a_ping_flood_from_a_client_that_never_reads_is_closed_with_1008,
            state_claims_and_session_data_reach_handlers,
            permessage_deflate_is_negotiated_only_when_turned_on
        );
    };
    ($runtime:expr, WebSocketMsgPack) => {
        $crate::runtime_suite!(@common $runtime, WebSocket, $crate::Codec::MsgPack);
        $crate::runtime_suite!(@each $runtime, WebSocket, $crate::Codec::MsgPack;
            an_origin_outside_the_allow_list_is_refused_with_403,
            a_ping_flood_from_a_client_that_never_reads_is_closed_with_1008,
            state_claims_and_session_data_reach_handlers,
            permessage_deflate_is_negotiated_only_when_turned_on
        );
    };
    ($runtime:expr, Tcp) => {
        $crate::runtime_suite!(@common $runtime, Tcp);
        $crate::runtime_suite!(@each $runtime, Tcp;
            a_websocket_client_on_the_tcp_port_is_refused_with_400,
            a_silent_tcp_peer_is_dropped_at_the_handshake_timeout,
            a_message_flood_from_a_client_that_never_reads_is_closed_with_1008
        );
    };
    ($runtime:expr, Memory) => {
        $crate::runtime_suite!(@common $runtime, Memory);
    };
    (@common $runtime:expr, $transport:ident) => {
        $crate::runtime_suite!(@common $runtime, $transport, $crate::Codec::Json);
    };
    (@common $runtime:expr, $transport:ident, $codec:expr) => {
        $crate::runtime_suite!(@each $runtime, $transport, $codec;
            a_bearer_token_creates_a_session,
            a_refused_credential_gets_a_clear_error_and_a_close,
            replies_and_errors_carry_the_correlation_id,
            a_room_broadcast_reaches_the_others_but_not_the_sender,
            middleware_can_stop_a_message,
            a_bad_envelope_gets_a_sys_error_and_the_connection_stays,
            an_oversized_message_is_closed_with_1009,
            a_connection_that_never_authenticates_is_closed_at_the_auth_deadline,
            graceful_shutdown_closes_connections_with_1001,
            a_silent_client_is_closed_by_the_heartbeat,
            a_dropped_session_resumes_with_exactly_the_missed_messages,
            resumes_with_used_stolen_or_expired_tokens_are_refused,
            a_slow_consumer_is_cut_off_while_others_keep_their_latency,
            a_slow_session_hook_does_not_hold_up_other_clients,
            the_server_handle_reaches_sessions_users_and_rooms,
            presence_is_announced_once_per_user_and_listed,
            end_session_tells_the_client_why_and_closes_with_4115,
            a_client_ending_its_session_is_seen_at_once_and_its_token_is_dead,
            a_network_drop_suspends_the_session_and_does_not_end_it,
            server_requests_are_answered_refused_or_timed_out,
            a_request_to_an_ended_session_fails,
            a_request_made_during_a_drop_is_answered_after_the_resume
        );
    };
    (@each $runtime:expr, $transport:ident; $($name:ident),* $(,)?) => {
        $crate::runtime_suite!(@each $runtime, $transport, $crate::Codec::Json; $($name),*);
    };
    (@each $runtime:expr, $transport:ident, $codec:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let setup = $crate::harness::Setup {
                    runtime: $runtime,
                    transport: $crate::harness::TransportKind::$transport,
                };
                $crate::client::with_codec($codec, $crate::suite::$name(setup)).await;
            }
        )*
    };
}
