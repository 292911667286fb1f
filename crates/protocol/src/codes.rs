//! The numeric `type` of every message, as server-state-sync 1.0.5 numbers them.

/// Types of messages a client sends.
pub mod client_code {
    /// Declared by the original, never used; answered with
    /// [`UNSUPPORTED_MESSAGE_TYPE`](super::server_code::UNSUPPORTED_MESSAGE_TYPE).
    pub const EXCHANGE_IDENTIFIER: u8 = 1;
    /// Attach this connection to a state: `{"stateIdentifier": string}`.
    pub const CONNECT_TO_STATE: u8 = 2;
    /// Merge a partial object into the attached state: `{"updates": object}`.
    pub const UPDATE_STATE: u8 = 3;
    /// Extension: set this connection's presence: `{"presence": object}`.
    pub const SET_PRESENCE: u8 = 4;
}

/// Types of messages a server sends.
pub mod server_code {
    /// Declared but never sent by the original; we send it when the attached state is
    /// removed (`{"stateIdentifier", "message"}`).
    pub const STATE_DOES_NOT_EXIST: u8 = 1;
    /// Declared by the original, never sent.
    pub const CONNECTED_TO_STATE: u8 = 2;
    /// An update was applied: `{"updates": object}`.
    pub const STATE_UPDATED: u8 = 3;
    /// Declared by the original, never sent.
    pub const ERROR: u8 = 4;
    /// Declared by the original, never sent.
    pub const EXCHANGE_IDENTIFIER_SUCCESS: u8 = 5;
    /// Declared by the original, never sent.
    pub const EXCHANGE_IDENTIFIER_ERROR: u8 = 6;
    /// Attached: `{"state": object}` with the whole current value.
    pub const STATE_CONNECTION_ESTABLISHED: u8 = 7;
    /// Attaching failed: `{"message": string}`.
    pub const STATE_CONNECTION_ERROR: u8 = 8;
    /// An update was not applied: `{"message": string}`.
    pub const STATE_UPDATE_FAILED: u8 = 9;
    /// The frame's `type` is not one the server handles: `{"message": string}`.
    pub const UNSUPPORTED_MESSAGE_TYPE: u8 = 10;
    /// Extension: everyone else present in the state just attached to
    /// (`{"stateIdentifier", "self", "others"}`).
    pub const PRESENCE: u8 = 11;
    /// Extension: presence changes (`{"changes": [...]}`).
    pub const PRESENCE_CHANGED: u8 = 12;
    /// Extension: a SET_PRESENCE did nothing (`{"message", "reason"}`).
    pub const PRESENCE_FAILED: u8 = 13;
}
