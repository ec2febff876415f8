//! The rules of HTTP storage shared by `qcow` and `qcow2.efi`
//! (`qcow2_http::rules`, no_std) on arbitrary input: URLs and the names
//! beside them, `Content-Range`, what `HEAD`, the probe and a range
//! answer must be before a body is used, the body's length, the retry
//! policy, and the read-ahead cache against the object it caches. None may
//! panic, and each result must keep its documented promise.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use qcow2_http::rules::{self, answer, Answer, CacheError, Fault, HttpUrl, Pin, ReadAhead, Retry};

#[derive(Arbitrary, Debug)]
struct Setup {
    status: u16,
    first: u64,
    len: u32,
    size: u64,
    /// Each bit: whether that try (retry) or fetch (cache) fails.
    failures: u32,
    tries: u8,
    /// Cache geometry: block bytes and slots, kept small.
    block: u8,
    slots: u8,
    /// The cached object's bytes, at most 4 KiB.
    object_len: u16,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut input) else {
        return;
    };
    let rest = input.take_rest();
    let text = String::from_utf8_lossy(rest);
    let lines: Vec<&str> = text.split('\n').collect();
    urls(&lines);
    answers(&setup, &lines);
    retries(&setup);
    cache(&setup, rest);
});

/// What `parse` accepts is a URL again, its parts make it up, and a file
/// beside it stays on its scheme, host and directory.
fn urls(lines: &[&str]) {
    let Ok(url) = HttpUrl::parse(lines[0]) else {
        return;
    };
    let text = url.as_str();
    assert!(rules::is_url(text) && text.len() <= rules::MAX_URL_BYTES);
    assert_eq!(HttpUrl::parse(text).as_ref(), Ok(&url));
    assert!(url.path().starts_with('/'));
    assert!(text.starts_with(url.directory()) && url.directory().ends_with('/'));
    let after_name = url
        .host()
        .strip_prefix(url.host_name())
        .expect("the host name begins the authority");
    match after_name.strip_prefix(':') {
        Some("") | None => assert_eq!(url.port(), None),
        Some(port) => assert_eq!(port.parse().ok(), url.port()),
    }
    let query = url.query().map(|query| format!("?{query}"));
    assert!(text.ends_with(&format!("{}{}", url.path(), query.unwrap_or_default())));
    if let Ok(beside) = url.beside(lines.get(1).copied().unwrap_or_default()) {
        assert_eq!(beside.host(), url.host());
        assert_eq!(beside.is_https(), url.is_https());
        assert_eq!(beside.directory(), url.directory());
        assert!(beside.query().is_none());
    }
}

/// Headers made of the input, under an arbitrary status: an answer is
/// used only if it is exactly what was asked for.
fn answers(setup: &Setup, lines: &[&str]) {
    let mut answer = Answer::new(setup.status);
    let names = [
        "Content-Range",
        "Content-Length",
        "ETag",
        "Last-Modified",
        "Content-Encoding",
    ];
    // Lines 0 and 1 are the URL and the name beside it; then the headers.
    for (name, value) in names.iter().zip(lines.iter().skip(2)) {
        answer.with_header(name, value);
    }
    let value = answer.content_range.clone().unwrap_or_default();
    let parsed = rules::content_range(&value);
    if let Some((first, last, _)) = parsed {
        assert!(first <= last);
    }
    if let Ok(found) = rules::head(&answer) {
        assert!((200..300).contains(&answer.status) || found.is_none());
    }
    if let Ok((size, pin)) = rules::probe(&answer) {
        assert!(answer.status == 206 && size > 0);
        assert_eq!(pin, Pin::of(&answer));
        assert_eq!(parsed, Some((0, 0, Some(size))));
    }
    let first = setup.first;
    let last = first.saturating_add(u64::from(setup.len));
    let pin = Pin {
        etag: lines.get(7).map(|etag| etag.trim().to_string()),
        last_modified: None,
    };
    match rules::check_range(&answer, first, last, setup.size, &pin) {
        Ok(()) => {
            assert_eq!(answer.status, 206);
            let (a, b, total) = parsed.expect("a checked Content-Range");
            assert_eq!((a, b), (first, last));
            assert!(total.is_none_or(|total| total == setup.size));
            assert!(pin.check(&answer).is_ok());
            if let Some(length) = &answer.content_length {
                assert_eq!(length.parse::<u64>().ok(), Some(last - first + 1));
            }
        }
        // Only a server error is worth another try: the head of an answer
        // of the wrong shape is the same the next time.
        Err(fault) => assert_eq!(fault.retry(), (500..600).contains(&answer.status)),
    }
    let want = last - first + 1;
    let got = u64::from(setup.failures);
    match rules::check_body(first, last, got) {
        Ok(()) => assert_eq!(got, want),
        Err(fault) => assert_eq!(fault.retry(), got < want),
    }
    assert_eq!(
        answer::range_header(first, last),
        format!("bytes={first}-{last}")
    );
}

/// Tries end at a success, a fault not worth another, or the limit; the
/// waits double up to the longest.
fn retries(setup: &Setup) {
    let retry = Retry {
        tries: u32::from(setup.tries % 8) + 1,
        first_wait: Duration::from_millis(u64::from(setup.block)),
        max_wait: Duration::from_millis(u64::from(setup.slots) * 4),
    };
    let mut calls = 0u32;
    let mut waits = Vec::new();
    let result = retry.run(
        || {
            calls += 1;
            let bit = |n: u32| setup.failures >> ((calls * 2 + n) % 32) & 1 == 1;
            match (bit(0), bit(1)) {
                (false, _) => Ok(calls),
                (true, transient) => Err(Fault::Transport {
                    request: "GET bytes=0-0".into(),
                    error: String::new(),
                    transient,
                }),
            }
        },
        |wait| waits.push(wait),
    );
    assert!(calls <= retry.tries);
    assert_eq!(waits.len() as u32 + 1, calls);
    assert!(waits.iter().all(|&wait| wait <= retry.max_wait));
    assert!(waits.windows(2).all(|pair| pair[0] <= pair[1]));
    match result {
        Ok(value) => assert_eq!(value, calls),
        Err(failure) => {
            assert_eq!(failure.tries, calls);
            assert!(!failure.fault.retry() || calls == retry.tries);
        }
    }
}

/// Reads through the cache equal the object; fetches are whole aligned
/// blocks; a failed fetch is an error, never stale bytes.
fn cache(setup: &Setup, bytes: &[u8]) {
    let object: Vec<u8> = (0..setup.object_len % 4097)
        .map(|i| bytes.get(usize::from(i)).copied().unwrap_or(i as u8))
        .collect();
    let size = object.len() as u64;
    let block = usize::from(setup.block).max(1);
    let slots = usize::from(setup.slots % 8).max(1);
    let Ok(mut cache) = ReadAhead::new(size, block, slots) else {
        return;
    };
    let mut fetches = 0u32;
    for (i, pair) in bytes.chunks(4).take(64).enumerate() {
        let offset = u64::from(u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        let len = usize::from(*pair.get(2).unwrap_or(&1));
        let mut buf = vec![0xa5; len];
        let result = cache.read_at(offset, &mut buf, |first, out| {
            fetches += 1;
            assert_eq!(first % block as u64, 0, "an unaligned fetch");
            assert_eq!(out.len() as u64, (size - first).min(block as u64));
            if setup.failures >> (i % 32) & 1 == 1 && fetches % 3 == 0 {
                return Err("reset");
            }
            out.copy_from_slice(&object[first as usize..first as usize + out.len()]);
            Ok(())
        });
        match result {
            Ok(()) => assert_eq!(buf, object[offset as usize..offset as usize + len]),
            Err(CacheError::OutOfRange) => assert!(offset + len as u64 > size),
            Err(CacheError::Fetch(_)) => {}
        }
    }
    assert_eq!(cache.requests(), u64::from(fetches));
}
