//! `qcow2root=efi`: where the attached image is, told to Linux through a
//! volatile EFI variable.
//!
//! When the driver attaches an image file or URL, it sets the
//! variable [`VARIABLE_NAME`] under the project's GUID ([`VARIABLE_GUID`],
//! the GUID of the child disks' vendor node) with the attributes
//! [`ATTRIBUTES`]: boot-service and runtime access, not non-volatile, so
//! it lives until the next reset and never wears the flash. Linux shows it
//! as `/sys/firmware/efi/efivars/QcowRootImage-2d6c1e7a-8b4f-4c3e-9a51-7163f2b0c0a2`
//! (four bytes of attributes, then the value), where the initramfs script
//! reads it.
//!
//! The value is UTF-8 text without a terminator, in one of two forms:
//!
//! - for an image attached from a URL, the URL as `\qcow2.cfg` or the
//!   load options give it (`http://...` or `https://...`, [`url_value`]);
//!   the initramfs script brings the network up and serves it with `qcow
//!   serve URL`, which follows redirects again itself;
//! - for an image file, `PARTUUID:/PATH` ([`value`]), where `PARTUUID` is
//!   the partition holding the file as Linux names it in `PARTUUID=` (a
//!   GPT partition's unique GUID in lowercase; for an MBR partition, the
//!   disk signature and the partition number, `SSSSSSSS-PP`, both
//!   lowercase hex) and `/PATH` the file's path from the root of that file
//!   system with `/` separators. The script turns it into
//!   `qcow2root=PARTUUID=PARTUUID:/PATH`.
//!
//! The partition comes from the file system's device path: its last node
//! must be a hard-drive media node (UEFI 2.10, 10.3.5.1), which carries the
//! partition number, the signature and its kind. A file system not on a
//! partition (a superfloppy, a CD) has no such node and no `PARTUUID`: the
//! driver then attaches the image but sets no variable, and says why.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::device_path::VENDOR_GUID;

/// The variable's name.
pub const VARIABLE_NAME: &str = "QcowRootImage";
/// The variable's vendor GUID, in the UEFI byte layout: the project's GUID.
pub const VARIABLE_GUID: [u8; 16] = VENDOR_GUID;
/// The GUID as Linux prints it in efivarfs names.
pub const VARIABLE_GUID_TEXT: &str = "2d6c1e7a-8b4f-4c3e-9a51-7163f2b0c0a2";
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS`:
/// readable after `ExitBootServices`, gone at the next reset.
pub const ATTRIBUTES: u32 = 0x2 | 0x4;

const HEADER_BYTES: usize = 4;
const MEDIA_TYPE: u8 = 0x04;
const HARD_DRIVE_SUBTYPE: u8 = 0x01;
const HARD_DRIVE_NODE_BYTES: usize = 42;
const MBR_SIGNATURE: u8 = 0x01;
const GUID_SIGNATURE: u8 = 0x02;

/// Why no value can name an image's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffError {
    /// The file system's path does not end with a hard-drive node: it is
    /// not on a partition (a disk without a partition table, a CD).
    NotOnPartition,
    /// The hard-drive node is shorter than 42 bytes or a node's length
    /// does not fit the path.
    BadNode {
        /// Offset of the node in the path.
        offset: usize,
    },
    /// The partition's node has no signature (type 0 or unknown).
    NoSignature {
        /// The node's signature type.
        kind: u8,
    },
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandoffError::NotOnPartition => f.write_str(
                "the file system is not on a GPT or MBR partition, which qcow2root=efi names by PARTUUID",
            ),
            HandoffError::BadNode { offset } => {
                write!(f, "device path node at byte {offset} has a bad length")
            }
            HandoffError::NoSignature { kind } => write!(
                f,
                "the partition's device path node has no GPT or MBR signature (type {kind})"
            ),
        }
    }
}

/// The last node of a device path (its bytes before the end node).
fn last_node(path: &[u8]) -> Result<Option<(usize, &[u8])>, HandoffError> {
    let mut offset = 0;
    let mut last = None;
    while offset < path.len() {
        let header = path
            .get(offset..offset + HEADER_BYTES)
            .ok_or(HandoffError::BadNode { offset })?;
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let node = path
            .get(offset..offset + len)
            .filter(|_| len >= HEADER_BYTES)
            .ok_or(HandoffError::BadNode { offset })?;
        last = Some((offset, node));
        offset += len;
    }
    Ok(last)
}

/// The `PARTUUID` Linux gives the partition at the end of `path` (a file
/// system's device path without its end node).
pub fn partuuid(path: &[u8]) -> Result<String, HandoffError> {
    let Some((offset, node)) = last_node(path)? else {
        return Err(HandoffError::NotOnPartition);
    };
    if node[0] != MEDIA_TYPE || node[1] != HARD_DRIVE_SUBTYPE {
        return Err(HandoffError::NotOnPartition);
    }
    if node.len() < HARD_DRIVE_NODE_BYTES {
        return Err(HandoffError::BadNode { offset });
    }
    let number = u32::from_le_bytes([node[4], node[5], node[6], node[7]]);
    let signature = &node[24..40];
    let mut text = String::with_capacity(36);
    match node[41] {
        GUID_SIGNATURE => {
            // Mixed-endian: the first three fields little-endian.
            let a = u32::from_le_bytes([signature[0], signature[1], signature[2], signature[3]]);
            let b = u16::from_le_bytes([signature[4], signature[5]]);
            let c = u16::from_le_bytes([signature[6], signature[7]]);
            let _ = write!(text, "{a:08x}-{b:04x}-{c:04x}-");
            for byte in &signature[8..10] {
                let _ = write!(text, "{byte:02x}");
            }
            text.push('-');
            for byte in &signature[10..16] {
                let _ = write!(text, "{byte:02x}");
            }
        }
        MBR_SIGNATURE => {
            let disk = u32::from_le_bytes([signature[0], signature[1], signature[2], signature[3]]);
            // Linux: "%08x-%02x" of the disk signature and partition number.
            let _ = write!(text, "{disk:08x}-{number:02x}");
        }
        kind => return Err(HandoffError::NoSignature { kind }),
    }
    Ok(text)
}

/// The variable's value for the image at `url` (an `http://` or `https://`
/// URL): the URL itself, which cannot start like a `PARTUUID` (hex digits),
/// so the script tells the two forms apart by their first characters.
pub fn url_value(url: &str) -> Vec<u8> {
    url.as_bytes().to_vec()
}

/// The variable's value for the image at `image_path` (a `\qcow2.cfg`
/// path, `\` or `/` separated) on the file system whose device path
/// (without its end node) is `fs_path`.
pub fn value(fs_path: &[u8], image_path: &str) -> Result<Vec<u8>, HandoffError> {
    let mut text = partuuid(fs_path)?;
    text.push(':');
    for component in image_path.split(['\\', '/']).filter(|c| !c.is_empty()) {
        text.push('/');
        text.push_str(component);
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCI_NODE: [u8; 6] = [0x01, 0x01, 6, 0, 0x00, 0x02];

    fn hard_drive(number: u32, signature: [u8; 16], mbr_type: u8, kind: u8) -> Vec<u8> {
        let mut node = alloc::vec![MEDIA_TYPE, HARD_DRIVE_SUBTYPE, 42, 0];
        node.extend_from_slice(&number.to_le_bytes());
        node.extend_from_slice(&2048u64.to_le_bytes());
        node.extend_from_slice(&8192u64.to_le_bytes());
        node.extend_from_slice(&signature);
        node.extend_from_slice(&[mbr_type, kind]);
        node
    }

    /// The GUID `5143c032-0000-4b00-8000-0000000000e1` as a GPT entry stores it.
    const GPT_GUID: [u8; 16] = [
        0x32, 0xc0, 0x43, 0x51, 0x00, 0x00, 0x00, 0x4b, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xe1,
    ];

    #[test]
    fn a_gpt_partition_is_named_by_its_unique_guid_as_linux_prints_it() {
        let mut path = PCI_NODE.to_vec();
        path.extend(hard_drive(1, GPT_GUID, 2, GUID_SIGNATURE));
        assert_eq!(
            partuuid(&path).unwrap(),
            "5143c032-0000-4b00-8000-0000000000e1"
        );
        assert_eq!(
            value(&path, "\\images\\debian.qcow2").unwrap(),
            b"5143c032-0000-4b00-8000-0000000000e1:/images/debian.qcow2"
        );
    }

    #[test]
    fn an_mbr_partition_is_named_by_disk_signature_and_number() {
        let mut signature = [0; 16];
        signature[..4].copy_from_slice(&0x0a1b_2c3du32.to_le_bytes());
        let mut path = PCI_NODE.to_vec();
        path.extend(hard_drive(2, signature, 1, MBR_SIGNATURE));
        assert_eq!(partuuid(&path).unwrap(), "0a1b2c3d-02");
        assert_eq!(
            value(&path, "/top.qcow2").unwrap(),
            b"0a1b2c3d-02:/top.qcow2"
        );
    }

    #[test]
    fn a_file_system_not_on_a_partition_has_no_partuuid() {
        assert_eq!(partuuid(&PCI_NODE), Err(HandoffError::NotOnPartition));
        assert_eq!(partuuid(&[]), Err(HandoffError::NotOnPartition));
        // A partition further up, then another node (a file system inside
        // an image on that partition): the last node decides.
        let mut path = hard_drive(1, GPT_GUID, 2, GUID_SIGNATURE);
        path.extend_from_slice(&PCI_NODE);
        assert_eq!(partuuid(&path), Err(HandoffError::NotOnPartition));
    }

    #[test]
    fn a_partition_node_without_a_signature_is_refused_by_its_type() {
        let mut path = PCI_NODE.to_vec();
        path.extend(hard_drive(1, [0; 16], 1, 0));
        assert_eq!(partuuid(&path), Err(HandoffError::NoSignature { kind: 0 }));
    }

    #[test]
    fn cut_or_lying_node_lengths_are_errors_not_panics() {
        let mut path = PCI_NODE.to_vec();
        path.extend(hard_drive(1, GPT_GUID, 2, GUID_SIGNATURE));
        for cut in 0..path.len() {
            let _ = partuuid(&path[..cut]);
        }
        // A hard-drive node claiming fewer bytes than its fields.
        let mut short = PCI_NODE.to_vec();
        short.extend_from_slice(&[MEDIA_TYPE, HARD_DRIVE_SUBTYPE, 8, 0, 1, 0, 0, 0]);
        assert_eq!(partuuid(&short), Err(HandoffError::BadNode { offset: 6 }));
        let zero = [1, 1, 0, 0];
        assert_eq!(partuuid(&zero), Err(HandoffError::BadNode { offset: 0 }));
    }

    #[test]
    fn the_guid_text_is_the_vendor_guid() {
        let a = u32::from_str_radix(&VARIABLE_GUID_TEXT[..8], 16).unwrap();
        assert_eq!(&VARIABLE_GUID[..4], &a.to_le_bytes());
        assert_eq!(VARIABLE_GUID[15], 0xa2);
        assert_eq!(ATTRIBUTES & 1, 0, "must not be non-volatile");
    }
}
