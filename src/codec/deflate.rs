//! Deflate-compressed clusters (QEMU's default compression), through
//! `miniz_oxide` (feature `deflate`): no allocator, output bounded by the
//! cluster.

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
