//! Where the tool reads images from: local files, or `http://` and
//! `https://` URLs through `qcow2-http`, chosen by the argument's form.
//!
//! [`Input`] is every layer's storage, [`Inputs`] the chain walk's
//! resolver over one or the other: a chain read from a URL takes its
//! backing and data files from URLs relative to it (never local paths),
//! a local chain from local paths. Where the tool names files (messages,
//! `Layer::path`) a URL is carried as a `PathBuf` of its text.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qcow2_http::{Client, HttpError, HttpFile, HttpOptions, ResolveError, Url, Urls};
use qcow2_reader::chain::{
    find_layers, walk, ChainError, ChainOptions, Files, Found, Layer, Resolver, Role, WalkOptions,
    Walked,
};
use qcow2_reader::follow::FollowPolicy;
use qcow2_reader::{BlockRead, FileName};

/// The HTTP client of the run, set once from the command line.
static CLIENT: OnceLock<Client> = OnceLock::new();

/// Sets the HTTP options of the run (`--http-readahead`,
/// `--http-connections`); options out of range are an error.
pub fn configure(options: HttpOptions) -> Result<(), String> {
    let client = Client::new(options).map_err(|error| error.kind_text())?;
    // Set once, by `main`, before any subcommand runs.
    let _ = CLIENT.set(client);
    Ok(())
}

fn client() -> io::Result<Client> {
    match CLIENT.get() {
        Some(client) => Ok(client.clone()),
        None => Client::new(HttpOptions::default()).map_err(io::Error::other),
    }
}

/// The URL an image argument is, if it is one.
pub fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|text| qcow2_http::is_url(text))
}

/// Where `name`, stored by the image at `image` (a path or a URL), leads:
/// the crate's `chain::resolve_name` for paths, the URL relative to the
/// image's for URLs (`..` removed).
pub fn resolve_name(image: &Path, name: &str) -> PathBuf {
    let joined = url_of(image).and_then(|url| Url::parse(url).ok()?.join(name).ok());
    match joined {
        Some(url) => PathBuf::from(url.as_str()),
        None => qcow2_reader::chain::resolve_name(image, name),
    }
}

/// The bytes of one file of a chain.
#[derive(Debug)]
pub enum Input {
    /// A local file.
    File(File),
    /// An object on a web server.
    Http(HttpFile),
}

impl Input {
    /// Opens `path`, or the URL it is.
    pub fn open(path: &Path) -> io::Result<Input> {
        match url_of(path) {
            Some(url) => {
                let url = Url::parse(url)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
                let file = client()?.open(&url).map_err(without_url)?;
                Ok(Input::Http(file))
            }
            None => File::open(path).map(Input::File),
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Input::File(file) => Ok(file.metadata()?.len()),
            Input::Http(file) => Ok(file.size().map_err(io::Error::from)?),
        }
    }

    /// Bytes it takes on disk (its size, for an object on a server).
    pub fn allocated(&self) -> io::Result<u64> {
        match self {
            Input::File(file) => Ok(file.metadata()?.blocks() * 512),
            Input::Http(_) => self.len(),
        }
    }
}

impl BlockRead for Input {
    type Error = io::Error;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Input::File(file) => file.read_at(offset, buf),
            Input::Http(file) => file.read_at(offset, buf).map_err(io::Error::from),
        }
    }

    fn size(&self) -> io::Result<u64> {
        match self {
            Input::File(file) => BlockRead::size(file),
            Input::Http(file) => file.size().map_err(io::Error::from),
        }
    }
}

/// An HTTP error as the cause of a message that names the URL already.
fn without_url(error: HttpError) -> io::Error {
    let kind = io::Error::from(error.clone()).kind();
    io::Error::new(kind, error.kind_text())
}

/// The chain walk's resolver: local files or URLs, as the top image is.
#[derive(Debug)]
pub enum Inputs {
    /// Paths, relative to the naming image's directory. A local image may
    /// name an `http://` or `https://` URL, as QEMU opens through its curl
    /// driver: under `--follow any` only (no other policy lets a name lead
    /// off the machine), read through `urls`, made at the first one, which
    /// also resolves what that remote image names, relative to its URL.
    Files {
        /// The local files of the chain.
        files: Files,
        /// The policy `files` applies.
        follow: FollowPolicy,
        /// The remote part of the chain, once a local image named a URL.
        urls: Option<Urls>,
    },
    /// URLs, relative to the naming image's URL.
    Urls(Urls),
}

fn location_url(location: &Path) -> Result<Url, ChainError> {
    let text = location.to_str().unwrap_or_default();
    Url::parse(text).map_err(|error| ChainError::Open {
        path: location.to_path_buf(),
        named_by: None,
        source: io::Error::new(io::ErrorKind::InvalidInput, error),
    })
}

impl Inputs {
    /// Opens the top image `path` (a URL or a path) and the resolver for
    /// the files it names, under `follow`.
    pub fn open_top(
        path: &Path,
        follow: FollowPolicy,
    ) -> Result<(Self, Found<Input, PathBuf>), ChainError> {
        if url_of(path).is_none() {
            let mut files = Files::new(follow);
            let found = files.open_top(path)?;
            let found = Found {
                store: Input::File(found.store),
                location: found.location,
            };
            let inputs = Inputs::Files {
                files,
                follow,
                urls: None,
            };
            return Ok((inputs, found));
        }
        let open_error = |source| ChainError::Open {
            path: path.to_path_buf(),
            named_by: None,
            source,
        };
        let url = location_url(path)?;
        let mut urls = Urls::new(client().map_err(open_error)?, follow);
        let found = urls
            .open_top(&url)
            .map_err(|error| open_error(without_url(error)))?;
        let found = Found {
            store: Input::Http(found.store),
            location: PathBuf::from(found.location.as_str()),
        };
        Ok((Inputs::Urls(urls), found))
    }
}

impl Resolver for Inputs {
    type Store = Input;
    type Location = PathBuf;
    type Error = ChainError;

    fn open(
        &mut self,
        name: &FileName,
        role: Role,
        named_by: &PathBuf,
    ) -> Result<Found<Input, PathBuf>, ChainError> {
        match self {
            Inputs::Files {
                files,
                follow,
                urls,
            } => {
                if let Some(urls) = urls.as_mut().filter(|_| url_of(named_by).is_some()) {
                    return open_url_relative(urls, name, role, named_by);
                }
                let text = String::from_utf8_lossy(name.as_bytes());
                if *follow == FollowPolicy::Any && qcow2_http::is_url(&text) {
                    return open_named_url(urls, &text, named_by);
                }
                let found = files.open(name, role, named_by)?;
                Ok(Found {
                    store: Input::File(found.store),
                    location: found.location,
                })
            }
            Inputs::Urls(urls) => open_url_relative(urls, name, role, named_by),
        }
    }

    fn follows_backing(&self) -> bool {
        match self {
            Inputs::Files { files, .. } => files.follows_backing(),
            Inputs::Urls(urls) => urls.follows_backing(),
        }
    }

    fn same_file(&mut self, a: &PathBuf, b: &PathBuf) -> bool {
        let urls = match self {
            Inputs::Files { files, urls, .. } => match (url_of(a), url_of(b)) {
                (None, None) => return files.same_file(a, b),
                // A file here and an object on a server.
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(_), Some(_)) => match urls {
                    Some(urls) => urls,
                    None => return a == b,
                },
            },
            Inputs::Urls(urls) => urls,
        };
        match (location_url(a), location_url(b)) {
            (Ok(a), Ok(b)) => urls.same_file(&a, &b),
            _ => a == b,
        }
    }

    fn describe(&self, location: &PathBuf) -> String {
        location.display().to_string()
    }
}

/// Opens `name`, stored by the remote image at `named_by`, relative to its URL.
fn open_url_relative(
    urls: &mut Urls,
    name: &FileName,
    role: Role,
    named_by: &Path,
) -> Result<Found<Input, PathBuf>, ChainError> {
    let base = location_url(named_by)?;
    let found = urls.open(name, role, &base).map_err(resolve_error)?;
    Ok(Found {
        store: Input::Http(found.store),
        location: PathBuf::from(found.location.as_str()),
    })
}

/// Opens the URL a local image names (`--follow any`), making the URL
/// resolver at the first one.
fn open_named_url(
    urls: &mut Option<Urls>,
    url: &str,
    named_by: &Path,
) -> Result<Found<Input, PathBuf>, ChainError> {
    let open_error = |source| ChainError::Open {
        path: PathBuf::from(url),
        named_by: Some(named_by.to_path_buf()),
        source,
    };
    let parsed = Url::parse(url)
        .map_err(|error| open_error(io::Error::new(io::ErrorKind::InvalidInput, error)))?;
    let urls = match urls {
        Some(urls) => urls,
        None => urls.insert(Urls::new(client().map_err(open_error)?, FollowPolicy::Any)),
    };
    // Under `any` the URL resolver keeps no directory to hold files to:
    // its "top" is only where relative names start from.
    let found = urls
        .open_top(&parsed)
        .map_err(|error| open_error(without_url(error)))?;
    Ok(Found {
        store: Input::Http(found.store),
        location: PathBuf::from(found.location.as_str()),
    })
}

/// A URL resolver's refusal or failure in the tool's terms.
fn resolve_error(error: ResolveError) -> ChainError {
    match error {
        ResolveError::Refused(refusal) => ChainError::Refused(refusal),
        ResolveError::BadName {
            named_by,
            name,
            why,
        } => ChainError::Open {
            path: PathBuf::from(name),
            named_by: Some(PathBuf::from(named_by)),
            source: io::Error::new(io::ErrorKind::InvalidInput, why),
        },
        ResolveError::Http {
            named_by,
            url,
            error,
        } => ChainError::Open {
            path: PathBuf::from(url),
            named_by: Some(PathBuf::from(named_by)),
            source: without_url(*error),
        },
        other => ChainError::Open {
            path: PathBuf::new(),
            named_by: None,
            source: io::Error::other(other.to_string()),
        },
    }
}

/// The walk's settings for `options`.
fn walk_options(options: &ChainOptions) -> WalkOptions<'_> {
    let mut walk = WalkOptions::default();
    walk.max_depth = options.max_depth;
    walk.config = options.config;
    walk.snapshot = options.snapshot.as_deref().map(str::as_bytes);
    walk.secret = options.secret.as_ref();
    walk
}

/// Opens the chain of `path` (a file or a URL) as `options` say: the
/// crate's `chain::open_disk`, over files or URLs.
pub fn open_disk(
    path: &Path,
    options: &ChainOptions,
) -> Result<Walked<Input, PathBuf>, ChainError> {
    let (mut inputs, top) = Inputs::open_top(path, options.follow)?;
    Ok(walk(&mut inputs, top, &walk_options(options))?)
}

/// The layers of the chain of `path`, found but not opened: the crate's
/// `chain::chain_layers`, over files or URLs.
pub fn chain_layers(path: &Path, options: &ChainOptions) -> Result<Vec<Layer>, ChainError> {
    let (mut inputs, top) = Inputs::open_top(path, options.follow)?;
    let layers = find_layers(&mut inputs, top, &walk_options(options))?;
    Ok(layers.into_iter().map(Layer::from).collect())
}
