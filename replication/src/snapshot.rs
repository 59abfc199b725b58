//! The snapshot file: a point-in-time image of the state machine's data at one log id.
//!
//! Owns the on-disk format and nothing else (the state machine decides when to build and
//! install one; the transport streams the file in chunks).
//!
//! Format, all integers little-endian:
//! ```text
//! "QDBSNAP1" | u32 header_len | header (MessagePack: SnapshotHeader)
//! { u32 key_len | key | u32 value_len | value }*   -- data keys in order
//! u32 0xFFFF_FFFF                                  -- end of records
//! u32 crc32 of every byte before it
//! ```
//! A file is written to a `.tmp` name, fsynced and renamed, so a crash never leaves a
//! half-written file under a final name; the trailing CRC catches a damaged transfer.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encoding::{decode, encode};
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"QDBSNAP1";
const END: u32 = u32::MAX;
/// No key, value or header is larger; a larger length means a damaged file.
const MAX_RECORD: usize = 1 << 28;

/// A snapshot as openraft passes it around: a file on local disk.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// What a snapshot file says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub meta: SnapshotMeta,
    /// The running checksum of applied commands at `meta.last_log_id`.
    pub checksum: u64,
}

/// Streams key-value records into a new snapshot file.
pub struct SnapshotWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
}

impl SnapshotWriter {
    pub fn create(path: PathBuf, header: &SnapshotHeader) -> std::io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let mut w =
            Self { out: BufWriter::with_capacity(1 << 20, File::create(&tmp)?), tmp, path, crc: Default::default() };
        let h = encode(header)?;
        w.write(MAGIC)?;
        w.write(&(h.len() as u32).to_le_bytes())?;
        w.write(&h)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.out.write_all(b)
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(key)?;
        self.write(&(value.len() as u32).to_le_bytes())?;
        self.write(value)
    }

    /// Seals the file (end marker, CRC, fsync) and moves it to its final name.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        self.write(&END.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        sync_dir(self.path.parent())?;
        Ok(self.path)
    }
}

/// Makes a rename durable.
pub fn sync_dir(dir: Option<&Path>) -> std::io::Result<()> {
    if let Some(d) = dir {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Reads a snapshot file front to back, verifying its CRC at the end.
pub struct SnapshotReader {
    input: BufReader<File>,
    crc: crc32fast::Hasher,
    pub header: SnapshotHeader,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl SnapshotReader {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let input = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut r = Self { input, crc: Default::default(), header: placeholder_header() };
        let magic = r.read_exact(8)?;
        if magic != MAGIC {
            return Err(invalid(format!("{} is not a QuorumDB snapshot", path.display())));
        }
        let len = r.read_u32()? as usize;
        let h = r.read_exact(len)?;
        r.header = decode(&h).map_err(|e| invalid(format!("bad snapshot header: {e}")))?;
        Ok(r)
    }

    fn read_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        if n > MAX_RECORD {
            return Err(invalid(format!("snapshot record of {n} bytes is larger than any we write")));
        }
        let mut b = vec![0; n];
        self.input.read_exact(&mut b)?;
        self.crc.update(&b);
        Ok(b)
    }

    fn read_u32(&mut self) -> std::io::Result<u32> {
        let b = self.read_exact(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// The next record, or `None` at the end (after the CRC was checked).
    pub fn next_record(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let klen = self.read_u32()?;
        if klen == END {
            let expected = self.crc.clone().finalize();
            let mut b = [0u8; 4];
            self.input.read_exact(&mut b)?;
            if u32::from_le_bytes(b) != expected {
                return Err(invalid("snapshot checksum mismatch"));
            }
            return Ok(None);
        }
        let key = self.read_exact(klen as usize)?;
        let vlen = self.read_u32()? as usize;
        let value = self.read_exact(vlen)?;
        Ok(Some((key, value)))
    }
}

fn placeholder_header() -> SnapshotHeader {
    SnapshotHeader { meta: SnapshotMeta::default(), checksum: 0 }
}

/// Reads only the header of a snapshot file.
pub fn read_header(path: &Path) -> std::io::Result<SnapshotHeader> {
    Ok(SnapshotReader::open(path)?.header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let header = placeholder_header();
        let mut w = SnapshotWriter::create(path.clone(), &header).unwrap();
        for i in 0..100u32 {
            w.record(&i.to_be_bytes(), format!("v{i}").as_bytes()).unwrap();
        }
        w.finish().unwrap();
        let mut r = SnapshotReader::open(&path).unwrap();
        let mut n = 0;
        while let Some((k, v)) = r.next_record().unwrap() {
            assert_eq!(k, (n as u32).to_be_bytes());
            assert_eq!(v, format!("v{n}").into_bytes());
            n += 1;
        }
        assert_eq!(n, 100);

        // Flip one byte in the middle: reading must fail, not return wrong data.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let mut r = SnapshotReader::open(&path).unwrap();
        let res = (|| -> std::io::Result<()> {
            while r.next_record()?.is_some() {}
            Ok(())
        })();
        assert!(res.is_err());
    }
}
