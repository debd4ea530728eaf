//! TLS (rustls) on every runtime: the TLS server of tokio, async-std and smol with the
//! client of the same runtime, over a certificate made in the test by a CA made in the
//! test (rcgen). A good certificate works; a certificate for another name and one from
//! an untrusted root are refused with the error saying so; a peer that never finishes
//! its TLS handshake does not hold up the others.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use adapter_async_std::AsyncNetConnector;
use adapter_tokio::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use adapter_tokio::tls::rustls::{self, CertificateError, RootCertStore, ServerConfig};
use adapter_tokio::tls::{self, TlsConnector};
use adapter_tokio::{App, ClientError, ClientOptions, CloseCode, Context, TokioConnector};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use tether_tests::harness::{self, ServerRuntime};
use ws_driver::client::{Client, Connector, Target};

/// A bound on every wait, so that a broken build fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// A CA and a server certificate it signed for `localhost` (a DNS name only: no IP
/// address, so `wss://127.0.0.1` is a wrong name).
struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn make_pki() -> Pki {
    pki_of("tether test CA")
}

/// [`make_pki`] with a CA of this name.
fn pki_of(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
        chain: vec![leaf.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

impl Pki {
    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        tls::server_config(self.chain.clone(), self.key.clone_key()).unwrap()
    }
}

fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("echo", |ctx: Context| async move {
            let value: Value = ctx.payload()?;
            ctx.reply("echo.reply", &value)
        })
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_attempts: Some(1),
        ..ClientOptions::with_credential("alice")
    }
}

/// Starts the client of `runtime` with TLS trusting `roots` (or the default
/// connector, trusting Mozilla's roots, when `None`) and waits for its session.
async fn connect(
    runtime: ServerRuntime,
    url: &str,
    roots: Option<RootCertStore>,
) -> Result<Client, ClientError> {
    let client = match (runtime, roots) {
        (ServerRuntime::Tokio, None) => {
            adapter_tokio::Client::start(url, options()).map(|c| c.inner().clone())
        }
        (ServerRuntime::Tokio, Some(roots)) => {
            adapter_tokio::Client::start_with(url, options(), TlsConnector::with_roots(TokioConnector, roots))
                .map(|c| c.inner().clone())
        }
        (ServerRuntime::AsyncStd, None) => {
            adapter_async_std::AsyncStdClient::start(url, options()).map(|c| c.inner().clone())
        }
        (ServerRuntime::AsyncStd, Some(roots)) => adapter_async_std::AsyncStdClient::start_with(
            url,
            options(),
            TlsConnector::with_roots(AsyncNetConnector, roots),
        )
        .map(|c| c.inner().clone()),
        (ServerRuntime::Smol, None) => {
            adapter_async_std::SmolClient::start(url, options()).map(|c| c.inner().clone())
        }
        (ServerRuntime::Smol, Some(roots)) => adapter_async_std::SmolClient::start_with(
            url,
            options(),
            TlsConnector::with_roots(AsyncNetConnector, roots),
        )
        .map(|c| c.inner().clone()),
    }?;
    tokio::time::timeout(WAIT, client.connected())
        .await
        .expect("the client settled in time")?;
    Ok(client)
}

/// The refusal of a first connection: `Unreachable`, with the TLS error in words.
fn refusal(result: Result<Client, ClientError>) -> String {
    match result {
        Err(ClientError::Unreachable { attempts: 1, last }) => last.error.expect("the failure is described"),
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

async fn a_client_and_server_talk_over_tls(runtime: ServerRuntime) {
    let pki = make_pki();
    let server = harness::start_tls(runtime, app(), pki.server_config()).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let client = connect(runtime, &url, Some(pki.roots())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, client.query("echo", &json!({"over": "tls"}), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.payload_as::<Value>().unwrap(), json!({"over": "tls"}));
    assert_eq!(server.handle.metrics().await.unwrap().connections, 1);
    client.close(CloseCode::NORMAL, "done").await.unwrap();
    server.stop().await.unwrap();
}

async fn a_certificate_for_another_name_is_refused(runtime: ServerRuntime) {
    let pki = make_pki();
    let server = harness::start_tls(runtime, app(), pki.server_config()).await;
    // The certificate names `localhost`; the URL names 127.0.0.1.
    let url = format!("wss://127.0.0.1:{}/ws", server.addr.port());
    let error = refusal(connect(runtime, &url, Some(pki.roots())).await);
    assert!(
        error.starts_with(&format!(
            "TLS handshake with 127.0.0.1:{} failed",
            server.addr.port()
        )) && error.contains("certificate not valid for name"),
        "{error}"
    );
    // The server is still there for a client that asks for the right name.
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    connect(runtime, &url, Some(pki.roots())).await.unwrap();
    server.stop().await.unwrap();
}

async fn a_certificate_from_an_untrusted_root_is_refused(runtime: ServerRuntime) {
    let pki = make_pki();
    let server = harness::start_tls(runtime, app(), pki.server_config()).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    // The default client trusts Mozilla's roots, not the test's CA.
    let error = refusal(connect(runtime, &url, None).await);
    assert!(
        error.contains("TLS handshake with localhost") && error.contains("UnknownIssuer"),
        "{error}"
    );
    // Another CA than the one that signed the certificate: refused the same way.
    let error = refusal(connect(runtime, &url, Some(pki_of("another CA").roots())).await);
    assert!(error.contains("UnknownIssuer"), "{error}");
    server.stop().await.unwrap();
}

async fn a_peer_that_never_handshakes_does_not_hold_up_the_others(runtime: ServerRuntime) {
    let pki = make_pki();
    let server = harness::start_tls(runtime, app(), pki.server_config()).await;
    // A TCP connection that says nothing, and one that speaks plain HTTP to the TLS port.
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let plain_client =
        adapter_tokio::Client::start(&format!("ws://localhost:{}/ws", server.addr.port()), options())
            .map(|c| c.inner().clone())
            .unwrap();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let client = connect(runtime, &url, Some(pki.roots())).await.unwrap();
    let reply = client.query("echo", &1, None).await.unwrap();
    assert_eq!(reply.payload_as::<u32>().unwrap(), 1);
    // The plain-HTTP client got no WebSocket out of the TLS port.
    let outcome = tokio::time::timeout(WAIT, plain_client.connected())
        .await
        .unwrap();
    assert!(
        matches!(outcome, Err(ClientError::Unreachable { .. })),
        "{outcome:?}"
    );
    // (A graceful shutdown waits for connections still in their handshake, up to the
    // handshake timeout: let the silent one go first.)
    drop(silent);
    server.stop().await.unwrap();
}

macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {
        mod tokio_runtime {
            $(#[tokio::test] async fn $name() { super::$name(super::ServerRuntime::Tokio).await })*
        }
        mod async_std_runtime {
            $(#[tokio::test] async fn $name() { super::$name(super::ServerRuntime::AsyncStd).await })*
        }
        mod smol_runtime {
            $(#[tokio::test] async fn $name() { super::$name(super::ServerRuntime::Smol).await })*
        }
    };
}

on_every_runtime!(
    a_client_and_server_talk_over_tls,
    a_certificate_for_another_name_is_refused,
    a_certificate_from_an_untrusted_root_is_refused,
    a_peer_that_never_handshakes_does_not_hold_up_the_others,
);

/// The connector's own error: `InvalidData`, with the rustls error inside it.
#[tokio::test]
async fn the_connector_error_carries_the_rustls_error() {
    let pki = make_pki();
    let server = harness::start_tls(ServerRuntime::Tokio, app(), pki.server_config()).await;
    let port = server.addr.port();
    let connector = TlsConnector::with_roots(TokioConnector, pki.roots());
    let wrong_name = Target::parse(&format!("wss://127.0.0.1:{port}/ws")).unwrap();
    let err = connector.connect(&wrong_name).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        matches!(
            tls::tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    let untrusted = TlsConnector::new(TokioConnector);
    let err = untrusted
        .connect(&Target::parse(&format!("wss://localhost:{port}/ws")).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            tls::tls_error(&err),
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        ),
        "{err:?}"
    );
    server.stop().await.unwrap();
}

/// The PEM files the chat example's `--tls-cert`/`--tls-key` take, and their errors.
#[tokio::test]
async fn a_server_configuration_from_pem_files() {
    let pki = make_pki();
    let dir = std::env::temp_dir().join(format!("tether-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let config = tls::server_config_from_pem_files(&cert, &key).unwrap();
    let server = harness::start_tls(ServerRuntime::Tokio, app(), config).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    connect(ServerRuntime::Tokio, &url, Some(pki.roots()))
        .await
        .unwrap();
    server.stop().await.unwrap();

    let missing = tls::server_config_from_pem_files(dir.join("nope.pem"), &key).unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    // The key where the certificate should be, and a key that does not match.
    let swapped = tls::server_config_from_pem_files(&key, &key).unwrap_err();
    assert_eq!(swapped.kind(), io::ErrorKind::InvalidInput, "{swapped}");
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    let mismatch = tls::server_config_from_pem(pki.cert_pem.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert_eq!(mismatch.kind(), io::ErrorKind::InvalidInput, "{mismatch}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Detached mode with tether's router server as the host: `serve_router(..).tls(..)`
/// serves the router's pages over HTTPS and the mounted endpoint as `wss://`.
#[tokio::test]
async fn the_router_server_serves_the_mounted_endpoint_over_tls() {
    let pki = make_pki();
    let hub = app().start(adapter_tokio::TokioRuntime);
    let router = axum::Router::new().route("/ws", adapter_tokio::mount(hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = adapter_tokio::serve_router(listener, router, &hub).tls(pki.server_config());
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let client = connect(
        ServerRuntime::Tokio,
        &format!("wss://localhost:{port}/ws"),
        Some(pki.roots()),
    )
    .await
    .unwrap();
    let reply = client.query("echo", &"detached", None).await.unwrap();
    assert_eq!(reply.payload_as::<String>().unwrap(), "detached");
    // Plain HTTP on the TLS port gets no WebSocket.
    let error = refusal(connect(ServerRuntime::Tokio, &format!("ws://localhost:{port}/ws"), None).await);
    assert!(!error.is_empty());
    client.close(CloseCode::NORMAL, "done").await.unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// `tls::native_roots()` reads the platform's store, which takes `SSL_CERT_FILE` in:
/// pointed at the test's CA, the roots trust the test server.
#[tokio::test]
async fn the_platforms_roots_come_from_its_store() {
    let pki = make_pki();
    let dir = std::env::temp_dir().join(format!("tether-native-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    // This is the only test of this binary that reads the platform's store.
    std::env::set_var("SSL_CERT_FILE", &ca_file);
    let roots = tls::native_roots().unwrap();
    std::env::remove_var("SSL_CERT_FILE");
    assert!(!roots.is_empty());
    let server = harness::start_tls(ServerRuntime::Tokio, app(), pki.server_config()).await;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    connect(ServerRuntime::Tokio, &url, Some(roots)).await.unwrap();
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
