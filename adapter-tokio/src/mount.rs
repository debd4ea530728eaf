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
use ws_driver::prometheus::prometheus_client::encoding::text::{encode_eof, encode_registry};
use ws_driver::prometheus::prometheus_client::registry::Registry;
use ws_driver::Hub;
use ws_proto::handshake::{validate_request_parts, Accept, HandshakeError, Rejection};

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
    let minor = match request.version() {
        Version::HTTP_11 => 1,
        Version::HTTP_10 => 0,
        // HTTP/2 WebSockets (RFC 8441) are not supported: say so plainly.
        _ => {
            return rejection_response(&Rejection::for_error(HandshakeError::UnsupportedHttpVersion {
                minor: None,
            }))
        }
    };
    // hyper parsed the head; ws-proto judges it, as it judges every upgrade.
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let parsed = match validate_request_parts(
        hub.proto_config(),
        request.method().as_str(),
        target,
        minor,
        headers,
    ) {
        Ok(parsed) => parsed,
        Err(rejection) => return rejection_response(&rejection),
    };
    if !hub.origin_allowed(parsed.origin()) {
        return match parsed.reject(403, "origin not allowed") {
            Ok(rejection) => rejection_response(&rejection),
            Err(_) => StatusCode::FORBIDDEN.into_response(),
        };
    }
    // Counted until the connection ends: the slot `serve_router` took at the accept,
    // else one taken now; past the bound, 503.
    let held = request.extensions().get::<HeldSlot>().and_then(HeldSlot::take);
    let Some(slot) = held.or_else(|| hub.try_admit_connection()) else {
        return rejection_response(&ws_driver::adapter::refuse_at_capacity());
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let info = ws_driver::adapter::connection_info(&parsed, peer);
    // The 101 below answers the client's permessage-deflate offer; the connection
    // runs with the same parameters.
    let deflate = parsed.negotiate_deflate(hub.proto_config());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = TokioIo::new(upgraded).compat();
                ws_driver::adapter::run_websocket(hub, TokioRuntime, stream, info, Bytes::new(), deflate)
                    .await;
                drop(slot);
            }
            Err(err) => tracing::debug!(%err, "the upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    // The tether subprotocol, when the client named one (MessagePack preferred); the
    // connection runs with the same codec (`connection_info`).
    let mut accept = Accept::new().with_deflate(deflate.as_ref());
    if let (_, Some(protocol)) =
        ws_proto::envelope::Codec::negotiate(parsed.protocols(), &ws_proto::envelope::Codec::SERVED)
    {
        accept = accept.with_protocol(protocol);
    }
    match parsed.accept_fields(&accept) {
        Ok(fields) => {
            for (name, value) in fields {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
        }
        // Nothing chosen that the client did not offer: cannot happen here.
        Err(err) => return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
    response
}

/// The slot `serve_router` took for a connection at its accept, in each request's
/// extensions: the request that upgrades takes it over, so that the WebSocket is
/// counted once, from the accept on.
#[derive(Clone, Default)]
pub(crate) struct HeldSlot(std::sync::Arc<std::sync::Mutex<Option<ws_driver::adapter::ConnectionSlot>>>);

impl HeldSlot {
    pub(crate) fn new(slot: ws_driver::adapter::ConnectionSlot) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(slot))))
    }

    fn take(&self) -> Option<ws_driver::adapter::ConnectionSlot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
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

/// The server's Prometheus metrics as an axum route:
/// `Router::new().route("/metrics", prometheus_route(hub.handle().clone()))`. A `GET`
/// answers [`ServerHandle::prometheus_text`](ws_driver::ServerHandle::prometheus_text)
/// with its content type; 503 once the hub has stopped.
pub fn prometheus_route<S>(handle: ws_driver::ServerHandle) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    prometheus_route_with(handle, Vec::new)
}

/// [`prometheus_route`] with more series in the same exposition: `extra` is called on
/// each scrape for registries to encode after the server's (a snapshot each, such as
/// broker-redis's `BrokerStatus::prometheus_registry`).
pub fn prometheus_route_with<S, F>(handle: ws_driver::ServerHandle, extra: F) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    F: Fn() -> Vec<Registry> + Clone + Send + Sync + 'static,
{
    axum::routing::get(move || {
        let (handle, extra) = (handle.clone(), extra.clone());
        async move {
            let Some(server) = handle.prometheus_registry().await else {
                return (StatusCode::SERVICE_UNAVAILABLE, "the server has stopped").into_response();
            };
            let mut text = String::new();
            for registry in std::iter::once(server).chain(extra()) {
                // Writing to a String cannot fail.
                let _ = encode_registry(&mut text, &registry);
            }
            let _ = encode_eof(&mut text);
            (
                [(header::CONTENT_TYPE, ws_driver::prometheus::CONTENT_TYPE)],
                text,
            )
                .into_response()
        }
    })
}
