//! A plain WebSocket echo server on fastwebsockets (upgrade through hyper 1, as its
//! documentation does), tokio single-threaded: a peer of tether-bench.
//!
//! `peer-fastwebsockets PORT`

use fastwebsockets::{upgrade, Frame, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn echo(upgrading: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgrading.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            // A new frame: the one read keeps the client's mask flag, and a server
            // must not send masked frames.
            OpCode::Text | OpCode::Binary => {
                ws.write_frame(Frame::new(true, frame.opcode, None, frame.payload))
                    .await?
            }
            _ => {}
        }
    }
}

async fn upgrade_request(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrading) = upgrade::upgrade(&mut request)?;
    tokio::task::spawn_local(async move {
        let _ = echo(upgrading).await;
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "9102".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::task::spawn_local(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(upgrade_request))
                    .with_upgrades()
                    .await;
            });
        }
    })
}
