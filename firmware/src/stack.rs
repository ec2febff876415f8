//! The stack line: how deep the firmware went into its stack while finding
//! its disks, opening the chain, and reading the virtual disk through
//! every layer of it.
//!
//! The stack is `boot_stack_bottom` .. `boot_stack_top` of the arch's
//! `boot.rs` ([`STACK_SIZE`] bytes, no guard page: below it lie the page
//! tables on x86_64 and the image's `.bss` on aarch64). [`Probe::start`]
//! fills the stack below the caller's frame with [`PAINT`]; at the end,
//! the painted words left from the bottom up are the stack never touched,
//! and everything above them was written ([`Probe::report`]).

use crate::arch::STACK_SIZE;
use crate::{print, println};

/// The word written over the unused stack (the UEFI driver's, too).
pub const PAINT: u64 = 0x51c0_2eb5_7ac4_d00d;

/// Bytes just below the painter's stack pointer left unpainted: room for
/// its own spills, so that paint never lands in a live frame.
const MARGIN: usize = 512;

extern "C" {
    /// The lowest byte of the stack (the arch's `boot.rs`).
    static boot_stack_bottom: u8;
}

/// Most phases a probe records.
const MAX_PHASES: usize = 4;

/// The stack painted from `bottom` up, below the frame at `sp`, and the
/// deepest point of each phase measured so far.
pub struct Probe {
    sp: usize,
    bottom: usize,
    top: usize,
    phases: [(&'static str, usize); MAX_PHASES],
    count: usize,
}

impl Probe {
    /// Paints the stack below the caller's frame; its stack pointer stands
    /// for the caller's.
    #[inline(never)]
    pub fn start() -> Self {
        let sp = stack_pointer();
        let bottom = core::ptr::addr_of!(boot_stack_bottom) as usize;
        let mut probe = Self {
            sp,
            bottom,
            top: bottom,
            phases: [("", 0); MAX_PHASES],
            count: 0,
        };
        probe.paint(sp);
        probe
    }

    /// Paints `bottom` up to `below` less the margin.
    #[inline(always)]
    fn paint(&mut self, below: usize) {
        let top = below.saturating_sub(MARGIN) & !7;
        let words = top.saturating_sub(self.bottom) / 8;
        let start = self.bottom as *mut u64;
        for index in 0..words {
            // SAFETY: `bottom..top` is inside the boot stack (the only one,
            // on the only CPU, interrupts off) and below the current stack
            // pointer less a margin: no live frame is there.
            unsafe { start.add(index).write_volatile(PAINT) };
        }
        self.top = self.bottom + words * 8;
    }

    /// Ends the phase `name`: records its deepest point, and paints the
    /// stack again below the caller, so that the next phase is measured
    /// on its own. (A phase past the fourth is not recorded.)
    #[inline(never)]
    pub fn mark(&mut self, name: &'static str) {
        let low = self.low_water();
        if let Some(slot) = self.phases.get_mut(self.count) {
            *slot = (name, low);
            self.count += 1;
        }
        self.paint(stack_pointer());
    }

    /// The lowest address written since the last paint.
    fn low_water(&self) -> usize {
        let words = (self.top - self.bottom) / 8;
        let bottom = self.bottom as *const u64;
        let untouched = (0..words)
            .map(|index| {
                // SAFETY: inside the painted range; read from the bottom up,
                // stopping at the first written word, so never in a frame
                // that is live now (they all lie above the deepest write).
                unsafe { bottom.add(index).read_volatile() }
            })
            .take_while(|&word| word == PAINT)
            .count();
        self.bottom + untouched * 8
    }

    /// Ends the last phase, `name`, and prints the stack line: the deepest
    /// point of each phase and of all, in bytes below the stack's top
    /// (everything since boot, the frames above the probe included), and
    /// what was never touched.
    pub fn report(&mut self, name: &'static str) {
        self.mark(name);
        let top = self.bottom + STACK_SIZE;
        let phases = &self.phases[..self.count];
        let low = phases.iter().map(|&(_, low)| low).min().unwrap_or(self.sp);
        print!("stack: the firmware used {} bytes (", top - low);
        for (index, (name, low)) in phases.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            print!("{separator}{name} {}", top - low);
        }
        println!(
            "), {} bytes of its {STACK_SIZE}-byte stack never touched",
            low - self.bottom
        );
    }
}

/// The current stack pointer.
#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register into a local, touching no memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    sp
}
