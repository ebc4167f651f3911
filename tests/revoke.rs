//! Invariant 7: a handle granted as revocable can be revoked, and that cuts
//! off every handle derived from it, in every process, open files included.

mod support;

use support::{dir_at, spawner, Probe, Tree};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_directory_cuts_off_everything_derived_from_it_everywhere() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=5s,max-children=4"),
    ])
    .await;
    p.expect(&[
        ("revocable data D R", "ok"),
        ("open-dir D sub read,list S", "ok"),
        ("open D hello.txt read F", "ok"),
        ("read S inner.txt", "ok:inner"),
        // The child reads and says so, waits for word, then tries again.
        ("spawn sp self budget D C read D hello.txt;send ready;recv;read D hello.txt;open-dir D sub read X", "ok"),
        ("precv C", "ok:ready"),
        ("revoke R", "ok"),
        ("psend C go", "ok"),
        ("wait C", "ok:finished:ok:hello\nok\nok:go\nerr:revoked\nerr:revoked"),
        ("read D hello.txt", "err:revoked"),
        ("read S inner.txt", "err:revoked"),
        ("fread F 5", "err:revoked"),
        ("open-dir S deeper read X", "err:revoked"),
        ("revocable D D2 R2", "err:revoked"),
        ("spawn sp self budget D C2 memory", "err:revoked"),
        // What was not derived from the revocable copy still works.
        ("read data hello.txt", "ok:hello"),
        ("revoke R", "ok"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_spawner_stops_it_and_its_copies() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=1G,timeout=5s,max-children=4",
    )])
    .await;
    p.expect(&[
        ("revocable sp S R", "ok"),
        (
            "spawn S self budget S C recv;spawn S self budget - G memory",
            "ok",
        ),
        ("attenuate-spawner S 65536,1000,1000 1 probe N", "ok"),
        ("revoke R", "ok"),
        ("psend C go", "ok"),
        ("wait C", "ok:finished:ok:go\nerr:revoked"),
        ("spawn S self budget - D memory", "err:revoked"),
        ("spawn N self budget - D memory", "err:revoked"),
        ("budget S", "ok:"),
        ("spawn sp self budget - E memory", "ok"),
        ("wait E", "ok:finished"),
    ])
    .await;
}
