//! A plain WebSocket over any `futures-io` stream, without sessions: for echo
//! endpoints, conformance runs, proxies and custom protocols.

use std::future::poll_fn;
use std::io;

use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use ws_proto::handshake::Request;

use crate::buffers::{poll_read_shared, release_write_buffer};
use crate::upgrade::accept_upgrade;
use ws_proto::{CloseCode, Config, Connection, Event, SendError};

/// One WebSocket connection driven by `ws-proto` over a byte stream.
///
/// ```no_run
/// # async fn echo<S: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Unpin>(stream: S) -> std::io::Result<()> {
/// use ws_driver::WebSocket;
/// use ws_proto::{Config, Event};
///
/// let Some((mut ws, _request)) = WebSocket::accept(stream, Config::default()).await? else {
///     return Ok(()); // refused: the HTTP error was sent
/// };
/// while let Some(event) = ws.recv().await? {
///     // `feed_*` queues; `recv` writes what is queued before it waits for the peer,
///     // so the echoes of one read go out in one write.
///     match event {
///         Event::Text(text) => ws.feed_text(&text)?,
///         Event::Binary(data) => ws.feed_binary(&data)?,
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    /// What a flush writes; empty (no allocation) until the first write.
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Reads the upgrade request from `stream` and accepts it. `Ok(None)` when the
    /// request was refused (its HTTP error already written) or the peer went away.
    ///
    /// There is no deadline here (this crate has no timer): race it against your
    /// runtime's timeout, as every tether server does with its handshake timeout.
    pub async fn accept(mut stream: S, config: Config) -> io::Result<Option<(Self, Request)>> {
        let Some((request, deflate)) = accept_upgrade(&mut stream, &config, &[], |_| None).await? else {
            return Ok(None);
        };
        let mut conn = Connection::server(config).with_deflate(deflate);
        conn.handle_bytes(request.rest());
        Ok(Some((Self::from_connection(stream, conn), request)))
    }

    /// Wraps a stream whose handshake is done (a client's, or one an HTTP server
    /// performed) around `conn`.
    pub fn from_connection(stream: S, conn: Connection) -> Self {
        Self {
            stream,
            conn,
            out: Vec::new(),
        }
    }

    /// The next event; `Ok(None)` once the connection is closed (close handshake
    /// done, protocol failure answered, or end of stream).
    ///
    /// Events already read are handed out without writing; everything queued (pongs,
    /// close answers, what was fed with [`feed_text`](Self::feed_text) and
    /// [`feed_binary`](Self::feed_binary)) is written in one write before this waits
    /// for the peer, and before it returns `None`. So the answers to one read batch
    /// leave together: one system call per batch, not per message.
    pub async fn recv(&mut self) -> io::Result<Option<Event>> {
        loop {
            if let Some(event) = self.conn.poll_event() {
                return Ok(Some(event));
            }
            self.flush().await?;
            if self.conn.is_closed() {
                let _ = self.stream.close().await;
                return Ok(None);
            }
            // The read borrows the thread's buffer for the call only: an idle
            // connection waiting here holds no read buffer (ws-proto copies what a
            // partial frame needs). A read is handled inside the poll that made it,
            // so dropping this future never drops bytes.
            let (stream, conn) = (&mut self.stream, &mut self.conn);
            let read = poll_fn(|cx| {
                poll_read_shared(&mut *stream, cx, |read| {
                    read.map(|bytes| match bytes {
                        Some(bytes) => conn.handle_bytes(bytes),
                        None => conn.handle_eof(),
                    })
                })
            })
            .await;
            match read {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => self.conn.handle_eof(),
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends a text message and writes it out.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.conn.send_text(text).map_err(closed)?;
        self.flush().await
    }

    /// Sends a binary message and writes it out.
    pub async fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.send_binary(data).map_err(closed)?;
        self.flush().await
    }

    /// Queues a text message without writing it: the next [`recv`](Self::recv) that
    /// waits for the peer, [`flush`](Self::flush) or `send_*` writes it, together with
    /// everything else queued. What is queued is not bounded here: feed what answers
    /// what you read, and let `recv` write it.
    pub fn feed_text(&mut self, text: &str) -> io::Result<()> {
        self.conn.send_text(text).map_err(closed)
    }

    /// Queues a binary message without writing it, like [`feed_text`](Self::feed_text).
    pub fn feed_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.send_binary(data).map_err(closed)
    }

    /// Starts the closing handshake; keep calling [`WebSocket::recv`] until `None`.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        self.conn.close(code, reason).map_err(closed)?;
        self.flush().await
    }

    /// The stream, once done with the WebSocket (what is still queued is dropped).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// The state machine, for what this wrapper does not expose.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Writes everything queued, in one write.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.conn.pending_transmit_len() == 0 {
            return Ok(());
        }
        self.out.clear();
        while let Some(chunk) = self.conn.poll_transmit() {
            self.out.extend_from_slice(&chunk);
        }
        self.stream.write_all(&self.out).await?;
        release_write_buffer(&mut self.out);
        self.stream.flush().await
    }
}

fn closed(err: SendError) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, err.to_string())
}
