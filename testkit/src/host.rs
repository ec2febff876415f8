//! The host's tools as the disk builders ([`crate::boot_disk`],
//! [`crate::make_disks`], [`crate::root_disk`]) run them: found on `PATH`
//! plus the sbin directories (where `sfdisk`, `mkfs.*` and `debugfs` live
//! and a user's `PATH` may lack them), run with their output captured, and
//! a failure returned as a sentence naming the command and what it printed.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `PATH` with the sbin directories appended.
fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}

/// Whether `tool` is an executable file somewhere on [`search_path`].
pub fn found(tool: &str) -> bool {
    std::env::split_paths(&search_path()).any(|dir| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// The tools of `needed` (tool, Debian package) that are not installed,
/// and the packages that provide them (each once, in order).
pub fn missing(needed: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let (mut tools, mut packages) = (Vec::new(), Vec::<String>::new());
    for (tool, package) in needed {
        if !found(tool) {
            tools.push(tool.to_string());
            if !packages.iter().any(|known| known == package) {
                packages.push(package.to_string());
            }
        }
    }
    (tools, packages)
}

/// `program` with the sbin directories on its `PATH`.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("PATH", search_path());
    command
}

/// A command line as a reader would type it, for messages.
fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Runs `command` with `input` on its stdin; returns its stdout, or an
/// error naming the command, its exit status and its stderr.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from another thread: a tool that prints much before it reads
    // all of its input would otherwise block on a full stdout pipe.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child
        .wait_with_output()
        .map_err(|error| format!("{}: {error}", describe(command)))?;
    let written = writer.join().expect("the stdin writer does not panic");
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    written.map_err(|error| format!("{}: writing its input: {error}", describe(command)))?;
    Ok(output.stdout)
}

/// Runs `command` with an empty stdin; see [`run_with_input`].
pub fn run(command: &mut Command) -> Result<Vec<u8>, String> {
    run_with_input(command, &[])
}

/// Runs `first | second` (the second's stdin is the first's stdout) and
/// returns the second's stdout; either failing is an error.
pub fn pipe(first: &mut Command, second: &mut Command) -> Result<Vec<u8>, String> {
    let mut producer = first
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", describe(first)))?;
    let stdout = producer.stdout.take().expect("piped stdout");
    let result = second.stdin(Stdio::from(stdout)).output();
    let produced = producer
        .wait_with_output()
        .map_err(|error| format!("{}: {error}", describe(first)))?;
    if !produced.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            describe(first),
            produced.status,
            String::from_utf8_lossy(&produced.stderr).trim_end()
        ));
    }
    let output = result.map_err(|error| format!("cannot run {}: {error}", describe(second)))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            describe(second),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(output.stdout)
}

/// Every path under `dir` (not `dir` itself), relative to it, sorted by
/// bytes as `LC_ALL=C sort` sorts them; symbolic links are not followed.
pub fn tree(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, relative: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(root.join(relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let is_dir = entry.file_type()?.is_dir();
            into.push(path.clone());
            if is_dir {
                walk(root, &path, into)?;
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    walk(dir, Path::new(""), &mut paths)?;
    paths.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    Ok(paths)
}

/// Writes `from` into `into` at byte `at`, a `block` at a time, leaving
/// holes where `from` has whole zero blocks (as `dd conv=notrunc,sparse`).
pub fn place(from: &Path, into: &Path, at: u64, block: usize) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut source =
        std::fs::File::open(from).map_err(|error| format!("{}: {error}", from.display()))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(into)
        .map_err(|error| format!("{}: {error}", into.display()))?;
    let mut buffer = vec![0; block];
    let mut offset = at;
    loop {
        // A whole block unless the file ends: `read` may return less.
        let mut filled = 0;
        while filled < block {
            match source.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(format!("{}: {error}", from.display())),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let piece = &buffer[..filled];
        if piece.iter().any(|&byte| byte != 0) {
            file.write_all_at(piece, offset)
                .map_err(|error| format!("{}: {error}", into.display()))?;
        }
        offset += filled as u64;
    }
}

/// Fixed identities for a reproducible GPT disk: the disk's GUID, the two
/// partitions' UUIDs, and the time `sfdisk` is told it is.
#[derive(Debug, Clone, Copy)]
pub struct GptIds {
    /// The disk's GUID (`label-id`).
    pub disk: &'static str,
    /// The ESP's partition UUID.
    pub esp: &'static str,
    /// The root partition's UUID.
    pub root: &'static str,
    /// `SOURCE_DATE_EPOCH` for `sfdisk`.
    pub epoch: u64,
}

/// Writes `raw`, a GPT disk of two partitions in MiB: the file system image
/// `esp` (`esp_mib`) as the EFI System Partition from 1 MiB, then `root`
/// (`root_mib`) as a Linux partition named `root_name`, and 1 MiB for the
/// backup table. Random identities unless `ids` fixes them. Returns the
/// disk's size in MiB.
pub fn gpt_esp_root(
    raw: &Path,
    (esp, esp_mib): (&Path, u64),
    (root, root_mib): (&Path, u64),
    root_name: &str,
    ids: Option<GptIds>,
) -> Result<u64, String> {
    let (esp_start, root_start) = (1, 1 + esp_mib);
    let total_mib = root_start + root_mib + 1;
    std::fs::File::create(raw)
        .and_then(|file| file.set_len(total_mib << 20))
        .map_err(|error| format!("{}: {error}", raw.display()))?;
    let (label_id, esp_uuid, root_uuid) = match ids {
        Some(ids) => (
            format!("label-id: {}\n", ids.disk),
            format!(", uuid={}", ids.esp),
            format!(", uuid={}", ids.root),
        ),
        None => Default::default(),
    };
    let table = format!(
        "label: gpt\n\
         {label_id}\
         unit: sectors\n\
         start={}, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B{esp_uuid}, name=\"EFI System Partition\"\n\
         start={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4{root_uuid}, name=\"{root_name}\"\n",
        esp_start * 2048,
        esp_mib * 2048,
        root_start * 2048,
        root_mib * 2048,
    );
    let mut sfdisk = command("sfdisk");
    if let Some(ids) = ids {
        sfdisk.env("SOURCE_DATE_EPOCH", ids.epoch.to_string());
    }
    run_with_input(
        sfdisk
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(raw),
        table.as_bytes(),
    )?;
    place(esp, raw, esp_start << 20, 1 << 20)?;
    place(root, raw, root_start << 20, 1 << 20)?;
    Ok(total_mib)
}

/// Runs `command` with its output on this program's stderr (a long job
/// whose progress the caller should see, while stdout stays the result).
pub fn run_loud(command: &mut Command) -> Result<(), String> {
    use std::os::fd::AsFd;
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| format!("stderr: {error}"))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::inherit())
        .status()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({status}); its output is above",
            describe(command)
        ))
    }
}
