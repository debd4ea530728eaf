//! `ws_driver::WebSocket` writes the answers to one read in one write: what is fed
//! while events are handed out goes out together when `recv` next waits for the peer
//! (one system call per read batch, not per message); and it keeps no read buffer of
//! its own between reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use futures::FutureExt;
use ws_driver::WebSocket;
use ws_proto::frame::{encode_frame, OpCode, SeededMasks};
use ws_proto::{Config, Connection, Event};

/// A stream that hands out its input at most `chunk` bytes per read (with nothing
/// ready at every other poll when `trickle`), then reports the end, and records what
/// is written to it and in how many writes.
struct Scripted {
    input: Vec<u8>,
    chunk: usize,
    trickle: bool,
    ready: bool,
    written: Vec<u8>,
    writes: usize,
}

impl Scripted {
    /// All of `input` in one read.
    fn whole(input: Vec<u8>) -> Self {
        Self::trickle(input, usize::MAX, false)
    }

    fn trickle(input: Vec<u8>, chunk: usize, trickle: bool) -> Self {
        Self {
            input,
            chunk,
            trickle,
            ready: false,
            written: Vec::new(),
            writes: 0,
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.trickle {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let n = self.input.len().min(buf.len()).min(self.chunk);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.writes += 1;
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn the_echoes_of_one_read_leave_in_one_write() {
    // Eight masked text frames from a client, arriving in one read, then the end.
    let mut input = Vec::new();
    for i in 0..8 {
        encode_frame(
            &mut input,
            true,
            OpCode::Text,
            format!("message {i}").as_bytes(),
            Some([1, 2, 3, 4]),
        );
    }
    let stream = Scripted::whole(input);
    let mut ws = WebSocket::from_connection(stream, Connection::server(Config::default()));
    let mut echoed = 0;
    futures::executor::block_on(async {
        while let Some(event) = ws.recv().await.expect("recv") {
            if let Event::Text(text) = event {
                ws.feed_text(&text).expect("feed");
                echoed += 1;
            }
        }
    });
    assert_eq!(echoed, 8);
    // The eight echoes in one write, then the close frame answering the end of stream
    // (if any) in another: never one write per message.
    let stream = ws.into_inner();
    assert!(stream.writes <= 2, "{} writes for 8 echoes", stream.writes);
    // And they are the eight messages, in order, as a client reads them.
    let mut client = Connection::client(Config::default(), SeededMasks::new(1));
    client.handle_bytes(&stream.written);
    let texts: Vec<String> = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    let want: Vec<String> = (0..8).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want);
}

/// `recv` reads into a buffer it borrows for the call, not one it keeps: a `recv`
/// dropped while waiting (a `select!` that took another branch) loses nothing, and a
/// message larger than one read is put together across reads.
#[test]
fn a_dropped_recv_loses_no_bytes_and_large_messages_span_reads() {
    let large = "x".repeat(100_000);
    let texts = ["first".to_owned(), large.clone(), "last".to_owned()];
    for chunk in [1, 7, 64 * 1024] {
        let mut input = Vec::new();
        for text in &texts {
            encode_frame(
                &mut input,
                true,
                OpCode::Text,
                text.as_bytes(),
                Some([9, 8, 7, 6]),
            );
        }
        let stream = Scripted::trickle(input, chunk, true);
        let mut ws = WebSocket::from_connection(stream, Connection::server(Config::default()));
        let (mut got, mut dropped) = (Vec::new(), 0);
        loop {
            // One poll per future: every `Pending` drops the `recv` future mid-read.
            match ws.recv().now_or_never() {
                None => dropped += 1,
                Some(Ok(Some(Event::Text(text)))) => got.push(text.to_string()),
                Some(Ok(Some(_))) => {}
                Some(Ok(None)) => break,
                Some(Err(err)) => panic!("recv failed: {err}"),
            }
        }
        assert!(dropped > 0, "the stream made recv wait");
        assert_eq!(got.len(), 3, "chunks of {chunk}");
        assert_eq!(got, texts, "chunks of {chunk}");
    }
}
