//! A transport of your own: tether over a Unix socket (docs/GUIDE.md, "Writing a
//! transport"). The server hands each accepted stream to the raw TCP framing's
//! connection task; the client dials with a `Dialer` of its own. Unix only.
//!
//! ```text
//! cargo run -p adapter-async-std --example unix_socket
//! ```

// guide:start
use std::io;
use std::path::PathBuf;

use adapter_async_std::{App, Context, SmolRuntime};
use async_net::unix::{UnixListener, UnixStream};
use ws_driver::adapter::{serve_prefixed, BoxFuture};
use ws_driver::client::{Client, ClientOptions, DialRequest, Dialer};
use ws_driver::transport::{dial_prefixed, BoxTransport};

/// Opens a Unix socket and speaks the raw TCP framing on it.
struct UnixDialer {
    path: PathBuf,
    config: ws_proto::Config,
}

impl Dialer for UnixDialer {
    fn dial(&self, _request: DialRequest) -> BoxFuture<io::Result<BoxTransport>> {
        let (path, config) = (self.path.clone(), self.config.clone());
        Box::pin(async move {
            let stream = UnixStream::connect(&path).await?;
            Ok(Box::new(dial_prefixed(stream, &config).await?) as BoxTransport)
        })
    }
}

/// Serves `app` on a Unix socket at `path`, then asks it for an echo as a client.
pub(crate) async fn run(app: App, path: PathBuf) -> io::Result<String> {
    let listener = UnixListener::bind(&path)?;
    let hub = app
        .try_start(SmolRuntime)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let server_hub = hub.clone();
    smol::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // No peer address on a Unix socket: the engine gets `None`.
            smol::spawn(serve_prefixed(server_hub.clone(), SmolRuntime, stream, None)).detach();
        }
    })
    .detach();

    let dialer = UnixDialer {
        path,
        config: hub.proto_config().clone(),
    };
    let client = Client::start_with(dialer, ClientOptions::with_credential("alice"), SmolRuntime);
    let reply = async {
        client.connected().await?;
        let reply = client.query("echo", "over a Unix socket", None).await?;
        client.close(ws_driver::CloseCode::NORMAL, "done").await?;
        reply
            .payload_as::<String>()
            .map_err(ws_driver::client::ClientError::from)
    };
    reply.await.map_err(io::Error::other)
}
// guide:end

/// The application: echo.
pub(crate) fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok(token) })
        .on("echo", |ctx: Context| async move {
            let text: String = ctx.payload()?;
            ctx.reply("echo", &text)
        })
}

#[allow(dead_code)] // The integration test includes this file and calls `run` itself.
fn main() -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("tether-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let reply = smol::block_on(run(app(), path.clone()))?;
    println!("{reply}");
    std::fs::remove_file(&path)
}
