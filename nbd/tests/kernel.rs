//! A connection as the kernel's NBD driver uses it after a netlink connect:
//! no handshake at all, requests from the first byte, simple replies only
//! (the kernel never negotiates structured replies). The device itself
//! needs the `nbd` module, which the host has not: `/dev/nbdN` is proved by
//! the boot test; this proves the bytes the kernel reads.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

use qcow2_nbd::device::serve_connection;
use qcow2_nbd::wire::reply::{self, SimpleReply};
use qcow2_nbd::wire::request::{self, Request};
use qcow2_nbd::{Export, Limits, Run};

/// Requests served at once, as `qcow serve --connect` sets it by default.
const REQUESTS: usize = 4;
const STACK: usize = 256 << 10;

/// 1 MiB of bytes `offset % 253`.
struct Pattern;

impl Export for Pattern {
    fn size(&self) -> u64 {
        1 << 20
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (at, byte) in (offset..).zip(buf.iter_mut()) {
            *byte = (at % 253) as u8;
        }
        Ok(())
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        Ok(Run {
            len: max_len.min(self.size() - offset),
            hole: false,
            zero: false,
        })
    }
}

fn send(stream: &mut UnixStream, command: u16, cookie: u64, offset: u64, len: u32) {
    let request = Request {
        flags: 0,
        command,
        cookie,
        offset,
        len,
    };
    stream.write_all(&request.emit()).unwrap();
}

fn simple_reply(stream: &mut UnixStream) -> SimpleReply {
    let mut header = [0; SimpleReply::LEN];
    stream.read_exact(&mut header).unwrap();
    SimpleReply::parse(&header).expect("a simple reply, as the kernel reads them")
}

#[test]
fn kernel_connection_gets_simple_replies_without_a_handshake() {
    let (mut kernel, server) = UnixStream::pair().unwrap();
    let serving = thread::spawn(move || {
        serve_connection(&Pattern, &server, Limits::default(), REQUESTS, STACK)
    });

    // A read as the kernel sends it: the first bytes on the socket.
    send(
        &mut kernel,
        request::READ,
        0x1122_3344_5566_7788,
        4096 * 3 + 512,
        8192,
    );
    let reply = simple_reply(&mut kernel);
    assert_eq!((reply.error, reply.cookie), (0, 0x1122_3344_5566_7788));
    let mut data = vec![0; 8192];
    kernel.read_exact(&mut data).unwrap();
    let expected: Vec<u8> = (4096 * 3 + 512..4096 * 3 + 512 + 8192u64)
        .map(|at| (at % 253) as u8)
        .collect();
    assert_eq!(data, expected);

    // A write to the read-only device: EPERM, and the connection goes on.
    send(&mut kernel, request::WRITE, 2, 0, 512);
    kernel.write_all(&[0xaa; 512]).unwrap();
    let reply = simple_reply(&mut kernel);
    assert_eq!((reply.error, reply.cookie), (reply::EPERM, 2));

    // A read past the end: EINVAL with no data, then still served.
    send(&mut kernel, request::READ, 3, (1 << 20) - 512, 1024);
    assert_eq!(simple_reply(&mut kernel).error, reply::EINVAL);
    send(&mut kernel, request::READ, 4, 0, 512);
    assert_eq!(simple_reply(&mut kernel).error, 0);
    kernel.read_exact(&mut data[..512]).unwrap();

    // The kernel's disconnect ends the session cleanly.
    send(&mut kernel, request::DISC, 5, 0, 0);
    serving
        .join()
        .unwrap()
        .expect("a clean end on NBD_CMD_DISC");
    let mut rest = Vec::new();
    kernel.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no bytes after the disconnect: {rest:?}");
}

/// [`Pattern`], but a read at offset 0 waits until a read at 4096 has
/// started: served one at a time, the first would wait for ever (here:
/// fail after 10 s).
#[derive(Default)]
struct Gated {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Export for Gated {
    fn size(&self) -> u64 {
        Pattern.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut open = self.open.lock().unwrap();
        if offset == 4096 {
            *open = true;
            self.opened.notify_all();
        } else {
            let (open, waited) = self
                .opened
                .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
                .unwrap();
            if waited.timed_out() && !*open {
                return Err(io::Error::other("the second read never started"));
            }
        }
        Pattern.read_at(offset, buf)
    }

    fn status(&self, offset: u64, max_len: u64) -> io::Result<Run> {
        Pattern.status(offset, max_len)
    }
}

#[test]
fn requests_in_flight_are_served_at_once_and_answered_as_they_finish() {
    let (mut kernel, server) = UnixStream::pair().unwrap();
    let serving = thread::spawn(move || {
        serve_connection(
            &Gated::default(),
            &server,
            Limits::default(),
            REQUESTS,
            STACK,
        )
    });
    // Two requests in flight, as the kernel queues them: the first can
    // only finish once the second has started.
    send(&mut kernel, request::READ, 1, 0, 4096);
    send(&mut kernel, request::READ, 2, 4096, 4096);
    let mut order = Vec::new();
    for _ in 0..2 {
        let reply = simple_reply(&mut kernel);
        assert_eq!(reply.error, 0, "request {} failed", reply.cookie);
        let mut data = vec![0; 4096];
        kernel.read_exact(&mut data).unwrap();
        let offset = (reply.cookie - 1) * 4096;
        let expected: Vec<u8> = (offset..offset + 4096).map(|at| (at % 253) as u8).collect();
        assert!(data == expected, "request {}: wrong bytes", reply.cookie);
        order.push(reply.cookie);
    }
    assert_eq!(order, [2, 1], "the replies in the order the reads finished");
    send(&mut kernel, request::DISC, 3, 0, 0);
    serving.join().unwrap().expect("a clean end");
}

#[test]
fn a_protocol_violation_ends_every_worker_not_only_the_one_that_saw_it() {
    let (mut kernel, server) = UnixStream::pair().unwrap();
    let serving = thread::spawn(move || {
        serve_connection(&Pattern, &server, Limits::default(), REQUESTS, STACK)
    });
    send(&mut kernel, request::READ, 1, 0, 512);
    assert_eq!(simple_reply(&mut kernel).error, 0);
    let mut data = [0; 512];
    kernel.read_exact(&mut data).unwrap();
    // A header with a wrong magic; the kernel end stays open, so only the
    // session itself can end the other workers' wait for a request.
    kernel.write_all(&[0x55; Request::LEN]).unwrap();
    let error = serving
        .join()
        .unwrap()
        .expect_err("a bad magic is a protocol violation");
    assert!(error.to_string().contains("protocol violation"), "{error}");
}
