//! `idle-children`: 10,000 children alive at once, each waiting on its
//! mailbox (components/tiny given `wait`), spawned by one parent; the
//! host's resident memory then, and per child over what it was before.
//! Target: all 10,000 alive, in under 1 GiB of host RSS.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::run::ctx::live_instances;
use capbroker::run::wit::process::{ExitStatus, Host, HostProcess};
use capbroker::run::ProcessHandle;
use capbroker::spawn::{ChildLimits, SpawnGrant};
use capbroker::BrokerView;
use wasmtime::component::Resource;

use crate::report::{Metric, Target};
use crate::spawn::Parent;
use crate::Opts;

pub const CHILDREN: u32 = 10_000;

/// The process's resident memory, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

const LIMITS: ChildLimits = ChildLimits {
    max_memory: 16 << 20,
    max_fuel: 10_000_000,
    timeout_ms: 120_000,
};

/// Spawns one `tiny` child given `input`.
async fn spawn(parent: &mut Parent, input: &[u8]) -> Result<Resource<ProcessHandle>, String> {
    let mut view = parent.store.data_mut().broker();
    Host::spawn(
        &mut view,
        Resource::new_borrow(parent.spawner),
        "tiny".into(),
        None,
        Vec::new(),
        LIMITS,
        input.to_vec(),
    )
    .await
    .map_err(|e| format!("{e:?}"))
}

pub fn run(_opts: &Opts, guests: &Path) -> Metric {
    let m = Metric::new("idle-children", "MiB", Target::Below(1024.0));
    // The pool sized from the spawner's budget, as `capbroker run` sizes it.
    let grant = SpawnGrant {
        limits: LIMITS,
        max_children: CHILDREN,
        components: None,
    };
    let root_memory = capbroker::Limits::default().max_memory as u64;
    let pool = match capbroker::run::engine::Pool::for_budgets(root_memory, [&grant]) {
        Ok(p) => p,
        Err(e) => return m.skipped(format!("no pool for {CHILDREN} children: {e}")),
    };
    let rt = capbroker::Runtime::with_pool(&pool).unwrap();
    let (components, _) = super::spawn::components(&rt, guests);
    let engine = rt.engine().clone();
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let components = Arc::clone(&components);
    let dir_path = dir.path().to_owned();
    let outcome = multi.block_on(async move {
        tokio::spawn(async move {
            let mut parent = Parent::with_grant(&engine, &components, &dir_path, grant);
            // Warm up: code paged in, the allocator's arenas made.
            for _ in 0..200 {
                let p = spawn(&mut parent, b"x").await.unwrap();
                let mut view = parent.store.data_mut().broker();
                HostProcess::wait(&mut view, Resource::new_borrow(p.rep()))
                    .await
                    .unwrap();
                HostProcess::drop(&mut view, p).unwrap();
            }
            let (live_before, rss_before) = (live_instances(), rss());
            let t = Instant::now();
            let mut alive = Vec::new();
            let mut refused: Option<String> = None;
            let mut ended: Option<String> = None;
            let mut ended_count = 0u32;
            for _ in 0..CHILDREN {
                match spawn(&mut parent, b"wait").await {
                    Ok(p) => {
                        let mut view = parent.store.data_mut().broker();
                        match HostProcess::try_wait(&mut view, Resource::new_borrow(p.rep()))
                            .unwrap()
                        {
                            None => alive.push(p),
                            Some(status) => {
                                ended_count += 1;
                                if ended.is_none() {
                                    ended = Some(describe(&status));
                                }
                                HostProcess::drop(&mut view, p).unwrap();
                            }
                        }
                    }
                    Err(e) => {
                        refused.get_or_insert(e);
                    }
                }
            }
            let spawn_time = t.elapsed();
            // Let the children's tasks settle in their first wait.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (live, rss_after) = (live_instances() - live_before, rss());
            let mut still = 0;
            for p in &alive {
                let mut view = parent.store.data_mut().broker();
                if HostProcess::try_wait(&mut view, Resource::new_borrow(p.rep()))
                    .unwrap()
                    .is_none()
                {
                    still += 1;
                }
            }
            // Dropping a process handle kills the child.
            for p in alive {
                let mut view = parent.store.data_mut().broker();
                HostProcess::drop(&mut view, p).unwrap();
            }
            let t = Instant::now();
            while live_instances() > live_before && t.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Outcome {
                alive: still,
                live,
                rss_before,
                rss_after,
                spawn_time,
                ended_count,
                ended,
                refused,
            }
        })
        .await
        .unwrap()
    });
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let grown = outcome.rss_after.saturating_sub(outcome.rss_before);
    let per_child = grown as f64 / f64::from(outcome.alive.max(1));
    let mut detail = format!(
        "asked for {CHILDREN} children of components/tiny waiting on their mailbox; \
         {} alive ({} live instances), spawned in {:.2} s\n\
         host RSS {:.1} MiB before, {:.1} MiB with them alive: {:.0} bytes ({:.1} KiB) a child",
        outcome.alive,
        outcome.live,
        outcome.spawn_time.as_secs_f64(),
        mib(outcome.rss_before),
        mib(outcome.rss_after),
        per_child,
        per_child / 1024.0
    );
    if outcome.ended_count > 0 {
        detail += &format!(
            "\n{} children ended at once, e.g. {}",
            outcome.ended_count,
            outcome.ended.as_deref().unwrap_or("")
        );
    }
    if let Some(r) = &outcome.refused {
        detail += &format!("\nspawns refused, e.g. {r}");
    }
    if outcome.alive < CHILDREN {
        // What the whole would take at this rate.
        detail += &format!(
            "\nat {:.0} bytes a child, {CHILDREN} would hold about {:.0} MiB over the {:.1} MiB before",
            per_child,
            mib((per_child * f64::from(CHILDREN)) as u64),
            mib(outcome.rss_before)
        );
    }
    Metric {
        value: Ok(mib(outcome.rss_after)),
        also: vec![(
            format!("{} of {CHILDREN} children alive", outcome.alive),
            outcome.alive == CHILDREN,
        )],
        detail,
        ..m
    }
}

struct Outcome {
    alive: u32,
    live: usize,
    rss_before: u64,
    rss_after: u64,
    spawn_time: Duration,
    ended_count: u32,
    ended: Option<String>,
    refused: Option<String>,
}

fn describe(s: &ExitStatus) -> String {
    let s = format!("{s:?}");
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}
