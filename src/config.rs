//! How much memory an opened image uses, and for what. Chosen by the caller.

use crate::cache::SlotCache;
use crate::error::Unsupported;
use crate::header::Header;

/// Sizes of the caches an opened image keeps. All of them together are the
/// image's whole memory: it does not grow with the virtual disk size.
///
/// Start from [`Config::default`] and change what you need with the
/// `with_` methods (the struct may grow fields, so it is not built literally):
///
/// ```
/// let config = qcow2_reader::Config::default()
///     .with_table_cache_bytes(64 << 10)
///     .with_compressed_clusters(0);
/// assert_eq!(config.table_cache_bytes, 64 << 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Bytes per cached table slice (L1 and L2 tables are cached in slices of
    /// this size): a power of two from 512 up to the cluster size; larger
    /// values are clamped to the cluster size. Smaller slices cost one more
    /// read per cold lookup but let the same memory cover scattered reads.
    pub table_slice_bytes: usize,
    /// Bytes of table cache; at least one slice. 1 MiB of L2 maps 8 GiB of
    /// a 64 KiB-cluster image.
    pub table_cache_bytes: usize,
    /// Decompressed clusters kept, so small reads in one compressed cluster
    /// inflate it once. 0 means compressed clusters cannot be read; any other
    /// value also reserves two clusters of input scratch.
    pub compressed_clusters: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            table_slice_bytes: 4096,
            table_cache_bytes: 1 << 20,
            compressed_clusters: 1,
        }
    }
}

impl Config {
    /// This configuration with table slices of `bytes` each.
    pub const fn with_table_slice_bytes(mut self, bytes: usize) -> Self {
        self.table_slice_bytes = bytes;
        self
    }

    /// This configuration with `bytes` of table cache.
    pub const fn with_table_cache_bytes(mut self, bytes: usize) -> Self {
        self.table_cache_bytes = bytes;
        self
    }

    /// This configuration keeping `clusters` decompressed clusters.
    pub const fn with_compressed_clusters(mut self, clusters: usize) -> Self {
        self.compressed_clusters = clusters;
        self
    }
}

/// The numbers derived from a [`Config`] for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    pub slice_bytes: usize,
    pub table_slots: usize,
    pub table_region: usize,
    pub cluster_size: usize,
    pub cluster_slots: usize,
    pub cluster_region: usize,
    pub input_scratch: usize,
}

impl MemoryPlan {
    pub(crate) fn new(config: &Config, header: &Header) -> Result<Self, Unsupported> {
        let cluster_size = header.cluster_size() as usize;
        let slice_bytes = config.table_slice_bytes.min(cluster_size);
        if !slice_bytes.is_power_of_two() || slice_bytes < 512 {
            return Err(Unsupported::Config {
                reason: "table_slice_bytes must be a power of two of at least 512",
            });
        }
        let table_slots = config.table_cache_bytes / slice_bytes;
        if table_slots == 0 {
            return Err(Unsupported::Config {
                reason: "table_cache_bytes must hold at least one slice",
            });
        }
        let too_large = Unsupported::Config {
            reason: "configured memory does not fit in usize",
        };
        let table_region = SlotCache::region_bytes(table_slots, slice_bytes).ok_or(too_large)?;
        let cluster_slots = config.compressed_clusters;
        let cluster_region =
            SlotCache::region_bytes(cluster_slots, cluster_size).ok_or(too_large)?;
        let input_scratch = if cluster_slots == 0 {
            0
        } else {
            2 * cluster_size
        };
        let plan = Self {
            slice_bytes,
            table_slots,
            table_region,
            cluster_size,
            cluster_slots,
            cluster_region,
            input_scratch,
        };
        plan.total().ok_or(too_large)?;
        Ok(plan)
    }

    pub(crate) fn total(&self) -> Option<usize> {
        self.table_region
            .checked_add(self.cluster_region)?
            .checked_add(self.input_scratch)
    }
}
