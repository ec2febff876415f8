//! libdeflate's decompressor for `no_std` builds: the C sources of
//! libdeflate 1.26 (`libdeflate/`, vendored from the `libdeflate-sys`
//! crate) compiled freestanding by `build.rs`, behind a safe API.
//!
//! This crate holds the `unsafe` FFI boundary so that `qcow2-reader` keeps
//! `#![forbid(unsafe_code)]`. libdeflate decodes a whole buffer in one call
//! (no streaming state, no window copy), which is what a QCOW2 cluster is:
//! the input is the compressed bytes, the output exactly one cluster. Its
//! decompressor state (the Huffman decode tables: 11,584 bytes with the
//! allocation header on 64-bit targets) is allocated once by
//! [`Decompressor::new`], through Rust's global allocator, and freed on
//! drop; decoding never allocates. The C code needs `memcpy`, `memset` and
//! `memcmp` from the program (`compiler_builtins` provides them on the
//! `-none` and `-uefi` targets, libc on hosts) and nothing else.
//!
//! The vendored copy refuses the few malformed streams upstream libdeflate
//! decodes and zlib refuses (more than 286/30 symbols, the static code's
//! invalid symbols, incomplete codes): README.md lists the changes.
#![no_std]

extern crate alloc;

use alloc::alloc::{alloc as allocate_bytes, dealloc, Layout};
use core::ffi::c_void;
use core::fmt;
use core::ptr::{self, NonNull};

/// libdeflate's opaque decompressor type.
#[repr(C)]
struct RawDecompressor {
    _opaque: [u8; 0],
}

/// `struct libdeflate_options` (libdeflate.h).
#[repr(C)]
struct Options {
    sizeof_options: usize,
    malloc_func: Option<extern "C" fn(usize) -> *mut c_void>,
    free_func: Option<extern "C" fn(*mut c_void)>,
}

/// `LIBDEFLATE_SUCCESS` and the other `enum libdeflate_result` values.
const SUCCESS: i32 = 0;
const BAD_DATA: i32 = 1;
const SHORT_OUTPUT: i32 = 2;
const INSUFFICIENT_SPACE: i32 = 3;

// The names carry the `qcow2_` prefix of namespace.h.
extern "C" {
    #[link_name = "qcow2_libdeflate_alloc_decompressor_ex"]
    fn libdeflate_alloc_decompressor_ex(options: *const Options) -> *mut RawDecompressor;
    #[link_name = "qcow2_libdeflate_free_decompressor"]
    fn libdeflate_free_decompressor(decompressor: *mut RawDecompressor);
    #[link_name = "qcow2_libdeflate_deflate_decompress_ex"]
    fn libdeflate_deflate_decompress_ex(
        decompressor: *mut RawDecompressor,
        input: *const c_void,
        input_len: usize,
        output: *mut c_void,
        output_len: usize,
        actual_input_len: *mut usize,
        actual_output_len: *mut usize,
    ) -> i32;
    #[link_name = "qcow2_libdeflate_decompressor_size"]
    fn libdeflate_decompressor_size() -> usize;
}

/// Why a stream did not fill the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The stream is invalid, or its input ends before its last block does
    /// (`LIBDEFLATE_BAD_DATA`).
    BadData,
    /// The stream ended after `produced` bytes, before the output was full.
    Short {
        /// The bytes the stream decodes to.
        produced: usize,
    },
    /// The output was full before the stream ended
    /// (`LIBDEFLATE_INSUFFICIENT_SPACE`); its contents are then unspecified.
    OutputFull,
    /// A result libdeflate 1.26 does not return.
    Unknown(i32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadData => f.write_str("invalid or truncated deflate stream"),
            Error::Short { produced } => {
                write!(
                    f,
                    "the deflate stream ends after {produced} bytes, before the output is full"
                )
            }
            Error::OutputFull => f.write_str("the deflate stream goes on past the output's end"),
            Error::Unknown(code) => write!(f, "libdeflate returned the unknown result {code}"),
        }
    }
}

/// Bytes in front of each block `allocate` hands out, holding its size for
/// `release` (libdeflate's `free_func` gets only the pointer). Also the
/// alignment, which is `malloc`'s on the 64-bit targets.
const HEADER: usize = 16;

/// libdeflate's `malloc_func`: `size` bytes through Rust's global
/// allocator, or null. Never panics (it is called from C).
extern "C" fn allocate(size: usize) -> *mut c_void {
    let Some(layout) = block_layout(size) else {
        return ptr::null_mut();
    };
    // SAFETY: `layout` is at least HEADER bytes, never zero-sized.
    let base = unsafe { allocate_bytes(layout) };
    if base.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `base` is a fresh block of `layout.size()` > HEADER bytes,
    // aligned to HEADER, so its first `usize` is writable and aligned, and
    // `base + HEADER` is inside it (or one past its end when `size` is 0).
    unsafe {
        base.cast::<usize>().write(layout.size());
        base.add(HEADER).cast()
    }
}

/// libdeflate's `free_func`: gives back a block of `allocate`.
extern "C" fn release(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    // SAFETY: libdeflate passes only pointers `allocate` returned, once
    // each: HEADER bytes past the start of a block of the global allocator
    // whose first `usize` holds its total size, allocated with HEADER's
    // alignment; that size and alignment made a valid `Layout` then.
    unsafe {
        let base = block.cast::<u8>().sub(HEADER);
        let total = base.cast::<usize>().read();
        dealloc(base, Layout::from_size_align_unchecked(total, HEADER));
    }
}

/// The layout of a block of `size` usable bytes behind its header.
fn block_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, HEADER).ok()
}

/// A libdeflate decompressor, its state allocated once.
pub struct Decompressor {
    /// Allocated by `allocate` in `new`, freed by `release` on drop.
    raw: NonNull<RawDecompressor>,
}

// SAFETY: the decompressor is plain memory owned by this value alone, and
// every use goes through `&mut self`. libdeflate's only global state is the
// x86 CPU feature word and the chosen decode function, each written with
// the same value by whichever thread gets there first (libdeflate's own
// rule: different decompressors may be used by different threads at once).
unsafe impl Send for Decompressor {}
// SAFETY: no method takes `&self` and touches the decompressor.
unsafe impl Sync for Decompressor {}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("bytes", &Self::memory_size())
            .finish()
    }
}

impl Decompressor {
    /// The bytes a decompressor takes from the allocator: libdeflate's
    /// `struct libdeflate_decompressor` and this crate's header in front.
    pub fn memory_size() -> usize {
        // SAFETY: returns a constant (a `sizeof`), touches nothing.
        let size = unsafe { libdeflate_decompressor_size() };
        block_layout(size).map_or(usize::MAX, |layout| layout.size())
    }

    /// A decompressor with its memory allocated now, once; `None` if that
    /// allocation fails.
    pub fn new() -> Option<Self> {
        let options = Options {
            sizeof_options: core::mem::size_of::<Options>(),
            malloc_func: Some(allocate),
            free_func: Some(release),
        };
        // SAFETY: `options` is a valid `struct libdeflate_options` whose
        // allocator functions behave like malloc and free; libdeflate reads
        // it during the call only.
        let raw = unsafe { libdeflate_alloc_decompressor_ex(&options) };
        Some(Self {
            raw: NonNull::new(raw)?,
        })
    }

    /// Decodes the raw DEFLATE stream (no zlib or gzip header) at the start
    /// of `input` into all of `output`. Bytes after the stream's last block
    /// are ignored. An error leaves `output` with unspecified contents.
    pub fn decompress(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), Error> {
        let mut consumed = 0usize;
        let mut produced = 0usize;
        // SAFETY: `raw` is a live decompressor (see `new`), used by one
        // caller at a time (`&mut self`). The pointers and lengths describe
        // the two slices, borrowed for the call (one mutably, so they do
        // not overlap); libdeflate reads only `input[..input.len()]`,
        // writes only `output[..output.len()]`, writes the two counts, and
        // keeps no pointer past the call.
        let result = unsafe {
            libdeflate_deflate_decompress_ex(
                self.raw.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                output.as_mut_ptr().cast(),
                output.len(),
                &mut consumed,
                &mut produced,
            )
        };
        match result {
            SUCCESS if produced == output.len() => Ok(()),
            SUCCESS | SHORT_OUTPUT => Err(Error::Short { produced }),
            BAD_DATA => Err(Error::BadData),
            INSUFFICIENT_SPACE => Err(Error::OutputFull),
            other => Err(Error::Unknown(other)),
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `libdeflate_alloc_decompressor_ex` and is
        // freed once, here; libdeflate frees it with `release`.
        unsafe { libdeflate_free_decompressor(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::vec::Vec;
    use miniz_oxide::deflate::compress_to_vec;

    /// 64 KiB of text-like bytes: compressible, but not one repeated byte.
    fn data() -> Vec<u8> {
        (0..65536u32)
            .map(|i| b"qcow2 cluster data "[(i as usize * 7 + (i as usize >> 9)) % 19])
            .collect()
    }

    #[test]
    fn a_valid_stream_fills_the_output() {
        let data = data();
        let stream = compress_to_vec(&data, 6);
        let mut out = alloc::vec![0u8; data.len()];
        let mut decompressor = Decompressor::new().unwrap();
        decompressor.decompress(&stream, &mut out).unwrap();
        assert_eq!(out, data);
        // And again with the same state.
        out.fill(0);
        decompressor.decompress(&stream, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let data = data();
        let mut stream = compress_to_vec(&data, 6);
        // A QCOW2 descriptor's length is rounded up to the sector.
        stream.extend_from_slice(&[0xa5; 511]);
        let mut out = alloc::vec![0u8; data.len()];
        Decompressor::new()
            .unwrap()
            .decompress(&stream, &mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let data = data();
        let stream = compress_to_vec(&data, 6);
        let mut out = alloc::vec![0u8; data.len()];
        let mut decompressor = Decompressor::new().unwrap();
        for cut in [0, 1, stream.len() / 2, stream.len() - 1] {
            let result = decompressor.decompress(&stream[..cut], &mut out);
            assert!(result.is_err(), "cut at {cut}: {result:?}");
        }
    }

    #[test]
    fn a_stream_longer_than_the_output_is_output_full() {
        let data = data();
        let stream = compress_to_vec(&data, 6);
        let mut half = alloc::vec![0u8; data.len() / 2];
        let result = Decompressor::new().unwrap().decompress(&stream, &mut half);
        assert_eq!(result, Err(Error::OutputFull));
    }

    #[test]
    fn a_stream_shorter_than_the_output_says_how_much_it_made() {
        let data = data();
        let stream = compress_to_vec(&data, 6);
        let mut big = alloc::vec![0u8; data.len() * 2];
        let result = Decompressor::new().unwrap().decompress(&stream, &mut big);
        assert_eq!(
            result,
            Err(Error::Short {
                produced: data.len()
            })
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut decompressor = Decompressor::new().unwrap();
        let mut out = alloc::vec![0u8; 4096];
        // A small xorshift generator: deterministic garbage of many lengths.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000usize {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Ok(()) = decompressor.decompress(&input, &mut out) {
                // Possible in principle (a stored block of 4096 bytes), never
                // by chance here; whatever it is, it is miniz_oxide's too.
                let reference = miniz_oxide::inflate::decompress_to_vec(&input).unwrap();
                assert_eq!(&reference[..out.len()], &out[..]);
            }
        }
        // Error results have names.
        assert_eq!(
            std::format!("{}", Error::BadData),
            "invalid or truncated deflate stream"
        );
    }

    /// A DEFLATE bit writer: fields LSB first, Huffman codes MSB first.
    #[derive(Default)]
    struct Bits {
        bytes: Vec<u8>,
        used: u32,
    }

    impl Bits {
        fn field(&mut self, value: u32, count: u32) -> &mut Self {
            for bit in 0..count {
                if self.used.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let last = self.bytes.len() - 1;
                self.bytes[last] |= (((value >> bit) & 1) as u8) << (self.used % 8);
                self.used += 1;
            }
            self
        }

        fn code(&mut self, code: u32, len: u32) -> &mut Self {
            let reversed = code.reverse_bits() >> (32 - len);
            self.field(reversed, len)
        }

        /// A fixed-code literal/length symbol.
        fn fixed(&mut self, symbol: u32) -> &mut Self {
            match symbol {
                0..=143 => self.code(0x30 + symbol, 8),
                144..=255 => self.code(0x190 + symbol - 144, 9),
                256..=279 => self.code(symbol - 256, 7),
                _ => self.code(0xc0 + symbol - 280, 8),
            }
        }
    }

    /// libdeflate (this copy) and `miniz_oxide` both refuse `stream` for an
    /// output of `len` bytes.
    fn both_refuse(stream: &[u8], len: usize) {
        let mut out = alloc::vec![0u8; len];
        let ours = Decompressor::new().unwrap().decompress(stream, &mut out);
        assert_eq!(ours, Err(Error::BadData));
        let reference = miniz_oxide::inflate::decompress_slice_iter_to_slice(
            &mut out,
            core::iter::once(stream),
            false,
            true,
        );
        assert!(reference.is_err(), "{reference:?}");
    }

    /// A static block: 'a', then `repeats` matches of 258 at distance 1.
    fn static_prefix(repeats: usize) -> Bits {
        let mut bits = Bits::default();
        bits.field(1, 1).field(1, 2).fixed(u32::from(b'a'));
        for _ in 0..repeats {
            // Length 258 (symbol 285), distance 1 (code 0, 5 bits).
            bits.fixed(285).code(0, 5);
        }
        bits
    }

    #[test]
    fn static_litlen_286_is_refused_as_zlib_does() {
        // Upstream libdeflate decodes 286 as a length of 258.
        let mut bits = static_prefix(2);
        bits.fixed(286).code(0, 5).fixed(256);
        both_refuse(&bits.bytes, 1 + 3 * 258);
    }

    #[test]
    fn static_distance_30_is_refused_as_zlib_does() {
        // Upstream libdeflate decodes 30 as offsets from 24577.
        let mut bits = static_prefix(120);
        bits.fixed(257).code(30, 5).field(0, 13).fixed(256);
        both_refuse(&bits.bytes, 1 + 120 * 258 + 3);
    }

    /// A dynamic block header and code lengths: `litlen` and `offset` are
    /// the lengths (0, 1 or 8 only), coded with the precode 8 -> '0',
    /// 0 -> '10', 1 -> '11'.
    fn dynamic(litlen: &[u8], offset: &[u8]) -> Bits {
        const ORDER: [usize; 19] = [
            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
        ];
        let mut bits = Bits::default();
        bits.field(1, 1).field(2, 2);
        bits.field(litlen.len() as u32 - 257, 5);
        bits.field(offset.len() as u32 - 1, 5);
        bits.field(18 - 4, 4); // precode lengths up to symbol 1's place
        for &symbol in &ORDER[..18] {
            let len = match symbol {
                8 => 1,
                0 | 1 => 2,
                _ => 0,
            };
            bits.field(len, 3);
        }
        for &len in litlen.iter().chain(offset) {
            match len {
                8 => bits.code(0b0, 1),
                0 => bits.code(0b10, 2),
                _ => bits.code(0b11, 2),
            };
        }
        bits
    }

    #[test]
    fn more_than_30_offset_symbols_are_refused_as_zlib_does() {
        // Literals 0..=254 and end of block, all 8 bits: code = symbol,
        // end of block 255. 31 offset symbols, two used.
        let mut litlen = alloc::vec![8u8; 257];
        litlen[255] = 0;
        let mut offset = alloc::vec![0u8; 31];
        offset[0] = 1;
        offset[1] = 1;
        let mut bits = dynamic(&litlen, &offset);
        bits.code(u32::from(b'a'), 8).code(255, 8);
        both_refuse(&bits.bytes, 1);
    }

    /// A block with one offset codeword (allowed): 'a', then a match of 3
    /// whose offset codeword is `offset_bit`, then end of block.
    fn single_offset_code(offset_bit: u32) -> Vec<u8> {
        // Literals 0..=253, end of block (code 254) and length 3 (code 255).
        let mut litlen = alloc::vec![8u8; 258];
        litlen[254] = 0;
        litlen[255] = 0;
        let mut bits = dynamic(&litlen, &[1]);
        bits.code(u32::from(b'a'), 8)
            .code(255, 8)
            .code(offset_bit, 1)
            .code(254, 8);
        bits.bytes
    }

    #[test]
    fn incomplete_codes_are_left_to_the_exact_decoder() {
        // zlib gives the only codeword '0' and refuses '1'; upstream
        // libdeflate decodes both as it. This copy refuses incomplete
        // codes altogether: the reader's miniz_oxide decides them.
        both_refuse(&single_offset_code(1), 4);
        let stream = single_offset_code(0);
        let mut out = [0u8; 4];
        assert_eq!(
            Decompressor::new().unwrap().decompress(&stream, &mut out),
            Err(Error::BadData)
        );
        let reference = miniz_oxide::inflate::decompress_to_vec(&stream).unwrap();
        assert_eq!(reference, b"aaaa");
    }

    /// The streams of the decode fuzz target's seeds
    /// `fuzz/seeds/decode/libdeflate-*`, as `(name, cluster bits selector,
    /// stream)`: each fills its whole cluster for upstream libdeflate where
    /// zlib refuses it (and one that zlib accepts and this copy refuses),
    /// so that the target's differential check meets them.
    fn fuzz_seed_streams() -> Vec<(&'static str, u8, Vec<u8>)> {
        let mut seeds = Vec::new();
        // A 512-byte cluster (selector 0): 'a', a match with litlen 286,
        // a match of 253 (284 with 26 extra), end of block.
        let mut bits = static_prefix(0);
        bits.fixed(286)
            .code(0, 5)
            .fixed(284)
            .field(26, 5)
            .code(0, 5);
        bits.fixed(256);
        seeds.push(("libdeflate-static-litlen-286", 0, bits.bytes));
        // A 32 KiB cluster (selector 6): 96 matches of 258, one of 3 at
        // offset code 30, 30 more of 258, one of 256, end of block.
        let mut bits = static_prefix(96);
        bits.fixed(257).code(30, 5).field(0, 13);
        for _ in 0..30 {
            bits.fixed(285).code(0, 5);
        }
        bits.fixed(284).field(29, 5).code(0, 5).fixed(256);
        seeds.push(("libdeflate-static-offset-30", 6, bits.bytes));
        // Literals 0..=253, end of block (254) and length 3 (255), 8 bits.
        let mut litlen = alloc::vec![8u8; 258];
        litlen[254] = 0;
        litlen[255] = 0;
        let matches = |offset: &[u8], bit: u32| {
            let mut bits = dynamic(&litlen, offset);
            bits.code(u32::from(b'a'), 8).code(u32::from(b'a'), 8);
            for _ in 0..170 {
                bits.code(255, 8).code(bit, 1);
            }
            bits.code(254, 8);
            bits.bytes
        };
        let mut offsets = alloc::vec![0u8; 31];
        offsets[0] = 1;
        offsets[1] = 1;
        seeds.push(("libdeflate-31-offset-symbols", 0, matches(&offsets, 0)));
        let unused = "libdeflate-incomplete-code-unused-codeword";
        seeds.push((unused, 0, matches(&[1], 1)));
        seeds.push(("libdeflate-incomplete-code-valid", 0, matches(&[1], 0)));
        seeds
    }

    /// Writes the decode target's seeds in its layout: codec 0 (deflate),
    /// the cluster bits selector, the stream's length (big-endian u16: the
    /// whole stream in one piece), the stream.
    #[test]
    #[ignore = "writes fuzz/seeds/decode/libdeflate-*; run after changing fuzz_seed_streams"]
    fn write_the_fuzz_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/decode");
        for (name, selector, stream) in fuzz_seed_streams() {
            let len = u16::try_from(stream.len()).unwrap();
            let mut seed = alloc::vec![0, selector];
            seed.extend_from_slice(&len.to_be_bytes());
            seed.extend_from_slice(&stream);
            std::fs::write(std::format!("{dir}/{name}"), seed).unwrap();
        }
    }

    #[test]
    fn the_fuzz_seeds_are_refused_by_this_copy() {
        for (name, _, stream) in fuzz_seed_streams() {
            let mut out = alloc::vec![0u8; 32 << 10];
            let result = Decompressor::new().unwrap().decompress(&stream, &mut out);
            assert!(result.is_err(), "{name}: {result:?}");
        }
    }

    #[test]
    fn memory_is_what_libdeflate_asked_for() {
        // The decode tables: several KiB, allocated once.
        let size = Decompressor::memory_size();
        assert!((4096..64 << 10).contains(&size), "{size}");
        assert!(std::format!("{:?}", Decompressor::new().unwrap()).contains("bytes"));
    }
}
