//! An opened image: the builder that opens it, and the read path.

use core::fmt;

use crate::block::{read_located, read_zero_padded, BlockRead};
use crate::codec::{codec_enabled, codec_feature};
use crate::config::{Config, MemoryPlan};
#[cfg(feature = "luks")]
use crate::crypto::UnlockLimits;
#[cfg(feature = "luks")]
use crate::encryption::{Encryption, HeldCipher, ImageCipher};
use crate::error::{Error, HeaderError, Storage, TableKind, Unsupported};
use crate::header::{check_table_offset, Header};
use crate::lookup::{Extent, Geometry, Memory, State};
use crate::snapshot::Snapshot;
use crate::table::{l1_table_fits, Mapping, L1_ENTRY_BYTES};

/// The lock around an image's caches. With `std`, a thread waiting for it
/// yields its time slice instead of spinning: with more readers than cores,
/// spinning waiters take the CPU from the thread that holds the lock
/// (`benches/threads.sh`, README).
#[cfg(feature = "std")]
type Mutex<T> = spin::mutex::Mutex<T, spin::relax::Yield>;
#[cfg(not(feature = "std"))]
use spin::Mutex;

/// The bound behind [`Image::max_storage_reads`]: storage reads per unit touched.
pub const READS_PER_UNIT: u64 = 5;

/// The backing of an image that has none: reads as zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBacking;

impl BlockRead for NoBacking {
    type Error = core::convert::Infallible;

    fn read_at(&self, _offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        buf.fill(0);
        Ok(())
    }

    fn size(&self) -> Result<u64, Self::Error> {
        Ok(0)
    }
}

/// A raw image used as a backing file: its bytes are the virtual disk.
///
/// Wrapping gives its errors the image's error type, naming the raw backing
/// file as the storage that failed.
#[derive(Debug)]
pub struct Raw<R>(pub R);

impl<R: BlockRead> BlockRead for Raw<R> {
    type Error = Error<R::Error>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read_at(offset, buf).map_err(|source| Error::Io {
            source,
            storage: Storage::RawBacking,
            offset,
            len: buf.len() as u64,
        })
    }

    fn size(&self) -> Result<u64, Self::Error> {
        self.0.size().map_err(|source| Error::Io {
            source,
            storage: Storage::RawBacking,
            offset: 0,
            len: 0,
        })
    }
}

/// Collects what an image needs besides its own storage, then opens it.
///
/// The header is read and validated by [`Image::builder`]; look at it
/// ([`ImageBuilder::header`]) to decide what backing image and data file to
/// supply: the crate never opens files by itself.
pub struct ImageBuilder<R, B = NoBacking> {
    storage: R,
    header: Header,
    backing: Option<B>,
    ignore_backing: bool,
    data_file: Option<R>,
    snapshot: Option<(u64, u64)>,
    #[cfg(feature = "luks")]
    cipher: Option<HeldCipher>,
}

impl<R: BlockRead, B> fmt::Debug for ImageBuilder<R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<R: BlockRead, B> ImageBuilder<R, B> {
    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The image's storage, for listing snapshots or reading extensions before opening.
    pub fn storage(&self) -> &R {
        &self.storage
    }

    /// Supplies the backing image: a [`Raw`] store, another opened [`Image`], or
    /// anything else whose errors convert into this image's.
    pub fn backing<B2>(self, backing: B2) -> ImageBuilder<R, B2> {
        ImageBuilder {
            storage: self.storage,
            header: self.header,
            backing: Some(backing),
            ignore_backing: false,
            data_file: self.data_file,
            snapshot: self.snapshot,
            #[cfg(feature = "luks")]
            cipher: self.cipher,
        }
    }

    /// Reads unallocated clusters as zeros even though the image names a
    /// backing file: the image's own layer alone.
    pub fn ignore_backing(mut self) -> Self {
        self.ignore_backing = true;
        self
    }

    /// How the image is encrypted, `None` if it is not. An encrypted image
    /// opens only after [`passphrase`](Self::passphrase) or
    /// [`master_key`](Self::master_key).
    #[cfg(feature = "luks")]
    pub fn encryption(&self) -> Option<Encryption<'_>> {
        Encryption::of(&self.header)
    }

    /// Unlocks an encrypted image with `passphrase` (bytes up to the first
    /// NUL, as QEMU's secrets are C strings): LUKS key slots are tried in
    /// order, doing at most `limits` of PBKDF2 work; a legacy AES image
    /// takes the passphrase as its key (it cannot tell a wrong one).
    /// For an unencrypted image this does nothing, so that one passphrase
    /// can serve a whole backing chain.
    ///
    /// The key material of LUKS slots is read from the image file here.
    #[cfg(feature = "luks")]
    pub fn passphrase(
        mut self,
        passphrase: &[u8],
        limits: &UnlockLimits,
    ) -> Result<Self, Error<R::Error>> {
        self.cipher =
            ImageCipher::from_passphrase(&self.header, &self.storage, passphrase, limits)?;
        Ok(self)
    }

    /// Keys an encrypted image with its master key: for LUKS the key the
    /// slots hold (checked against the header's digest, which costs the
    /// header's master key iterations, bounded by `limits`), for legacy AES
    /// the 16-byte key. For an unencrypted image this does nothing.
    #[cfg(feature = "luks")]
    pub fn master_key(
        mut self,
        key: &[u8],
        limits: &UnlockLimits,
    ) -> Result<Self, Error<R::Error>> {
        self.cipher = ImageCipher::from_master_key(&self.header, key, limits)?;
        Ok(self)
    }

    /// Supplies the external data file the header names.
    pub fn data_file(mut self, data_file: R) -> Self {
        self.data_file = Some(data_file);
        self
    }

    /// Reads the disk as it was when `snapshot` was taken. The virtual size
    /// stays the image's current one, as with `qemu-img convert -l`.
    pub fn snapshot(mut self, snapshot: &Snapshot) -> Result<Self, Error<R::Error>> {
        // The same rules as for the active L1 table (QEMU's
        // `qcow2_validate_table` in `qcow2_snapshot_load_tmp`).
        let entries = u64::from(snapshot.l1_entries);
        let offset = snapshot.l1_table_offset;
        if !l1_table_fits(snapshot.l1_entries) {
            return Err(HeaderError::L1TooLarge {
                entries: snapshot.l1_entries,
            }
            .into());
        }
        check_table_offset(
            TableKind::L1,
            offset,
            entries,
            L1_ENTRY_BYTES,
            self.header.cluster_size(),
        )?;
        self.snapshot = Some((offset, entries));
        Ok(self)
    }

    /// Bytes of memory [`open`](Self::open) needs with `config`.
    pub fn memory_bytes(&self, config: &Config) -> Result<usize, Error<R::Error>> {
        let plan = MemoryPlan::new(config, &self.header)?;
        Ok(plan.total().unwrap_or(usize::MAX))
    }

    /// Bytes the image's decoder allocates from the heap at its first
    /// compressed cluster and keeps, at most ([`decoder_memory_bytes`] of
    /// its compression type and cluster size): not part of the memory given
    /// to [`open`](Self::open); 0 for deflate images (libdeflate's tables with
    /// `deflate-c-nostd`).
    ///
    /// [`decoder_memory_bytes`]: crate::decoder_memory_bytes
    pub fn decoder_bytes(&self) -> usize {
        let cluster_size = usize::try_from(self.header.cluster_size()).unwrap_or(usize::MAX);
        crate::codec::decoder_memory_bytes(self.header.compression_type(), cluster_size)
    }

    /// Opens the image in `memory`, which must hold [`memory_bytes`](Self::memory_bytes).
    pub fn open<'m>(
        self,
        memory: &'m mut [u8],
        config: &Config,
    ) -> Result<Image<'m, R, B>, Error<R::Error>>
    where
        B: BlockRead,
        B::Error: Into<Error<R::Error>>,
    {
        let needed = self.memory_bytes(config)?;
        let given = memory.len();
        let memory = memory
            .get_mut(..needed)
            .ok_or(Error::MemoryTooSmall { needed, given })?;
        self.finish(Memory::Borrowed(memory), config)
    }

    /// Opens the image in memory allocated once, here.
    #[cfg(feature = "alloc")]
    pub fn open_alloc(self, config: &Config) -> Result<Image<'static, R, B>, Error<R::Error>>
    where
        B: BlockRead,
        B::Error: Into<Error<R::Error>>,
    {
        let needed = self.memory_bytes(config)?;
        let memory = alloc::vec![0u8; needed].into_boxed_slice();
        self.finish(Memory::Owned(memory), config)
    }

    /// Opens the image in memory allocated once, here, like
    /// [`open_alloc`](Self::open_alloc), but a failed allocation is
    /// [`Error::OutOfMemory`] instead of the allocator's panic: for
    /// firmware, whose allocators stop the machine when they run out.
    #[cfg(feature = "alloc")]
    pub fn try_open_alloc(self, config: &Config) -> Result<Image<'static, R, B>, Error<R::Error>>
    where
        B: BlockRead,
        B::Error: Into<Error<R::Error>>,
    {
        let needed = self.memory_bytes(config)?;
        let mut memory = alloc::vec::Vec::new();
        memory
            .try_reserve_exact(needed)
            .map_err(|_| Error::OutOfMemory { bytes: needed })?;
        memory.resize(needed, 0u8);
        self.finish(Memory::Owned(memory.into_boxed_slice()), config)
    }

    fn finish<'m>(
        self,
        memory: Memory<'m>,
        config: &Config,
    ) -> Result<Image<'m, R, B>, Error<R::Error>>
    where
        B: BlockRead,
        B::Error: Into<Error<R::Error>>,
    {
        let header = self.header;
        let codec = header.compression_type();
        if !codec_enabled(codec) && codec != crate::header::CompressionType::Deflate {
            return Err(Unsupported::CodecDisabled {
                codec: codec.name(),
                feature: codec_feature(codec),
            }
            .into());
        }
        #[cfg(feature = "luks")]
        let keyed = self.cipher.is_some();
        #[cfg(not(feature = "luks"))]
        let keyed = false;
        // Never hand out ciphertext as data.
        if header.is_encrypted() && !keyed {
            return Err(Unsupported::NeedsKey {
                method: header.crypt_method(),
            }
            .into());
        }
        if header.backing_file().is_some() && self.backing.is_none() && !self.ignore_backing {
            return Err(Unsupported::MissingBacking.into());
        }
        // A data file given by the caller stands in for a missing name.
        if self.data_file.is_none() {
            header.check_data_file_bits()?;
        }
        if header.has_data_file() && self.data_file.is_none() {
            return Err(Unsupported::MissingDataFile.into());
        }
        let backing = if self.ignore_backing {
            None
        } else {
            self.backing
        };
        let backing_size = match &backing {
            Some(backing) => backing.size().map_err(Into::into)?,
            None => 0,
        };
        let data_file_size = match &self.data_file {
            Some(data_file) => data_file.size().map_err(|source| Error::Io {
                source,
                storage: Storage::DataFile,
                offset: 0,
                len: 0,
            })?,
            None => 0,
        };
        let (l1_offset, l1_entries) = self
            .snapshot
            .unwrap_or((header.l1_table_offset(), u64::from(header.l1_entries())));
        let geometry = Geometry {
            layout: header.layout(),
            l1_offset,
            l1_entries,
            file_size: header.file_size(),
            compression: codec,
        };
        let plan = MemoryPlan::new(config, &header)?;
        Ok(Image {
            storage: self.storage,
            data_file: self.data_file,
            data_file_size,
            backing,
            backing_size,
            header,
            geometry,
            state: Mutex::new(State::new(memory, plan)),
            #[cfg(feature = "luks")]
            cipher: self.cipher,
        })
    }
}

/// An opened QCOW2 image, read through `&self`.
///
/// `R` is the image file's storage (and the external data file's, if any);
/// `B` is the backing image. The memory `'m` is the caller's, fixed at open.
pub struct Image<'m, R, B = NoBacking> {
    storage: R,
    data_file: Option<R>,
    data_file_size: u64,
    backing: Option<B>,
    backing_size: u64,
    header: Header,
    geometry: Geometry,
    state: Mutex<State<'m>>,
    #[cfg(feature = "luks")]
    cipher: Option<HeldCipher>,
}

impl<R: BlockRead, B> fmt::Debug for Image<'_, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<R: BlockRead> Image<'static, R, NoBacking> {
    /// Reads and validates the header of the image in `storage`.
    pub fn builder(storage: R) -> Result<ImageBuilder<R, NoBacking>, Error<R::Error>> {
        let header = Header::read(&storage)?;
        // QEMU walks the whole snapshot table at open and refuses the image
        // if an entry is invalid, even when no snapshot is used.
        crate::snapshot::validate_table(&storage, &header)?;
        Ok(ImageBuilder {
            storage,
            header,
            backing: None,
            ignore_backing: false,
            data_file: None,
            snapshot: None,
            #[cfg(feature = "luks")]
            cipher: None,
        })
    }
}

impl<R, B> Image<'_, R, B>
where
    R: BlockRead,
    B: BlockRead,
    B::Error: Into<Error<R::Error>>,
{
    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The virtual disk size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size()
    }

    /// The image file's storage.
    pub fn storage(&self) -> &R {
        &self.storage
    }

    /// The backing image, if one was supplied.
    pub fn backing(&self) -> Option<&B> {
        self.backing.as_ref()
    }

    /// Bytes of one unit of allocation: the cluster, or with extended L2
    /// entries the subcluster (1/32 of a cluster).
    pub fn unit_size(&self) -> u64 {
        1 << self.geometry.layout.unit_bits()
    }

    /// The most reads of this image's own storage (image file and data file
    /// together) that [`read_at`](Self::read_at) of `len` bytes at `offset`
    /// can make, whatever the image holds and whatever is cached.
    ///
    /// Each unit touched is looked up at most twice (once more when it ends a
    /// run), each lookup reads at most an L1 and an L2 table slice, and each
    /// run costs one data or compressed-input read: at most
    /// [`READS_PER_UNIT`] per unit. Reads that fall through to the backing
    /// image are that image's, bounded the same way. An encrypted image
    /// reads a partial first or last 512-byte sector on its own, so it
    /// makes up to 2 more reads per call.
    pub fn max_storage_reads(&self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let bits = self.geometry.layout.unit_bits();
        let last = offset.saturating_add(len - 1) >> bits;
        READS_PER_UNIT * (last - (offset >> bits) + 1) + self.partial_sector_reads()
    }

    #[cfg(feature = "luks")]
    fn partial_sector_reads(&self) -> u64 {
        if self.cipher.is_some() {
            2
        } else {
            0
        }
    }

    #[cfg(not(feature = "luks"))]
    fn partial_sector_reads(&self) -> u64 {
        0
    }

    /// How the run of the virtual disk starting at `guest_offset` reads, up to `max_len` bytes.
    ///
    /// Neighbouring clusters that read the same way are merged, as `qemu-img
    /// map` does: data, zeros or unallocated, with contiguous host offsets
    /// where there are any (zero and unallocated entries may keep one, see
    /// [`Mapping`]).
    /// `max_len` is clamped to the end of the disk; `guest_offset` must be inside it.
    pub fn extent(&self, guest_offset: u64, max_len: u64) -> Result<Extent, Error<R::Error>> {
        self.check_range(guest_offset, 1)?;
        let max_len = max_len.max(1).min(self.virtual_size() - guest_offset);
        self.state
            .lock()
            .walk(&self.storage, &self.geometry)
            .extent(guest_offset, max_len)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), Error<R::Error>> {
        let size = self.virtual_size();
        match offset.checked_add(len) {
            Some(end) if end <= size && (offset < size || len == 0) => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }

    /// Fills `buf` with the virtual disk's bytes at `offset`, exactly as QEMU reads them.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error<R::Error>> {
        self.check_range(offset, buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            let guest_offset = offset + done as u64;
            let remaining = (buf.len() - done) as u64;
            let extent = self
                .state
                .lock()
                .walk(&self.storage, &self.geometry)
                .extent(guest_offset, remaining)?;
            let part = &mut buf[done..done + extent.len as usize];
            self.read_extent(&extent, part)?;
            done += part.len();
        }
        Ok(())
    }

    /// Reads an extent of this image's own layer: unallocated runs read as
    /// zeros, never from the backing (the chain's plan reads those from
    /// the layers below itself).
    #[cfg(feature = "alloc")]
    pub(crate) fn read_extent_alone(
        &self,
        extent: &Extent,
        part: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        match extent.kind {
            Mapping::Unallocated { .. } => {
                part.fill(0);
                Ok(())
            }
            _ => self.read_extent(extent, part),
        }
    }

    /// Where this image's data clusters are stored.
    #[cfg(feature = "alloc")]
    pub(crate) fn data_storage(&self) -> Storage {
        match self.data_file {
            Some(_) => Storage::DataFile,
            None => Storage::Image,
        }
    }

    /// The backing's size, as read at open (0 without one).
    #[cfg(feature = "alloc")]
    pub(crate) fn backing_size(&self) -> u64 {
        self.backing_size
    }

    fn read_extent(&self, extent: &Extent, part: &mut [u8]) -> Result<(), Error<R::Error>> {
        match extent.kind {
            Mapping::Data { host_offset } => self.read_data(extent.guest_offset, host_offset, part),
            Mapping::Zero { .. } => {
                part.fill(0);
                Ok(())
            }
            Mapping::Unallocated { .. } => self.read_backing(extent.guest_offset, part),
            Mapping::Compressed(descriptor) => self
                .state
                .lock()
                .walk(&self.storage, &self.geometry)
                .read_compressed(descriptor, extent.guest_offset, part),
        }
    }

    fn read_data(
        &self,
        guest_offset: u64,
        host_offset: u64,
        part: &mut [u8],
    ) -> Result<(), Error<R::Error>> {
        // Data past the end of the file reads as zeros, as in QEMU.
        let (storage, size, which) = match &self.data_file {
            Some(data_file) => (data_file, self.data_file_size, Storage::DataFile),
            None => (&self.storage, self.geometry.file_size, Storage::Image),
        };
        #[cfg(feature = "luks")]
        if let Some(cipher) = &self.cipher {
            return cipher.read(storage, which, size, guest_offset, host_offset, part);
        }
        let _ = guest_offset;
        read_located(storage, which, size, host_offset, part)
    }

    fn read_backing(&self, guest_offset: u64, part: &mut [u8]) -> Result<(), Error<R::Error>> {
        match &self.backing {
            // A shorter backing image reads as zeros past its end.
            Some(backing) => read_zero_padded(backing, self.backing_size, guest_offset, part)
                .map_err(|error| error.into().in_backing()),
            None => {
                part.fill(0);
                Ok(())
            }
        }
    }
}

impl<R, B> BlockRead for Image<'_, R, B>
where
    R: BlockRead,
    B: BlockRead,
    B::Error: Into<Error<R::Error>>,
{
    type Error = Error<R::Error>;

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        Image::read_at(self, offset, buf)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        Ok(self.virtual_size())
    }
}
