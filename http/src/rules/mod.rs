//! The rules of HTTP storage, `no_std` + `alloc`: what the host client
//! (`HttpFile`, `Urls`) and the UEFI driver (`qcow2.efi`, through the
//! firmware's `EFI_HTTP_PROTOCOL`) both obey, written once.
//!
//! - [`url`]: which text is a URL, its parts, and the URL of a file beside it;
//! - [`answer`]: the `Range` text, `Content-Range`, and what an answer
//!   must be before its body is used (206 with exactly the range asked
//!   for, of the object pinned at open by its `ETag` / `Last-Modified`);
//! - [`fault`]: what went wrong, named ([`Fault`]), and which of it is
//!   worth another try;
//! - [`retry`]: how many tries, how long between them;
//! - [`cache`]: a single reader's read-ahead cache of aligned blocks.
//!
//! Plain values in (a status code and header strings), enums out: no
//! client's types, no I/O, no clock. Each transport only moves bytes and
//! says whether its own failures are transient.

pub mod answer;
pub mod cache;
pub mod fault;
pub mod retry;
pub mod url;

pub use answer::{check_body, check_range, content_range, head, probe, Answer, Pin};
pub use cache::{CacheError, ReadAhead};
pub use fault::{Failure, Fault};
pub use retry::Retry;
pub use url::{is_url, HttpUrl, UrlError, MAX_REDIRECTS, MAX_URL_BYTES};
