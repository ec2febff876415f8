//! Time stamp counter, and finding its frequency.
//!
//! Sources, in order: the hypervisor's TSC leaf (0x40000010, in kHz), CPUID
//! leaf 0x15 (crystal clock times TSC ratio), a measurement against PIT
//! channel 0 (1.193182 MHz, present on microvm), and CPUID leaf 0x16 (base
//! frequency in MHz). The CPUID leaves are decoded by `raw-cpuid`; the
//! PIT measurement is this file's own (no crate measures a TSC against it).

use raw_cpuid::CpuId;
use x86_64::instructions::port::Port;

/// Reads the time stamp counter.
pub fn counter() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A way to find the frequency, and its name for the banner.
type Source = (fn() -> Option<u64>, &'static str);

/// The counter's frequency in Hz and where it came from, if it could be found.
///
/// A source whose answer is implausible (below 10 MHz or above 100 GHz)
/// is skipped rather than trusted, and the next one is tried.
pub fn calibrate() -> Option<(u64, &'static str)> {
    let plausible = |hz: &u64| (10_000_000..=100_000_000_000).contains(hz);
    let sources: [Source; 4] = [
        (hypervisor_leaf, "hypervisor CPUID leaf 0x40000010"),
        (leaf_15, "CPUID leaf 0x15"),
        (pit, "PIT channel 0"),
        (leaf_16, "CPUID leaf 0x16"),
    ];
    sources
        .into_iter()
        .find_map(|(source, name)| source().filter(plausible).map(|hz| (hz, name)))
}

fn hypervisor_leaf() -> Option<u64> {
    // The crate checks CPUID.1:ECX bit 31 (running under a hypervisor)
    // and that leaf 0x40000010 exists before reading it.
    let khz = CpuId::new().get_hypervisor_info()?.tsc_frequency()?;
    (khz != 0).then(|| u64::from(khz) * 1000)
}

fn leaf_15() -> Option<u64> {
    CpuId::new().get_tsc_info()?.tsc_frequency()
}

fn leaf_16() -> Option<u64> {
    let info = CpuId::new().get_processor_frequency_info()?;
    match info.processor_base_frequency() {
        0 => None,
        mhz => Some(u64::from(mhz) * 1_000_000),
    }
}

const PIT_HZ: u64 = 1_193_182;
const PIT_CHANNEL0: u16 = 0x40;
const PIT_COMMAND: u16 = 0x43;

fn pit_read() -> u16 {
    let mut command = Port::<u8>::new(PIT_COMMAND);
    let mut channel0 = Port::<u8>::new(PIT_CHANNEL0);
    // SAFETY: latching and reading channel 0's count has no side effects
    // beyond the PIT's own read state machine, which `pit` owns here.
    unsafe {
        command.write(0x00); // latch channel 0
        let low = channel0.read();
        let high = channel0.read();
        u16::from_le_bytes([low, high])
    }
}

/// Counts TSC cycles over ~50 ms of PIT channel 0 ticks.
fn pit() -> Option<u64> {
    // SAFETY: channel 0 drives IRQ 0 only; interrupts are off for the whole
    // run of the firmware, so reprogramming it affects nothing else.
    unsafe {
        Port::<u8>::new(PIT_COMMAND).write(0x34); // channel 0, low then high byte, mode 2, binary
        let mut channel0 = Port::<u8>::new(PIT_CHANNEL0);
        channel0.write(0x00); // reload value 0 = 65536
        channel0.write(0x00);
    }
    let target = PIT_HZ / 20;
    let mut last = pit_read();
    let start = counter();
    let mut elapsed: u64 = 0;
    let mut unchanged = 0u32;
    while elapsed < target {
        let now = pit_read();
        if now == last {
            unchanged += 1;
            if unchanged > 1_000_000 {
                return None; // no PIT, or it is not counting
            }
            continue;
        }
        unchanged = 0;
        // The counter counts down and wraps; a wrap of 65536 is a whole period.
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
    }
    let cycles = counter().wrapping_sub(start);
    Some(cycles * PIT_HZ / elapsed)
}
