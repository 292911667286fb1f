//! A connection's writer: a task of its own that drains the connection's outgoing
//! queue in batches (one flush per batch) and sends the close frame.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::outbox::{Closer, Queue};

/// Most frames written before one flush.
const MAX_BATCH: usize = 256;
/// Longest WebSocket frame written: a longer message (a big state's snapshot) goes
/// out as fragments (RFC 6455 section 5.4; every client reassembles them). tungstenite
/// formats each frame into the connection's output buffer, which keeps its largest
/// size for the connection's life: without fragments, every client that once received
/// a 1 MB snapshot would hold 1 MB for as long as it stays.
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;
/// How long a closing connection may take to send what is queued and its close frame.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Drains the outgoing queue: waits for one frame, takes whatever else is queued (up
/// to [`MAX_BATCH`]) and flushes once. When asked to close, sends what is queued and
/// the close frame.
pub(crate) async fn write_loop<S>(
    mut sink: S,
    mut queue: Queue,
    closer: Arc<Closer>,
    write_timeout: Duration,
) where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    // Created once: registering with the token on every frame would cost a lock.
    let cancelled = closer.token().cancelled();
    tokio::pin!(cancelled);
    let closing = loop {
        let first = tokio::select! {
            biased;
            () = &mut cancelled => break true,
            frame = queue.recv() => match frame {
                Some(frame) => frame,
                None => break true,
            },
        };
        // Every write must make progress within the timeout; the batch as a whole may
        // take longer.
        let mut written = feed(&mut sink, first, write_timeout).await;
        for _ in 1..MAX_BATCH {
            let Some(frame) = queue.try_recv().filter(|_| written.is_ok()) else {
                break;
            };
            written = feed(&mut sink, frame, write_timeout).await;
        }
        if written.is_ok() {
            written = timed(write_timeout, sink.flush()).await;
        }
        match written {
            Ok(()) => {}
            Err(WriteFailure::Error(e)) => {
                tracing::debug!("writing to a client failed: {e}");
                break false;
            }
            Err(WriteFailure::TimedOut) => {
                tracing::warn!("closing a connection that accepted nothing for {write_timeout:?}");
                closer.close(CloseCode::Policy, "write timeout");
                crate::metrics::slow_client_closed();
                break true;
            }
        }
    };
    if closing {
        let close = async {
            while let Some(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.send(Message::Close(Some(closer.frame()))).await
        };
        if !matches!(tokio::time::timeout(CLOSE_TIMEOUT, close).await, Ok(Ok(()))) {
            // The client closed first: tungstenite refuses our frames and queued the
            // echo of the client's close frame, which closing the sink sends.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
    }
    closer.close(CloseCode::Error, "");
}

/// Writes one text message: one frame, or fragments of at most [`MAX_FRAGMENT`] bytes
/// (cut anywhere: a fragment need not end on a character, only the whole message is
/// UTF-8). Each write must make progress within `limit`.
async fn feed<S>(sink: &mut S, text: Utf8Bytes, limit: Duration) -> Result<(), WriteFailure>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    if text.len() <= MAX_FRAGMENT {
        return timed(limit, sink.feed(Message::Text(text))).await;
    }
    let bytes = Bytes::from(text);
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + MAX_FRAGMENT).min(bytes.len());
        let opcode = if start == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        let fragment = Frame::message(
            bytes.slice(start..end),
            OpCode::Data(opcode),
            end == bytes.len(),
        );
        timed(limit, sink.feed(Message::Frame(fragment))).await?;
        start = end;
    }
    Ok(())
}

/// Aborts a task when dropped: a writer stuck on a client that does not read must not
/// outlive its connection.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum WriteFailure {
    Error(WsError),
    TimedOut,
}

/// Runs one write. The timer is armed only when the write does not complete at once,
/// so the common case (the socket has room) costs no timer.
async fn timed(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), WsError>>,
) -> Result<(), WriteFailure> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return result.map_err(WriteFailure::Error);
    }
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result.map_err(WriteFailure::Error),
        Err(_) => Err(WriteFailure::TimedOut),
    }
}
