//! The driver's memory budget: the caches and decoders of all attached
//! images together.
//!
//! Each attached image reserves the bytes its chain's caches took and its
//! zstd decoders may take ([`reserve`]); the [`Reservation`] lives with the image and gives the
//! bytes back when the image is detached (dropped). An image that would
//! take the total past [`TOTAL_BYTES`] is refused, so that a `\qcow2.cfg`
//! listing the same chain many times, or many volumes carrying one, cannot
//! take the firmware's memory.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Most bytes of cache and decoder memory all attached images may take together.
pub const TOTAL_BYTES: usize = 64 << 20;

/// Bytes reserved now.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the budget not reserved.
pub fn left() -> usize {
    TOTAL_BYTES.saturating_sub(USED.load(Ordering::Acquire))
}

/// Bytes counted against the budget while this value lives.
#[derive(Debug)]
pub struct Reservation {
    bytes: usize,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        USED.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reserves `bytes`, or says how many are left when they do not fit.
pub fn reserve(bytes: usize) -> Result<Reservation, usize> {
    USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        used.checked_add(bytes)
            .filter(|&total| total <= TOTAL_BYTES)
    })
    .map(|_| Reservation { bytes })
    .map_err(|used| TOTAL_BYTES.saturating_sub(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the budget is a process-wide counter.
    #[test]
    fn reservations_over_the_total_are_refused_and_given_back_on_drop() {
        let before = left();
        let half = reserve(TOTAL_BYTES / 2).expect("half fits");
        assert_eq!(left(), before - TOTAL_BYTES / 2);
        assert_eq!(reserve(TOTAL_BYTES).unwrap_err(), before - TOTAL_BYTES / 2);
        assert!(
            reserve(usize::MAX).is_err(),
            "an overflowing sum is refused"
        );
        drop(half);
        assert_eq!(left(), before);
    }
}
