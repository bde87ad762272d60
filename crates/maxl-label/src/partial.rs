//! A partial output file (`<out>.partial`, `<errors>.partial`): appended to, flushed after every
//! batch, its length the job file's record of how much of it holds whole rows.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use crate::LabelError;

/// The I/O error of `path`.
pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LabelError + '_ {
    move |source| LabelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open partial output file and its length.
pub(crate) struct Partial {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes written so far (flushed or not).
    pub(crate) bytes: u64,
}

impl Partial {
    /// A new file holding `header`, synced.
    pub(crate) fn create(path: &Path, header: &str) -> Result<Self, LabelError> {
        let mut file = BufWriter::new(File::create(path).map_err(io_err(path))?);
        file.write_all(header.as_bytes()).map_err(io_err(path))?;
        let mut p = Self {
            path: path.to_path_buf(),
            file,
            bytes: header.len() as u64,
        };
        // On disk before the job file that records it.
        p.sync()?;
        Ok(p)
    }

    /// Opens a partial file of an interrupted run and cuts it back to `bytes`.
    pub(crate) fn reopen(path: &Path, bytes: u64) -> Result<Self, LabelError> {
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = f.metadata().map_err(io_err(path))?.len();
        if len < bytes {
            return Err(LabelError::Resume {
                path: path.to_path_buf(),
                message: format!(
                    "holds {len} bytes, fewer than the {bytes} the job file records; the partial output was damaged, start over"
                ),
            });
        }
        f.set_len(bytes).map_err(io_err(path))?;
        f.seek(std::io::SeekFrom::End(0)).map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufWriter::new(f),
            bytes,
        })
    }

    /// Appends `s`.
    pub(crate) fn write(&mut self, s: &str) -> Result<(), LabelError> {
        self.bytes += s.len() as u64;
        self.file
            .write_all(s.as_bytes())
            .map_err(io_err(&self.path))
    }

    /// Hands what is written to the operating system (it survives the process).
    pub(crate) fn flush(&mut self) -> Result<(), LabelError> {
        self.file.flush().map_err(io_err(&self.path))
    }

    /// Puts what is written on disk (it survives a power cut).
    pub(crate) fn sync(&mut self) -> Result<(), LabelError> {
        self.flush()?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}
