//! A minimal blocking NBD client over the same wire module: what the
//! tests use to speak to the server byte by byte (well-behaved and not),
//! where the reference clients (`qemu-img`, `nbdinfo`, `nbdcopy`) cannot be
//! made to misbehave. Not a general client: one request at a time, and it
//! trusts the server no further than to keep every payload under 64 MiB.

use std::io::{self, Read, Write};

use crate::wire::handshake::{CLIENT_FIXED_NEWSTYLE, IHAVEOPT, NBDMAGIC};
use crate::wire::option::{self, OptionHeader};
use crate::wire::option_reply::{self, Info, OptionReplyHeader};
use crate::wire::reply::{self, Chunk, Descriptor, SimpleReply};
use crate::wire::request::{self, Request};

/// Largest payload the client accepts from a server.
const MAX_REPLY_BYTES: u32 = 64 << 20;

/// One reply to an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionReply {
    /// Its type (`ACK`, `INFO`, an error...).
    pub reply: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A request's outcome: success, or the server's error value and message.
pub type Answer<T> = Result<T, (u32, String)>;

/// A client connection.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    /// The export's size, once an export is chosen.
    pub size: u64,
    /// Its transmission flags.
    pub flags: u16,
    /// Structured replies were negotiated.
    pub structured: bool,
    next_cookie: u64,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn read_payload<S: Read>(stream: &mut S, len: u32) -> io::Result<Vec<u8>> {
    if len > MAX_REPLY_BYTES {
        return Err(invalid(format!("server sent a payload of {len} bytes")));
    }
    let mut payload = vec![0; len as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

impl<S: Read + Write> Client<S> {
    /// Reads the server's greeting and answers with fixed newstyle.
    pub fn greet(mut stream: S) -> io::Result<Self> {
        let mut greeting = [0; 18];
        stream.read_exact(&mut greeting)?;
        if greeting[..8] != NBDMAGIC.to_be_bytes() || greeting[8..16] != IHAVEOPT.to_be_bytes() {
            return Err(invalid("not an NBD newstyle greeting".to_string()));
        }
        stream.write_all(&CLIENT_FIXED_NEWSTYLE.to_be_bytes())?;
        Ok(Self {
            stream,
            size: 0,
            flags: 0,
            structured: false,
            next_cookie: 1,
        })
    }

    /// The connection itself (to misbehave with it).
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends option `code` with `payload` and reads its replies up to the
    /// final one (an `ACK` or an error).
    pub fn option(&mut self, code: u32, payload: &[u8]) -> io::Result<Vec<OptionReply>> {
        let header = OptionHeader {
            option: code,
            len: payload.len() as u32,
        };
        self.stream.write_all(&header.emit())?;
        self.stream.write_all(payload)?;
        self.option_replies(code)
    }

    /// Reads replies to `code` up to the final one.
    pub fn option_replies(&mut self, code: u32) -> io::Result<Vec<OptionReply>> {
        let mut replies = Vec::new();
        loop {
            let mut header = [0; OptionReplyHeader::LEN];
            self.stream.read_exact(&mut header)?;
            let header =
                OptionReplyHeader::parse(&header).map_err(|error| invalid(error.to_string()))?;
            if header.option != code {
                return Err(invalid(format!(
                    "reply to option {} while {code} was asked",
                    header.option
                )));
            }
            let payload = read_payload(&mut self.stream, header.len)?;
            let last = header.reply == option_reply::ACK || option_reply::is_error(header.reply);
            replies.push(OptionReply {
                reply: header.reply,
                payload,
            });
            if last {
                return Ok(replies);
            }
        }
    }

    /// `NBD_OPT_STRUCTURED_REPLY`; true if acknowledged.
    pub fn structured_replies(&mut self) -> io::Result<bool> {
        let replies = self.option(option::STRUCTURED_REPLY, &[])?;
        self.structured = replies.last().map(|reply| reply.reply) == Some(option_reply::ACK);
        Ok(self.structured)
    }

    /// `NBD_OPT_STARTTLS`, then `wrap` (the client's TLS handshake) over the
    /// connection once the server acknowledged it: the client over TLS,
    /// with structured replies forgotten as the server forgets them. A
    /// refusal is an error naming the reply.
    pub fn start_tls<T: Read + Write>(
        mut self,
        wrap: impl FnOnce(S) -> io::Result<T>,
    ) -> io::Result<Client<T>> {
        let replies = self.option(option::STARTTLS, &[])?;
        match replies.last() {
            Some(reply) if reply.reply == option_reply::ACK => {}
            last => {
                return Err(invalid(format!(
                    "NBD_OPT_STARTTLS refused: {:?}",
                    last.map(|reply| (reply.reply, String::from_utf8_lossy(&reply.payload)))
                )))
            }
        }
        Ok(Client {
            stream: wrap(self.stream)?,
            size: self.size,
            flags: self.flags,
            structured: false,
            next_cookie: self.next_cookie,
        })
    }

    /// `NBD_OPT_SET_META_CONTEXT` of `queries` on export `name`.
    pub fn set_meta_context(
        &mut self,
        name: &str,
        queries: &[&str],
    ) -> io::Result<Vec<OptionReply>> {
        let mut payload = Vec::new();
        payload.extend((name.len() as u32).to_be_bytes());
        payload.extend(name.as_bytes());
        payload.extend((queries.len() as u32).to_be_bytes());
        for query in queries {
            payload.extend((query.len() as u32).to_be_bytes());
            payload.extend(query.as_bytes());
        }
        self.option(option::SET_META_CONTEXT, &payload)
    }

    /// `NBD_OPT_GO` for export `name`: the final reply on failure.
    pub fn go(&mut self, name: &str) -> io::Result<Result<(), OptionReply>> {
        let mut payload = Vec::new();
        payload.extend((name.len() as u32).to_be_bytes());
        payload.extend(name.as_bytes());
        payload.extend(1u16.to_be_bytes());
        payload.extend(option::INFO_BLOCK_SIZE.to_be_bytes());
        let mut replies = self.option(option::GO, &payload)?;
        let last = replies.pop().unwrap_or(OptionReply {
            reply: option_reply::ERR_INVALID,
            payload: Vec::new(),
        });
        if last.reply != option_reply::ACK {
            return Ok(Err(last));
        }
        for reply in &replies {
            if let Ok(Info::Export { size, flags }) = Info::parse(&reply.payload) {
                self.size = size;
                self.flags = flags;
            }
        }
        Ok(Ok(()))
    }

    /// Sends a request with a fresh cookie; returns the cookie.
    pub fn send(&mut self, command: u16, flags: u16, offset: u64, len: u32) -> io::Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let request = Request {
            flags,
            command,
            cookie,
            offset,
            len,
        };
        self.stream.write_all(&request.emit())?;
        Ok(cookie)
    }

    /// Reads `len` bytes at `offset`, reassembling structured chunks
    /// (checking they cover the range exactly once) or taking a simple reply.
    pub fn read(&mut self, offset: u64, len: u32) -> io::Result<Answer<Vec<u8>>> {
        let cookie = self.send(request::READ, 0, offset, len)?;
        self.read_reply(cookie, offset, len)
    }

    /// The reply to the read `cookie` of `len` bytes at `offset`.
    pub fn read_reply(
        &mut self,
        cookie: u64,
        offset: u64,
        len: u32,
    ) -> io::Result<Answer<Vec<u8>>> {
        if !self.structured {
            let reply = self.simple_reply(cookie)?;
            if reply.error != 0 {
                return Ok(Err((reply.error, String::new())));
            }
            return Ok(Ok(read_payload(&mut self.stream, len)?));
        }
        let mut data = vec![0; len as usize];
        let mut covered = vec![false; len as usize];
        let mut error = None;
        for (chunk, payload) in self.chunks(cookie)? {
            let place = |start: u64, count: usize| -> io::Result<usize> {
                let at = start
                    .checked_sub(offset)
                    .filter(|&at| at + count as u64 <= u64::from(len))
                    .ok_or_else(|| invalid(format!("chunk at {start} outside the read")))?;
                Ok(at as usize)
            };
            match chunk.kind {
                reply::OFFSET_DATA => {
                    let start = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                    let at = place(start, payload.len() - 8)?;
                    data[at..at + payload.len() - 8].copy_from_slice(&payload[8..]);
                    mark(&mut covered[at..at + payload.len() - 8])?;
                }
                reply::OFFSET_HOLE => {
                    let start = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                    let count = u32::from_be_bytes(payload[8..12].try_into().unwrap_or_default());
                    let at = place(start, count as usize)?;
                    mark(&mut covered[at..at + count as usize])?;
                }
                reply::NONE => {}
                _ => error = Some(chunk_error(&payload)),
            }
        }
        if let Some(error) = error {
            return Ok(Err(error));
        }
        if covered.iter().any(|&byte| !byte) {
            return Err(invalid(
                "a successful read left bytes uncovered".to_string(),
            ));
        }
        Ok(Ok(data))
    }

    /// `NBD_CMD_BLOCK_STATUS`: the descriptors of the one context.
    pub fn block_status(
        &mut self,
        offset: u64,
        len: u32,
        flags: u16,
    ) -> io::Result<Answer<Vec<Descriptor>>> {
        let cookie = self.send(request::BLOCK_STATUS, flags, offset, len)?;
        let mut descriptors = Vec::new();
        for (chunk, payload) in self.chunks(cookie)? {
            match chunk.kind {
                reply::BLOCK_STATUS => {
                    for pair in payload[4..].chunks_exact(8) {
                        descriptors.push(Descriptor {
                            len: u32::from_be_bytes(pair[..4].try_into().unwrap_or_default()),
                            flags: u32::from_be_bytes(pair[4..].try_into().unwrap_or_default()),
                        });
                    }
                }
                reply::NONE => {}
                _ => return Ok(Err(chunk_error(&payload))),
            }
        }
        Ok(Ok(descriptors))
    }

    /// The error (simple or structured) of a request without data reply; 0 for success.
    pub fn status_reply(&mut self, cookie: u64) -> io::Result<u32> {
        if !self.structured {
            return Ok(self.simple_reply(cookie)?.error);
        }
        // A structured session may still answer with a simple reply.
        let mut magic = [0; 4];
        self.stream.read_exact(&mut magic)?;
        if u32::from_be_bytes(magic) == reply::SIMPLE_MAGIC {
            let mut rest = [0; SimpleReply::LEN];
            rest[..4].copy_from_slice(&magic);
            self.stream.read_exact(&mut rest[4..])?;
            let reply = SimpleReply::parse(&rest).map_err(|error| invalid(error.to_string()))?;
            return Ok(reply.error);
        }
        let mut error = 0;
        for (chunk, payload) in self.chunks_after(magic, cookie)? {
            if chunk.kind & (1 << 15) != 0 {
                error = chunk_error(&payload).0;
            }
        }
        Ok(error)
    }

    fn simple_reply(&mut self, cookie: u64) -> io::Result<SimpleReply> {
        let mut header = [0; SimpleReply::LEN];
        self.stream.read_exact(&mut header)?;
        let reply = SimpleReply::parse(&header).map_err(|error| invalid(error.to_string()))?;
        if reply.cookie != cookie {
            return Err(invalid(format!("reply for cookie {}", reply.cookie)));
        }
        Ok(reply)
    }

    /// The chunks of the structured reply to `cookie`, up to the one marked done.
    pub fn chunks(&mut self, cookie: u64) -> io::Result<Vec<(Chunk, Vec<u8>)>> {
        let mut magic = [0; 4];
        self.stream.read_exact(&mut magic)?;
        self.chunks_after(magic, cookie)
    }

    fn chunks_after(
        &mut self,
        mut magic: [u8; 4],
        cookie: u64,
    ) -> io::Result<Vec<(Chunk, Vec<u8>)>> {
        let mut chunks = Vec::new();
        loop {
            let mut header = [0; Chunk::LEN];
            header[..4].copy_from_slice(&magic);
            self.stream.read_exact(&mut header[4..])?;
            let chunk = Chunk::parse(&header).map_err(|error| invalid(error.to_string()))?;
            if chunk.cookie != cookie {
                return Err(invalid(format!("chunk for cookie {}", chunk.cookie)));
            }
            let payload = read_payload(&mut self.stream, chunk.len)?;
            let minimum = match chunk.kind {
                reply::OFFSET_DATA => 9,
                reply::OFFSET_HOLE => 12,
                reply::BLOCK_STATUS => 12,
                kind if kind & (1 << 15) != 0 => 6,
                _ => 0,
            };
            if payload.len() < minimum {
                return Err(invalid(format!("chunk type {} too short", chunk.kind)));
            }
            let done = chunk.done();
            chunks.push((chunk, payload));
            if done {
                return Ok(chunks);
            }
            self.stream.read_exact(&mut magic)?;
        }
    }
}

fn mark(covered: &mut [bool]) -> io::Result<()> {
    if covered.iter().any(|&byte| byte) {
        return Err(invalid("chunks overlap".to_string()));
    }
    covered.fill(true);
    Ok(())
}

fn chunk_error(payload: &[u8]) -> (u32, String) {
    let error = u32::from_be_bytes(payload[..4].try_into().unwrap_or_default());
    let len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
    let message = payload.get(6..6 + len).unwrap_or_default();
    (error, String::from_utf8_lossy(message).into_owned())
}
