//! Byte access to a `.nii` or `.nii.gz` file for the reader: sequential reads,
//! forward skips and errors that tell a truncated or corrupt file from an I/O failure.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use crate::error::{Error, Result};

/// A `.nii` file or a gzip-compressed one, detected from the first two bytes
/// (the gzip magic 1f 8b) rather than the name.
pub(super) enum Source {
    Plain {
        reader: BufReader<File>,
        len: u64,
        pos: u64,
    },
    Gzip {
        reader: MultiGzDecoder<BufReader<File>>,
        pos: u64,
    },
}

pub(super) enum SkipError {
    /// The stream ended at this uncompressed byte position.
    Short(u64),
    Other(Error),
}

impl Source {
    pub(super) fn open(path: &Path) -> Result<Source> {
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::file(path, "file not found"),
            _ => Error::io(path, e),
        })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let is_gzip = reader
            .fill_buf()
            .map_err(|e| Error::io(path, e))?
            .starts_with(&[0x1f, 0x8b]);
        Ok(if is_gzip {
            Source::Gzip {
                reader: MultiGzDecoder::new(reader),
                pos: 0,
            }
        } else {
            Source::Plain {
                reader,
                len,
                pos: 0,
            }
        })
    }

    fn is_gzip(&self) -> bool {
        matches!(self, Source::Gzip { .. })
    }

    fn reader(&mut self) -> (&mut dyn Read, &mut u64) {
        match self {
            Source::Plain { reader, pos, .. } => (reader, pos),
            Source::Gzip { reader, pos } => (reader, pos),
        }
    }

    /// Reads until `buf` is full or the stream ends; returns the byte count.
    pub(super) fn read_up_to(&mut self, path: &Path, buf: &mut [u8]) -> Result<usize> {
        let gzip = self.is_gzip();
        let (reader, pos) = self.reader();
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(path, e, gzip)),
            }
        }
        *pos += filled as u64;
        Ok(filled)
    }

    /// Reads up to `n` bytes; fewer come back only when the stream ends.
    pub(super) fn read_bytes(&mut self, path: &Path, n: u64) -> Result<Vec<u8>> {
        let gzip = self.is_gzip();
        if let Source::Plain { len, pos, .. } = self {
            // Allocate no more than the file can supply.
            let available = len.saturating_sub(*pos);
            if available < n {
                let mut rest = Vec::new();
                let (reader, pos) = self.reader();
                let got = reader
                    .read_to_end(&mut rest)
                    .map_err(|e| stream_error(path, e, gzip))?;
                *pos += got as u64;
                return Ok(rest);
            }
        }
        let size = usize::try_from(n).map_err(|_| {
            Error::file(path, format!("volume of {n} bytes does not fit in memory"))
        })?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(size).map_err(|_| {
            Error::file(
                path,
                format!("cannot allocate {n} bytes for the voxel data"),
            )
        })?;
        let (reader, pos) = self.reader();
        let got = reader
            .take(n)
            .read_to_end(&mut buf)
            .map_err(|e| stream_error(path, e, gzip))?;
        *pos += got as u64;
        Ok(buf)
    }

    /// Reads a gzip stream to its end, so the decoder checks the CRC-32 and length in
    /// the gzip trailer, which reading the voxel bytes alone never reaches. A plain
    /// file has no checksum and passes.
    pub(super) fn check_integrity(&mut self, path: &Path) -> Result<()> {
        if !self.is_gzip() {
            return Ok(());
        }
        let (reader, _) = self.reader();
        io::copy(reader, &mut io::sink())
            .map(|_| ())
            .map_err(|e| Error::file(path, format!("gzip stream is corrupt: its checksum or length does not match ({e})")))
    }

    /// Moves forward to uncompressed byte `target`: a seek for a plain file, a
    /// read-and-discard for gzip.
    pub(super) fn skip_to(
        &mut self,
        path: &Path,
        target: u64,
    ) -> std::result::Result<(), SkipError> {
        match self {
            Source::Plain { reader, len, pos } => {
                if target > *len {
                    return Err(SkipError::Short(*len));
                }
                let delta = i64::try_from(target - *pos).map_err(|_| SkipError::Short(*len))?;
                reader
                    .seek_relative(delta)
                    .map_err(|e| SkipError::Other(Error::io(path, e)))?;
                *pos = target;
                Ok(())
            }
            Source::Gzip { reader, pos } => {
                let wanted = target.saturating_sub(*pos);
                let skipped = io::copy(&mut reader.by_ref().take(wanted), &mut io::sink())
                    .map_err(|e| SkipError::Other(stream_error(path, e, true)))?;
                *pos += skipped;
                if skipped < wanted {
                    return Err(SkipError::Short(*pos));
                }
                Ok(())
            }
        }
    }
}

/// Describes a read failure; inside a gzip stream most failures mean a cut or damaged file.
fn stream_error(path: &Path, e: io::Error, gzip: bool) -> Error {
    let damaged = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
    );
    if gzip && damaged {
        Error::file(path, format!("gzip stream is truncated or corrupt ({e})"))
    } else {
        Error::io(path, e)
    }
}
