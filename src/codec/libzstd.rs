//! zstd clusters through libzstd, the decoder QEMU itself uses: the
//! system's (feature `zstd-c`, host builds) or the vendored copy built
//! freestanding (feature `zstd-c-nostd`, every target, through
//! `qcow2-zstd-nostd`, which holds the `unsafe` boundary). One loop drives
//! both, through [`Stream`].
//!
//! The loop is QEMU's (`qcow2_zstd_decompress` in `block/qcow2-threads.c`):
//! stream frames into the cluster until it is full; a frame still
//! unfinished when the cluster is full, or a call that makes no progress,
//! fails the read. Before libzstd sees a frame, [`super::zstd`] checks its
//! window against the cluster size and its block headers against the block
//! size, so all decoders refuse the same frames with the same errors.
//!
//! Memory: the system library's context is created once per image through
//! Rust's global allocator (`zstd-safe`'s `with-rust-allocator`); the
//! vendored one's is one buffer allocated once, sized by libzstd for the
//! cluster-sized window (`ZSTD_estimateDStreamSize`), from which libzstd
//! carves everything it needs (`ZSTD_initStaticDCtx`). The window is at
//! most the cluster size (refused above, and `windowLogMax` says the same
//! to libzstd); when a whole frame is in the input and its content size
//! fits the output, libzstd decodes straight into the cluster with no
//! window buffer at all (its single-pass shortcut), which is how QEMU
//! writes frames.

use super::zstd::{check_frame_blocks, frame_start, FrameStart, MAX_BLOCK_BYTES, MIN_WINDOW_BYTES};
use crate::error::DecodeError;

/// What the loop needs of a libzstd decompression context.
pub(super) trait Stream {
    /// Starts a new session (clearing an error left by the previous
    /// cluster) that refuses windows above `1 << window_log_max` bytes.
    fn restart(&mut self, window_log_max: u32) -> Result<(), DecodeError>;

    /// One `ZSTD_decompressStream` call from `input[*consumed..]` into
    /// `output[*produced..]`; returns libzstd's hint (0: frame complete).
    fn stream(
        &mut self,
        input: &[u8],
        consumed: &mut usize,
        output: &mut [u8],
        produced: &mut usize,
    ) -> Result<usize, DecodeError>;
}

#[cfg(feature = "zstd-c")]
impl Stream for zstd_safe::DCtx<'static> {
    fn restart(&mut self, window_log_max: u32) -> Result<(), DecodeError> {
        self.reset(zstd_safe::ResetDirective::SessionOnly)
            .and_then(|_| self.set_parameter(zstd_safe::DParameter::WindowLogMax(window_log_max)))
            .map(drop)
            .map_err(|_| DecodeError::ZstdInvalid)
    }

    fn stream(
        &mut self,
        input: &[u8],
        consumed: &mut usize,
        output: &mut [u8],
        produced: &mut usize,
    ) -> Result<usize, DecodeError> {
        let mut source = zstd_safe::InBuffer::around(input);
        source.set_pos(*consumed);
        let mut sink = zstd_safe::OutBuffer::around_pos(output, *produced);
        let hint = self.decompress_stream(&mut sink, &mut source);
        (*consumed, *produced) = (source.pos(), sink.pos());
        hint.map_err(|_| DecodeError::ZstdInvalid)
    }
}

#[cfg(feature = "zstd-c-nostd")]
impl Stream for zstd_nostd::DCtx {
    fn restart(&mut self, window_log_max: u32) -> Result<(), DecodeError> {
        self.reset_session()
            .and_then(|()| self.set_window_log_max(window_log_max))
            .map_err(|_| DecodeError::ZstdInvalid)
    }

    fn stream(
        &mut self,
        input: &[u8],
        consumed: &mut usize,
        output: &mut [u8],
        produced: &mut usize,
    ) -> Result<usize, DecodeError> {
        self.decompress_stream(output, produced, input, consumed)
            .map_err(|_| DecodeError::ZstdInvalid)
    }
}

/// The largest window a cluster of `cluster_bytes` allows: the cluster, and
/// never less than zstd's smallest window.
pub(super) fn window_limit(cluster_bytes: usize) -> u64 {
    (cluster_bytes as u64).max(MIN_WINDOW_BYTES)
}

/// Fills all of `output` from the zstd frames at the start of `input`.
pub(super) fn decode(
    context: &mut impl Stream,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), DecodeError> {
    let limit = window_limit(output.len());
    // A session reset also clears an error left by the previous cluster.
    context.restart(window_log(limit))?;
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
    context: &mut impl Stream,
    input: &[u8],
    mut consumed: usize,
    output: &mut [u8],
    mut produced: usize,
) -> Result<(usize, usize), DecodeError> {
    let capacity = output.len();
    loop {
        let before = (consumed, produced);
        let hint = context.stream(input, &mut consumed, output, &mut produced)?;
        if hint == 0 {
            return Ok((consumed, produced));
        }
        if produced == capacity {
            // The frame produces more than the cluster holds: QEMU refuses it.
            return Err(DecodeError::ZstdLength { produced });
        }
        if (consumed, produced) == before {
            // Out of input mid-frame: QEMU's no-progress check fails here too.
            return Err(DecodeError::ZstdInvalid);
        }
    }
}

/// The smallest window log whose window holds `limit` bytes.
pub(super) fn window_log(limit: u64) -> u32 {
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

    /// Each enabled libzstd, with a maker of a context for a cluster size
    /// (the vendored one is sized for it, as `Decompressor` sizes it).
    fn contexts() -> alloc::vec::Vec<(&'static str, MakeContext)> {
        [
            #[cfg(feature = "zstd-c")]
            (
                "system",
                (|_| Context::System(zstd_safe::DCtx::create())) as MakeContext,
            ),
            #[cfg(feature = "zstd-c-nostd")]
            (
                "vendored",
                (|cluster| {
                    Context::Vendored(
                        zstd_nostd::DCtx::new(window_limit(cluster) as usize).unwrap(),
                    )
                }) as MakeContext,
            ),
        ]
        .into_iter()
        .collect()
    }

    /// Makes a context for a cluster size.
    type MakeContext = fn(usize) -> Context;

    enum Context {
        #[cfg(feature = "zstd-c")]
        System(zstd_safe::DCtx<'static>),
        #[cfg(feature = "zstd-c-nostd")]
        Vendored(zstd_nostd::DCtx),
    }

    impl Context {
        fn decode(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError> {
            match self {
                #[cfg(feature = "zstd-c")]
                Context::System(context) => decode(context, input, output),
                #[cfg(feature = "zstd-c-nostd")]
                Context::Vendored(context) => decode(context, input, output),
            }
        }

        fn bytes(&self) -> usize {
            match self {
                #[cfg(feature = "zstd-c")]
                Context::System(context) => context.sizeof(),
                #[cfg(feature = "zstd-c-nostd")]
                Context::Vendored(context) => context.size(),
            }
        }
    }

    #[test]
    fn context_memory_stays_bounded_by_the_cluster() {
        let data: alloc::vec::Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
        for (name, make) in contexts() {
            let mut context = make(65536);
            let mut out = alloc::vec![0u8; 65536];
            // Trailing bytes past the frame (a descriptor's 512-byte rounding) are ignored.
            let mut input = frame(&data);
            input.extend_from_slice(&[0xee; 300]);
            for _ in 0..3 {
                context.decode(&input, &mut out).unwrap();
                assert_eq!(out, data, "{name}");
            }
            // A window and a block buffer of at most the cluster, plus the
            // tables; the vendored context holds, in its one buffer, what
            // streaming a cluster-sized window needs (input block, window,
            // one more block for the output ring) and its 64 KiB literals
            // buffer: 423,712 bytes measured.
            assert!(
                context.bytes() < 3 * 64 * 1024 + 240 * 1024,
                "{name}: {}",
                context.bytes()
            );
        }
    }

    #[test]
    fn streamed_frames_fit_the_vendored_context() {
        // A frame without a content size, so libzstd cannot decode it in
        // one pass: it streams through the window buffer, which the
        // vendored context must hold within its memory for a full
        // cluster-sized window (and a 512-byte cluster, whose window is 1 KiB).
        for cluster in [512usize, 4096, 65536] {
            let data: alloc::vec::Vec<u8> = (0..cluster as u32).map(|i| (i % 253) as u8).collect();
            let window = window_limit(cluster);
            let exponent = (window.trailing_zeros() - 10) as u8;
            let mut input = alloc::vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, exponent << 3];
            for (i, piece) in data.chunks(300).enumerate() {
                let last = u32::from((i + 1) * 300 >= cluster);
                input.extend_from_slice(&(last | ((piece.len() as u32) << 3)).to_le_bytes()[..3]);
                input.extend_from_slice(piece);
            }
            for (name, make) in contexts() {
                let mut context = make(cluster);
                let mut out = alloc::vec![0u8; cluster];
                context.decode(&input, &mut out).unwrap();
                assert_eq!(out, data, "{name}, {cluster}-byte cluster");
            }
        }
    }

    #[test]
    fn an_error_does_not_stick_to_the_next_cluster() {
        let data = [0x61u8; 4096];
        for (name, make) in contexts() {
            let mut context = make(4096);
            let mut out = [0u8; 4096];
            let good = frame(&data);
            assert_eq!(
                context.decode(&good[..good.len() - 10], &mut out),
                Err(DecodeError::ZstdInvalid),
                "{name}"
            );
            context.decode(&good, &mut out).unwrap();
            assert_eq!(out, data, "{name}");
        }
    }

    #[test]
    fn window_logs() {
        assert_eq!(window_log(512), 10);
        assert_eq!(window_log(1 << 10), 10);
        assert_eq!(window_log(64 << 10), 16);
        assert_eq!(window_log(3 << 20), 22);
    }
}
