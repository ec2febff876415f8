//! `qcow check`: the crate's check (`qcow2_reader::check`), printed as
//! `qemu-img check` prints it, with its exit status.
//!
//! Like `qemu-img check`, the image's backing chain and data file are
//! opened first (as far as `--follow` allows): a missing one fails the
//! check. The findings go to standard error, the summary to standard output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qcow2_reader::check::{check, CheckLimits, Report};
use qcow2_reader::Header;
use serde_json::{json, Map, Value};

use crate::failure::{Failure, Result};
use crate::input::Input;
use crate::layers::{list_layers, Follow};
use crate::output::{pretty_json, print};

/// Arguments of `qcow check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON, like `qemu-img check --output=json`.
    #[arg(long)]
    json: bool,
    /// The image.
    image: PathBuf,
}

/// Runs `qcow check`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let image = &args.image;
    let file = Input::open(image).map_err(|error| Failure::new(image, error))?;
    open_named_files(&file, image, follow)?;
    let report =
        check(&file, &CheckLimits::default()).map_err(|error| Failure::new(image, error))?;
    for finding in &report.findings {
        eprintln!("{finding}");
    }
    if report.findings_dropped > 0 {
        eprintln!("({} more findings not shown)", report.findings_dropped);
    }
    if report.has_summary() {
        let text = if args.json {
            json_report(&report, image)
        } else {
            report.to_string()
        };
        print(&text, image)?;
    }
    if let Some(line) = report.failure_line() {
        eprintln!("qcow: {line}");
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// `qemu-img check` opens the whole chain and the data file before it
/// checks: a missing one is a failure. An image that opens only in check
/// mode (an empty refcount table, a broken snapshot table) names nothing
/// this walk could follow, so it is checked alone.
fn open_named_files(file: &Input, image: &Path, follow: Follow) -> Result<()> {
    if follow == Follow::None {
        return Ok(());
    }
    let Ok(header) = Header::read(file) else {
        return Ok(());
    };
    if header.backing_file().is_some() || header.has_data_file() {
        list_layers(image, follow)?;
    }
    Ok(())
}

/// `qemu-img check --output=json`: zero counters other than `check-errors` are left out.
fn json_report(report: &Report, image: &Path) -> String {
    let mut object = Map::new();
    let mut optional = |key: &str, value: u64| {
        if value != 0 {
            object.insert(key.to_string(), json!(value));
        }
    };
    optional("image-end-offset", report.image_end_offset);
    optional("total-clusters", report.total_clusters);
    optional("allocated-clusters", report.allocated_clusters);
    optional("fragmented-clusters", report.fragmented_clusters);
    optional("compressed-clusters", report.compressed_clusters);
    optional("corruptions", report.corruptions);
    optional("leaks", report.leaks);
    object.insert("check-errors".into(), json!(report.check_errors));
    object.insert("filename".into(), json!(image.display().to_string()));
    object.insert("format".into(), json!("qcow2"));
    pretty_json(&Value::Object(object))
}
