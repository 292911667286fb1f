//! Every message text that crosses the wire, in one place.
//!
//! The texts marked *original* are those of server-state-sync 1.0.5: its clients show
//! them to people and some applications match on them, so they are kept exactly (our
//! additions only ever follow them, after a colon). The others are ours.

/// *Original* (type 8): CONNECT_TO_STATE without a usable `stateIdentifier`.
pub const NO_STATE_IDENTIFIER: &str = "No stateIdentifier was supplied";

/// *Original* (type 8): `allowConnectingClient` refused the client.
pub const NOT_ALLOWED_TO_CONNECT: &str = "Not allowed to connect to this state";

/// *Original* (type 9): the start of every update failure.
pub const COULD_NOT_UPDATE: &str = "Could not update state";

/// Ours (type 9, reason `vetoed`): the interceptor vetoed an update (the original
/// vetoes silently; only clients that send a request id are told).
pub const UPDATE_VETOED: &str = "Update vetoed by the server";

/// *Original* (type 8): attaching to a state that does not exist.
pub fn state_does_not_exist(id: &str) -> String {
    format!("State with identifier {id} does not exist")
}

/// *Original* (type 10): a message type the server does not handle.
pub fn unsupported_message_type(code: &str) -> String {
    format!("Message type {code} is not supported")
}

/// Ours (type 1): the attached state was removed by server code.
pub fn state_removed(id: &str) -> String {
    format!("State {id} was removed")
}

/// Ours (type 1): the attached state reached the end of its `ttl`.
pub fn state_expired(id: &str) -> String {
    format!("State {id} expired")
}

/// Ours (type 1): the attached state's `selfDestruct` hook removed it.
pub fn state_self_destructed(id: &str) -> String {
    format!("State {id} self-destructed")
}

/// An update failure: [`COULD_NOT_UPDATE`], a colon and why.
pub fn could_not_update(why: impl std::fmt::Display) -> String {
    format!("{COULD_NOT_UPDATE}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_texts_are_exact() {
        assert_eq!(
            state_does_not_exist("room"),
            "State with identifier room does not exist"
        );
        assert_eq!(
            unsupported_message_type("undefined"),
            "Message type undefined is not supported"
        );
        assert_eq!(
            NOT_ALLOWED_TO_CONNECT,
            "Not allowed to connect to this state"
        );
        assert!(could_not_update("x").starts_with("Could not update state: "));
    }
}
