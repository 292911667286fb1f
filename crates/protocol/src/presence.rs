//! Presence: who else is attached to a state, and what they are doing (an extension;
//! see `docs/protocol.md`, *Presence*).
//!
//! Every connection attached to a state has a presence entry: an identifier the server
//! gives it, the client's public identity (what the server lets others see of it) and
//! a small JSON object its client sets at will (a cursor, "typing", a colour). A client
//! that asks for presence when it attaches receives everyone else's entries
//! ([`PresenceSnapshot`]), then their changes in order ([`PresenceChanged`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::JsonObject;

/// How often at most the clients of this project send their presence: changes made
/// within this interval are sent together, the latest winning. Servers coalesce what
/// they broadcast over the same interval by default.
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(50);

/// Largest presence object a server accepts by default, as JSON text.
pub const DEFAULT_MAX_PRESENCE_BYTES: usize = 2048;

/// One connection's presence, as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Given by the server; unique among the entries of a state, and kept by a client
    /// that reconnects within the server's grace period.
    pub id: String,
    /// The client's public identity, as the server decided (by default its
    /// `identifier`).
    pub user: Value,
    /// What its client set (`{}` until it sets something).
    pub presence: JsonObject,
}

/// PRESENCE (11): everyone else present when the client attached. It replaces
/// whatever the client knew of the state's presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSnapshot {
    /// The state this is the presence of.
    pub state_identifier: String,
    /// The receiving connection's own entry id.
    #[serde(rename = "self")]
    pub own: String,
    /// Every other entry, in the order they joined.
    pub others: Vec<PresenceEntry>,
}

/// One change in a [`PresenceChanged`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum PresenceChange {
    /// Somebody attached (or a client learns of an entry it did not know).
    Join(PresenceEntry),
    /// Somebody's presence changed: the whole new presence object.
    Update {
        /// The entry.
        id: String,
        /// Its new presence.
        presence: JsonObject,
    },
    /// Somebody left (detached, closed, or lost its connection for longer than the
    /// grace period).
    Leave {
        /// The entry.
        id: String,
    },
}

// Read through a plain struct: serde's internally tagged enums cost the browser
// client about 6 KB of WebAssembly.
impl<'de> Deserialize<'de> for PresenceChange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            event: String,
            id: String,
            #[serde(default)]
            user: Option<Value>,
            #[serde(default)]
            presence: Option<JsonObject>,
        }
        let Raw {
            event,
            id,
            user,
            presence,
        } = Raw::deserialize(deserializer)?;
        let missing = |field| serde::de::Error::custom(format_args!("a {event} without {field}"));
        match event.as_str() {
            "join" => Ok(PresenceChange::Join(PresenceEntry {
                id,
                user: user.ok_or_else(|| missing("user"))?,
                presence: presence.ok_or_else(|| missing("presence"))?,
            })),
            "update" => Ok(PresenceChange::Update {
                id,
                presence: presence.ok_or_else(|| missing("presence"))?,
            }),
            "leave" => Ok(PresenceChange::Leave { id }),
            other => Err(serde::de::Error::custom(format_args!(
                "unknown presence event {other:?}"
            ))),
        }
    }
}

impl PresenceChange {
    /// The entry it is about.
    pub fn id(&self) -> &str {
        match self {
            PresenceChange::Join(entry) => &entry.id,
            PresenceChange::Update { id, .. } | PresenceChange::Leave { id } => id,
        }
    }
}

/// PRESENCE_CHANGED (12): what changed since the last PRESENCE or PRESENCE_CHANGED,
/// in order. Applying a change twice, or a change about an entry the client already
/// has in that form, changes nothing (a join of a known entry replaces it, a leave of
/// an unknown entry is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChanged {
    /// The changes, oldest first.
    pub changes: Vec<PresenceChange>,
}

/// Why a SET_PRESENCE was refused (PRESENCE_FAILED, 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PresenceFailureReason {
    /// The frame did not hold a presence object.
    Invalid,
    /// The connection is not attached to a state.
    NotAttached,
    /// The presence is over the server's size limit.
    TooLarge,
    /// The connection sent presence faster than the server allows; this one was
    /// dropped.
    RateLimited,
    /// The state shows as many present clients as the server allows: this connection
    /// sees the others but is not shown to them.
    Full,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

/// PRESENCE_FAILED (13): a SET_PRESENCE did nothing; the previous presence stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceFailed {
    /// What went wrong, for people.
    pub message: String,
    /// What went wrong, for programs.
    pub reason: PresenceFailureReason,
}
