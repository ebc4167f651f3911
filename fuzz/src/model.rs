//! The oracle: an independent model of what each live handle may do.
//!
//! It shares no code with the broker. It resolves paths itself, one
//! component at a time over the real tree (`..` above a handle's root, an
//! absolute path or an absolute link target is an escape), and keeps for
//! every handle the guest holds its root, rights, scope and revocation
//! lineage, and whether the file system was pledged away. For each
//! operation it predicts the refusals the rules require (a handle not
//! held, revoked or pledged away, a right missing, a path leaving the
//! handle or its scope) and says which handles' authority the operation
//! uses; after it, every change to the tree must be one those handles could
//! make (a name removed needs `remove` there, a name made `create`, a name
//! changed `write`, each inside the handle's reach), and a read must return
//! the bytes of what the path names.

use std::collections::HashSet;

use crate::ops::*;
use crate::tree::{Entry, Snapshot};

/// A path from the tree's base, one name a component.
pub type Names = Vec<String>;

/// What a handle reaches: a directory (with its scope) or one file.
#[derive(Clone, Debug)]
pub struct Cap {
    pub root: Names,
    pub rights: u8,
    /// `[dir.NAME.paths]`: the entries (paths from the base) and their
    /// rights; the handle reaches nothing else.
    pub scope: Option<Vec<(Names, u8)>>,
    /// The revokers whose revocation cuts this handle off.
    pub lineage: Vec<u8>,
    pub file: Option<FileCap>,
    /// The least of the grant's ceiling (docs/authority.md, "Who else
    /// could reach it"): the rights the operator gave the grant (for a
    /// scoped grant, what any of its paths gives). Every handle derived
    /// from the grant keeps it: a file linked or renamed to where a handle
    /// reaches can be used there with all of it (by a stronger handle the
    /// guest kept, or a child), so the source must hold it all. The host
    /// adds the rights of overlapping grants; the model only this lower
    /// bound, so it never predicts a refusal the rules do not require.
    pub ceiling: u8,
}

/// An open file: its inode (if known), and what it was opened for.
#[derive(Clone, Debug)]
pub struct FileCap {
    pub ino: Option<u64>,
    pub read: bool,
    pub write: bool,
}

/// A path as the model resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// It stays below the root: the name it lands on (which may not
    /// exist yet), and every name it went through.
    Inside(Names, Vec<Names>),
    /// It leaves the root.
    Escape,
    /// The model cannot tell (a missing directory on the way, a loop).
    Unknown,
}

pub fn names(path: &str) -> Names {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn join(n: &[String]) -> String {
    n.join("/")
}

/// Resolves `rel` below `root` over the tree in `snap`, following links
/// (the last one too if `follow_last`, or if `rel` ends in `/`).
pub fn resolve(snap: &Snapshot, root: &[String], rel: &str, follow_last: bool) -> Resolved {
    if rel.starts_with('/') {
        return Resolved::Escape;
    }
    let follow_last = follow_last || rel.ends_with('/');
    let mut queue: std::collections::VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    let mut cur: Names = root.to_vec();
    let mut visited = Vec::new();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            if cur.len() <= root.len() {
                return Resolved::Escape;
            }
            cur.pop();
            continue;
        }
        cur.push(c);
        visited.push(cur.clone());
        let last = queue.is_empty();
        match snap.get(&join(&cur)) {
            None if last => return Resolved::Inside(cur, visited),
            None => return Resolved::Unknown,
            Some(e) if e.kind == 'l' && (!last || follow_last) => {
                hops += 1;
                if hops > 32 {
                    return Resolved::Unknown;
                }
                let target = String::from_utf8_lossy(&e.bytes).into_owned();
                if target.starts_with('/') {
                    return Resolved::Escape;
                }
                cur.pop();
                let mut parts: Vec<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                parts.extend(queue.drain(..));
                queue = parts.into();
            }
            Some(e) if !last && e.kind != 'd' => return Resolved::Unknown,
            Some(_) => {}
        }
    }
    Resolved::Inside(cur, visited)
}

fn within(name: &[String], root: &[String]) -> bool {
    name.len() >= root.len() && name[..root.len()] == *root
}

impl Cap {
    pub fn dir(root: Names, rights: u8, scope: Option<Vec<(Names, u8)>>) -> Cap {
        let ceiling = match &scope {
            Some(entries) => entries.iter().fold(0, |r, (_, e)| r | e) & rights,
            None => rights,
        };
        Cap {
            root,
            rights,
            scope,
            lineage: Vec::new(),
            file: None,
            ceiling,
        }
    }

    /// The rights this directory handle holds where `rel` lands (its own
    /// when unscoped), if the model can tell.
    fn held_at(&self, snap: &Snapshot, rel: &str, follow_last: bool) -> Option<u8> {
        match self.scope {
            None => Some(self.rights),
            Some(_) => self
                .locate(snap, rel, follow_last)
                .ok()
                .flatten()
                .map(|(_, r)| r),
        }
    }

    /// Whether `rel` (not following its last link, without a trailing
    /// `/`) names something that exists now.
    fn names_existing(&self, snap: &Snapshot, rel: &str) -> bool {
        !rel.ends_with('/')
            && matches!(self.locate(snap, rel, false),
                Ok(Some((n, _))) if n != self.root && snap.contains_key(&join(&n)))
    }

    /// The rights this handle has over `name` (a path from the base), if
    /// it reaches it at all.
    pub fn rights_at(&self, name: &[String], snap: &Snapshot) -> Option<u8> {
        if let Some(f) = &self.file {
            let ino = f.ino?;
            let e = snap.get(&join(name))?;
            return (e.ino == ino).then_some(if f.write { R_WRITE } else { 0 });
        }
        match &self.scope {
            Some(entries) => entries
                .iter()
                .filter(|(e, _)| within(name, e))
                .max_by_key(|(e, _)| e.len())
                .map(|(_, r)| *r & self.rights),
            None => within(name, &self.root).then_some(self.rights),
        }
    }

    /// Where `rel` lands below this handle and the rights there, or why
    /// the model says it must be refused (`None` when it cannot tell).
    pub fn locate(
        &self,
        snap: &Snapshot,
        rel: &str,
        follow_last: bool,
    ) -> Result<Option<(Names, u8)>, &'static str> {
        match &self.scope {
            None => match resolve(snap, &self.root, rel, follow_last) {
                Resolved::Escape => Err("escape"),
                Resolved::Inside(n, _) => Ok(Some((n, self.rights))),
                Resolved::Unknown => Ok(None),
            },
            Some(entries) => {
                if rel.starts_with('/') {
                    return Err("escape");
                }
                let parts = names(rel);
                if parts.iter().any(|c| c == "..") || parts.iter().all(|c| c == ".") {
                    return Ok(None);
                }
                let parts: Names = parts.into_iter().filter(|c| c != ".").collect();
                let mut lexical = self.root.clone();
                lexical.extend(parts);
                let Some((entry, r)) = entries
                    .iter()
                    .filter(|(e, _)| within(&lexical, e))
                    .max_by_key(|(e, _)| e.len())
                else {
                    // Above an entry: only a way in.
                    if entries.iter().any(|(e, _)| within(e, &lexical)) {
                        return Ok(None);
                    }
                    return Err("outside the scope");
                };
                let rest = join(&lexical[entry.len()..]);
                if rest.is_empty() {
                    return Ok(Some((entry.clone(), *r & self.rights)));
                }
                match resolve(snap, entry, &rest, follow_last) {
                    Resolved::Escape => Err("escape from a scope entry"),
                    Resolved::Inside(n, _) => Ok(Some((n, *r & self.rights))),
                    Resolved::Unknown => Ok(None),
                }
            }
        }
    }
}

/// The model's state for one input.
pub struct Model {
    pub dirs: Vec<Option<Cap>>,
    pub files: Vec<Option<Cap>>,
    pub descs: Vec<Option<Cap>>,
    pub ins: Vec<Option<Cap>>,
    pub outs: Vec<Option<Cap>>,
    pub revokers: Vec<Option<u8>>,
    pub revoked: HashSet<u8>,
    next_revoker: u8,
    pub pledged: bool,
    /// The child that keeps a copy (`Serve`): the slot it was shared from,
    /// and the copy.
    pub kid: Option<(u8, Cap)>,
}

/// What the model expects of one operation.
#[derive(Debug, Default)]
pub struct Expect {
    /// It must be refused, and why.
    pub refuse: Option<String>,
    /// The handles whose authority it uses: every change must be one of
    /// theirs.
    pub using: Vec<Cap>,
    /// A read must return exactly these bytes (the file the path names).
    pub bytes: Option<Vec<u8>>,
    /// A read from an open file (at its cursor) must return a part of
    /// these bytes: what the file holds now.
    pub part_of: Option<Vec<u8>>,
    /// A listing must name exactly these entries.
    pub listing: Option<Vec<String>>,
}

impl Expect {
    fn refuse(why: impl Into<String>) -> Expect {
        Expect {
            refuse: Some(why.into()),
            ..Expect::default()
        }
    }
}

fn has(r: u8, need: u8) -> bool {
    r & need == need
}

impl Model {
    pub fn new(grants: Vec<(usize, Cap)>) -> Model {
        let mut dirs = vec![None; DIRS.len()];
        for (slot, cap) in grants {
            dirs[slot] = Some(cap);
        }
        Model {
            dirs,
            files: vec![None; FILES.len()],
            descs: vec![None; DESCS.len()],
            ins: vec![None; STREAMS.len()],
            outs: vec![None; STREAMS.len()],
            revokers: vec![None; REVOKERS.len()],
            revoked: HashSet::new(),
            next_revoker: 0,
            pledged: false,
            kid: None,
        }
    }

    /// A held, live handle, or why using it must be refused.
    fn live<'a>(&self, cap: &'a Option<Cap>) -> Result<&'a Cap, String> {
        let cap = cap.as_ref().ok_or("not held")?;
        if self.pledged {
            return Err("pledged".into());
        }
        if cap.lineage.iter().any(|r| self.revoked.contains(r)) {
            return Err("revoked".into());
        }
        Ok(cap)
    }

    /// A path operation on a directory handle that needs `need` (any of
    /// `any` if non-zero) where the path lands.
    fn path_op(
        &self,
        snap: &Snapshot,
        cap: &Option<Cap>,
        rel: &str,
        follow: bool,
        need: u8,
        any: u8,
    ) -> Expect {
        let cap = match self.live(cap) {
            Ok(c) if c.file.is_none() => c,
            Ok(_) => return Expect::refuse("a file is not a directory"),
            Err(why) => return Expect::refuse(why),
        };
        let lacks = |r: u8| !has(r, need) || (any != 0 && r & any == 0);
        // Rights the whole handle lacks are refused wherever the path lands.
        if cap.scope.is_none() && lacks(cap.rights) {
            return Expect::refuse(format!("lacks rights {need:#x}/{any:#x}"));
        }
        match cap.locate(snap, rel, follow) {
            Err(why) => Expect::refuse(why),
            Ok(Some((_, r))) if lacks(r) => {
                Expect::refuse(format!("lacks rights {need:#x}/{any:#x} there"))
            }
            _ => Expect {
                using: vec![cap.clone()],
                ..Expect::default()
            },
        }
    }

    fn file_op(&self, cap: &Option<Cap>, write: bool) -> Expect {
        let cap = match self.live(cap) {
            Ok(c) => c,
            Err(why) => return Expect::refuse(why),
        };
        match &cap.file {
            Some(f) if (write && !f.write) || (!write && !f.read) => {
                Expect::refuse("not opened for that")
            }
            Some(_) => Expect {
                using: vec![cap.clone()],
                ..Expect::default()
            },
            // A directory descriptor: reading or writing it as a file fails.
            None => Expect::refuse("a directory is not a file"),
        }
    }

    /// The file's bytes where `rel` lands, if the model knows them.
    fn file_bytes(snap: &Snapshot, cap: &Cap, rel: &str) -> Option<Vec<u8>> {
        let (n, _) = cap.locate(snap, rel, true).ok()??;
        let e = snap.get(&join(&n))?;
        (e.kind == 'f').then(|| e.bytes.clone())
    }

    fn listing(snap: &Snapshot, cap: &Cap, rel: &str) -> Option<Vec<String>> {
        if cap.scope.is_some() {
            return None;
        }
        let (n, _) = cap.locate(snap, rel, true).ok()??;
        if snap.get(&join(&n))?.kind != 'd' && !n.is_empty() {
            return None;
        }
        let prefix = format!("{}/", join(&n));
        let mut v: Vec<String> = snap
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect();
        v.sort();
        Some(v)
    }

    /// What the model expects of an app operation, before it runs.
    pub fn expect(&self, op: Op, snap: &Snapshot) -> Expect {
        let path = |p: u8| PATHS[p as usize];
        let dir = |h: u8| &self.dirs[h as usize];
        let desc = |w: u8| &self.descs[w as usize];
        match op {
            Op::Read { h, p } => {
                let mut e = self.path_op(snap, dir(h), path(p), true, R_READ, 0);
                if e.refuse.is_none() {
                    e.bytes = dir(h)
                        .as_ref()
                        .and_then(|c| Self::file_bytes(snap, c, path(p)));
                }
                e
            }
            Op::Write { h, p, .. } => {
                let mut e = self.path_op(snap, dir(h), path(p), true, 0, R_WRITE | R_CREATE);
                // Without `write`, only a new file.
                if e.refuse.is_none() {
                    let cap = dir(h).as_ref().unwrap();
                    if let Ok(Some((n, r))) = cap.locate(snap, path(p), true) {
                        if r & R_WRITE == 0 && snap.contains_key(&join(&n)) {
                            e = Expect::refuse("exists, and no write");
                        }
                    }
                }
                e
            }
            Op::List { h, p } => {
                let mut e = self.path_op(snap, dir(h), path(p), true, R_LIST, 0);
                if e.refuse.is_none() {
                    e.listing = dir(h)
                        .as_ref()
                        .and_then(|c| Self::listing(snap, c, path(p)));
                }
                e
            }
            Op::Stat { h, p } => self.path_op(snap, dir(h), path(p), true, 0, R_READ | R_LIST),
            Op::Mkdir { h, p } => self.path_op(snap, dir(h), path(p), false, R_CREATE, 0),
            Op::Rm { h, p } | Op::Rmdir { h, p } => {
                self.path_op(snap, dir(h), path(p), false, R_REMOVE, 0)
            }
            Op::Rename { h, p, q } => {
                let e = self.path_op(snap, dir(h), path(p), false, R_REMOVE | R_CREATE, 0);
                if e.refuse.is_some() {
                    return e;
                }
                let to = self.path_op(snap, dir(h), path(q), false, R_REMOVE | R_CREATE, 0);
                if to.refuse.is_some() {
                    return to;
                }
                let c = dir(h).as_ref().unwrap();
                if !c.lineage.is_empty() {
                    return Expect::refuse("a revocable handle neither links nor renames");
                }
                // The source must hold `remove` and every right the
                // grant's handles may hold at the destination.
                if let Some(r) = c.held_at(snap, path(p), false) {
                    if !has(r, R_REMOVE | c.ceiling) {
                        return Expect::refuse(format!(
                            "the source lacks the grant's ceiling {:#x}",
                            c.ceiling
                        ));
                    }
                }
                // Replacing a name needs `write` there.
                if c.names_existing(snap, path(q)) {
                    if let Some(r) = c.held_at(snap, path(q), false) {
                        if r & R_WRITE == 0 {
                            return Expect::refuse("replaces a name without write there");
                        }
                    }
                }
                e
            }
            Op::OpenDir { h, p, r, .. } => {
                let e = self.path_op(snap, dir(h), path(p), true, r, 0);
                if e.refuse.is_none() && !has(dir(h).as_ref().unwrap().rights, r) {
                    return Expect::refuse("asks for more than it holds");
                }
                e
            }
            Op::Attenuate { h, r, .. } | Op::ToDescriptor { h, r, .. } => match self.live(dir(h)) {
                Err(why) => Expect::refuse(why),
                Ok(c) if !has(c.rights, r) => Expect::refuse("asks for more than it holds"),
                Ok(c) => Expect {
                    using: vec![c.clone()],
                    ..Expect::default()
                },
            },
            Op::Revocable { h, .. } => match self.live(dir(h)) {
                Err(why) => Expect::refuse(why),
                Ok(_) => Expect::default(),
            },
            Op::Revoke { rev } => match self.revokers[rev as usize] {
                None => Expect::refuse("not held"),
                Some(_) => Expect::default(),
            },
            Op::Drop { h } => match dir(h) {
                None => Expect::refuse("not held"),
                Some(_) => Expect::default(),
            },
            Op::FDrop { f } => match &self.files[f as usize] {
                None => Expect::refuse("not held"),
                Some(_) => Expect::default(),
            },
            Op::WDrop { w } => match desc(w) {
                None => Expect::refuse("not held"),
                Some(_) => Expect::default(),
            },
            Op::Open { h, p, o, .. } => self.open(snap, dir(h), path(p), o, false),
            Op::WOpen { w, p, o, .. } => self.open(snap, desc(w), path(p), o, true),
            Op::FRead { f } => {
                let mut e = self.file_op(&self.files[f as usize], false);
                e.part_of = e.using.first().and_then(|c| held_bytes(c, snap));
                e
            }
            Op::FWrite { f, .. } => self.file_op(&self.files[f as usize], true),
            // From offset 0: the whole file.
            Op::WRead { w } => {
                let mut e = self.file_op(desc(w), false);
                e.bytes = e.using.first().and_then(|c| held_bytes(c, snap));
                e
            }
            Op::WWrite { w, .. } | Op::WSetSize { w, .. } => self.file_op(desc(w), true),
            // A stream is made whatever the file was opened for (as in
            // wasmtime-wasi); using it is what the open decides.
            Op::WInStream { w, .. } | Op::WOutStream { w, .. } => match self.live(desc(w)) {
                Err(why) => Expect::refuse(why),
                Ok(c) if c.file.is_none() => Expect::refuse("a directory has no stream"),
                Ok(c) => Expect {
                    using: vec![c.clone()],
                    ..Expect::default()
                },
            },
            Op::WStreamRead { s } => {
                let mut e = self.file_op(&self.ins[s as usize], false);
                e.part_of = e.using.first().and_then(|c| held_bytes(c, snap));
                e
            }
            Op::WStreamWrite { s, .. } => self.file_op(&self.outs[s as usize], true),
            Op::WReadAt { w, p } => {
                let mut e = self.path_op(snap, desc(w), path(p), true, R_READ, 0);
                if e.refuse.is_none() {
                    e.bytes = desc(w)
                        .as_ref()
                        .and_then(|c| Self::file_bytes(snap, c, path(p)));
                }
                e
            }
            Op::WList { w } => {
                let mut e = self.path_op(snap, desc(w), ".", true, R_LIST, 0);
                if e.refuse.is_none() {
                    e.listing = desc(w).as_ref().and_then(|c| Self::listing(snap, c, "."));
                }
                e
            }
            // `.` is the descriptor's own `stat`, a file's too.
            Op::WStat { w, p } if path(p) == "." => match self.live(desc(w)) {
                Err(why) => Expect::refuse(why),
                Ok(c) if c.rights & (R_READ | R_LIST) == 0 => Expect::refuse("lacks read and list"),
                Ok(c) => Expect {
                    using: vec![c.clone()],
                    ..Expect::default()
                },
            },
            Op::WStat { w, p } => self.path_op(snap, desc(w), path(p), false, 0, R_READ | R_LIST),
            Op::WSetTimes { w, p } => self.path_op(snap, desc(w), path(p), false, R_WRITE, 0),
            Op::WMkdir { w, p } | Op::WSymlink { w, p, .. } => {
                self.path_op(snap, desc(w), path(p), false, R_CREATE, 0)
            }
            Op::WUnlink { w, p } | Op::WRmdir { w, p } => {
                self.path_op(snap, desc(w), path(p), false, R_REMOVE, 0)
            }
            Op::WReadlink { w, p } => self.path_op(snap, desc(w), path(p), false, R_READ, 0),
            Op::WLink { w, p, w2, q } | Op::WRename { w, p, w2, q } => {
                let rename = matches!(op, Op::WRename { .. });
                let src_need = if rename { R_REMOVE } else { 0 };
                let from = self.path_op(snap, desc(w), path(p), false, src_need, 0);
                if from.refuse.is_some() {
                    return from;
                }
                let to = self.path_op(snap, desc(w2), path(q), false, R_CREATE, 0);
                if to.refuse.is_some() {
                    return to;
                }
                let (a, b) = (desc(w).as_ref().unwrap(), desc(w2).as_ref().unwrap());
                // The source must hold every right the destination gives.
                if !has(a.rights, b.rights) {
                    return Expect::refuse("the destination gives more than the source holds");
                }
                // From a revocable handle, the file would stay reachable
                // after the revoke; into one, it only is until then.
                if !a.lineage.is_empty() {
                    return Expect::refuse("a revocable handle neither links nor renames");
                }
                // ... and every right any handle of the destination's grant
                // may hold there, not only the destination descriptor's.
                if !has(a.rights, src_need | b.ceiling) {
                    return Expect::refuse(format!(
                        "the source lacks the destination grant's ceiling {:#x}",
                        b.ceiling
                    ));
                }
                if rename && b.rights & R_WRITE == 0 && b.names_existing(snap, path(q)) {
                    return Expect::refuse("replaces a name without write there");
                }
                Expect {
                    using: vec![a.clone(), b.clone()],
                    ..Expect::default()
                }
            }
            Op::PledgeFs => Expect::default(),
            Op::Child { h, op, p, .. } => self.child_op(snap, dir(h), op, path(p)),
            // Sharing is no use of the file system: only a handle not held
            // is sure to be refused (a pledged or revoked one reaches the
            // child, and refuses there).
            Op::Serve { h } => match dir(h) {
                None => Expect::refuse("not held"),
                Some(_) => Expect::default(),
            },
            Op::KidOp { h, op, p, .. } => {
                let copy = match &self.kid {
                    Some((slot, cap)) if *slot == h => Some(cap.clone()),
                    _ => None,
                };
                self.child_op(snap, &copy, op, path(p))
            }
            _ => Expect::default(),
        }
    }

    /// A child's one use of its copy of a directory.
    fn child_op(&self, snap: &Snapshot, cap: &Option<Cap>, op: ChildOp, rel: &str) -> Expect {
        let (follow, need, any) = match op {
            ChildOp::Read => (true, R_READ, 0),
            ChildOp::Write => (true, 0, R_WRITE | R_CREATE),
            ChildOp::List => (true, R_LIST, 0),
            ChildOp::Rm => (false, R_REMOVE, 0),
            ChildOp::Mkdir => (false, R_CREATE, 0),
        };
        let mut e = self.path_op(snap, cap, rel, follow, need, any);
        if e.refuse.is_none() && op == ChildOp::Write {
            let c = cap.as_ref().unwrap();
            if let Ok(Some((n, r))) = c.locate(snap, rel, true) {
                if r & R_WRITE == 0 && snap.contains_key(&join(&n)) {
                    e = Expect::refuse("exists, and no write");
                }
            }
        }
        if e.refuse.is_none() && op == ChildOp::Read {
            e.bytes = cap.as_ref().and_then(|c| Self::file_bytes(snap, c, rel));
        }
        e
    }

    /// An open on either face: the union of what its flags need, except
    /// that an open that may only make a new file (`create` with
    /// `exclusive`, or `create` where `write` is not held) needs `create`
    /// alone.
    fn open(&self, snap: &Snapshot, cap: &Option<Cap>, rel: &str, o: u8, wasi: bool) -> Expect {
        let write = o & O_WRITE != 0 || (!wasi && o & O_APPEND_OR_DIR != 0);
        let create = o & O_CREATE != 0;
        let held = match self.live(cap) {
            Ok(c) => match c.locate(snap, rel, true) {
                Ok(Some((_, r))) => r,
                _ => c.rights,
            },
            Err(why) => return Expect::refuse(why),
        };
        let new_only = create && (o & O_EXCL != 0 || held & R_WRITE == 0);
        let mut need = 0;
        if new_only {
            need = R_CREATE;
        } else {
            if o & O_READ != 0 || (!wasi && o & (O_WRITE | O_APPEND_OR_DIR) == 0) {
                need |= R_READ;
            }
            if o & O_TRUNC != 0 || write {
                need |= R_WRITE;
            }
            if create {
                need |= R_CREATE;
            }
        }
        let e = self.path_op(snap, cap, rel, true, need, 0);
        if e.refuse.is_some() {
            return e;
        }
        let c = cap.as_ref().unwrap();
        if let Ok(Some((n, _))) = c.locate(snap, rel, true) {
            if new_only && snap.contains_key(&join(&n)) {
                return Expect::refuse("may only make a new file, and it exists");
            }
        }
        e
    }

    /// Updates the model after an app operation that returned `ok`.
    /// `after` is the tree after it.
    pub fn apply(&mut self, op: Op, before: &Snapshot, after: &Snapshot) {
        let path = |p: u8| PATHS[p as usize];
        match op {
            Op::OpenDir { h, p, r, new } => {
                let parent = self.dirs[h as usize].clone().unwrap();
                self.dirs[new as usize] = Some(derive(&parent, before, path(p), r));
            }
            Op::Attenuate { h, r, new } => {
                let mut c = self.dirs[h as usize].clone().unwrap();
                c.rights &= r;
                self.dirs[new as usize] = Some(c);
            }
            Op::ToDescriptor { h, r, w } => {
                let mut c = self.dirs[h as usize].clone().unwrap();
                c.rights &= r;
                self.descs[w as usize] = Some(c);
            }
            Op::Revocable { h, new, rev } => {
                let mut c = self.dirs[h as usize].clone().unwrap();
                let id = self.next_revoker;
                self.next_revoker += 1;
                c.lineage.push(id);
                self.dirs[new as usize] = Some(c);
                self.revokers[rev as usize] = Some(id);
            }
            Op::Revoke { rev } => {
                if let Some(id) = self.revokers[rev as usize] {
                    self.revoked.insert(id);
                }
            }
            Op::Drop { h } => self.dirs[h as usize] = None,
            Op::FDrop { f } => self.files[f as usize] = None,
            Op::WDrop { w } => self.descs[w as usize] = None,
            Op::Open { h, p, o, f } => {
                let parent = self.dirs[h as usize].clone().unwrap();
                let read = o & O_READ != 0 || o & (O_WRITE | O_APPEND_OR_DIR) == 0;
                let write = o & (O_WRITE | O_APPEND_OR_DIR) != 0;
                self.files[f as usize] = Some(open_file(&parent, after, path(p), read, write));
            }
            Op::WOpen { w, p, o, new } => {
                let parent = self.descs[w as usize].clone().unwrap();
                let target = parent
                    .locate(after, path(p), true)
                    .ok()
                    .flatten()
                    .and_then(|(n, _)| after.get(&join(&n)).cloned());
                // As wasmtime-wasi opens: for reading unless for writing
                // (the descriptor's rights then decide), and for writing
                // with `write`, `create` or `truncate`; a new file in a drop
                // box is writable through the descriptor that made it.
                let read = (o & O_READ != 0 || o & O_WRITE == 0) && parent.rights & R_READ != 0;
                let write = o & (O_WRITE | O_CREATE | O_TRUNC) != 0
                    && (parent.rights & R_WRITE != 0 || o & O_CREATE != 0);
                let cap = match target {
                    Some(Entry { kind: 'd', .. }) => derive(&parent, after, path(p), parent.rights),
                    Some(Entry { kind: 'f', .. }) => {
                        open_file(&parent, after, path(p), read, write)
                    }
                    // Unknown: it may be either; keep the parent's reach.
                    _ => {
                        let mut c = parent.clone();
                        c.file = (o & O_APPEND_OR_DIR == 0).then_some(FileCap {
                            ino: None,
                            read,
                            write,
                        });
                        c
                    }
                };
                self.descs[new as usize] = Some(cap);
            }
            Op::WInStream { w, s } => self.ins[s as usize] = self.descs[w as usize].clone(),
            Op::WOutStream { w, s } => self.outs[s as usize] = self.descs[w as usize].clone(),
            Op::PledgeFs => self.pledged = true,
            Op::Serve { h } => self.kid = self.dirs[h as usize].clone().map(|c| (h, c)),
            _ => {}
        }
    }

    /// A directory handle holds its directory, not its path: after a
    /// rename moved one (or a directory above it), its root and scope
    /// entries are where the same directories are now.
    pub fn follow_moves(&mut self, before: &Snapshot, after: &Snapshot) {
        let dirs_now: std::collections::HashMap<u64, &String> = after
            .iter()
            .filter(|(_, e)| e.kind == 'd')
            .map(|(k, e)| (e.ino, k))
            .collect();
        let moved = |n: &Names| -> Option<Names> {
            let e = before.get(&join(n))?;
            if e.kind == 'd' {
                let now = dirs_now.get(&e.ino)?;
                (**now != join(n)).then(|| names(now))
            } else {
                // A file entry of a scope: its parent's descriptor and name.
                let (name, parent) = n.split_last()?;
                let mut now = names(dirs_now.get(&before.get(&join(parent))?.ino)?);
                now.push(name.clone());
                (now != *n).then_some(now)
            }
        };
        let slots = self
            .dirs
            .iter_mut()
            .chain(self.descs.iter_mut())
            .chain(self.files.iter_mut())
            .chain(self.ins.iter_mut())
            .chain(self.outs.iter_mut())
            .flatten()
            .chain(self.kid.iter_mut().map(|(_, c)| c));
        for cap in slots {
            if let Some(now) = moved(&cap.root) {
                cap.root = now;
            }
            if let Some(entries) = &mut cap.scope {
                for (entry, _) in entries.iter_mut() {
                    if let Some(now) = moved(entry) {
                        *entry = now;
                    }
                }
            }
        }
    }

    /// After `pledge-fs` every operation is refused, even one that failed
    /// for the model's other reasons first.
    pub fn pledge_failed(&mut self) {
        self.pledged = true;
    }
}

/// What the open file `cap` holds now, if the model knows its inode and a
/// name of it is still in the tree.
fn held_bytes(cap: &Cap, snap: &Snapshot) -> Option<Vec<u8>> {
    let ino = cap.file.as_ref()?.ino?;
    snap.values()
        .find(|e| e.ino == ino && e.kind == 'f')
        .map(|e| e.bytes.clone())
}

/// A directory handle derived at `rel` below `parent`, with `rights`.
fn derive(parent: &Cap, snap: &Snapshot, rel: &str, rights: u8) -> Cap {
    let rights = parent.rights & rights;
    let mut c = parent.clone();
    c.rights = rights;
    c.file = None;
    let Ok(Some((n, _))) = parent.locate(snap, rel, true) else {
        // The model cannot tell where: the parent's reach bounds it.
        return c;
    };
    match &parent.scope {
        None => c.root = n,
        Some(entries) => {
            if let Some((_, r)) = entries
                .iter()
                .filter(|(e, _)| within(&n, e))
                .max_by_key(|(e, _)| e.len())
            {
                c.root = n;
                c.rights &= *r;
                let below: Vec<(Names, u8)> = entries
                    .iter()
                    .filter(|(e, _)| within(e, &c.root) && *e != c.root)
                    .cloned()
                    .collect();
                c.scope = (!below.is_empty()).then_some(below);
            } else {
                // Above the entries: still scoped to them.
                c.root = n;
            }
        }
    }
    c
}

fn open_file(parent: &Cap, after: &Snapshot, rel: &str, read: bool, write: bool) -> Cap {
    let ino = parent
        .locate(after, rel, true)
        .ok()
        .flatten()
        .and_then(|(n, _)| after.get(&join(&n)).map(|e| e.ino));
    let mut c = parent.clone();
    c.file = Some(FileCap { ino, read, write });
    c
}

/// Every change from `before` to `after` that none of `using` could have
/// made, as text. `steps` says whether several operations ran between the
/// two (then a name removed and made again is no replacement).
pub fn unexplained(before: &Snapshot, after: &Snapshot, using: &[Cap], steps: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let may = |name: &str, need: u8, snap: &Snapshot| {
        let n = names(name);
        using
            .iter()
            .any(|c| c.rights_at(&n, snap).is_some_and(|r| has(r, need)))
    };
    // The same file under another name the handle may write.
    let alias_writable = |ino: u64| {
        before
            .iter()
            .any(|(k, e)| e.ino == ino && e.kind == 'f' && may(k, R_WRITE, before))
    };
    for (k, b) in before {
        match after.get(k) {
            None if !may(k, R_REMOVE, before) => bad.push(format!("{k} was removed")),
            Some(a) if a != b => {
                let same_file = a.ino == b.ino && a.kind == b.kind;
                let ok = may(k, R_WRITE, before)
                    || (same_file && b.kind == 'f' && alias_writable(b.ino))
                    // A name replaced by a rename of a new file over it
                    // needs create and remove where it is, and write.
                    || (!same_file && may(k, R_WRITE | R_CREATE, after))
                    || (!same_file && steps && may(k, R_REMOVE, before) && may(k, R_CREATE, after));
                if !ok {
                    bad.push(format!("{k} changed: {b:?} -> {a:?}"));
                }
            }
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) && !may(k, R_CREATE, after) {
            bad.push(format!("{k} was made"));
        }
    }
    bad
}

/// What a read returned must not hold any file's bytes from outside.
pub fn leaks(value: &str) -> bool {
    value.contains(crate::tree::SECRET)
}
