//! The upgrade handshake under arbitrary bytes, in both roles.

use crate::handshake::{
    accept_key, Accept, ClientHandshake, ClientRequest, HandshakeError, Rejection, Request, Response,
    ServerHandshake,
};
use crate::Config;

/// Head size limit used by both targets: small, so the fuzzer reaches it.
const MAX_HEAD: usize = 4096;
/// Header count limit used by both targets.
const MAX_HEADERS: usize = 24;

fn config() -> Config {
    Config {
        max_handshake_size: MAX_HEAD,
        max_handshake_headers: MAX_HEADERS,
        // Off by default; on here, so that the offers' negotiation is fuzzed too.
        deflate: true,
        ..Config::default()
    }
}

/// The first byte picks a chunk size; the rest is a client's request, fed to a server
/// handshake in chunks of that size and, separately, all at once.
pub fn server_handshake(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let config = config();
    let (split, split_unfed) = feed_server(&config, input, usize::from(first).max(1));
    let (whole, whole_unfed) = feed_server(&config, input, input.len().max(1));
    assert!(whole_unfed.is_empty());

    match (split, whole) {
        (Ok(Some(mut split)), Ok(Some(mut whole))) => {
            // Nothing lost: kept bytes plus unfed bytes are the stream after the head.
            let mut split_rest = split.take_rest().to_vec();
            split_rest.extend_from_slice(split_unfed);
            assert_eq!(split_rest, whole.take_rest().to_vec());
            assert_eq!(split, whole);
            check_request(&whole);
        }
        (Err(split), Err(whole)) => {
            assert_eq!(split, whole);
            check_rejection(&whole);
        }
        (Ok(None), Ok(None)) => {
            // Incomplete only while under the limit and without a terminator.
            assert!(input.len() < MAX_HEAD);
            assert!(!input.windows(4).any(|w| w == b"\r\n\r\n"));
        }
        (split, whole) => panic!("outcome depends on the split: {split:?} vs {whole:?}"),
    }
}

/// The first byte picks a chunk size; the rest is a server's response to a fixed client
/// request, fed in chunks of that size and, separately, all at once.
pub fn client_handshake_response(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let (split, split_unfed) = feed_client(input, usize::from(first).max(1));
    let (whole, whole_unfed) = feed_client(input, input.len().max(1));
    assert!(whole_unfed.is_empty());

    match (split, whole) {
        (Ok(Some(mut split)), Ok(Some(mut whole))) => {
            let mut split_rest = split.take_rest().to_vec();
            split_rest.extend_from_slice(split_unfed);
            assert_eq!(split_rest, whole.take_rest().to_vec());
            assert_eq!(split, whole);
            assert_eq!(whole.status(), 101);
            assert_eq!(whole.header("sec-websocket-accept"), Some(FIXED_ACCEPT));
            if let Some(protocol) = whole.protocol() {
                assert!(FIXED_PROTOCOLS.contains(&protocol));
            }
            for extension in whole.extensions() {
                assert!(extension.name().eq_ignore_ascii_case("permessage-deflate"));
            }
        }
        (Err(split), Err(whole)) => assert_eq!(split, whole),
        (Ok(None), Ok(None)) => {
            assert!(input.len() < MAX_HEAD);
            assert!(!input.windows(4).any(|w| w == b"\r\n\r\n"));
        }
        (split, whole) => panic!("outcome depends on the split: {split:?} vs {whole:?}"),
    }
}

/// Subprotocols the fixed client offers.
const FIXED_PROTOCOLS: [&str; 2] = ["chat.v1", "chat.v2"];
/// `Sec-WebSocket-Accept` for the fixed client's key (`the sample nonce`, RFC 6455's
/// example key once base64-encoded).
const FIXED_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn feed_server<'a>(
    config: &Config,
    input: &'a [u8],
    chunk: usize,
) -> (Result<Option<Request>, Rejection>, &'a [u8]) {
    let mut server = ServerHandshake::new(config);
    let mut at = 0;
    loop {
        let end = (at + chunk).min(input.len());
        match server.handle_bytes(&input[at..end]) {
            Ok(None) if end < input.len() => at = end,
            outcome => return (outcome, &input[end..]),
        }
    }
}

fn feed_client(input: &[u8], chunk: usize) -> (Result<Option<Response>, HandshakeError>, &[u8]) {
    let mut request = ClientRequest::new("example.com", "/chat", *b"the sample nonce");
    request.protocols = FIXED_PROTOCOLS.iter().map(|p| p.to_string()).collect();
    request.extensions = Some("permessage-deflate; client_max_window_bits".to_string());
    let (mut client, _) = ClientHandshake::new(&config(), request).expect("the fixed request is valid");
    assert_eq!(client.expected_accept(), FIXED_ACCEPT);
    let mut at = 0;
    loop {
        let end = (at + chunk).min(input.len());
        match client.handle_bytes(&input[at..end]) {
            Ok(None) if end < input.len() => at = end,
            outcome => return (outcome, &input[end..]),
        }
    }
}

/// Invariants of an accepted request, and every accessor exercised.
fn check_request(request: &Request) {
    assert_eq!(request.method(), "GET");
    assert!(request.path().starts_with('/'));
    assert!(request.headers().len() <= MAX_HEADERS);
    let _ = (request.host(), request.origin(), request.bearer_token());
    let _ = (request.query_param("token"), request.query_param(""));
    for extension in request.extensions() {
        let _ = extension.to_string();
    }

    let response = request
        .accept(&Accept::default())
        .expect("a plain accept is valid");
    let text = String::from_utf8(response.to_vec()).expect("the 101 response is ASCII");
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    let accept = accept_key(request.key().as_bytes());
    assert!(text.contains(&["\r\nSec-WebSocket-Accept: ", &accept, "\r\n"].concat()));

    if let Some(protocol) = request.protocols().first() {
        let response = request
            .accept(&Accept::new().with_protocol(protocol.clone()))
            .expect("an offered protocol is accepted");
        assert!(!response.is_empty());
    }
    if let Some(extension) = request.extensions().first() {
        // Echoing an offered extension back, as rendered, is accepted.
        let value = extension.to_string();
        assert!(request.accept(&Accept::new().with_extensions(value)).is_ok());
    }
    assert_eq!(
        request
            .accept(&Accept::new().with_protocol("\u{0}never offered"))
            .err(),
        Some(HandshakeError::UnofferedProtocol {
            protocol: "\u{0}never offered".to_string()
        })
    );
    check_rejection(&request.reject(403, "forbidden").expect("403 is a valid status"));
}

/// Invariants of a rendered rejection.
fn check_rejection(rejection: &Rejection) {
    let status = rejection.status();
    assert!((400..=599).contains(&status));
    let response = rejection.to_response();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with(&["HTTP/1.1 ", &status.to_string(), " "].concat()));
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.contains("\r\nConnection: close"));
    let length = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .expect("a Content-Length");
    assert_eq!(
        length.parse::<usize>().ok(),
        Some(response.len() - head.len() - 4)
    );
    assert!(!body.is_empty());
    match status {
        405 => assert!(head.contains("\r\nAllow: GET")),
        426 => assert!(head.contains("\r\nSec-WebSocket-Version: 13")),
        _ => {}
    }
}
