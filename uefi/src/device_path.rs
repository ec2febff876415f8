//! The child disk's device path: the parent's path plus a vendor node.
//!
//! A device path is a list of nodes, each with a 4-byte header (type,
//! subtype, 16-bit little-endian length including the header), ended by
//! the end-of-entire-path node (type 0x7f, subtype 0xff). The parent's
//! path comes from another driver, so its walk is bounded and every length
//! is checked before the driver copies it.

use alloc::vec::Vec;
use core::fmt;

/// The project's GUID, in the vendor hardware node of every child disk
/// (`VenHw(2d6c1e7a-8b4f-4c3e-9a51-7163f2b0c0a2, index)` in the shell).
pub const VENDOR_GUID: [u8; 16] = guid_bytes(
    0x2d6c_1e7a,
    0x8b4f,
    0x4c3e,
    [0x9a, 0x51, 0x71, 0x63, 0xf2, 0xb0, 0xc0, 0xa2],
);

/// Longest parent path the driver accepts.
pub const MAX_PATH_BYTES: usize = 4096;

const HEADER_BYTES: usize = 4;
const END_TYPE: u8 = 0x7f;
const END_ENTIRE_SUBTYPE: u8 = 0xff;
const HARDWARE_TYPE: u8 = 0x01;
const VENDOR_SUBTYPE: u8 = 0x04;
/// Header, GUID, and a 32-bit index telling children of one parent apart.
const VENDOR_NODE_BYTES: usize = HEADER_BYTES + 16 + 4;

/// The GUID's bytes in the UEFI (mixed-endian) layout.
const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// A parent device path the driver will not extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePathError {
    /// A node's length is below the header size.
    BadNodeLength {
        /// The node's offset in the path.
        offset: usize,
    },
    /// No end node within [`MAX_PATH_BYTES`].
    TooLong,
}

impl fmt::Display for DevicePathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DevicePathError::BadNodeLength { offset } => {
                write!(f, "device path node at byte {offset} has a length below 4")
            }
            DevicePathError::TooLong => {
                write!(f, "device path has no end node in {MAX_PATH_BYTES} bytes")
            }
        }
    }
}

/// The bytes of a device path before its end node, found by reading node
/// headers with `header(offset)`; no byte past the end node is asked for.
pub fn length_before_end(
    mut header: impl FnMut(usize) -> [u8; 4],
) -> Result<usize, DevicePathError> {
    let mut offset = 0;
    while offset + HEADER_BYTES <= MAX_PATH_BYTES {
        let [node_type, subtype, len_low, len_high] = header(offset);
        if node_type == END_TYPE && subtype == END_ENTIRE_SUBTYPE {
            return Ok(offset);
        }
        let len = usize::from(u16::from_le_bytes([len_low, len_high]));
        if len < HEADER_BYTES {
            return Err(DevicePathError::BadNodeLength { offset });
        }
        offset += len;
    }
    Err(DevicePathError::TooLong)
}

/// The child's path: `parent` (its nodes without the end node), a vendor
/// hardware node with [`VENDOR_GUID`] and `index`, and the end node.
pub fn child_path(parent: &[u8], index: u32) -> Vec<u8> {
    let mut path = Vec::with_capacity(parent.len() + VENDOR_NODE_BYTES + HEADER_BYTES);
    path.extend_from_slice(parent);
    path.extend_from_slice(&[HARDWARE_TYPE, VENDOR_SUBTYPE]);
    path.extend_from_slice(&(VENDOR_NODE_BYTES as u16).to_le_bytes());
    path.extend_from_slice(&VENDOR_GUID);
    path.extend_from_slice(&index.to_le_bytes());
    path.extend_from_slice(&[END_TYPE, END_ENTIRE_SUBTYPE, 4, 0]);
    path
}

/// Whether a path (before its end node) contains a node of this driver:
/// the disk is one of its own children, and binding to it again would nest
/// images without limit.
pub fn is_own_child(path: &[u8]) -> bool {
    let mut offset = 0;
    while let Some(node) = path.get(offset..offset + HEADER_BYTES) {
        let len = usize::from(u16::from_le_bytes([node[2], node[3]]));
        if len < HEADER_BYTES {
            return false;
        }
        if node[0] == HARDWARE_TYPE
            && node[1] == VENDOR_SUBTYPE
            && path.get(offset + HEADER_BYTES..offset + HEADER_BYTES + 16) == Some(&VENDOR_GUID[..])
        {
            return true;
        }
        offset += len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCI_NODE: [u8; 6] = [0x01, 0x01, 6, 0, 0x00, 0x04];
    const END: [u8; 4] = [0x7f, 0xff, 4, 0];

    fn reader(bytes: &[u8]) -> impl FnMut(usize) -> [u8; 4] + '_ {
        move |offset| bytes[offset..offset + 4].try_into().unwrap()
    }

    #[test]
    fn walks_to_the_end_node() {
        let mut path = PCI_NODE.to_vec();
        path.extend_from_slice(&END);
        assert_eq!(length_before_end(reader(&path)), Ok(6));
        assert_eq!(length_before_end(reader(&END)), Ok(0));
    }

    #[test]
    fn refuses_paths_it_cannot_walk() {
        let path = [0x01, 0x01, 2, 0, 0x7f, 0xff, 4, 0];
        assert_eq!(
            length_before_end(reader(&path)),
            Err(DevicePathError::BadNodeLength { offset: 0 })
        );
        // A path of nodes that never ends is cut at the limit.
        let endless = |_| [0x01, 0x01, 4, 0];
        assert_eq!(length_before_end(endless), Err(DevicePathError::TooLong));
    }

    #[test]
    fn the_child_path_ends_with_the_vendor_node() {
        let child = child_path(&PCI_NODE, 3);
        assert_eq!(child.len(), 6 + 24 + 4);
        assert_eq!(&child[..6], &PCI_NODE);
        assert_eq!(&child[6..10], &[1, 4, 24, 0]);
        assert_eq!(&child[10..26], &VENDOR_GUID);
        assert_eq!(&child[26..30], &3u32.to_le_bytes());
        assert_eq!(&child[30..], &END);
        assert_eq!(length_before_end(reader(&child)), Ok(30));
        assert!(is_own_child(&child[..30]));
        assert!(!is_own_child(&PCI_NODE));
    }
}
