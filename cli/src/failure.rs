//! The one error type of the tool: which file failed, and why, as a sentence.

use std::fmt;
use std::path::{Path, PathBuf};

use qcow2_reader::chain::ChainError;

/// A failure to report as `qcow: FILE: message`, exit status 1.
#[derive(Debug)]
pub struct Failure {
    /// The file the message is about (the image, or an output file).
    pub file: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure about `file`.
    pub fn new(file: &Path, message: impl fmt::Display) -> Self {
        Self {
            file: file.to_path_buf(),
            message: message.to_string(),
        }
    }

    /// A failure to open the chain of `image`, without repeating the image's name.
    pub fn chain(image: &Path, error: ChainError) -> Self {
        let message = match &error {
            ChainError::Image { path, error } if path == image => error.to_string(),
            ChainError::Open {
                path,
                named_by: None,
                source,
            } if path == image => source.to_string(),
            ChainError::Refused(refusal) if refusal.image == image => {
                refusal.without_image().to_string()
            }
            _ => error.to_string(),
        };
        Self::new(image, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Shorthand for the result of a subcommand step.
pub type Result<T> = std::result::Result<T, Failure>;

/// Whether an I/O error only means the reader of our output went away (`| head`).
pub fn is_broken_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
