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

    /// How long waiting for the state lock, or for the help desk, may take: all that is left
    /// but a quarter of it (at least 0.5 s, at most 3 s), kept so that a lock held by a hung
    /// run or a help desk that does not answer still leaves time to close access in NSX.
    pub fn for_waiting(&self) -> Deadline {
        let left = self.remaining();
        let reserve = (left / 4).clamp(Duration::from_millis(500), Duration::from_secs(3));
        Deadline::after(left.saturating_sub(reserve))
    }

    /// How long waiting for the state lock (or for the database to give it) may take: half of
    /// [`Deadline::for_waiting`], so that a ticket event whose lock is held by a hung run, or
    /// whose database does not answer, still has the other half to read its ticket, and the
    /// reserve to close in NSX.
    pub fn for_locking(&self) -> Deadline {
        let waiting = self.for_waiting().remaining();
        Deadline::after(waiting / 2)
    }

    /// Sleeps for `wanted`, or until the deadline if that comes first. Returns false when the
    /// deadline does not leave room for the whole sleep.
    pub fn sleep(&self, wanted: Duration) -> bool {
        let left = self.remaining();
        std::thread::sleep(wanted.min(left));
        wanted < left
    }
}
