//! `qcow info`: the header, features, snapshots and backing chain of an
//! image, as `qemu-img info --backing-chain` shows them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qcow2_reader::chain::{Layer, LayerFormat};
use qcow2_reader::crypto::{IvGenerator, LuksHeader};
use qcow2_reader::feature::{Autoclear, Compatible, FeatureKind, Incompatible};
use qcow2_reader::{is_qcow2, Encryption, Header, Image, Snapshot, Snapshots};
use serde_json::{json, Map, Value};

use crate::failure::{Failure, Result};
use crate::input::{resolve_name, Input};
use crate::layers::{list_layers, Follow};
use crate::output::{pretty_json, print, utc_text};
use crate::size::human_size;

/// Arguments of `qcow info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON with `qemu-img info --output=json` field names: an array,
    /// top image first, like `--backing-chain`.
    #[arg(long)]
    json: bool,
    /// Show the image alone (a JSON object, not an array), without opening its backing chain.
    #[arg(long)]
    no_backing_chain: bool,
    /// The image.
    image: PathBuf,
}

/// What `info` shows of one image of the chain.
struct Described {
    layer: Layer,
    actual_size: u64,
    virtual_size: u64,
    snapshots: Vec<Snapshot>,
    features: Vec<(FeatureKind, Vec<String>)>,
}

/// Runs `qcow info`.
pub fn run(args: &Args, follow: Follow) -> Result<ExitCode> {
    // Under `--follow none` no other file is opened, not even to list it:
    // the header alone names the backing file, as without `--backing-chain`.
    let layers = if args.no_backing_chain || follow == Follow::None {
        vec![lone_layer(&args.image)?]
    } else {
        list_layers(&args.image, follow)?
    };
    let described = layers
        .into_iter()
        .map(|layer| describe(layer).map_err(|message| Failure::new(&args.image, message)))
        .collect::<Result<Vec<_>>>()?;
    let text = if args.json {
        let mut values: Vec<Value> = described.iter().map(to_json).collect();
        let value = if args.no_backing_chain {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        pretty_json(&value)
    } else {
        let blocks: Vec<String> = described.iter().map(to_human).collect();
        blocks.join("\n")
    };
    print(&text, &args.image)?;
    Ok(ExitCode::SUCCESS)
}

/// The top image alone, its header read but its backing file not opened.
fn lone_layer(path: &Path) -> Result<Layer> {
    let file = Input::open(path).map_err(|error| Failure::new(path, error))?;
    if !is_qcow2(&file).map_err(|error| Failure::new(path, error))? {
        return Ok(Layer {
            path: path.to_path_buf(),
            format: LayerFormat::Raw,
            header: None,
        });
    }
    let builder = Image::builder(file).map_err(|error| Failure::new(path, error))?;
    Ok(Layer {
        path: path.to_path_buf(),
        format: LayerFormat::Qcow2,
        header: Some(builder.header().clone()),
    })
}

/// Reads what `info` shows beyond the header: sizes, snapshots and feature names.
fn describe(layer: Layer) -> std::result::Result<Described, String> {
    let file = Input::open(&layer.path).map_err(|error| error.to_string())?;
    let actual_size = file.allocated().map_err(|error| error.to_string())?;
    let Some(header) = &layer.header else {
        return Ok(Described {
            virtual_size: file.len().map_err(|error| error.to_string())?,
            layer,
            actual_size,
            snapshots: Vec::new(),
            features: Vec::new(),
        });
    };
    let snapshots = Snapshots::new(&file, header)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    let features = feature_names(&file, header);
    Ok(Described {
        virtual_size: header.virtual_size(),
        layer,
        actual_size,
        snapshots,
        features,
    })
}

/// The names of the feature bits that are set, per kind, as `qemu-img` names them.
fn feature_names(file: &Input, header: &Header) -> Vec<(FeatureKind, Vec<String>)> {
    FeatureKind::ALL
        .into_iter()
        .map(|kind| {
            let names = header
                .feature_bits(kind)
                .map(|bit| header.feature_label(file, kind, bit).to_string())
                .collect();
            (kind, names)
        })
        .collect()
}

/// The backing file name as stored, and where it resolves.
fn backing_names(layer: &Layer, header: &Header) -> Option<(String, PathBuf)> {
    let name = header.backing_file()?.to_string();
    let full = resolve_name(&layer.path, &name);
    Some((name, full))
}

/// One image as `qemu-img info --output=json` prints it, plus `features`.
fn to_json(described: &Described) -> Value {
    let layer = &described.layer;
    let mut object = Map::new();
    object.insert("virtual-size".into(), json!(described.virtual_size));
    object.insert("filename".into(), json!(layer.path.display().to_string()));
    if let Some(header) = &layer.header {
        object.insert("cluster-size".into(), json!(header.cluster_size()));
    }
    object.insert("format".into(), json!(layer.format.name()));
    object.insert("actual-size".into(), json!(described.actual_size));
    let Some(header) = &layer.header else {
        object.insert("dirty-flag".into(), json!(false));
        return Value::Object(object);
    };
    object.insert(
        "format-specific".into(),
        json!({"type": "qcow2", "data": format_specific(header)}),
    );
    if let Some((name, full)) = backing_names(layer, header) {
        object.insert("backing-filename".into(), json!(name));
        object.insert(
            "full-backing-filename".into(),
            json!(full.display().to_string()),
        );
        if let Some(format) = header.backing_format_name() {
            object.insert("backing-filename-format".into(), json!(format.to_string()));
        }
    }
    if !described.snapshots.is_empty() {
        let snapshots = described.snapshots.iter().map(snapshot_json).collect();
        object.insert("snapshots".into(), Value::Array(snapshots));
    }
    if header.is_encrypted() {
        object.insert("encrypted".into(), json!(true));
    }
    let dirty = header.incompatible_features().contains(Incompatible::DIRTY);
    object.insert("dirty-flag".into(), json!(dirty));
    let features: Map<String, Value> = described
        .features
        .iter()
        .map(|(kind, names)| (kind.name().to_string(), json!(names)))
        .collect();
    object.insert("features".into(), Value::Object(features));
    Value::Object(object)
}

/// `format-specific.data` of `qemu-img info`: v2 images show fewer fields.
fn format_specific(header: &Header) -> Value {
    let mut data = Map::new();
    let v3 = header.version() >= 3;
    data.insert("compat".into(), json!(if v3 { "1.1" } else { "0.10" }));
    data.insert(
        "compression-type".into(),
        json!(header.compression_type().name()),
    );
    if v3 {
        let lazy = header
            .compatible_features()
            .contains(Compatible::LAZY_REFCOUNTS);
        data.insert("lazy-refcounts".into(), json!(lazy));
    }
    data.insert(
        "refcount-bits".into(),
        json!(1u64 << header.refcount_order()),
    );
    if let Some(name) = header.data_file() {
        data.insert("data-file".into(), json!(name.to_string()));
    }
    if let Some(encrypt) = encrypt_json(header) {
        data.insert("encrypt".into(), encrypt);
    }
    if header.has_data_file() {
        let raw = header
            .autoclear_features()
            .contains(Autoclear::DATA_FILE_RAW);
        data.insert("data-file-raw".into(), json!(raw));
    }
    if v3 {
        let corrupt = header
            .incompatible_features()
            .contains(Incompatible::CORRUPT);
        data.insert("corrupt".into(), json!(corrupt));
        data.insert("extended-l2".into(), json!(header.has_extended_l2()));
    }
    Value::Object(data)
}

/// `format-specific.data.encrypt`: what `qemu-img info` shows of the
/// encryption without any key, read from the header (and the LUKS header,
/// parsed when the image's header was), in QEMU's field order.
fn encrypt_json(header: &Header) -> Option<Value> {
    match Encryption::of(header)? {
        Encryption::Aes => Some(json!({"format": "aes"})),
        Encryption::Luks(luks) => Some(luks_json(luks)),
    }
}

/// QEMU's `QCryptoBlockInfoLUKS`: the hash of the IV generator only for
/// ESSIV, a slot's iterations and stripes only when it is active.
fn luks_json(luks: &LuksHeader) -> Value {
    let spec = luks.spec();
    let mut object = Map::new();
    object.insert("ivgen-alg".into(), json!(spec.ivgen.name()));
    object.insert("hash-alg".into(), json!(spec.hash.name()));
    object.insert("cipher-alg".into(), json!(spec.cipher.name()));
    object.insert("uuid".into(), json!(luks.uuid()));
    if let (IvGenerator::Essiv, Some(hash)) = (spec.ivgen, spec.ivgen_hash) {
        object.insert("ivgen-hash-alg".into(), json!(hash.name()));
    }
    object.insert("format".into(), json!("luks"));
    object.insert("cipher-mode".into(), json!(spec.mode.name()));
    let slots = luks
        .slots()
        .iter()
        .map(|slot| {
            let mut object = Map::new();
            object.insert("active".into(), json!(slot.active));
            if slot.active {
                object.insert("iters".into(), json!(slot.iterations));
            }
            object.insert("key-offset".into(), json!(slot.key_offset()));
            if slot.active {
                object.insert("stripes".into(), json!(slot.stripes));
            }
            Value::Object(object)
        })
        .collect();
    object.insert("slots".into(), Value::Array(slots));
    object.insert("payload-offset".into(), json!(luks.payload_offset()));
    object.insert(
        "master-key-iters".into(),
        json!(luks.master_key_iterations()),
    );
    Value::Object(object)
}

fn snapshot_json(snapshot: &Snapshot) -> Value {
    let mut object = Map::new();
    if let Some(icount) = snapshot.icount.filter(|&icount| icount != u64::MAX) {
        object.insert("icount".into(), json!(icount));
    }
    object.insert(
        "vm-clock-nsec".into(),
        json!(snapshot.vm_clock_nsec % 1_000_000_000),
    );
    object.insert("name".into(), json!(snapshot.name.to_string()));
    object.insert("date-sec".into(), json!(snapshot.date_sec));
    object.insert("date-nsec".into(), json!(snapshot.date_nsec));
    object.insert(
        "vm-clock-sec".into(),
        json!(snapshot.vm_clock_nsec / 1_000_000_000),
    );
    object.insert("id".into(), json!(snapshot.id.to_string()));
    object.insert("vm-state-size".into(), json!(snapshot.vm_state_size));
    Value::Object(object)
}

/// One image as `qemu-img info` prints it, plus the feature names.
fn to_human(described: &Described) -> String {
    let layer = &described.layer;
    let mut text = format!(
        "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
        layer.path.display(),
        layer.format.name(),
        human_size(described.virtual_size),
        described.virtual_size,
        human_size(described.actual_size),
    );
    let Some(header) = &layer.header else {
        return text;
    };
    if header.is_encrypted() {
        text += "encrypted: yes\n";
    }
    text += &format!("cluster_size: {}\n", header.cluster_size());
    if let Some((name, full)) = backing_names(layer, header) {
        text += &format!("backing file: {name}");
        if Path::new(&name) != full {
            text += &format!(" (actual path: {})", full.display());
        }
        text += "\n";
        if let Some(format) = header.backing_format_name() {
            text += &format!("backing file format: {format}\n");
        }
    }
    if !described.snapshots.is_empty() {
        text += "Snapshot list:\n";
        text += &format!(
            "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n",
            "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
        );
        for snapshot in &described.snapshots {
            text += &snapshot_line(snapshot);
        }
    }
    text += "Format specific information:\n";
    text += &human_value(&format_specific(header), 1);
    text += "Features:\n";
    for (kind, names) in &described.features {
        let list = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        text += &format!("    {}: {list}\n", kind.name());
    }
    text
}

/// A JSON value as QEMU's `dump_qobject` prints it: four spaces per
/// level, `-` in keys as spaces, list items as `[i]:`, nested values below
/// their key.
fn human_value(value: &Value, level: usize) -> String {
    let indent = "    ".repeat(level);
    let entry = |label: String, value: &Value| match value {
        Value::Object(_) | Value::Array(_) => {
            format!("{indent}{label}:\n{}", human_value(value, level + 1))
        }
        Value::String(text) => format!("{indent}{label}: {text}\n"),
        other => format!("{indent}{label}: {other}\n"),
    };
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| entry(key.replace('-', " "), value))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, value)| entry(format!("[{index}]"), value))
            .collect(),
        other => format!("{indent}{other}\n"),
    }
}

/// A row of `qemu-img snapshot -l`'s table (dates in UTC).
fn snapshot_line(snapshot: &Snapshot) -> String {
    let clock_ms = snapshot.vm_clock_nsec / 1_000_000;
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        clock_ms / 3_600_000,
        clock_ms / 60_000 % 60,
        clock_ms / 1000 % 60,
        clock_ms % 1000
    );
    let icount = match snapshot.icount {
        Some(icount) if icount != u64::MAX => icount.to_string(),
        _ => String::new(),
    };
    format!(
        "{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}\n",
        snapshot.id.to_string(),
        snapshot.name.to_string(),
        human_size(snapshot.vm_state_size),
        utc_text(i64::from(snapshot.date_sec)),
        clock,
        icount
    )
}
