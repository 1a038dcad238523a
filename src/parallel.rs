//! Requests that do not depend on each other, made at once: on scoped threads, a bounded number
//! at a time, the results in the order of the inputs. No async runtime: the binary stays
//! synchronous, and every thread ends before the call returns.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many requests one service gets at once from one run: a ticket's usual VMs in one round
/// (NSX-T allows 40 concurrent calls per user; a ticket may name 20 VMs).
pub const PER_SERVICE: usize = 10;

/// `work` applied to each of `items`, at most `limit` at a time; the results in input order.
/// One item runs on the calling thread, without a thread.
pub fn map<T: Sync, R: Send>(items: &[T], limit: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 || limit <= 1 {
        return items.iter().map(&work).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..limit.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return done;
                        };
                        done.push((i, work(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(done) => done,
                // A panic in `work` is a bug: pass it on as it is.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_input_order_and_at_most_limit_run_at_once() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<u32> = (0..40).collect();
        let out = map(&items, 4, |n| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            running.fetch_sub(1, Ordering::SeqCst);
            n * 2
        });
        assert_eq!(out, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 4);
        assert_eq!(map(&[] as &[u32], 4, |n| *n), Vec::<u32>::new());
    }
}
