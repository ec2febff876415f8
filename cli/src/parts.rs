//! `qcow parts`: the partitions of the virtual disk and the file system in
//! each, like `virt-filesystems --long --parts --filesystems`.

use std::path::PathBuf;
use std::process::ExitCode;

use qcow2_disk::{fs::detect, FileSystem, Partition, PartitionKind};
use serde_json::{json, Value};

use crate::failure::Result;
use crate::layers::Follow;
use crate::location::{open_disk, OpenDisk};
use crate::output::{pretty_json, print};
use crate::passphrase::KeyArgs;

/// Arguments of `qcow parts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON: the table's kind and an array of partitions.
    #[arg(long)]
    json: bool,
    /// Read the disk as of this internal snapshot (id or name).
    #[arg(short = 'l', long)]
    snapshot: Option<String>,
    #[command(flatten)]
    key: KeyArgs,
    /// The image.
    image: PathBuf,
}

/// What was found in one partition.
struct Row {
    number: u32,
    start: u64,
    size: u64,
    type_name: String,
    type_id: String,
    gpt_name: Option<String>,
    filesystem: Option<&'static str>,
    label: Option<String>,
    problem: Option<String>,
}

/// Runs `qcow parts`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    let access = args.key.access(&args.image, follow)?;
    let disk = open_disk(&args.image, args.snapshot.as_deref(), &access)?;
    let rows: Vec<Row> = disk
        .table
        .partitions
        .iter()
        .map(|part| row(&disk, part))
        .collect();
    let text = if args.json {
        let partitions: Vec<Value> = rows.iter().map(row_json).collect();
        pretty_json(&json!({ "table": disk.table.scheme.name(), "partitions": partitions }))
    } else {
        table_text(disk.table.scheme.name(), &rows)
    };
    print(&text, &args.image)?;
    // The table was read and printed; a file system that could not be read
    // still fails the command, named on stderr as every other error is.
    let mut status = ExitCode::SUCCESS;
    for row in &rows {
        if let Some(problem) = &row.problem {
            eprintln!(
                "qcow: {}: partition {}: {problem}",
                args.image.display(),
                row.number
            );
            status = ExitCode::FAILURE;
        }
    }
    Ok(status)
}

fn row(disk: &OpenDisk, part: &Partition) -> Row {
    let (type_id, gpt_name) = match &part.kind {
        PartitionKind::Gpt {
            type_guid, name, ..
        } => (type_guid.clone(), Some(name.clone())),
        PartitionKind::Mbr { type_byte, .. } => (format!("{type_byte:#04x}"), None),
        PartitionKind::WholeDisk => (String::new(), None),
    };
    let mut row = Row {
        number: part.number,
        start: part.start,
        size: part.len,
        type_name: part.type_name(),
        type_id,
        gpt_name,
        filesystem: None,
        label: None,
        problem: None,
    };
    if part.is_container() {
        return row;
    }
    let slice = part.slice(disk.disk.clone());
    match detect(&slice) {
        Ok(Some(kind)) => row.filesystem = Some(kind.name()),
        Ok(None) => return row,
        Err(error) => {
            row.problem = Some(error.to_string());
            return row;
        }
    }
    let opened = FileSystem::open(slice).and_then(|fs| Ok((fs.name(), fs.label()?)));
    match opened {
        Ok((name, label)) => {
            row.filesystem = Some(name);
            row.label = Some(label);
        }
        Err(error) => row.problem = Some(error.to_string()),
    }
    row
}

fn row_json(row: &Row) -> Value {
    let mut value = json!({
        "number": row.number,
        "start": row.start,
        "size": row.size,
        "type": row.type_name,
        "type-id": row.type_id,
        "filesystem": row.filesystem,
        "label": row.label,
    });
    if let Some(name) = &row.gpt_name {
        value["name"] = json!(name);
    }
    if let Some(problem) = &row.problem {
        value["error"] = json!(problem);
    }
    value
}

fn table_text(scheme: &str, rows: &[Row]) -> String {
    let mut lines = vec![format!("Partition table: {scheme}")];
    let header = ["Number", "Start", "Size", "Type", "Filesystem", "Label"];
    let mut cells: Vec<[String; 6]> = vec![header.map(String::from)];
    for row in rows {
        let label = match (&row.label, &row.problem) {
            (_, Some(problem)) => format!("(error: {problem})"),
            (Some(label), None) => label.clone(),
            (None, None) => "-".into(),
        };
        cells.push([
            row.number.to_string(),
            row.start.to_string(),
            row.size.to_string(),
            row.type_name.clone(),
            row.filesystem.unwrap_or("-").to_string(),
            label,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            cells
                .iter()
                .map(|cell| cell[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for cell in &cells {
        let mut line = String::new();
        for (column, text) in cell.iter().enumerate() {
            let pad = widths[column] - text.chars().count();
            // Numbers align right, words left; the last column is not padded.
            if column < 3 {
                line += &" ".repeat(pad);
                line += text;
            } else {
                line += text;
                if column < 5 {
                    line += &" ".repeat(pad);
                }
            }
            if column < 5 {
                line += "  ";
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines.join("\n") + "\n"
}
