//! The callers a client keeps waiting for an answer of the server: those of
//! `connect_to_state` per state, and those of `update_state` per request id.
//!
//! The rules, the same for both clients (which differ only in what a waiter is: a
//! oneshot sender or a promise's resolve and reject functions):
//! - Attaching to a state *supersedes* the callers still waiting to attach to another
//!   state: the core will never answer them (only the answer to the last attach counts),
//!   so they are handed back at once, to be rejected with [`Superseded::message`].
//! - Several callers attaching to the same state all wait for the same answer.
//! - An answer about a state ([`Event::Attached`](crate::Event::Attached) or
//!   [`Event::AttachFailed`](crate::Event::AttachFailed)) settles exactly the callers
//!   waiting for that state. A refusal that nobody waits for was a re-attach after a
//!   reconnect: the client reports it as an error not tied to a call.
//! - The removal of a state ([`Event::StateRemoved`](crate::Event::StateRemoved))
//!   settles the callers waiting to attach to it, refused: their attach was sent before
//!   the removal reached the client (a caller attaching again to the state it is on),
//!   and the core ignores its answer, which would have come with no state to name.
//! - An update's outcome ([`Event::Acknowledged`](crate::Event::Acknowledged) or
//!   [`Event::Failed`](crate::Event::Failed)) settles the one caller of that request
//!   id. Register the caller before performing the events of
//!   [`ClientCore::update`](crate::ClientCore::update): they may already settle it.
//! - Closing hands back every caller still waiting.

use std::collections::BTreeMap;

/// Callers waiting to attach (`A`) and for their updates' outcome (`U`).
#[derive(Debug)]
pub struct Waiters<A, U> {
    /// In the order they started waiting, with the state each asked for.
    attach: Vec<(String, A)>,
    updates: BTreeMap<u64, U>,
}

/// Attach callers that a later attach to another state superseded.
#[derive(Debug)]
#[must_use = "superseded callers wait forever unless they are rejected"]
pub struct Superseded<A> {
    /// The callers, in the order they started waiting.
    pub waiters: Vec<A>,
    /// Why, to reject them with: `superseded by attaching to <state>`.
    pub message: String,
}

impl<A, U> Default for Waiters<A, U> {
    fn default() -> Self {
        Waiters {
            attach: Vec::new(),
            updates: BTreeMap::new(),
        }
    }
}

impl<A, U> Waiters<A, U> {
    /// Nobody waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// A caller waits to attach to `state_identifier`; returns the callers waiting for
    /// other states, which this supersedes.
    pub fn attach(&mut self, state_identifier: &str, waiter: A) -> Superseded<A> {
        let waiters = self
            .attach
            .extract_if(.., |(id, _)| id != state_identifier)
            .map(|(_, waiter)| waiter)
            .collect();
        self.attach.push((state_identifier.to_owned(), waiter));
        Superseded {
            waiters,
            message: format!("superseded by attaching to {state_identifier}"),
        }
    }

    /// The server answered an attach to `state_identifier` (attached or refused), or
    /// removed that state: the callers waiting for it, in the order they started
    /// waiting. Empty when nobody asked (a re-attach after a reconnect).
    pub fn answered(&mut self, state_identifier: &str) -> Vec<A> {
        self.attach
            .extract_if(.., |(id, _)| id == state_identifier)
            .map(|(_, waiter)| waiter)
            .collect()
    }

    /// A caller waits for the outcome of update `request_id` (ids are unique: the
    /// core numbers its updates).
    pub fn update(&mut self, request_id: u64, waiter: U) {
        self.updates.insert(request_id, waiter);
    }

    /// The outcome of update `request_id` came: its caller, if one waits.
    pub fn settled(&mut self, request_id: u64) -> Option<U> {
        self.updates.remove(&request_id)
    }

    /// The client closed: every caller still waiting, attach callers in the order they
    /// started waiting, update callers by request id.
    pub fn close(&mut self) -> (Vec<A>, Vec<U>) {
        let attach = self.attach.drain(..).map(|(_, waiter)| waiter).collect();
        let updates = std::mem::take(&mut self.updates).into_values().collect();
        (attach, updates)
    }

    /// How many callers wait to attach.
    pub fn attaching(&self) -> usize {
        self.attach.len()
    }

    /// How many callers wait for an update's outcome.
    pub fn updating(&self) -> usize {
        self.updates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Callers = Waiters<&'static str, &'static str>;

    #[test]
    fn attaching_elsewhere_supersedes_the_callers_of_other_states() {
        let mut waiters = Callers::new();
        assert!(waiters.attach("a", "first a").waiters.is_empty());
        assert_eq!(waiters.attach("b", "first b").waiters, ["first a"]);
        let superseded = waiters.attach("c", "c");
        assert_eq!(superseded.waiters, ["first b"]);
        assert_eq!(superseded.message, "superseded by attaching to c");
        assert!(waiters.answered("a").is_empty(), "already handed back");
        assert_eq!(waiters.answered("c"), ["c"]);
    }

    #[test]
    fn callers_of_the_same_state_share_one_answer() {
        let mut waiters = Callers::new();
        assert!(waiters.attach("room", "first").waiters.is_empty());
        assert!(
            waiters.attach("room", "second").waiters.is_empty(),
            "the same state supersedes nobody"
        );
        assert_eq!(waiters.answered("room"), ["first", "second"]);
        assert_eq!(waiters.attaching(), 0);
    }

    #[test]
    fn an_answer_settles_only_the_callers_of_its_state() {
        let mut waiters = Callers::new();
        let _ = waiters.attach("room", "caller");
        assert!(
            waiters.answered("other").is_empty(),
            "a refused re-attach of another state: nobody to tell, so it is reported"
        );
        assert_eq!(waiters.attaching(), 1);
        assert_eq!(waiters.answered("room"), ["caller"]);
        assert!(waiters.answered("room").is_empty(), "settled once");
    }

    #[test]
    fn an_update_outcome_settles_its_caller_once() {
        let mut waiters = Callers::new();
        waiters.update(1, "one");
        waiters.update(2, "two");
        assert_eq!(waiters.settled(2), Some("two"));
        assert_eq!(waiters.settled(2), None);
        assert_eq!(waiters.settled(7), None, "nobody waits for an unknown id");
        assert_eq!(waiters.updating(), 1);
    }

    #[test]
    fn closing_hands_back_everyone_still_waiting() {
        let mut waiters = Callers::new();
        let _ = waiters.attach("room", "attach 1");
        let _ = waiters.attach("room", "attach 2");
        waiters.update(9, "update 9");
        waiters.update(3, "update 3");
        let (attach, updates) = waiters.close();
        assert_eq!(attach, ["attach 1", "attach 2"]);
        assert_eq!(updates, ["update 3", "update 9"], "by request id");
        assert_eq!((waiters.attaching(), waiters.updating()), (0, 0));
    }
}
