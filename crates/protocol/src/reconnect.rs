//! Counting reconnection attempts, when the count starts over, which failures a
//! client reports, and which endpoint it opens.
//!
//! The policy: every attempt to open a connection after the first counts, whether it
//! fails to open or opens and drops. Opening a connection never starts the count over
//! by itself: a server that accepts connections and drops them at once (overloaded,
//! refusing the client after the upgrade, or crashing on the attach) gets the growing
//! delays of the [`ReconnectPolicy`], and `max_attempts` still ends the client. The
//! count starts over only on a success that proves the server works for this client:
//! - attaching to the state ([`Reconnect::attached`]), the first attach as well as a
//!   re-attach after a reconnect;
//! - a connection that stayed open at least [`Reconnect::STABLE_AFTER`] before it was
//!   lost ([`Reconnect::dropped`]): the server kept the client (an idle one, with no
//!   state to attach to, has no other proof), so the loss is a new trouble.
//!
//! What the clients report (the native client on `errors()`, the browser client to its
//! error listeners), once per *streak* of failures, that is between two starts of the
//! count, and not on every attempt:
//! - a connection that could not be opened ([`Reconnect::failed_to_open`]);
//! - a connection dropped before the server answered ([`Reconnect::dropped`] with
//!   `answered == false`): it sent nothing, or did not answer the attach in flight;
//! - giving up (`next_delay` returns `None` while reconnection is on): the client
//!   closes, and says so.
//!
//! Other losses (a connection that worked) are not errors: the status tells them.
//!
//! # Which endpoint
//!
//! A client may be given several endpoints: servers of one cluster, any of which
//! serves every state ([`Reconnect::with_endpoints`]). It opens the first one; after
//! every failure, whether a connection could not be opened ([`Reconnect::failed_to_open`])
//! or an open one was lost, however long it had lived ([`Reconnect::dropped`]), the next
//! attempt goes to the next endpoint in the list, and after the last to the first again
//! (round robin). [`Reconnect::endpoint`] says which one to open.
//! - The backoff is the client's, not each endpoint's: the attempts count and the delays
//!   grow across endpoints as they do with one, and the count starts over on the same
//!   successes. A client whose server was killed reaches the next one after the first
//!   delay (100 ms by default); a client that no server serves waits as long between
//!   attempts as it would with one server, and `max_attempts` counts attempts on all.
//! - Nothing is remembered about an endpoint that failed: it gets its turn again in the
//!   next round, as a restarted server should.
//! - A client that connects for the first time and must say at once whether it could
//!   (the native client's `connect`) tries each endpoint once, in order, without
//!   waiting between them ([`Reconnect::next_endpoint`]), and starts its rotation from
//!   the one that opened.
//!
//! What the client does once connected to another server is what it does after any
//! reconnection: it re-attaches to its state (the server sends the whole state, and
//! listeners hear what changed) and resends its unacknowledged updates with the same
//! session and request ids, which a cluster that shares its session logs applies
//! exactly once.

use std::time::Duration;

use crate::ReconnectPolicy;

/// A client's reconnection attempts under a [`ReconnectPolicy`], and which of its
/// endpoints each opens.
///
/// Attempts count until the client attaches to its state or a connection stays open
/// [`Reconnect::STABLE_AFTER`]; failures are reported once per streak. With several
/// endpoints, the first opens first and every failure (not opened, or lost) moves on
/// to the next, after the last to the first; the attempts and delays count across all
/// of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    policy: ReconnectPolicy,
    attempt: u32,
    /// A failure of the current streak was reported.
    reported: bool,
    /// How many endpoints the client has (at least 1).
    endpoints: usize,
    /// The endpoint the next connection opens: an index below `endpoints`.
    endpoint: usize,
}

impl Reconnect {
    /// How long a connection must have stayed open for its loss to start the count over.
    pub const STABLE_AFTER: Duration = Duration::from_secs(5);

    /// No attempt made yet, with one endpoint.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self::with_endpoints(policy, 1)
    }

    /// No attempt made yet, with `endpoints` endpoints (`0` counts as one): the first
    /// opens first, and every failure moves on to the next, after the last to the first
    /// (round robin), under one backoff for all.
    pub fn with_endpoints(policy: ReconnectPolicy, endpoints: usize) -> Self {
        Reconnect {
            policy,
            attempt: 0,
            reported: false,
            endpoints: endpoints.max(1),
            endpoint: 0,
        }
    }

    /// The index of the endpoint the next connection opens, below the number given to
    /// [`Reconnect::with_endpoints`] (`0` with one endpoint).
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// Moves on to the next endpoint, after the last to the first, counting nothing:
    /// [`Reconnect::failed_to_open`] and [`Reconnect::dropped`] do it themselves; this is
    /// for a first connection that tries each endpoint in turn before it fails.
    pub fn next_endpoint(&mut self) {
        self.endpoint = (self.endpoint + 1) % self.endpoints;
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

    fn start_over(&mut self) {
        self.attempt = 0;
        self.reported = false;
    }

    /// Whether a failure is the first of its streak (and so reported), counting it.
    fn first_of_streak(&mut self) -> bool {
        !std::mem::replace(&mut self.reported, true)
    }

    /// The client attached to its state: the count starts over.
    pub fn attached(&mut self) {
        self.start_over();
    }

    /// A connection that opened was lost after `lived`. `answered` tells whether the
    /// server answered on it ([`ClientCore::server_answered`](crate::ClientCore::server_answered)).
    /// The count starts over when the connection stayed open at least
    /// [`Reconnect::STABLE_AFTER`]. The next connection opens the next endpoint.
    /// Returns `true` when the client should report the loss: dropped before the server
    /// answered, and the first failure of its streak.
    #[must_use = "a `true` is a failure to report"]
    pub fn dropped(&mut self, lived: Duration, answered: bool) -> bool {
        self.next_endpoint();
        if lived >= Self::STABLE_AFTER {
            self.start_over();
            return false;
        }
        !answered && self.first_of_streak()
    }

    /// An attempt to open a connection failed (not reached, refused, handshake
    /// failed). The next attempt opens the next endpoint. Returns `true` when the client
    /// should report it: the first failure of its streak.
    #[must_use = "a `true` is a failure to report"]
    pub fn failed_to_open(&mut self) -> bool {
        self.next_endpoint();
        self.first_of_streak()
    }

    /// The delay before the next attempt, given a random number in `[0, 1)`, and counts
    /// that attempt; `None` when the client should give up (reconnection is off, or
    /// `max_attempts` were made).
    pub fn next_delay(&mut self, random: f64) -> Option<Duration> {
        let delay = self.policy.delay(self.attempt, random)?;
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// What a client reports when [`Reconnect::next_delay`] gives up, `last` being the
    /// last failure; `None` when reconnection is off (the first loss closes the client,
    /// as asked).
    pub fn gave_up(&self, last: &str) -> Option<String> {
        self.policy.enabled.then(|| {
            let attempts = self.attempt;
            let plural = if attempts == 1 { "" } else { "s" };
            format!("gave up reconnecting after {attempts} attempt{plural}: {last}")
        })
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

    const AT_ONCE: Duration = Duration::from_millis(3);

    #[test]
    fn a_connection_dropped_at_once_keeps_the_backoff_growing() {
        let mut reconnect = limited(10);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        // Opened and dropped before the re-attach was answered, or with no state to
        // attach to: either way, opening proves nothing.
        let _ = reconnect.dropped(AT_ONCE, false);
        let _ = reconnect.dropped(AT_ONCE, true);
        assert_eq!(reconnect.attempt(), 2);
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(400)));
    }

    #[test]
    fn attaching_starts_the_count_over() {
        let mut reconnect = limited(3);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        reconnect.attached();
        assert_eq!(reconnect.attempt(), 0);
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(100)));
    }

    #[test]
    fn a_connection_that_stayed_open_a_while_starts_the_count_over() {
        let mut reconnect = limited(3);
        reconnect.next_delay(0.5);
        reconnect.next_delay(0.5);
        let _ = reconnect.dropped(Reconnect::STABLE_AFTER - AT_ONCE, true);
        assert_eq!(reconnect.attempt(), 2, "not long enough");
        assert!(!reconnect.dropped(Reconnect::STABLE_AFTER, false));
        assert_eq!(reconnect.attempt(), 0);
        assert_eq!(reconnect.next_delay(0.5), Some(Duration::from_millis(100)));
    }

    #[test]
    fn failures_are_reported_once_per_streak() {
        let mut reconnect = limited(10);
        assert!(
            !reconnect.dropped(AT_ONCE, true),
            "a connection that worked is no failure"
        );
        assert!(
            reconnect.dropped(AT_ONCE, false),
            "the first unanswered drop"
        );
        reconnect.next_delay(0.5);
        assert!(!reconnect.dropped(AT_ONCE, false), "the same streak");
        assert!(!reconnect.failed_to_open(), "the same streak");
        reconnect.attached();
        assert!(reconnect.failed_to_open(), "a new streak");
        assert!(!reconnect.failed_to_open());
        let _ = reconnect.dropped(Reconnect::STABLE_AFTER, true);
        assert!(reconnect.dropped(AT_ONCE, false), "a new streak");
    }

    #[test]
    fn giving_up_is_reported_with_the_last_failure() {
        let mut reconnect = limited(2);
        while reconnect.next_delay(0.5).is_some() {}
        assert_eq!(
            reconnect.gave_up("connection refused").as_deref(),
            Some("gave up reconnecting after 2 attempts: connection refused")
        );
        let off = Reconnect::new(ReconnectPolicy::disabled());
        assert_eq!(off.gave_up("lost"), None, "closing was asked for");
    }

    #[test]
    fn with_reconnection_off_the_first_loss_is_the_end() {
        let mut reconnect = Reconnect::new(ReconnectPolicy::disabled());
        assert_eq!(reconnect.next_delay(0.5), None);
        assert_eq!(reconnect.attempt(), 0);
    }

    /// The endpoints a client opens, attempt after attempt, as it runs into `failures`
    /// (`true`: the connection opened and was lost after `lived`).
    fn rotation(endpoints: usize, failures: &[(bool, Duration)]) -> Vec<usize> {
        let mut reconnect = Reconnect::with_endpoints(ReconnectPolicy::default(), endpoints);
        let mut opened = vec![reconnect.endpoint()];
        for &(was_open, lived) in failures {
            let _ = if was_open {
                reconnect.dropped(lived, true)
            } else {
                reconnect.failed_to_open()
            };
            opened.push(reconnect.endpoint());
        }
        opened
    }

    #[test]
    fn the_first_endpoint_opens_first_then_the_next_after_every_failure_round_robin() {
        let refused = (false, Duration::ZERO);
        let lost_at_once = (true, AT_ONCE);
        let lost_after_hours = (true, Duration::from_secs(3600));
        assert_eq!(
            rotation(3, &[refused, lost_at_once, lost_after_hours, refused]),
            [0, 1, 2, 0, 1],
            "whatever the failure, and a loss that starts the count over too"
        );
        assert_eq!(rotation(1, &[refused, lost_after_hours]), [0, 0, 0]);
        assert_eq!(rotation(0, &[refused]), [0, 0], "no endpoint counts as one");
    }

    #[test]
    fn attaching_keeps_the_endpoint_that_works() {
        let mut reconnect = Reconnect::with_endpoints(limited(10).policy().clone(), 2);
        assert!(reconnect.failed_to_open());
        assert_eq!(reconnect.endpoint(), 1);
        reconnect.attached();
        assert_eq!(reconnect.endpoint(), 1, "the next loss moves on from here");
        let _ = reconnect.dropped(AT_ONCE, true);
        assert_eq!(reconnect.endpoint(), 0);
    }

    #[test]
    fn the_backoff_and_the_reports_span_the_endpoints() {
        let mut reconnect = Reconnect::with_endpoints(limited(4).policy().clone(), 2);
        let mut delays = Vec::new();
        let mut reports = Vec::new();
        while let Some(delay) = reconnect.next_delay(0.5) {
            delays.push(delay);
            reports.push(reconnect.failed_to_open());
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis),
            "growing from one endpoint to the other, not starting over on each"
        );
        assert_eq!(reports, [true, false, false, false], "once per streak");
        assert_eq!(reconnect.attempt(), 4, "max_attempts counts them all");
    }

    #[test]
    fn a_first_connection_tries_each_endpoint_without_counting() {
        let mut reconnect = Reconnect::with_endpoints(limited(3).policy().clone(), 3);
        reconnect.next_endpoint();
        reconnect.next_endpoint();
        assert_eq!(reconnect.endpoint(), 2);
        assert_eq!(reconnect.attempt(), 0);
        assert!(reconnect.failed_to_open(), "nothing was reported yet");
        assert_eq!(reconnect.endpoint(), 0);
    }
}
