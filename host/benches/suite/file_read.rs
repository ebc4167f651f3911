//! `file-read`: reading a 4 KiB file by its path through each of
//! capbroker's two file-system faces, against unguarded wasmtime-wasi in
//! the same process, on the same file:
//!
//! - capbroker's `fs` interface: `dir.read-file(path)`, one call;
//! - capbroker's guarded `wasi:filesystem`: `open-at`, `read` of 4 KiB at
//!   offset 0, and the descriptor's drop, as a guest's `std::fs::read` does;
//! - the anchor: the same three calls on wasmtime-wasi's own
//!   `wasi:filesystem`, with the directory preopened with every permission.
//!
//! The host functions are called as the component model calls them, on
//! the store's table, without a guest: what is measured is the host's
//! work. Both WASI contexts are built the same way (wasmtime-wasi runs file
//! I/O on tokio's blocking threads unless told otherwise). For reference,
//! it also times one 4 KiB `read` on an open descriptor through each WASI.
//! Target: each face at most 1.1 times the anchor; the metric is the worse.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::core::pledges::Pledges;
use capbroker::core::view::WasiFace;
use capbroker::core::{Rights, View};
use capbroker::fs::wit::fs::HostDir;
use capbroker::fs::{DirGrant, DirHandle};
use capbroker::run::runner::new_store_with_wasi;
use capbroker::run::State;
use capbroker::wasi::{GuardedWasiView, WasiGrants};
use capbroker::{BrokerCtx, Components, Limits, Runtime};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::report::{median, quantile, spread, Metric, Shuffle, Target};
use crate::Opts;

const FILE: &str = "four-k.txt";
const SIZE: usize = 4096;

/// The same directory, through capbroker's store and through a plain
/// wasmtime-wasi context.
struct Bench {
    store: Store<State>,
    /// The `fs` face's handle on the directory, in the store's table.
    dir: u32,
    /// The guarded WASI face's preopen, and a descriptor open on the file.
    guarded: (u32, u32),
    plain: Plain,
    /// The plain context's preopen, and a descriptor open on the file.
    plain_fds: (u32, u32),
}

/// wasmtime-wasi on its own.
struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl wasmtime_wasi::WasiView for Plain {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn borrow(rep: u32) -> Resource<Descriptor> {
    Resource::new_borrow(rep)
}

impl Bench {
    async fn new(rt: &Runtime, dir: &Path) -> Bench {
        let ctx = BrokerCtx::new("bench", Arc::new(Components::new()));
        let pledges = Pledges::default();
        let grants = WasiGrants {
            dirs: vec![(
                "data".into(),
                DirGrant::new(dir.to_owned(), Rights::all(), None),
            )],
            ..WasiGrants::default()
        };
        let (wasi, state) = grants.build(&[], &pledges, ctx.audit()).unwrap();
        let ctx = ctx.with_wasi(state, pledges);
        let mut store = new_store_with_wasi(rt.engine(), ctx, wasi, &Limits::default());
        let open = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()).unwrap();
        let handle = store.data_mut().guarded().wasi.table;
        let dir_rep = handle
            .push(DirHandle::new(open, Rights::all(), "data"))
            .unwrap()
            .rep();
        let g = store.data_mut().guarded();
        let mut face = WasiFace {
            wasi: g.wasi,
            core: g.core,
            kind: g.fs,
        };
        let pre = face.get_directories().unwrap().remove(0).0.rep();
        let fd = HostDescriptor::open_at(
            &mut face,
            borrow(pre),
            PathFlags::empty(),
            FILE.into(),
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await
        .unwrap()
        .rep();

        let mut b = WasiCtx::builder();
        b.preopened_dir(dir, "data", FsPerms::ReadWrite).unwrap();
        let mut plain = Plain {
            ctx: b.build(),
            table: ResourceTable::new(),
        };
        let mut fs = plain.filesystem();
        let plain_pre = fs.get_directories().unwrap().remove(0).0.rep();
        let plain_fd = HostDescriptor::open_at(
            &mut fs,
            borrow(plain_pre),
            PathFlags::empty(),
            FILE.into(),
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await
        .unwrap()
        .rep();
        Bench {
            store,
            dir: dir_rep,
            guarded: (pre, fd),
            plain,
            plain_fds: (plain_pre, plain_fd),
        }
    }

    /// `dir.read-file` through the `fs` interface.
    fn fs_read(&mut self) {
        let g = self.store.data_mut().guarded();
        let mut view = View {
            table: g.wasi.table,
            core: g.core,
            kind: g.fs,
        };
        let data = HostDir::read_file(&mut view, Resource::new_borrow(self.dir), FILE.into())
            .unwrap_or_else(|e| panic!("read-file: {e:?}"));
        assert_eq!(data.len(), SIZE);
    }

    /// open-at, read, drop through the guarded `wasi:filesystem`.
    async fn guarded_read(&mut self) {
        let g = self.store.data_mut().guarded();
        let mut face = WasiFace {
            wasi: g.wasi,
            core: g.core,
            kind: g.fs,
        };
        read_whole(&mut face, self.guarded.0).await;
    }

    /// open-at, read, drop through wasmtime-wasi's own.
    async fn plain_read(&mut self) {
        read_whole(&mut self.plain.filesystem(), self.plain_fds.0).await;
    }

    /// One 4 KiB read on the open descriptor, guarded or plain.
    async fn held_read(&mut self, guarded: bool) {
        let data = if guarded {
            let g = self.store.data_mut().guarded();
            let mut face = WasiFace {
                wasi: g.wasi,
                core: g.core,
                kind: g.fs,
            };
            HostDescriptor::read(&mut face, borrow(self.guarded.1), SIZE as u64, 0).await
        } else {
            HostDescriptor::read(
                &mut self.plain.filesystem(),
                borrow(self.plain_fds.1),
                SIZE as u64,
                0,
            )
            .await
        };
        assert_eq!(data.unwrap().0.len(), SIZE);
    }
}

async fn read_whole(fs: &mut impl HostDescriptor, pre: u32) {
    let fd = fs
        .open_at(
            borrow(pre),
            PathFlags::empty(),
            FILE.into(),
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await
        .unwrap();
    let rep = fd.rep();
    let (data, _) = fs.read(borrow(rep), SIZE as u64, 0).await.unwrap();
    assert_eq!(data.len(), SIZE);
    fs.drop(fd).unwrap();
}

fn setup() -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), vec![b'x'; SIZE]).unwrap();
    (Runtime::new().unwrap(), dir)
}

fn single() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `PROFILE=file-read` (the `fs` face), `file-read-wasi` (the guarded
/// WASI face) or `file-read-anchor`: `n` reads.
pub fn profile(what: &str, n: usize) {
    let (rt, dir) = setup();
    let t = Instant::now();
    single().block_on(async {
        let mut b = Bench::new(&rt, dir.path()).await;
        for _ in 0..n {
            match what {
                "file-read-wasi" => b.guarded_read().await,
                "file-read-anchor" => b.plain_read().await,
                _ => b.fs_read(),
            }
        }
    });
    println!("{:.2} µs each", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}

const OPS: [&str; 5] = [
    "anchor: wasmtime-wasi open-at + read + drop",
    "capbroker fs: dir.read-file",
    "capbroker guarded wasi: open-at + read + drop",
    "  reference: wasmtime-wasi read, open fd",
    "  reference: guarded wasi read, open fd",
];

pub fn run(opts: &Opts) -> Metric {
    let (rounds, per_round) = if opts.quick { (10, 500) } else { (30, 1_000) };
    let (rt, dir) = setup();
    // samples[op][round], each round's sorted.
    let samples: Vec<Vec<Vec<Duration>>> = single().block_on(async {
        let mut b = Bench::new(&rt, dir.path()).await;
        for _ in 0..per_round {
            b.plain_read().await;
            b.fs_read();
            b.guarded_read().await;
        }
        let mut samples = vec![Vec::new(); OPS.len()];
        let mut order: Vec<usize> = (0..OPS.len()).collect();
        let mut rng = Shuffle::from_clock();
        for _ in 0..rounds {
            let mut round: Vec<Vec<Duration>> = (0..OPS.len())
                .map(|_| Vec::with_capacity(per_round))
                .collect();
            for _ in 0..per_round {
                rng.shuffle(&mut order);
                for &op in &order {
                    let t = Instant::now();
                    match op {
                        0 => b.plain_read().await,
                        1 => b.fs_read(),
                        2 => b.guarded_read().await,
                        3 => b.held_read(false).await,
                        _ => b.held_read(true).await,
                    }
                    round[op].push(t.elapsed());
                }
            }
            for (s, mut r) in samples.iter_mut().zip(round) {
                r.sort();
                s.push(r);
            }
        }
        samples
    });
    let p = |op: usize, q: f64| -> Vec<f64> {
        samples[op]
            .iter()
            .map(|r| quantile(r, q).as_secs_f64() * 1e6)
            .collect()
    };
    let ratio = |op: usize, anchor: usize| -> Vec<f64> {
        p(op, 0.5)
            .iter()
            .zip(p(anchor, 0.5))
            .map(|(a, b)| a / b)
            .collect()
    };
    let mut detail = format!(
        "a {SIZE}-byte file, {rounds} rounds of {per_round} of each, interleaved in random \
         order; medians over rounds of each round's p50 and p99\n"
    );
    for (op, label) in OPS.iter().enumerate() {
        detail += &format!(
            "{label:<46} p50 {:>6.2} µs  p99 {:>6.2} µs\n",
            median(&mut p(op, 0.5)),
            median(&mut p(op, 0.99))
        );
    }
    let (fs, wasi) = (ratio(1, 0), ratio(2, 0));
    detail += &format!("fs face / anchor (p50): {}\n", spread(&fs, 3));
    detail += &format!("guarded wasi face / anchor (p50): {}\n", spread(&wasi, 3));
    detail += &format!(
        "reference, read on an open fd, guarded / plain: {}",
        spread(&ratio(4, 3), 3)
    );
    let (fs, wasi) = (median(&mut fs.clone()), median(&mut wasi.clone()));
    Metric {
        value: Ok(fs.max(wasi)),
        also: vec![(
            format!("fs face {fs:.2}, guarded wasi face {wasi:.2}"),
            true,
        )],
        detail,
        ..Metric::new("file-read", "ratio", Target::AtMost(1.1))
    }
}
