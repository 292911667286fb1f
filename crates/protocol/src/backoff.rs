//! Reconnection delays: exponential backoff with jitter.

use std::time::Duration;

/// How a client waits between reconnection attempts.
///
/// The n-th delay (from 0) is `min(initial × multiplier^n, max)`, reduced by a random
/// fraction of up to `jitter` of itself, so clients that lost the same server do not
/// all come back at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Whether to reconnect at all.
    pub enabled: bool,
    /// Delay before the first attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth factor per attempt (at least 1).
    pub multiplier: f64,
    /// Fraction (0 to 1) of each delay that is randomized.
    pub jitter: f64,
    /// Attempts after which the client gives up; `None` never gives up.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    /// 100 ms doubling up to 10 s, 50 % jitter, never giving up.
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: a lost connection closes the client.
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..Self::default()
        }
    }

    /// The bounds `[low, high]` of the delay before attempt `attempt` (from 0).
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let growth = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let high = self.initial.mul_f64(growth.min(1e9)).min(self.max);
        let low = high.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0));
        (low, high)
    }

    /// The delay before attempt `attempt`, given a random number in `[0, 1)`; `None`
    /// when the client should give up.
    pub fn delay(&self, attempt: u32, random: f64) -> Option<Duration> {
        if !self.enabled || self.max_attempts.is_some_and(|max| attempt >= max) {
            return None;
        }
        let (low, high) = self.bounds(attempt);
        Some(low + (high - low).mul_f64(random.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_bounds_and_cap() {
        let policy = ReconnectPolicy::default();
        for attempt in 0..40 {
            let (low, high) = policy.bounds(attempt);
            for random in [0.0, 0.3, 0.999] {
                let delay = policy.delay(attempt, random).unwrap();
                assert!(
                    low <= delay && delay <= high,
                    "attempt {attempt}: {delay:?}"
                );
                assert!(delay <= policy.max);
            }
        }
        assert_eq!(
            policy.bounds(0),
            (Duration::from_millis(50), Duration::from_millis(100))
        );
        assert_eq!(policy.bounds(3).1, Duration::from_millis(800));
        assert_eq!(policy.bounds(30).1, Duration::from_secs(10));
    }

    #[test]
    fn gives_up_when_told() {
        assert_eq!(ReconnectPolicy::disabled().delay(0, 0.5), None);
        let policy = ReconnectPolicy {
            max_attempts: Some(2),
            ..ReconnectPolicy::default()
        };
        assert!(policy.delay(1, 0.5).is_some());
        assert_eq!(policy.delay(2, 0.5), None);
    }
}
