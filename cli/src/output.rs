//! Writing results: to standard output the way QEMU prints them, and to
//! an output file ([`OutputFile`]) without ever destroying an input.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use serde_json::Value;

use crate::failure::{is_broken_pipe, Failure, Result};

/// JSON indented by four spaces, as QEMU prints it, with a final newline.
pub fn pretty_json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        return "null\n".to_string();
    }
    String::from_utf8_lossy(&out).into_owned() + "\n"
}

/// Writes `text` to standard output; a closed pipe (`| head`) is not an error.
pub fn print(text: &str, image: &Path) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if !is_broken_pipe(&error) => Err(Failure::new(image, error)),
        _ => Ok(()),
    }
}

/// An output file (`qcow get -o`, `qcow convert`) written beside its
/// destination and renamed over it only once complete.
///
/// Writing in place would truncate the destination before anything is
/// read: an output naming the image itself (`qcow get IMAGE /f -o IMAGE`),
/// a layer of its chain or its data file destroyed the input, and a failed
/// read left a partial file. So the destination is refused if it is one of
/// the inputs (same device and inode: hard links and symlinks included), or
/// a symbolic link unless the caller asks to follow it; the bytes go to a
/// new file in the same directory (created exclusively, with a random name:
/// nothing existing is opened), renamed over the destination by
/// [`OutputFile::finish`] and removed if dropped before (an error). A
/// rename only replaces a directory entry, never an input's bytes.
pub struct OutputFile {
    temp: NamedTempFile,
    /// Where the file goes (the symlink's target when following one).
    destination: PathBuf,
    /// The output as the user named it, for messages.
    named: PathBuf,
}

impl OutputFile {
    /// Starts the output `path` of a command reading `inputs`; a symbolic
    /// link at `path` is refused unless `follow_symlink`, then written through.
    pub fn create(path: &Path, inputs: &[PathBuf], follow_symlink: bool) -> Result<Self> {
        let fail = |message: &dyn std::fmt::Display| Failure::new(path, message);
        let mut destination = path.to_path_buf();
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            let target = std::fs::read_link(path).map_err(|error| fail(&error))?;
            if !follow_symlink {
                let message = format!(
                    "is a symbolic link (to {}); refused as an output: pass \
                     --follow-output-symlink to write where it leads",
                    target.display()
                );
                return Err(fail(&message));
            }
            destination = std::fs::canonicalize(path).map_err(|error| {
                fail(&format!(
                    "cannot resolve the symbolic link (to {}): {error}",
                    target.display()
                ))
            })?;
        }
        let existing = std::fs::metadata(&destination).ok();
        if let Some(existing) = &existing {
            let identity = |metadata: &std::fs::Metadata| (metadata.dev(), metadata.ino());
            for input in inputs {
                if std::fs::metadata(input).is_ok_and(|m| identity(&m) == identity(existing)) {
                    let message = format!(
                        "is {}, an input of this command; refused as an output",
                        input.display()
                    );
                    return Err(fail(&message));
                }
            }
        }
        let directory = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = destination
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        // A new file starts as `File::create` would make it (0666 less the
        // umask); a replaced one keeps its mode.
        let mode = existing.map_or(0o666, |metadata| metadata.mode() & 0o777);
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".qcow-part")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(directory)
            .map_err(|error| {
                fail(&format!(
                    "cannot create a file in {}: {error}",
                    directory.display()
                ))
            })?;
        Ok(Self {
            temp,
            destination,
            named: path.to_path_buf(),
        })
    }

    /// The file to write.
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// The file to write, as a writer.
    pub fn file_mut(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Renames the complete file over the destination.
    pub fn finish(self) -> Result<()> {
        self.temp
            .persist(&self.destination)
            .map(drop)
            .map_err(|error| Failure::new(&self.named, error.error))
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for seconds since the epoch (before it too).
pub fn utc_text(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_civil_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00");
        assert_eq!(utc_text(1_795_610_146), "2026-11-25 12:35:46");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_text(1_709_214_330), "2024-02-29 13:45:30");
    }
}
