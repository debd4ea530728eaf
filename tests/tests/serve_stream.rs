//! `adapter_async_std::serve_stream`: a stream the application accepted itself, served
//! on async-std and on smol (the `Server`s are covered by the suite in `runtimes.rs`).

use adapter_async_std::{AsyncStdRuntime, ConnectionOptions, SmolRuntime};
use serde_json::json;
use tether_tests::client::{recv, send, session};
use tether_tests::suite::app;
use ws_driver::adapter::Runtime;

/// Accepts one connection on `runtime` and serves it with `serve_stream`; returns the
/// address to connect to.
async fn serve_one<R: Runtime + Default>() -> std::net::SocketAddr {
    let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let runtime = R::default();
    let hub = app().start(runtime.clone());
    let task_runtime = runtime.clone();
    runtime.spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let options = ConnectionOptions {
            path: Some("/ws".to_owned()),
            ..ConnectionOptions::default()
        };
        adapter_async_std::serve_stream(task_runtime, hub, stream, Some(peer), &options).await;
    });
    addr
}

async fn check(addr: std::net::SocketAddr) {
    let (mut ws, created) = session(addr, "alice").await;
    assert_eq!(created["userId"], "alice");
    send(&mut ws, "echo", json!("own listener"), Some("o")).await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        (reply["e"].as_str(), reply["c"].as_str()),
        (Some("echo.reply"), Some("o"))
    );
    assert_eq!(reply["p"], "own listener");
}

#[tokio::test]
async fn serve_stream_on_async_std() {
    check(serve_one::<AsyncStdRuntime>().await).await;
}

#[tokio::test]
async fn serve_stream_on_smol() {
    check(serve_one::<SmolRuntime>().await).await;
}
