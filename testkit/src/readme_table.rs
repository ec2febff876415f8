//! README's Performance table from one JSON file of [`crate::bench_compare`]
//! (the `readme-table` binary): a sentence naming the machine, date and
//! load, then the markdown table, with a last column saying whether each
//! row meets its goal of issue 15.

use serde_json::Value;
use std::fmt::Write;

/// Issue 15's goals: the qcow/QEMU time of the compressed converts, the
/// qcow/limit time of the uncompressed one, and the firmware's queued
/// qcow2/raw throughput ratio in every run. A missed goal points to the
/// text under the table, which says why.
const COMPRESSED_MAX: f64 = 0.8;
const LIMIT_MAX: f64 = 1.1;
const FIRMWARE_MIN: f64 = 0.95;

fn seconds(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".into(), |value| format!("{value:.4} s"))
}

fn ratio(numerator: &Value, denominator: &Value) -> String {
    match (numerator.as_f64(), denominator.as_f64()) {
        (Some(numerator), Some(denominator)) if denominator != 0.0 => {
            format!("{:.2}x", numerator / denominator)
        }
        _ => "-".into(),
    }
}

/// A JSON value as Python's `str()` shows a number or a string.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) if number.is_f64() => {
            let value = number.as_f64().unwrap_or(0.0);
            // Python writes a whole float with ".0".
            if value.fract() == 0.0 && value.abs() < 1e16 {
                format!("{value:.1}")
            } else {
                value.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn verdict(met: bool, goal: &str) -> String {
    format!("{goal}: {}", if met { "met" } else { "missed, see below" })
}

fn number(entry: &Value, key: &str) -> f64 {
    entry[key].as_f64().unwrap_or(f64::NAN)
}

fn convert_goal(entry: &Value) -> String {
    let workload = entry["workload"].as_str().unwrap_or_default();
    if workload.contains("LUKS") {
        return "-".into();
    }
    if workload.contains("zstd") || workload.contains("deflate") {
        let met = number(entry, "qcow_s") <= COMPRESSED_MAX * number(entry, "qemu_s");
        return verdict(met, &format!("<= {COMPRESSED_MAX}x QEMU"));
    }
    if entry["limit_s"].as_f64().is_some_and(|limit| limit != 0.0) {
        let met = number(entry, "qcow_s") <= LIMIT_MAX * number(entry, "limit_s");
        return verdict(met, &format!("<= {LIMIT_MAX}x limit"));
    }
    "-".into()
}

/// One row per queue depth: per run, the median qcow2/raw throughput
/// ratio of the interleaved passes with its spread, and the best passes'
/// MB/s (a throughput ratio: above 1 the qcow2 read is faster).
fn firmware_rows(entry: &Value) -> String {
    let empty = Vec::new();
    let mut rows = Vec::new();
    for (key, queued) in [("depth1", false), ("queued", true)] {
        let runs = entry[key].as_array().unwrap_or(&empty);
        let ratios: Vec<String> = runs
            .iter()
            .map(|run| {
                format!(
                    "{:.2} ({:.2}-{:.2})",
                    number(run, "median"),
                    number(run, "min"),
                    number(run, "max")
                )
            })
            .collect();
        let joined = |field: &str| {
            runs.iter()
                .map(|run| plain(&run[field]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let depth = runs
            .first()
            .map_or_else(String::new, |run| plain(&run["depth"]));
        let label = format!(
            "{}, queue depth {depth}, median (spread) per run: {}",
            plain(&entry["workload"]),
            ratios.join(", ")
        );
        let goal = if queued {
            let met = runs.iter().all(|run| number(run, "median") >= FIRMWARE_MIN);
            verdict(met, &format!(">= {FIRMWARE_MIN}x raw in every run"))
        } else {
            "-".into()
        };
        let cells = [
            label,
            format!("{} MB/s", joined("qcow2_mb_s")),
            format!("raw {} MB/s", joined("raw_mb_s")),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            goal,
        ];
        rows.push(format!("| {} |", cells.join(" | ")));
    }
    rows.join("\n")
}

fn row(entry: &Value) -> String {
    let kind = entry["kind"].as_str().unwrap_or_default();
    let cells: Vec<String> = match kind {
        "firmware" => return firmware_rows(entry),
        "memory" => vec![
            format!(
                "{} (16 MiB image: {} KiB)",
                plain(&entry["workload"]),
                plain(&entry["qcow_small_kib"])
            ),
            format!("{} KiB", plain(&entry["qcow_kib"])),
            format!("{} KiB", plain(&entry["qemu_kib"])),
            ratio(&entry["qcow_kib"], &entry["qemu_kib"]),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        _ => {
            let mut label = plain(&entry["workload"]);
            if entry["alt_name"]
                .as_str()
                .is_some_and(|name| !name.is_empty())
            {
                write!(
                    label,
                    " ({}: {:.4} s, CPU {:.4} s)",
                    plain(&entry["alt_name"]),
                    number(entry, "alt_s"),
                    number(entry, "alt_cpu_s")
                )
                .expect("writing to a String");
            }
            vec![
                label,
                seconds(&entry["qcow_s"]),
                seconds(&entry["qemu_s"]),
                ratio(&entry["qcow_s"], &entry["qemu_s"]),
                seconds(&entry["qcow_cpu_s"]),
                seconds(&entry["qemu_cpu_s"]),
                seconds(&entry["limit_s"]),
                ratio(&entry["qcow_s"], &entry["limit_s"]),
                if kind == "convert" {
                    convert_goal(entry)
                } else {
                    "-".into()
                },
            ]
        }
    };
    format!("| {} |", cells.join(" | "))
}

/// The markdown for README from the results `run` (the parsed JSON file).
pub fn table(run: &Value) -> String {
    let machine = &run["machine"];
    let mut text = format!(
        "Measured {} by `benches/compare.sh` (medians of {} alternating runs, {} s without \
         image making): {} CPUs ({}), {} GiB RAM, images on tmpfs, {}; load average {} before \
         and {} after. The limit is the raw file copied by {} parallel `dd` streams, as many \
         as convert's threads.\n\n",
        plain(&run["date"]),
        plain(&run["reps"]),
        plain(&run["run_seconds"]),
        plain(&machine["cpus"]),
        plain(&machine["cpu"]),
        plain(&machine["memory_gib"]),
        plain(&run["qemu"]),
        plain(&machine["load_average_before"]),
        plain(&machine["load_average_after"]),
        plain(&run["convert_threads"]),
    );
    text += "| workload | qcow | QEMU | qcow/QEMU | qcow CPU | QEMU CPU | limit | qcow/limit | goal (issue 15) |\n";
    text += "|---|---|---|---|---|---|---|---|---|\n";
    for entry in run["rows"].as_array().into_iter().flatten() {
        text += &row(entry);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn convert_rows_name_their_goal_and_whether_it_is_met() {
        let compressed = json!({"workload": "convert 1 GiB, zstd-compressed", "kind": "convert",
            "qcow_s": 1.12, "qcow_cpu_s": 2.23, "qemu_s": 2.15, "qemu_cpu_s": 3.17,
            "limit_s": 0.45, "limit_cpu_s": 0.5,
            "alt_name": "ruzstd", "alt_s": 3.55, "alt_cpu_s": 7.08});
        assert_eq!(
            row(&compressed),
            "| convert 1 GiB, zstd-compressed (ruzstd: 3.5500 s, CPU 7.0800 s) | 1.1200 s | 2.1500 s | 0.52x | 2.2300 s | 3.1700 s | 0.4500 s | 2.49x | <= 0.8x QEMU: met |"
        );
        let allocated = json!({"workload": "convert 1 GiB, all allocated", "kind": "convert",
            "qcow_s": 0.6, "qcow_cpu_s": 0.9, "qemu_s": 0.62, "qemu_cpu_s": 0.81,
            "limit_s": 0.46, "alt_name": null});
        assert!(row(&allocated).ends_with("| 1.30x | <= 1.1x limit: missed, see below |"));
    }

    #[test]
    fn reads_rows_have_no_limit_and_memory_rows_count_kib() {
        let reads = json!({"workload": "4 KiB seq reads x250000, L2 cache 1M", "kind": "reads",
            "qcow_s": 0.19, "qcow_cpu_s": 0.19, "qemu_s": 5.53, "qemu_cpu_s": 5.51});
        assert_eq!(
            row(&reads),
            "| 4 KiB seq reads x250000, L2 cache 1M | 0.1900 s | 5.5300 s | 0.03x | 0.1900 s | 5.5100 s | - | - | - |"
        );
        let memory = json!({"workload": "peak RSS, convert 2 TiB sparse", "kind": "memory",
            "qcow_kib": 6400, "qcow_small_kib": 6312, "qemu_kib": 18624});
        assert_eq!(
            row(&memory),
            "| peak RSS, convert 2 TiB sparse (16 MiB image: 6312 KiB) | 6400 KiB | 18624 KiB | 0.34x | - | - | - | - | - |"
        );
    }

    #[test]
    fn whole_floats_print_as_python_prints_them() {
        assert_eq!(plain(&json!(6356.0)), "6356.0");
        assert_eq!(plain(&json!(4974)), "4974");
        assert_eq!(plain(&json!(0.93)), "0.93");
    }
}
