//! Rate limiting for log lines a guest can trigger (one limiter per
//! swapper; no global state).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` lines per `period`; counts what it suppressed.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimiter {
    /// A limiter allowing `burst` lines per `period`.
    pub fn new(period: Duration, burst: u32) -> Self {
        Self {
            period,
            burst,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(suppressed_since_last)` if a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.0) >= self.period {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = s.2;
            s.2 = 0;
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_then_suppresses_and_reports() {
        let r = RateLimiter::new(Duration::from_secs(3600), 3);
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let z = RateLimiter::new(Duration::ZERO, 1);
        assert_eq!(z.allow(), Some(0));
        assert_eq!(z.allow(), Some(0));
    }
}
