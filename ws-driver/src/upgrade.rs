//! Reading an upgrade from a byte stream: one loop for every side that does it — the
//! server's connection task, the plain [`WebSocket`](crate::WebSocket), the client's
//! handshake. ws-proto decides; this only moves bytes between the stream and it.

use std::io;

use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use ws_proto::envelope::Codec;
use ws_proto::handshake::{Accept, Rejection, Request, ServerHandshake};
use ws_proto::{Config, DeflateParams};

use crate::buffers::poll_read_shared;

/// Reads `stream` and feeds each chunk to `step` (a ws-proto handshake's
/// `handle_bytes`) until it decides: its outcome, or `Ok(None)` when the stream ended
/// first.
///
/// Each read borrows the thread's read buffer inside the poll
/// ([`poll_read_shared`]) and `step` takes what it needs (the head, and what followed
/// it) before the poll returns: a connection being upgraded holds no read buffer of
/// its own. (A zeroed 16 KiB buffer per connection was, in a resume storm, a large
/// allocation and its zeroing per reconnect.)
pub(crate) async fn read_head<S, T, E>(
    stream: &mut S,
    mut step: impl FnMut(&[u8]) -> Result<Option<T>, E>,
) -> io::Result<Option<Result<T, E>>>
where
    S: AsyncRead + Unpin,
{
    loop {
        let read = std::future::poll_fn(|cx| {
            poll_read_shared(&mut *stream, cx, |read| read.map(|bytes| bytes.map(&mut step)))
        })
        .await?;
        match read {
            None => return Ok(None),
            Some(Ok(None)) => continue,
            Some(Ok(Some(done))) => return Ok(Some(Ok(done))),
            Some(Err(refused)) => return Ok(Some(Err(refused))),
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
/// With `codecs`, the subprotocol of the first tether codec the client offered among
/// them is named in the 101 (`Codec::negotiate`); the plain `WebSocket` passes none.
///
/// No deadline here: the caller races this against its runtime's timer.
pub(crate) async fn accept_upgrade<S>(
    stream: &mut S,
    config: &Config,
    codecs: &[Codec],
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
    let mut accept = Accept::new().with_deflate(deflate.as_ref());
    if let (_, Some(protocol)) = Codec::negotiate(request.protocols(), codecs) {
        accept = accept.with_protocol(protocol);
    }
    let response = request
        .accept(&accept)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&response).await?;
    Ok(Some((request, deflate)))
}

/// Writes the refusal and closes; errors are moot, the peer is being turned away.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, rejection: &Rejection) {
    let _ = stream.write_all(&rejection.to_response()).await;
    let _ = stream.close().await;
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::io::AsyncRead;
    use ws_proto::handshake::ServerHandshake;
    use ws_proto::Config;

    use super::read_head;
    use crate::test_runtime::TestRuntime;

    /// Gives its chunks one read each, answering `Pending` (and waking itself) before
    /// each one: a head that arrives in pieces.
    struct Trickle {
        chunks: VecDeque<Vec<u8>>,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if !std::mem::replace(&mut self.ready, false) {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let Some(chunk) = self.chunks.pop_front() else {
                return Poll::Ready(Ok(0));
            };
            buf[..chunk.len()].copy_from_slice(&chunk);
            Poll::Ready(Ok(chunk.len()))
        }
    }

    fn trickle(chunks: &[&[u8]]) -> Trickle {
        Trickle {
            chunks: chunks.iter().map(|c| c.to_vec()).collect(),
            ready: false,
        }
    }

    type Outcome =
        std::io::Result<Option<Result<ws_proto::handshake::Request, ws_proto::handshake::Rejection>>>;

    /// Reads a server handshake's head from `stream`: the outcome, and the chunks
    /// left unread.
    fn read(mut stream: Trickle) -> (Outcome, usize) {
        TestRuntime::new().block_on(async move {
            let mut handshake = ServerHandshake::new(&Config::default());
            let outcome = read_head(&mut stream, |bytes| handshake.handle_bytes(bytes)).await;
            (outcome, stream.chunks.len())
        })
    }

    const HEAD: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_head_in_pieces_is_read_whole_and_what_follows_it_is_kept() {
        let frame: &[u8] = &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let (a, b) = HEAD.split_at(20);
        let mut last = b[b.len() - 3..].to_vec();
        last.extend_from_slice(frame);
        let (outcome, left) = read(trickle(&[a, &b[..b.len() - 3], &last]));
        let request = outcome.unwrap().expect("not ended").expect("accepted");
        assert_eq!(request.path(), "/ws");
        assert_eq!(
            &request.rest()[..],
            frame,
            "the bytes after the head are the request's"
        );
        assert_eq!(left, 0, "every chunk read");
    }

    #[test]
    fn a_stream_that_ends_before_its_head_is_none() {
        let (outcome, _) = read(trickle(&[&HEAD[..30]]));
        assert!(outcome.unwrap().is_none());
    }
}
