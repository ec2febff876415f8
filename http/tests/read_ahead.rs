//! The read-ahead of a reader going forward, against a local server that
//! logs the ranges it is asked for: the blocks after the one read are
//! fetched before the reader asks for them, once each, and read back as
//! the object's bytes.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qcow2_http::{Client, HttpOptions, Url};
use qcow2_reader::BlockRead;

const BLOCK: usize = 256 << 10;

/// Serves `object` with ranges, one connection per request, each on its
/// own thread; returns the port and the log of first bytes asked for.
fn serve(object: Arc<Vec<u8>>) -> (u16, Arc<Mutex<Vec<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let logged = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming().take(100).flatten() {
            let (object, log) = (object.clone(), logged.clone());
            thread::spawn(move || answer(stream, &object, &log));
        }
    });
    (port, log)
}

fn answer(stream: TcpStream, object: &[u8], log: &Mutex<Vec<usize>>) {
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    reader.read_line(&mut request).unwrap();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (first, last) = value.trim().split_once('-').unwrap();
            range = Some((
                first.parse::<usize>().unwrap(),
                last.parse::<usize>().unwrap(),
            ));
        }
    }
    let mut out = &stream;
    let head = |status: &str, length: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nETag: \"v1\"\r\n{extra}Connection: close\r\n\r\n")
    };
    let Some((first, last)) = range.filter(|_| request.starts_with("GET")) else {
        let _ = out.write_all(head("200 OK", object.len(), "").as_bytes());
        return;
    };
    log.lock().unwrap().push(first);
    let body = &object[first..=last];
    let extra = format!("Content-Range: bytes {first}-{last}/{}\r\n", object.len());
    let _ = out.write_all(head("206 Partial Content", body.len(), &extra).as_bytes());
    let _ = out.write_all(body);
}

#[test]
fn a_reader_going_forward_finds_the_next_blocks_fetched_before_it_asks() {
    let object: Arc<Vec<u8>> = Arc::new((0..6 * BLOCK).map(|i| (i % 251) as u8).collect());
    let (port, log) = serve(object.clone());
    let mut options = HttpOptions::default();
    options.readahead = BLOCK as u64;
    options.connections = 2;
    options.cache_blocks = 8;
    let client = Client::new(options).unwrap();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/object")).unwrap();
    let file = client.open(&url).unwrap();
    let read_block = |block: usize| {
        let mut buf = vec![0; BLOCK];
        file.read_at((block * BLOCK) as u64, &mut buf).unwrap();
        assert!(
            buf == object[block * BLOCK..(block + 1) * BLOCK],
            "block {block}"
        );
    };
    // A miss on block 0, then on block 1 going forward (it and block 2),
    // then a hit on block 2, which starts blocks 3 and 4 in the background.
    read_block(0);
    read_block(1);
    read_block(2);
    let started = Instant::now();
    let ahead = |log: &Vec<usize>| log.contains(&(3 * BLOCK)) && log.contains(&(4 * BLOCK));
    while !ahead(&log.lock().unwrap()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "blocks 3 and 4 were not fetched ahead: {:?}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(10));
    }
    read_block(3);
    read_block(4);
    read_block(5);
    let mut asked = log.lock().unwrap().clone();
    asked.sort_unstable();
    let blocks: Vec<usize> = (0..6).map(|block| block * BLOCK).collect();
    assert_eq!(asked, blocks, "each block fetched once");
    assert_eq!(file.requests(), 7, "HEAD and six blocks");
    assert_eq!(file.bytes_fetched(), object.len() as u64);
}
