//! Who is attached to a state, and how what happens to it reaches them: each message is
//! encoded once as a frame and queued in every subscriber's [`Outbox`].

use std::sync::Arc;

use crate::wire::Frame;
use slab::Slab;
use state_sync_protocol::{
    JsonObject, Operation, Resolved, ServerMessage, StateRemoved, StateUpdated,
};

use crate::outbox::Outbox;
use crate::session_log::SessionKey;

/// Encodes a message as a frame that can be queued for many connections (cloning it
/// clones a reference count, not the text).
pub(crate) fn frame(message: &ServerMessage) -> Frame {
    Frame::text(&message.to_json())
}

/// What an applied update tells subscribers.
#[derive(Debug)]
pub(crate) struct Broadcast {
    /// The resulting value of every key it touched, a removed key as `null`: what
    /// clients of the original get (and server code).
    pub(crate) updates: Arc<JsonObject>,
    /// The keys it removed.
    pub(crate) removed: Vec<String>,
    /// With appends: the other keys, and the appends as operations, which clients
    /// with a session apply themselves (no whole arrays on the wire).
    pub(crate) compact: Option<(Arc<JsonObject>, Operations)>,
}

/// Operations by key, in order.
pub(crate) type Operations = Vec<(String, Operation)>;

impl Broadcast {
    /// What `resolved` tells subscribers.
    pub(crate) fn new(resolved: Resolved) -> Broadcast {
        let Resolved {
            values: mut updates,
            removed,
            appended,
        } = resolved;
        for key in &removed {
            updates.insert(key.clone(), serde_json::Value::Null);
        }
        let compact = (!appended.is_empty()).then(|| {
            let rest = updates
                .iter()
                .filter(|(key, _)| !appended.iter().any(|(appended, _)| appended == *key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            (Arc::new(rest), appended)
        });
        Broadcast {
            updates: Arc::new(updates),
            removed,
            compact,
        }
    }

    /// STATE_UPDATED at `version`, compact (appends as operations) for a client with
    /// a session when there are appends; with `request_id`, the sender's echo.
    pub(crate) fn frame(&self, version: u64, request_id: Option<u64>, session: bool) -> Frame {
        let (updates, ops) = match &self.compact {
            Some((updates, ops)) if session => (Arc::clone(updates), ops.clone()),
            _ => (Arc::clone(&self.updates), Vec::new()),
        };
        frame(&ServerMessage::StateUpdated(StateUpdated {
            updates,
            version: Some(version),
            request_id,
            removed: self.removed.clone(),
            ops,
        }))
    }
}

/// The sender of an update, to be answered with its echo.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    key: usize,
    serial: u64,
    pub(crate) request_id: u64,
    outbox: Outbox,
    compact: bool,
}

impl Echo {
    /// Answers the sender on its connection, outside any subscription: it re-attached
    /// (its new subscription starts after this version) or left.
    pub(crate) fn answer(&self, change: &Broadcast, version: u64) {
        self.outbox
            .push(change.frame(version, Some(self.request_id), self.compact));
    }

    /// Answers the sender with a frame.
    pub(crate) fn reply(&self, frame: Frame) {
        self.outbox.push(frame);
    }
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    /// Boxed, like `pending`: a state with 10,000 subscribers keeps a slab of 10,000
    /// (and room for more), which stays small.
    session: Option<Box<SessionKey>>,
    /// It applies appends itself (`acceptsOps`): it gets them as operations.
    compact: bool,
    /// The version of its snapshot: it gets only later updates.
    since: u64,
    /// Tells it apart from a later subscriber that reuses its key.
    serial: u64,
    /// Until its snapshot is queued: the frames that came meanwhile.
    pending: Option<Box<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    frames: Vec<Frame>,
    bytes: usize,
    /// Its attach has returned: only the release of its snapshot is awaited.
    queued: bool,
}

impl Subscriber {
    fn push(&mut self, frame: &Frame) {
        match &mut self.pending {
            None => self.outbox.push(frame.clone()),
            Some(pending) => {
                pending.bytes += frame.len();
                if pending.bytes > self.outbox.max_bytes() {
                    // It could not hold them after its snapshot either.
                    self.pending = Some(Box::default());
                    self.outbox.overflow();
                } else {
                    pending.frames.push(frame.clone());
                }
            }
        }
    }
}

/// The connections attached to one state.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    slab: Slab<Subscriber>,
    next_serial: u64,
}

impl Subscribers {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    fn add(&mut self, subscriber: impl FnOnce(u64) -> Subscriber) -> (usize, u64) {
        self.next_serial += 1;
        let serial = self.next_serial;
        (self.slab.insert(subscriber(serial)), serial)
    }

    /// Adds a subscriber and queues `snapshot` (STATE_CONNECTION_ESTABLISHED at
    /// `version`) for it; returns its key.
    pub(crate) fn insert(
        &mut self,
        outbox: Outbox,
        session: Option<SessionKey>,
        compact: bool,
        snapshot: Frame,
        version: u64,
    ) -> usize {
        outbox.push(snapshot);
        self.add(|serial| Subscriber {
            outbox,
            session: session.map(Box::new),
            compact,
            since: version,
            serial,
            pending: None,
        })
        .0
    }

    /// Adds a subscriber whose snapshot (at `version`) is still being encoded or
    /// saved: later updates are kept for it until [`Subscribers::activate`]. Returns
    /// its key and serial.
    pub(crate) fn insert_pending(
        &mut self,
        outbox: Outbox,
        session: Option<SessionKey>,
        compact: bool,
        version: u64,
    ) -> (usize, u64) {
        self.add(|serial| Subscriber {
            outbox,
            session: session.map(Box::new),
            compact,
            since: version,
            serial,
            pending: Some(Box::default()),
        })
    }

    /// Marks a pending subscriber's attach as returned (its snapshot awaits release).
    pub(crate) fn queued(&mut self, key: usize, serial: u64) {
        if let Some(subscriber) = self.slab.get_mut(key).filter(|s| s.serial == serial)
            && let Some(pending) = &mut subscriber.pending
        {
            pending.queued = true;
        }
    }

    /// Queues a pending subscriber's snapshot, then what came meanwhile.
    pub(crate) fn activate(&mut self, key: usize, serial: u64, snapshot: Frame) {
        if let Some(subscriber) = self.slab.get_mut(key).filter(|s| s.serial == serial)
            && let Some(pending) = subscriber.pending.take()
        {
            subscriber.outbox.push(snapshot);
            for frame in pending.frames {
                subscriber.outbox.push(frame);
            }
        }
    }

    /// A pending subscriber whose snapshot can never be released (storage failed):
    /// its attach fails with `answer` and it is removed. Whether it was there.
    pub(crate) fn abandon(&mut self, key: usize, serial: u64, answer: Frame) -> bool {
        if self
            .slab
            .get(key)
            .is_some_and(|s| s.serial == serial && s.pending.is_some())
        {
            let subscriber = self.slab.remove(key);
            subscriber.outbox.push(answer);
            return true;
        }
        false
    }

    /// Who a subscriber is, for an echo that may come after it re-attached: its key
    /// and serial (a later subscriber may reuse the key), its connection, and whether
    /// it takes appends as operations.
    pub(crate) fn sender(&self, key: usize, request_id: u64) -> Option<Echo> {
        self.slab.get(key).map(|subscriber| Echo {
            key,
            serial: subscriber.serial,
            request_id,
            outbox: subscriber.outbox.clone(),
            compact: subscriber.compact,
        })
    }

    /// Removes a subscriber; its session, if it had one. `None` when it was not here.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Option<SessionKey>> {
        self.slab
            .try_remove(key)
            .map(|subscriber| subscriber.session.map(|session| *session))
    }

    /// Queues STATE_UPDATED for every subscriber: one encoding for all of a kind (with
    /// appends, clients with a session get them as operations, the others the whole
    /// arrays), plus one for the sender's echo when it sent a request id. Returns the
    /// echo frame; `None` when the sender is no longer this subscriber (then the
    /// caller answers it on its connection, see [`Echo::answer`]).
    pub(crate) fn broadcast(
        &mut self,
        change: &Broadcast,
        version: u64,
        echo: Option<&Echo>,
    ) -> Option<Frame> {
        let message = |request_id, compact: bool| change.frame(version, request_id, compact);
        let mut frames: [Option<Frame>; 2] = [None, None];
        let mut reply = None;
        let mut delivered = 0;
        for (key, subscriber) in &mut self.slab {
            if subscriber.since >= version {
                continue;
            }
            delivered += 1;
            let compact = change.compact.is_some() && subscriber.compact;
            match echo {
                Some(echo) if key == echo.key && subscriber.serial == echo.serial => {
                    let frame = message(Some(echo.request_id), compact);
                    subscriber.push(&frame);
                    reply = Some(frame);
                }
                _ => {
                    let frame =
                        frames[usize::from(compact)].get_or_insert_with(|| message(None, compact));
                    subscriber.push(frame);
                }
            }
        }
        crate::metrics::delivered(delivered);
        reply
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Queues a frame for every subscriber.
    pub(crate) fn push_all(&mut self, frame: &Frame) {
        for (_, subscriber) in &mut self.slab {
            subscriber.push(frame);
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Closes every subscriber's connection (they reconnect and attach again) and
    /// removes them all.
    pub(crate) fn close_all(&mut self, code: u16, reason: &str) {
        for subscriber in self.slab.drain() {
            subscriber.outbox.close(
                tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::from(code),
                reason,
            );
        }
    }

    /// Tells every subscriber that the state is gone (STATE_DOES_NOT_EXIST) and
    /// removes them all. One still waiting for its snapshot gets `unattached` instead
    /// (the answer to its attach) once its attach returned, or from its attach.
    pub(crate) fn remove_all(&mut self, state: &str, message: &str, unattached: &Frame) {
        let notice = frame(&ServerMessage::StateRemoved(StateRemoved {
            state_identifier: state.to_owned(),
            message: message.to_owned(),
        }));
        for subscriber in self.slab.drain() {
            match &subscriber.pending {
                None => subscriber.outbox.push(notice.clone()),
                Some(pending) if pending.queued => subscriber.outbox.push(unattached.clone()),
                Some(_) => {}
            }
        }
    }
}
