//! A TCP stream on async-io that reads only when the socket may hold bytes.
//!
//! async-io's own streams try the `read` system call first each time they are polled
//! and ask the reactor only once it fails with `WouldBlock`. A connection task is
//! polled for many reasons besides its socket: the hub handing it messages to write
//! (every member of a room in a broadcast), a write finishing, a timer. Each of those
//! polls cost a `recvfrom` that found nothing: one per broadcast written to a member,
//! and a second per message in an echo (the read after the one that took the
//! message). Here a read that came back short (less than the buffer: the socket is
//! drained, tokio's reasoning too) or empty-handed makes the next one wait for the
//! reactor's word that the socket is readable, which costs no system call while the
//! interest is still registered.

use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_io::Async;
use futures_lite::{AsyncRead, AsyncWrite};

/// A TCP stream on async-io (the reactor smol and async-std share): what
/// [`AsyncNetListener`](crate::AsyncNetListener) accepts and
/// [`AsyncNetConnector`](crate::AsyncNetConnector) connects. Writes are async-net's;
/// reads wait for the reactor after a read that drained the socket.
#[derive(Debug)]
pub struct AsyncNetStream {
    /// Writes and the write side's shutdown.
    stream: async_net::TcpStream,
    /// The same socket: reads, and readiness.
    io: Arc<Async<std::net::TcpStream>>,
    /// Whether the socket may hold bytes a read has not taken: true at first and
    /// after a read that filled the buffer, false after a short or refused one.
    may_hold_more: bool,
}

impl AsyncNetStream {
    /// Wraps `stream` (connected, or accepted).
    pub fn new(stream: async_net::TcpStream) -> Self {
        let io = Arc::<Async<std::net::TcpStream>>::from(stream.clone());
        Self {
            stream,
            io,
            may_hold_more: true,
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sets `TCP_NODELAY` (tether sets it on every socket it accepts or connects).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.stream.set_nodelay(nodelay)
    }
}

impl AsyncRead for AsyncNetStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if !self.may_hold_more {
                // Ready once the reactor has seen the socket readable since the last
                // `Pending`; registers this task otherwise.
                ready!(self.io.poll_readable(cx))?;
            }
            match self.io.get_ref().read(buf) {
                Ok(n) => {
                    self.may_hold_more = n > 0 && n == buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.may_hold_more = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for AsyncNetStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: ours (connected) and the accepted end, plain async-net.
    async fn pair() -> (AsyncNetStream, async_net::TcpStream) {
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) =
            futures_lite::future::zip(async_net::TcpStream::connect(addr), listener.accept()).await;
        (AsyncNetStream::new(ours.unwrap()), theirs.unwrap().0)
    }

    #[test]
    fn reads_what_arrives_after_a_drained_read_and_then_the_end() {
        smol::block_on(async {
            let (mut ours, mut theirs) = pair().await;
            let mut buf = [0u8; 64];
            theirs.write_all(b"first").await.unwrap();
            let n = ours.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"first");
            assert!(!ours.may_hold_more, "a short read drains the socket");
            // The next read waits for the reactor, and gets what comes later.
            let later = smol::spawn(async move {
                smol::Timer::after(std::time::Duration::from_millis(20)).await;
                theirs.write_all(b"second").await.unwrap();
                theirs.close().await.unwrap();
            });
            let n = ours.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"second");
            assert_eq!(ours.read(&mut buf).await.unwrap(), 0, "then the end");
            later.await;
        });
    }

    #[test]
    fn a_full_read_goes_back_to_the_socket_for_the_rest() {
        smol::block_on(async {
            let (mut ours, mut theirs) = pair().await;
            let sent: Vec<u8> = (0..100u8).collect();
            theirs.write_all(&sent).await.unwrap();
            theirs.close().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                let n = ours.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, sent);
        });
    }

    #[test]
    fn writes_and_closes_through_async_net() {
        smol::block_on(async {
            let (mut ours, mut theirs) = pair().await;
            ours.write_all(b"hello").await.unwrap();
            ours.close().await.unwrap();
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
        });
    }
}
