//! zstd's frame rules as QEMU's decoder applies them, and the `ruzstd`
//! decoder: frame by frame, one block at a time, so that memory stays at
//! the window (bounded by the output size) plus one 128 KiB block.

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use ruzstd::io::Read;

use crate::error::DecodeError;

/// zstd's smallest window; 512-byte clusters allow that much.
pub(super) const MIN_WINDOW_BYTES: u64 = 1 << 10;
const FRAME_MAGIC: u32 = 0xfd2f_b528;
const SKIPPABLE_MAGIC: u32 = 0x184d_2a50;
const SKIPPABLE_MASK: u32 = 0xffff_fff0;

/// What starts at a frame boundary.
pub(super) enum FrameStart {
    Frame { window: u64 },
    Skippable { total_len: u64 },
}

/// Reads the frame header far enough to know the window, before the decoder allocates it.
pub(super) fn frame_start(input: &[u8]) -> Result<FrameStart, DecodeError> {
    let magic = u32::from_le_bytes(
        input
            .get(..4)
            .ok_or(DecodeError::ZstdInvalid)?
            .try_into()
            .expect("4 bytes"),
    );
    if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
        let len = input.get(4..8).ok_or(DecodeError::ZstdInvalid)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
        return Ok(FrameStart::Skippable {
            total_len: 8 + u64::from(len),
        });
    }
    if magic != FRAME_MAGIC {
        return Err(DecodeError::ZstdInvalid);
    }
    let descriptor = *input.get(4).ok_or(DecodeError::ZstdInvalid)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let window_descriptor = *input.get(5).ok_or(DecodeError::ZstdInvalid)?;
        let window_log = 10 + u32::from(window_descriptor >> 3);
        let base = 1u64 << window_log;
        let window = base + (base / 8) * u64::from(window_descriptor & 7);
        return Ok(FrameStart::Frame { window });
    }
    // Single segment: the window is the content size, which follows the dictionary id.
    let dict_bytes = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let size_bytes = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let start = 5 + dict_bytes;
    let field = input
        .get(start..start + size_bytes)
        .ok_or(DecodeError::ZstdInvalid)?;
    let mut le = [0u8; 8];
    le[..size_bytes].copy_from_slice(field);
    let mut window = u64::from_le_bytes(le);
    if size_bytes == 2 {
        window += 256;
    }
    Ok(FrameStart::Frame { window })
}

#[cfg_attr(any(feature = "zstd-c", feature = "zstd-c-nostd"), allow(dead_code))] // tested, but libzstd decodes
pub(super) fn decode(
    decoder: &mut FrameDecoder,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), DecodeError> {
    // zstd's smallest window is 1 KiB, so 512-byte clusters allow that much.
    let limit = (output.len() as u64).max(MIN_WINDOW_BYTES);
    let mut source = input;
    let mut produced = 0;
    while produced < output.len() {
        let window = match frame_start(source)? {
            FrameStart::Skippable { total_len } => {
                let skip = usize::try_from(total_len).map_err(|_| DecodeError::ZstdInvalid)?;
                source = source.get(skip..).ok_or(DecodeError::ZstdInvalid)?;
                continue;
            }
            FrameStart::Frame { window } => window,
        };
        // Matches reach back at most into this cluster's output, so a larger
        // window is never needed, and refusing it bounds the allocation.
        if window > limit {
            return Err(DecodeError::ZstdWindowTooLarge { window, limit });
        }
        decoder
            .reset(&mut source)
            .map_err(|_| DecodeError::ZstdInvalid)?;
        let block_max = window.min(MAX_BLOCK_BYTES) as usize;
        produced += decode_frame(decoder, &mut source, &mut output[produced..], block_max)?;
    }
    Ok(())
}

/// A block's output is at most 128 KiB, and at most the window.
pub(super) const MAX_BLOCK_BYTES: u64 = 128 << 10;

/// The shortest match a sequence can make (zstd's MINMATCH).
const MIN_MATCH_BYTES: usize = 3;

/// Refuses a compressed block whose header announces more output than a
/// block may hold: all its literals, plus at least 3 bytes per sequence.
/// libzstd refuses such blocks too. ruzstd would find out itself, but only
/// after sizing its literals buffer (up to 1 MiB from one RLE byte) and
/// its sequence buffer (up to 98047 x 12 bytes, doubled when a reused
/// decoder grows it) from these numbers.
fn check_block(source: &[u8], block_max: usize) -> Result<(), DecodeError> {
    let Some(header) = source.get(..3) else {
        return Ok(()); // too short: the decoder reports the truncation
    };
    if (header[0] >> 1) & 3 != 2 {
        // Raw and RLE blocks state their size, which the decoder checks first.
        return Ok(());
    }
    let header = u32::from_le_bytes([header[0], header[1], header[2], 0]);
    let block_len = (header >> 3) as usize;
    let body = &source[3..source.len().min(3 + block_len)];
    let Some(literals) = literals_section(body) else {
        return Ok(());
    };
    let sequences = body
        .get(literals.len..)
        .and_then(sequence_count)
        .unwrap_or(0);
    let announced = literals.regenerated + MIN_MATCH_BYTES * sequences;
    if announced > block_max {
        return Err(DecodeError::ZstdBlockTooLarge {
            announced,
            limit: block_max,
        });
    }
    Ok(())
}

/// What a literals section header says.
struct LiteralsSection {
    /// Literal bytes the section decodes to.
    regenerated: usize,
    /// Bytes of the section, header included.
    len: usize,
}

/// Reads a literals section header (RFC 8878, 3.1.1.3.1.1); `None` when truncated.
fn literals_section(body: &[u8]) -> Option<LiteralsSection> {
    let byte = |i: usize| body.get(i).copied().map(usize::from);
    let b0 = byte(0)?;
    let size_format = (b0 >> 2) & 3;
    let section = match b0 & 3 {
        kind @ (0 | 1) => {
            let (header_len, regenerated) = match size_format {
                0 | 2 => (1, b0 >> 3),
                1 => (2, (b0 >> 4) | (byte(1)? << 4)),
                _ => (3, (b0 >> 4) | (byte(1)? << 4) | (byte(2)? << 12)),
            };
            // Raw literals follow in full; RLE literals are one byte.
            let content = if kind == 0 { regenerated } else { 1 };
            LiteralsSection {
                regenerated,
                len: header_len + content,
            }
        }
        _ => {
            // Huffman-coded: regenerated and compressed sizes of 10, 14 or 18 bits.
            let (header_len, regenerated, compressed) = match size_format {
                0 | 1 => (
                    3,
                    (b0 >> 4) | ((byte(1)? & 0x3f) << 4),
                    (byte(1)? >> 6) | (byte(2)? << 2),
                ),
                2 => (
                    4,
                    (b0 >> 4) | (byte(1)? << 4) | ((byte(2)? & 3) << 12),
                    (byte(2)? >> 2) | (byte(3)? << 6),
                ),
                _ => (
                    5,
                    (b0 >> 4) | (byte(1)? << 4) | ((byte(2)? & 0x3f) << 12),
                    (byte(2)? >> 6) | (byte(3)? << 2) | (byte(4)? << 10),
                ),
            };
            LiteralsSection {
                regenerated,
                len: header_len + compressed,
            }
        }
    };
    Some(section)
}

/// Reads the number of sequences at the start of a sequences section
/// (RFC 8878, 3.1.1.3.2.1); `None` when truncated.
fn sequence_count(section: &[u8]) -> Option<usize> {
    let byte = |i: usize| section.get(i).copied().map(usize::from);
    Some(match byte(0)? {
        small @ 0..=127 => small,
        high @ 128..=254 => ((high - 128) << 8) + byte(1)?,
        _ => byte(1)? + (byte(2)? << 8) + 0x7f00,
    })
}

/// Checks the header of every block of the frame at the start of
/// `frame` with [`check_block`], before a decoder sees any of them.
/// Stops quietly where the frame is truncated: the decoder reports that.
/// (ruzstd, decoding block by block, checks each just before instead.)
#[cfg(any(feature = "zstd-c", feature = "zstd-c-nostd", test))]
pub(super) fn check_frame_blocks(frame: &[u8], block_max: usize) -> Result<(), DecodeError> {
    let Some(mut rest) = frame_header_len(frame).and_then(|len| frame.get(len..)) else {
        return Ok(());
    };
    loop {
        check_block(rest, block_max)?;
        let Some(header) = rest.get(..3) else {
            return Ok(());
        };
        let header = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        let last = header & 1 != 0;
        let block_len = (header >> 3) as usize;
        // An RLE block's content is one byte, whatever size it states.
        let content = if (header >> 1) & 3 == 1 { 1 } else { block_len };
        match rest.get(3 + content..) {
            Some(next) if !last => rest = next,
            _ => return Ok(()),
        }
    }
}

/// The length of a frame header (RFC 8878, 3.1.1.1), magic included;
/// `None` when truncated.
#[cfg(any(feature = "zstd-c", feature = "zstd-c-nostd", test))]
fn frame_header_len(frame: &[u8]) -> Option<usize> {
    let descriptor = *frame.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    let window_bytes = usize::from(!single_segment);
    let dict_bytes = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let size_bytes = [usize::from(single_segment), 2, 4, 8][usize::from(descriptor >> 6)];
    Some(5 + window_bytes + dict_bytes + size_bytes)
}

/// Decodes one frame into `output`; the frame must fit.
#[cfg_attr(any(feature = "zstd-c", feature = "zstd-c-nostd"), allow(dead_code))]
fn decode_frame(
    decoder: &mut FrameDecoder,
    source: &mut &[u8],
    output: &mut [u8],
    block_max: usize,
) -> Result<usize, DecodeError> {
    let mut produced = 0;
    loop {
        check_block(source, block_max)?;
        let finished = decoder
            .decode_blocks(&mut *source, BlockDecodingStrategy::UptoBlocks(1))
            .map_err(|_| DecodeError::ZstdInvalid)?;
        produced += decoder
            .read(&mut output[produced..])
            .map_err(|_| DecodeError::ZstdInvalid)?;
        let overflow = decoder.can_collect() > 0;
        if overflow || (!finished && produced == output.len()) {
            // The frame produces more than the cluster holds: QEMU refuses it.
            return Err(DecodeError::ZstdLength { produced });
        }
        if finished {
            return Ok(produced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_larger_than_the_window_are_refused_like_libzstd() {
        // Window 1 KiB (not single segment), one raw block of 2 KiB: `zstd -d`
        // (libzstd 1.5.4) says "Data corruption detected". Found by the
        // structured fuzzer, whose model had expected the bytes.
        let mut frame = alloc::vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00];
        let header = 1u32 | (2048 << 3);
        frame.extend_from_slice(&header.to_le_bytes()[..3]);
        frame.extend((0..2048).map(|i| i as u8));
        let mut out = alloc::vec![0u8; 2048];
        let mut decoder = FrameDecoder::new();
        assert_eq!(
            decode(&mut decoder, &frame, &mut out),
            Err(DecodeError::ZstdInvalid)
        );
    }

    #[test]
    fn literals_larger_than_a_block_are_refused_before_decoding() {
        // A compressed block whose RLE literals claim 1 MiB - 1 from one byte.
        let block = [0x3d, 0x00, 0x00, 0x0d | 0xf0, 0xff, 0xff, 0x5a, 0x00];
        assert_eq!(
            check_block(&block, 128 << 10),
            Err(DecodeError::ZstdBlockTooLarge {
                announced: (1 << 20) - 1,
                limit: 128 << 10
            })
        );
        let small = [0x2d, 0x00, 0x00, 0x0d, 0x10, 0x00, 0x5a, 0x00]; // 256 bytes
        assert_eq!(check_block(&small, 128 << 10), Ok(()));
        assert!(check_block(&small, 128).is_err());
    }

    #[test]
    fn each_sequence_counts_as_a_three_byte_match() {
        // 20 raw literals, then the sequence count in each of its three forms.
        let block = |count: &[u8]| {
            let mut body = alloc::vec![20 << 3];
            body.extend(core::iter::repeat_n(0x61, 20));
            body.extend_from_slice(count);
            let header = 2 << 1 | ((body.len() as u32) << 3);
            let mut block = header.to_le_bytes()[..3].to_vec();
            block.extend(body);
            block
        };
        let announced = |block: &[u8]| match check_block(block, 0) {
            Err(DecodeError::ZstdBlockTooLarge { announced, .. }) => announced,
            other => panic!("{other:?}"),
        };
        assert_eq!(announced(&block(&[0])), 20);
        assert_eq!(announced(&block(&[127])), 20 + 3 * 127);
        assert_eq!(announced(&block(&[129, 2])), 20 + 3 * 258);
        assert_eq!(announced(&block(&[255, 1, 0])), 20 + 3 * 0x7f01);
        // Huffman literals with a 5-byte header: 1000 literals in 300 bytes.
        let (regenerated, compressed) = (1000u64, 300u64);
        let fields = 0x02 | 3 << 2 | regenerated << 4 | compressed << 22;
        let mut huffman = fields.to_le_bytes()[..5].to_vec();
        huffman.extend(core::iter::repeat_n(0, 300));
        huffman.push(10);
        let mut block = ((2 << 1) | ((huffman.len() as u32) << 3)).to_le_bytes()[..3].to_vec();
        block.extend(huffman);
        assert_eq!(announced(&block), 1000 + 3 * 10);
        // A truncated header is the decoder's to report.
        assert_eq!(check_block(&block[..5], 0), Ok(()));
    }

    #[test]
    fn every_block_of_a_frame_is_checked() {
        // Window 1 KiB, not single segment; a raw block, an RLE block, then
        // a compressed block whose RLE literals claim 1 MiB - 1.
        let mut frame = alloc::vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00];
        frame.extend_from_slice(&(100u32 << 3).to_le_bytes()[..3]);
        frame.extend(core::iter::repeat_n(0x11, 100));
        frame.extend_from_slice(&(2 | (900u32 << 3)).to_le_bytes()[..3]);
        frame.push(0x22);
        assert_eq!(check_frame_blocks(&frame, 1024), Ok(()));
        let bomb = [0x3d, 0x00, 0x00, 0x0d | 0xf0, 0xff, 0xff, 0x5a, 0x00];
        frame.extend_from_slice(&bomb);
        assert_eq!(
            check_frame_blocks(&frame, 1024),
            Err(DecodeError::ZstdBlockTooLarge {
                announced: (1 << 20) - 1,
                limit: 1024
            })
        );
        // Truncated anywhere: left to the decoder.
        for len in 0..frame.len() - bomb.len() {
            assert_eq!(check_frame_blocks(&frame[..len], 1024), Ok(()));
        }
    }
}
