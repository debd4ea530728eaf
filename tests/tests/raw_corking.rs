//! `ws_driver::WebSocket` writes the answers to one read in one write: what is fed
//! while events are handed out goes out together when `recv` next waits for the peer
//! (one system call per read batch, not per message).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use ws_driver::WebSocket;
use ws_proto::frame::{encode_frame, OpCode, SeededMasks};
use ws_proto::{Config, Connection, Event};

/// A stream that hands out its input in one read, then reports the end, and counts
/// the writes made to it.
struct Recorded {
    input: Vec<u8>,
    written: Vec<u8>,
    writes: usize,
}

impl AsyncRead for Recorded {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Recorded {
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
    let stream = Recorded {
        input,
        written: Vec::new(),
        writes: 0,
    };
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
