//! A TCP proxy adding a fixed one-way delay to each direction (see
//! [`qcow2_testkit::latency_proxy`]); `benches/http.sh` runs it with
//! `DELAY_MS` set:
//!
//!     latency-proxy --listen 127.0.0.1:0 --to 127.0.0.1:8080 --delay-ms 10 [--rate-mbit 100] [--handshake]
//!
//! The first line on standard output is the port it listens on.

use std::io::Write;

use qcow2_testkit::latency_proxy::{Config, Proxy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let proxy = match Config::from_args(&args).and_then(|config| Proxy::bind(&config)) {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("latency-proxy: {error}");
            std::process::exit(2);
        }
    };
    let port = match proxy.local_addr() {
        Ok(address) => address.port(),
        Err(error) => {
            eprintln!("latency-proxy: no local address: {error}");
            std::process::exit(1);
        }
    };
    // The caller waits for this line (port 0 picks a free port).
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{port}").and_then(|()| stdout.flush());
    let error = proxy.run();
    eprintln!("latency-proxy: stopped accepting connections: {error}");
    std::process::exit(1);
}
