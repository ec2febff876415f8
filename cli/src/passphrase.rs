//! The passphrase of encrypted images (`--passphrase-file`, or a prompt on
//! the terminal) and the work its unlocking may do (`--iteration-limit`).
//!
//! One passphrase serves every encrypted layer of the chain (the crate's
//! [`Secret`]). It is decided once per run, before any image is opened, so
//! that commands opening the chain several times (threads) ask only once.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use qcow2_reader::chain::{Layer, Secret};
use qcow2_reader::crypto::{CryptoError, UnlockLimits};
use qcow2_reader::{Error, Unsupported};
use zeroize::Zeroizing;

use crate::failure::{Failure, Result};
use crate::layers::{list_layers, Access, Follow};

/// Longest passphrase file read: far above any passphrase, and a bound on
/// what a wrong path (a disk image, a device) makes the tool allocate.
const MAX_PASSPHRASE_FILE_BYTES: u64 = 64 << 10;

/// The key options of the subcommands that read the virtual disk.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Read the passphrase of encrypted images (LUKS or legacy AES) from
    /// this file: its bytes exactly, as `qemu-img --object
    /// secret,id=sec0,file=PATH` reads them, so the same file opens the
    /// same image in both tools. A trailing newline is part of the
    /// passphrase (QEMU keeps it too): write the file with `printf %s`, not
    /// `echo`. The passphrase ends at its first NUL byte, if any. It is
    /// offered to every encrypted image of the backing chain. Without this
    /// option, an encrypted image prompts `Passphrase for IMAGE: ` on the
    /// terminal (no echo), or, with no terminal on standard input, is refused.
    #[arg(long, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
    /// Most PBKDF2 iterations that unlocking one encrypted image may spend
    /// (the key slots tried plus the master key check). A LUKS header asking
    /// for more is refused before any work. QEMU calibrates its
    /// images to about 2 s of its own hashing (a few million iterations);
    /// raise this for images made on much faster machines.
    #[arg(long, value_name = "N", default_value_t = UnlockLimits::default().max_iterations)]
    pub iteration_limit: u64,
}

impl KeyArgs {
    /// What the run may open (`follow`) and the passphrase of `image`'s
    /// encrypted layers, asked for now if it is needed and not given.
    pub fn access(&self, image: &Path, follow: Follow) -> Result<Access> {
        let limits = UnlockLimits {
            max_iterations: self.iteration_limit,
        };
        let mut access = Access {
            follow,
            secret: None,
            ends_with_newline: false,
        };
        if let Some(path) = &self.passphrase_file {
            let bytes = read_passphrase_file(path)?;
            access.ends_with_newline = bytes.ends_with(b"\n");
            access.secret = Some(Secret::passphrase(&bytes, limits));
            return Ok(access);
        }
        let Some((depth, layer)) = first_encrypted(image, follow)? else {
            return Ok(access);
        };
        if !std::io::stdin().is_terminal() {
            return Err(needs_key(image, depth, layer));
        }
        let prompt = format!("Passphrase for {}: ", image.display());
        let typed = prompt_passphrase(&prompt)
            .map_err(|error| Failure::new(image, format!("cannot read the passphrase: {error}")))?;
        access.secret = Some(Secret::passphrase(&typed, limits));
        Ok(access)
    }
}

/// The file's bytes, refused beyond [`MAX_PASSPHRASE_FILE_BYTES`].
///
/// The buffer is allocated once, at the size the file's metadata gives
/// (the bound for a pipe or a device, whose size says nothing), and zeroed
/// when dropped: reading into a growing `Vec` would leave each outgrown
/// copy of the passphrase in freed memory.
fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let fail = |error: &dyn std::fmt::Display| Failure::new(path, error);
    let too_long = || {
        fail(&format!(
            "passphrase file is longer than {MAX_PASSPHRASE_FILE_BYTES} bytes; is it the right file?"
        ))
    };
    let file = File::open(path).map_err(|error| fail(&error))?;
    let metadata = file.metadata().map_err(|error| fail(&error))?;
    let size = if metadata.is_file() {
        metadata.len()
    } else {
        MAX_PASSPHRASE_FILE_BYTES
    };
    if size > MAX_PASSPHRASE_FILE_BYTES {
        return Err(too_long());
    }
    match read_sized(file, size as usize).map_err(|error| fail(&error))? {
        Some(bytes) => Ok(bytes),
        None if !metadata.is_file() => Err(too_long()),
        None => Err(fail(&format!(
            "passphrase file grew past its size of {size} bytes while read"
        ))),
    }
}

/// At most `size` bytes of `reader` in a buffer of `size + 1` bytes that
/// never grows (one byte more tells a longer input), zeroed on drop;
/// `None` if the input is longer than `size`.
fn read_sized(mut reader: impl Read, size: usize) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut bytes = Zeroizing::new(vec![0u8; size + 1]);
    let mut filled = 0;
    while filled < bytes.len() {
        match reader.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    if filled > size {
        return Ok(None);
    }
    // Shortening keeps the allocation, which `Zeroizing` clears whole.
    bytes.truncate(filled);
    Ok(Some(bytes))
}

/// Asks for the passphrase on the terminal (`/dev/tty`) without echo.
///
/// Hand-written rather than `rpassword`: rpassword 7.5 builds the
/// passphrase by pushing characters onto a `String`, whose final buffer it
/// zeroes but whose outgrown buffers are freed with the passphrase's
/// prefixes in them. Here the typed bytes go into one buffer allocated
/// first ([`read_typed`]); the terminal is in non-canonical mode meanwhile,
/// so the kernel keeps no line buffer of it either, and is restored after.
fn prompt_passphrase(prompt: &str) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, SpecialCodeIndex};

    /// Puts the terminal's settings back, however the reading ends.
    struct Restore<'a> {
        tty: &'a File,
        saved: rustix::termios::Termios,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = tcsetattr(self.tty, OptionalActions::Now, &self.saved);
        }
    }

    let tty = File::options().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    // Ctrl-C arrives as a byte (ISIG off), so the settings are restored
    // before the tool stops.
    quiet.local_modes -= LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG;
    quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
    quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
    (&tty).write_all(prompt.as_bytes())?;
    tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    let restore = Restore { tty: &tty, saved };
    let typed = read_typed(&tty);
    drop(restore);
    (&tty).write_all(b"\n")?;
    typed
}

/// A line typed on a terminal in non-canonical mode, edited as a terminal
/// would (backspace removes a character, Ctrl-U the line; escape sequences
/// such as arrow keys are ignored; Ctrl-C interrupts; Ctrl-D on an empty
/// line ends the input), into one zeroed-on-drop buffer of
/// [`MAX_PASSPHRASE_FILE_BYTES`] that never grows.
fn read_typed(mut tty: impl Read) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::{Error, ErrorKind};

    let mut typed = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_FILE_BYTES as usize));
    let mut byte = Zeroizing::new([0u8; 1]);
    let mut next = || -> std::io::Result<Option<u8>> {
        loop {
            match tty.read(&mut byte[..]) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    };
    while let Some(byte) = next()? {
        match byte {
            b'\n' | b'\r' => break,
            // Backspace, DEL: the last character, its UTF-8 continuation bytes first.
            0x08 | 0x7f => {
                while typed.last().is_some_and(|&last| last & 0xc0 == 0x80) {
                    typed.pop();
                }
                typed.pop();
            }
            0x15 => typed.clear(),
            0x03 => return Err(Error::new(ErrorKind::Interrupted, "interrupted")),
            0x04 if typed.is_empty() => {
                return Err(Error::new(ErrorKind::UnexpectedEof, "end of input"));
            }
            0x1b => {
                if let Some(b'[' | b'O') = next()? {
                    while let Some(byte) = next()? {
                        if (0x40..=0x7e).contains(&byte) {
                            break;
                        }
                    }
                }
            }
            control if control < 0x20 => {}
            byte if typed.len() < typed.capacity() => typed.push(byte),
            _ => {
                let message =
                    format!("the passphrase is longer than {MAX_PASSPHRASE_FILE_BYTES} bytes");
                return Err(Error::other(message));
            }
        }
    }
    Ok(typed)
}

/// The first encrypted layer of the chain (top first) and its depth, read
/// from the headers alone.
fn first_encrypted(image: &Path, follow: Follow) -> Result<Option<(usize, Layer)>> {
    let layers = list_layers(image, follow)?;
    let encrypted = |layer: &Layer| {
        layer
            .header
            .as_ref()
            .is_some_and(|header| header.is_encrypted())
    };
    Ok(layers
        .into_iter()
        .enumerate()
        .find(|(_, layer)| encrypted(layer)))
}

/// The refusal of an encrypted layer without a passphrase, naming the
/// crate's error and the option that fixes it.
fn needs_key(image: &Path, depth: usize, layer: Layer) -> Failure {
    let method = layer.header.map_or(0, |header| header.crypt_method());
    let error: Error<std::io::Error> = Unsupported::NeedsKey { method }.into();
    let error = if depth == 0 {
        error
    } else {
        Error::Backing {
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            name: Some(layer.path.display().to_string()),
            error: Box::new(error),
        }
    };
    Failure::new(
        image,
        format!(
            "{error} (NeedsKey): pass --passphrase-file PATH, or run on a terminal to be asked for it"
        ),
    )
}

/// Whether `error` is a wrong passphrase, in any layer.
pub fn is_wrong_passphrase(error: &Error<std::io::Error>) -> bool {
    matches!(
        error.innermost(),
        Error::Crypto(CryptoError::WrongPassphrase)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_is_read_into_one_buffer_sized_from_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        let passphrase: Vec<u8> = (0..1000).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &passphrase).unwrap();
        let bytes = read_passphrase_file(&path).unwrap();
        assert_eq!(&bytes[..], &passphrase[..]);
        // Allocated once at size + 1: never grown.
        assert_eq!(bytes.capacity(), passphrase.len() + 1);
    }

    #[test]
    fn passphrase_file_over_64_kib_is_refused_by_name_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_PASSPHRASE_FILE_BYTES + 1)
            .unwrap();
        let failure = read_passphrase_file(&path).unwrap_err();
        assert_eq!(failure.file, path);
        assert!(
            failure.message.contains("longer than 65536 bytes"),
            "{failure}"
        );
    }

    #[test]
    fn typed_passphrase_is_edited_into_one_buffer_that_never_grows() {
        let typed = read_typed(&b"pa\x1b[Dss\x7fs w\xc3\xb6\x7fo\x01rd\nignored"[..]).unwrap();
        assert_eq!(&typed[..], b"pass word");
        assert_eq!(typed.capacity(), MAX_PASSPHRASE_FILE_BYTES as usize);
        let cleared = read_typed(&b"wrong\x15right\r"[..]).unwrap();
        assert_eq!(&cleared[..], b"right");
        let interrupted = read_typed(&b"secr\x03et\n"[..]).unwrap_err();
        assert_eq!(interrupted.kind(), std::io::ErrorKind::Interrupted);
        let long = vec![b'x'; MAX_PASSPHRASE_FILE_BYTES as usize + 1];
        let refused = read_typed(&long[..]).unwrap_err();
        assert!(
            refused.to_string().contains("longer than 65536 bytes"),
            "{refused}"
        );
    }

    #[test]
    fn passphrase_file_growing_while_read_is_refused_without_reallocating() {
        // A reader with more bytes than the size taken first: the file grew.
        let grown = vec![7u8; 2000];
        assert!(read_sized(&grown[..], 1000).unwrap().is_none());
        let exact = read_sized(&grown[..], 2000).unwrap().unwrap();
        assert_eq!((exact.len(), exact.capacity()), (2000, 2001));
        // A pipe's size says nothing: the bound applies.
        let piped = read_sized(&grown[..], MAX_PASSPHRASE_FILE_BYTES as usize);
        assert_eq!(piped.unwrap().unwrap().len(), 2000);
    }
}
