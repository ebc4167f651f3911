//! The fuzzer's input language: a few bytes of configuration, then
//! operations of six bytes each, every byte read modulo the size of what it
//! picks. Any byte string is a valid input, and a hand-written case encodes
//! back to bytes (`encode`) for the seed corpus.

use std::fmt;

/// Paths the operations name, relative to the handle they are used on:
/// names in the tree, symbolic links pointing in, out, nowhere and through
/// `..`, trailing slashes, `..` and absolute paths.
pub const PATHS: [&str; 34] = [
    "a.txt",
    "hl.txt",
    "sub/b.txt",
    "sub/hb.txt",
    "sub/deep/c.txt",
    "in/b.txt",
    "in-file",
    "out/secret",
    "out-file",
    "out-slash",
    "out-slash/secret",
    "abs",
    "dangling",
    "sub/up/a.txt",
    "sub/upup/outside/secret",
    "../outside/secret",
    "/etc/passwd",
    ".",
    "sub",
    "sub/",
    "new",
    "sub/new",
    "sub/../a.txt",
    "a.txt/",
    "in",
    "sub/up",
    "out",
    "sub/deep",
    "ro/r.txt",
    "ro",
    "dangling/",
    "sub/upup/data/a.txt",
    "up",
    "up/a.txt",
];

/// Targets of the symbolic links a guest makes.
pub const TARGETS: [&str; 8] = [
    "a.txt",
    "../outside/secret",
    "../outside/",
    "/tmp",
    "sub",
    "..",
    "nowhere",
    "sub/b.txt/",
];

/// What a guest writes: lower case only, so that it never forges the
/// upper-case markers of the files it must not read.
pub const DATA: [&str; 4] = ["x", "yy", "zzz", "0123456789"];

/// The handle slots of the app face: directories (`data`, `ro` and `box`
/// are the operator's grants), open files, WASI descriptors, WASI streams
/// and revokers.
pub const DIRS: [&str; 8] = ["data", "ro", "box", "d3", "d4", "d5", "d6", "d7"];
pub const FILES: [&str; 4] = ["f0", "f1", "f2", "f3"];
pub const DESCS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];
pub const STREAMS: [&str; 2] = ["s0", "s1"];
pub const REVOKERS: [&str; 2] = ["r0", "r1"];

/// Bits of a rights byte, in the order of capbroker's `rights` flags.
pub const R_READ: u8 = 1;
pub const R_WRITE: u8 = 2;
pub const R_CREATE: u8 = 4;
pub const R_LIST: u8 = 8;
pub const R_REMOVE: u8 = 16;
pub const R_ALL: u8 = 31;

/// Open flags, as one byte (both faces): read, write, append (the `fs`
/// face) or directory (`wasi:filesystem`), create, exclusive, truncate.
pub const O_READ: u8 = 1;
pub const O_WRITE: u8 = 2;
pub const O_APPEND_OR_DIR: u8 = 4;
pub const O_CREATE: u8 = 8;
pub const O_EXCL: u8 = 16;
pub const O_TRUNC: u8 = 32;

/// What a child (sharing one directory) does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildOp {
    Read,
    Write,
    List,
    Rm,
    Mkdir,
}

/// One operation. `u8` fields index the tables above (already reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    // capbroker's `fs` interface.
    Read {
        h: u8,
        p: u8,
    },
    Write {
        h: u8,
        p: u8,
        d: u8,
    },
    List {
        h: u8,
        p: u8,
    },
    Stat {
        h: u8,
        p: u8,
    },
    Mkdir {
        h: u8,
        p: u8,
    },
    Rm {
        h: u8,
        p: u8,
    },
    Rmdir {
        h: u8,
        p: u8,
    },
    Rename {
        h: u8,
        p: u8,
        q: u8,
    },
    OpenDir {
        h: u8,
        p: u8,
        r: u8,
        new: u8,
    },
    Attenuate {
        h: u8,
        r: u8,
        new: u8,
    },
    Revocable {
        h: u8,
        new: u8,
        rev: u8,
    },
    Revoke {
        rev: u8,
    },
    Drop {
        h: u8,
    },
    Open {
        h: u8,
        p: u8,
        o: u8,
        f: u8,
    },
    FRead {
        f: u8,
    },
    FWrite {
        f: u8,
        d: u8,
    },
    FDrop {
        f: u8,
    },
    ToDescriptor {
        h: u8,
        r: u8,
        w: u8,
    },
    // `wasi:filesystem` on descriptors from `to-descriptor`.
    WOpen {
        w: u8,
        p: u8,
        o: u8,
        new: u8,
    },
    WReadAt {
        w: u8,
        p: u8,
    },
    WRead {
        w: u8,
    },
    WWrite {
        w: u8,
        d: u8,
    },
    WLink {
        w: u8,
        p: u8,
        w2: u8,
        q: u8,
    },
    WRename {
        w: u8,
        p: u8,
        w2: u8,
        q: u8,
    },
    WSymlink {
        w: u8,
        t: u8,
        p: u8,
    },
    WUnlink {
        w: u8,
        p: u8,
    },
    WSetSize {
        w: u8,
        n: u8,
    },
    WSetTimes {
        w: u8,
        p: u8,
    },
    WInStream {
        w: u8,
        s: u8,
    },
    WStreamRead {
        s: u8,
    },
    WOutStream {
        w: u8,
        s: u8,
    },
    WStreamWrite {
        s: u8,
        d: u8,
    },
    WDrop {
        w: u8,
    },
    WList {
        w: u8,
    },
    WStat {
        w: u8,
        p: u8,
    },
    WMkdir {
        w: u8,
        p: u8,
    },
    WRmdir {
        w: u8,
        p: u8,
    },
    WReadlink {
        w: u8,
        p: u8,
    },
    PledgeFs,
    /// A child gets a shared copy of the directory and uses it once.
    Child {
        h: u8,
        op: ChildOp,
        p: u8,
        d: u8,
    },
    /// A child (`kid`) gets a shared copy of the directory and keeps it,
    /// running what `KidOp` sends it while its parent goes on.
    Serve {
        h: u8,
    },
    /// `kid` uses its copy (shared as `h`'s name) once.
    KidOp {
        h: u8,
        op: ChildOp,
        p: u8,
        d: u8,
    },
    // A plain WASI command (std's `std::fs`) with the preopen `/data`;
    // these run together, in order, after the app's operations.
    CRead {
        p: u8,
    },
    CWrite {
        p: u8,
        d: u8,
    },
    CCreate {
        p: u8,
    },
    CList {
        p: u8,
    },
    CMkdir {
        p: u8,
    },
    CRemove {
        p: u8,
    },
    CStat {
        p: u8,
    },
    CLink {
        p: u8,
        q: u8,
    },
    CRename {
        p: u8,
        q: u8,
    },
    CAppend {
        p: u8,
        d: u8,
    },
    CUnveil {
        p: u8,
        r: u8,
    },
    CPledge,
}

pub const OP_BYTES: usize = 6;
const KINDS: u8 = 54;
const CHILD_OPS: [ChildOp; 5] = [
    ChildOp::Read,
    ChildOp::Write,
    ChildOp::List,
    ChildOp::Rm,
    ChildOp::Mkdir,
];

fn m(b: u8, n: usize) -> u8 {
    (b as usize % n) as u8
}

impl Op {
    pub fn decode(b: [u8; OP_BYTES]) -> Op {
        let [k, a, c, e, g, i] = b;
        let h = m(a, DIRS.len());
        let p = m(c, PATHS.len());
        let w = m(a, DESCS.len());
        let f = m(a, FILES.len());
        let d = m(e, DATA.len());
        let r = e & R_ALL;
        let o = e & 63;
        match k % KINDS {
            0 => Op::Read { h, p },
            1 => Op::Write { h, p, d },
            2 => Op::List { h, p },
            3 => Op::Stat { h, p },
            4 => Op::Mkdir { h, p },
            5 => Op::Rm { h, p },
            6 => Op::Rmdir { h, p },
            7 => Op::Rename {
                h,
                p,
                q: m(e, PATHS.len()),
            },
            8 => Op::OpenDir {
                h,
                p,
                r,
                new: m(g, DIRS.len()),
            },
            9 => Op::Attenuate {
                h,
                r,
                new: m(g, DIRS.len()),
            },
            10 => Op::Revocable {
                h,
                new: m(g, DIRS.len()),
                rev: m(i, REVOKERS.len()),
            },
            11 => Op::Revoke {
                rev: m(a, REVOKERS.len()),
            },
            12 => Op::Drop { h },
            13 => Op::Open {
                h,
                p,
                o,
                f: m(g, FILES.len()),
            },
            14 => Op::FRead { f },
            15 => Op::FWrite { f, d },
            16 => Op::FDrop { f },
            17 => Op::ToDescriptor {
                h,
                r,
                w: m(g, DESCS.len()),
            },
            18 => Op::WOpen {
                w,
                p,
                o,
                new: m(g, DESCS.len()),
            },
            19 => Op::WReadAt { w, p },
            20 => Op::WRead { w },
            21 => Op::WWrite { w, d },
            22 => Op::WLink {
                w,
                p,
                w2: m(g, DESCS.len()),
                q: m(i, PATHS.len()),
            },
            23 => Op::WRename {
                w,
                p,
                w2: m(g, DESCS.len()),
                q: m(i, PATHS.len()),
            },
            24 => Op::WSymlink {
                w,
                t: m(e, TARGETS.len()),
                p,
            },
            25 => Op::WUnlink { w, p },
            26 => Op::WSetSize { w, n: e % 8 },
            27 => Op::WSetTimes { w, p },
            28 => Op::WInStream {
                w,
                s: m(g, STREAMS.len()),
            },
            29 => Op::WStreamRead {
                s: m(a, STREAMS.len()),
            },
            30 => Op::WOutStream {
                w,
                s: m(g, STREAMS.len()),
            },
            31 => Op::WStreamWrite {
                s: m(a, STREAMS.len()),
                d,
            },
            32 => Op::WDrop { w },
            33 => Op::WList { w },
            34 => Op::WStat { w, p },
            35 => Op::PledgeFs,
            36 => Op::Child {
                h,
                op: CHILD_OPS[m(g, CHILD_OPS.len()) as usize],
                p,
                d,
            },
            37 => Op::CRead { p },
            38 => Op::CWrite { p, d },
            39 => Op::CCreate { p },
            40 => Op::CList { p },
            41 => Op::CMkdir { p },
            42 => Op::CRemove { p },
            43 => Op::CStat { p },
            44 => Op::CLink {
                p,
                q: m(e, PATHS.len()),
            },
            45 => Op::CRename {
                p,
                q: m(e, PATHS.len()),
            },
            46 => Op::CAppend { p, d },
            47 => Op::CUnveil { p, r },
            48 => Op::CPledge,
            49 => Op::WMkdir { w, p },
            50 => Op::WRmdir { w, p },
            51 => Op::WReadlink { w, p },
            52 => Op::Serve { h },
            _ => Op::KidOp {
                h,
                op: CHILD_OPS[m(g, CHILD_OPS.len()) as usize],
                p,
                d,
            },
        }
    }

    /// The bytes that decode to this operation.
    pub fn encode(self) -> [u8; OP_BYTES] {
        let child = |op| CHILD_OPS.iter().position(|c| *c == op).unwrap() as u8;
        match self {
            Op::Read { h, p } => [0, h, p, 0, 0, 0],
            Op::Write { h, p, d } => [1, h, p, d, 0, 0],
            Op::List { h, p } => [2, h, p, 0, 0, 0],
            Op::Stat { h, p } => [3, h, p, 0, 0, 0],
            Op::Mkdir { h, p } => [4, h, p, 0, 0, 0],
            Op::Rm { h, p } => [5, h, p, 0, 0, 0],
            Op::Rmdir { h, p } => [6, h, p, 0, 0, 0],
            Op::Rename { h, p, q } => [7, h, p, q, 0, 0],
            Op::OpenDir { h, p, r, new } => [8, h, p, r, new, 0],
            Op::Attenuate { h, r, new } => [9, h, 0, r, new, 0],
            Op::Revocable { h, new, rev } => [10, h, 0, 0, new, rev],
            Op::Revoke { rev } => [11, rev, 0, 0, 0, 0],
            Op::Drop { h } => [12, h, 0, 0, 0, 0],
            Op::Open { h, p, o, f } => [13, h, p, o, f, 0],
            Op::FRead { f } => [14, f, 0, 0, 0, 0],
            Op::FWrite { f, d } => [15, f, 0, d, 0, 0],
            Op::FDrop { f } => [16, f, 0, 0, 0, 0],
            Op::ToDescriptor { h, r, w } => [17, h, 0, r, w, 0],
            Op::WOpen { w, p, o, new } => [18, w, p, o, new, 0],
            Op::WReadAt { w, p } => [19, w, p, 0, 0, 0],
            Op::WRead { w } => [20, w, 0, 0, 0, 0],
            Op::WWrite { w, d } => [21, w, 0, d, 0, 0],
            Op::WLink { w, p, w2, q } => [22, w, p, 0, w2, q],
            Op::WRename { w, p, w2, q } => [23, w, p, 0, w2, q],
            Op::WSymlink { w, t, p } => [24, w, p, t, 0, 0],
            Op::WUnlink { w, p } => [25, w, p, 0, 0, 0],
            Op::WSetSize { w, n } => [26, w, 0, n, 0, 0],
            Op::WSetTimes { w, p } => [27, w, p, 0, 0, 0],
            Op::WInStream { w, s } => [28, w, 0, 0, s, 0],
            Op::WStreamRead { s } => [29, s, 0, 0, 0, 0],
            Op::WOutStream { w, s } => [30, w, 0, 0, s, 0],
            Op::WStreamWrite { s, d } => [31, s, 0, d, 0, 0],
            Op::WDrop { w } => [32, w, 0, 0, 0, 0],
            Op::WList { w } => [33, w, 0, 0, 0, 0],
            Op::WStat { w, p } => [34, w, p, 0, 0, 0],
            Op::PledgeFs => [35, 0, 0, 0, 0, 0],
            Op::Child { h, op, p, d } => [36, h, p, d, child(op), 0],
            Op::CRead { p } => [37, 0, p, 0, 0, 0],
            Op::CWrite { p, d } => [38, 0, p, d, 0, 0],
            Op::CCreate { p } => [39, 0, p, 0, 0, 0],
            Op::CList { p } => [40, 0, p, 0, 0, 0],
            Op::CMkdir { p } => [41, 0, p, 0, 0, 0],
            Op::CRemove { p } => [42, 0, p, 0, 0, 0],
            Op::CStat { p } => [43, 0, p, 0, 0, 0],
            Op::CLink { p, q } => [44, 0, p, q, 0, 0],
            Op::CRename { p, q } => [45, 0, p, q, 0, 0],
            Op::CAppend { p, d } => [46, 0, p, d, 0, 0],
            Op::CUnveil { p, r } => [47, 0, p, r, 0, 0],
            Op::CPledge => [48, 0, 0, 0, 0, 0],
            Op::WMkdir { w, p } => [49, w, p, 0, 0, 0],
            Op::WRmdir { w, p } => [50, w, p, 0, 0, 0],
            Op::WReadlink { w, p } => [51, w, p, 0, 0, 0],
            Op::Serve { h } => [52, h, 0, 0, 0, 0],
            Op::KidOp { h, op, p, d } => [53, h, p, d, child(op), 0],
        }
    }

    /// Whether it runs in the plain command rather than the app.
    pub fn is_command(self) -> bool {
        matches!(
            self,
            Op::CRead { .. }
                | Op::CWrite { .. }
                | Op::CCreate { .. }
                | Op::CList { .. }
                | Op::CMkdir { .. }
                | Op::CRemove { .. }
                | Op::CStat { .. }
                | Op::CLink { .. }
                | Op::CRename { .. }
                | Op::CAppend { .. }
                | Op::CUnveil { .. }
                | Op::CPledge
        )
    }

    /// The probe command for an app operation.
    pub fn probe_command(self) -> String {
        let dir = |h: u8| DIRS[h as usize];
        let path = |p: u8| PATHS[p as usize];
        let desc = |w: u8| DESCS[w as usize];
        let data = |d: u8| DATA[d as usize];
        match self {
            Op::Read { h, p } => format!("read {} {}", dir(h), path(p)),
            Op::Write { h, p, d } => format!("write {} {} {}", dir(h), path(p), data(d)),
            Op::List { h, p } => format!("list {} {}", dir(h), path(p)),
            Op::Stat { h, p } => format!("stat {} {}", dir(h), path(p)),
            Op::Mkdir { h, p } => format!("mkdir {} {}", dir(h), path(p)),
            Op::Rm { h, p } => format!("rm {} {}", dir(h), path(p)),
            Op::Rmdir { h, p } => format!("rmdir {} {}", dir(h), path(p)),
            Op::Rename { h, p, q } => format!("rename {} {} {}", dir(h), path(p), path(q)),
            Op::OpenDir { h, p, r, new } => {
                format!("open-dir {} {} {} {}", dir(h), path(p), rights(r), dir(new))
            }
            Op::Attenuate { h, r, new } => {
                format!("attenuate {} {} {}", dir(h), rights(r), dir(new))
            }
            Op::Revocable { h, new, rev } => format!(
                "revocable {} {} {}",
                dir(h),
                dir(new),
                REVOKERS[rev as usize]
            ),
            Op::Revoke { rev } => format!("revoke {}", REVOKERS[rev as usize]),
            Op::Drop { h } => format!("drop {}", dir(h)),
            Op::Open { h, p, o, f } => format!(
                "open {} {} {} {}",
                dir(h),
                path(p),
                open_flags(o),
                FILES[f as usize]
            ),
            Op::FRead { f } => format!("fread {} 4096", FILES[f as usize]),
            Op::FWrite { f, d } => format!("fwrite {} {}", FILES[f as usize], data(d)),
            Op::FDrop { f } => format!("fdrop {}", FILES[f as usize]),
            Op::ToDescriptor { h, r, w } => {
                format!("wasi-hold {} {} {}", dir(h), rights(r), desc(w))
            }
            Op::WOpen { w, p, o, new } => format!(
                "wasi-open {} {} {} {}",
                desc(w),
                path(p),
                wasi_flags(o),
                desc(new)
            ),
            Op::WReadAt { w, p } => format!("wasi-read-held {} {}", desc(w), path(p)),
            Op::WRead { w } => format!("wasi-fread {}", desc(w)),
            Op::WWrite { w, d } => format!("wasi-fwrite {} {}", desc(w), data(d)),
            Op::WLink { w, p, w2, q } => {
                format!("wasi-link {} {} {} {}", desc(w), path(p), desc(w2), path(q))
            }
            Op::WRename { w, p, w2, q } => format!(
                "wasi-rename {} {} {} {}",
                desc(w),
                path(p),
                desc(w2),
                path(q)
            ),
            Op::WSymlink { w, t, p } => format!(
                "wasi-symlink {} {} {}",
                desc(w),
                TARGETS[t as usize],
                path(p)
            ),
            Op::WUnlink { w, p } => format!("wasi-unlink {} {}", desc(w), path(p)),
            Op::WSetSize { w, n } => format!("wasi-setsize {} {n}", desc(w)),
            Op::WSetTimes { w, p } => format!("wasi-settimes {} {}", desc(w), path(p)),
            Op::WInStream { w, s } => {
                format!("wasi-instream {} {}", desc(w), STREAMS[s as usize])
            }
            Op::WStreamRead { s } => format!("wasi-sread {}", STREAMS[s as usize]),
            Op::WOutStream { w, s } => {
                format!("wasi-outstream {} {}", desc(w), STREAMS[s as usize])
            }
            Op::WStreamWrite { s, d } => {
                format!("wasi-swrite {} {}", STREAMS[s as usize], data(d))
            }
            Op::WDrop { w } => format!("wasi-drop {}", desc(w)),
            Op::WList { w } => format!("wasi-list {}", desc(w)),
            Op::WStat { w, p } => format!("wasi-stat {} {}", desc(w), path(p)),
            Op::WMkdir { w, p } => format!("wasi-mkdir {} {}", desc(w), path(p)),
            Op::WRmdir { w, p } => format!("wasi-rmdir {} {}", desc(w), path(p)),
            Op::WReadlink { w, p } => format!("wasi-readlink {} {}", desc(w), path(p)),
            Op::PledgeFs => "pledge-fs".into(),
            Op::Child { h, op, p, d } => format!(
                "spawn sp self budget {} child {}",
                dir(h),
                child_command(h, op, p, d)
            ),
            Op::Serve { h } => format!("spawn sp self budget {} kid serve", dir(h)),
            Op::KidOp { h, op, p, d } => format!("psend kid {}", child_command(h, op, p, d)),
            _ => unreachable!("a command operation is not a probe command"),
        }
    }

    /// The plain command's arguments for a command operation (paths are
    /// below the preopen `/data`).
    pub fn command_args(self) -> Vec<String> {
        let path = |p: u8| {
            let rel = PATHS[p as usize];
            if rel.starts_with('/') {
                rel.to_string()
            } else {
                format!("/data/{rel}")
            }
        };
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Op::CRead { p } => v(&["read", &path(p)]),
            Op::CWrite { p, d } => v(&["write", &path(p), DATA[d as usize]]),
            Op::CCreate { p } => v(&["create", &path(p)]),
            Op::CList { p } => v(&["list", &path(p)]),
            Op::CMkdir { p } => v(&["mkdir", &path(p)]),
            Op::CRemove { p } => v(&["remove", &path(p)]),
            Op::CStat { p } => v(&["stat", &path(p)]),
            Op::CLink { p, q } => v(&["link", &path(p), &path(q)]),
            Op::CRename { p, q } => v(&["rename", &path(p), &path(q)]),
            Op::CAppend { p, d } => v(&["append", &path(p), DATA[d as usize]]),
            Op::CUnveil { p, r } => v(&["unveil", "/data", PATHS[p as usize], &rights_csv(r)]),
            Op::CPledge => v(&["pledge", "fs"]),
            _ => unreachable!("an app operation is not a command step"),
        }
    }
}

/// What a child runs on its copy (shared under the name of slot `h`).
fn child_command(h: u8, op: ChildOp, p: u8, d: u8) -> String {
    let (dir, path, data) = (DIRS[h as usize], PATHS[p as usize], DATA[d as usize]);
    match op {
        ChildOp::Read => format!("read {dir} {path}"),
        ChildOp::Write => format!("write {dir} {path} {data}"),
        ChildOp::List => format!("list {dir} {path}"),
        ChildOp::Rm => format!("rm {dir} {path}"),
        ChildOp::Mkdir => format!("mkdir {dir} {path}"),
    }
}

/// A rights byte as the probe spells it.
pub fn rights(r: u8) -> String {
    if r & R_ALL == 0 {
        "none".into()
    } else {
        rights_csv(r)
    }
}

fn rights_csv(r: u8) -> String {
    let names = ["read", "write", "create", "list", "remove"];
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| r & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn open_flags(o: u8) -> String {
    flag_words(o, "append", "read")
}

fn wasi_flags(o: u8) -> String {
    flag_words(o, "directory", "none")
}

/// An open-flags byte as the probe spells it: the third bit is `append` on
/// the `fs` face and `directory` on the WASI face; no flag at all is
/// `empty`.
fn flag_words(o: u8, third: &str, empty: &str) -> String {
    let names = [
        (O_READ, "read"),
        (O_WRITE, "write"),
        (O_APPEND_OR_DIR, third),
        (O_CREATE, "create"),
        (O_EXCL, "exclusive"),
        (O_TRUNC, "truncate"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| o & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        empty.into()
    } else {
        v.join(",")
    }
}

/// The operator's grants for one input, from its first two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Rights of the entries of `data`'s scope (the grant itself has
    /// every right, which the probe asks for).
    pub data: u8,
    /// `[dir.data.paths]`: none, or one of two scopes.
    pub scope: u8,
    /// Whether the app also gets `ro` (the same folder, read and list)
    /// and `box` (`sub`, create only).
    pub ro: bool,
    pub boxed: bool,
    /// Rights of the command's preopen `/data`, and its scope.
    pub command: u8,
    pub command_scope: u8,
}

/// Rights sets worth trying as grants: whole, read-only, create-only,
/// write without create, and those missing one right each.
pub const GRANT_RIGHTS: [u8; 10] = [
    R_ALL,
    R_READ | R_LIST,
    R_CREATE,
    R_CREATE | R_LIST,
    R_WRITE | R_READ,
    R_ALL & !R_REMOVE,
    R_ALL & !R_CREATE,
    R_ALL & !R_WRITE,
    R_ALL & !R_READ,
    R_READ | R_LIST | R_REMOVE,
];

pub const SETUP_BYTES: usize = 2;

impl Setup {
    pub fn decode(b: [u8; SETUP_BYTES]) -> Setup {
        Setup {
            data: GRANT_RIGHTS[m(b[0] & 15, GRANT_RIGHTS.len()) as usize],
            scope: (b[0] >> 4) % 3,
            ro: b[1] & 1 != 0,
            boxed: b[1] & 2 != 0,
            command: GRANT_RIGHTS[m((b[1] >> 2) & 15, GRANT_RIGHTS.len()) as usize],
            command_scope: (b[1] >> 6) % 3,
        }
    }

    pub fn encode(self) -> [u8; SETUP_BYTES] {
        let i = |r: u8| GRANT_RIGHTS.iter().position(|x| *x == r).unwrap() as u8;
        [
            i(self.data) + 16 * self.scope,
            self.ro as u8
                | (self.boxed as u8) << 1
                | i(self.command) << 2
                | self.command_scope << 6,
        ]
    }
}

/// The most operations an input runs; the rest of a longer input is
/// ignored, so that every execution stays short.
pub const MAX_OPS: usize = 40;

/// An input: the grants, then the operations.
#[derive(Clone, Debug)]
pub struct Input {
    pub setup: Setup,
    pub ops: Vec<Op>,
}

impl Input {
    pub fn decode(bytes: &[u8]) -> Option<Input> {
        let (head, rest) = bytes.split_first_chunk::<SETUP_BYTES>()?;
        let ops = rest
            .chunks_exact(OP_BYTES)
            .take(MAX_OPS)
            .map(|c| Op::decode(c.try_into().unwrap()))
            .collect();
        Some(Input {
            setup: Setup::decode(*head),
            ops,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.setup.encode().to_vec();
        for op in &self.ops {
            v.extend(op.encode());
        }
        v
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}", self.setup)?;
        for op in &self.ops {
            if op.is_command() {
                writeln!(f, "  command: {}", op.command_args().join(" "))?;
            } else {
                writeln!(f, "  app: {}", op.probe_command())?;
            }
        }
        Ok(())
    }
}
