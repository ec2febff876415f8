//! The passphrase of encrypted images (`--passphrase-file`, or a prompt on
//! the terminal) and the work its unlocking may do (`--iteration-limit`).
//!
//! One passphrase serves every encrypted layer of the chain (the crate's
//! [`Secret`]). It is decided once per run, before any image is opened, so
//! that commands opening the chain several times (threads) ask only once.

use std::fs::File;
use std::io::{IsTerminal, Read};
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
        let typed = rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|error| Failure::new(image, format!("cannot read the passphrase: {error}")))?;
        access.secret = Some(Secret::passphrase(typed.as_bytes(), limits));
        Ok(access)
    }
}

/// The file's bytes, refused beyond [`MAX_PASSPHRASE_FILE_BYTES`].
fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let fail = |error: &dyn std::fmt::Display| Failure::new(path, error);
    let file = File::open(path).map_err(|error| fail(&error))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PASSPHRASE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(&error))?;
    if bytes.len() as u64 > MAX_PASSPHRASE_FILE_BYTES {
        let message = format!(
            "passphrase file is longer than {MAX_PASSPHRASE_FILE_BYTES} bytes; is it the right file?"
        );
        return Err(fail(&message));
    }
    Ok(bytes)
}

/// The first encrypted layer of the chain (top first) and its depth, read
/// from the headers alone.
fn first_encrypted(image: &Path, follow: Follow) -> Result<Option<(usize, Layer)>> {
    let layers = list_layers(image, follow)?;
    let encrypted = |layer: &Layer| {
        layer
            .header
            .as_ref()
            .is_some_and(|header| header.crypt_method() != 0)
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
