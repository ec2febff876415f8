//! What a server's answer must be before its body is used: the request's
//! `Range` text, `Content-Range` parsing, the status and range checks of a
//! range answer, the size from `HEAD` or a one-byte probe, and the object
//! pinned at open by its `ETag` / `Last-Modified`.
//!
//! Plain values in (a status code and header strings, whichever client
//! read them), a [`Fault`] out: anything but exactly the range asked for,
//! of the version pinned, is named, never used.

use alloc::format;
use alloc::string::{String, ToString};

use super::fault::Fault;

/// What the server said, as far as the rules read it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code (0 if the transport did not know it).
    pub status: u16,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Answer {
    /// An answer with `status` and no headers yet.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Takes the headers the rules read from `(name, value)` pairs (names
    /// compared case-insensitively, values trimmed; others ignored).
    pub fn with_header(&mut self, name: &str, value: &str) {
        let field = if name.eq_ignore_ascii_case("content-range") {
            &mut self.content_range
        } else if name.eq_ignore_ascii_case("content-length") {
            &mut self.content_length
        } else if name.eq_ignore_ascii_case("content-encoding") {
            &mut self.content_encoding
        } else if name.eq_ignore_ascii_case("etag") {
            &mut self.etag
        } else if name.eq_ignore_ascii_case("last-modified") {
            &mut self.last_modified
        } else {
            return;
        };
        *field = Some(value.trim().to_string());
    }
}

/// The version of the object at open: every later answer must carry the
/// same validators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `ETag` at open.
    pub etag: Option<String>,
    /// `Last-Modified` at open.
    pub last_modified: Option<String>,
}

impl Pin {
    /// The validators of `answer`.
    pub fn of(answer: &Answer) -> Self {
        Self {
            etag: answer.etag.clone(),
            last_modified: answer.last_modified.clone(),
        }
    }

    /// The precondition header a range request carries, so that a server
    /// holding a new version answers 412 rather than its bytes. `If-Match`
    /// compares strongly, so a weak `ETag` would never match: then the date.
    pub fn precondition(&self) -> Option<(&'static str, &str)> {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) if !etag.starts_with("W/") => Some(("If-Match", etag)),
            (_, Some(date)) => Some(("If-Unmodified-Since", date)),
            _ => None,
        }
    }

    /// Whether an answer's validators are those pinned (one the answer
    /// leaves out is not compared).
    pub fn check(&self, answer: &Answer) -> Result<(), Fault> {
        if let (Some(was), Some(is)) = (&self.etag, &answer.etag) {
            if was != is {
                return Err(Fault::Changed(format!("ETag was {was}, now {is}")));
            }
        }
        if let (Some(was), Some(is)) = (&self.last_modified, &answer.last_modified) {
            if was != is {
                return Err(Fault::Changed(format!("Last-Modified was {was}, now {is}")));
            }
        }
        Ok(())
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`), FIRST at most LAST.
pub fn content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last).then_some((first, last, total))
}

/// The range bytes `first..=last` as the rules name it: `FIRST-LAST`.
pub fn range_text(first: u64, last: u64) -> String {
    format!("{first}-{last}")
}

/// Bytes in `first..=last` (saturating: the rules never panic on the
/// caller's numbers).
fn range_len(first: u64, last: u64) -> u64 {
    last.saturating_sub(first).saturating_add(1)
}

/// The `Range` header's value for bytes `first..=last`.
pub fn range_header(first: u64, last: u64) -> String {
    format!("bytes={first}-{last}")
}

/// The request as errors name it: `GET bytes=FIRST-LAST`.
pub fn range_request(first: u64, last: u64) -> String {
    format!("GET {}", range_header(first, last))
}

/// The status of an answer to a range request refused, if it is not 206.
/// `pinned` is the object's pin and size at open, for a read (none for the
/// probe, which asks before anything is pinned).
fn check_status(
    answer: &Answer,
    first: u64,
    last: u64,
    pinned: Option<(&Pin, u64)>,
) -> Result<(), Fault> {
    let range = range_text(first, last);
    match (answer.status, pinned) {
        (206, _) => Ok(()),
        (200, _) => Err(Fault::IgnoresRange { range }),
        (412, Some((pin, _))) => {
            let (name, value) = pin.precondition().unwrap_or(("a precondition", ""));
            Err(Fault::Changed(format!(
                "412 Precondition Failed for {name}: {value}"
            )))
        }
        // The range is inside the size at open: the object shrank.
        (416, Some((_, size))) => Err(Fault::Changed(format!(
            "416 Range Not Satisfiable for bytes {range}: it had {size} bytes at open"
        ))),
        (status, _) => Err(Fault::Status {
            request: range_request(first, last),
            status,
        }),
    }
}

/// A body in a coding refused: none is asked for, and an encoded body is
/// not the object's bytes.
fn check_encoding(answer: &Answer, range: &str) -> Result<(), Fault> {
    match answer.content_encoding.as_deref() {
        Some(coding) if !coding.eq_ignore_ascii_case("identity") => {
            Err(Fault::BadResponse(format!(
                "206 for bytes {range} with Content-Encoding {coding}, which was not asked for"
            )))
        }
        _ => Ok(()),
    }
}

/// The size and version from the answer to `HEAD`: `None` when it gives
/// no size or the server has no `HEAD` (405, 501), and a one-byte
/// [`probe`] must ask instead.
pub fn head(answer: &Answer) -> Result<Option<(u64, Pin)>, Fault> {
    match answer.status {
        200..=299 => Ok(answer
            .content_length
            .as_deref()
            .and_then(|length| length.parse().ok())
            .map(|size| (size, Pin::of(answer)))),
        405 | 501 => Ok(None),
        status => Err(Fault::Status {
            request: "HEAD".to_string(),
            status,
        }),
    }
}

/// The object's size and version from the answer to `Range: bytes=0-0`.
pub fn probe(answer: &Answer) -> Result<(u64, Pin), Fault> {
    let range = range_text(0, 0);
    check_status(answer, 0, 0, None)?;
    let value = answer
        .content_range
        .as_deref()
        .ok_or_else(|| Fault::BadResponse("206 without Content-Range".to_string()))?;
    match content_range(value) {
        Some((0, 0, Some(size))) if size > 0 => Ok((size, Pin::of(answer))),
        Some((_, _, None)) => Err(Fault::BadResponse(format!(
            "Content-Range {value:?} gives no size"
        ))),
        _ => Err(Fault::Short {
            range,
            got: format!("Content-Range {value:?}"),
        }),
    }
}

/// Checks the head of the answer to `Range: bytes=first-last` of an
/// object of `size` bytes pinned as `pin`: its body may be read only if
/// this is `Ok`, and then it must be exactly `last - first + 1` bytes
/// ([`check_body`]).
pub fn check_range(
    answer: &Answer,
    first: u64,
    last: u64,
    size: u64,
    pin: &Pin,
) -> Result<(), Fault> {
    let range = range_text(first, last);
    check_status(answer, first, last, Some((pin, size)))?;
    pin.check(answer)?;
    check_encoding(answer, &range)?;
    let value = answer.content_range.as_deref().ok_or_else(|| {
        Fault::BadResponse(format!("206 for bytes {range} without Content-Range"))
    })?;
    match content_range(value) {
        Some((a, b, total)) if a == first && b == last => {
            if let Some(total) = total.filter(|&total| total != size) {
                return Err(Fault::Changed(format!(
                    "its size was {size} bytes, now {total}"
                )));
            }
        }
        _ => {
            return Err(Fault::Short {
                range,
                got: format!("Content-Range {value:?}"),
            })
        }
    }
    if let Some(length) = answer.content_length.as_deref() {
        if length.parse::<u64>().ok() != Some(range_len(first, last)) {
            return Err(Fault::Short {
                range,
                got: format!("Content-Length {length}"),
            });
        }
    }
    Ok(())
}

/// Checks the body of a range answer whose head passed [`check_range`]:
/// `got` bytes came for bytes `first..=last`. Fewer is a body cut short
/// (worth another try); more is an answer to refuse.
pub fn check_body(first: u64, last: u64, got: u64) -> Result<(), Fault> {
    let want = range_len(first, last);
    let range = range_text(first, last);
    match got.cmp(&want) {
        core::cmp::Ordering::Less => Err(Fault::BodyEnded { range, got }),
        core::cmp::Ordering::Greater => Err(Fault::BadResponse(format!(
            "a body longer than the {want} bytes of its Content-Range"
        ))),
        core::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, range: &str, length: &str, etag: &str) -> Answer {
        let mut answer = Answer::new(status);
        answer.with_header("Content-Range", range);
        answer.with_header("CONTENT-LENGTH", length);
        answer.with_header("ETag", etag);
        answer
    }

    #[test]
    fn content_range_is_parsed_and_garbage_refused() {
        assert_eq!(
            content_range("bytes 0-262143/1048576"),
            Some((0, 262143, Some(1048576)))
        );
        assert_eq!(content_range(" bytes 5-9/* "), Some((5, 9, None)));
        assert_eq!(content_range("items 0-1/2"), None);
        assert_eq!(content_range("bytes 9-5/10"), None);
        assert_eq!(range_header(0, 9), "bytes=0-9");
        assert_eq!(range_request(0, 9), "GET bytes=0-9");
    }

    #[test]
    fn weak_etags_pin_by_date_since_if_match_compares_strongly() {
        let pin = Pin {
            etag: Some("W/\"abc\"".into()),
            last_modified: Some("Mon, 07 Dec 2026 02:00:00 GMT".into()),
        };
        assert_eq!(
            pin.precondition(),
            Some(("If-Unmodified-Since", "Mon, 07 Dec 2026 02:00:00 GMT"))
        );
        let strong = Pin {
            etag: Some("\"abc\"".into()),
            last_modified: None,
        };
        assert_eq!(strong.precondition(), Some(("If-Match", "\"abc\"")));
        assert_eq!(Pin::default().precondition(), None);
    }

    #[test]
    fn head_gives_the_size_or_asks_for_a_probe() {
        let (size, pin) = head(&answer(200, "", "12345", "\"e1\"")).unwrap().unwrap();
        assert_eq!((size, pin.etag.as_deref()), (12345, Some("\"e1\"")));
        assert_eq!(head(&answer(200, "", "", "")), Ok(None));
        assert_eq!(head(&answer(405, "", "", "")), Ok(None));
        let missing = head(&answer(404, "", "", "")).unwrap_err();
        assert_eq!(
            missing,
            Fault::Status {
                request: "HEAD".into(),
                status: 404
            }
        );
        assert!(head(&answer(503, "", "", "")).unwrap_err().retry());
    }

    #[test]
    fn the_probe_gives_size_and_pin_and_refuses_servers_without_ranges() {
        let (size, pin) = probe(&answer(206, "bytes 0-0/12345", "1", "\"e1\"")).unwrap();
        assert_eq!(size, 12345);
        assert_eq!(pin.precondition(), Some(("If-Match", "\"e1\"")));
        assert!(matches!(
            probe(&answer(200, "", "12345", "")),
            Err(Fault::IgnoresRange { .. })
        ));
        assert!(matches!(
            probe(&answer(206, "bytes 0-0/*", "1", "")),
            Err(Fault::BadResponse(_))
        ));
        assert!(matches!(
            probe(&answer(206, "bytes 5-9/100", "5", "")),
            Err(Fault::Short { .. })
        ));
    }

    #[test]
    fn range_answers_are_used_only_when_exactly_the_range_of_the_pinned_object() {
        let pin = Pin {
            etag: Some("\"e1\"".into()),
            last_modified: None,
        };
        let ok = answer(206, "bytes 100-199/1000", "100", "\"e1\"");
        assert_eq!(check_range(&ok, 100, 199, 1000, &pin), Ok(()));
        let other = answer(206, "bytes 0-99/1000", "100", "\"e1\"");
        assert!(matches!(
            check_range(&other, 100, 199, 1000, &pin),
            Err(Fault::Short { .. })
        ));
        let short = answer(206, "bytes 100-199/1000", "50", "\"e1\"");
        assert!(matches!(
            check_range(&short, 100, 199, 1000, &pin),
            Err(Fault::Short { .. })
        ));
        let changed = answer(206, "bytes 100-199/1000", "100", "\"e2\"");
        assert!(matches!(
            check_range(&changed, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let grown = answer(206, "bytes 100-199/2000", "100", "\"e1\"");
        assert!(matches!(
            check_range(&grown, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let precondition = answer(412, "", "", "");
        assert_eq!(
            check_range(&precondition, 100, 199, 1000, &pin),
            Err(Fault::Changed(
                "412 Precondition Failed for If-Match: \"e1\"".into()
            ))
        );
        let shrunk = answer(416, "", "", "");
        assert!(matches!(
            check_range(&shrunk, 100, 199, 1000, &pin),
            Err(Fault::Changed(_))
        ));
        let whole = answer(200, "", "1000", "\"e1\"");
        assert!(matches!(
            check_range(&whole, 100, 199, 1000, &pin),
            Err(Fault::IgnoresRange { .. })
        ));
        let mut gzip = ok.clone();
        gzip.with_header("Content-Encoding", "gzip");
        assert!(matches!(
            check_range(&gzip, 100, 199, 1000, &pin),
            Err(Fault::BadResponse(_))
        ));
        gzip.with_header("content-encoding", "identity");
        assert_eq!(check_range(&gzip, 100, 199, 1000, &pin), Ok(()));
    }

    #[test]
    fn a_body_cut_short_is_retried_and_a_longer_one_refused() {
        assert_eq!(check_body(100, 199, 100), Ok(()));
        let cut = check_body(100, 199, 40).unwrap_err();
        assert!(matches!(cut, Fault::BodyEnded { got: 40, .. }) && cut.retry());
        let long = check_body(100, 199, 101).unwrap_err();
        assert!(matches!(long, Fault::BadResponse(_)) && !long.retry());
    }
}
