//! Spawners: a spawn must fit the budget (and a refused one loses nothing),
//! attenuation only narrows, max-children holds across the whole tree (a
//! spawn bomb included), and what a spawner lets a child do never exceeds
//! what the child was given.

mod support;

use support::{dir_at, spawner, Probe, Tree};

const SP: &str = "sp=max-memory=16MiB,max-fuel=100M,timeout=2s,max-children=2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_must_fit_the_budget_and_a_refusal_loses_nothing() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw"), spawner(SP)]).await;
    p.expect(&[
        ("budget sp", "ok:16777216,100000000,2000,2,probe+worker"),
        ("spawn sp self 33554432,1000,1000 data P memory", "err:refused:max-memory: asked 33554432, allowed 16777216"),
        ("spawn sp self 65536,100000001,2001 data P memory", "err:refused:max-fuel: asked 100000001, allowed 100000000; timeout-ms: asked 2001, allowed 2000"),
        ("spawn sp self 1000,1000,1000 - P memory", "err:invalid:max-memory 1000 is below one page"),
        ("spawn sp self 65536,0,1000 - P memory", "err:invalid:max-fuel of 0"),
        ("spawn sp self 18446744073709551615,1,1 - P memory", "err:invalid:max-memory 18446744073709551615 is above 4GiB"),
        ("spawn sp self 65536,1000,0 - P memory", "err:invalid:a timeout of 0 ms"),
        ("spawn sp nosuch budget - P memory", "err:invalid:there is no component `nosuch`"),
        ("spawn sp worker budget - P memory", "err:invalid:component `worker` has no export `start`"),
        ("spawn sp self@nonexistent budget - P memory", "err:invalid:component `probe` has no export `nonexistent`"),
        ("spawn sp self budget nosuchhandle P memory", "err:invalid:probe holds no handle"),
        ("running sp", "ok:0"),
        // Nothing was lost: the parent's handles and budget are intact.
        ("read data hello.txt", "ok:hello"),
        ("spawn sp probe budget data P read data hello.txt", "ok"),
        ("wait P", "ok:finished:ok:hello"),
        // An export that is not a child entry point traps the child alone.
        ("spawn sp self@run budget - R memory", "ok"),
        ("wait R", "ok:trapped:export `run` is not a child entry point"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_children_counts_the_living() {
    let mut p = Probe::start(&[spawner(SP)]).await;
    p.expect(&[
        ("spawn sp self budget - A sleep 5000", "ok"),
        ("spawn sp self budget - B sleep 5000", "ok"),
        ("running sp", "ok:2"),
        (
            "spawn sp self budget - C memory",
            "err:limit-exceeded:max-children: 2 children are alive, the budget allows 2",
        ),
        ("kill A", "ok"),
        ("wait A", "ok:killed"),
        ("spawn sp self budget - C memory", "ok"),
        ("wait C", "ok:finished"),
        ("kill B", "ok"),
        ("wait B", "ok:killed"),
        ("running sp", "ok:0"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attenuated_spawners_only_narrow_and_count_against_their_parent() {
    let mut p = Probe::start(&[spawner(SP)]).await;
    p.expect(&[
        (
            "attenuate-spawner sp 33554432,1000,1000 1 probe N",
            "err:refused:max-memory: asked 33554432, allowed 16777216",
        ),
        (
            "attenuate-spawner sp 65536,1000,1000 3 probe N",
            "err:refused:max-children: asked 3, allowed 2",
        ),
        (
            "attenuate-spawner sp 65536,1000,1000 1 probe+other N",
            "err:refused:component `other`: not among those allowed (probe, worker)",
        ),
        ("attenuate-spawner sp 8388608,50000000,1000 1 probe N", "ok"),
        ("budget N", "ok:8388608,50000000,1000,1,probe"),
        (
            "spawn N worker budget - P memory",
            "err:refused:component `worker`: not among those allowed (probe)",
        ),
        (
            "spawn N self 16777216,1000,1000 - P memory",
            "err:refused:max-memory",
        ),
        ("spawn N self budget - P sleep 5000", "ok"),
        ("running sp", "ok:1"),
        (
            "spawn N self budget - Q memory",
            "err:limit-exceeded:max-children: 1 children are alive, the budget allows 1",
        ),
        ("attenuate-spawner N 65536,1000,1000 1 probe M", "ok"),
        ("spawn M self budget - Q memory", "err:limit-exceeded"),
        ("kill P", "ok"),
        ("wait P", "ok:killed"),
        ("drop-spawner N", "ok"),
        ("drop-spawner M", "ok"),
        (
            "spawn N self budget - Q memory",
            "err:invalid:probe holds no spawner `N`",
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawner_passed_on_is_narrowed_to_the_childs_limits() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=100M,timeout=5s,max-children=4",
    )])
    .await;
    p.expect(&[
        ("spawn sp self 8388608,50000000,3000 sp C budget sp;spawn sp self 16777216,1000,1000 - G memory", "ok"),
        ("wait C", "ok:finished:ok:8388608,50000000,3000,4,probe+worker\nerr:refused:max-memory: asked 16777216, allowed 8388608"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_bomb_stays_within_the_root_budget() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=20s,max-children=12"),
    ])
    .await;
    p.expect(&[("spawn sp self budget sp B bomb sp", "ok")])
        .await;
    let got = p.step("wait B").await;
    assert!(got.starts_with("ok:finished:ok:spawned="), "{got}");
    assert!(got.contains("refused="), "{got}");
    p.expect(&[("running sp", "ok:0"), ("read data hello.txt", "ok:hello")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_spawner_cannot_be_recovered_through_a_child() {
    let mut p = Probe::start(&[spawner(SP)]).await;
    p.expect(&[
        (
            "spawn sp self budget - C recv;spawn sp self budget - G memory",
            "ok",
        ),
        ("drop-spawner sp", "ok"),
        ("psend C go", "ok"),
        (
            "wait C",
            "ok:finished:ok:go\nerr:invalid:probe holds no spawner `sp`",
        ),
        (
            "spawn sp self budget - D memory",
            "err:invalid:probe holds no spawner `sp`",
        ),
    ])
    .await;
}
