//! Each connection's bounded outgoing queue, and how a connection is told to close.
//!
//! Policy for clients that do not read: every frame for a connection goes through its
//! [`Outbox`], a queue of at most [`Builder::outgoing_queue`](crate::Builder::outgoing_queue)
//! frames and [`Builder::outgoing_queue_bytes`](crate::Builder::outgoing_queue_bytes)
//! bytes, drained by the connection's own writer. Broadcasts never wait on it: when
//! the queue is full the frame is not queued and the connection is closed with code
//! 1008 and the reason [`OVERFLOW_REASON`]. Memory per connection is therefore bounded,
//! and a stuck client never slows the state, the sender or any other client. A client
//! of this project then reconnects, resyncs the whole state and resends what was not
//! acknowledged (see `docs/protocol.md`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

/// Close reason sent to a connection whose outgoing queue overflowed.
pub const OVERFLOW_REASON: &str = "outgoing queue overflow: the client does not read fast enough";

/// Tells a connection to close, with the close frame it should send.
#[derive(Debug)]
pub(crate) struct Closer {
    token: CancellationToken,
    frame: Mutex<Option<CloseFrame>>,
    /// Set by [`Closer::close`]; read on every queued frame, so an atomic rather than
    /// the token (whose `is_cancelled` takes a lock).
    closing: AtomicBool,
}

impl Closer {
    /// A closer that also fires when `parent` (the server's shutdown) is cancelled.
    pub(crate) fn child_of(parent: &CancellationToken) -> Self {
        Closer {
            token: parent.child_token(),
            frame: Mutex::new(None),
            closing: AtomicBool::new(false),
        }
    }

    /// Asks the connection to close; the first reason given wins.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closing.store(true, Ordering::Relaxed);
        let mut frame = self.frame.lock().unwrap_or_else(PoisonError::into_inner);
        if frame.is_none() && !self.token.is_cancelled() {
            *frame = Some(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            });
        }
        drop(frame);
        self.token.cancel();
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The close frame to send: the reason given, or "going away" on server shutdown.
    pub(crate) fn frame(&self) -> CloseFrame {
        self.frame
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(CloseFrame {
                code: CloseCode::Away,
                reason: "server shutting down".into(),
            })
    }
}

/// The sending side of a connection's outgoing queue. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    closer: Arc<Closer>,
}

/// The receiving side, drained by the connection's writer.
#[derive(Debug)]
pub(crate) struct Queue {
    rx: mpsc::Receiver<Utf8Bytes>,
    queued_bytes: Arc<AtomicUsize>,
}

fn size_of(frame: &Utf8Bytes) -> usize {
    frame.len()
}

impl Outbox {
    /// A queue of at most `frames` frames and `max_bytes` bytes of frames.
    pub(crate) fn new(frames: usize, max_bytes: usize, closer: Arc<Closer>) -> (Self, Queue) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            tx,
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes,
            closer,
        };
        (outbox, Queue { rx, queued_bytes })
    }

    /// Queues a frame without waiting; on overflow (frames or bytes) the connection is
    /// closed (see the module documentation). Once a connection is closing, nothing
    /// more is queued for it, so it never sees a gap in what it receives.
    pub(crate) fn push(&self, frame: Utf8Bytes) {
        if self.closer.closing.load(Ordering::Relaxed) {
            return;
        }
        let size = size_of(&frame);
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > self.max_bytes && queued > 0 {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.overflow();
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.overflow();
        }
    }

    fn overflow(&self) {
        tracing::warn!("closing a connection whose outgoing queue is full");
        self.closer.close(CloseCode::Policy, OVERFLOW_REASON);
    }
}

impl Queue {
    /// The next frame, waiting for one.
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.recv().await?;
        self.queued_bytes
            .fetch_sub(size_of(&frame), Ordering::Relaxed);
        Some(frame)
    }

    /// The next frame if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.queued_bytes
            .fetch_sub(size_of(&frame), Ordering::Relaxed);
        Some(frame)
    }
}
