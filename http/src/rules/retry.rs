//! How often a request is tried, and how long to wait between tries.
//! Which faults are worth another try is [`Fault::retry`]; the waiting
//! itself is the caller's (a thread's sleep, the firmware's stall).

use core::time::Duration;

use super::fault::{Failure, Fault};

/// Tries of one request, with a doubling wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included (at least 1).
    pub tries: u32,
    /// Wait before the second try; doubled before each next one.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
}

impl Retry {
    /// The policy of both the host and the driver: 5 tries, 250 ms
    /// doubling, at most 8 s (3.75 s of waits in all), long enough for a
    /// server to come back from a restart.
    pub const DEFAULT: Retry = Retry {
        tries: 5,
        first_wait: Duration::from_millis(250),
        max_wait: Duration::from_secs(8),
    };

    /// The wait after try `tried` (1 for the first) failed.
    pub fn wait_after(&self, tried: u32) -> Duration {
        let doublings = tried.saturating_sub(1).min(31);
        self.first_wait
            .checked_mul(1 << doublings)
            .unwrap_or(self.max_wait)
            .min(self.max_wait)
    }

    /// Runs `once` until it succeeds, its fault is not worth another try,
    /// or the tries are spent; `sleep` waits between tries.
    pub fn run<T>(
        &self,
        mut once: impl FnMut() -> Result<T, Fault>,
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, Failure> {
        let mut tries = 0;
        loop {
            tries += 1;
            match once() {
                Ok(value) => return Ok(value),
                Err(fault) if fault.retry() && tries < self.tries => {
                    sleep(self.wait_after(tries));
                }
                Err(fault) => return Err(Failure { fault, tries }),
            }
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn unavailable() -> Fault {
        Fault::Status {
            request: "GET bytes=0-0".into(),
            status: 503,
        }
    }

    #[test]
    fn retried_faults_are_tried_up_to_the_limit_with_doubling_waits() {
        let mut waits = Vec::new();
        let mut calls = 0;
        let failure = Retry::DEFAULT
            .run(
                || {
                    calls += 1;
                    Err::<(), _>(unavailable())
                },
                |wait| waits.push(wait.as_millis()),
            )
            .unwrap_err();
        assert_eq!((calls, failure.tries), (5, 5));
        assert_eq!(waits, [250, 500, 1000, 2000]);
        assert_eq!(Retry::DEFAULT.wait_after(10), Duration::from_secs(8));
        assert_eq!(Retry::DEFAULT.wait_after(40), Duration::from_secs(8));
    }

    #[test]
    fn a_fault_not_worth_another_try_ends_at_once_and_success_ends_the_tries() {
        let mut calls = 0;
        let failure = Retry::DEFAULT
            .run(
                || {
                    calls += 1;
                    Err::<(), _>(Fault::Changed("ETag".into()))
                },
                |_| panic!("no wait"),
            )
            .unwrap_err();
        assert_eq!((calls, failure.tries), (1, 1));
        let mut calls = 0;
        let value = Retry::DEFAULT.run(
            || {
                calls += 1;
                if calls < 3 {
                    Err(unavailable())
                } else {
                    Ok(calls)
                }
            },
            |_| {},
        );
        assert_eq!(value, Ok(3));
    }
}
