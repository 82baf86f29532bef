//! The memory budget: bytes of data sets buffered across all associations at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared bound on buffered bytes.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    max: u64,
}

impl Budget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            max,
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes reserved from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Reserved {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reserved {
    /// An empty reservation on `budget`.
    pub(crate) fn new(budget: &Arc<Budget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Reserves `bytes` more; false (and nothing reserved) when the budget cannot hold them.
    pub(crate) fn grow(&mut self, bytes: u64) -> bool {
        let budget = &self.budget;
        let granted = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= budget.max)
            })
            .is_ok();
        if granted {
            self.bytes += bytes;
        }
        granted
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = Budget::new(100);
        let mut a = Reserved::new(&budget);
        assert!(a.grow(60));
        let mut b = Reserved::new(&budget);
        assert!(!b.grow(50));
        assert!(b.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
