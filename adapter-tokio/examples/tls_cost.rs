//! What TLS costs a tether client and server on loopback: the time from `connect` to a
//! session (TCP, TLS handshake, upgrade, authentication), and a query's round trip,
//! over `ws://` and `wss://` side by side. The certificate is made here (rcgen).
//!
//! ```text
//! cargo run --release -p adapter-tokio --example tls_cost
//! ```

use std::time::{Duration, Instant};

use adapter_tokio::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use adapter_tokio::tls::rustls::RootCertStore;
use adapter_tokio::tls::{self, TlsConnector};
use adapter_tokio::{
    App, Client, ClientOptions, CloseCode, Context, EngineConfig, Server, TlsServer, TokioConnector,
};

const CONNECTS: u32 = 200;
const QUERIES: u32 = 5_000;

fn app() -> App {
    App::new()
        // One client sends as fast as it gets answers: lift the per-connection rate
        // limit (50/s by default) out of the way.
        .config(EngineConfig {
            rate_limit_per_second: 1_000_000,
            rate_limit_burst: 1_000_000,
            ..EngineConfig::default()
        })
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("echo", |ctx: Context| async move {
            let text: String = ctx.payload()?;
            ctx.reply("echo", &text)
        })
}

async fn measure(url: &str, connector: TlsConnector<TokioConnector>) -> (Duration, Duration) {
    let started = Instant::now();
    for _ in 0..CONNECTS {
        let client = Client::connect_with(url, ClientOptions::with_credential("bench"), connector.clone())
            .await
            .expect("connect");
        client.close(CloseCode::NORMAL, "bye").await.expect("close");
    }
    let connect = started.elapsed() / CONNECTS;
    let client = Client::connect_with(url, ClientOptions::with_credential("bench"), connector)
        .await
        .expect("connect");
    let line = "hello there, are we still on for tonight?".to_owned();
    let started = Instant::now();
    for _ in 0..QUERIES {
        client.query("echo", &line, None).await.expect("echo");
    }
    let query = started.elapsed() / QUERIES;
    client.close(CloseCode::NORMAL, "bye").await.expect("close");
    (connect, query)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let der: CertificateDer<'static> = cert.der().clone();
    let config = tls::server_config(
        vec![der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    let mut roots = RootCertStore::empty();
    roots.add(der).expect("root");

    let plain = Server::bind("127.0.0.1:0", "/ws", app()).await?;
    let plain_port = plain.local_addr()?.port();
    tokio::spawn(plain.run());
    let secure = TlsServer::bind_tls("127.0.0.1:0", "/ws", app(), config).await?;
    let secure_port = secure.local_addr()?.port();
    tokio::spawn(secure.run());

    let connector = TlsConnector::with_roots(TokioConnector, roots);
    let ws = measure(&format!("ws://localhost:{plain_port}/ws"), connector.clone()).await;
    let wss = measure(&format!("wss://localhost:{secure_port}/ws"), connector).await;
    println!("{CONNECTS} connects and {QUERIES} sequential echo queries each, one client at a time");
    println!("| | connect to session | query round trip |");
    println!("|---|---:|---:|");
    println!("| ws:// | {:?} | {:?} |", ws.0, ws.1);
    println!(
        "| wss:// (TLS 1.3, ECDSA P-256, ring) | {:?} | {:?} |",
        wss.0, wss.1
    );
    Ok(())
}
