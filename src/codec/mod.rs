//! Decompression of one compressed cluster, with QEMU's acceptance rules.
//!
//! The output is always exactly one cluster. Deflate streams may run on past
//! it (QEMU accepts that); zstd frames must end exactly at it. Neither codec
//! can write past the output slice or keep working once it is full, so a
//! decompression bomb costs one cluster of output and stops there.
//!
//! Deflate has two decoders: `miniz_oxide` (feature `deflate`), and with
//! `deflate-c-nostd` libdeflate's decompressor vendored and built
//! freestanding in front of it, `miniz_oxide` deciding every stream
//! libdeflate does not decode whole (`deflate.rs` says why).
//!
//! zstd has three decoders: `ruzstd` (pure Rust, `no_std`, feature `zstd`),
//! the system's libzstd (feature `zstd-c`, host builds), and libzstd's
//! decompressor vendored and built freestanding (feature `zstd-c-nostd`,
//! every target, the firmware's and the UEFI driver's; it wins over
//! `zstd-c` when both are on). The libzstd ones spend about a third of
//! ruzstd's CPU per byte. All see a frame only after [`zstd`]'s checks of
//! its window and block headers, so they accept and refuse the same frames
//! with the same errors, and libzstd is held to the same memory bound.

use crate::error::{DecodeError, Unsupported};
use crate::header::CompressionType;

/// Why a cluster could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The data is not a valid stream for exactly one cluster.
    Decode(DecodeError),
    /// The codec is not compiled in (so never built when both are).
    #[cfg_attr(all(feature = "deflate", feature = "zstd"), allow(dead_code))]
    Unsupported(Unsupported),
}

impl From<DecodeError> for CodecError {
    fn from(error: DecodeError) -> Self {
        CodecError::Decode(error)
    }
}

/// Decoder state kept between clusters, so the zstd window and libdeflate's
/// tables are allocated once.
#[derive(Default)]
pub struct Decompressor {
    #[cfg(feature = "deflate-c-nostd")]
    libdeflate: Option<deflate_nostd::Decompressor>,
    #[cfg(all(
        feature = "zstd",
        not(feature = "zstd-c"),
        not(feature = "zstd-c-nostd")
    ))]
    zstd: Option<ruzstd::decoding::FrameDecoder>,
    #[cfg(all(feature = "zstd-c", not(feature = "zstd-c-nostd")))]
    libzstd: Option<zstd_safe::DCtx<'static>>,
    #[cfg(feature = "zstd-c-nostd")]
    vendored: Option<zstd_nostd::DCtx>,
}

impl core::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A decompressor with no buffers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills all of `output` (one cluster) from `input`, or says why it cannot.
    ///
    /// `input` is the compressed descriptor's byte range, which may extend past
    /// the stream's end (the length is only known to 512-byte precision).
    pub fn decompress(
        &mut self,
        codec: CompressionType,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CodecError> {
        match codec {
            CompressionType::Deflate => self.inflate(input, output),
            CompressionType::Zstd => self.unzstd(input, output),
        }
    }

    #[cfg(feature = "deflate-c-nostd")]
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
        if self.libdeflate.is_none() {
            // A failed allocation leaves it unmade: `miniz_oxide` decodes
            // this cluster, and the next one tries again.
            self.libdeflate = deflate_nostd::Decompressor::new();
        }
        deflate::inflate_first_with(self.libdeflate.as_mut(), input, output)
    }

    #[cfg(not(feature = "deflate-c-nostd"))]
    fn inflate(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
        deflate::inflate(input, output)
    }

    #[cfg(all(
        feature = "zstd",
        not(feature = "zstd-c"),
        not(feature = "zstd-c-nostd")
    ))]
    fn unzstd(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
        let decoder = self
            .zstd
            .get_or_insert_with(ruzstd::decoding::FrameDecoder::new);
        zstd::decode(decoder, input, output).map_err(CodecError::Decode)
    }

    #[cfg(all(feature = "zstd-c", not(feature = "zstd-c-nostd")))]
    fn unzstd(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
        let context = match &mut self.libzstd {
            Some(context) => context,
            // Only a failed allocation of the context's ~100 KiB leaves it unmade.
            None => self
                .libzstd
                .insert(zstd_safe::DCtx::try_create().ok_or(DecodeError::ZstdInvalid)?),
        };
        libzstd::decode(context, input, output).map_err(CodecError::Decode)
    }

    #[cfg(feature = "zstd-c-nostd")]
    fn unzstd(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
        // The context's memory is sized for the cluster's window, once: an
        // image's clusters are all one size. (A caller decoding a larger
        // output with the same decompressor gets a new context.)
        let window = libzstd::window_limit(output.len());
        let window = usize::try_from(window).map_err(|_| DecodeError::ZstdInvalid)?;
        if self
            .vendored
            .as_ref()
            .is_some_and(|context| context.max_window() < window)
        {
            // Freed before the larger one is allocated: one context at a time.
            self.vendored = None;
        }
        let context = match &mut self.vendored {
            Some(context) => context,
            // Only a failed allocation (about 230 KiB plus three times the
            // cluster, up to two blocks) leaves it unmade.
            None => self
                .vendored
                .insert(zstd_nostd::DCtx::new(window).ok_or(DecodeError::ZstdInvalid)?),
        };
        libzstd::decode(context, input, output).map_err(CodecError::Decode)
    }

    #[cfg(not(feature = "zstd"))]
    fn unzstd(&mut self, _input: &[u8], _output: &mut [u8]) -> Result<(), CodecError> {
        Err(CodecError::Unsupported(Unsupported::CodecDisabled {
            codec: "zstd",
            feature: "zstd",
        }))
    }
}

/// Bytes the decoder of `codec` allocates for an image of `cluster_size`
/// clusters, at most: allocated at the image's first cluster of that codec
/// and kept, on top of [`ImageBuilder::memory_bytes`](crate::ImageBuilder::memory_bytes).
/// The chain walk counts it in its budget.
///
/// - deflate through `miniz_oxide`: 0 (its state is on the stack);
/// - deflate through the vendored libdeflate (`deflate-c-nostd`): its
///   decompressor, 11,584 bytes on 64-bit targets;
/// - zstd through the vendored libzstd (`zstd-c-nostd`): its one buffer,
///   `ZSTD_estimateDStreamSize` of the cluster-sized window (423,712 bytes
///   for 64 KiB clusters);
/// - zstd through the system's libzstd (`zstd-c`): the same 1.5 layout
///   bounded with a margin for the context's size in other releases;
/// - zstd through `ruzstd`: its ring buffer (the window plus one block,
///   rounded up to a power of two, plus one byte) and its sequence buffer,
///   each twice (a copy while it grows), and four blocks of literals,
///   compressed bytes and tables;
/// - zstd in a build without a zstd decoder: 0 (its clusters are refused).
///
/// `tests/hostile.rs` and the `decode` fuzz target hold each decoder to it.
pub fn decoder_memory_bytes(codec: CompressionType, cluster_size: usize) -> usize {
    match codec {
        CompressionType::Deflate => deflate_decoder_bytes(),
        CompressionType::Zstd => zstd_decoder_bytes(cluster_size),
    }
}

#[cfg(feature = "deflate-c-nostd")]
fn deflate_decoder_bytes() -> usize {
    deflate_nostd::Decompressor::memory_size()
}

#[cfg(not(feature = "deflate-c-nostd"))]
fn deflate_decoder_bytes() -> usize {
    0
}

#[cfg(feature = "zstd-c-nostd")]
fn zstd_decoder_bytes(cluster_size: usize) -> usize {
    let window = libzstd::window_limit(cluster_size);
    zstd_nostd::DCtx::memory_size(usize::try_from(window).unwrap_or(usize::MAX))
}

#[cfg(all(feature = "zstd-c", not(feature = "zstd-c-nostd")))]
fn zstd_decoder_bytes(cluster_size: usize) -> usize {
    // libzstd 1.5.4's `ZSTD_DCtx` is 227,040 bytes on x86_64; 256 KiB leaves
    // room for other releases. Then an input block, and the output buffer
    // of the window plus one block and 64 bytes of slack.
    const CONTEXT_BYTES: usize = 256 << 10;
    let window = usize::try_from(libzstd::window_limit(cluster_size)).unwrap_or(usize::MAX);
    let block = window.min(zstd::MAX_BLOCK_BYTES as usize);
    CONTEXT_BYTES
        .saturating_add(window)
        .saturating_add(2 * block)
        .saturating_add(64)
}

#[cfg(all(
    feature = "zstd",
    not(feature = "zstd-c"),
    not(feature = "zstd-c-nostd")
))]
fn zstd_decoder_bytes(cluster_size: usize) -> usize {
    // The window is at most the cluster (1 KiB for 512-byte clusters).
    let block_max = zstd::MAX_BLOCK_BYTES as usize;
    let block = cluster_size.clamp(zstd::MIN_WINDOW_BYTES as usize, block_max);
    let ring = cluster_size
        .saturating_add(block_max)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    // 12 bytes per sequence, at most one per 3 bytes of the block (longer
    // headers are refused), doubled by `Vec`'s growth.
    let sequences = 2 * 12 * (block / 3);
    ring.saturating_add(sequences)
        .saturating_mul(2)
        .saturating_add(4 * block_max)
}

/// Without a zstd decoder, zstd clusters are refused and nothing is allocated.
#[cfg(not(feature = "zstd"))]
fn zstd_decoder_bytes(_cluster_size: usize) -> usize {
    0
}

/// Whether this build can read clusters compressed with `codec`.
pub fn codec_enabled(codec: CompressionType) -> bool {
    match codec {
        CompressionType::Deflate => cfg!(feature = "deflate"),
        CompressionType::Zstd => cfg!(feature = "zstd"),
    }
}

/// The cargo feature that enables `codec`.
pub fn codec_feature(codec: CompressionType) -> &'static str {
    match codec {
        CompressionType::Deflate => "deflate",
        CompressionType::Zstd => "zstd",
    }
}

mod deflate;
#[cfg(any(feature = "zstd-c", feature = "zstd-c-nostd"))]
mod libzstd;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(all(test, not(feature = "zstd")))]
mod tests {
    use super::*;

    #[test]
    fn disabled_codec_names_its_feature() {
        let mut out = [0u8; 512];
        let error = Decompressor::new()
            .decompress(CompressionType::Zstd, &[0; 16], &mut out)
            .unwrap_err();
        assert_eq!(
            error,
            CodecError::Unsupported(Unsupported::CodecDisabled {
                codec: "zstd",
                feature: "zstd"
            })
        );
    }
}
