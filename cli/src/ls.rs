//! `qcow ls`: the entries of a directory inside the image's file system,
//! like `virt-ls`, optionally long (`-l`), recursive (`-R`) or as JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use qcow2_disk::{Entry, EntryKind};
use serde_json::{json, Value};

use crate::failure::{Failure, Result};
use crate::layers::Follow;
use crate::location::{open_volume, Location, Volume};
use crate::output::{pretty_json, print, utc_text};
use crate::passphrase::KeyArgs;

/// Arguments of `qcow ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Long listing: mode, size, modification time (UTC), name.
    #[arg(short = 'l', long)]
    long: bool,
    /// List subdirectories too, each under its path.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Print a JSON array of entries (`name`, `path`, `type`, `size`, `mode`, `mtime`).
    #[arg(long)]
    json: bool,
    /// Read the disk as of this internal snapshot (id or name).
    #[arg(long)]
    snapshot: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
    /// The directory: N:/DIR (partition N) or /DIR (the disk's only file system).
    location: Location,
}

/// Most entries one `ls -R` prints: a hostile file system can make a
/// directory contain its own ancestors, and this keeps that finite.
const MAX_LISTED: usize = 1 << 22;

/// A listed entry with the path of its directory.
struct Listed {
    dir: String,
    entry: Entry,
}

/// Runs `qcow ls`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let access = args.key.access(&args.image, follow)?;
    let volume = open_volume(
        &args.image,
        args.snapshot.as_deref(),
        &access,
        &args.location,
    )?;
    let fail = |path: &str, error: &dyn std::fmt::Display| {
        let at = Location {
            partition: args.location.partition,
            path: path.to_string(),
        };
        Failure::new(&args.image, format!("{at}: {error}"))
    };
    let top = args.location.path.as_str();
    let metadata = volume.metadata(top).map_err(|error| fail(top, &error))?;
    let mut listed = Vec::new();
    if metadata.kind != EntryKind::Directory {
        let (dir, _) = top
            .trim_end_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", top));
        listed.push(Listed {
            dir: if dir.is_empty() {
                "/".into()
            } else {
                dir.into()
            },
            entry: metadata,
        });
    } else {
        list(&volume, top, args.recursive, &mut listed)
            .map_err(|(path, error)| fail(&path, &error))?;
    }
    let text = if args.json {
        pretty_json(&Value::Array(listed.iter().map(entry_json).collect()))
    } else {
        listing_text(&listed, args.long, args.recursive)
    };
    print(&text, &args.image)?;
    Ok(ExitCode::SUCCESS)
}

/// Appends the entries of `dir` (sorted by name), and with `recursive` those below, depth first.
fn list(
    volume: &Volume,
    dir: &str,
    recursive: bool,
    listed: &mut Vec<Listed>,
) -> std::result::Result<(), (String, String)> {
    let mut entries = Vec::new();
    volume
        .read_dir(dir, &mut |entry| entries.push(entry))
        .map_err(|error| (dir.to_string(), error.to_string()))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if listed.len() + entries.len() > MAX_LISTED {
        return Err((
            dir.to_string(),
            format!("more than {MAX_LISTED} entries to list"),
        ));
    }
    let subdirs: Vec<String> = entries
        .iter()
        .filter(|entry| recursive && entry.kind == EntryKind::Directory)
        .map(|entry| join(dir, &entry.name))
        .collect();
    listed.extend(entries.into_iter().map(|entry| Listed {
        dir: dir.to_string(),
        entry,
    }));
    for subdir in subdirs {
        list(volume, &subdir, recursive, listed)?;
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn entry_json(listed: &Listed) -> Value {
    let entry = &listed.entry;
    json!({
        "name": entry.name,
        "path": join(&listed.dir, &entry.name),
        "type": entry.kind.name(),
        "size": entry.size,
        "mode": entry.mode,
        "mtime": entry.mtime,
    })
}

fn listing_text(listed: &[Listed], long: bool, recursive: bool) -> String {
    let mut text = String::new();
    let mut current_dir: Option<&str> = None;
    for item in listed {
        if recursive && current_dir != Some(item.dir.as_str()) {
            if current_dir.is_some() {
                text.push('\n');
            }
            text += &format!("{}:\n", item.dir);
            current_dir = Some(&item.dir);
        }
        let entry = &item.entry;
        if long {
            let mtime = entry.mtime.map_or_else(|| "-".repeat(19), utc_text);
            text += &format!(
                "{} {:>12} {mtime} {}\n",
                mode_text(entry),
                entry.size,
                entry.name
            );
        } else {
            text += &entry.name;
            text.push('\n');
        }
    }
    text
}

/// `ls -l`'s mode column: type letter and `rwx` triplets with set-id and sticky bits.
fn mode_text(entry: &Entry) -> String {
    let kind = match entry.kind {
        EntryKind::Directory => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        EntryKind::Other => match entry.mode & 0o170_000 {
            0o060_000 => 'b',
            0o020_000 => 'c',
            0o010_000 => 'p',
            _ => 's',
        },
    };
    let mut text = String::from(kind);
    for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = entry.mode >> shift;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(match (bits & 1 != 0, entry.mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_print_like_ls() {
        let entry = |kind, mode| Entry {
            name: String::new(),
            kind,
            size: 0,
            mode,
            mtime: None,
        };
        assert_eq!(
            mode_text(&entry(EntryKind::Directory, 0o041_755)),
            "drwxr-xr-t"
        );
        assert_eq!(mode_text(&entry(EntryKind::File, 0o104_644)), "-rwSr--r--");
    }
}
