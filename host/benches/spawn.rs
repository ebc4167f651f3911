//! How much a capbroker spawn costs over bare wasmtime instantiation.
//!
//! Measures, in one run and on the same engine and child component
//! (components/tiny):
//! (a) bare `InstancePre::instantiate` with a fresh store;
//! (b) a full capbroker spawn → run → exit of the child with two directory
//!     handles shared, as `process.spawn` + `process.wait` do it;
//! and prints p50/p99 of each, the ratio b/a, and spawns per second with
//! every core busy. Last, it measures what metering CPU with fuel costs
//! against epochs alone, on a busy loop.
//!
//! For reference it also times instantiation and a call of the entry point,
//! without handles and with the child handed the same two: what is left
//! of (b) above the latter is the spawn machinery itself.
//!
//! With `PROFILE_SPAWN=b` it only spawns (b), `PROFILE_COUNT` times
//! (300,000 by default), for a profiler; `a`, `c` and `g` run the others.

use std::path::{Path, PathBuf};
use std::process::Command;
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
use wasmtime::{Config, Engine, Instance, Module, Store};

const ITERATIONS: usize = 20_000;
const WARMUP: usize = 2_000;

fn tiny() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "tiny"])
        .current_dir(root.join("components"))
        .status()
        .expect("build the guest components");
    assert!(status.success());
    root.join("target/guests/wasm32-wasip2/release/tiny.wasm")
}

/// A parent's store holding a spawner and two directory handles.
struct Parent {
    store: Store<State>,
    spawner: u32,
    dirs: [u32; 2],
}

impl Parent {
    fn new(engine: &Engine, components: &Arc<Components>, dir: &Path) -> Parent {
        let ctx = BrokerCtx::new("bench", components.clone());
        let mut store = new_store(engine, ctx, &Limits::default());
        let grant = SpawnGrant {
            max_children: 10_000,
            ..SpawnGrant::default()
        };
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
    async fn spawn_and_wait(&mut self) {
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
/// them, as in (b).
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

/// A xorshift generator, enough to shuffle the order of four measurements.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{label}: p50 {:>7.1} µs   p99 {:>7.1} µs",
        micros(p50),
        micros(p99)
    );
    p50
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let tiny = tiny();
    let rt = Runtime::new().unwrap();
    let pre = rt.load_child(&tiny).unwrap();
    let mut components = Components::new();
    components.insert("tiny", pre.clone()).unwrap();
    let components = Arc::new(components);
    let engine = rt.engine().clone();
    let dir = tempfile::tempdir().unwrap();

    if let Ok(what) = std::env::var("PROFILE_SPAWN") {
        let n: usize = std::env::var("PROFILE_COUNT").map_or(300_000, |n| n.parse().unwrap());
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = dir.path().to_owned();
        let t = Instant::now();
        single.block_on(async move {
            // As a task, as below: the way capbroker runs components.
            tokio::spawn(async move {
                let mut parent = Parent::new(&engine, &components, &dir);
                let dirs = open_two(&dir);
                for _ in 0..n {
                    match what.as_str() {
                        "a" => bare(&engine, &components, &pre).await,
                        "c" => bare_and_call(&engine, &components, &pre, None).await,
                        "g" => bare_and_call(&engine, &components, &pre, Some(&dirs)).await,
                        _ => parent.spawn_and_wait().await,
                    }
                }
            })
            .await
            .unwrap()
        });
        println!("{:.2} µs each", micros(t.elapsed()) / n as f64);
        return;
    }
    // Latency on one thread, so that no cross-thread wake-up is counted.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The parent runs as a task, as capbroker runs every component: a task
    // woken by a task it spawned is rescheduled on the same thread.
    let (a, b, c, g) = single.block_on(async {
        let (engine, components, pre) = (engine.clone(), components.clone(), pre.clone());
        let dir = dir.path().to_owned();
        tokio::spawn(async move {
            let mut parent = Parent::new(&engine, &components, &dir);
            let dirs = open_two(&dir);
            for _ in 0..WARMUP {
                bare(&engine, &components, &pre).await;
                parent.spawn_and_wait().await;
            }
            let mut a = Vec::with_capacity(ITERATIONS);
            let mut b = Vec::with_capacity(ITERATIONS);
            let mut c = Vec::with_capacity(ITERATIONS);
            let mut g = Vec::with_capacity(ITERATIONS);
            // Interleave them so that all see the same machine state, in a
            // new order each round: what runs just before a measurement
            // changes its time (caches, branch predictors, the allocator's
            // free slots), and a fixed order would favour some over others.
            let mut order = [0, 1, 2, 3];
            let mut rng = Shuffle(0x9e37_79b9_7f4a_7c15);
            for _ in 0..ITERATIONS {
                rng.shuffle(&mut order);
                for &which in &order {
                    let t = Instant::now();
                    match which {
                        0 => bare(&engine, &components, &pre).await,
                        1 => parent.spawn_and_wait().await,
                        2 => bare_and_call(&engine, &components, &pre, None).await,
                        _ => bare_and_call(&engine, &components, &pre, Some(&dirs)).await,
                    }
                    [&mut a, &mut b, &mut c, &mut g][which].push(t.elapsed());
                }
            }
            (a, b, c, g)
        })
        .await
        .unwrap()
    });
    println!(
        "spawn benchmark: {} (tiny.wasm), {ITERATIONS} runs each",
        tiny.display()
    );
    let a = report("(a) bare InstancePre::instantiate, fresh store       ", a);
    let b = report("(b) capbroker spawn → run → exit, 2 handles shared  ", b);
    report("    for reference: bare instantiate + call `start`   ", c);
    report("      … and the child takes the same 2 handles       ", g);
    println!(
        "ratio b/a (p50): {:.2}   (target ≤ 1.5; p50 of b target < 30 µs)",
        micros(b) / micros(a)
    );

    // Throughput with every core busy: one parent per core, spawning in a loop.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let window = Duration::from_secs(3);
    let total: usize = multi.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..cores {
            let mut parent = Parent::new(&engine, &components, dir.path());
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
    println!(
        "spawns per second on {cores} cores: {:.0}",
        total as f64 / window.as_secs_f64()
    );
    fuel_against_epochs();
}

/// Runs a busy loop of `n` iterations as a core module on an engine with or
/// without fuel (epochs on in both), and returns the best of five times.
fn busy_loop(fuel: bool, n: i32) -> Duration {
    let mut config = Config::new();
    config.consume_fuel(fuel).epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let wasm = wat::parse_str(
        r#"(module (func (export "spin") (param $n i32) (result i32)
              (local $acc i32)
              (loop $l
                (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $n)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br_if $l (local.get $n)))
              (local.get $acc)))"#,
    )
    .unwrap();
    let module = Module::new(&engine, wasm).unwrap();
    (0..5)
        .map(|_| {
            let mut store = Store::new(&engine, ());
            if fuel {
                store.set_fuel(u64::MAX).unwrap();
            }
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = Instance::new(&mut store, &module, &[]).unwrap();
            let spin = instance
                .get_typed_func::<i32, i32>(&mut store, "spin")
                .unwrap();
            let t = Instant::now();
            std::hint::black_box(spin.call(&mut store, n).unwrap());
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn fuel_against_epochs() {
    let n = 200_000_000;
    let epochs = busy_loop(false, n);
    let fuel = busy_loop(true, n);
    println!(
        "CPU metering, {n} loop iterations: epochs only {:.0} ms, fuel + epochs {:.0} ms \
         (fuel costs {:+.0}%)",
        epochs.as_secs_f64() * 1e3,
        fuel.as_secs_f64() * 1e3,
        (fuel.as_secs_f64() / epochs.as_secs_f64() - 1.0) * 100.0
    );
}
