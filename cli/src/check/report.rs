//! The result of a check, printed as `qemu-img check` prints it.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::output::pretty_json;

/// What the walk found, with `qemu-img check`'s counters.
#[derive(Debug, Default)]
pub struct Report {
    /// References above the stored refcount and other invalid metadata.
    pub corruptions: u64,
    /// Clusters whose stored refcount is above their references.
    pub leaks: u64,
    /// Metadata that could not be read.
    pub check_errors: u64,
    /// Clusters of the virtual disk.
    pub total_clusters: u64,
    /// Clusters the active L1 table maps.
    pub allocated_clusters: u64,
    /// Mapped clusters not right after the previous one in the file.
    pub fragmented_clusters: u64,
    /// Compressed clusters of the active L1 table.
    pub compressed_clusters: u64,
    /// End of the last cluster in use or with a refcount.
    pub image_end_offset: u64,
}

/// `qemu-img check`'s exit status: 1 internal errors, 2 corruptions, 3 leaks only.
pub fn exit_status(report: &Report) -> u8 {
    if report.check_errors > 0 {
        1
    } else if report.corruptions > 0 {
        2
    } else if report.leaks > 0 {
        3
    } else {
        0
    }
}

/// `qemu-img check`'s summary.
pub fn human_report(report: &Report) -> String {
    let mut text = String::new();
    if report.corruptions == 0 && report.leaks == 0 && report.check_errors == 0 {
        text += "No errors were found on the image.\n";
    } else {
        if report.corruptions > 0 {
            text += &format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                report.corruptions
            );
        }
        if report.leaks > 0 {
            text += &format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                report.leaks
            );
        }
        if report.check_errors > 0 {
            text += &format!(
                "\n{} internal errors have occurred during the check.\n",
                report.check_errors
            );
        }
    }
    if report.total_clusters != 0 && report.allocated_clusters != 0 {
        let allocated = report.allocated_clusters as f64;
        text += &format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            report.allocated_clusters,
            report.total_clusters,
            allocated * 100.0 / report.total_clusters as f64,
            report.fragmented_clusters as f64 * 100.0 / allocated,
            report.compressed_clusters as f64 * 100.0 / allocated
        );
    }
    if report.image_end_offset != 0 {
        text += &format!("Image end offset: {}\n", report.image_end_offset);
    }
    text
}

/// `qemu-img check --output=json`: zero counters other than `check-errors` are left out.
pub fn json_report(report: &Report, image: &Path) -> String {
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
