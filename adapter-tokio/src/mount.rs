//! Detached mode: the endpoint as a handler of an application's own axum router, so
//! its other HTTP routes share the port.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_util::compat::TokioAsyncReadCompatExt;
use ws_driver::Hub;
use ws_proto::handshake::{accept_key, HandshakeError, Rejection, ServerHandshake};

use crate::runtime::TokioRuntime;

/// The tether endpoint as an axum route: `Router::new().route("/ws", mount(hub))`.
///
/// The upgrade request is validated by the same code as the standalone server's (same
/// refusals, same statuses, `Connection: close` on each, after which hyper closes the
/// connection); hyper performs the switch, then the connection runs on `hub` like any
/// other. Start the hub with `app.start(TokioRuntime)`, and serve the router with
/// [`serve_router`](crate::serve_router): `axum::serve` has no deadline for request
/// heads and accepts bare-LF line endings.
pub fn mount<S>(hub: Hub) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Every method reaches the handler so that ws-proto answers them as the
    // standalone server does (axum would route HEAD to a GET handler).
    any(move |request: Request<Body>| upgrade(hub.clone(), request))
}

async fn upgrade(hub: Hub, mut request: Request<Body>) -> Response {
    let version = match request.version() {
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_10 => "HTTP/1.0",
        // HTTP/2 WebSockets (RFC 8441) are not supported: say so plainly.
        _ => {
            return rejection_response(&Rejection::for_error(HandshakeError::UnsupportedHttpVersion {
                minor: None,
            }))
        }
    };
    // Rebuild the request head so that one validator (ws-proto's) judges every upgrade.
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    head.extend_from_slice(target.as_bytes());
    head.push(b' ');
    head.extend_from_slice(version.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut handshake = ServerHandshake::new(hub.proto_config());
    let parsed = match handshake.handle_bytes(&head) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            let incomplete = HandshakeError::MalformedHttp {
                reason: "incomplete upgrade request",
            };
            return rejection_response(&Rejection::for_error(incomplete));
        }
        Err(rejection) => return rejection_response(&rejection),
    };
    if !hub.origin_allowed(parsed.origin()) {
        return match parsed.reject(403, "origin not allowed") {
            Ok(rejection) => rejection_response(&rejection),
            Err(_) => StatusCode::FORBIDDEN.into_response(),
        };
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let info = ws_driver::connection_info(&parsed, peer);
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = TokioIo::new(upgraded).compat();
                ws_driver::run_websocket(hub, TokioRuntime, stream, info, Bytes::new()).await;
            }
            Err(err) => tracing::debug!(%err, "the upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(parsed.key().as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A refusal of ws-proto's handshake as an HTTP response: its status, headers, body,
/// and `Connection: close` (hyper then closes the connection, as the standalone
/// server does).
fn rejection_response(rejection: &Rejection) -> Response {
    let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, rejection.error().to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in rejection.headers() {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}
