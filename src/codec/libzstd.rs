//! zstd clusters through libzstd, the decoder QEMU itself uses (feature
//! `zstd-c`, host builds only).
//!
//! The loop is QEMU's (`qcow2_zstd_decompress` in `block/qcow2-threads.c`):
//! stream frames into the cluster until it is full; a frame still
//! unfinished when the cluster is full, or a call that makes no progress,
//! fails the read. Before libzstd sees a frame, [`super::zstd`] checks its
//! window against the cluster size and its block headers against the block
//! size, so both decoders refuse the same frames with the same errors.
//!
//! Memory: the context is created once per image through Rust's global
//! allocator (`zstd-safe`'s `with-rust-allocator`). Its window is at most
//! the cluster size (refused above, and `windowLogMax` says the same to
//! libzstd); when a whole frame is in the input and its content size fits
//! the output, libzstd decodes straight into the cluster with no window
//! buffer at all (its single-pass shortcut), which is how QEMU writes
//! frames.

use zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::zstd::{check_frame_blocks, frame_start, FrameStart, MAX_BLOCK_BYTES, MIN_WINDOW_BYTES};
use crate::error::DecodeError;

/// Fills all of `output` from the zstd frames at the start of `input`.
pub(super) fn decode(
    context: &mut DCtx<'static>,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), DecodeError> {
    let limit = (output.len() as u64).max(MIN_WINDOW_BYTES);
    // A session reset also clears an error left by the previous cluster.
    context
        .reset(ResetDirective::SessionOnly)
        .and_then(|_| context.set_parameter(DParameter::WindowLogMax(window_log(limit))))
        .map_err(|_| DecodeError::ZstdInvalid)?;
    let mut consumed = 0;
    let mut produced = 0;
    while produced < output.len() {
        let frame = input.get(consumed..).ok_or(DecodeError::ZstdInvalid)?;
        match frame_start(frame)? {
            FrameStart::Skippable { total_len } => {
                let skip = usize::try_from(total_len).map_err(|_| DecodeError::ZstdInvalid)?;
                consumed = consumed
                    .checked_add(skip)
                    .filter(|&end| end <= input.len())
                    .ok_or(DecodeError::ZstdInvalid)?;
                continue;
            }
            FrameStart::Frame { window } if window > limit => {
                return Err(DecodeError::ZstdWindowTooLarge { window, limit });
            }
            FrameStart::Frame { window } => {
                check_frame_blocks(frame, window.min(MAX_BLOCK_BYTES) as usize)?;
            }
        }
        (consumed, produced) = decode_frame(context, input, consumed, output, produced)?;
    }
    Ok(())
}

/// Decodes the frame starting at `input[consumed..]` into `output[produced..]`;
/// returns the new positions once the frame has ended.
fn decode_frame(
    context: &mut DCtx<'static>,
    input: &[u8],
    consumed: usize,
    output: &mut [u8],
    produced: usize,
) -> Result<(usize, usize), DecodeError> {
    let capacity = output.len();
    let mut source = InBuffer::around(input);
    source.set_pos(consumed);
    let mut sink = OutBuffer::around_pos(output, produced);
    loop {
        let before = (source.pos(), sink.pos());
        let hint = context
            .decompress_stream(&mut sink, &mut source)
            .map_err(|_| DecodeError::ZstdInvalid)?;
        if hint == 0 {
            return Ok((source.pos(), sink.pos()));
        }
        if sink.pos() == capacity {
            // The frame produces more than the cluster holds: QEMU refuses it.
            return Err(DecodeError::ZstdLength {
                produced: sink.pos(),
            });
        }
        if (source.pos(), sink.pos()) == before {
            // Out of input mid-frame: QEMU's no-progress check fails here too.
            return Err(DecodeError::ZstdInvalid);
        }
    }
}

/// The smallest window log whose window holds `limit` bytes.
fn window_log(limit: u64) -> u32 {
    limit.next_power_of_two().trailing_zeros().clamp(10, 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8]) -> alloc::vec::Vec<u8> {
        // One raw block, not single segment, window = the data's (power of two) length.
        let exponent = (data.len().trailing_zeros() - 10) as u8;
        let mut frame = alloc::vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, exponent << 3];
        let header = 1u32 | ((data.len() as u32) << 3);
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend_from_slice(data);
        frame
    }

    #[test]
    fn context_memory_stays_bounded_by_the_cluster() {
        let data: alloc::vec::Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut context = DCtx::create();
        let mut out = alloc::vec![0u8; 65536];
        // Trailing bytes past the frame (a descriptor's 512-byte rounding) are ignored.
        let mut input = frame(&data);
        input.extend_from_slice(&[0xee; 300]);
        for _ in 0..3 {
            decode(&mut context, &input, &mut out).unwrap();
            assert_eq!(out, data);
        }
        // A window and a block buffer of at most the cluster, plus the tables.
        assert!(
            context.sizeof() < 64 * 1024 + 128 * 1024 + 200 * 1024,
            "{}",
            context.sizeof()
        );
    }

    #[test]
    fn an_error_does_not_stick_to_the_next_cluster() {
        let data = [0x61u8; 4096];
        let mut context = DCtx::create();
        let mut out = [0u8; 4096];
        let good = frame(&data);
        assert_eq!(
            decode(&mut context, &good[..good.len() - 10], &mut out),
            Err(DecodeError::ZstdInvalid)
        );
        decode(&mut context, &good, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn window_logs() {
        assert_eq!(window_log(512), 10);
        assert_eq!(window_log(1 << 10), 10);
        assert_eq!(window_log(64 << 10), 16);
        assert_eq!(window_log(3 << 20), 22);
    }
}
