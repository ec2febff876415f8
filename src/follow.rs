//! Which files an image may make the `std` chain opener open (`std`).
//!
//! An image names its own backing file and external data file, and QEMU
//! opens whatever path it names, absolute or relative. For an image from an
//! untrusted source that is an attack: an uploaded image naming
//! `/etc/shadow`, or another tenant's disk, as its backing or data file makes
//! the service read that file into the guest's view (CVE-2024-32498, in
//! OpenStack). [`FollowPolicy`] lets the caller say which named files may be
//! opened; the top image itself is the caller's choice and never checked.
//!
//! [`FollowPolicy::SameDir`] checks names, then the canonical path (every
//! symlink resolved) against the canonical directory of the image that names
//! the file. It hands back the path as named, not the canonical one, so that
//! the names inside that file resolve from the same directory as in QEMU;
//! every file of a chain is checked against the directory of the image that
//! names it, which is inside the top image's directory by the same rule.
//! The check and the open are two steps: whoever can change the directory
//! between them can still redirect the open, so the directory must not be
//! writable by the image's author while the chain is opened. Hard links are
//! files of the directory like any other, whatever inode they share.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::string::String;

use crate::chain::resolve_name;

/// Which files named by an image (backing file, external data file) may be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FollowPolicy {
    /// Any path, absolute or relative, wherever symlinks lead: QEMU's
    /// behaviour, for images you made yourself.
    #[default]
    Any,
    /// Only files in the naming image's directory or below it: the name must
    /// be relative, without `..`, and must not lead out through a symlink.
    SameDir,
    /// No file at all: the top image is read alone, its backing file ignored
    /// (unallocated clusters read as zeros, as QEMU reads with
    /// `"backing": null`); an image whose clusters live in an external data
    /// file cannot be read without it and is refused.
    None,
}

impl FollowPolicy {
    /// The policy's name, as the `qcow` tool's `--follow` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FollowPolicy::Any => "any",
            FollowPolicy::SameDir => "same-dir",
            FollowPolicy::None => "none",
        }
    }

    /// Whether a chain opened under this policy includes the backing files.
    pub fn follows_backing(self) -> bool {
        self != FollowPolicy::None
    }

    /// Where the file that `image` names as its `kind` may be opened from, or why not.
    ///
    /// Relative names are taken from the directory of `image` (see
    /// [`resolve_name`]). Under [`FollowPolicy::SameDir`] the file must
    /// exist to be checked, so a missing one is refused here.
    pub fn resolve(self, image: &Path, kind: NamedFile, name: &str) -> Result<PathBuf, Refusal> {
        let refuse = |reason| Refusal {
            image: image.to_path_buf(),
            kind,
            name: name.into(),
            policy: self,
            reason,
        };
        match self {
            FollowPolicy::Any => Ok(resolve_name(image, name)),
            FollowPolicy::None => Err(refuse(Reason::NothingFollowed)),
            FollowPolicy::SameDir => same_dir(image, name).map_err(refuse),
        }
    }
}

impl fmt::Display for FollowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The role of a file an image names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedFile {
    /// The backing file, read where the image allocates nothing.
    Backing,
    /// The external data file, holding the image's clusters.
    DataFile,
}

impl fmt::Display for NamedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamedFile::Backing => "backing file",
            NamedFile::DataFile => "data file",
        })
    }
}

/// A named file the policy does not let the opener open.
#[derive(Debug)]
pub struct Refusal {
    /// The image whose header names the file.
    pub image: PathBuf,
    /// What the file would be to it.
    pub kind: NamedFile,
    /// The name as the image stores it.
    pub name: String,
    /// The policy that refused it.
    pub policy: FollowPolicy,
    /// Why.
    pub reason: Reason,
}

/// Why a policy refuses a name.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reason {
    /// The policy opens no named file.
    NothingFollowed,
    /// The name is an absolute path.
    Absolute,
    /// The name has a `..` component.
    ParentComponent,
    /// The file, symlinks resolved, lies outside the image's directory.
    Outside {
        /// The image's directory, canonical.
        directory: PathBuf,
        /// Where the name leads, canonical.
        target: PathBuf,
    },
    /// The name or the image's directory cannot be resolved (a missing file, a symlink loop).
    Unresolvable {
        /// The path that could not be resolved.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl Refusal {
    /// The refusal said of the image without naming it (`names the backing
    /// file "..", refused by ...`), for a message that already names it.
    pub fn without_image(&self) -> impl fmt::Display + '_ {
        WithoutImage(self)
    }
}

/// [`Refusal::without_image`].
struct WithoutImage<'a>(&'a Refusal);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.image.display(), self.without_image())
    }
}

impl fmt::Display for WithoutImage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let refusal = self.0;
        write!(
            f,
            "names the {} {:?}, refused by the follow policy {}: ",
            refusal.kind, refusal.name, refusal.policy
        )?;
        match &refusal.reason {
            Reason::NothingFollowed => f.write_str("no named file is opened"),
            Reason::Absolute => f.write_str("an absolute path"),
            Reason::ParentComponent => f.write_str("a path with `..`"),
            Reason::Outside { directory, target } => write!(
                f,
                "it leads to {}, outside {}",
                target.display(),
                directory.display()
            ),
            Reason::Unresolvable { path, source } => {
                write!(f, "cannot resolve {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Unresolvable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The canonical path of `name` if it stays in the directory of `image`.
fn same_dir(image: &Path, name: &str) -> Result<PathBuf, Reason> {
    for component in Path::new(name).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(Reason::Absolute),
            Component::ParentDir => return Err(Reason::ParentComponent),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    let directory = match image.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let canonical = |path: &Path| {
        std::fs::canonicalize(path).map_err(|source| Reason::Unresolvable {
            path: path.to_path_buf(),
            source,
        })
    };
    let directory = canonical(directory)?;
    let path = resolve_name(image, name);
    let target = canonical(&path)?;
    if target.starts_with(&directory) {
        Ok(path)
    } else {
        Err(Reason::Outside { directory, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn names_are_checked_before_the_file_system() {
        let image = Path::new("/nonexistent/dir/top.qcow2");
        let reason = |name| {
            FollowPolicy::SameDir
                .resolve(image, NamedFile::Backing, name)
                .unwrap_err()
                .reason
        };
        assert!(matches!(reason("/etc/shadow"), Reason::Absolute));
        assert!(matches!(reason("../other/disk"), Reason::ParentComponent));
        assert!(matches!(reason("a/../../b"), Reason::ParentComponent));
        assert!(matches!(reason("base"), Reason::Unresolvable { .. }));
    }

    #[test]
    fn any_resolves_like_qemu_and_none_refuses() {
        let image = Path::new("/images/top.qcow2");
        let any = FollowPolicy::Any.resolve(image, NamedFile::Backing, "../b.qcow2");
        assert_eq!(any.unwrap(), Path::new("/images/../b.qcow2"));
        let none = FollowPolicy::None
            .resolve(image, NamedFile::DataFile, "data.raw")
            .unwrap_err();
        assert_eq!(
            none.to_string(),
            "/images/top.qcow2 names the data file \"data.raw\", \
             refused by the follow policy none: no named file is opened"
        );
    }
}
