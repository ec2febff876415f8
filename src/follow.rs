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
//! the file and against that of the chain's top image. It hands back the path
//! as named, not the canonical one, so that the names inside that file
//! resolve from the same directory as in QEMU; every file of a chain is
//! checked against the directory of the image that names it, which is inside
//! the top image's directory by the same rule. Hard links are files of the
//! directory like any other, whatever inode they share.
//!
//! The check and the open are one step, [`FollowPolicy::open`] (or
//! [`FollowPolicy::check`] then [`Checked::open`]), and the file opened is
//! the file checked, so a symlink swapped in between does not lead out:
//!
//! - on Linux 5.6 and later the file is opened with `openat2` from the top
//!   image's directory with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the
//!   kernel refuses any step of the resolution (a symlink, a `..` inside a
//!   symlink) that leaves that directory, so absolute symlinks, and relative
//!   ones that go out and back in, are refused under `same-dir` there even
//!   when they end inside;
//! - where `openat2` is missing (older kernels, a seccomp filter answering
//!   `ENOSYS` or `EPERM`, other systems) the canonical path the check found
//!   is opened instead;
//! - either way the opened file's device and inode must be those the check
//!   found at that canonical path, or the open is refused
//!   ([`Reason::Changed`]).
//!
//! What is left: the check's own canonicalization and its `stat` are two
//! system calls, and the fallback opens by path, so where `openat2` is
//! missing a directory swapped between the check's two calls and kept until
//! the open is not seen. With `openat2` the file opened is beneath the top
//! image's directory whatever changes meanwhile.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::string::String;

use crate::chain::{resolve_name, ChainError};

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
    /// exist to be checked, so a missing one is refused here. This is the
    /// check alone: opening the path it returns opens whatever the path
    /// leads to by then; [`FollowPolicy::open`] opens what was checked.
    pub fn resolve(self, image: &Path, kind: NamedFile, name: &str) -> Result<PathBuf, Refusal> {
        self.check(image, image, kind, name)
            .map(|checked| checked.path)
    }

    /// Checks the file that `image`, a layer of the chain whose top image
    /// is `top`, names as its `kind`, and opens it: the file and its path
    /// as named (from which the names inside it resolve, as in QEMU).
    ///
    /// Under [`FollowPolicy::SameDir`] the file must lie in the directory
    /// of `image` and in that of `top`, at the check and at the open (see
    /// the [module documentation](self)); a file changed in between is
    /// refused. [`FollowPolicy::Any`] opens the path as QEMU does.
    pub fn open(
        self,
        top: &Path,
        image: &Path,
        kind: NamedFile,
        name: &str,
    ) -> Result<(File, PathBuf), ChainError> {
        self.check(top, image, kind, name)
            .map_err(ChainError::Refused)?
            .open()
    }

    /// The check of [`FollowPolicy::open`] without the open: what
    /// [`Checked::open`] will open, and refuse if it changed meanwhile.
    pub fn check(
        self,
        top: &Path,
        image: &Path,
        kind: NamedFile,
        name: &str,
    ) -> Result<Checked, Refusal> {
        let refuse = |reason| Refusal {
            image: image.to_path_buf(),
            kind,
            name: name.into(),
            policy: self,
            reason,
        };
        let beneath = match self {
            FollowPolicy::Any => None,
            FollowPolicy::None => return Err(refuse(Reason::NothingFollowed)),
            FollowPolicy::SameDir => Some(same_dir(top, image, name).map_err(refuse)?),
        };
        Ok(Checked {
            refusal: Refusal {
                image: image.to_path_buf(),
                kind,
                name: name.into(),
                policy: self,
                reason: Reason::NothingFollowed,
            },
            path: resolve_name(image, name),
            beneath,
        })
    }
}

/// A named file a policy allowed ([`FollowPolicy::check`]), to be opened as checked.
#[derive(Debug)]
pub struct Checked {
    /// Who named the file and how, for a refusal at the open.
    refusal: Refusal,
    /// The path as named.
    path: PathBuf,
    /// What `same-dir` found; `None` under `any`.
    beneath: Option<Beneath>,
}

/// What the `same-dir` check found, for its open.
#[derive(Debug)]
struct Beneath {
    /// The top image's directory, as given.
    anchor: PathBuf,
    /// The path as named, from `anchor`.
    relative: PathBuf,
    /// The directory the file may not leave, canonical (for messages).
    directory: PathBuf,
    /// Where the path led at the check, canonical.
    target: PathBuf,
    /// Device and inode of `target` at the check.
    identity: (u64, u64),
}

impl Checked {
    /// The path as named (relative names joined to the naming image's directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file that was checked, or refuses it if what the path
    /// leads to changed since: the file and its path as named.
    pub fn open(self) -> Result<(File, PathBuf), ChainError> {
        let Checked {
            mut refusal,
            path,
            beneath,
        } = self;
        let open_error = |source| ChainError::Open {
            path: path.clone(),
            named_by: Some(refusal.image.clone()),
            source,
        };
        let Some(beneath) = beneath else {
            let file = File::open(&path).map_err(open_error)?;
            return Ok((file, path));
        };
        let file = match open_beneath(&beneath.anchor, &beneath.relative) {
            Ok(BeneathOpen::Opened(file)) => file,
            Ok(BeneathOpen::Unsupported) => File::open(&beneath.target).map_err(open_error)?,
            Ok(BeneathOpen::Escapes) => {
                refusal.reason = Reason::Escapes {
                    directory: beneath.directory,
                };
                return Err(ChainError::Refused(refusal));
            }
            Err(source) => return Err(open_error(source)),
        };
        let opened = file.metadata().map_err(open_error)?;
        if (opened.dev(), opened.ino()) != beneath.identity {
            refusal.reason = Reason::Changed {
                target: beneath.target,
            };
            return Err(ChainError::Refused(refusal));
        }
        Ok((file, path))
    }
}

/// What opening beneath a directory came to.
enum BeneathOpen {
    /// The file, reached without leaving the directory.
    Opened(File),
    /// The resolution left the directory.
    Escapes,
    /// The system cannot open beneath a directory: open the checked path.
    Unsupported,
}

/// Opens `relative` from `directory` without any step of the resolution
/// leaving it: `openat2` with `RESOLVE_BENEATH` (Linux 5.6).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_beneath(directory: &Path, relative: &Path) -> io::Result<BeneathOpen> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;

    let directory = File::open(directory)?;
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // The kernel answers EAGAIN when a rename elsewhere raced a `..`
    // lookup; a few tries, as its documentation suggests.
    let mut tries = 0;
    loop {
        return match openat2(&directory, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(BeneathOpen::Opened(File::from(fd))),
            Err(Errno::XDEV) => Ok(BeneathOpen::Escapes),
            Err(Errno::NOSYS | Errno::PERM) => Ok(BeneathOpen::Unsupported),
            Err(Errno::AGAIN) if tries < 8 => {
                tries += 1;
                continue;
            }
            Err(errno) => Err(errno.into()),
        };
    }
}

/// No `openat2` here: open the checked path, then compare the identity.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_beneath(_directory: &Path, _relative: &Path) -> io::Result<BeneathOpen> {
    Ok(BeneathOpen::Unsupported)
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
    /// The name is a URL (`scheme://...`), which QEMU opens through a
    /// network driver: it leads off the machine, which only `any` allows.
    Url,
    /// The file, symlinks resolved, lies outside the image's directory.
    Outside {
        /// The image's directory, canonical.
        directory: PathBuf,
        /// Where the name leads, canonical.
        target: PathBuf,
    },
    /// At the open, the path led out of the directory (a symlink changed
    /// since the check, or a symlink the kernel does not resolve beneath
    /// the directory: an absolute one, or one going out and back in).
    Escapes {
        /// The top image's directory, canonical.
        directory: PathBuf,
    },
    /// The file opened is not the file the check found at the path (it
    /// was replaced between the check and the open).
    Changed {
        /// Where the path led at the check, canonical.
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
            Reason::Url => f.write_str("a URL (only `--follow any` leads off this machine)"),
            Reason::Outside { directory, target } => write!(
                f,
                "it leads to {}, outside {}",
                target.display(),
                directory.display()
            ),
            Reason::Escapes { directory } => write!(
                f,
                "opened beneath {}, it leads out of it (changed since it was checked, \
                 or an absolute symlink, or one that leaves and comes back)",
                directory.display()
            ),
            Reason::Changed { target } => write!(
                f,
                "the file opened is not {}, the file checked (changed in between)",
                target.display()
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

/// Whether `name` reads as a URL: a scheme (a letter, then letters, digits,
/// `+`, `-` or `.`) followed by `://`.
fn is_url(name: &str) -> bool {
    name.split_once("://").is_some_and(|(scheme, _)| {
        let mut chars = scheme.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// Where `name` leads if it stays in the directory of `image` and in that
/// of `top`, the chain's top image, whose directory the open starts from.
fn same_dir(top: &Path, image: &Path, name: &str) -> Result<Beneath, Reason> {
    if is_url(name) {
        return Err(Reason::Url);
    }
    for component in Path::new(name).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(Reason::Absolute),
            Component::ParentDir => return Err(Reason::ParentComponent),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    let directory_of = |path: &'_ Path| match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let canonical = |path: &Path| {
        std::fs::canonicalize(path).map_err(|source| Reason::Unresolvable {
            path: path.to_path_buf(),
            source,
        })
    };
    let path = resolve_name(image, name);
    // The names of a `same-dir` chain are relative without `..`, so every
    // layer's path is the top's directory joined with more names; an image
    // given apart from any chain is its own anchor.
    let top_parent = top.parent().unwrap_or(Path::new(""));
    let (anchor, relative) = match path.strip_prefix(top_parent) {
        Ok(relative) => (directory_of(top), relative.to_path_buf()),
        Err(_) => (directory_of(image), PathBuf::from(name)),
    };
    let directory = canonical(&directory_of(image))?;
    let anchor_canonical = canonical(&anchor)?;
    let target = canonical(&path)?;
    if !target.starts_with(&directory) {
        return Err(Reason::Outside { directory, target });
    }
    if !target.starts_with(&anchor_canonical) {
        return Err(Reason::Outside {
            directory: anchor_canonical,
            target,
        });
    }
    let metadata = std::fs::metadata(&target).map_err(|source| Reason::Unresolvable {
        path: target.clone(),
        source,
    })?;
    Ok(Beneath {
        anchor,
        relative,
        directory: anchor_canonical,
        target,
        identity: (metadata.dev(), metadata.ino()),
    })
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
        assert!(matches!(reason("http://host/base.qcow2"), Reason::Url));
        assert!(matches!(reason("nbd+unix://x"), Reason::Url));
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
