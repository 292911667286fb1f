//! Each connection's bounded outgoing queue, and how a connection is told to close.
//!
//! Policy for clients that do not read: every frame for a connection goes through its
//! [`Outbox`], a queue of at most [`Builder::outgoing_queue`](crate::Builder::outgoing_queue)
//! frames and [`Builder::outgoing_queue_bytes`](crate::Builder::outgoing_queue_bytes)
//! bytes (every frame counts, whatever its size), drained by the connection's own
//! writer. Broadcasts never wait on it: when the queue is full the frame is not queued
//! and the connection is closed with code 1008 and the reason [`OVERFLOW_REASON`].
//! Memory per connection is therefore bounded, and a stuck client never slows the
//! state or any other client. A client of this project then reconnects, resyncs the
//! whole state and resends what was not acknowledged (see `docs/protocol.md`).
//!
//! Policy for clients that send fast: a sender cannot run ahead of its own echoes.
//! Every update is queued for its sender too, so while the sender's own queue is more
//! than half full ([`Outbox::wait_for_room`]) the server reads nothing more from it
//! (TCP pushes back on the sender) until its writer has drained it below half. Readers
//! that read as fast as the sender therefore see their queues stay below half as well,
//! however large the sender's burst; and the connection's read loop yields to the
//! writers regularly (tokio's cooperative budget), so they get to drain.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, mpsc};
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

/// How full a queue is, shared by its two sides.
#[derive(Debug)]
struct Level {
    bytes: AtomicUsize,
    frames: AtomicUsize,
    max_bytes: usize,
    max_frames: usize,
    /// Set while the connection's reader waits for the queue to drain below half.
    waiting: AtomicBool,
    drained: Notify,
}

impl Level {
    // SeqCst on `waiting` and the levels: the reader stores `waiting` then loads the
    // levels, the writer stores the levels then loads `waiting`; weaker orderings would
    // let both miss each other and the reader sleep on a drained queue.
    fn over_half(&self) -> bool {
        self.bytes.load(Ordering::SeqCst) > self.max_bytes / 2
            || self.frames.load(Ordering::SeqCst) > self.max_frames / 2
    }

    fn taken(&self, frame: &Utf8Bytes) {
        self.bytes.fetch_sub(size_of(frame), Ordering::SeqCst);
        self.frames.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && !self.over_half() {
            self.waiting.store(false, Ordering::SeqCst);
            self.drained.notify_waiters();
        }
    }
}

/// The sending side of a connection's outgoing queue. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Utf8Bytes>,
    level: Arc<Level>,
    closer: Arc<Closer>,
}

/// The receiving side, drained by the connection's writer.
#[derive(Debug)]
pub(crate) struct Queue {
    rx: mpsc::Receiver<Utf8Bytes>,
    level: Arc<Level>,
}

fn size_of(frame: &Utf8Bytes) -> usize {
    frame.len()
}

impl Outbox {
    /// A queue of at most `frames` frames and `max_bytes` bytes of frames.
    pub(crate) fn new(frames: usize, max_bytes: usize, closer: Arc<Closer>) -> (Self, Queue) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let level = Arc::new(Level {
            bytes: AtomicUsize::new(0),
            frames: AtomicUsize::new(0),
            max_bytes,
            max_frames: frames.max(1),
            waiting: AtomicBool::new(false),
            drained: Notify::new(),
        });
        let outbox = Outbox {
            tx,
            level: Arc::clone(&level),
            closer,
        };
        (outbox, Queue { rx, level })
    }

    /// Whether the queue is more than half full (frames or bytes).
    pub(crate) fn over_half(&self) -> bool {
        self.level.over_half()
    }

    /// Waits while the queue is more than half full (frames or bytes), until the writer
    /// drained it below half or the connection closes: the connection's reader calls
    /// this before reading the next message (see the module documentation).
    pub(crate) async fn wait_for_room(&self) {
        while self.level.over_half() && !self.closer.closing.load(Ordering::Relaxed) {
            let drained = self.level.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            self.level.waiting.store(true, Ordering::SeqCst);
            if !self.level.over_half() {
                break;
            }
            tokio::select! {
                () = drained => {}
                () = self.closer.token().cancelled() => break,
            }
        }
    }

    /// Queues a frame without waiting; on overflow (frames or bytes) the connection is
    /// closed (see the module documentation). Once a connection is closing, nothing
    /// more is queued for it, so it never sees a gap in what it receives.
    pub(crate) fn push(&self, frame: Utf8Bytes) {
        if self.closer.closing.load(Ordering::Relaxed) {
            return;
        }
        let size = size_of(&frame);
        let queued = self.level.bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > self.level.max_bytes {
            self.level.bytes.fetch_sub(size, Ordering::Relaxed);
            self.overflow();
            return;
        }
        self.level.frames.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            self.level.bytes.fetch_sub(size, Ordering::Relaxed);
            self.level.frames.fetch_sub(1, Ordering::Relaxed);
            self.overflow();
        }
    }

    /// The most bytes this queue holds.
    pub(crate) fn max_bytes(&self) -> usize {
        self.level.max_bytes
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Closes the connection (after what is queued) with this code and reason.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.closer.close(code, reason);
    }

    /// Closes the connection for overflowing its queue.
    pub(crate) fn overflow(&self) {
        tracing::warn!("closing a connection whose outgoing queue is full");
        crate::metrics::overflowed();
        self.closer.close(CloseCode::Policy, OVERFLOW_REASON);
    }
}

impl Queue {
    /// The next frame, waiting for one.
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.recv().await?;
        self.level.taken(&frame);
        Some(frame)
    }

    /// The next frame if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.level.taken(&frame);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(frames: usize, bytes: usize) -> (Outbox, Queue, Arc<Closer>) {
        let closer = Arc::new(Closer::child_of(&CancellationToken::new()));
        let (outbox, queue) = Outbox::new(frames, bytes, Arc::clone(&closer));
        (outbox, queue, closer)
    }

    #[test]
    fn a_frame_larger_than_the_byte_bound_overflows_even_an_empty_queue() {
        let (outbox, mut queue, closer) = outbox(10, 100);
        outbox.push("x".repeat(101).into());
        assert!(closer.token().is_cancelled());
        assert_eq!(closer.frame().reason.as_str(), OVERFLOW_REASON);
        assert!(queue.try_recv().is_none(), "nothing queued");
    }

    #[test]
    fn the_bounds_hold_for_frames_and_bytes() {
        let (outbox, mut queue, closer) = outbox(3, 1_000);
        for _ in 0..3 {
            outbox.push("x".repeat(10).into());
        }
        assert!(!closer.token().is_cancelled());
        outbox.push("x".into());
        assert!(closer.token().is_cancelled(), "a fourth frame overflows");
        assert_eq!(std::iter::from_fn(|| queue.try_recv()).count(), 3);
    }

    #[tokio::test]
    async fn a_reader_waits_while_its_queue_is_over_half_until_the_writer_drains_it() {
        let (outbox, mut queue, _closer) = outbox(10, 1_000);
        for _ in 0..6 {
            outbox.push("x".into());
        }
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "6 of 10 frames: over half");
        queue.try_recv();
        queue.try_recv();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken once below half")
            .expect("no panic");
    }
}
