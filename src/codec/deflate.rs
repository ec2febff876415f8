//! Deflate-compressed clusters (QEMU's default compression), through
//! `miniz_oxide` (feature `deflate`): no allocator, output bounded by the
//! cluster; with `deflate-c-nostd`, libdeflate first.
//!
//! QEMU's rule (`qcow2_decompress` in `block/qcow2-threads.c`): one zlib
//! `inflate` of the raw stream (window bits -12) into the cluster, accepted
//! when the cluster is full, whether the stream ended there (`Z_STREAM_END`)
//! or goes on (`Z_BUF_ERROR` with `avail_out == 0`); input after the
//! stream's end is ignored, as the descriptor's length is only known to the
//! sector. [`inflate`] implements it with `miniz_oxide`, which refuses and
//! accepts what zlib does (the QEMU-compared tests and the fuzz targets).
//!
//! libdeflate decodes whole buffers only and accepts less: a stream that
//! goes on past the cluster is `OutputFull` to it, and the vendored copy
//! refuses the few malformed codes that upstream libdeflate decodes and
//! zlib does not (`deflate-nostd/README.md`). So [`inflate_first_with`]
//! keeps libdeflate's result only when it is success with the whole
//! cluster, a stream that zlib and `miniz_oxide` decode to the same bytes;
//! anything else is decided by [`inflate`], so the rule stays in one
//! place. The cost of a refusal is one more decode of that cluster.

use super::CodecError;
#[cfg(feature = "deflate")]
use crate::error::DecodeError;
#[cfg(not(feature = "deflate"))]
use crate::error::Unsupported;

#[cfg(feature = "deflate")]
pub(super) fn inflate(input: &[u8], output: &mut [u8]) -> Result<(), CodecError> {
    use miniz_oxide::inflate::{decompress_slice_iter_to_slice, TINFLStatus};
    match decompress_slice_iter_to_slice(output, core::iter::once(input), false, true) {
        Ok(produced) if produced == output.len() => Ok(()),
        Ok(produced) => Err(DecodeError::DeflateShort { produced }.into()),
        // The cluster is full and the stream goes on: QEMU keeps the full cluster.
        Err(TINFLStatus::HasMoreOutput) => Ok(()),
        Err(_) => Err(DecodeError::DeflateInvalid.into()),
    }
}

/// libdeflate when it decodes `input` into the whole of `output`, otherwise
/// (or without a decompressor, whose allocation failed) [`inflate`].
#[cfg(feature = "deflate-c-nostd")]
pub(super) fn inflate_first_with(
    libdeflate: Option<&mut deflate_nostd::Decompressor>,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), CodecError> {
    match libdeflate.map(|decompressor| decompressor.decompress(input, output)) {
        Some(Ok(())) => Ok(()),
        // Short, output full, bad data, or no decompressor: QEMU's rule
        // decides (and rewrites `output` from its start).
        Some(Err(_)) | None => inflate(input, output),
    }
}

#[cfg(not(feature = "deflate"))]
pub(super) fn inflate(_input: &[u8], _output: &mut [u8]) -> Result<(), CodecError> {
    Err(CodecError::Unsupported(Unsupported::CodecDisabled {
        codec: "deflate",
        feature: "deflate",
    }))
}

#[cfg(all(test, feature = "deflate"))]
mod tests {
    use super::super::Decompressor;
    use super::*;
    use crate::header::CompressionType;

    #[test]
    fn deflate_rules() {
        let data: alloc::vec::Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let stream = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let mut decompressor = Decompressor::new();
        let mut out = [0u8; 4096];
        decompressor
            .decompress(CompressionType::Deflate, &stream, &mut out)
            .unwrap();
        assert_eq!(&out[..], &data[..]);
        // A longer stream is cut at the cluster.
        let mut half = [0u8; 2048];
        decompressor
            .decompress(CompressionType::Deflate, &stream, &mut half)
            .unwrap();
        assert_eq!(&half[..], &data[..2048]);
        // A shorter one is an error, not zero padding.
        let mut big = [0u8; 8192];
        assert_eq!(
            decompressor.decompress(CompressionType::Deflate, &stream, &mut big),
            Err(CodecError::Decode(DecodeError::DeflateShort {
                produced: 4096
            }))
        );
        assert_eq!(
            decompressor.decompress(
                CompressionType::Deflate,
                &stream[..stream.len() / 2],
                &mut out
            ),
            Err(CodecError::Decode(DecodeError::DeflateInvalid))
        );
    }
}
