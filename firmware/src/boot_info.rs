//! What the loader told the firmware about the machine, in the same shape on
//! every architecture.

/// What the loader told us about memory.
pub struct BootInfo {
    /// The loader, for the banner.
    pub loader: &'static str,
    /// Bytes of RAM in the loader's memory map, if it gave one (on aarch64
    /// the device tree is not parsed, so this stays unknown there).
    pub ram_bytes: Option<u64>,
    /// Whether the firmware's whole footprint lies in RAM of that map
    /// (`None` without a map).
    pub footprint_in_ram: Option<bool>,
}
