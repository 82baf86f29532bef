//! Failures injected on purpose: the tests that prove nothing acknowledged is lost make the
//! encoder, the code store, the catalog or a checkpoint fail a given number of times, then
//! recover, or make an acceptor hand its work over late. Unarmed (the default, and always in
//! `diptych serve`), every check is one atomic load.

use std::sync::atomic::{AtomicU32, Ordering};

/// Where a failure can be injected in the apply worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Encoding a frame fails as if the execution provider did (out of memory, a lost device).
    Encode,
    /// Appending codes to the store fails with ENOSPC.
    StoreAppend,
    /// Adding records to the catalog fails.
    CatalogAdd,
    /// A checkpoint's catalog commit fails.
    Checkpoint,
    /// An acceptor (of an instance or a delete) stalls between its log append and handing its
    /// work to the worker for longer than the worker waits for a sequence gap, so the worker
    /// reads the entry back from the log first (not a failure: nothing is refused).
    SlowHandOver,
}

impl FaultPoint {
    const ALL: [FaultPoint; 5] = [
        FaultPoint::Encode,
        FaultPoint::StoreAppend,
        FaultPoint::CatalogAdd,
        FaultPoint::Checkpoint,
        FaultPoint::SlowHandOver,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// Armed failures per [`FaultPoint`]: how many of the next attempts there fail.
#[derive(Debug, Default)]
pub struct Faults {
    remaining: [AtomicU32; FaultPoint::ALL.len()],
    injected: [AtomicU32; FaultPoint::ALL.len()],
}

impl Faults {
    /// Makes the next `times` attempts at `point` fail (`u32::MAX`: until [`Faults::clear`]).
    pub fn fail_next(&self, point: FaultPoint, times: u32) {
        self.remaining[point.slot()].store(times, Ordering::SeqCst);
    }

    /// Disarms every point: the cause of the failures is gone.
    pub fn clear(&self) {
        for point in FaultPoint::ALL {
            self.remaining[point.slot()].store(0, Ordering::SeqCst);
        }
    }

    /// How many failures were injected at `point` so far.
    pub fn injected(&self, point: FaultPoint) -> u32 {
        self.injected[point.slot()].load(Ordering::SeqCst)
    }

    /// Whether this attempt at `point` fails (and counts it).
    pub(crate) fn hit(&self, point: FaultPoint) -> bool {
        let slot = &self.remaining[point.slot()];
        let taken = slot
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if taken {
            self.injected[point.slot()].fetch_add(1, Ordering::SeqCst);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_point_fails_the_given_number_of_times_then_never() {
        let faults = Faults::default();
        assert!(!faults.hit(FaultPoint::Encode));
        faults.fail_next(FaultPoint::Encode, 2);
        assert!(faults.hit(FaultPoint::Encode));
        assert!(
            !faults.hit(FaultPoint::StoreAppend),
            "points are independent"
        );
        assert!(faults.hit(FaultPoint::Encode));
        assert!(!faults.hit(FaultPoint::Encode));
        assert_eq!(faults.injected(FaultPoint::Encode), 2);
        faults.fail_next(FaultPoint::CatalogAdd, u32::MAX);
        for _ in 0..10 {
            assert!(faults.hit(FaultPoint::CatalogAdd));
        }
        faults.clear();
        assert!(!faults.hit(FaultPoint::CatalogAdd));
    }
}
