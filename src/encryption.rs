//! Encrypted images in the read path (feature `luks`): unlocking at open,
//! and decrypting data runs in place as they are read.
//!
//! QEMU's rules (`docs/encryption.md`): only normal data clusters are
//! encrypted (compressed clusters are stored in the clear, zero and
//! unallocated ones hold nothing); 512-byte sectors, numbered by their
//! *host* offset with LUKS (in the image file, or in the external data file
//! when there is one) and by their *guest* offset with legacy AES
//! (`crypt_physical_offset` in `qcow2_do_open`). Bytes past the end of the
//! file are zeros *before* decryption, as QEMU decrypts what it reads.
//!
//! Memory: the cipher lives inline in the image (a few AES key schedules,
//! zeroized on drop); a read that starts or ends inside a sector decrypts
//! that sector in one 512-byte stack buffer, in a function of its own so
//! that the buffer is not in the read path's frame, which a backing chain
//! stacks once per layer. Nothing is allocated.

use crate::block::{read_located, BlockRead};
use crate::crypto::{
    check_master_key, legacy_aes_cipher, unlock, CryptoError, KeyArea, LuksHeader, MasterKey,
    SectorCipher, UnlockLimits, SECTOR_BYTES,
};
use crate::error::{Error, HeaderError, Storage};
use crate::header::Header;

/// How an image is encrypted, as [`ImageBuilder::encryption`](crate::ImageBuilder::encryption) reports it.
#[derive(Debug, Clone, Copy)]
pub enum Encryption<'h> {
    /// crypt_method 1: legacy AES-128-CBC keyed by the passphrase itself
    /// (no header, no check: a wrong passphrase reads garbage).
    Aes,
    /// crypt_method 2: LUKS1, with its header (checked at open).
    Luks(&'h LuksHeader),
}

impl<'h> Encryption<'h> {
    /// The encryption of the image with `header`, `None` if it is not encrypted.
    pub fn of(header: &'h Header) -> Option<Self> {
        match (header.crypt_method(), header.luks_header()) {
            (1, _) => Some(Encryption::Aes),
            (2, Some(luks)) => Some(Encryption::Luks(luks)),
            _ => None,
        }
    }
}

/// An [`ImageCipher`] as builders and images hold it: on the heap when
/// there is an allocator. Its key schedules are kilobytes (twofish in XTS
/// mode holds two of 1,184 bytes), and a builder or image that held them inline would
/// move them on the stack with every by-value step, unencrypted images too
/// (`Option` reserves the room): a chain walk does several per layer, which
/// took the UEFI driver's `Start` from 38 to 66 KiB of stack. Allocated
/// once, fallibly: a failure is [`Error::OutOfMemory`].
#[cfg(feature = "alloc")]
pub(crate) struct HeldCipher(alloc::boxed::Box<[ImageCipher]>);

/// An [`ImageCipher`] as builders and images hold it: inline without an
/// allocator.
#[cfg(not(feature = "alloc"))]
pub(crate) struct HeldCipher(ImageCipher);

impl HeldCipher {
    /// Holds `cipher` (see the type).
    fn hold<E>(cipher: ImageCipher) -> Result<Self, Error<E>> {
        #[cfg(feature = "alloc")]
        {
            // A one-element slice: `Vec` can reserve fallibly, `Box::new` cannot.
            let mut one = alloc::vec::Vec::new();
            one.try_reserve_exact(1).map_err(|_| Error::OutOfMemory {
                bytes: core::mem::size_of::<ImageCipher>(),
            })?;
            one.push(cipher);
            Ok(Self(one.into_boxed_slice()))
        }
        #[cfg(not(feature = "alloc"))]
        Ok(Self(cipher))
    }
}

impl core::ops::Deref for HeldCipher {
    type Target = ImageCipher;

    fn deref(&self) -> &ImageCipher {
        #[cfg(feature = "alloc")]
        return &self.0[0];
        #[cfg(not(feature = "alloc"))]
        &self.0
    }
}

/// An unlocked image's cipher and the rule that numbers its sectors.
pub(crate) struct ImageCipher {
    cipher: SectorCipher,
    /// LUKS numbers sectors by host offset, legacy AES by guest offset.
    by_host_offset: bool,
}

impl ImageCipher {
    /// Unlocks the image in `storage` with `passphrase` (LUKS key slots, or
    /// the legacy AES key); `None` for an unencrypted image.
    pub(crate) fn from_passphrase<R: BlockRead>(
        header: &Header,
        storage: &R,
        passphrase: &[u8],
        limits: &UnlockLimits,
    ) -> Result<Option<HeldCipher>, Error<R::Error>> {
        let cipher = match Encryption::of(header) {
            None => return Ok(None),
            Some(Encryption::Aes) => legacy_aes_cipher(passphrase),
            Some(Encryption::Luks(luks)) => {
                let key = luks_master_key(header, luks, storage, passphrase, limits)?;
                luks_cipher(luks, key.as_bytes())?
            }
        };
        HeldCipher::hold(Self::new(header, cipher)).map(Some)
    }

    /// The cipher of the image keyed with `key`: the LUKS master key
    /// (checked against the header's digest) or the 16-byte legacy AES key;
    /// `None` for an unencrypted image.
    pub(crate) fn from_master_key<E>(
        header: &Header,
        key: &[u8],
        limits: &UnlockLimits,
    ) -> Result<Option<HeldCipher>, Error<E>> {
        let cipher = match Encryption::of(header) {
            None => return Ok(None),
            Some(Encryption::Aes) => {
                SectorCipher::new(&crate::crypto::legacy::legacy_spec(), key).map_err(widen)?
            }
            Some(Encryption::Luks(luks)) => {
                let key = check_master_key(luks, key, limits).map_err(widen)?;
                luks_cipher(luks, key.as_bytes())?
            }
        };
        HeldCipher::hold(Self::new(header, cipher)).map(Some)
    }

    fn new(header: &Header, cipher: SectorCipher) -> Self {
        Self {
            cipher,
            by_host_offset: matches!(Encryption::of(header), Some(Encryption::Luks(_))),
        }
    }

    /// Fills `part` with the decrypted data at `host_offset` of `storage`
    /// (`size` bytes long, zeros past its end), which the guest sees at
    /// `guest_offset`. The sector-aligned middle is read straight into
    /// `part` and decrypted there: one storage read, plus one for a partial
    /// sector at each end.
    pub(crate) fn read<R: BlockRead + ?Sized>(
        &self,
        storage: &R,
        which: Storage,
        size: u64,
        guest_offset: u64,
        host_offset: u64,
        part: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        const SECTOR: u64 = SECTOR_BYTES as u64;
        // Guest and host offsets agree modulo the cluster size, a multiple
        // of the sector: either counts sectors at the same boundaries.
        let numbered_from = if self.by_host_offset {
            host_offset
        } else {
            guest_offset
        };
        let mut done = 0;
        while done < part.len() {
            let at = host_offset + done as u64;
            let number = (numbered_from + done as u64) / SECTOR;
            let skip = (at % SECTOR) as usize;
            let left = part.len() - done;
            if skip == 0 && left >= SECTOR_BYTES {
                let whole = &mut part[done..done + left / SECTOR_BYTES * SECTOR_BYTES];
                read_located(storage, which, size, at, whole)?;
                self.cipher.decrypt_sectors(number, whole).map_err(widen)?;
                done += whole.len();
            } else {
                let take = (SECTOR_BYTES - skip).min(left);
                let piece = &mut part[done..done + take];
                self.read_partial_sector(storage, which, size, at, number, piece)?;
                done += take;
            }
        }
        Ok(())
    }

    /// Fills `piece` (inside one sector) with the decrypted data at
    /// `host_offset`, the sector being number `number`.
    ///
    /// Apart from [`read`](Self::read), and never inlined into it: its
    /// 512-byte buffer would otherwise sit in the frame of every
    /// `Image::read_at`, which a read falling through a backing chain
    /// stacks once per layer (measured in the firmware: 848 bytes of stack
    /// per layer with the buffer inlined).
    #[inline(never)]
    #[cold]
    fn read_partial_sector<R: BlockRead + ?Sized>(
        &self,
        storage: &R,
        which: Storage,
        size: u64,
        host_offset: u64,
        number: u64,
        piece: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        let skip = (host_offset % SECTOR_BYTES as u64) as usize;
        let mut sector = [0u8; SECTOR_BYTES];
        read_located(storage, which, size, host_offset - skip as u64, &mut sector)?;
        self.cipher
            .decrypt_sectors(number, &mut sector)
            .map_err(widen)?;
        piece.copy_from_slice(&sector[skip..skip + piece.len()]);
        Ok(())
    }
}

/// The master key of the LUKS image with `header` in `storage`, from its
/// key slots (in the full disk encryption header extension's area).
pub(crate) fn luks_master_key<R: BlockRead>(
    header: &Header,
    luks: &LuksHeader,
    storage: &R,
    passphrase: &[u8],
    limits: &UnlockLimits,
) -> Result<MasterKey, Error<R::Error>> {
    let (offset, len) = header
        .crypto_area()
        .ok_or(HeaderError::MissingCryptoHeader)?;
    let area = KeyArea::new(storage, offset, len);
    unlock(luks, &area, passphrase, limits).map_err(Error::Crypto)
}

fn luks_cipher<E>(luks: &LuksHeader, key: &[u8]) -> Result<SectorCipher, Error<E>> {
    SectorCipher::new(luks.spec(), key).map_err(widen)
}

fn widen<E>(error: CryptoError) -> Error<E> {
    Error::Crypto(CryptoError::widen(error))
}
