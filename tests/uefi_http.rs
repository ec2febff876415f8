//! Boots Linux under stock UEFI firmware from a QCOW2 image that a web
//! server on the host serves, read lazily by `qcow2.efi` over the
//! firmware's own HTTP stack (the runner's `--url` mode, `Mode::Url`: QEMU's user network,
//! the host being 10.0.2.2 from the guest, a virtio-net NIC).
//!
//! The server is Debian's nginx (`nginx-light`, which `scripts/setup.sh`
//! installs), started here on a free local port with an access log of
//! each request's `Range`, status and body bytes: the bytes the driver
//! fetched are counted by the server, not by the driver.
//!
//! The image is the boot disk (`testkit::boot_disk`) as a zstd QCOW2, with 32 MiB
//! of data written past its partitions (standing in for the rest of a real
//! disk: a root file system the boot never reads). The boot must print the
//! marker, fetch less than half of the file (the plain boot disk is mostly
//! the kernel and initramfs, which the boot reads whole: the README gives
//! its numbers), and send only range requests of at most one read-ahead
//! block; and the firmware's variables must still hold `EFI_IP4_CONFIG2`'s
//! static policy (the driver reaches a server on its subnet with a DHCP
//! lease of its own, and setting that policy to DHCP would make edk2 run
//! its own, 4 s slower, DHCP at every later boot). On x86_64, two servers'
//! faults must end in the driver's error line naming the URL and what the
//! server did, never in a boot: a 404, and a server that ignores `Range`
//! (nginx's `max_ranges 0`: 200 with the whole file). (Only on x86_64:
//! which answers are used is `qcow2-http`'s `rules`, the same code on both
//! architectures, unit-tested and fuzzed on the host; each boot to an
//! error line cost the CI an AAVMF start.) Also on x86_64, a URL that
//! nginx redirects (302) to the image boots, the
//! console naming where the redirect led; and a small server in this file misbehaves on demand: it answers
//! 503 to two requests (the driver retries them and boots), or its object
//! changes after a few requests (it then answers the driver's `If-Match`
//! with 412, as nginx does: the driver's read error line says the object
//! changed, and the boot stops).
//!
//! Over TLS too: nginx serves the same image over `https://` with a server
//! certificate of a CA made here, whose certificate the firmware gets as
//! an EFI signature list (`QCOW2_UEFI_CACERTS`, QEMU's `-fw_cfg
//! etc/edk2/https/cacerts`): both architectures boot it; on x86_64,
//! without the CA the line says the firmware has no CA certificates.
//!
//! On both architectures, the runner's `--driver-option --url`
//! (`Mode::DriverOptionUrl`, two boots: the first through the shell adds
//! the `Driver####` and a `Boot####` for the image's ESP): the URL in
//! `Driver0000`'s load options, no `\qcow2.cfg` on any disk, the firmware
//! booting the image's ESP with no shell: the marker is reached and the
//! console says the URL came from the load options; load options that are
//! not a URL end the boot with one error line naming them.
//!
//! One test per architecture, its boots one after the other, the two tests
//! one after the other (a lock): one QEMU at a time. The image is
//! cached under `target/uefi-http-test/ARCH/` and remade when the boot disk
//! changes.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use qcow2_testkit::uefi_run::{Mode, UefiRun};
use qcow2_testkit::{build_driver, qemu_io, Qemu};

/// The driver's read-ahead block (`HTTP_READAHEAD` in `uefi/src/driver/store.rs`).
const READAHEAD: u64 = 256 << 10;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The boot disk as a zstd QCOW2 grown by 64 MiB, with 32 MiB of a
/// pattern written (uncompressed) after the disk's last partition.
fn padded_image(disk: &Path, out: &Path) -> PathBuf {
    let newer = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if newer(out).is_some() && newer(out) >= newer(disk) {
        return out.to_path_buf();
    }
    let tmp = out.with_extension("tmp");
    Qemu::img()
        .args(["convert", "-f", "raw", "-O", "qcow2", "-c", "-o"])
        .args(["compression_type=zstd", path_str(disk)])
        .arg(&tmp)
        .run();
    Qemu::img()
        .args(["resize", "-f", "qcow2", path_str(&tmp), "+64M"])
        .run();
    let start = fs::metadata(disk).expect("boot disk").len();
    qemu_io(&tmp, &[&format!("write -q -P 0x5a {start} 32M")]);
    fs::rename(&tmp, out).expect("rename image");
    out.to_path_buf()
}

/// A test CA (as the EFI signature list the firmware takes) and a server
/// certificate it signed for 10.0.2.2, made with `openssl`.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca_list: PathBuf,
}

fn tls(dir: &Path) -> Tls {
    fs::create_dir_all(dir).unwrap();
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let (ca_key, ca_pem, ca_der) = (p("ca.key"), p("ca.pem"), p("ca.der"));
    let (key, csr, cert, ext) = (
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-keyout",
        path_str(&ca_key),
        "-out",
        path_str(&ca_pem),
        "-subj",
        "/CN=qcow2 test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&csr),
        "-subj",
        "/CN=10.0.2.2",
    ]);
    fs::write(
        &ext,
        "subjectAltName=IP:10.0.2.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "30",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&ca_pem),
        "-CAkey",
        path_str(&ca_key),
        "-CAcreateserial",
        "-out",
        path_str(&cert),
        "-extfile",
        path_str(&ext),
    ]);
    openssl(&[
        "x509",
        "-in",
        path_str(&ca_pem),
        "-outform",
        "der",
        "-out",
        path_str(&ca_der),
    ]);
    // EFI_SIGNATURE_LIST of one EFI_CERT_X509 entry (UEFI 2.10, 32.4.1):
    // the type GUID, the list, header and entry sizes, then the entry: an
    // owner GUID and the DER certificate.
    let der = fs::read(&ca_der).unwrap();
    let x509_guid = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];
    let entry = 16 + der.len() as u32;
    let mut list = x509_guid.to_vec();
    list.extend((28 + entry).to_le_bytes());
    list.extend(0u32.to_le_bytes());
    list.extend(entry.to_le_bytes());
    list.extend([0x51; 16]); // the owner: any GUID
    list.extend(&der);
    let ca_list = p("cacerts.esl");
    fs::write(&ca_list, list).unwrap();
    Tls { cert, key, ca_list }
}

/// nginx serving the images over HTTP (server 0, with `/norange/` serving
/// the same files without byte ranges) and over TLS (server 1).
struct Nginx(qcow2_testkit::nginx::Nginx);

impl Nginx {
    fn serve(root: &Path, dir: &Path, tls: &Tls) -> Self {
        use qcow2_testkit::nginx::Server;
        let plain = Server {
            tls: None,
            directives: format!(
                "location /norange/ {{ alias {}/; max_ranges 0; }} \
                 location = /moved/disk.qcow2 {{ return 302 /disk.qcow2; }}",
                path_str(root)
            ),
        };
        let secure = Server {
            tls: Some((tls.cert.clone(), tls.key.clone())),
            directives: String::new(),
        };
        Self(qcow2_testkit::nginx::Nginx::serve(
            root,
            dir,
            &[plain, secure],
        ))
    }

    /// The URL of `path` as the guest reaches the host.
    fn guest_url(&self, path: &str) -> String {
        format!("http://10.0.2.2:{}/{path}", self.0.port(0))
    }

    /// The TLS URL of `path` as the guest reaches the host.
    fn guest_tls_url(&self, path: &str) -> String {
        format!("https://10.0.2.2:{}/{path}", self.0.port(1))
    }
}

/// How the small server misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Requests 2 and 3 (after the first, the driver's probe) get 503.
    Twice503,
    /// From request 6 on, the object has another `ETag`.
    ChangeAfter5,
}

/// A one-object HTTP/1.1 server of `bytes` (ranges, `ETag`, `If-Match`,
/// keep-alive) that misbehaves as `fault` says; returns its port and a
/// log of `status range` lines. Its threads end with the test process.
fn fault_server(bytes: Arc<Vec<u8>>, fault: Fault) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicU32::new(0));
    let server_log = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (bytes, log, count) = (bytes.clone(), server_log.clone(), count.clone());
            thread::spawn(move || serve_connection(stream, &bytes, fault, &count, &log));
        }
    });
    (port, log)
}

fn serve_connection(
    stream: TcpStream,
    bytes: &[u8],
    fault: Fault,
    count: &AtomicU32,
    log: &Mutex<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut out = stream;
    loop {
        let (mut range, mut if_match) = (None, None);
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim().to_string();
                match name.to_ascii_lowercase().as_str() {
                    "range" => range = Some(value),
                    "if-match" => if_match = Some(value),
                    _ => {}
                }
            }
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let etag = match fault {
            Fault::ChangeAfter5 if n > 5 => "\"v2\"",
            _ => "\"v1\"",
        };
        let size = bytes.len() as u64;
        let span = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .filter(|&(a, b)| a <= b && b < size);
        let status = match (fault, span) {
            (Fault::Twice503, _) if n == 2 || n == 3 => 503,
            _ if if_match.as_deref().is_some_and(|tag| tag != etag) => 412,
            (_, Some(_)) => 206,
            (_, None) => 416,
        };
        log.lock()
            .unwrap()
            .push(format!("{status} {}", range.as_deref().unwrap_or("-")));
        let sent = match (status, span) {
            (206, Some((a, b))) => {
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\nETag: {etag}\r\n\r\n",
                    b - a + 1
                );
                out.write_all(head.as_bytes())
                    .and_then(|_| out.write_all(&bytes[a as usize..=b as usize]))
            }
            (status, _) => out.write_all(
                format!("HTTP/1.1 {status} Fault\r\nContent-Length: 0\r\nETag: {etag}\r\n\r\n")
                    .as_bytes(),
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// What one `--url` boot printed.
struct Boot {
    ok: bool,
    marker: bool,
    error_line: Option<String>,
    stdout: String,
    stderr: String,
}

/// The policy (0 static, 1 DHCP) that edk2's Ip4Config2 keeps for the one
/// NIC in a VARS file: the live copy of its variable (GUID
/// `gEfiIp4Config2ProtocolGuid`, named by the MAC), an
/// `IP4_CONFIG2_VARIABLE` whose records (offset, size, type) point to
/// their data; `None` when there is none.
fn ip4_config2_policy(vars: &[u8]) -> Option<u32> {
    // 5b446ed1-e30b-4faa-871a-3654eca36080 as stored (little-endian fields).
    const GUID: [u8; 16] = [
        0xd1, 0x6e, 0x44, 0x5b, 0x0b, 0xe3, 0xaa, 0x4f, 0x87, 0x1a, 0x36, 0x54, 0xec, 0xa3, 0x60,
        0x80,
    ];
    // The authenticated variable header of OVMF's and AAVMF's store:
    // StartId 0x55aa, State (0x3f: added, not deleted), ..., NameSize at
    // 36, DataSize at 40, the GUID at 44, the name at 60.
    const ADDED: u8 = 0x3f;
    let u16_at = |bytes: &[u8], at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?).into())
    };
    let u32_at = |bytes: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    (0..vars.len().saturating_sub(60))
        .filter(|&at| vars[at..at + 2] == [0xaa, 0x55] && vars[at + 2] == ADDED)
        .filter(|&at| vars[at + 44..at + 60] == GUID)
        .find_map(|at| {
            let name = usize::try_from(u32_at(vars, at + 36)?).ok()?;
            let size = usize::try_from(u32_at(vars, at + 40)?).ok()?;
            let data = vars.get(at + 60 + name..at + 60 + name + size)?;
            // Checksum, record count, then 12-byte records: Offset (u16,
            // padded), DataSize, DataType (1: the policy).
            (0..u16_at(data, 2)?).find_map(|record| {
                let record = 4 + 12 * record;
                (u32_at(data, record + 8)? == 1).then_some(())?;
                u32_at(data, u16_at(data, record)?)
            })
        })
}

fn boot(driver: &Path, url: &str, work: &Path, marker: &str, ca_list: Option<&Path>) -> Boot {
    let mut run = UefiRun::new(driver, Mode::Url, None);
    run.url = Some(url.to_string());
    run.cacerts = ca_list.map(Path::to_path_buf);
    run_boot(run, work, marker)
}

/// A `--driver-option --url` boot: `Driver0000`'s load options hold
/// `load_options` (the URL when `None`), no `\qcow2.cfg` on the driver's disk.
fn boot_from_load_options(
    driver: &Path,
    url: &str,
    load_options: Option<&str>,
    work: &Path,
    marker: &str,
) -> Boot {
    let mut run = UefiRun::new(driver, Mode::DriverOptionUrl, None);
    run.url = Some(url.to_string());
    run.load_options = load_options.map(str::to_string);
    run_boot(run, work, marker)
}

fn run_boot(mut run: UefiRun, work: &Path, marker: &str) -> Boot {
    run.timeout = Duration::from_secs(300);
    run.work = Some(work.to_path_buf());
    let output = run.output();
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let error_line = stdout.lines().find_map(|line| {
        line.split_once("qcow2.efi: error: ")
            .map(|(_, e)| e.to_string())
    });
    Boot {
        ok: output.success(),
        marker: stdout.contains(marker),
        error_line,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        stdout,
    }
}

/// The boots of one architecture; with `with_faults`, also the servers'
/// faults (the 404, the server ignoring `Range`, the missing CA, the
/// redirect, the 503s, the changed object).
fn boots_over_http(arch: &str, target: &str, with_faults: bool) {
    // The two architectures boot at the same time (cargo test's threads),
    // each against its own nginx and fault server, as tests/uefi.rs does.
    let driver = build_driver(target);
    let disk = qcow2_testkit::boot_disk::path(arch);
    let dir = repo().join("target/uefi-http-test").join(arch);
    let www = dir.join("www");
    fs::create_dir_all(&www).unwrap();
    let image = padded_image(&disk, &www.join("disk.qcow2"));
    let file_bytes = fs::metadata(&image).unwrap().len();
    let tls = tls(&dir.join("tls"));
    let nginx = Nginx::serve(&www, &dir.join("nginx"), &tls);
    let work = dir.join("run");
    let marker = format!("QCOW2-BOOT-MARKER: reached init on {arch}");

    nginx.0.clear_log();
    let started = Instant::now();
    let url = nginx.guest_url("disk.qcow2");
    let result = boot(&driver, &url, &work, &marker, None);
    let requests = nginx.0.requests();
    let fetched: u64 = requests.iter().map(|r| r.bytes).sum();
    eprintln!(
        "{arch}: booted from {url} in {:.1} s: {fetched} bytes fetched in {} requests, of a {file_bytes}-byte file ({:.1}%); {}",
        started.elapsed().as_secs_f64(),
        requests.len(),
        fetched as f64 * 100.0 / file_bytes as f64,
        result.stderr.lines().last().unwrap_or_default()
    );
    assert!(
        result.ok && result.marker && result.error_line.is_none(),
        "{arch}: the boot over HTTP failed\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );
    for qcow2_testkit::nginx::Request {
        uri,
        range,
        status,
        bytes,
        ..
    } in &requests
    {
        assert!(
            *status == 206 && range.starts_with("bytes=") && *bytes <= READAHEAD,
            "{arch}: a request that is not a range of at most one block: {uri} {range} {status} {bytes}"
        );
    }
    assert!(
        fetched * 2 < file_bytes,
        "{arch}: {fetched} bytes fetched of a {file_bytes}-byte file: not lazy"
    );
    // The server is on the lease's subnet: the driver's own DHCP lease
    // reaches it, and EFI_IP4_CONFIG2's policy stays what the firmware
    // wrote (static), not DHCP for every later boot.
    let vars = fs::read(work.join("vars.fd")).unwrap();
    let policy = ip4_config2_policy(&vars);
    assert_eq!(
        policy,
        Some(0),
        "{arch}: EFI_IP4_CONFIG2's policy in the firmware's variables after a boot over HTTP: {policy:?} (0 static, 1 DHCP, None: no variable)"
    );

    boots_from_load_options(arch, &driver, &nginx, &dir.join("driver-option"), &marker);

    nginx.0.clear_log();
    let url = nginx.guest_tls_url("disk.qcow2");
    let result = boot(&driver, &url, &work, &marker, Some(&tls.ca_list));
    let fetched_tls: u64 = nginx.0.requests().iter().map(|r| r.bytes).sum();
    eprintln!(
        "{arch}: booted from {url}: marker {}, {fetched_tls} bytes fetched; {}",
        result.marker,
        result.stderr.lines().last().unwrap_or_default()
    );
    assert!(
        result.ok && result.marker && result.error_line.is_none() && fetched_tls * 2 < file_bytes,
        "{arch}: the boot over https failed\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );

    if !with_faults {
        return;
    }
    for (path, wanted) in [
        ("absent.qcow2", "with 404".to_string()),
        ("norange/disk.qcow2", "ignores range requests".to_string()),
    ] {
        nginx.0.clear_log();
        let url = nginx.guest_url(path);
        let result = boot(&driver, &url, &work, &marker, None);
        let line = result.error_line.clone().unwrap_or_default();
        eprintln!("{arch}: {url}: {line}");
        assert!(
            !result.ok && !result.marker && line.starts_with(&url) && line.contains(&wanted),
            "{arch}: {url}: wanted a failed run with an error line naming the URL and `{wanted}`\n--- stdout\n{}--- stderr\n{}",
            result.stdout,
            result.stderr
        );
    }
    let url = nginx.guest_tls_url("disk.qcow2");
    let result = boot(&driver, &url, &work, &marker, None);
    let line = result.error_line.clone().unwrap_or_default();
    eprintln!("{arch}: {url} without CA certificates: {line}");
    assert!(
        !result.ok && !result.marker && line.starts_with(&url) && line.contains("no CA certificates"),
        "{arch}: https without CA certificates gave no line saying so\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );

    // A redirect at open (nginx's 302 to the object's real place): the
    // driver follows it and reads the object there.
    let moved = nginx.guest_url("moved/disk.qcow2");
    let result = boot(&driver, &moved, &work, &marker, None);
    let followed = format!(
        "qcow2.efi: {moved}: redirected to {}",
        nginx.guest_url("disk.qcow2")
    );
    eprintln!("{arch}: {moved}: marker {}", result.marker);
    assert!(
        result.ok && result.marker && result.stdout.contains(&followed),
        "{arch}: a redirect at open was not followed into a boot\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );

    let object = Arc::new(fs::read(&image).unwrap());

    let (port, log) = fault_server(object.clone(), Fault::Twice503);
    let url = format!("http://10.0.2.2:{port}/disk.qcow2");
    let result = boot(&driver, &url, &work, &marker, None);
    let answers = log.lock().unwrap().clone();
    let unavailable = answers.iter().filter(|a| a.starts_with("503 ")).count();
    // The probe, the first block answered 503 twice, then the same range again.
    let range_of = |i: usize| {
        answers
            .get(i)
            .and_then(|a| a.split_once(' '))
            .map(|(_, r)| r)
    };
    let retried = range_of(1).is_some() && range_of(1) == range_of(3);
    eprintln!(
        "{arch}: {url}: two 503 answers: marker {}, {} requests",
        result.marker,
        answers.len()
    );
    assert!(
        result.ok && result.marker && unavailable == 2 && retried,
        "{arch}: two 503s were not retried into a boot ({answers:?})\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );

    let (port, log) = fault_server(object, Fault::ChangeAfter5);
    let url = format!("http://10.0.2.2:{port}/disk.qcow2");
    let result = boot(&driver, &url, &work, &marker, None);
    let line = result.error_line.clone().unwrap_or_default();
    eprintln!("{arch}: {url}: object changed: {line}");
    assert!(
        !result.ok && !result.marker && line.contains(&url) && line.contains("changed on the server"),
        "{arch}: a changed object did not stop the boot with its error line ({:?})\n--- stdout\n{}--- stderr\n{}",
        log.lock().unwrap(),
        result.stdout,
        result.stderr
    );
}

/// The URL in the driver's load options (`Driver0000`'s optional data, set
/// by `bcfg driver -opt`), no `\qcow2.cfg` on any disk: the firmware loads
/// the driver and boots the image's ESP by itself; then load options that
/// are not a URL end the boot with one error line naming them.
fn boots_from_load_options(arch: &str, driver: &Path, nginx: &Nginx, work: &Path, marker: &str) {
    nginx.0.clear_log();
    let url = nginx.guest_url("disk.qcow2");
    let result = boot_from_load_options(driver, &url, None, work, marker);
    let fetched: u64 = nginx.0.requests().iter().map(|r| r.bytes).sum();
    let taken = format!("qcow2.efi: {url}: from the driver's load options");
    eprintln!(
        "{arch}: booted from {url} in Driver0000's load options: marker {}, {fetched} bytes fetched; {}",
        result.marker,
        result.stderr.lines().last().unwrap_or_default()
    );
    assert!(
        result.ok
            && result.marker
            && result.error_line.is_none()
            && result.stdout.contains(&taken)
            && result.stdout.contains("BdsDxe: starting Boot"),
        "{arch}: the boot with the URL in the driver's load options failed\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );
    let driver_disk = work.join("driver.img");
    let config = Command::new("mdir")
        .args(["-i", path_str(&driver_disk), "::/qcow2.cfg"])
        .output()
        .expect("mdir runs (mtools)");
    assert!(
        !config.status.success(),
        "{arch}: the driver's disk still holds \\qcow2.cfg"
    );

    let result = boot_from_load_options(driver, &url, Some("not-a-url"), work, marker);
    let line = result.error_line.clone().unwrap_or_default();
    let errors = result.stdout.matches("qcow2.efi: error: ").count();
    eprintln!("{arch}: load options `not-a-url`: {line}");
    assert!(
        !result.ok
            && !result.marker
            && errors == 1
            && line.starts_with("the driver's load options: ")
            && line.contains("not-a-url")
            && line.contains("not an http:// or https:// URL"),
        "{arch}: load options that are not a URL gave no one line naming them\n--- stdout\n{}--- stderr\n{}",
        result.stdout,
        result.stderr
    );
}

/// The tests, in a module of their own so that `scripts/test.sh` can run
/// them after tests/root_boot.rs, beside the rest of the suite (`--skip
/// uefi_http::` there).
mod uefi_http {
    use super::*;

    #[test]
    fn x86_64_boots_linux_lazily_over_http_and_names_server_faults() {
        boots_over_http("x86_64", "x86_64-unknown-uefi", true);
    }

    #[test]
    fn aarch64_boots_linux_lazily_over_http_and_names_server_faults() {
        boots_over_http("aarch64", "aarch64-unknown-uefi", false);
    }
}
