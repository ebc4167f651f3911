//! Directory and file handles shaped like `std::fs`, the way cap-std is.
//!
//! A Rust programmer already knows `std::fs`; a capability handle should
//! cost nothing more to learn than "call it on the `Dir` instead of on a
//! global path". So the methods keep std's names and argument shapes
//! (`AsRef<Path>` paths, `read_to_string`, `OpenOptions`, `read_dir`), and
//! [`File`] is `Read + Write + Seek`, so `BufReader`, `io::copy` and every
//! other `std::io` adapter work on it unchanged.
//!
//! The one thing std has no word for is rights: [`Dir::open_dir`] and
//! [`Dir::attenuate`] derive a handle with fewer, and dropping a `Dir` gives
//! its authority up for good. The generated handles stay reachable through
//! [`Dir::as_raw`] and [`File::as_raw`] for what this layer does not cover
//! (sharing a handle with a child process, for one).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::bindings::capbroker::caps::fs as raw;
use crate::bindings::capbroker::caps::types::Error as WitError;
use crate::error::{Error, Result};
use crate::{Revoker, Rights};

/// WIT paths are strings; a path that is not UTF-8 cannot name anything
/// the host would find, so it is refused here as `invalid`.
fn text(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| WitError::Invalid(format!("`{}` is not UTF-8", path.display())).into())
}

/// A directory handle: the authority to use one directory and what lies
/// below it, with some rights. Paths are relative to it and never lead
/// out (the host refuses `..` past the root, absolute paths and outward
/// symbolic links with an `escape` error).
pub struct Dir {
    raw: raw::Dir,
}

impl Dir {
    /// Wraps a handle from the bindings.
    pub fn from_raw(raw: raw::Dir) -> Dir {
        Dir { raw }
    }

    /// The handle from the bindings, e.g. for `Shared::Dir(dir.as_raw())`.
    pub fn as_raw(&self) -> &raw::Dir {
        &self.raw
    }

    /// Unwraps the handle from the bindings.
    pub fn into_raw(self) -> raw::Dir {
        self.raw
    }

    /// The rights this handle carries.
    pub fn rights(&self) -> Rights {
        self.raw.rights()
    }

    /// A handle on the sub-directory `path` with `rights`, which must be a
    /// subset of this handle's (else `denied`, naming what is missing).
    /// Derive the narrowest handle a piece of code needs, then drop the
    /// wider one.
    pub fn open_dir(&self, path: impl AsRef<Path>, rights: Rights) -> Result<Dir> {
        Ok(Dir::from_raw(
            self.raw.open_dir(text(path.as_ref())?, rights)?,
        ))
    }

    /// A handle on this same directory with fewer rights.
    pub fn attenuate(&self, rights: Rights) -> Result<Dir> {
        Ok(Dir::from_raw(self.raw.attenuate(rights)?))
    }

    /// A copy of this handle that the returned `Revoker` can take back,
    /// with everything derived from it.
    pub fn revocable(&self) -> Result<(Dir, Revoker)> {
        let (dir, revoker) = self.raw.revocable()?;
        Ok((Dir::from_raw(dir), revoker))
    }

    /// Reads a whole file, like `std::fs::read`. The host refuses files
    /// over 64 MiB: stream those through [`Dir::open`].
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        Ok(self.raw.read_file(text(path.as_ref())?)?)
    }

    /// Reads a whole file as UTF-8 text, like `std::fs::read_to_string`;
    /// contents that are not UTF-8 are `invalid`, `InvalidData` as in std.
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let path = path.as_ref();
        String::from_utf8(self.read(path)?).map_err(|_| Error::not_text(path))
    }

    /// Writes a whole file, creating it or replacing its contents, like
    /// `std::fs::write`. Replacing needs `write`; creating needs `create`.
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<()> {
        Ok(self
            .raw
            .write_file(text(path.as_ref())?, contents.as_ref())?)
    }

    /// Opens a file for reading, like `std::fs::File::open`.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<File> {
        self.open_with(path, OpenOptions::new().read(true))
    }

    /// Opens a file for writing, creating it or cutting it to zero length,
    /// like `std::fs::File::create`. This needs `write` and `create`; in a
    /// drop box (`create` alone) it may only make a new file, and an
    /// existing one is refused with `denied` (write), untouched.
    /// `OpenOptions::new().write(true).create_new(true)` fails with
    /// `exists` instead.
    pub fn create(&self, path: impl AsRef<Path>) -> Result<File> {
        self.open_with(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
    }

    /// Opens a file as `options` say, like `std::fs::OpenOptions::open`.
    pub fn open_with(&self, path: impl AsRef<Path>, options: &OpenOptions) -> Result<File> {
        let file = self.raw.open_file(text(path.as_ref())?, options.flags())?;
        Ok(File::new(file, options.append))
    }

    /// Creates a directory; its parent must exist. Needs `create`.
    pub fn create_dir(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.raw.create_dir(text(path.as_ref())?)?)
    }

    /// Removes a file. Needs `remove`.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.raw.remove_file(text(path.as_ref())?)?)
    }

    /// Removes an empty directory. Needs `remove`.
    pub fn remove_dir(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.raw.remove_dir(text(path.as_ref())?)?)
    }

    /// Renames `from` to `to`, both inside this handle, replacing a file
    /// at `to`. See the WIT `rename` for the rights it needs.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        Ok(self.raw.rename(text(from.as_ref())?, text(to.as_ref())?)?)
    }

    /// The entries of the directory at `path` (`"."` for this one), sorted
    /// by name, like `std::fs::read_dir`. Needs `list`. The host sends the
    /// whole listing at once, so iterating never fails; the items are
    /// `Result`s only so that std-shaped loops (`let entry = entry?;`)
    /// compile unchanged.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<ReadDir> {
        Ok(ReadDir {
            entries: self.list(path)?.into_iter(),
        })
    }

    /// The entries of the directory at `path`, sorted by name, as a `Vec`.
    pub fn list(&self, path: impl AsRef<Path>) -> Result<Vec<DirEntry>> {
        let entries = self.raw.list(text(path.as_ref())?)?;
        Ok(entries.into_iter().map(|raw| DirEntry { raw }).collect())
    }

    /// Metadata of the entry at `path`, following symbolic links within
    /// the handle, like `std::fs::metadata`. Needs `list` or `read`.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<Metadata> {
        Ok(Metadata {
            raw: self.raw.stat(text(path.as_ref())?)?,
        })
    }

    /// Whether something exists at `path`, like `Path::try_exists`: a
    /// denial is an error, not a `false`, so that a missing right is never
    /// mistaken for a missing file.
    pub fn try_exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == "not-found" => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl From<raw::Dir> for Dir {
    fn from(raw: raw::Dir) -> Dir {
        Dir::from_raw(raw)
    }
}

impl AsRef<raw::Dir> for Dir {
    fn as_ref(&self) -> &raw::Dir {
        &self.raw
    }
}

/// How to open a file, like `std::fs::OpenOptions`; pass it to
/// [`Dir::open_with`]. Each option needs the rights the WIT `open-flags`
/// list; an open needs all of them. As in std, `create_new` stands on its
/// own: it does not need `create`, and `create(false)` does not undo it.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
}

impl OpenOptions {
    /// No options set: set at least `read`, `write` or `append`.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for reading; needs `read`.
    pub fn read(&mut self, on: bool) -> &mut OpenOptions {
        self.read = on;
        self
    }

    /// Open for writing at the start; needs `write` (or only `create` when
    /// the open makes the file).
    pub fn write(&mut self, on: bool) -> &mut OpenOptions {
        self.write = on;
        self
    }

    /// Open for writing at the end; needs `write` (or only `create` when
    /// the open makes the file).
    pub fn append(&mut self, on: bool) -> &mut OpenOptions {
        self.append = on;
        self
    }

    /// Cut the file to zero length; needs `write`.
    pub fn truncate(&mut self, on: bool) -> &mut OpenOptions {
        self.truncate = on;
        self
    }

    /// Create the file if it does not exist; needs `create`.
    pub fn create(&mut self, on: bool) -> &mut OpenOptions {
        self.create = on;
        self
    }

    /// Create the file, failing with `exists` if it is there already;
    /// needs `create`. This is how a drop box makes a file.
    pub fn create_new(&mut self, on: bool) -> &mut OpenOptions {
        self.create_new = on;
        self
    }

    /// The WIT flags these options stand for.
    pub fn flags(&self) -> raw::OpenFlags {
        let mut flags = raw::OpenFlags::empty();
        for (on, flag) in [
            (self.read, raw::OpenFlags::READ),
            (self.write, raw::OpenFlags::WRITE),
            (self.append, raw::OpenFlags::APPEND),
            (self.truncate, raw::OpenFlags::TRUNCATE),
            (self.create || self.create_new, raw::OpenFlags::CREATE),
            (self.create_new, raw::OpenFlags::EXCLUSIVE),
        ] {
            flags.set(flag, on);
        }
        flags
    }
}

/// An open file: `Read`, `Write` and `Seek`, so `std::io` adapters work on
/// it. It keeps the rights it was opened with, and works until it is
/// dropped, the handle it came from is revoked, or the filesystem is
/// pledged away.
///
/// The WIT file only seeks to an absolute offset and does not report its
/// position, so the position is tracked here: reads and writes advance it,
/// and `SeekFrom::End` asks the host for the size. Writes go straight to
/// the host; `flush` has nothing to do.
pub struct File {
    raw: raw::File,
    /// Where the next read or write lands, when known. After a write in
    /// append mode it is the end of the file, which only the host knows:
    /// it is looked up when next needed.
    pos: Option<u64>,
    append: bool,
}

impl File {
    fn new(raw: raw::File, append: bool) -> File {
        // At the start, also in append mode, as std's files are: the host
        // moves to the end only when an append writes.
        File {
            raw,
            pos: Some(0),
            append,
        }
    }

    /// Wraps a file from the bindings, whose position must be the start.
    pub fn from_raw(raw: raw::File) -> File {
        File::new(raw, false)
    }

    /// The file from the bindings.
    pub fn as_raw(&self) -> &raw::File {
        &self.raw
    }

    /// Unwraps the file from the bindings.
    pub fn into_raw(self) -> raw::File {
        self.raw
    }

    /// Metadata of the open file.
    pub fn metadata(&self) -> Result<Metadata> {
        Ok(Metadata {
            raw: self.raw.stat()?,
        })
    }

    fn position(&mut self) -> io::Result<u64> {
        match self.pos {
            Some(p) => Ok(p),
            None => {
                let end = self.metadata()?.len();
                self.pos = Some(end);
                Ok(end)
            }
        }
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let data = self.raw.read(len).map_err(Error::from)?;
        // The host never sends more than asked; do not trust that blindly.
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.pos = self.pos.map(|p| p + n as u64);
        Ok(n)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.raw.write(buf).map_err(Error::from)?;
        self.pos = match (self.append, self.pos) {
            (false, Some(p)) => Some(p + buf.len() as u64),
            _ => None,
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for File {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => (0, i128::from(n)),
            SeekFrom::Current(d) => (self.position()?, i128::from(d)),
            SeekFrom::End(d) => (self.metadata()?.len(), i128::from(d)),
        };
        let target = u64::try_from(i128::from(base) + delta).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid seek to a negative or overflowing position",
            )
        })?;
        self.raw.seek(target).map_err(Error::from)?;
        self.pos = Some(target);
        Ok(target)
    }
}

impl From<raw::File> for File {
    fn from(raw: raw::File) -> File {
        File::from_raw(raw)
    }
}

/// Metadata of a file or directory, like `std::fs::Metadata`.
#[derive(Clone, Debug)]
pub struct Metadata {
    raw: raw::Stat,
}

impl Metadata {
    /// What the entry is.
    pub fn file_type(&self) -> FileType {
        FileType(self.raw.kind)
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type().is_file()
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type().is_dir()
    }

    /// The size in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.raw.size
    }

    /// The last modification, like `std::fs::Metadata::modified`: an
    /// `Unsupported` error where the host does not know it.
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.raw
            .modified_ns
            .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the host does not know when it was modified",
                )
            })
    }

    /// The WIT record.
    pub fn as_raw(&self) -> &raw::Stat {
        &self.raw
    }
}

/// What a directory entry is, like `std::fs::FileType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileType(raw::EntryKind);

impl FileType {
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.0 == raw::EntryKind::File
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.0 == raw::EntryKind::Directory
    }

    /// A symbolic link (only a listing reports these; `metadata` follows).
    pub fn is_symlink(&self) -> bool {
        self.0 == raw::EntryKind::Symlink
    }

    /// The WIT kind, which also has `other` (FIFOs, sockets, devices).
    pub fn kind(&self) -> raw::EntryKind {
        self.0
    }
}

/// One entry of [`Dir::read_dir`], like `std::fs::DirEntry`.
#[derive(Clone, Debug)]
pub struct DirEntry {
    raw: raw::Entry,
}

impl DirEntry {
    /// The entry's name, without any directory part. A `&str`, not an
    /// `OsString`: WIT names are always UTF-8.
    pub fn file_name(&self) -> &str {
        &self.raw.name
    }

    /// What the entry is; symbolic links are not followed.
    pub fn file_type(&self) -> FileType {
        FileType(self.raw.kind)
    }
}

/// The iterator [`Dir::read_dir`] returns.
pub struct ReadDir {
    entries: std::vec::IntoIter<DirEntry>,
}

impl Iterator for ReadDir {
    type Item = Result<DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(Ok)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}
