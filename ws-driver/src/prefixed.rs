//! The raw TCP transport's preamble on a byte stream, both sides: ws-proto's
//! [`PreambleReader`] decides, this moves the bytes (through the same loop as the
//! WebSocket upgrade, [`read_head`]).

use std::io;

use bytes::Bytes;
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ws_proto::prefixed::{
    http_status, refusal_response, PreambleError, PreambleReader, PrefixedConnection, PREAMBLE,
};
use ws_proto::{CloseCode, Config};

use crate::admission::REFUSAL_REASON;
use crate::transport::StreamTransport;
use crate::upgrade::read_head;

/// The server side: reads the client's preamble and answers with ours. `Ok(None)`
/// when the peer left or was refused (the refusal written, the stream closed):
/// bytes that are not the magic get an HTTP 400 naming what the port speaks, another
/// version gets our preamble, so the client can say which version we speak, and
/// `at_capacity` (the server holds [`App::max_connections`](crate::App::max_connections))
/// our preamble and a close frame with 1013 (try again later). On success, the bytes
/// that followed the preamble.
///
/// No deadline here: the caller races this against its runtime's timer.
pub(crate) async fn accept_preamble<S>(
    stream: &mut S,
    at_capacity: bool,
    config: &Config,
) -> io::Result<Option<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = PreambleReader::new();
    let refusal = match read_head(stream, |bytes| reader.handle_bytes(bytes)).await? {
        None => return Ok(None),
        Some(Ok(_)) if at_capacity => {
            // Preamble and close in one write: the client reads both together.
            let mut framing = PrefixedConnection::new(config);
            framing
                .close(CloseCode::TRY_AGAIN_LATER, REFUSAL_REASON)
                .expect("a fresh framing closes with a short reason");
            let mut refusal = PREAMBLE.to_vec();
            while let Some(bytes) = framing.poll_transmit() {
                refusal.extend_from_slice(&bytes);
            }
            refusal
        }
        Some(Ok(rest)) => {
            stream.write_all(&PREAMBLE).await?;
            return Ok(Some(rest));
        }
        Some(Err(PreambleError::Version { version })) => {
            tracing::debug!(version, "a preamble of another framing version");
            PREAMBLE.to_vec()
        }
        Some(Err(err)) => {
            tracing::debug!(%err, "not tether's framing: refused");
            refusal_response()
        }
    };
    let _ = stream.write_all(&refusal).await;
    let _ = stream.close().await;
    Ok(None)
}

/// The client side of the raw TCP transport on any byte stream (TCP, a Unix socket):
/// exchanges preambles, then frames messages of at most `config.max_message_size`.
/// A server that answers with something else (an HTTP response: a WebSocket port) or
/// another version fails with `InvalidData` carrying the [`PreambleError`].
pub async fn dial_prefixed<S>(
    mut stream: S,
    config: &Config,
) -> io::Result<StreamTransport<S, PrefixedConnection>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rest = connect_preamble(&mut stream).await?;
    Ok(StreamTransport::new(
        stream,
        PrefixedConnection::new(config),
        &rest,
    ))
}

/// Writes our preamble, reads the server's; returns the bytes that followed it. An
/// HTTP response instead (a WebSocket port) is read up to its status, which the error
/// carries ([`PreambleError::Http`]): the client takes it as a refusal, as it does
/// a refused upgrade.
async fn connect_preamble<S>(stream: &mut S) -> io::Result<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&PREAMBLE).await?;
    stream.flush().await?;
    let mut reader = PreambleReader::new();
    // The start of what the server said, for the status of an HTTP answer.
    let mut answer = Vec::new();
    let outcome = read_head(stream, |bytes| {
        let room = STATUS_LINE.saturating_sub(answer.len());
        answer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        reader.handle_bytes(bytes)
    })
    .await?;
    let err = match outcome {
        Some(Ok(rest)) => return Ok(rest),
        Some(Err(PreambleError::NotTether { .. })) => {
            let mut more = [0; STATUS_LINE];
            while http_status(&answer).is_none() && answer.len() < STATUS_LINE && answer.starts_with(b"H") {
                let n = stream.read(&mut more[..STATUS_LINE - answer.len()]).await?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&more[..n]);
            }
            match http_status(&answer) {
                Some(status) => PreambleError::Http { status },
                None => PreambleError::NotTether { seen: answer },
            }
        }
        Some(Err(err)) => err,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before its preamble",
            ))
        }
    };
    Err(io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Enough of an answer for an HTTP status line's start (`HTTP/1.1 400 `).
const STATUS_LINE: usize = 16;
