//! One write per batch, shared by the server's connection tasks and the client's task.
//!
//! A task that must keep reading while its write is in progress cannot borrow its
//! writer across loop iterations, so the writer and its buffer travel into the write
//! future and come back with the result.

use std::io;

use futures_util::future::{Fuse, FutureExt};
use futures_util::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use ws_proto::Connection;

use crate::handler::BoxFuture;

/// What a write hands back: the writer, its buffer (to reuse), the outcome.
pub(crate) type WriteDone<S> = (WriteHalf<S>, Vec<u8>, io::Result<()>);

/// Moves everything `conn` has queued into `out`: one buffer, one write.
pub(crate) fn take_pending(conn: &mut Connection, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(conn.pending_transmit_len());
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
}

/// Writes and flushes `out`, then hands the writer and the buffer back.
pub(crate) fn write_batch<S>(mut writer: WriteHalf<S>, out: Vec<u8>) -> Fuse<BoxFuture<WriteDone<S>>>
where
    S: AsyncWrite + Send + 'static,
{
    let write: BoxFuture<WriteDone<S>> = Box::pin(async move {
        let result = async {
            writer.write_all(&out).await?;
            writer.flush().await
        }
        .await;
        (writer, out, result)
    });
    write.fuse()
}
