//! Each connection's bounded outgoing queue, how it is written, and how a connection
//! is told to close.
//!
//! Policy for clients that do not read: every frame for a connection goes through its
//! [`Outbox`], a queue of at most [`Builder::outgoing_queue`](crate::Builder::outgoing_queue)
//! frames and [`Builder::outgoing_queue_bytes`](crate::Builder::outgoing_queue_bytes)
//! bytes (every frame counts, whatever its size). Broadcasts never wait on it: when
//! the queue is full the frame is not queued and the connection is closed with code
//! 1008 and the reason [`OVERFLOW_REASON`]. Memory per connection is therefore
//! bounded, and a stuck client never slows the state or any other client. A client of
//! this project then reconnects, resyncs the whole state and resends what was not
//! acknowledged (see `docs/protocol.md`).
//!
//! Policy for clients that send fast: a sender cannot run ahead of its own echoes.
//! Every update is queued for its sender too, so while the sender's own queue is more
//! than half full ([`Outbox::wait_for_room`]) the server reads nothing more from it
//! (TCP pushes back on the sender) until its queue drained below half. Readers that
//! read as fast as the sender therefore see their queues stay below half as well,
//! however large the sender's burst.
//!
//! How frames are written (µWebSockets' "corking"): a task that queues frames inside
//! [`corked`] (a connection's reader, which runs the updates it reads; the tasks that
//! apply what storage or Redis confirmed) notes which connections it gave frames to,
//! and writes them itself each time it is about to wait (or is done): one write per
//! connection for everything it queued meanwhile, straight to the socket, without
//! waking any other task. Only a connection whose socket cannot take it all gets a
//! writer task, until its queue is empty; so an idle connection has no writer and no
//! buffer. Frames queued outside [`corked`] get a writer task at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::wire::{Frame, WriteHalf};

/// Close reason sent to a connection whose outgoing queue overflowed.
pub const OVERFLOW_REASON: &str = "outgoing queue overflow: the client does not read fast enough";

/// Most frames handed to the kernel in one write.
const MAX_SLICES: usize = 64;

/// Sends to a client that reset its connection fail with `EPIPE` instead of raising
/// SIGPIPE (which kills a process that does not ignore it, as Rust's `main` does).
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    target_os = "illumos",
    target_os = "solaris"
))]
const NO_SIGNAL: i32 = libc::MSG_NOSIGNAL;
/// Elsewhere sockets say so themselves (`SO_NOSIGPIPE`) or there is no SIGPIPE.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    target_os = "illumos",
    target_os = "solaris"
)))]
const NO_SIGNAL: i32 = 0;

/// Tells a connection to close, with the close frame it should send.
#[derive(Debug)]
pub(crate) struct Closer {
    token: CancellationToken,
    frame: Mutex<Option<CloseFrame>>,
    /// Set by [`Closer::close`].
    closing: AtomicBool,
    /// Set when writing to the connection failed: it is lost, nothing more can be sent.
    lost: AtomicBool,
}

impl Closer {
    /// A closer that also fires when `parent` (the server's shutdown) is cancelled.
    pub(crate) fn child_of(parent: &CancellationToken) -> Self {
        Closer {
            token: parent.child_token(),
            frame: Mutex::new(None),
            closing: AtomicBool::new(false),
            lost: AtomicBool::new(false),
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

    /// Writing failed: the connection is lost.
    fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.close(CloseCode::Error, "");
    }

    /// Whether the connection was asked to close.
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Whether writing to the connection failed.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
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

/// The queue and the socket it is written to.
struct Queue {
    /// Nothing more is queued: it overflowed, or it is closing.
    refusing: bool,
    /// The first frame queued, kept inline: a connection that gets one frame at a time
    /// (the common case) touches no other memory.
    first: Option<Frame>,
    /// The frames queued after it.
    rest: VecDeque<Frame>,
    /// Bytes of the first frame already written.
    offset: usize,
    /// Bytes of the frames queued.
    bytes: usize,
    /// Written since the connection opened: a writer sees whether it made progress.
    written: u64,
    /// In a cork's list, or a writer task writes it: queueing more needs no scheduling.
    scheduled: bool,
    /// The writer task, while one runs.
    writer: Option<AbortHandle>,
    /// `None` once the connection is finished or writing to it failed.
    sink: Option<WriteHalf>,
    /// The task waiting for the queue to drain ([`Outbox::wait_for_room`] or
    /// [`Outbox::emptied`], both the connection's own, never both at once).
    waiter: Option<Waker>,
}

impl Queue {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push_back(&mut self, frame: Frame) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop_front(&mut self) {
        self.first = self.rest.pop_front();
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
        self.bytes = 0;
        self.offset = 0;
    }

    /// Writes what is queued: `Ready(Ok)` once it is all written and flushed, `Pending`
    /// when the socket takes no more (`cx` is woken when it can).
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(mut sink) = self.sink.take() else {
            return Poll::Ready(Ok(()));
        };
        let result = self.write_to(&mut sink, cx);
        self.sink = Some(sink);
        result
    }

    /// Sends what is queued to a TCP socket with plain system calls (`send`, `sendmsg`
    /// with `MSG_NOSIGNAL`: a client that reset its connection is an error, never a
    /// SIGPIPE); `WouldBlock` when the socket takes no more. Called without tokio
    /// (its readiness flags are a hint, which [`Queue::write_to`] brings up to date).
    fn send_tcp(&mut self, tcp: &tokio::net::TcpStream) -> io::Result<()> {
        let socket = socket2::SockRef::from(tcp);
        while let Some(first) = &self.first {
            let first = &first.bytes()[self.offset..];
            let result = if self.rest.is_empty() {
                socket.send_with_flags(first, NO_SIGNAL)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                slices[0] = IoSlice::new(first);
                let mut count = 1;
                for (slice, frame) in slices[1..].iter_mut().zip(&self.rest) {
                    *slice = IoSlice::new(frame.bytes());
                    count += 1;
                }
                socket.send_vectored_with_flags(&slices[..count], NO_SIGNAL)
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_to(&mut self, sink: &mut WriteHalf, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let WriteHalf::Tcp(tcp) = sink {
            let tcp: &tokio::net::TcpStream = tcp.as_ref();
            loop {
                std::task::ready!(tcp.poll_write_ready(cx))?;
                // A full socket clears tokio's readiness: the next poll waits for room.
                match tcp.try_io(tokio::io::Interest::WRITABLE, || self.send_tcp(tcp)) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        while let Some(first) = &self.first {
            let first = &first.bytes()[self.offset..];
            let poll = if self.rest.is_empty() {
                Pin::new(&mut *sink).poll_write(cx, first)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                slices[0] = IoSlice::new(first);
                let mut count = 1;
                for (slice, frame) in slices[1..].iter_mut().zip(&self.rest) {
                    *slice = IoSlice::new(frame.bytes());
                    count += 1;
                }
                Pin::new(&mut *sink).poll_write_vectored(cx, &slices[..count])
            };
            let written = match poll {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.advance(written);
        }
        Pin::new(sink).poll_flush(cx)
    }

    /// `written` bytes left: drops the frames written whole.
    fn advance(&mut self, mut written: usize) {
        self.written += written as u64;
        while written > 0 {
            let Some(front) = &self.first else {
                break;
            };
            let left = front.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.bytes -= front.len();
            self.offset = 0;
            self.pop_front();
        }
    }
}

/// A connection's outgoing queue, shared by everything that queues frames for it.
struct Shared {
    queue: Mutex<Queue>,
    max_bytes: usize,
    max_frames: usize,
    closer: Arc<Closer>,
    write_timeout: Duration,
    runtime: tokio::runtime::Handle,
}

/// The sending side of a connection's outgoing queue. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Shared>);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// The connections a corked task queued frames for and has not written yet.
    static CORK: RefCell<Vec<Arc<Shared>>>;
}

/// Runs `task` corked: the frames it queues are written when it is about to wait
/// or done, one write per connection (see the module documentation). Before it
/// waits, it first lets the other tasks that are ready run once: what they queue for
/// the same connections goes out in the same write (32 clients that all send, each
/// to all, cost one write per receiver for many updates, not one per update).
pub(crate) fn corked<F: Future>(task: F) -> impl Future<Output = F::Output> {
    CORK.scope(
        RefCell::new(Vec::new()),
        Uncorking {
            task,
            deferred: false,
        },
    )
}

pin_project_lite::pin_project! {
    /// A task that writes what it queued each time it is about to wait.
    struct Uncorking<F> {
        #[pin]
        task: F,
        // It let the others run once since it queued frames.
        deferred: bool,
    }

    impl<F> PinnedDrop for Uncorking<F> {
        // Dropped while it waits (tokio drops it inside the task-local's scope): what
        // it queued is written all the same, not left scheduled with nobody to write it.
        fn drop(_this: Pin<&mut Self>) {
            uncork();
        }
    }
}

impl<F: Future> Future for Uncorking<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let poll = this.task.poll(cx);
        if poll.is_pending() && !*this.deferred && !is_uncorked() {
            // Woken at once, it is polled again after the tasks already ready (tokio
            // runs a task that woke itself after them).
            *this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        *this.deferred = false;
        uncork();
        poll
    }
}

/// Whether the current task has nothing to write.
fn is_uncorked() -> bool {
    CORK.try_with(|cork| cork.borrow().is_empty())
        .unwrap_or(true)
}

std::thread_local! {
    /// The same for a thread that is no task (storage's committer), inside
    /// [`corked_sync`].
    static THREAD_CORK: RefCell<Option<Vec<Arc<Shared>>>> = const { RefCell::new(None) };
}

/// Runs `f` corked on a thread that is no task: the frames it queues are written
/// when it returns (or panics), one write per connection.
pub(crate) fn corked_sync<T>(f: impl FnOnce() -> T) -> T {
    struct Uncork;
    impl Drop for Uncork {
        fn drop(&mut self) {
            let corked = THREAD_CORK.with(|cork| cork.borrow_mut().take());
            for shared in corked.into_iter().flatten() {
                shared.write_now();
            }
        }
    }
    if THREAD_CORK.with(|cork| cork.borrow().is_some()) {
        return f();
    }
    THREAD_CORK.with(|cork| *cork.borrow_mut() = Some(Vec::new()));
    let _uncork = Uncork;
    f()
}

/// Writes every connection the current task queued frames for.
fn uncork() {
    let Ok(mut corked) = CORK.try_with(|cork| std::mem::take(&mut *cork.borrow_mut())) else {
        return;
    };
    if corked.is_empty() {
        return;
    }
    for shared in corked.drain(..) {
        shared.write_now();
    }
    // Kept for the next time, unless a broadcast to many made it big.
    if corked.capacity() <= 1024 {
        let _ = CORK.try_with(|cork| {
            let mut cork = cork.borrow_mut();
            if cork.is_empty() {
                *cork = corked;
            }
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn over_half(&self, queue: &Queue) -> bool {
        queue.bytes > self.max_bytes / 2 || queue.len() > self.max_frames / 2
    }

    /// Everything is written (and flushed): wakes who waits for it.
    fn done(queue: &mut Queue) {
        queue.scheduled = false;
        if let Some(waiter) = queue.waiter.take() {
            waiter.wake();
        }
    }

    /// Wakes who waits for the queue to drain, when it did.
    fn progressed(&self, queue: &mut Queue) {
        if queue.waiter.is_some()
            && !self.over_half(queue)
            && let Some(waiter) = queue.waiter.take()
        {
            waiter.wake();
        }
    }

    /// Queues a frame (unless `control`, not once the queue refuses frames); `false`
    /// when it does not fit, and then it refuses all others.
    fn enqueue(self: &Arc<Self>, frame: Frame, control: bool) -> bool {
        let mut queue = self.lock();
        if queue.sink.is_none() || (queue.refusing && !control) {
            // Finished, lost or closing: nothing more is sent (a closing connection
            // never sees a gap in what it receives).
            return true;
        }
        let size = frame.len();
        // Once it refuses frames, its reader has stopped: tungstenite writes only its
        // close frame, which goes out even when the queue is full (it overflowed).
        let bounded = !(control && queue.refusing);
        if bounded && (queue.bytes + size > self.max_bytes || queue.len() >= self.max_frames) {
            queue.refusing = true;
            return false;
        }
        queue.bytes += size;
        queue.push_back(frame);
        if queue.scheduled {
            return true;
        }
        queue.scheduled = true;
        drop(queue);
        let in_task = CORK.try_with(|cork| cork.borrow_mut().push(Arc::clone(self)));
        let corked = in_task.is_ok()
            || THREAD_CORK.with(|cork| {
                cork.borrow_mut()
                    .as_mut()
                    .map(|corked| corked.push(Arc::clone(self)))
                    .is_some()
            });
        if !corked {
            self.spawn_writer(&mut self.lock());
        }
        true
    }

    /// Writes what is queued now, without waiting; what the socket does not take is
    /// left to a writer task.
    fn write_now(self: &Arc<Self>) {
        let mut queue = self.lock();
        if queue.writer.is_some() {
            return;
        }
        let result = match queue.sink.take() {
            Some(WriteHalf::Tcp(tcp)) => {
                let result = match queue.send_tcp(tcp.as_ref()) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                };
                queue.sink = Some(WriteHalf::Tcp(tcp));
                result
            }
            sink => {
                queue.sink = sink;
                // Outside tokio's cooperative budget: a task that queued frames for a
                // thousand connections has long used up its budget, and would be told
                // to wait (with a waker nobody wakes) after the first 128 writes.
                let write =
                    tokio::task::coop::unconstrained(std::future::poll_fn(|cx| queue.write(cx)));
                std::pin::pin!(write).poll(&mut Context::from_waker(Waker::noop()))
            }
        };
        self.progressed(&mut queue);
        match result {
            Poll::Ready(Ok(())) => Shared::done(&mut queue),
            Poll::Pending => self.spawn_writer(&mut queue),
            Poll::Ready(Err(e)) => self.failed(&mut queue, &e),
        }
    }

    fn spawn_writer(self: &Arc<Self>, queue: &mut Queue) {
        if queue.writer.is_none() && queue.sink.is_some() {
            let task = self.runtime.spawn(write_behind(Arc::clone(self)));
            queue.writer = Some(task.abort_handle());
        }
    }

    /// Writing failed: nothing more is written, and the connection is closed as lost.
    fn failed(&self, queue: &mut Queue, error: &io::Error) {
        tracing::debug!("writing to a client failed: {error}");
        queue.sink = None;
        queue.clear();
        queue.scheduled = false;
        if let Some(waiter) = queue.waiter.take() {
            waiter.wake();
        }
        self.closer.lose();
    }
}

/// What one wait of a writer task came to.
enum Progress {
    /// Everything is written: the writer is done.
    Done,
    /// Some bytes were written, not all.
    Some,
}

/// A writer task: writes the queue until it is empty, each write making progress
/// within the write limit (a client that takes nothing for that long is closed).
async fn write_behind(shared: Arc<Shared>) {
    loop {
        let since = shared.lock().written;
        let wait = std::future::poll_fn(|cx| {
            let mut queue = shared.lock();
            let result = queue.write(cx);
            shared.progressed(&mut queue);
            match result {
                Poll::Ready(Ok(())) => {
                    queue.writer = None;
                    Shared::done(&mut queue);
                    Poll::Ready(Progress::Done)
                }
                Poll::Pending if queue.written == since => Poll::Pending,
                Poll::Pending => Poll::Ready(Progress::Some),
                Poll::Ready(Err(e)) => {
                    shared.failed(&mut queue, &e);
                    queue.writer = None;
                    Poll::Ready(Progress::Done)
                }
            }
        });
        match tokio::time::timeout(shared.write_timeout, wait).await {
            Ok(Progress::Done) => return,
            Ok(Progress::Some) => {}
            Err(_) => {
                let limit = shared.write_timeout;
                tracing::warn!("closing a connection that accepted nothing for {limit:?}");
                crate::metrics::slow_client_closed();
                let mut queue = shared.lock();
                // What is queued stays: the close frame goes behind it, with its own
                // (shorter) time limit.
                queue.scheduled = false;
                queue.writer = None;
                drop(queue);
                shared.closer.close(CloseCode::Policy, "write timeout");
                return;
            }
        }
    }
}

impl Outbox {
    /// A queue of at most `frames` frames and `max_bytes` bytes of frames, written to
    /// `sink`, each write making progress within `write_timeout`.
    pub(crate) fn new(
        frames: usize,
        max_bytes: usize,
        closer: Arc<Closer>,
        sink: WriteHalf,
        write_timeout: Duration,
    ) -> Self {
        Outbox(Arc::new(Shared {
            queue: Mutex::new(Queue {
                refusing: false,
                first: None,
                rest: VecDeque::new(),
                offset: 0,
                bytes: 0,
                written: 0,
                scheduled: false,
                writer: None,
                sink: Some(sink),
                waiter: None,
            }),
            max_bytes,
            max_frames: frames.max(1),
            closer,
            write_timeout,
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// Whether the queue is more than half full (frames or bytes).
    pub(crate) fn over_half(&self) -> bool {
        self.0.over_half(&self.0.lock())
    }

    /// Waits while the queue is more than half full (frames or bytes), until it
    /// drained below half or the connection closes: the connection's reader calls
    /// this before reading the next message (see the module documentation).
    pub(crate) async fn wait_for_room(&self) {
        self.wait_until(|shared, queue| !shared.over_half(queue))
            .await;
    }

    /// Waits until everything queued is written and flushed (TLS keeps records until
    /// the socket takes them), or cannot be.
    pub(crate) async fn emptied(&self) {
        self.wait_until(|_, queue| {
            (queue.is_empty() && !queue.scheduled && queue.writer.is_none()) || queue.sink.is_none()
        })
        .await;
    }

    async fn wait_until(&self, done: impl Fn(&Shared, &Queue) -> bool) {
        let shared = &self.0;
        std::future::poll_fn(|cx| {
            let mut queue = shared.lock();
            if done(shared, &queue) || shared.closer.is_lost() {
                return Poll::Ready(());
            }
            queue.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Queues a frame without waiting; on overflow (frames or bytes) the connection is
    /// closed (see the module documentation). Once its queue overflowed, or its
    /// connection started closing, nothing more is queued for it, so it never sees a
    /// gap in what it receives.
    pub(crate) fn push(&self, frame: Frame) {
        if !self.0.enqueue(frame, false) {
            self.overflow();
        }
    }

    /// Queues a frame tungstenite wrote (a pong, the close frame or its echo), even
    /// while closing.
    pub(crate) fn push_control(&self, frame: Frame) {
        if !self.0.enqueue(frame, true) {
            self.overflow();
        }
    }

    /// The connection is closing: nothing more is queued but its close frame.
    pub(crate) fn refuse(&self) {
        self.0.lock().refusing = true;
    }

    /// The most bytes this queue holds.
    pub(crate) fn max_bytes(&self) -> usize {
        self.0.max_bytes
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Closes the connection (after what is queued) with this code and reason.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        self.0.closer.close(code, reason);
    }

    /// Closes the connection for overflowing its queue.
    pub(crate) fn overflow(&self) {
        self.0.lock().refusing = true;
        if !self.0.closer.is_closing() {
            tracing::warn!("closing a connection whose outgoing queue is full");
            crate::metrics::overflowed();
        }
        self.0.closer.close(CloseCode::Policy, OVERFLOW_REASON);
    }

    /// The connection is over: its writer stops, what is queued is dropped, and its
    /// writing half is closed.
    pub(crate) fn finish(&self) {
        let mut queue = self.0.lock();
        if let Some(writer) = queue.writer.take() {
            writer.abort();
        }
        queue.sink = None;
        queue.clear();
        if let Some(waiter) = queue.waiter.take() {
            waiter.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An outbox writing to a real socket, and the other end of it.
    async fn outbox(frames: usize, bytes: usize) -> (Outbox, TcpStream, Arc<Closer>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_read, write) = crate::wire::split_tcp(server);
        let closer = Arc::new(Closer::child_of(&CancellationToken::new()));
        let outbox = Outbox::new(
            frames,
            bytes,
            Arc::clone(&closer),
            write,
            Duration::from_secs(5),
        );
        (outbox, client, closer)
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_byte_bound_overflows_even_an_empty_queue() {
        let (outbox, _client, closer) = outbox(10, 100).await;
        outbox.push(Frame::text(&"x".repeat(101)));
        assert!(closer.token().is_cancelled());
        assert_eq!(closer.frame().reason.as_str(), OVERFLOW_REASON);
        assert!(outbox.0.lock().is_empty(), "nothing queued");
    }

    #[tokio::test]
    async fn the_bounds_hold_for_frames_and_bytes() {
        let (outbox, _client, closer) = outbox(3, 1_000).await;
        // Queued inside a cork and not written before it waits: they stay queued.
        corked(async {
            for _ in 0..3 {
                outbox.push(Frame::text("0123456789"));
            }
            assert!(!closer.token().is_cancelled());
            outbox.push(Frame::text("x"));
            assert!(closer.token().is_cancelled(), "a fourth frame overflows");
            assert_eq!(outbox.0.lock().len(), 3);
        })
        .await;
    }

    #[tokio::test]
    async fn a_corked_task_writes_what_it_queued_in_one_write_when_it_waits() {
        let (outbox, mut client, _closer) = outbox(100, 100_000).await;
        corked(async {
            outbox.push(Frame::text("a"));
            outbox.push(Frame::text("b"));
            assert_eq!(outbox.0.lock().len(), 2, "not written yet");
            // The first time it waits, it lets the other ready tasks run first.
            tokio::task::yield_now().await;
            assert_eq!(outbox.0.lock().len(), 2, "not written yet");
            tokio::task::yield_now().await;
            assert!(outbox.0.lock().is_empty(), "written when it waited again");
            assert!(outbox.0.lock().writer.is_none(), "without a writer task");
        })
        .await;
        let mut received = [0; 6];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(received, [0x81, 1, b'a', 0x81, 1, b'b']);
    }

    /// tokio's cooperative budget (128 operations per task poll) does not stop a task
    /// that queued frames for many connections from writing them all itself.
    #[tokio::test]
    async fn a_corked_task_writes_to_hundreds_of_connections_itself() {
        let mut outboxes = Vec::new();
        for _ in 0..300 {
            outboxes.push(outbox(100, 100_000).await);
        }
        let frame = Frame::text("hello");
        corked(async {
            // Use up the task's budget first, as a busy connection's reader has.
            for _ in 0..200 {
                tokio::task::consume_budget().await;
            }
            for (outbox, _, _) in &outboxes {
                outbox.push(frame.clone());
            }
        })
        .await;
        for (outbox, client, _) in &mut outboxes {
            let written = {
                let queue = outbox.0.lock();
                queue.is_empty() && queue.writer.is_none()
            };
            assert!(written, "written at once");
            let mut received = [0; 7];
            client.read_exact(&mut received).await.unwrap();
            assert_eq!(&received, frame.bytes());
        }
    }

    #[tokio::test]
    async fn a_corked_task_dropped_while_it_waits_still_writes_what_it_queued() {
        let (outbox, mut client, _closer) = outbox(100, 100_000).await;
        let mut task = Box::pin(corked(async {
            outbox.push(Frame::text("d"));
            std::future::pending::<()>().await;
        }));
        // Polled once: it queues the frame, then waits a turn before writing it.
        std::future::poll_fn(|cx| {
            let _ = task.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        assert_eq!(outbox.0.lock().len(), 1, "not written yet");
        drop(task);
        let mut received = [0; 3];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(received, [0x81, 1, b'd']);
    }

    #[tokio::test]
    async fn a_frame_queued_outside_a_cork_is_written_by_a_writer_task() {
        let (outbox, mut client, _closer) = outbox(100, 100_000).await;
        outbox.push(Frame::text("c"));
        let mut received = [0; 3];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(received, [0x81, 1, b'c']);
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_written_when_the_client_reads() {
        let (outbox, mut client, closer) = outbox(10_000, 1 << 30).await;
        let frame = Frame::text(&"z".repeat(60_000));
        // Far more than the socket buffers hold: a writer task takes over.
        corked(async {
            for _ in 0..200 {
                outbox.push(frame.clone());
            }
        })
        .await;
        assert!(
            outbox.0.lock().writer.is_some(),
            "a writer task waits for room"
        );
        let mut received = vec![0; frame.len() * 200];
        client.read_exact(&mut received).await.unwrap();
        assert!(
            received
                .chunks(frame.len())
                .all(|chunk| chunk == frame.bytes())
        );
        outbox.emptied().await;
        assert!(!closer.token().is_cancelled());
        assert!(outbox.0.lock().writer.is_none(), "the writer is done");
    }

    #[tokio::test]
    async fn a_reader_waits_while_its_queue_is_over_half_until_it_drains() {
        let (outbox, mut client, _closer) = outbox(10, 1 << 30).await;
        // Far more than the socket buffers take.
        let frame = Frame::text(&"w".repeat(8 << 20));
        corked(async {
            for _ in 0..6 {
                outbox.push(frame.clone());
            }
        })
        .await;
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "6 of 10 frames: over half");
        let mut received = vec![0; frame.len() * 2];
        client.read_exact(&mut received).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken once below half")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_is_closed_at_the_write_limit() {
        let (outbox, _client, closer) = outbox(10_000, 1 << 30).await;
        let outbox = {
            let mut shared = Arc::try_unwrap(outbox.0).ok().unwrap();
            shared.write_timeout = Duration::from_millis(200);
            Outbox(Arc::new(shared))
        };
        let frame = Frame::text(&"v".repeat(1 << 20));
        for _ in 0..64 {
            outbox.push(frame.clone());
        }
        tokio::time::timeout(Duration::from_secs(5), closer.token().cancelled())
            .await
            .expect("closed");
        assert_eq!(closer.frame().reason.as_str(), "write timeout");
    }

    #[tokio::test]
    async fn a_failed_write_loses_the_connection() {
        let (outbox, client, closer) = outbox(10_000, 1 << 30).await;
        drop(client);
        let frame = Frame::text(&"u".repeat(1 << 16));
        for _ in 0..64 {
            outbox.push(frame.clone());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::timeout(Duration::from_secs(5), closer.token().cancelled())
            .await
            .expect("closed");
        assert!(closer.is_lost());
    }
}
