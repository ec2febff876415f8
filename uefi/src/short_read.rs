//! Filling a buffer from a reader that may return fewer bytes than asked.
//!
//! `EFI_FILE_PROTOCOL.Read` reads from the file's current position and may
//! return less than asked; a `BlockRead` must fill the whole buffer. The
//! loop here also cuts requests into chunks, so that one call into a file
//! system driver never moves more than a bounded amount, and it refuses a
//! reader that stops making progress (the file shrank) instead of looping.

use core::fmt;

/// What filling a buffer can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortReadError<E> {
    /// The reader failed.
    Read {
        /// Its error.
        error: E,
        /// Where the failed piece started.
        offset: u64,
    },
    /// The reader returned no bytes before the buffer was full.
    Ended {
        /// The first byte it could not supply.
        offset: u64,
    },
    /// The range does not fit in 64-bit offsets.
    Overflow,
}

impl<E: fmt::Display> fmt::Display for ShortReadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShortReadError::Read { error, offset } => {
                write!(f, "read at offset {offset:#x} failed: {error}")
            }
            ShortReadError::Ended { offset } => {
                write!(f, "the file ended at offset {offset:#x}")
            }
            ShortReadError::Overflow => f.write_str("read range overflows 64-bit offsets"),
        }
    }
}

/// Fills `buf` with the bytes at `offset`, in pieces of at most
/// `max_chunk` bytes, with `read(offset, piece)` returning how many bytes
/// of `piece` it filled.
pub fn read_exact<E>(
    offset: u64,
    buf: &mut [u8],
    max_chunk: usize,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<usize, E>,
) -> Result<(), ShortReadError<E>> {
    let max_chunk = max_chunk.max(1);
    offset
        .checked_add(buf.len() as u64)
        .ok_or(ShortReadError::Overflow)?;
    let mut done = 0usize;
    while done < buf.len() {
        let position = offset + done as u64;
        let end = buf.len().min(done.saturating_add(max_chunk));
        let piece = &mut buf[done..end];
        let filled = read(position, piece).map_err(|error| ShortReadError::Read {
            error,
            offset: position,
        })?;
        if filled == 0 {
            return Err(ShortReadError::Ended { offset: position });
        }
        // A reader claiming more than it was given is treated as a full piece.
        done += filled.min(piece.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes (byte i is i as u8) returning at most `step` per call.
    fn file(len: u64, step: usize) -> impl FnMut(u64, &mut [u8]) -> Result<usize, ()> {
        move |offset, piece| {
            let available = len.saturating_sub(offset) as usize;
            let n = piece.len().min(step).min(available);
            for (i, byte) in piece[..n].iter_mut().enumerate() {
                *byte = (offset + i as u64) as u8;
            }
            Ok(n)
        }
    }

    #[test]
    fn short_reads_are_continued_until_the_buffer_is_full() {
        let mut buf = [0u8; 1000];
        read_exact(5, &mut buf, 4096, file(2000, 7)).unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i + 5) as u8));
    }

    #[test]
    fn pieces_are_at_most_the_chunk_size() {
        let mut largest = 0;
        let mut buf = [0u8; 1000];
        read_exact(0, &mut buf, 128, |_, piece: &mut [u8]| {
            largest = largest.max(piece.len());
            Ok::<_, ()>(piece.len())
        })
        .unwrap();
        assert_eq!(largest, 128);
    }

    #[test]
    fn a_file_that_ends_early_is_an_error_not_a_loop() {
        let mut buf = [0u8; 100];
        assert_eq!(
            read_exact(950, &mut buf, 4096, file(1000, 4096)),
            Err(ShortReadError::Ended { offset: 1000 })
        );
    }

    #[test]
    fn reader_errors_name_the_offset() {
        let mut buf = [0u8; 10];
        assert_eq!(
            read_exact(3, &mut buf, 4, |_, _: &mut [u8]| Err::<usize, _>("gone")),
            Err(ShortReadError::Read {
                error: "gone",
                offset: 3
            })
        );
        assert_eq!(
            read_exact(u64::MAX, &mut buf, 4, file(10, 1)),
            Err(ShortReadError::Overflow)
        );
    }

    #[test]
    fn a_reader_claiming_more_than_asked_does_not_overrun() {
        let mut buf = [0u8; 10];
        read_exact(0, &mut buf, 4, |_, _: &mut [u8]| Ok::<_, ()>(usize::MAX)).unwrap();
    }
}
