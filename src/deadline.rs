//! One deadline bounds the whole run: the help desk's web request waits on it.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    end: Instant,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline {
            end: Instant::now() + budget,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// A deadline at half of what is left of this one: what waiting for the state lock may
    /// take, so that a lock held by a hung run still leaves time to close access in NSX.
    pub fn half(&self) -> Deadline {
        Deadline::after(self.remaining() / 2)
    }

    /// Sleeps for `wanted`, or until the deadline if that comes first. Returns false when the
    /// deadline does not leave room for the whole sleep.
    pub fn sleep(&self, wanted: Duration) -> bool {
        let left = self.remaining();
        std::thread::sleep(wanted.min(left));
        wanted < left
    }
}
