//! The plain logic of the UEFI driver (`uefi/src/lib.rs`) on arbitrary
//! input: `ReadBlocks` checks and the block read over a byte store, the
//! `\qcow2.cfg` parser (paths and URLs), the driver's load options, the
//! names beside a URL by the driver's rule (`path::url_beside`),
//! backing-name paths, and the device path walk. The HTTP rules the
//! driver shares with the host (`qcow2_http::rules`) are the `http_rules`
//! target's. None may panic, and each result must keep its documented
//! promise.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use qcow2_http::rules::{is_url, HttpUrl};
use qcow2_uefi::blocks::{read_blocks, BlockRequest, Geometry, BLOCK_SIZE};
use qcow2_uefi::{config, device_path, load_options, path};

#[derive(Arbitrary, Debug)]
struct Request {
    virtual_size: u64,
    media_id: u32,
    lba: u64,
    /// Kept below 1 MiB: the buffer is allocated.
    buffer_size: u32,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let Ok(request) = Request::arbitrary(&mut input) else {
        return;
    };
    let rest = input.take_rest();
    block_reads(&request, rest);
    let images = config_paths(rest);
    let image = images
        .iter()
        .find(|line| !is_url(line))
        .map_or("\\images\\top.qcow2", String::as_str);
    backing_paths(image, rest);
    device_paths(rest, request.media_id);
    load_option_urls(rest);
    urls_beside(rest);
});

fn block_reads(request: &Request, disk: &[u8]) {
    let Ok(geometry) = Geometry::new(request.virtual_size) else {
        return;
    };
    let buffer_size = (request.buffer_size % (1 << 20)) as usize;
    let block_request = BlockRequest {
        media_id: request.media_id,
        lba: request.lba,
        buffer_size,
    };
    let Ok(range) = geometry.request(request.media_id, block_request) else {
        return;
    };
    assert_eq!(range.end - range.start, buffer_size as u64);
    assert_eq!(range.start % u64::from(BLOCK_SIZE), 0);
    assert!(range.end <= (geometry.last_block + 1) * u64::from(BLOCK_SIZE));
    let mut buf = vec![0xa5u8; buffer_size];
    if read_blocks(disk, request.virtual_size, range.start, &mut buf).is_ok() {
        for (i, byte) in buf.iter().enumerate() {
            let offset = range.start + i as u64;
            if offset >= request.virtual_size {
                assert_eq!(*byte, 0, "byte {offset:#x} past the virtual size");
            } else {
                assert_eq!(*byte, disk[offset as usize]);
            }
        }
    }
}

fn config_paths(text: &[u8]) -> Vec<String> {
    match config::parse(text) {
        Ok(images) => {
            assert!(images.len() <= config::MAX_IMAGES);
            for image in &images {
                if is_url(image) {
                    // URL lines are kept as written, and parse.
                    assert!(HttpUrl::parse(image).is_ok(), "{image:?}");
                } else {
                    assert!(image.starts_with('\\') && !image.contains('/'));
                }
                assert!(image.len() <= config::MAX_LINE_BYTES + 1);
            }
            images
        }
        Err(_) => Vec::new(),
    }
}

fn backing_paths(image: &str, name: &[u8]) {
    if let Ok(resolved) = path::beside(image, name) {
        let directory = path::directory_of(image);
        let file = resolved
            .strip_prefix(directory)
            .expect("the image's directory");
        assert!(!file.is_empty() && !file.contains(['/', '\\']));
        assert!(resolved.len() <= path::MAX_PATH_BYTES + directory.len());
    }
}

fn device_paths(bytes: &[u8], index: u32) {
    // Past the input, the path reads as an end node.
    let header = |offset: usize| {
        bytes
            .get(offset..offset + 4)
            .map_or([0x7f, 0xff, 4, 0], |h| h.try_into().unwrap())
    };
    let Ok(len) = device_path::length_before_end(header) else {
        return;
    };
    assert!(len <= device_path::MAX_PATH_BYTES);
    // In the driver the walked bytes are the firmware's path, all present.
    if let Some(parent) = bytes.get(..len) {
        let child = device_path::child_path(parent, index);
        assert_eq!(&child[child.len() - 4..], &[0x7f, 0xff, 4, 0]);
        assert!(device_path::is_own_child(&child[..child.len() - 4]));
    }
}

/// The driver's load options: URLs only, as `\qcow2.cfg` lines, each one
/// that parses.
fn load_option_urls(bytes: &[u8]) {
    if let Ok(urls) = load_options::urls(bytes) {
        assert!(urls.len() <= config::MAX_IMAGES);
        for url in &urls {
            assert!(is_url(url) && HttpUrl::parse(url).is_ok(), "{url:?}");
        }
    }
}

/// A URL from the input's first line, and the name beside it from the
/// rest: what `parse` accepts is a URL again, and a name beside it stays
/// on the same server.
fn urls_beside(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(url) = HttpUrl::parse(first) else {
        return;
    };
    assert!(is_url(url.as_str()));
    assert_eq!(HttpUrl::parse(url.as_str()).as_ref(), Ok(&url));
    if let Ok(beside) = path::url_beside(&url, rest.as_bytes()) {
        assert_eq!(beside.host(), url.host());
        assert_eq!(beside.is_https(), url.is_https());
        assert_eq!(beside.directory(), url.directory());
    }
}
