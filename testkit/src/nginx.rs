//! Debian's nginx (`nginx-light`, installed by `scripts/setup.sh`) as the
//! tests' web server: started on free local ports with its files in a
//! directory of the test's, an access log of the range requests, stopped
//! when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One `server` block.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// A TLS server with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More directives for the block (`location` rules), as nginx reads them.
    pub directives: String,
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    ports: Vec<u16>,
    log: PathBuf,
}

/// One logged request: what the access log's `ranges` format records.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's URI.
    pub uri: String,
    /// Its `Range` header, empty without one.
    pub range: String,
    /// The status of the answer.
    pub status: u16,
    /// Bytes of the answer's body.
    pub bytes: u64,
    /// Its `User-Agent` header, `-` without one: tells the `qcow` tool's
    /// requests (`qcow2-http/VERSION`) from the firmware's.
    pub agent: String,
    /// When nginx logged it (the answer's end), seconds since the epoch
    /// with milliseconds: the gaps between requests.
    pub time: f64,
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl Nginx {
    /// Serves `root` at `/` from every server in `servers`, each on a port
    /// of its own, nginx's files (configuration, logs, pid) in `dir`.
    /// Panics naming the install command when nginx is missing, and when
    /// it does not start (five tries: a free port can be taken meanwhile).
    pub fn serve(root: &Path, dir: &Path, servers: &[Server]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or_else(|| {
                panic!(
                    "nginx is not installed: apt-get install nginx-light (scripts/setup.sh does)"
                )
            });
        fs::create_dir_all(dir).expect("nginx's directory");
        let d = text(dir);
        let log = dir.join("access.log");
        for _ in 0..5 {
            let ports: Vec<u16> = servers.iter().map(|_| free_port()).collect();
            let blocks: String = servers
                .iter()
                .zip(&ports)
                .map(|(server, port)| server_block(server, *port, root))
                .collect();
            let config = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\nhttp {{\n\
                 log_format ranges '$msec $request_uri \"$http_range\" $status $body_bytes_sent \"$http_user_agent\"';\n\
                 access_log {d}/access.log ranges;\nclient_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{blocks}}}\n"
            );
            let conf = dir.join("nginx.conf");
            fs::write(&conf, config).expect("nginx.conf");
            let mut child = Command::new(binary)
                .args(["-p", d, "-e", &format!("{d}/error.log"), "-c", text(&conf)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // a port was taken meanwhile: other ones
                }
                if ports
                    .iter()
                    .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
                {
                    return Self { child, ports, log };
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start (see {d}/error.log)");
    }

    /// The port of `servers[index]`.
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// Empties the access log (nginx appends to the same open file).
    pub fn clear_log(&self) {
        fs::write(&self.log, b"").expect("empty the access log");
    }

    /// The requests logged since the start or the last [`clear_log`](Self::clear_log).
    pub fn requests(&self) -> Vec<Request> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut fields = line.split(' ');
                let time = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
                let uri = fields.next().unwrap_or_default().to_string();
                let range = fields.next().unwrap_or_default();
                let status = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let bytes = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                // The rest of the line: an agent may hold spaces.
                let agent = fields.collect::<Vec<_>>().join(" ");
                Request {
                    uri,
                    range: range.trim_matches('"').to_string(),
                    status,
                    bytes,
                    agent: agent.trim_matches('"').to_string(),
                    time,
                }
            })
            .collect()
    }
}

fn server_block(server: &Server, port: u16, root: &Path) -> String {
    let (ssl, certificate) = match &server.tls {
        Some((cert, key)) => (
            " ssl",
            format!(
                "ssl_certificate {};\nssl_certificate_key {};\n",
                text(cert),
                text(key)
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        "server {{\nlisten 127.0.0.1:{port}{ssl};\nroot {};\n{certificate}{}\n}}\n",
        text(root),
        server.directives
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
