//! Reading an upgrade from a byte stream: one loop for every side that does it — the
//! server's connection task, the plain [`WebSocket`](crate::WebSocket), the client's
//! handshake. ws-proto decides; this only moves bytes between the stream and it.

use std::io;

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ws_proto::handshake::{Accept, Rejection, Request, ServerHandshake};
use ws_proto::{Config, DeflateParams};

/// Bytes read from the socket at a time while the head arrives.
const READ_BUFFER: usize = 16 * 1024;

/// Reads `stream` and feeds each chunk to `step` (a ws-proto handshake's
/// `handle_bytes`) until it decides: its outcome, or `Ok(None)` when the stream ended
/// first.
pub(crate) async fn read_head<S, T, E>(
    stream: &mut S,
    mut step: impl FnMut(&[u8]) -> Result<Option<T>, E>,
) -> io::Result<Option<Result<T, E>>>
where
    S: AsyncRead + Unpin,
{
    let mut buf = vec![0; READ_BUFFER];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        match step(&buf[..n]) {
            Ok(None) => continue,
            Ok(Some(done)) => return Ok(Some(Ok(done))),
            Err(refused) => return Ok(Some(Err(refused))),
        }
    }
}

/// The server side of an upgrade: reads the request, lets `admit` refuse it for the
/// application's reasons (path, origin), and answers — the 101, or the refusal's
/// response after which the stream is closed. `Ok(None)` when refused or when the
/// peer left; the accepted [`Request`] holds the bytes that followed its head, and
/// comes with the permessage-deflate parameters the 101 agreed to (per `config`), to
/// run the connection with.
///
/// No deadline here: the caller races this against its runtime's timer.
pub(crate) async fn accept_upgrade<S>(
    stream: &mut S,
    config: &Config,
    admit: impl FnOnce(&Request) -> Option<Rejection>,
) -> io::Result<Option<(Request, Option<DeflateParams>)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut handshake = ServerHandshake::new(config);
    let request = match read_head(stream, |bytes| handshake.handle_bytes(bytes)).await? {
        None => return Ok(None),
        Some(Ok(request)) => request,
        Some(Err(rejection)) => {
            tracing::debug!(status = rejection.status(), error = %rejection.error(), "upgrade refused");
            refuse(stream, &rejection).await;
            return Ok(None);
        }
    };
    if let Some(rejection) = admit(&request) {
        tracing::debug!(status = rejection.status(), "upgrade refused by the application");
        refuse(stream, &rejection).await;
        return Ok(None);
    }
    let deflate = request.negotiate_deflate(config);
    let response = request
        .accept(&Accept::new().with_deflate(deflate.as_ref()))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&response).await?;
    Ok(Some((request, deflate)))
}

/// Writes the refusal and closes; errors are moot, the peer is being turned away.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, rejection: &Rejection) {
    let _ = stream.write_all(&rejection.to_response()).await;
    let _ = stream.close().await;
}
