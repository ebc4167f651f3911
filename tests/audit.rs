//! The audit log (`capbroker run --audit FILE`): JSON Lines with every
//! grant, derivation, drop, spawn, denial, limit hit and exit, per process
//! and in order; `capbroker audit FILE` summarises it; a flood of denials
//! is rate-limited, not blocking.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{capbroker, events, guest, text, Tree};

const SP: &str = "sp=max-memory=16MiB,max-fuel=10M,timeout=2s,max-children=3";

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn every_process_is_logged_in_order_and_summarised() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let probe = guest("probe");
    let out = capbroker(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--dir",
        &format!("data={}", tree.root().display()),
        "--spawn",
        SP,
        probe.to_str().unwrap(),
        "attenuate data read,list R",
        "write R hello.txt no",
        "read R ../outside/secret",
        "spawn sp self budget R P read R hello.txt",
        "wait P",
        "spawn sp self budget - Q loop",
        "wait Q",
        "drop R",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = events(&log);

    // Timestamps never go backwards; every event names its process.
    let times: Vec<u64> = all.iter().map(|e| e["t_us"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(all
        .iter()
        .all(|e| e["pid"].is_u64() && e["component"] == "probe"));

    let root = all[0]["pid"].as_u64().unwrap();
    let grants = of(&all, "grant");
    assert_eq!(grants.len(), 2, "{grants:#?}");
    assert_eq!(grants[0]["grant"], "data");
    assert_eq!(grants[0]["detail"], "read,write,create,list,remove");
    assert!(grants[1]["detail"]
        .as_str()
        .unwrap()
        .contains("max-children=3"));
    let derive = of(&all, "derive");
    assert_eq!(derive[0]["op"], "attenuate");
    assert_eq!(derive[0]["rights"], "read,list");

    // Denials carry the operation, the path, the rights held and the missing ones.
    let denials = of(&all, "deny");
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert_eq!(denials[0]["op"], "write-file");
    assert_eq!(denials[0]["path"], "hello.txt");
    assert_eq!(denials[0]["rights"], "read,list");
    assert_eq!(denials[0]["missing"], "write,create");
    assert_eq!(denials[1]["error"], "escape");

    // Spawns name the child and the handles passed; each child's events
    // name its parent; every process has one exit, with what it used.
    let spawns = of(&all, "spawn");
    assert_eq!(spawns.len(), 2);
    assert_eq!(spawns[0]["handles"], serde_json::json!(["R"]));
    let children: Vec<u64> = spawns
        .iter()
        .map(|s| s["child"].as_u64().unwrap())
        .collect();
    for child in &children {
        let mine: Vec<&Value> = all.iter().filter(|e| e["pid"] == *child).collect();
        assert!(mine.iter().all(|e| e["parent"] == root), "{mine:#?}");
    }
    let exits = of(&all, "exit");
    assert_eq!(exits.len(), 3, "{exits:#?}");
    let exit_of = |pid: u64| exits.iter().find(|e| e["pid"] == pid).unwrap();
    assert_eq!(exit_of(children[0])["status"], "finished");
    assert_eq!(exit_of(children[1])["status"], "out-of-cpu");
    assert_eq!(exit_of(children[1])["fuel_used"], 10_000_000);
    assert_eq!(exit_of(root)["status"], "finished");
    assert!(exit_of(root)["peak_memory"].as_u64().unwrap() >= 64 << 10);
    let limits = of(&all, "limit");
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0]["limit"], "cpu");
    assert!(of(&all, "drop").iter().any(|d| d["handle"] == "data"));

    // The summary: the tree, and the denials grouped.
    let out = capbroker(&["audit", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let want_child = format!(
        "    {} probe\n      handles from its parent: R\n",
        children[0]
    );
    assert!(summary.contains(&want_child), "{summary}");
    assert!(
        summary.contains("exit: out-of-cpu, fuel 10000000"),
        "{summary}"
    );
    assert!(
        summary.contains("denied         write-file       ×1"),
        "{summary}"
    );
    assert!(
        summary.contains("escape         read-file        ×1"),
        "{summary}"
    );
}

#[test]
fn a_flood_of_denials_is_rate_limited_and_counted() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let probe = guest("probe");
    let grant = format!("ro={}:ro", tree.root().display());
    let mut args = vec!["run", "--audit", log.to_str().unwrap(), "--dir", &grant];
    let probe = probe.to_str().unwrap().to_string();
    args.push(&probe);
    let flood = vec!["write ro hello.txt x"; 5000];
    args.extend(flood.iter().copied());
    let started = Instant::now();
    let out = capbroker(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(60));
    let all = events(&log);
    let written = of(&all, "deny").len() as u64;
    let suppressed: u64 = of(&all, "suppressed")
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(written + suppressed, 5000, "{written} + {suppressed}");
    assert!(written < 1000, "{written} denials written");
    assert!(of(&all, "exit").len() == 1);
}

#[test]
fn bad_audit_input_is_a_clear_error() {
    let tree = Tree::new();
    let bad = tree.path("bad.jsonl");
    std::fs::write(&bad, "{\"event\":\"exit\",\"pid\":1}\nnot json\n").unwrap();
    let out = capbroker(&["audit", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.jsonl:2: not a JSON object"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&bad, "{\"hello\":1}\n").unwrap();
    let out = capbroker(&["audit", bad.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("bad.jsonl:1: not a capbroker audit event"));
    let out = capbroker(&["audit", tree.path("absent.jsonl").to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );

    let out = capbroker(&[
        "run",
        "--audit",
        tree.path("no/such/dir/log.jsonl").to_str().unwrap(),
        guest("worker").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--audit: cannot create"),
        "{}",
        text(&out.stderr)
    );
}

/// A path of almost 4 KiB (the most a path may be) that leaves the directory, with what a terminal
/// would act on: ANSI escape sequences, a bell, a C1 control, a
/// right-to-left override. (`read-loop` splits its command on white
/// space, so newlines are left to the unit tests.)
fn hostile_path() -> String {
    format!(
        "../\x1b[2J\x1b]0;owned\x07\u{9b}31m\u{202e}txt/{}",
        "a/".repeat(1900)
    )
}

/// Case 12 of issue 16: denials on stderr were not rate-limited and carried
/// guest paths verbatim (100,000 denials of a 4 KiB path wrote 819 MB).
#[test]
fn denials_on_stderr_are_rate_limited_shortened_and_escaped() {
    let tree = Tree::new();
    let probe = guest("probe");
    let grant = format!("ro={}:ro", tree.root().display());
    let flood = format!("read-loop ro {} 20000", hostile_path());
    let started = Instant::now();
    let out = capbroker(&["run", "--dir", &grant, probe.to_str().unwrap(), &flood]);
    let took = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("escape#20000"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    // 100 at once and 50 a second after, plus the count of what was left
    // out at the exit; each line at most about 1.3 KB whatever the path.
    let lines = stderr.lines().count() as f64;
    let bound = 100.0 + 50.0 * took.ceil() + 1.0;
    assert!(lines <= bound, "{lines} lines in {took:.1} s");
    assert!(stderr.lines().all(|l| l.len() < 1300), "a line is too long");
    assert!(stderr.matches("refused:").count() >= 100, "{stderr}");
    assert!(stderr.contains("left out by the rate limit"), "{stderr}");
    for raw in ['\x1b', '\x07', '\u{9b}', '\u{202e}'] {
        assert!(!stderr.contains(raw), "{raw:?} reached stderr raw");
    }
    assert!(stderr.contains("\\u{1b}[2J"), "{stderr}");
}

/// The JSON log gets the same bounded, escaped text.
#[test]
fn the_log_shortens_and_escapes_guest_text() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let probe = guest("probe");
    let grant = format!("ro={}:ro", tree.root().display());
    let read = format!("read ro {}", hostile_path());
    let out = capbroker(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--dir",
        &grant,
        probe.to_str().unwrap(),
        &read,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = events(&log);
    let deny = of(&all, "deny");
    assert_eq!(deny.len(), 1, "{all:#?}");
    let path = deny[0]["path"].as_str().unwrap();
    assert!(
        path.starts_with("../\\u{1b}[2J\\u{1b}]0;owned\\u{7}"),
        "{path}"
    );
    assert!(path.len() < 300 && path.ends_with("more bytes]"), "{path}");
    let message = deny[0]["message"].as_str().unwrap();
    assert!(message.len() < 600, "{message}");
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(!raw.contains("\\u001b") && !raw.contains('\u{9b}'), "{raw}");
}

/// Derive and drop events are rate-limited like denials: a guest that
/// derives and drops handles as fast as it can does not fill the disk.
#[test]
fn derive_and_drop_events_are_rate_limited() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let probe = guest("probe");
    let out = capbroker(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--dir",
        &format!("data={}", tree.root().display()),
        probe.to_str().unwrap(),
        "churn data 20000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = events(&log);
    let changes = all
        .iter()
        .filter(|e| e["event"] == "derive" || e["event"] == "drop")
        .count();
    // 40,000 events were made; a burst of 100 and 50 a second get through.
    assert!(changes < 2_000, "{changes} derive and drop events written");
    assert!(
        all.iter()
            .any(|e| e["event"] == "suppressed" && e["of"] == "derive,drop,pledge,revoke,spawn"),
        "no suppressed count"
    );
}

/// A plain program's refused connect is recorded like any other denial.
#[test]
fn a_plain_programs_refused_connect_is_audited() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let out = capbroker(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--connect",
        "api=127.0.0.1:9",
        guest("std-probe").to_str().unwrap(),
        "connect",
        "127.0.0.1:1",
    ]);
    assert!(
        text(&out.stdout).contains("err permission-denied connect"),
        "{}",
        text(&out.stdout)
    );
    let all = events(&log);
    assert!(
        of(&all, "deny")
            .iter()
            .any(|e| e["path"] == "127.0.0.1:1" && e["op"] == "tcpconnect"),
        "{all:#?}"
    );
}
