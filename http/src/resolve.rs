//! [`Urls`]: the chain walk's resolver over URLs. A backing or data file
//! name is taken relative to the URL of the image naming it (never as a
//! local path), under the caller's [`FollowPolicy`] with the URL's
//! directory as the image's directory.

use std::fmt;
use std::path::PathBuf;

use qcow2_reader::chain::{Found, Resolver, Role};
use qcow2_reader::follow::{FollowPolicy, NamedFile, Reason, Refusal};
use qcow2_reader::FileName;
use url::Url;

use crate::error::HttpError;
use crate::file::{check_scheme, Client, HttpFile};

/// Why a file an image names over HTTP is not opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// The follow policy refuses it (its `image` and reason are URLs,
    /// held as paths by [`Refusal`]).
    Refused(Refusal),
    /// The name is no URL relative to the image's, or leads to another
    /// scheme than `http`/`https` (a local file, for one).
    BadName {
        /// The image naming it.
        named_by: String,
        /// The name as stored.
        name: String,
        /// Why.
        why: String,
    },
    /// The server did not give it.
    Http {
        /// The image naming it.
        named_by: String,
        /// The URL it resolved to.
        url: String,
        /// What went wrong.
        error: Box<HttpError>,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Refused(refusal) => refusal.fmt(f),
            ResolveError::BadName {
                named_by,
                name,
                why,
            } => write!(f, "{named_by} names {name:?}: {why}"),
            ResolveError::Http { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for ResolveError {}

/// URLs as the chain walk's [`Resolver`]: every file of the chain comes
/// from a web server, through one [`Client`].
#[derive(Debug)]
pub struct Urls {
    client: Client,
    follow: FollowPolicy,
    top: Option<Url>,
}

impl Urls {
    /// Files that images may name under `follow`, opened by `client`.
    pub fn new(client: Client, follow: FollowPolicy) -> Self {
        Self {
            client,
            follow,
            top: None,
        }
    }

    /// Opens the top image at `url`; the names it holds resolve from
    /// where it is after redirects, and `same-dir` keeps every file of
    /// the chain under that directory.
    pub fn open_top(&mut self, url: &Url) -> Result<Found<HttpFile, Url>, HttpError> {
        let file = self.client.open(url)?;
        let location = file.url().clone();
        self.top = Some(location.clone());
        Ok(Found {
            store: file,
            location,
        })
    }
}

/// The directory of `url`: its path up to the last `/`, no query.
pub fn directory(url: &Url) -> Url {
    let mut directory = url.clone();
    directory.set_query(None);
    directory.set_fragment(None);
    let path = directory.path();
    let cut = path.rfind('/').map_or(0, |slash| slash + 1);
    let path = path[..cut].to_string();
    directory.set_path(&path);
    directory
}

/// Whether `target` is on the same server as `directory` and under its path.
fn beneath(directory: &Url, target: &Url) -> bool {
    directory.scheme() == target.scheme()
        && directory.host_str() == target.host_str()
        && directory.port_or_known_default() == target.port_or_known_default()
        && directory.username() == target.username()
        && target.path().starts_with(directory.path())
}

impl Urls {
    /// Where `name`, stored by the image at `named_by`, leads, if `follow` allows it.
    pub fn resolve(&self, name: &str, role: Role, named_by: &Url) -> Result<Url, ResolveError> {
        let kind = match role {
            Role::Backing => NamedFile::Backing,
            Role::DataFile => NamedFile::DataFile,
        };
        let refuse = |reason| {
            ResolveError::Refused(Refusal {
                image: PathBuf::from(named_by.as_str()),
                kind,
                name: name.to_string(),
                policy: self.follow,
                reason,
            })
        };
        let bad = |why: String| ResolveError::BadName {
            named_by: named_by.to_string(),
            name: name.to_string(),
            why,
        };
        if self.follow == FollowPolicy::None {
            return Err(refuse(Reason::NothingFollowed));
        }
        // `join` takes a relative name from the image's directory and
        // removes `.` and `..` segments, as a browser does.
        let target = named_by
            .join(name)
            .map_err(|error| bad(format!("not a URL relative to the image's: {error}")))?;
        check_scheme(&target).map_err(|error| bad(error.kind_text()))?;
        if self.follow == FollowPolicy::SameDir {
            // An encoded separator is a `/` to some servers, and its `..`
            // around it escapes the check below.
            let lower = name.to_ascii_lowercase();
            if lower.contains("%2f") || lower.contains("%5c") || name.contains('\\') {
                return Err(bad(
                    "an encoded or backslash path separator is refused under same-dir".into(),
                ));
            }
            let top = self.top.as_ref().unwrap_or(named_by);
            for anchor in [directory(named_by), directory(top)] {
                if !beneath(&anchor, &target) {
                    return Err(refuse(Reason::Outside {
                        directory: PathBuf::from(anchor.as_str()),
                        target: PathBuf::from(target.as_str()),
                    }));
                }
            }
        }
        Ok(target)
    }
}

impl Resolver for Urls {
    type Store = HttpFile;
    type Location = Url;
    type Error = ResolveError;

    fn open(
        &mut self,
        name: &FileName,
        role: Role,
        named_by: &Url,
    ) -> Result<Found<HttpFile, Url>, ResolveError> {
        let text = std::str::from_utf8(name.as_bytes()).map_err(|_| ResolveError::BadName {
            named_by: named_by.to_string(),
            name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
            why: "not UTF-8, so no URL".into(),
        })?;
        let url = self.resolve(text, role, named_by)?;
        let file = self.client.open(&url).map_err(|error| ResolveError::Http {
            named_by: named_by.to_string(),
            url: url.to_string(),
            error: Box::new(error),
        })?;
        Ok(Found {
            location: file.url().clone(),
            store: file,
        })
    }

    fn follows_backing(&self) -> bool {
        self.follow.follows_backing()
    }

    fn same_file(&mut self, a: &Url, b: &Url) -> bool {
        // Parsed URLs are normalised: lower-case scheme and host, no
        // default port, no `.`/`..` segments.
        a == b
    }

    fn describe(&self, location: &Url) -> String {
        location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::HttpOptions;

    fn urls(follow: FollowPolicy, top: &str) -> Urls {
        let client = Client::new(HttpOptions::default()).unwrap();
        let mut urls = Urls::new(client, follow);
        urls.top = Some(Url::parse(top).unwrap());
        urls
    }

    #[test]
    fn relative_names_resolve_against_the_image_url_never_to_a_local_path() {
        let top = Url::parse("http://h:8080/images/top.qcow2").unwrap();
        let any = urls(FollowPolicy::Any, top.as_str());
        let base = any.resolve("base.qcow2", Role::Backing, &top).unwrap();
        assert_eq!(base.as_str(), "http://h:8080/images/base.qcow2");
        let up = any
            .resolve("../other/b.qcow2", Role::Backing, &top)
            .unwrap();
        assert_eq!(up.as_str(), "http://h:8080/other/b.qcow2");
        // An absolute path is a path on the same server.
        let rooted = any.resolve("/srv/b.qcow2", Role::Backing, &top).unwrap();
        assert_eq!(rooted.as_str(), "http://h:8080/srv/b.qcow2");
        assert!(matches!(
            any.resolve("file:///etc/shadow", Role::Backing, &top),
            Err(ResolveError::BadName { .. })
        ));
    }

    #[test]
    fn same_dir_refuses_urls_outside_the_image_directory() {
        let top = Url::parse("http://h/images/top.qcow2").unwrap();
        let same = urls(FollowPolicy::SameDir, top.as_str());
        assert!(same.resolve("base.qcow2", Role::Backing, &top).is_ok());
        assert!(same.resolve("sub/base.qcow2", Role::Backing, &top).is_ok());
        for name in [
            "../base.qcow2",
            "sub/../../base.qcow2",
            "%2e%2e/base.qcow2",
            "/base.qcow2",
            "http://other/images/base.qcow2",
            "https://h/images/base.qcow2",
            "http://h:81/images/base.qcow2",
            "sub%2F..%2F..%2Fx",
        ] {
            assert!(
                same.resolve(name, Role::Backing, &top).is_err(),
                "{name} was let through"
            );
        }
        let none = urls(FollowPolicy::None, top.as_str());
        assert!(matches!(
            none.resolve("data.raw", Role::DataFile, &top),
            Err(ResolveError::Refused(_))
        ));
    }
}
