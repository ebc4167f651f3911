//! `spawn`: a full capbroker spawn → run → exit of a child
//! (components/tiny) with two directory handles shared, as
//! `process.spawn` + `process.wait` do it, against bare instantiation and a
//! call of the same child's entry point with a fresh store, on the same
//! engine. Target: at most 1.2 times the anchor (p50).
//!
//! For reference it also times bare instantiation alone, and instantiation
//! and a call with the child handed the same two handles: what is left of
//! the spawn above the latter is the spawn machinery itself. Last, spawns
//! per second with a parent per core.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::core::Rights;
use capbroker::fs::DirHandle;
use capbroker::grants::{HandleValue, Share, Shared};
use capbroker::run::runner::new_store;
use capbroker::run::wit::process::{ExitStatus, Host, HostProcess};
use capbroker::run::State;
use capbroker::spawn::{ChildLimits, SpawnGrant};
use capbroker::Components;
use capbroker::{BrokerCtx, BrokerView, Limits, Runtime};
use wasmtime::component::{InstancePre, Resource};
use wasmtime::{Engine, Store};

use crate::report::{median, quantile, spread, Metric, Shuffle, Target};
use crate::Opts;

/// A parent's store holding a spawner and two directory handles.
pub struct Parent {
    pub store: Store<State>,
    pub spawner: u32,
    dirs: [u32; 2],
}

impl Parent {
    pub fn new(engine: &Engine, components: &Arc<Components>, dir: &Path) -> Parent {
        let grant = SpawnGrant {
            max_children: 10_000,
            ..SpawnGrant::default()
        };
        Parent::with_grant(engine, components, dir, grant)
    }

    /// A parent holding a spawner of `grant`.
    pub fn with_grant(
        engine: &Engine,
        components: &Arc<Components>,
        dir: &Path,
        grant: SpawnGrant,
    ) -> Parent {
        let ctx = BrokerCtx::new("bench", components.clone());
        // Room for a handle on each child the grant lets it have.
        let limits = Limits {
            max_handles: Limits::default()
                .max_handles
                .max(grant.max_children as usize + 64),
            ..Limits::default()
        };
        let mut store = new_store(engine, ctx, &limits);
        let view = store.data_mut().broker();
        let spawner = view
            .table
            .push(grant.spawner("sp", &components.names()).unwrap())
            .unwrap()
            .rep();
        let open =
            || cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()).unwrap();
        let a = view
            .table
            .push(DirHandle::new(open(), Rights::all(), "a"))
            .unwrap()
            .rep();
        let b = view
            .table
            .push(DirHandle::new(open(), Rights::READ, "b"))
            .unwrap()
            .rep();
        Parent {
            store,
            spawner,
            dirs: [a, b],
        }
    }

    /// spawn → run → exit, as a guest's `spawn` and `wait` calls do it.
    pub async fn spawn_and_wait(&mut self) {
        let limits = ChildLimits {
            max_memory: 16 << 20,
            max_fuel: 10_000_000,
            timeout_ms: 5_000,
        };
        let grants = vec![
            Share {
                name: "a".into(),
                handle: Shared::Dir(Resource::new_borrow(self.dirs[0])),
            },
            Share {
                name: "b".into(),
                handle: Shared::Dir(Resource::new_borrow(self.dirs[1])),
            },
        ];
        let mut view = self.store.data_mut().broker();
        let p = Host::spawn(
            &mut view,
            Resource::new_borrow(self.spawner),
            "tiny".into(),
            None,
            grants,
            limits,
            b"x".to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("spawn failed: {e:?}"));
        let status = HostProcess::wait(&mut view, Resource::new_borrow(p.rep()))
            .await
            .unwrap();
        assert!(
            matches!(&status, ExitStatus::Finished(out) if out == b"x2"),
            "{status:?}"
        );
        HostProcess::drop(&mut view, p).unwrap();
    }
}

async fn bare(engine: &Engine, components: &Arc<Components>, pre: &InstancePre<State>) {
    let ctx = BrokerCtx::new("tiny", components.clone());
    let mut store = new_store(engine, ctx, &Limits::default());
    pre.instantiate_async(&mut store).await.unwrap();
}

/// Bare instantiation and a call of the entry point: what running the child
/// costs, whoever starts it. With `dirs`, the child is handed copies of
/// them, as in the spawn.
async fn bare_and_call(
    engine: &Engine,
    components: &Arc<Components>,
    pre: &InstancePre<State>,
    dirs: Option<&[DirHandle; 2]>,
) {
    let mut ctx = BrokerCtx::new("tiny", components.clone());
    if let Some([a, b]) = dirs {
        ctx.grant("a", HandleValue::Dir(a.copy("a")));
        ctx.grant("b", HandleValue::Dir(b.copy("b")));
    }
    let mut store = new_store(engine, ctx, &Limits::default());
    let instance = pre.instantiate_async(&mut store).await.unwrap();
    let start = instance
        .get_typed_func::<(Vec<u8>,), (Result<Vec<u8>, String>,)>(&mut store, "start")
        .unwrap();
    let (out,) = start
        .call_async(&mut store, (b"x".to_vec(),))
        .await
        .unwrap();
    assert_eq!(out.unwrap(), if dirs.is_some() { b"x2" } else { b"x0" });
}

/// Two handles on `dir`, for the child to be handed copies of.
fn open_two(dir: &Path) -> [DirHandle; 2] {
    let open = || {
        let d = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority());
        DirHandle::new(d.unwrap(), Rights::all(), "d")
    };
    [open(), open()]
}

/// The runtime, and components/tiny loaded as `tiny`.
pub fn setup(guests: &Path) -> (Runtime, Arc<Components>, InstancePre<State>) {
    let rt = Runtime::new().unwrap();
    let (components, pre) = components(&rt, guests);
    (rt, components, pre)
}

/// `tiny`, compiled on `rt`, as the one component spawners may start.
pub fn components(rt: &Runtime, guests: &Path) -> (Arc<Components>, InstancePre<State>) {
    let pre = rt.load_child(&guests.join("tiny.wasm")).unwrap();
    let mut components = Components::new();
    components.insert("tiny", pre.clone()).unwrap();
    (Arc::new(components), pre)
}

/// A current-thread runtime: latency on one thread, so that no cross-thread
/// wake-up is counted.
fn single() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `PROFILE=spawn`: `n` spawns; `spawn-anchor`: `n` bare instantiations
/// and calls.
pub fn profile(what: &str, n: usize) {
    let guests = crate::root().join("target/guests/wasm32-wasip2/release");
    let (rt, components, pre) = setup(&guests);
    let engine = rt.engine().clone();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let what = what.to_string();
    let t = Instant::now();
    single().block_on(async move {
        tokio::spawn(async move {
            let mut parent = Parent::new(&engine, &components, &dir);
            for _ in 0..n {
                match what.as_str() {
                    "spawn-anchor" => bare_and_call(&engine, &components, &pre, None).await,
                    _ => parent.spawn_and_wait().await,
                }
            }
        })
        .await
        .unwrap()
    });
    println!("{:.2} µs each", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}

pub fn run(opts: &Opts, guests: &Path) -> Metric {
    let (rounds, per_round, warmup) = if opts.quick {
        (10, 1_000, 1_000)
    } else {
        (30, 2_000, 2_000)
    };
    let (rt, components, pre) = setup(guests);
    let engine = rt.engine().clone();
    let dir = tempfile::tempdir().unwrap();
    // samples[op][round]: 0 bare instantiate, 1 spawn, 2 bare + call,
    // 3 bare + call with 2 handles.
    let samples: Vec<Vec<Vec<Duration>>> = single().block_on({
        let (engine, components, pre) = (engine.clone(), components.clone(), pre.clone());
        let dir = dir.path().to_owned();
        // The parent runs as a task, as capbroker runs every component.
        async move {
            tokio::spawn(async move {
                let mut parent = Parent::new(&engine, &components, &dir);
                let dirs = open_two(&dir);
                for _ in 0..warmup {
                    bare_and_call(&engine, &components, &pre, None).await;
                    parent.spawn_and_wait().await;
                }
                let mut samples = vec![Vec::new(); 4];
                let mut order = [0, 1, 2, 3];
                let mut rng = Shuffle::from_clock();
                for _ in 0..rounds {
                    let mut round: Vec<Vec<Duration>> =
                        (0..4).map(|_| Vec::with_capacity(per_round)).collect();
                    for _ in 0..per_round {
                        rng.shuffle(&mut order);
                        for &which in &order {
                            let t = Instant::now();
                            match which {
                                0 => bare(&engine, &components, &pre).await,
                                1 => parent.spawn_and_wait().await,
                                2 => bare_and_call(&engine, &components, &pre, None).await,
                                _ => bare_and_call(&engine, &components, &pre, Some(&dirs)).await,
                            }
                            round[which].push(t.elapsed());
                        }
                    }
                    for (s, mut r) in samples.iter_mut().zip(round) {
                        r.sort();
                        s.push(r);
                    }
                }
                samples
            })
            .await
            .unwrap()
        }
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |op: usize, q: f64| -> Vec<f64> {
        samples[op].iter().map(|r| us(quantile(r, q))).collect()
    };
    let ratios: Vec<f64> = p(1, 0.5)
        .iter()
        .zip(p(2, 0.5))
        .map(|(b, c)| b / c)
        .collect();
    let mut detail = format!(
        "components/tiny, {rounds} rounds of {per_round} of each, interleaved in random order; \
         medians over rounds of each round's p50 and p99\n"
    );
    for (op, label) in [
        (0, "bare InstancePre::instantiate, fresh store"),
        (2, "anchor: bare instantiate + call `start`"),
        (3, "  … the child taking the same 2 handles"),
        (1, "capbroker spawn → run → exit, 2 handles"),
    ] {
        detail += &format!(
            "{label:<44} p50 {:>6.2} µs  p99 {:>6.2} µs\n",
            median(&mut p(op, 0.5)),
            median(&mut p(op, 0.99))
        );
    }
    detail += &format!("ratio spawn/anchor (p50): {}\n", spread(&ratios, 3));
    let g_ratios: Vec<f64> = p(1, 0.5)
        .iter()
        .zip(p(3, 0.5))
        .map(|(b, g)| b / g)
        .collect();
    detail += &format!(
        "spawn over the call with the same handles: {}\n",
        spread(&g_ratios, 3)
    );
    detail += &throughput(&engine, &components, dir.path(), opts.quick);
    Metric {
        value: Ok(median(&mut ratios.clone())),
        detail,
        ..Metric::new("spawn", "ratio", Target::AtMost(1.2))
    }
}

/// Spawns per second with a parent per core, each spawning in a loop.
fn throughput(engine: &Engine, components: &Arc<Components>, dir: &Path, quick: bool) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let window = Duration::from_secs(if quick { 1 } else { 3 });
    let total: usize = multi.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..cores {
            let mut parent = Parent::new(engine, components, dir);
            tasks.push(tokio::spawn(async move {
                let end = Instant::now() + window;
                let mut n = 0;
                while Instant::now() < end {
                    parent.spawn_and_wait().await;
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    format!(
        "spawns per second on {cores} cores: {:.0}",
        total as f64 / window.as_secs_f64()
    )
}
