//! One passphrase for every encrypted layer of a chain (feature `luks`).
//!
//! One [`Secret`] is offered to every encrypted layer, as a user with one
//! disk password expects (QEMU asks for a `key-secret` per layer, usually
//! the same one). Key material is never copied by reallocation: the
//! passphrase is allocated at its exact length and the list of unlocked
//! master keys at its fixed capacity, and both are zeroized on drop.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use spin::Mutex;

use crate::block::BlockRead;
use crate::crypto::{LuksHeader, MasterKey, UnlockLimits};
use crate::encryption::Encryption;
use crate::error::Error;
use crate::image::ImageBuilder;

/// Master keys a secret remembers; further layers unlock from their slots
/// each time. The list is allocated at this capacity and never grows, so
/// no copy of a key is left behind by a reallocation.
pub const MAX_REMEMBERED_KEYS: usize = 32;

/// A passphrase for the encrypted layers of a chain, with the work its
/// unlocking may do. The bytes are zeroized when dropped and never printed.
///
/// A secret remembers the LUKS master keys it unlocked (shared by its
/// clones, zeroized with the last one): a tool opening the same chain again
/// (one per thread) keys those layers with the master key, which costs the
/// header's master key iterations (QEMU calibrates them to an eighth of a
/// slot's) instead of the slots' PBKDF2.
#[derive(Clone)]
pub struct Secret {
    /// Allocated at its exact length (`to_vec`), so zeroizing the slice
    /// clears every copy this value made.
    passphrase: Vec<u8>,
    limits: UnlockLimits,
    unlocked: Arc<Mutex<Vec<UnlockedKey>>>,
}

/// A master key this secret unlocked, with the LUKS header it came from:
/// only an identical header (a layer opened again, or a copy of it) is
/// keyed with it, and the header's digest still checks it. `MasterKey`
/// zeroizes itself on drop.
struct UnlockedKey {
    header: LuksHeader,
    key: MasterKey,
}

impl Secret {
    /// The passphrase `bytes` (used up to the first NUL, as QEMU's secrets
    /// are C strings), each layer's unlocking bounded by `limits`.
    pub fn passphrase(bytes: &[u8], limits: UnlockLimits) -> Self {
        Self {
            passphrase: bytes.to_vec(),
            limits,
            unlocked: Arc::new(Mutex::new(Vec::with_capacity(MAX_REMEMBERED_KEYS))),
        }
    }

    /// The work limit of each layer's unlocking.
    pub fn limits(&self) -> &UnlockLimits {
        &self.limits
    }

    /// Unlocks the image of `builder` if it is encrypted (an unencrypted
    /// one is returned as it is).
    pub fn unlock<R: BlockRead, B>(
        &self,
        builder: ImageBuilder<R, B>,
    ) -> Result<ImageBuilder<R, B>, Error<R::Error>> {
        let luks = match builder.encryption() {
            None => return Ok(builder),
            // Legacy AES: the passphrase is the key, nothing to remember.
            Some(Encryption::Aes) => return builder.passphrase(&self.passphrase, &self.limits),
            Some(Encryption::Luks(luks)) => luks,
        };
        let header = luks.clone();
        let key = match self.known_key(&header) {
            Some(key) => key,
            None => crate::encryption::luks_master_key(
                builder.header(),
                luks,
                builder.storage(),
                &self.passphrase,
                &self.limits,
            )?,
        };
        let builder = builder.master_key(key.as_bytes(), &self.limits)?;
        self.remember(header, key);
        Ok(builder)
    }

    /// The master key this secret unlocked for `header`, if any.
    fn known_key(&self, header: &LuksHeader) -> Option<MasterKey> {
        let unlocked = self.unlocked.lock();
        unlocked
            .iter()
            .find(|u| &u.header == header)
            .map(|u| u.key.clone())
    }

    /// Keeps `key` for `header`, while the list has room: never grown.
    fn remember(&self, header: LuksHeader, key: MasterKey) {
        let mut unlocked = self.unlocked.lock();
        if unlocked.len() < unlocked.capacity() && !unlocked.iter().any(|u| u.header == header) {
            unlocked.push(UnlockedKey { header, key });
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.passphrase.as_mut_slice());
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("passphrase", &"(hidden)")
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::luks::tests::qemu_like_header;

    #[test]
    fn remembered_keys_are_never_moved_by_a_growing_list() {
        let secret = Secret::passphrase(b"pass", UnlockLimits::default());
        let (start, capacity) = {
            let unlocked = secret.unlocked.lock();
            (unlocked.as_ptr(), unlocked.capacity())
        };
        assert!(capacity >= MAX_REMEMBERED_KEYS);
        for index in 0..MAX_REMEMBERED_KEYS + 3 {
            let mut bytes = qemu_like_header();
            bytes[168..176].copy_from_slice(alloc::format!("{index:08}").as_bytes());
            let header = LuksHeader::parse(&bytes).unwrap();
            let key = MasterKey::new(&[index as u8; 64]).unwrap();
            secret.remember(header.clone(), key.clone());
            secret.remember(header, key);
        }
        let unlocked = secret.unlocked.lock();
        assert_eq!(unlocked.len(), MAX_REMEMBERED_KEYS);
        assert_eq!((unlocked.as_ptr(), unlocked.capacity()), (start, capacity));
        assert_eq!(unlocked[3].key.as_bytes(), [3u8; 64]);
    }
}
