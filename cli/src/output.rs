//! Writing results to standard output the way QEMU prints them.

use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

use crate::failure::{is_broken_pipe, Failure, Result};

/// JSON indented by four spaces, as QEMU prints it, with a final newline.
pub fn pretty_json(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        return "null\n".to_string();
    }
    String::from_utf8_lossy(&out).into_owned() + "\n"
}

/// Writes `text` to standard output; a closed pipe (`| head`) is not an error.
pub fn print(text: &str, image: &Path) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if !is_broken_pipe(&error) => Err(Failure::new(image, error)),
        _ => Ok(()),
    }
}
