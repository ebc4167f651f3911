//! The host tree every input starts from, rebuilt in place between inputs,
//! and a snapshot of it that the oracle compares before and after each
//! operation.
//!
//! ```text
//! data/                 the grant (its own inode stays across inputs)
//!   a.txt, hl.txt       two names of one file
//!   sub/b.txt, sub/hb.txt, sub/deep/c.txt, ro/r.txt
//!   in -> sub           in-file -> a.txt        dangling -> nowhere
//!   out -> ../outside   out-file -> ../outside/secret
//!   out-slash -> ../outside/                    abs -> BASE/outside/secret
//!   sub/up -> ..        sub/upup -> ../..
//! outside/secret, outside/dir/x                 never reachable
//! ```
//!
//! Every file holds a distinct upper-case marker; guests only write lower
//! case, so a marker in what a guest read names the file it came from.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

/// The marker every file outside the grant holds.
pub const SECRET: &str = "SECRET";

pub struct Tree {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

/// What the oracle knows of one name: its kind, inode, size, times and,
/// for a file or link, its bytes or target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub bytes: Vec<u8>,
}

/// Every name below the base, by its path from the base (`data/a.txt`).
pub type Snapshot = BTreeMap<String, Entry>;

impl Tree {
    pub fn new() -> io::Result<Tree> {
        // tmpfs when there is one: the tree is rebuilt for every input.
        let shm = Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("capbroker-fuzz")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("capbroker-fuzz").tempdir()
        }?;
        let base = tmp.path().canonicalize()?;
        fs::create_dir(base.join("data"))?;
        let tree = Tree { _tmp: tmp, base };
        tree.reset()?;
        Ok(tree)
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    /// Puts the tree back as it starts, keeping `data/` itself.
    pub fn reset(&self) -> io::Result<()> {
        let data = self.data();
        for e in fs::read_dir(&data)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        for entry in fs::read_dir(&self.base)? {
            let entry = entry?;
            if entry.file_name() != "data" {
                let p = entry.path();
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(p)?;
                } else {
                    fs::remove_file(p)?;
                }
            }
        }
        let b = &self.base;
        fs::create_dir_all(b.join("data/sub/deep"))?;
        fs::create_dir_all(b.join("data/ro"))?;
        fs::create_dir_all(b.join("outside/dir"))?;
        fs::write(b.join("data/a.txt"), "A-a")?;
        fs::hard_link(b.join("data/a.txt"), b.join("data/hl.txt"))?;
        fs::write(b.join("data/sub/b.txt"), "B-b")?;
        fs::hard_link(b.join("data/sub/b.txt"), b.join("data/sub/hb.txt"))?;
        fs::write(b.join("data/sub/deep/c.txt"), "C-c")?;
        fs::write(b.join("data/ro/r.txt"), "R-r")?;
        fs::write(b.join("outside/secret"), "SECRET-s")?;
        fs::write(b.join("outside/dir/x"), "SECRET-x")?;
        symlink("sub", b.join("data/in"))?;
        symlink("a.txt", b.join("data/in-file"))?;
        symlink("../outside", b.join("data/out"))?;
        symlink("../outside/secret", b.join("data/out-file"))?;
        symlink("../outside/", b.join("data/out-slash"))?;
        symlink(b.join("outside/secret"), b.join("data/abs"))?;
        symlink("nowhere", b.join("data/dangling"))?;
        symlink("..", b.join("data/sub/up"))?;
        symlink("../..", b.join("data/sub/upup"))?;
        Ok(())
    }

    /// Every name below the base.
    pub fn snapshot(&self) -> io::Result<Snapshot> {
        let mut out = Snapshot::new();
        walk(&self.base, "", &mut out)?;
        Ok(out)
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Snapshot) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        let md = fs::symlink_metadata(&path)?;
        let ft = md.file_type();
        let (kind, bytes) = if ft.is_symlink() {
            (
                'l',
                fs::read_link(&path)?.into_os_string().into_encoded_bytes(),
            )
        } else if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_file() {
            ('f', fs::read(&path)?)
        } else {
            ('o', Vec::new())
        };
        let mtime = if kind == 'd' {
            (0, 0)
        } else {
            (md.mtime(), md.mtime_nsec())
        };
        out.insert(
            rel.clone(),
            Entry {
                kind,
                ino: md.ino(),
                size: if kind == 'd' { 0 } else { md.size() },
                mtime,
                bytes,
            },
        );
        if kind == 'd' {
            walk(&path, &rel, out)?;
        }
    }
    Ok(())
}
