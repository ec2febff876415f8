//! libzstd's decompressor for `no_std` builds: the C sources of zstd 1.5.4
//! (`libzstd/`, vendored from the `zstd-sys` crate, the version Debian 12's
//! QEMU links) compiled freestanding by `build.rs`, behind a safe API.
//!
//! This crate holds the `unsafe` FFI boundary so that `qcow2-reader` keeps
//! `#![forbid(unsafe_code)]`. The decoder never allocates: its context
//! lives in one buffer allocated by [`DCtx::new`] and sized by libzstd's
//! `ZSTD_estimateDStreamSize` for the largest window the caller allows, and
//! `ZSTD_initStaticDCtx` carves the context and its stream buffers from it.
//! The C code needs `memcpy`, `memmove` and `memset` from the program
//! (`compiler_builtins` provides them on the `-none` and `-uefi` targets,
//! libc on hosts) and nothing else.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::ffi::c_void;
use core::ptr::NonNull;

/// libzstd's opaque context type.
#[repr(C)]
struct ZstdDCtx {
    _opaque: [u8; 0],
}

/// `ZSTD_inBuffer`.
#[repr(C)]
struct InBuffer {
    src: *const c_void,
    size: usize,
    pos: usize,
}

/// `ZSTD_outBuffer`.
#[repr(C)]
struct OutBuffer {
    dst: *mut c_void,
    size: usize,
    pos: usize,
}

/// `ZSTD_d_windowLogMax`.
const D_WINDOW_LOG_MAX: i32 = 100;
/// `ZSTD_reset_session_only`.
const RESET_SESSION_ONLY: i32 = 1;

// The names carry the `qcow2_` prefix of namespace.h.
extern "C" {
    #[link_name = "qcow2_ZSTD_estimateDStreamSize"]
    fn ZSTD_estimateDStreamSize(window_size: usize) -> usize;
    #[link_name = "qcow2_ZSTD_initStaticDCtx"]
    fn ZSTD_initStaticDCtx(workspace: *mut c_void, workspace_size: usize) -> *mut ZstdDCtx;
    #[link_name = "qcow2_ZSTD_DCtx_reset"]
    fn ZSTD_DCtx_reset(dctx: *mut ZstdDCtx, directive: i32) -> usize;
    #[link_name = "qcow2_ZSTD_DCtx_setParameter"]
    fn ZSTD_DCtx_setParameter(dctx: *mut ZstdDCtx, param: i32, value: i32) -> usize;
    #[link_name = "qcow2_ZSTD_decompressStream"]
    fn ZSTD_decompressStream(
        dctx: *mut ZstdDCtx,
        output: *mut OutBuffer,
        input: *mut InBuffer,
    ) -> usize;
    #[link_name = "qcow2_ZSTD_getErrorCode"]
    fn ZSTD_getErrorCode(code: usize) -> i32;
}

/// A libzstd error: its `ZSTD_ErrorCode` number (`zstd_errors.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(pub i32);

/// Turns a `size_t` result into a value or an [`Error`].
fn check(code: usize) -> Result<usize, Error> {
    // (ZSTD_getErrorCode, not ZSTD_isError, which zstd_common.c defines
    // after an #undef that also drops namespace.h's prefix.)
    // SAFETY: a pure computation on the integer it is given.
    match unsafe { ZSTD_getErrorCode(code) } {
        0 => Ok(code),
        error => Err(Error(error)),
    }
}

/// A decompression context in memory of its own, allocated once.
pub struct DCtx {
    /// Points into `memory`, which it was initialised over.
    context: NonNull<ZstdDCtx>,
    /// 8-byte words, as `ZSTD_initStaticDCtx` requires 8-byte alignment. A
    /// `Vec`'s heap buffer does not move when the `Vec` (or the `DCtx`)
    /// does, so `context` stays valid; it is never touched from Rust.
    memory: Vec<u64>,
    max_window: usize,
}

// SAFETY: the context is plain memory owned by this value alone (no
// thread-local or global state in libzstd's decoder), and every use goes
// through `&mut self`.
unsafe impl Send for DCtx {}
// SAFETY: no method takes `&self` and touches the context.
unsafe impl Sync for DCtx {}

impl core::fmt::Debug for DCtx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DCtx")
            .field("max_window", &self.max_window)
            .field("bytes", &self.size())
            .finish()
    }
}

impl DCtx {
    /// The bytes a context needs to stream frames with windows of up to
    /// `max_window` bytes (libzstd's `ZSTD_estimateDStreamSize`).
    pub fn memory_size(max_window: usize) -> usize {
        // SAFETY: a pure computation on its argument.
        unsafe { ZSTD_estimateDStreamSize(max_window) }
    }

    /// A context for windows of up to `max_window` bytes, with its memory
    /// allocated now, once; `None` if that allocation fails.
    pub fn new(max_window: usize) -> Option<Self> {
        let words = Self::memory_size(max_window).div_ceil(8);
        let mut memory = Vec::new();
        memory.try_reserve_exact(words).ok()?;
        memory.resize(words, 0u64);
        // SAFETY: the pointer and length describe `memory`, writable,
        // 8-aligned (u64) and `words * 8` bytes long; libzstd keeps pointers
        // into it, which stay valid as long as `memory`'s heap buffer, that
        // is, as long as `self` (the buffer is never resized).
        let context = unsafe { ZSTD_initStaticDCtx(memory.as_mut_ptr().cast(), words * 8) };
        Some(Self {
            context: NonNull::new(context)?,
            memory,
            max_window,
        })
    }

    /// The largest window this context was sized for.
    pub fn max_window(&self) -> usize {
        self.max_window
    }

    /// The bytes of the context's memory.
    pub fn size(&self) -> usize {
        self.memory.len() * 8
    }

    /// Ends the current frame, and clears an error left by the last call
    /// (`ZSTD_DCtx_reset` with `ZSTD_reset_session_only`).
    pub fn reset_session(&mut self) -> Result<(), Error> {
        // SAFETY: `context` is a live context (see `new`), used by one caller at a time.
        check(unsafe { ZSTD_DCtx_reset(self.context.as_ptr(), RESET_SESSION_ONLY) }).map(drop)
    }

    /// Refuses frames whose window is larger than `1 << log` bytes
    /// (`ZSTD_d_windowLogMax`).
    pub fn set_window_log_max(&mut self, log: u32) -> Result<(), Error> {
        let log = i32::try_from(log).map_err(|_| Error(-1))?;
        // SAFETY: as in `reset_session`; libzstd checks the value's range.
        check(unsafe { ZSTD_DCtx_setParameter(self.context.as_ptr(), D_WINDOW_LOG_MAX, log) })
            .map(drop)
    }

    /// One `ZSTD_decompressStream` call: decodes from `input[*in_pos..]`
    /// into `output[*out_pos..]`, advances both positions, and returns
    /// libzstd's hint (0 once a frame is complete and flushed).
    ///
    /// Positions past their slice's end are an error, not undefined
    /// behaviour: they are checked here.
    pub fn decompress_stream(
        &mut self,
        output: &mut [u8],
        out_pos: &mut usize,
        input: &[u8],
        in_pos: &mut usize,
    ) -> Result<usize, Error> {
        if *out_pos > output.len() || *in_pos > input.len() {
            // libzstd's ZSTD_error_srcSize_wrong / dstSize_tooSmall would
            // say the same; it never sees such positions.
            return Err(Error(-1));
        }
        let mut sink = OutBuffer {
            dst: output.as_mut_ptr().cast(),
            size: output.len(),
            pos: *out_pos,
        };
        let mut source = InBuffer {
            src: input.as_ptr().cast(),
            size: input.len(),
            pos: *in_pos,
        };
        // SAFETY: `context` is live (see `new`); `sink` and `source` describe
        // the two slices, which are borrowed (one mutably) for the call, do
        // not overlap (a `&mut` and a `&` slice), and start within bounds
        // (checked above). libzstd writes only within `dst[pos..size]` and
        // reads only within `src[pos..size]`, and keeps neither pointer
        // past the call: a later call gets new buffers.
        let hint = unsafe { ZSTD_decompressStream(self.context.as_ptr(), &mut sink, &mut source) };
        // libzstd moves the positions forward within the sizes it was given.
        *out_pos = sink.pos.min(output.len());
        *in_pos = source.pos.min(input.len());
        check(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of one raw block holding `data`, window = its length (a power of two).
    fn raw_frame(data: &[u8]) -> Vec<u8> {
        let exponent = (data.len().trailing_zeros() - 10) as u8;
        let mut frame = alloc::vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, exponent << 3];
        let header = 1u32 | ((data.len() as u32) << 3);
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(data);
        frame
    }

    fn decode_all(context: &mut DCtx, input: &[u8], output: &mut [u8]) -> Result<usize, Error> {
        let (mut in_pos, mut out_pos) = (0, 0);
        loop {
            let hint = context.decompress_stream(output, &mut out_pos, input, &mut in_pos)?;
            if hint == 0 {
                return Ok(out_pos);
            }
        }
    }

    #[test]
    fn a_raw_block_decodes_through_the_static_context() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut context = DCtx::new(4096).unwrap();
        let mut out = alloc::vec![0u8; 4096];
        assert_eq!(
            decode_all(&mut context, &raw_frame(&data), &mut out),
            Ok(4096)
        );
        assert_eq!(out, data);
    }

    #[test]
    fn a_window_beyond_the_context_memory_is_an_error_not_an_overrun() {
        // A 64 KiB window in a context sized for 4 KiB: streaming it needs
        // buffers the static memory does not have, and no limit was set.
        let data = alloc::vec![0x5au8; 65536];
        let mut context = DCtx::new(4096).unwrap();
        let mut out = alloc::vec![0u8; 65536];
        // Fed in pieces so libzstd cannot take its single-pass shortcut.
        let frame = raw_frame(&data);
        let (mut in_pos, mut out_pos) = (0, 0);
        let result = context.decompress_stream(&mut out, &mut out_pos, &frame[..100], &mut in_pos);
        assert!(result.is_err(), "{result:?}");
        // The error is cleared by a session reset, and the context works on.
        context.reset_session().unwrap();
        let small: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let mut out = alloc::vec![0u8; 4096];
        assert_eq!(
            decode_all(&mut context, &raw_frame(&small), &mut out),
            Ok(4096)
        );
        assert_eq!(out, small);
    }

    #[test]
    fn the_window_limit_is_enforced() {
        let data = alloc::vec![0x5au8; 8192];
        let mut context = DCtx::new(1 << 20).unwrap();
        context.set_window_log_max(12).unwrap();
        let mut out = alloc::vec![0u8; 8192];
        assert!(decode_all(&mut context, &raw_frame(&data), &mut out).is_err());
    }

    #[test]
    fn positions_past_the_slices_are_refused() {
        let mut context = DCtx::new(4096).unwrap();
        let mut out = [0u8; 16];
        let (mut in_pos, mut out_pos) = (5, 17);
        assert!(context
            .decompress_stream(&mut out, &mut out_pos, &[0; 4], &mut in_pos)
            .is_err());
    }

    #[test]
    fn memory_is_the_estimate() {
        let context = DCtx::new(64 << 10).unwrap();
        assert!(context.size() >= DCtx::memory_size(64 << 10));
        assert!(context.size() < DCtx::memory_size(64 << 10) + 8);
    }
}
