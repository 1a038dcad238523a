//! Shared state of the clients, which requests made at once may touch.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The state behind `mutex`; a lock that a panicking thread left behind still holds the state.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
