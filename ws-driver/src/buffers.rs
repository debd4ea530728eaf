//! Byte buffers, so that an idle connection holds little.
//!
//! - [`StreamTransport`](crate::transport::StreamTransport) (every session connection)
//!   holds no read buffer and no write buffer while it is idle: a read borrows its
//!   thread's read buffer ([`poll_read_shared`], [`SHARED_READ`] bytes) and the framing
//!   copies what it needs; a batch is corked in its thread's write buffer
//!   ([`with_write_buffer`]) and only what a write leaves unfinished (a peer that reads
//!   slowly) is kept by the connection. So uWebSockets does, with one receive buffer
//!   and one cork buffer per loop.
//! - The plain [`WebSocket`](crate::WebSocket) and an upgrade reading its head
//!   ([`read_head`](crate::upgrade::read_head)) borrow the thread's read buffer the
//!   same way, for each read. The plain `WebSocket`'s write buffer is its own (a
//!   write `.await`s), empty until its first write.
//! - A write buffer larger than [`WRITE_KEEP`] (a burst) is given back once written.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::thread::LocalKey;

use futures_util::AsyncRead;

/// What a write buffer keeps between flushes; a larger one is given back.
pub(crate) const WRITE_KEEP: usize = 16 * 1024;

/// What a connection reads at a time.
pub(crate) const SHARED_READ: usize = 16 * 1024;

thread_local! {
    /// The thread's read buffer, [`SHARED_READ`] bytes once first used.
    static READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The thread's write buffer: empty between uses, its capacity kept up to
    /// [`WRITE_KEEP`].
    static WRITE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Lends `f` the thread's buffer behind `key` for the call; a call made while that
/// buffer is lent (from inside another `f`), or while the thread ends, gets a new
/// buffer of its own.
fn lend<T>(key: &'static LocalKey<RefCell<Vec<u8>>>, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let mut f = Some(f);
    let shared = key.try_with(|shared| {
        let mut buf = shared.try_borrow_mut().ok()?;
        f.take().map(|f| f(&mut buf))
    });
    match (shared, f) {
        (Ok(Some(done)), _) => done,
        (_, Some(f)) => f(&mut Vec::new()),
        (_, None) => unreachable!("`f` ran on the shared buffer"),
    }
}

/// Runs `read` (a `poll_read`, and the handling of what it read) with the thread's
/// read buffer, [`SHARED_READ`] bytes. Nothing read may be kept in it past the call.
fn with_read_buffer<T>(read: impl FnOnce(&mut [u8]) -> T) -> T {
    lend(&READ, |buf| {
        if buf.len() < SHARED_READ {
            buf.resize(SHARED_READ, 0);
        }
        read(buf)
    })
}

/// Makes one read of `stream` into the thread's read buffer ([`with_read_buffer`]) and
/// hands what it read to `handle` inside the same poll: `Ok(Some(bytes))`, `Ok(None)`
/// at the end of the stream, or the read's error. The bytes are lent for the call:
/// `handle` feeds them to a parser that copies what it keeps, so a connection holds no
/// read buffer between reads, and a read is handled in the poll that made it (a future
/// dropped after this returns `Pending` has lost nothing).
pub(crate) fn poll_read_shared<S, T>(
    stream: &mut S,
    cx: &mut Context<'_>,
    handle: impl FnOnce(io::Result<Option<&[u8]>>) -> T,
) -> Poll<T>
where
    S: AsyncRead + Unpin + ?Sized,
{
    with_read_buffer(|buf| {
        let read = match ready!(Pin::new(stream).poll_read(cx, buf)) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(&buf[..n])),
            Err(err) => Err(err),
        };
        Poll::Ready(handle(read))
    })
}

/// Runs `write` with the thread's write buffer, empty: `write` fills it and writes
/// what it can, and copies what it must keep. Emptied after the call, and given back
/// when a burst grew it past [`WRITE_KEEP`].
pub(crate) fn with_write_buffer<T>(write: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    lend(&WRITE, |buf| {
        buf.clear();
        let done = write(buf);
        buf.clear();
        release_write_buffer(buf);
        done
    })
}

/// Gives back a write buffer that a burst grew past [`WRITE_KEEP`]; call it once its
/// bytes are written (it is empty or about to be cleared).
pub(crate) fn release_write_buffer(out: &mut Vec<u8>) {
    if out.capacity() > WRITE_KEEP {
        *out = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `chunks` one per poll, then the end (or `err`, once the chunks are read).
    struct Chunks(Vec<&'static [u8]>, Option<io::ErrorKind>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.0.is_empty() {
                return Poll::Ready(self.1.take().map_or(Ok(0), |kind| Err(kind.into())));
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Poll::Ready(Ok(chunk.len()))
        }
    }

    #[test]
    fn a_shared_read_hands_over_each_chunk_then_the_end_or_the_error() {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut stream = Chunks(vec![b"GET /", b" HTTP/1.1"], Some(io::ErrorKind::ConnectionReset));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let read = poll_read_shared(&mut stream, &mut cx, |read| {
                read.map(|bytes| bytes.map(<[u8]>::to_vec))
            });
            seen.push(match read {
                Poll::Ready(Ok(bytes)) => Ok(bytes),
                Poll::Ready(Err(err)) => Err(err.kind()),
                Poll::Pending => panic!("the stream is always ready"),
            });
        }
        assert_eq!(
            seen,
            [
                Ok(Some(b"GET /".to_vec())),
                Ok(Some(b" HTTP/1.1".to_vec())),
                Err(io::ErrorKind::ConnectionReset)
            ]
        );
        let end = poll_read_shared(&mut stream, &mut cx, |read| read.map(|bytes| bytes.is_none()));
        assert!(matches!(end, Poll::Ready(Ok(true))), "then the end of the stream");
    }

    #[test]
    fn reads_borrow_the_threads_buffer_and_a_nested_read_gets_its_own() {
        let outer = with_read_buffer(|buf| {
            buf[0] = 7;
            let inner = with_read_buffer(|inner| (inner.len(), inner[0], inner.as_ptr() == buf.as_ptr()));
            (buf.len(), buf.as_ptr() as usize, inner)
        });
        assert_eq!(outer.0, SHARED_READ);
        assert_eq!(
            outer.2,
            (SHARED_READ, 0, false),
            "the nested read has a fresh buffer"
        );
        let again = with_read_buffer(|buf| (buf.len(), buf.as_ptr() as usize));
        assert_eq!(again, (SHARED_READ, outer.1), "the same buffer is lent again");
        let other = std::thread::spawn(|| with_read_buffer(|buf| buf.len()))
            .join()
            .unwrap();
        assert_eq!(other, SHARED_READ, "each thread has its own");
    }

    #[test]
    fn the_threads_write_buffer_is_lent_empty_kept_small_and_given_back_after_a_burst() {
        let small = with_write_buffer(|buf| {
            assert!(buf.is_empty());
            buf.extend_from_slice(&[1; 100]);
            let nested = with_write_buffer(|inner| {
                assert!(inner.is_empty());
                inner.as_ptr() == buf.as_ptr()
            });
            assert!(!nested, "a nested use gets a buffer of its own");
            buf.as_ptr() as usize
        });
        let (len, capacity, same) =
            with_write_buffer(|buf| (buf.len(), buf.capacity(), buf.as_ptr() as usize == small));
        assert_eq!(len, 0, "emptied after each use");
        assert!((100..=WRITE_KEEP).contains(&capacity));
        assert!(same, "the thread's buffer is kept between uses");
        with_write_buffer(|buf| buf.resize(WRITE_KEEP + 1, 0));
        let capacity = with_write_buffer(|buf| buf.capacity());
        assert_eq!(capacity, 0, "a burst's buffer is given back");
    }

    #[test]
    fn a_write_buffer_is_kept_up_to_the_limit_and_given_back_past_it() {
        let mut out = Vec::with_capacity(WRITE_KEEP);
        release_write_buffer(&mut out);
        assert_eq!(out.capacity(), WRITE_KEEP);
        out.reserve(WRITE_KEEP + 1);
        release_write_buffer(&mut out);
        assert_eq!(out.capacity(), 0);
    }
}
