//! Byte counts on the command line, with `qemu-img`'s suffixes (`4K`, `1.5G`).

/// Parses a byte count: a number with an optional binary suffix
/// (`B`, `K`, `M`, `G`, `T`, `P`, `E`, any case) and an optional fraction
/// when a suffix is given, as `qemu-img` accepts them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        "e" | "eib" => 60,
        _ => return Err(format!("invalid size suffix in {text:?}")),
    };
    let invalid = || format!("invalid size {text:?}");
    if number.is_empty() {
        return Err(invalid());
    }
    match number.split_once('.') {
        None => {
            let value: u64 = number.parse().map_err(|_| invalid())?;
            value.checked_mul(1 << shift).ok_or_else(invalid)
        }
        Some((whole, fraction)) => {
            let value: f64 = number.parse().map_err(|_| invalid())?;
            if shift == 0 || whole.is_empty() && fraction.is_empty() {
                return Err(invalid());
            }
            let bytes = value * (1u64 << shift) as f64;
            if !(0.0..1.8e19).contains(&bytes) {
                return Err(invalid());
            }
            Ok(bytes as u64)
        }
    }
}

/// `qemu-img`'s human size: three significant digits and a binary unit ("1.26 MiB").
pub fn human_size(bytes: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // QEMU switches to the next unit once the integer part would reach 1000.
    let scaled = bytes as f64 / (1000.0 / 1024.0);
    let exponent = if scaled < 1.0 {
        0
    } else {
        scaled.log2().floor() as usize + 1
    };
    let unit = (exponent.saturating_sub(1) / 10).min(SUFFIXES.len() - 1);
    let value = bytes as f64 / (1u64 << (unit * 10)) as f64;
    format!("{} {}B", three_significant(value), SUFFIXES[unit])
}

/// C's `%0.3g` for values below 1000: three significant digits, no trailing zeros.
fn three_significant(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert!(parse_size("").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("99999999999E").is_err());
    }

    #[test]
    fn human_sizes_match_qemu() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(67108864), "64 MiB");
        assert_eq!(human_size(1323008), "1.26 MiB");
        assert_eq!(human_size(528384), "516 KiB");
        assert_eq!(human_size(1 << 41), "2 TiB");
    }
}
