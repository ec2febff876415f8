//! The stack line of `Start`: how deep the driver (attaching an image, and
//! the partition and FAT drivers reading it through every layer of its
//! chain while the child is connected) went into the firmware's stack.
//!
//! `Start` paints the unused stack below its stack pointer with
//! `qcow2_uefi::stack::PAINT` ([`Probe::start`]), and at the end counts
//! the painted words left from the bottom ([`Probe::report`]). The stack's
//! bounds come from the HOB list (`qcow2_uefi::stack`); without it the
//! line says why and nothing is painted. The lowest page is left alone:
//! firmware built with `PcdCpuStackGuard` makes it a guard page, which
//! would fault when written.

use qcow2_uefi::stack::{self, HobError, StackRange, StackUse, HOB_HEADER_BYTES, PAINT};
use uefi::table::cfg::ConfigTableEntry;

use super::info_line;

/// Bytes at the bottom of the stack neither painted nor read.
const GUARD_BYTES: u64 = 4096;

/// Bytes just below the painter's stack pointer left unpainted: room for
/// its own spills, so that paint never lands in a live frame.
const MARGIN: u64 = 512;

/// Why there is no measurement.
enum Skipped {
    NoHobList,
    Hob(HobError),
    NoStackHob,
    NotOnStack { sp: u64, range: StackRange },
}

/// A stack painted from `bottom` up to `top`, below `Start`'s frame at `sp`.
struct Painted {
    range: StackRange,
    sp: u64,
    bottom: u64,
    top: u64,
}

/// One `Start`'s measurement.
pub struct Probe {
    painted: Result<Painted, Skipped>,
    /// The deepest point of the attach, before the paint was renewed.
    attach_low: Option<u64>,
}

impl Probe {
    /// Paints the stack below the caller's frame. Call it first in `Start`,
    /// directly: its stack pointer stands for `Start`'s.
    #[inline(never)]
    pub fn start() -> Self {
        Self {
            painted: firmware_stack().and_then(|range| {
                let sp = stack_pointer();
                let mut painted = Painted::new(range, sp)?;
                painted.paint(sp);
                Ok(painted)
            }),
            attach_low: None,
        }
    }

    /// Ends the attach: records its deepest point and paints the stack
    /// again below the caller, so that the connect is measured on its own.
    #[inline(never)]
    pub fn mark_attach(&mut self) {
        if let Ok(painted) = &mut self.painted {
            let low = painted.low_water();
            self.attach_low = Some(self.attach_low.map_or(low, |earlier| earlier.min(low)));
            painted.paint(stack_pointer());
        }
    }

    /// Prints the stack line.
    pub fn report(self) {
        let painted = match self.painted {
            Ok(painted) => painted,
            Err(skipped) => {
                let why: &dyn core::fmt::Display = match &skipped {
                    Skipped::NoHobList => &"the firmware publishes no HOB list",
                    Skipped::Hob(error) => error,
                    Skipped::NoStackHob => {
                        &"the HOB list names no stack (gEfiHobMemoryAllocStackGuid)"
                    }
                    Skipped::NotOnStack { .. } => {
                        &"Start does not run on the stack the HOB list names"
                    }
                };
                if let Skipped::NotOnStack { sp, range } = skipped {
                    info_line(format_args!(
                        "stack: not measured: {why} (stack pointer {sp:#x}, stack {:#x}+{:#x})",
                        range.base, range.len
                    ));
                } else {
                    info_line(format_args!("stack: not measured: {why}"));
                }
                return;
            }
        };
        let after = painted.low_water();
        let low = self.attach_low.map_or(after, |attach| attach.min(after));
        let used = StackUse {
            start: painted.sp - low,
            attach: self.attach_low.map(|attach| painted.sp - attach),
            after_attach: painted.sp - after,
            untouched: low - painted.bottom,
            stack_bytes: painted.range.len,
            skipped: GUARD_BYTES,
        };
        info_line(format_args!("{used}"));
    }
}

impl Painted {
    /// The stack above its guard page, with `Start`'s stack pointer `sp`.
    fn new(range: StackRange, sp: u64) -> Result<Self, Skipped> {
        let not_on_stack = Skipped::NotOnStack { sp, range };
        let bottom = range
            .base
            .checked_add(GUARD_BYTES)
            .ok_or(Skipped::NoStackHob)?;
        if !range.contains(sp) || sp <= bottom {
            return Err(not_on_stack);
        }
        Ok(Self {
            range,
            sp,
            bottom,
            top: bottom,
        })
    }

    /// Paints `bottom` up to `below` less a margin.
    #[inline(always)]
    fn paint(&mut self, below: u64) {
        let top = below.saturating_sub(MARGIN) & !7;
        let words = top.saturating_sub(self.bottom) / 8;
        let start = self.bottom as *mut u64;
        for index in 0..words {
            // SAFETY: `bottom..top` is inside the firmware's stack (the HOB
            // list's range, above its lowest page) and below the current
            // stack pointer less a margin: no live frame is there on this
            // single processor, and an interrupt arriving now writes its
            // frame below the stack pointer and is gone before this loop
            // resumes.
            unsafe { start.add(index as usize).write_volatile(PAINT) };
        }
        self.top = self.bottom + words * 8;
    }

    /// The lowest address written since the last paint.
    fn low_water(&self) -> u64 {
        let words = (self.top - self.bottom) / 8;
        let bottom = self.bottom as *const u64;
        let untouched = stack::untouched_words((0..words).map(|index| {
            // SAFETY: `bottom..top` lies inside the firmware's stack, below
            // every frame live at the paint; words are read from the bottom
            // up and the scan stops at the first written one, so it never
            // reads a frame that is live now (they lie above the deepest
            // write). Volatile: the compiler knows nothing of this memory.
            unsafe { bottom.add(index as usize).read_volatile() }
        }));
        self.bottom + untouched as u64 * 8
    }
}

/// The current stack pointer.
#[inline(always)]
fn stack_pointer() -> u64 {
    let sp: u64;
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

/// The firmware's stack, from the HOB list of the configuration table.
fn firmware_stack() -> Result<StackRange, Skipped> {
    let table = uefi::table::system_table_raw().ok_or(Skipped::NoHobList)?;
    // SAFETY: the system table pointer set by the entry point stays valid
    // while boot services run, which is the only time the driver runs.
    let table = unsafe { table.as_ref() };
    let entries = table.configuration_table;
    let count = table.number_of_configuration_table_entries;
    if entries.is_null() {
        return Err(Skipped::NoHobList);
    }
    let hob_list = (0..count)
        .find_map(|index| {
            // SAFETY: the firmware's configuration table holds `count`
            // entries; each is read by value, unaligned-safe.
            let entry = unsafe { entries.add(index).read_unaligned() };
            (entry.vendor_guid == ConfigTableEntry::HAND_OFF_BLOCK_LIST_GUID)
                .then_some(entry.vendor_table)
        })
        .filter(|list| !list.is_null())
        .ok_or(Skipped::NoHobList)?;
    let bytes = hob_list.cast::<u8>().cast_const();
    let len = stack::list_length(|offset| {
        // SAFETY: the walk asks only for headers at offsets it reached
        // through earlier HOBs' lengths, before the end HOB: inside the
        // list the firmware built.
        unsafe {
            bytes
                .add(offset)
                .cast::<[u8; HOB_HEADER_BYTES]>()
                .read_unaligned()
        }
    })
    .map_err(Skipped::Hob)?;
    // SAFETY: the `len` bytes up to the end HOB were just walked; the HOB
    // list is boot-services data nobody frees while boot services run.
    let list = unsafe { core::slice::from_raw_parts(bytes, len) };
    stack::find_stack(list)
        .map_err(Skipped::Hob)?
        .ok_or(Skipped::NoStackHob)
}
