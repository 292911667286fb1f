//! Who is attached to a state, and how what happens to it reaches them: each message is
//! encoded once as a frame and queued in every subscriber's [`Outbox`].

use std::sync::Arc;

use slab::Slab;
use state_sync_protocol::{JsonObject, ServerMessage, StateRemoved, StateUpdated};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::outbox::Outbox;
use crate::session_log::SessionKey;

/// Encodes a message as a frame that can be queued for many connections (cloning it
/// clones a reference count, not the text).
pub(crate) fn frame(message: &ServerMessage) -> Utf8Bytes {
    message.to_json().into()
}

#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    session: Option<SessionKey>,
    /// While its snapshot is being encoded: the frames that came meanwhile.
    pending: Option<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    frames: Vec<Utf8Bytes>,
    bytes: usize,
}

impl Subscriber {
    fn push(&mut self, frame: &Utf8Bytes) {
        match &mut self.pending {
            None => self.outbox.push(frame.clone()),
            Some(pending) => {
                pending.bytes += frame.len();
                if pending.bytes > self.outbox.max_bytes() {
                    // It could not hold them after its snapshot either.
                    self.pending = Some(Pending::default());
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
}

impl Subscribers {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Adds a subscriber and queues `snapshot` (STATE_CONNECTION_ESTABLISHED) for it;
    /// returns its key.
    pub(crate) fn insert(
        &mut self,
        outbox: Outbox,
        session: Option<SessionKey>,
        snapshot: Utf8Bytes,
    ) -> usize {
        outbox.push(snapshot);
        self.slab.insert(Subscriber {
            outbox,
            session,
            pending: None,
        })
    }

    /// Adds a subscriber whose snapshot is still being encoded: what happens meanwhile
    /// is kept for it until [`Subscribers::activate`].
    pub(crate) fn insert_pending(&mut self, outbox: Outbox, session: Option<SessionKey>) -> usize {
        self.slab.insert(Subscriber {
            outbox,
            session,
            pending: Some(Pending::default()),
        })
    }

    /// Queues a pending subscriber's snapshot, then what came meanwhile.
    pub(crate) fn activate(&mut self, key: usize, snapshot: Utf8Bytes) {
        if let Some(subscriber) = self.slab.get_mut(key)
            && let Some(pending) = subscriber.pending.take()
        {
            subscriber.outbox.push(snapshot);
            for frame in pending.frames {
                subscriber.outbox.push(frame);
            }
        }
    }

    /// Removes a subscriber; its session, if it had one. `None` when it was not here.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Option<SessionKey>> {
        self.slab
            .try_remove(key)
            .map(|subscriber| subscriber.session)
    }

    /// Queues STATE_UPDATED for every subscriber: one encoding for all, plus one for
    /// the sender's echo (`echo`: its key and request id) when it sent a request id.
    /// Returns the echo frame.
    pub(crate) fn broadcast(
        &mut self,
        updates: &Arc<JsonObject>,
        version: u64,
        echo: Option<(usize, u64)>,
    ) -> Option<Utf8Bytes> {
        let message = |request_id| {
            frame(&ServerMessage::StateUpdated(StateUpdated {
                updates: Arc::clone(updates),
                version: Some(version),
                request_id,
            }))
        };
        let broadcast = message(None);
        match echo {
            Some((sender, request_id)) => {
                let echo = message(Some(request_id));
                for (key, subscriber) in &mut self.slab {
                    subscriber.push(if key == sender { &echo } else { &broadcast });
                }
                Some(echo)
            }
            None => {
                for (_, subscriber) in &mut self.slab {
                    subscriber.push(&broadcast);
                }
                None
            }
        }
    }

    /// Tells every subscriber that the state is gone (STATE_DOES_NOT_EXIST) and
    /// removes them all (one still waiting for its snapshot is told by its attach).
    pub(crate) fn remove_all(&mut self, state: &str, message: &str) {
        let notice = frame(&ServerMessage::StateRemoved(StateRemoved {
            state_identifier: state.to_owned(),
            message: message.to_owned(),
        }));
        for subscriber in self.slab.drain() {
            if subscriber.pending.is_none() {
                subscriber.outbox.push(notice.clone());
            }
        }
    }
}
