//! Who is attached to a state, and how what happens to it reaches them: each message is
//! encoded once as a frame and queued in every subscriber's [`Outbox`].

use std::sync::Arc;

use slab::Slab;
use state_sync_protocol::{
    JsonObject, ServerMessage, StateConnectionEstablished, StateRemoved, StateUpdated,
};
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

    /// Adds a subscriber and queues the state's whole value for it; returns its key.
    pub(crate) fn insert(
        &mut self,
        outbox: Outbox,
        session: Option<SessionKey>,
        value: &JsonObject,
        version: u64,
    ) -> usize {
        outbox.push(frame(&ServerMessage::StateConnectionEstablished(
            StateConnectionEstablished {
                state: value.clone(),
                version: Some(version),
            },
        )));
        self.slab.insert(Subscriber { outbox, session })
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
        &self,
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
                for (key, subscriber) in &self.slab {
                    let frame = if key == sender { &echo } else { &broadcast };
                    subscriber.outbox.push(frame.clone());
                }
                Some(echo)
            }
            None => {
                for (_, subscriber) in &self.slab {
                    subscriber.outbox.push(broadcast.clone());
                }
                None
            }
        }
    }

    /// Tells every subscriber that the state is gone (STATE_DOES_NOT_EXIST) and
    /// removes them all.
    pub(crate) fn remove_all(&mut self, state: &str, message: &str) {
        let notice = frame(&ServerMessage::StateRemoved(StateRemoved {
            state_identifier: state.to_owned(),
            message: message.to_owned(),
        }));
        for subscriber in self.slab.drain() {
            subscriber.outbox.push(notice.clone());
        }
    }
}
