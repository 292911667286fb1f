//! Counting reconnection attempts, and when the count starts over.
//!
//! The policy: every attempt to open a connection after the first counts, whether it
//! fails to open or opens and drops. The count starts over only on a success that
//! proves the server works for this client:
//! - attaching to the state ([`Reconnect::attached`]), the first attach as well as a
//!   re-attach after a reconnect;
//! - opening a connection while there is no state to attach to
//!   ([`Reconnect::connected`] with `attaching == false`): the connection itself is
//!   the success then.
//!
//! A connection that opens and is dropped before the re-attach is answered does not
//! start the count over, so a server that accepts connections and drops them at once
//! (overloaded, or crashing on the attach) still gets the growing delays of the
//! [`ReconnectPolicy`], and `max_attempts` still ends the client.

use std::time::Duration;

use crate::ReconnectPolicy;

/// A client's reconnection attempts under a [`ReconnectPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    policy: ReconnectPolicy,
    attempt: u32,
}

impl Reconnect {
    /// No attempt made yet.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Reconnect { policy, attempt: 0 }
    }

    /// The policy.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Attempts counted since the count last started over (the number of the next
    /// attempt, from 0).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A connection opened. `attaching` tells whether the client has a state to attach
    /// to: without one the count starts over now, with one only once attached.
    pub fn connected(&mut self, attaching: bool) {
        if !attaching {
            self.attempt = 0;
        }
    }

    /// The client attached to its state: the count starts over.
    pub fn attached(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt, given a random number in `[0, 1)`, and counts
    /// that attempt; `None` when the client should give up (reconnection is off, or
    /// `max_attempts` were made).
    pub fn next_delay(&mut self, random: f64) -> Option<Duration> {
        let delay = self.policy.delay(self.attempt, random)?;
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(max_attempts: u32) -> Reconnect {
        Reconnect::new(ReconnectPolicy {
            max_attempts: Some(max_attempts),
            jitter: 0.0,
            ..ReconnectPolicy::default()
        })
    }

    #[test]
    fn delays_grow_with_each_attempt_until_the_client_gives_up() {
        let mut reconnect = limited(3);
        let delays: Vec<_> = std::iter::from_fn(|| reconnect.next_delay(0.5)).collect();
        assert_eq!(
            delays,
            [100, 200, 400].map(Duration::from_millis),
            "then it gives up"
        );
        assert_eq!(reconnect.attempt(), 3);
        assert_eq!(reconnect.next_delay(0.5), None, "and stays given up");
    }

    #[test]
    fn a_connection_dropped_before_the_reattach_keeps_the_backoff_growing() {
        let mut reconnect = limited(10);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        reconnect.connected(true);
        assert_eq!(reconnect.attempt(), 2, "opened, but not attached yet");
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(400)));
    }

    #[test]
    fn attaching_starts_the_count_over() {
        let mut reconnect = limited(3);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        reconnect.connected(true);
        reconnect.attached();
        assert_eq!(reconnect.attempt(), 0);
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(100)));
    }

    #[test]
    fn with_no_state_to_attach_to_a_connection_starts_the_count_over() {
        let mut reconnect = limited(3);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        reconnect.connected(false);
        assert_eq!(reconnect.attempt(), 0);
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(100)));
    }

    #[test]
    fn with_reconnection_off_the_first_loss_is_the_end() {
        let mut reconnect = Reconnect::new(ReconnectPolicy::disabled());
        assert_eq!(reconnect.next_delay(0.5), None);
        assert_eq!(reconnect.attempt(), 0);
    }
}
