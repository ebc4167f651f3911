//! `runaway`: how long after a busy child's budget runs out its parent
//! sees its status, for both budgets a busy loop can exhaust:
//!
//! - fuel: a child spinning (components/probe given `loop`) with a fuel
//!   budget, timed from the spawn to the parent's `wait` returning
//!   `out-of-cpu`, against the same child instantiated bare and called
//!   with the same fuel until its fuel trap; the difference is the delay;
//! - time: the same child with ample fuel and a 20 ms timeout; the delay
//!   is from the deadline (20 ms after the spawn began) to `wait`
//!   returning `timed-out`.
//!
//! Target: at most 10 ms (the fuel delay at the median, the timeout delay
//! at p99, whichever is worse).
//!
//! `metering`: what metering costs a busy loop: capbroker's engine (fuel
//! and epochs, a yield to tokio at every tick) against an engine with no
//! metering at all, on the same loop. Target: at most 15 %.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::run::runner::new_store;
use capbroker::run::wit::process::{ExitStatus, Host, HostProcess};
use capbroker::spawn::{ChildLimits, SpawnGrant};
use capbroker::BrokerView;
use capbroker::{BrokerCtx, Components, Limits, Runtime};
use wasmtime::{Config, Engine, Instance, Module, Store};

use crate::report::{median, quantile, spread, Metric, Shuffle, Target};
use crate::spawn::Parent;
use crate::Opts;

const FUEL: u64 = 200_000_000;
const TIMEOUT: Duration = Duration::from_millis(20);

pub fn run(
    opts: &Opts,
    guests: &Path,
    runaway: bool,
    metering: bool,
) -> (Option<Metric>, Option<Metric>) {
    let rt = Runtime::new().unwrap();
    (
        runaway.then(|| runaway_metric(opts, guests, &rt)),
        metering.then(|| metering_metric(opts, &rt)),
    )
}

fn runaway_metric(opts: &Opts, guests: &Path, rt: &Runtime) -> Metric {
    let (rounds, per_round) = if opts.quick { (5, 8) } else { (10, 20) };
    let pre = rt.load_child(&guests.join("probe.wasm")).unwrap();
    let mut components = Components::new();
    components.insert("probe", pre.clone()).unwrap();
    let components = Arc::new(components);
    let engine = rt.engine().clone();
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let dir_path = dir.path().to_owned();
    // samples[op][round]: 0 spawn out of fuel, 1 bare out of fuel, 2 spawn
    // past its timeout (time after the deadline).
    let samples: Vec<Vec<Vec<Duration>>> = multi.block_on(async move {
        tokio::spawn(async move {
            let grant = SpawnGrant {
                limits: ChildLimits {
                    max_memory: 64 << 20,
                    max_fuel: 100_000_000_000,
                    timeout_ms: 60_000,
                },
                max_children: 16,
                components: None,
            };
            let mut parent = Parent::with_grant(&engine, &components, &dir_path, grant);
            let mut spawn = async |fuel: u64, timeout: Duration| -> (Duration, ExitStatus) {
                let limits = ChildLimits {
                    max_memory: 64 << 20,
                    max_fuel: fuel,
                    timeout_ms: timeout.as_millis() as u64,
                };
                let t = Instant::now();
                let mut view = parent.store.data_mut().broker();
                let p = Host::spawn(
                    &mut view,
                    wasmtime::component::Resource::new_borrow(parent.spawner),
                    "probe".into(),
                    None,
                    Vec::new(),
                    limits,
                    b"loop".to_vec(),
                )
                .await
                .unwrap_or_else(|e| panic!("spawn: {e:?}"));
                let status = HostProcess::wait(
                    &mut view,
                    wasmtime::component::Resource::new_borrow(p.rep()),
                )
                .await
                .unwrap();
                let took = t.elapsed();
                HostProcess::drop(&mut view, p).unwrap();
                (took, status)
            };
            let bare = async |fuel: u64| -> Duration {
                let ctx = BrokerCtx::new("probe", components.clone());
                let limits = Limits {
                    max_fuel: Some(fuel),
                    ..Limits::default()
                };
                let t = Instant::now();
                let mut store = new_store(&engine, ctx, &limits);
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                let start = instance
                    .get_typed_func::<(Vec<u8>,), (Result<Vec<u8>, String>,)>(&mut store, "start")
                    .unwrap();
                let err = start
                    .call_async(&mut store, (b"loop".to_vec(),))
                    .await
                    .expect_err("the loop ends only out of fuel");
                assert_eq!(
                    err.downcast_ref::<wasmtime::Trap>(),
                    Some(&wasmtime::Trap::OutOfFuel)
                );
                t.elapsed()
            };
            let mut samples = vec![Vec::new(); 3];
            let mut order = [0, 1, 2];
            let mut rng = Shuffle::from_clock();
            for _ in 0..rounds {
                let mut round = vec![Vec::new(); 3];
                for _ in 0..per_round {
                    rng.shuffle(&mut order);
                    for &op in &order {
                        let d = match op {
                            0 => {
                                let (d, s) = spawn(FUEL, Duration::from_secs(60)).await;
                                assert!(matches!(s, ExitStatus::OutOfCpu), "{s:?}");
                                d
                            }
                            1 => bare(FUEL).await,
                            _ => {
                                let (d, s) = spawn(100_000_000_000, TIMEOUT).await;
                                assert!(matches!(s, ExitStatus::TimedOut), "{s:?}");
                                d.saturating_sub(TIMEOUT)
                            }
                        };
                        round[op].push(d);
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
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |op: usize, q: f64| -> Vec<f64> {
        samples[op].iter().map(|r| ms(quantile(r, q))).collect()
    };
    let fuel_delay: Vec<f64> = p(0, 0.5)
        .iter()
        .zip(p(1, 0.5))
        .map(|(s, b)| s - b)
        .collect();
    let late_p99 = p(2, 0.99);
    let mut detail = format!(
        "components/probe spinning; {rounds} rounds of {per_round} of each, interleaved in \
         random order\n\
         out of fuel ({FUEL} fuel): spawn → wait p50 {:.2} ms, bare instantiate + call to the \
         fuel trap p50 {:.2} ms\n\
         fuel delay (p50 difference): {} ms\n\
         past a {TIMEOUT:?} timeout: status seen after the deadline p50 {:.2} ms, p99 {} ms\n",
        median(&mut p(0, 0.5)),
        median(&mut p(1, 0.5)),
        spread(&fuel_delay, 2),
        median(&mut p(2, 0.5)),
        spread(&late_p99, 2),
    );
    detail.pop();
    let (fuel, late) = (
        median(&mut fuel_delay.clone()),
        median(&mut late_p99.clone()),
    );
    Metric {
        value: Ok(fuel.max(late)),
        also: vec![(
            format!("fuel delay {fuel:.2} ms, timeout delay (p99) {late:.2} ms"),
            true,
        )],
        detail,
        ..Metric::new("runaway", "ms", Target::AtMost(10.0))
    }
}

const LOOP: &str = r#"(module (func (export "spin") (param $n i32) (result i32)
      (local $acc i32)
      (loop $l
        (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br_if $l (local.get $n)))
      (local.get $acc)))"#;

/// The loop on an engine without any metering.
fn unmetered(engine: &Engine, module: &Module, n: i32) -> Duration {
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    let spin = instance
        .get_typed_func::<i32, i32>(&mut store, "spin")
        .unwrap();
    let t = Instant::now();
    std::hint::black_box(spin.call(&mut store, n).unwrap());
    t.elapsed()
}

/// The loop on capbroker's engine, in a store as capbroker makes them:
/// fuel, and a yield to tokio at every epoch tick.
async fn metered(rt: &Runtime, module: &Module, n: i32) -> Duration {
    let ctx = BrokerCtx::new("loop", Arc::new(Components::new()));
    let mut store = new_store(rt.engine(), ctx, &Limits::default());
    let instance = Instance::new_async(&mut store, module, &[]).await.unwrap();
    let spin = instance
        .get_typed_func::<i32, i32>(&mut store, "spin")
        .unwrap();
    let t = Instant::now();
    std::hint::black_box(spin.call_async(&mut store, n).await.unwrap());
    t.elapsed()
}

fn metering_metric(opts: &Opts, rt: &Runtime) -> Metric {
    let (rounds, n) = if opts.quick {
        (7, 100_000_000)
    } else {
        (15, 200_000_000)
    };
    let plain_engine = Engine::new(&Config::new()).unwrap();
    let plain = Module::new(&plain_engine, wat::parse_str(LOOP).unwrap()).unwrap();
    let ours = Module::new(rt.engine(), wat::parse_str(LOOP).unwrap()).unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Shuffle::from_clock();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    single.block_on(async {
        // Warm-up.
        unmetered(&plain_engine, &plain, n / 10);
        metered(rt, &ours, n / 10).await;
        for _ in 0..rounds {
            let mut order = [0, 1];
            rng.shuffle(&mut order);
            for op in order {
                match op {
                    0 => a.push(unmetered(&plain_engine, &plain, n)),
                    _ => b.push(metered(rt, &ours, n).await),
                }
            }
        }
    });
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let cost: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| (ms(b) / ms(a) - 1.0) * 100.0)
        .collect();
    let detail = format!(
        "a busy loop of {n} iterations, {rounds} rounds, each in random order\n\
         no metering: {} ms\n\
         capbroker's (fuel + epochs, yielding every tick): {} ms\n\
         cost: {} %",
        spread(&a.iter().map(ms).collect::<Vec<_>>(), 1),
        spread(&b.iter().map(ms).collect::<Vec<_>>(), 1),
        spread(&cost, 1)
    );
    Metric {
        value: Ok(median(&mut cost.clone())),
        detail,
        ..Metric::new("metering", "%", Target::AtMost(15.0))
    }
}
