//! A root slot's storage: a block device on the appliance
//! (`/dev/disk/by-partlabel/root-b`), a plain file in tests. Positioned
//! reads and writes (pread/pwrite), an fsync before anything is trusted.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nusa_ota_core::{ChunkIndex, IndexBuilder, Sha256Digest, Sha256Hasher};

const BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("slot device {path}: {source}")]
pub struct DeviceError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub struct SlotDevice {
    path: PathBuf,
    file: File,
}

impl SlotDevice {
    /// Opens for reading (the active slot: never written).
    pub fn open_read(path: &Path) -> Result<Self, DeviceError> {
        let file = File::open(path).map_err(|source| DeviceError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens for writing (the inactive slot).
    pub fn open_write(path: &Path) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DeviceError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    fn err(&self, source: std::io::Error) -> DeviceError {
        DeviceError {
            path: self.path.clone(),
            source,
        }
    }

    /// Bytes the slot can hold (a block device's size, a file's length).
    pub fn capacity(&mut self) -> Result<u64, DeviceError> {
        self.file.seek(SeekFrom::End(0)).map_err(|e| self.err(e))
    }

    /// Fills `buf` from `offset`; short only at the end of the device.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .file
                .read_at(&mut buf[done..], offset + done as u64)
                .map_err(|e| self.err(e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.err(e))
    }

    pub fn sync(&self) -> Result<(), DeviceError> {
        self.file.sync_all().map_err(|e| self.err(e))
    }

    /// SHA-256 of the first `len` bytes, as the bootloader will read them.
    pub fn hash_prefix(&self, len: u64) -> Result<Sha256Digest, DeviceError> {
        let mut h = Sha256Hasher::new();
        self.each_block(len, |b| h.update(b))?;
        Ok(h.finish())
    }

    /// The chunk index of the first `len` bytes (what the slot holds, for
    /// the delta plan).
    pub fn index(&self, chunk_size: u32, len: u64) -> Result<Option<ChunkIndex>, DeviceError> {
        let Ok(mut b) = IndexBuilder::new(chunk_size) else {
            return Ok(None);
        };
        self.each_block(len, |data| b.update(data))?;
        Ok(b.finish().ok())
    }

    fn each_block(&self, len: u64, mut f: impl FnMut(&[u8])) -> Result<(), DeviceError> {
        let mut buf = vec![0u8; BUF];
        let mut at = 0u64;
        while at < len {
            let want = BUF.min(usize::try_from(len - at).unwrap_or(BUF));
            let n = self.read_at(at, &mut buf[..want])?;
            if n == 0 {
                return Err(self.err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("ends at {at} bytes, {len} wanted"),
                )));
            }
            f(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }
}
