//! `qcow serve --connect`'s reader of the kernel's generic-netlink answers
//! (`qcow2_nbd::netlink::parse_replies`): the kernel is trusted, but the
//! parser takes lengths from the bytes, so it is held to the same rule as
//! every other parser here.
//!
//! Input: the bytes of one `recv` on the socket.
//!
//! Checks: nothing panics; an accepted answer holds no more attribute
//! bytes than were received (lengths are never trusted past the buffer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcow2_nbd::netlink::{parse_replies, Reply};

fuzz_target!(|bytes: &[u8]| {
    let Ok(replies) = parse_replies(bytes) else {
        return;
    };
    let payload: usize = replies
        .iter()
        .map(|reply| match reply {
            Reply::Data { attributes, .. } => attributes.iter().map(|(_, data)| data.len()).sum(),
            _ => 0,
        })
        .sum();
    assert!(
        payload <= bytes.len(),
        "{payload} attribute bytes from {}",
        bytes.len()
    );
    // Every message takes at least a 16-byte header.
    assert!(replies.len() <= bytes.len() / 16);
});
