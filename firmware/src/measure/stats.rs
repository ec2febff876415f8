//! What the timed passes add up to: a pass's ticks and requests, and the
//! per-pass qcow2/raw ratios with their median and spread.

/// Most timed passes of each kind [`compare`](super::compare) keeps.
pub const MAX_PASSES: usize = 16;

/// Time and device requests of one timed pass.
#[derive(Clone, Copy, Default)]
pub struct Pass {
    /// Counter ticks of the whole pass.
    pub ticks: u64,
    /// Requests the disk served during it.
    pub requests: u64,
}

impl Pass {
    /// Two parts of a pass together.
    pub(super) fn plus(self, other: Pass) -> Pass {
        Pass {
            ticks: self.ticks + other.ticks,
            requests: self.requests + other.requests,
        }
    }

    /// The faster of two passes.
    pub fn best(self, other: Pass) -> Pass {
        if other.ticks < self.ticks {
            other
        } else {
            self
        }
    }
}

/// Per-pass qcow2/raw throughput ratios in hundredths, sorted.
#[derive(Clone, Copy)]
pub struct Ratios {
    hundredths: [u64; MAX_PASSES],
    len: usize,
}

impl Ratios {
    /// The ratio of one pair of passes in hundredths: qcow2 speed / raw
    /// speed = raw time / qcow2 time.
    pub fn hundredths(raw: Pass, qcow2: Pass) -> u64 {
        (u128::from(raw.ticks) * 100 / u128::from(qcow2.ticks.max(1))) as u64
    }

    /// `ratios` (the first [`MAX_PASSES`] of them), sorted.
    pub fn sorted(ratios: &[u64]) -> Ratios {
        let len = ratios.len().min(MAX_PASSES);
        let mut hundredths = [0; MAX_PASSES];
        hundredths[..len].copy_from_slice(&ratios[..len]);
        hundredths[..len].sort_unstable();
        Ratios { hundredths, len }
    }

    fn as_slice(&self) -> &[u64] {
        &self.hundredths[..self.len]
    }

    /// The median ratio (the lower middle of an even count).
    pub fn median(&self) -> u64 {
        self.as_slice()
            .get(self.len.saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0)
    }

    /// The lowest ratio.
    pub fn min(&self) -> u64 {
        self.as_slice().first().copied().unwrap_or(0)
    }

    /// The highest ratio.
    pub fn max(&self) -> u64 {
        self.as_slice().last().copied().unwrap_or(0)
    }
}
