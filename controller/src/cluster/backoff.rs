//! Delays between reconnects. A fleet that lost the same manager at the same moment
//! reconnects at the same moment too; retrying at a fixed short interval turns an
//! overloaded manager's slow answers into a storm of TLS handshakes that keeps it
//! overloaded. Doubling with jitter sheds that load and spreads the fleet out.

use std::time::Duration;

/// `first`, doubling per consecutive failure up to `max`; each delay is drawn from
/// [d/2, d]. [`Backoff::reset`] after a connection that worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            current: first,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let mut b = Backoff::new(first, max);
        let mut ceiling = first;
        for _ in 0..8 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{ceiling:?}/2, {ceiling:?}]"
            );
            ceiling = (ceiling * 2).min(max);
        }
        assert!(b.next_delay() >= max / 2);
        b.reset();
        assert!(b.next_delay() <= first);
    }
}
