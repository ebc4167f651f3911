//! The seed corpus: each way past a file-system right that the
//! authority-core issue listed (its cases 1 to 7; the others are not about
//! files), and the confinement classes the tests already pin (links out,
//! trailing slashes, `..` through a link, a child's shared copy), each
//! written as an input. `write_corpus` puts them into
//! `fuzz/corpus/confinement/` for libFuzzer to start from.

use std::path::Path;

use crate::ops::*;

fn p(path: &str) -> u8 {
    PATHS
        .iter()
        .position(|x| *x == path)
        .unwrap_or_else(|| panic!("`{path}` is not in PATHS")) as u8
}

fn d(name: &str) -> u8 {
    DIRS.iter().position(|x| *x == name).unwrap() as u8
}

fn w(name: &str) -> u8 {
    DESCS.iter().position(|x| *x == name).unwrap() as u8
}

const RL: u8 = R_READ | R_LIST;

/// Every grant, none scoped.
fn open_setup() -> Setup {
    Setup {
        data: R_ALL,
        scope: 0,
        ro: true,
        boxed: true,
        command: R_ALL,
        command_scope: 0,
    }
}

fn input(setup: Setup, ops: Vec<Op>) -> Input {
    Input { setup, ops }
}

pub fn seeds() -> Vec<(&'static str, Input)> {
    let scoped = |data: u8, scope: u8| Setup {
        data,
        scope,
        ..open_setup()
    };
    let command = |rights: u8, scope: u8| Setup {
        command: rights,
        command_scope: scope,
        ..open_setup()
    };
    vec![
        // 1. Scoped handles wrote outside their paths: an open of a file
        // outside every entry for writing, a read-only entry opened for
        // writing, a rename into a create-only entry over a file.
        (
            "1-scope-open-outside",
            input(
                scoped(R_CREATE | R_LIST, 1),
                vec![
                    Op::Open {
                        h: d("data"),
                        p: p("a.txt"),
                        o: O_WRITE | O_CREATE,
                        f: 0,
                    },
                    Op::FWrite { f: 0, d: 0 },
                    Op::Open {
                        h: d("data"),
                        p: p("ro/r.txt"),
                        o: O_READ | O_WRITE | O_CREATE,
                        f: 1,
                    },
                    Op::FWrite { f: 1, d: 1 },
                    Op::Write {
                        h: d("data"),
                        p: p("sub/b.txt"),
                        d: 2,
                    },
                    Op::Rename {
                        h: d("data"),
                        p: p("sub/new"),
                        q: p("sub/b.txt"),
                    },
                ],
            ),
        ),
        (
            "1-scope-rename-into-create-only",
            input(
                scoped(R_ALL, 2),
                vec![
                    Op::Attenuate {
                        h: d("data"),
                        r: R_CREATE | R_REMOVE,
                        new: d("d3"),
                    },
                    Op::Write {
                        h: d("data"),
                        p: p("sub/deep/c.txt"),
                        d: 0,
                    },
                    Op::Rename {
                        h: d("d3"),
                        p: p("a.txt"),
                        q: p("sub/deep/c.txt"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("hl.txt"),
                    },
                    Op::List {
                        h: d("data"),
                        p: p("."),
                    },
                ],
            ),
        ),
        // 2. A plain command ignored `[dir."/data".paths]`.
        (
            "2-command-scope",
            input(
                command(R_ALL, 1),
                vec![
                    Op::CRead { p: p("a.txt") },
                    Op::CWrite {
                        p: p("hl.txt"),
                        d: 0,
                    },
                    Op::CRead { p: p("sub/b.txt") },
                    Op::CRead {
                        p: p("sub/up/a.txt"),
                    },
                    Op::CList { p: p(".") },
                    Op::CRename {
                        p: p("sub/b.txt"),
                        q: p("new"),
                    },
                    Op::CLink {
                        p: p("sub/b.txt"),
                        q: p("new"),
                    },
                ],
            ),
        ),
        // 3. A second unveil regained what the first gave up, through a
        // link inside the first view.
        (
            "3-second-unveil",
            input(
                command(R_ALL, 0),
                vec![
                    Op::CUnveil { p: p("sub"), r: RL },
                    Op::CUnveil {
                        p: p("sub/up"),
                        r: RL,
                    },
                    Op::CRead { p: p("a.txt") },
                    Op::CRead {
                        p: p("sub/up/a.txt"),
                    },
                    Op::CRead { p: p("sub/b.txt") },
                    Op::CWrite {
                        p: p("sub/b.txt"),
                        d: 0,
                    },
                ],
            ),
        ),
        // 4. A link or rename turned read access into write access: from a
        // read-and-create descriptor to a writable one, into a create-only
        // drop box, and within one command after unveil.
        (
            "4-link-read-to-write",
            input(
                open_setup(),
                vec![
                    Op::ToDescriptor {
                        h: d("data"),
                        r: RL | R_CREATE,
                        w: w("w0"),
                    },
                    Op::ToDescriptor {
                        h: d("data"),
                        r: R_ALL,
                        w: w("w1"),
                    },
                    Op::WLink {
                        w: w("w0"),
                        p: p("a.txt"),
                        w2: w("w1"),
                        q: p("new"),
                    },
                    Op::WRename {
                        w: w("w0"),
                        p: p("sub/b.txt"),
                        w2: w("w1"),
                        q: p("new"),
                    },
                    Op::ToDescriptor {
                        h: d("box"),
                        r: R_CREATE,
                        w: w("w2"),
                    },
                    Op::ToDescriptor {
                        h: d("ro"),
                        r: RL,
                        w: w("w3"),
                    },
                    Op::WLink {
                        w: w("w3"),
                        p: p("a.txt"),
                        w2: w("w2"),
                        q: p("new"),
                    },
                    Op::WRename {
                        w: w("w1"),
                        p: p("a.txt"),
                        w2: w("w2"),
                        q: p("new"),
                    },
                    Op::WWrite { w: w("w1"), d: 0 },
                ],
            ),
        ),
        (
            "4-command-link-after-unveil",
            input(
                command(R_ALL, 0),
                vec![
                    Op::CUnveil {
                        p: p("sub"),
                        r: RL | R_CREATE,
                    },
                    Op::CLink {
                        p: p("sub/b.txt"),
                        q: p("sub/new"),
                    },
                    Op::CRename {
                        p: p("sub/b.txt"),
                        q: p("sub/new"),
                    },
                    Op::CAppend {
                        p: p("sub/b.txt"),
                        d: 0,
                    },
                ],
            ),
        ),
        // 5. Streams outlived pledge and unveil once their descriptor was
        // dropped.
        (
            "5-stream-after-pledge",
            input(
                open_setup(),
                vec![
                    Op::ToDescriptor {
                        h: d("data"),
                        r: R_ALL,
                        w: w("w0"),
                    },
                    Op::WOpen {
                        w: w("w0"),
                        p: p("a.txt"),
                        o: O_READ,
                        new: w("w1"),
                    },
                    Op::WInStream { w: w("w1"), s: 0 },
                    Op::WOpen {
                        w: w("w0"),
                        p: p("sub/b.txt"),
                        o: O_WRITE,
                        new: w("w2"),
                    },
                    Op::WOutStream { w: w("w2"), s: 1 },
                    Op::WDrop { w: w("w1") },
                    Op::WDrop { w: w("w2") },
                    Op::PledgeFs,
                    Op::WStreamRead { s: 0 },
                    Op::WStreamWrite { s: 1, d: 0 },
                ],
            ),
        ),
        // Revocation reaches a stream whose descriptor was dropped.
        (
            "5-stream-after-revoke",
            input(
                open_setup(),
                vec![
                    Op::Revocable {
                        h: d("data"),
                        new: d("d3"),
                        rev: 0,
                    },
                    Op::ToDescriptor {
                        h: d("d3"),
                        r: R_ALL,
                        w: w("w0"),
                    },
                    Op::WOpen {
                        w: w("w0"),
                        p: p("a.txt"),
                        o: O_READ,
                        new: w("w1"),
                    },
                    Op::WInStream { w: w("w1"), s: 0 },
                    Op::WOpen {
                        w: w("w0"),
                        p: p("sub/b.txt"),
                        o: O_READ | O_WRITE,
                        new: w("w2"),
                    },
                    Op::WOutStream { w: w("w2"), s: 1 },
                    Op::WRead { w: w("w2") },
                    Op::WDrop { w: w("w1") },
                    Op::WDrop { w: w("w2") },
                    Op::Revoke { rev: 0 },
                    Op::WStreamRead { s: 0 },
                    Op::WStreamWrite { s: 1, d: 0 },
                    Op::Read {
                        h: d("data"),
                        p: p("a.txt"),
                    },
                ],
            ),
        ),
        // 6. `to-descriptor` worked after the file system was pledged away.
        (
            "6-descriptor-after-pledge",
            input(
                open_setup(),
                vec![
                    Op::PledgeFs,
                    Op::ToDescriptor {
                        h: d("data"),
                        r: R_READ,
                        w: w("w0"),
                    },
                    Op::WReadAt {
                        w: w("w0"),
                        p: p("a.txt"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("a.txt"),
                    },
                    Op::Child {
                        h: d("data"),
                        op: ChildOp::Read,
                        p: p("a.txt"),
                        d: 0,
                    },
                ],
            ),
        ),
        // 7. After unveil, what lies above the view could be listed and
        // stat'ed; a create-only drop box could stat files.
        (
            "7-above-the-view",
            input(
                command(R_ALL, 0),
                vec![
                    Op::CUnveil {
                        p: p("sub/deep"),
                        r: RL,
                    },
                    Op::CList { p: p(".") },
                    Op::CList { p: p("sub") },
                    Op::CStat { p: p("a.txt") },
                    Op::CStat { p: p("sub/b.txt") },
                    Op::CRead {
                        p: p("sub/deep/c.txt"),
                    },
                ],
            ),
        ),
        (
            "7-drop-box-stat",
            input(
                command(R_CREATE, 0),
                vec![
                    Op::CStat { p: p("a.txt") },
                    Op::CRead { p: p("a.txt") },
                    Op::CCreate { p: p("new") },
                    Op::CWrite {
                        p: p("a.txt"),
                        d: 0,
                    },
                    Op::CWrite {
                        p: p("sub/new"),
                        d: 1,
                    },
                ],
            ),
        ),
        // Links out, absolute links, trailing slashes (GHSA-hp8f-xmx4-4qrg,
        // GHSA-vqjp-4c8c-hfgg), `..` through a link, on both faces.
        (
            "links-out",
            input(
                open_setup(),
                vec![
                    Op::Read {
                        h: d("data"),
                        p: p("out/secret"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("out-file"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("abs"),
                    },
                    Op::List {
                        h: d("data"),
                        p: p("out-slash"),
                    },
                    Op::Write {
                        h: d("data"),
                        p: p("out-slash/secret"),
                        d: 0,
                    },
                    Op::Write {
                        h: d("data"),
                        p: p("sub/upup/outside/secret"),
                        d: 0,
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("sub/upup/data/a.txt"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("sub/up/a.txt"),
                    },
                    Op::Write {
                        h: d("data"),
                        p: p("dangling/"),
                        d: 0,
                    },
                    Op::Write {
                        h: d("data"),
                        p: p("a.txt/"),
                        d: 0,
                    },
                    Op::OpenDir {
                        h: d("data"),
                        p: p("sub"),
                        r: R_ALL,
                        new: d("d3"),
                    },
                    Op::Read {
                        h: d("d3"),
                        p: p("../outside/secret"),
                    },
                    Op::Read {
                        h: d("d3"),
                        p: p("sub/up/a.txt"),
                    },
                    Op::ToDescriptor {
                        h: d("d3"),
                        r: R_ALL,
                        w: w("w0"),
                    },
                    Op::WSymlink {
                        w: w("w0"),
                        t: 1,
                        p: p("new"),
                    },
                    Op::WReadAt {
                        w: w("w0"),
                        p: p("new"),
                    },
                    Op::WOpen {
                        w: w("w0"),
                        p: p("new"),
                        o: O_WRITE | O_TRUNC,
                        new: w("w1"),
                    },
                    Op::WSetTimes {
                        w: w("w0"),
                        p: p("new"),
                    },
                    Op::CRead { p: p("out-file") },
                    Op::CWrite {
                        p: p("out-slash/secret"),
                        d: 0,
                    },
                    Op::CRead {
                        p: p("sub/upup/data/a.txt"),
                    },
                    Op::CList { p: p("out") },
                ],
            ),
        ),
        // Revocation reaches derived handles and open files; a revocable
        // handle neither links nor renames.
        (
            "revoke",
            input(
                open_setup(),
                vec![
                    Op::Revocable {
                        h: d("data"),
                        new: d("d3"),
                        rev: 0,
                    },
                    Op::Attenuate {
                        h: d("d3"),
                        r: R_ALL,
                        new: d("d4"),
                    },
                    Op::Open {
                        h: d("d4"),
                        p: p("sub/b.txt"),
                        o: O_READ | O_WRITE,
                        f: 0,
                    },
                    Op::Rename {
                        h: d("d3"),
                        p: p("a.txt"),
                        q: p("new"),
                    },
                    Op::Revoke { rev: 0 },
                    Op::FRead { f: 0 },
                    Op::FWrite { f: 0, d: 0 },
                    Op::Read {
                        h: d("d4"),
                        p: p("sub/b.txt"),
                    },
                    Op::Child {
                        h: d("d4"),
                        op: ChildOp::Write,
                        p: p("new"),
                        d: 0,
                    },
                ],
            ),
        ),
        // A child with a shared copy, before and after its parent pledges.
        (
            "child-shared-copy",
            input(
                open_setup(),
                vec![
                    Op::Attenuate {
                        h: d("data"),
                        r: RL,
                        new: d("d3"),
                    },
                    Op::Child {
                        h: d("d3"),
                        op: ChildOp::Write,
                        p: p("new"),
                        d: 0,
                    },
                    Op::Child {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("out-file"),
                        d: 0,
                    },
                    Op::Child {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("a.txt"),
                        d: 0,
                    },
                    Op::Child {
                        h: d("box"),
                        op: ChildOp::Rm,
                        p: p("a.txt"),
                        d: 0,
                    },
                    Op::PledgeFs,
                    Op::Child {
                        h: d("data"),
                        op: ChildOp::List,
                        p: p("."),
                        d: 0,
                    },
                ],
            ),
        ),
        // 8. A rename or link makes a file reachable by every handle of
        // the destination's grant, not only the one named in the call: the
        // source must hold the grant's ceiling there (docs/authority.md).
        (
            "8-ceiling-rename-attenuated",
            input(
                open_setup(),
                vec![
                    Op::Attenuate {
                        h: d("data"),
                        r: R_CREATE | R_REMOVE,
                        new: d("d3"),
                    },
                    Op::Rename {
                        h: d("d3"),
                        p: p("a.txt"),
                        q: p("new"),
                    },
                    Op::Rename {
                        h: d("d3"),
                        p: p("sub/b.txt"),
                        q: p("sub/new"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("new"),
                    },
                ],
            ),
        ),
        (
            "8-ceiling-link-weak-descriptor",
            input(
                open_setup(),
                vec![
                    Op::ToDescriptor {
                        h: d("data"),
                        r: R_CREATE,
                        w: w("w0"),
                    },
                    Op::WLink {
                        w: w("w0"),
                        p: p("a.txt"),
                        w2: w("w0"),
                        q: p("new"),
                    },
                    Op::ToDescriptor {
                        h: d("ro"),
                        r: RL,
                        w: w("w1"),
                    },
                    Op::ToDescriptor {
                        h: d("data"),
                        r: R_CREATE | R_REMOVE,
                        w: w("w2"),
                    },
                    Op::WRename {
                        w: w("w2"),
                        p: p("sub/b.txt"),
                        w2: w("w2"),
                        q: p("sub/new"),
                    },
                    Op::WLink {
                        w: w("w1"),
                        p: p("ro/r.txt"),
                        w2: w("w2"),
                        q: p("new"),
                    },
                ],
            ),
        ),
        // 9. A rename over an existing name needs `write` there.
        (
            "9-rename-replaces-without-write",
            input(
                scoped(R_ALL & !R_WRITE, 1),
                vec![
                    Op::Rename {
                        h: d("data"),
                        p: p("sub/b.txt"),
                        q: p("sub/deep/c.txt"),
                    },
                    Op::Read {
                        h: d("data"),
                        p: p("sub/deep/c.txt"),
                    },
                ],
            ),
        ),
        // A child that keeps its copy: the parent's drop leaves it working,
        // the parent's revoke and pledge reach it.
        (
            "child-keeps-copy",
            input(
                open_setup(),
                vec![
                    Op::Revocable {
                        h: d("data"),
                        new: d("d3"),
                        rev: 0,
                    },
                    Op::Serve { h: d("d3") },
                    Op::KidOp {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("a.txt"),
                        d: 0,
                    },
                    Op::KidOp {
                        h: d("d3"),
                        op: ChildOp::Write,
                        p: p("new"),
                        d: 1,
                    },
                    Op::KidOp {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("out-file"),
                        d: 0,
                    },
                    Op::Drop { h: d("d3") },
                    Op::KidOp {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("new"),
                        d: 0,
                    },
                    Op::Revoke { rev: 0 },
                    Op::KidOp {
                        h: d("d3"),
                        op: ChildOp::Read,
                        p: p("a.txt"),
                        d: 0,
                    },
                    Op::Serve { h: d("ro") },
                    Op::KidOp {
                        h: d("ro"),
                        op: ChildOp::List,
                        p: p("."),
                        d: 0,
                    },
                    Op::KidOp {
                        h: d("ro"),
                        op: ChildOp::Write,
                        p: p("new"),
                        d: 0,
                    },
                    Op::PledgeFs,
                    Op::KidOp {
                        h: d("ro"),
                        op: ChildOp::Read,
                        p: p("a.txt"),
                        d: 0,
                    },
                ],
            ),
        ),
    ]
}

/// Writes the seeds into `dir`, one file each, named after the case.
pub fn write_corpus(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, input) in seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), input.encode())?;
    }
    Ok(())
}
