//! The differential test against QEMU: corrupt images that QEMU made, one
//! structure at a time, and read each mutant with `qemu-img convert` and with
//! `qcow convert` / `qcow cat`.
//!
//! Required of every mutant: no panic, crash, hang or runaway memory in the
//! tool (it runs under `timeout` and `ulimit -v`), and where both read, the
//! same bytes. Where one reads and the other refuses, the difference must be
//! one README explains ([`explain`]); others fail the test.
//!
//! `cargo test` runs a short fixed-seed run. `scripts/differential.sh
//! --mutants N --seed S` runs as long as asked, through these variables:
//! `QCOW_DIFFERENTIAL_MUTANTS`, `QCOW_DIFFERENTIAL_SEED`,
//! `QCOW_DIFFERENTIAL_JOBS` and `QCOW_DIFFERENTIAL_KEEP` (the directory
//! where each disagreeing mutant is kept, with the files it names).
//! Mutant `i` of seed `S` is the same whatever the number of jobs.

mod compare;
mod images;
mod mutate;
mod regressions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use compare::Verdict;
use images::Kind;
use mutate::{Layout, Mutation, Rng, Structure};

/// Mutants, seed and jobs of the run inside `cargo test`.
const SHORT_MUTANTS: u64 = 250;
const SHORT_SEED: u64 = 17;
const SHORT_JOBS: u64 = 2;

fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// What one mutant did to the two readers.
#[derive(Debug)]
enum Outcome {
    /// Both read the same bytes.
    BothRead,
    /// Both refused.
    BothRefuse,
    /// Both read, and the bytes differ: a wrong byte.
    WrongBytes(String),
    /// The tool panicked, crashed, hung or ran out of memory.
    ToolFailed(String),
    /// `qcow cat` and `qcow convert` disagree with each other.
    CatAndConvert(String),
    /// QEMU reads; the tool refuses with this message.
    OnlyQemuReads(String),
    /// The tool reads; QEMU refuses with this message.
    OnlyToolReads(String),
    /// QEMU itself hung or crashed: nothing to compare.
    QemuFailed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::BothRead => "both read alike",
            Outcome::BothRefuse => "both refuse",
            Outcome::WrongBytes(_) => "WRONG BYTES",
            Outcome::ToolFailed(_) => "TOOL FAILED",
            Outcome::CatAndConvert(_) => "CAT/CONVERT DIFFER",
            Outcome::OnlyQemuReads(_) => "only QEMU reads",
            Outcome::OnlyToolReads(_) => "only qcow reads",
            Outcome::QemuFailed(_) => "QEMU failed",
        }
    }

    /// The message or difference behind a disagreement.
    fn detail(&self) -> &str {
        match self {
            Outcome::BothRead | Outcome::BothRefuse => "",
            Outcome::WrongBytes(detail)
            | Outcome::ToolFailed(detail)
            | Outcome::CatAndConvert(detail)
            | Outcome::OnlyQemuReads(detail)
            | Outcome::OnlyToolReads(detail)
            | Outcome::QemuFailed(detail) => detail,
        }
    }

    /// Whether the two sides agree.
    fn agrees(&self) -> bool {
        matches!(self, Outcome::BothRead | Outcome::BothRefuse)
    }

    /// Whether this outcome breaks the test's requirements whatever the explanation.
    fn is_defect(&self) -> bool {
        matches!(
            self,
            Outcome::WrongBytes(_) | Outcome::ToolFailed(_) | Outcome::CatAndConvert(_)
        )
    }
}

/// Why a verdict difference is expected, if README lists its class.
fn explain(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::OnlyQemuReads(message)
            if message.contains("compressed cluster at host offset")
                && message.contains("zstd stream") =>
        {
            Some("a corrupt zstd stream libzstd decodes and ruzstd refuses (README)")
        }
        _ => None,
    }
}

fn compare_one(dir: &Path, image: &Path, snapshot: Option<&str>) -> Outcome {
    let qemu_out = dir.join("qemu.raw");
    let qcow_out = dir.join("qcow.raw");
    for out in [&qemu_out, &qcow_out] {
        let _ = std::fs::remove_file(out);
    }
    let qemu = compare::qemu(image, snapshot, &qemu_out);
    let (qcow, cat) = compare::qcow(image, snapshot, &qcow_out);
    let outcome = match (qemu, qcow) {
        (_, Verdict::Hang) => {
            Outcome::ToolFailed(format!("no answer in {} s", compare::TIME_LIMIT_SECS))
        }
        (_, Verdict::Crash(message)) => Outcome::ToolFailed(message),
        (Verdict::Hang, _) => Outcome::QemuFailed("hang".into()),
        (Verdict::Crash(message), _) => Outcome::QemuFailed(message),
        (Verdict::Read, Verdict::Read) => match compare::compare_raw(&qemu_out, &qcow_out) {
            Some(difference) => Outcome::WrongBytes(difference),
            None => Outcome::BothRead,
        },
        (Verdict::Refused(_), Verdict::Refused(_)) => Outcome::BothRefuse,
        (Verdict::Read, Verdict::Refused(message)) => Outcome::OnlyQemuReads(message),
        (Verdict::Refused(message), Verdict::Read) => Outcome::OnlyToolReads(message),
    };
    for out in [&qemu_out, &qcow_out] {
        let _ = std::fs::remove_file(out);
    }
    match (outcome, cat) {
        (Outcome::BothRead | Outcome::OnlyToolReads(_), Some(difference)) => {
            Outcome::CatAndConvert(difference)
        }
        (outcome, _) => outcome,
    }
}

/// One mutant's record, for the summary.
struct Record {
    index: u64,
    kind: &'static str,
    mutation: Mutation,
    snapshot: Option<&'static str>,
    outcome: Outcome,
}

/// Everything a run found.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<(&'static str, &'static str), u64>,
    structures: BTreeMap<(Structure, &'static str), u64>,
    notable: Vec<Record>,
}

/// Runs mutants `job, job + jobs, ...` below `mutants`, each in `work/<kind>`.
fn run_job(
    kinds: &[Kind],
    layouts: &[Layout],
    seed: u64,
    (job, jobs, mutants): (u64, u64, u64),
    work: &Path,
    keep: &Path,
    tally: &Mutex<Tally>,
) {
    let images: Vec<PathBuf> = kinds
        .iter()
        .map(|kind| kind.install(&work.join(kind.name)))
        .collect();
    let mut index = job;
    while index < mutants {
        let which = (index % kinds.len() as u64) as usize;
        let (kind, layout) = (&kinds[which], &layouts[which]);
        let dir = work.join(kind.name);
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let mut bytes = kind.target_bytes().to_vec();
        let mutation = mutate::mutate(&mut bytes, layout, &mut rng);
        std::fs::write(kind.target_path(&dir), &bytes).unwrap();
        let snapshots = std::iter::once(None).chain(kind.snapshots.iter().map(|s| Some(*s)));
        for snapshot in snapshots {
            let outcome = compare_one(&dir, &images[which], snapshot);
            let record = Record {
                index,
                kind: kind.name,
                mutation: mutation.clone(),
                snapshot,
                outcome,
            };
            report(&record, &dir, kind, keep, seed);
            let mut tally = tally.lock().unwrap();
            *tally
                .counts
                .entry((kind.name, record.outcome.label()))
                .or_default() += 1;
            *tally
                .structures
                .entry((mutation.structure, record.outcome.label()))
                .or_default() += 1;
            if !record.outcome.agrees() {
                tally.notable.push(record);
            }
        }
        index += jobs;
    }
}

/// Prints a disagreement and keeps its files.
fn report(record: &Record, dir: &Path, kind: &Kind, keep: &Path, seed: u64) {
    if record.outcome.agrees() {
        return;
    }
    let kept = keep.join(format!("seed-{seed}/{}-{}", record.index, kind.name));
    std::fs::create_dir_all(&kept).unwrap();
    for (name, _) in &kind.files {
        std::fs::copy(dir.join(name), kept.join(name)).unwrap();
    }
    let snapshot = record
        .snapshot
        .map_or(String::new(), |s| format!(" (snapshot {s})"));
    println!(
        "mutant {} {}{snapshot}, {}\n    {}: {}\n    kept in {}",
        record.index,
        kind.name,
        record.mutation,
        record.outcome.label(),
        record.outcome.detail(),
        kept.display()
    );
}

/// A directory on tmpfs when there is one: mutants are many small writes.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn corrupt_images_read_like_qemu() {
    let mutants = setting("QCOW_DIFFERENTIAL_MUTANTS", SHORT_MUTANTS);
    let seed = setting("QCOW_DIFFERENTIAL_SEED", SHORT_SEED);
    let jobs = setting("QCOW_DIFFERENTIAL_JOBS", SHORT_JOBS).max(1);
    let keep = std::env::var_os("QCOW_DIFFERENTIAL_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential"));
    let started = Instant::now();
    let work = scratch();
    let kinds = images::make_all(&work.path().join("pristine"));
    let layouts: Vec<Layout> = kinds
        .iter()
        .map(|kind| Layout::of(kind.target_bytes()))
        .collect();
    // The harness itself: every pristine kind reads alike on both sides.
    for kind in &kinds {
        let dir = work.path().join("check").join(kind.name);
        let image = kind.install(&dir);
        for snapshot in std::iter::once(None).chain(kind.snapshots.iter().map(|s| Some(*s))) {
            let outcome = compare_one(&dir, &image, snapshot);
            assert!(
                matches!(outcome, Outcome::BothRead),
                "pristine {}: {outcome:?}",
                kind.name
            );
        }
        let structures =
            layouts[kinds.iter().position(|k| k.name == kind.name).unwrap()].structures();
        println!("{}: structures {structures:?}", kind.name);
    }
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for job in 0..jobs {
            let work = work.path().join(format!("job-{job}"));
            let (kinds, layouts, keep, tally) = (&kinds, &layouts, &keep, &tally);
            scope.spawn(move || {
                run_job(
                    kinds,
                    layouts,
                    seed,
                    (job, jobs, mutants),
                    &work,
                    keep,
                    tally,
                )
            });
        }
    });
    let tally = tally.into_inner().unwrap();
    println!(
        "\n{mutants} mutants, seed {seed}, {jobs} jobs, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for ((kind, label), count) in &tally.counts {
        println!("  {kind:>10}  {label:<20} {count}");
    }
    for ((structure, label), count) in &tally.structures {
        println!("  {:>13}  {label:<20} {count}", format!("{structure:?}"));
    }
    let mut unexplained = 0;
    let mut explained: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &tally.notable {
        match explain(&record.outcome) {
            Some(reason) if !record.outcome.is_defect() => {
                *explained.entry(reason).or_default() += 1
            }
            _ if matches!(record.outcome, Outcome::QemuFailed(_)) => {}
            _ => {
                unexplained += 1;
                println!(
                    "  UNEXPLAINED mutant {} {}: {}: {}",
                    record.index,
                    record.kind,
                    record.outcome.label(),
                    record.outcome.detail()
                );
            }
        }
    }
    for (reason, count) in &explained {
        println!("  explained ({count}): {reason}");
    }
    let defects = tally
        .notable
        .iter()
        .filter(|r| r.outcome.is_defect())
        .count();
    assert_eq!(defects, 0, "wrong bytes or tool failures: see above");
    assert_eq!(
        unexplained, 0,
        "verdict differences README does not explain: see above"
    );
}
