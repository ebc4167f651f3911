//! The compiled-component cache through the binary: a second run loads
//! what the first compiled, anything that changes the machine code misses,
//! and a cache that is corrupt, foreign, shared or unwritable is never
//! trusted and never fails a run.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capbroker::run::app::Loaded;
use capbroker::run::cache::Cache;
use capbroker::run::compiled;
use capbroker::Runtime;
use support::{guest, text};

/// A WASI preview 1 program that prints `says` (capbroker adapts it into a
/// component, as `wasmtime run` does): small and quick to compile, and a
/// different text is a different component.
fn program(dir: &Path, name: &str, says: &str) -> PathBuf {
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "{says}\n")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const {len}))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = says.len() + 1
    );
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// `capbroker ARGS` with its cache in `cache`, logging the cache's hits
/// and misses.
fn capbroker(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(args)
        .env("CAPBROKER_CACHE_DIR", cache)
        .env("CAPBROKER_LOG", "capbroker::run::cache=debug")
        .output()
        .expect("run capbroker")
}

/// Asserts the run succeeded and printed `want`, without a panic.
fn ok(out: &Output, want: &str) {
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(text(&out.stdout).contains(want), "{}", text(&out.stdout));
}

/// How many components the run loaded from the cache, and how many it
/// compiled.
fn hits_and_misses(out: &Output) -> (usize, usize) {
    let stderr = text(&out.stderr);
    (
        stderr.matches("compiled-component cache: hit").count(),
        stderr.matches("compiled-component cache: miss").count(),
    )
}

fn warnings(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .filter(|l| l.contains("warning: compiled-component cache"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cache's entries.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_second_run_loads_what_the_first_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let first = capbroker(&cache, &["run", hello.to_str().unwrap()]);
    ok(&first, "hello");
    assert_eq!(hits_and_misses(&first), (0, 1), "{}", text(&first.stderr));
    assert_eq!(entries(&cache).len(), 1);
    // Private: the folder, its key and its entries.
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("key")), 0o600);
    assert_eq!(mode(&entries(&cache)[0]), 0o600);
    let second = capbroker(&cache, &["run", hello.to_str().unwrap()]);
    ok(&second, "hello");
    assert_eq!(hits_and_misses(&second), (1, 0), "{}", text(&second.stderr));
    assert_eq!(entries(&cache).len(), 1);
    assert_eq!(warnings(&second), "");
}

#[test]
fn a_changed_component_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let a = program(tmp.path(), "a", "one");
    ok(&capbroker(&cache, &["run", a.to_str().unwrap()]), "one");
    // The same name, other bytes.
    let a = program(tmp.path(), "a", "two");
    let out = capbroker(&cache, &["run", a.to_str().unwrap()]);
    ok(&out, "two");
    assert_eq!(hits_and_misses(&out), (0, 1), "{}", text(&out.stderr));
    assert_eq!(entries(&cache).len(), 2);
}

/// Spawned components come from the cache too; and a pool of more than
/// about 2,000 instances gives each memory a smaller reservation with
/// bounds checks in the code (docs/performance.md), an engine setting that
/// changes the machine code, so it misses.
#[test]
fn spawned_components_are_cached_and_an_engine_setting_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let probe = guest("probe");
    let worker = format!("worker={}", guest("worker").display());
    let run = |children: &str| {
        capbroker(
            &cache,
            &[
                "run",
                "--component",
                &worker,
                "--spawn",
                &format!("sp=max-children={children}"),
                probe.to_str().unwrap(),
                "budget sp",
            ],
        )
    };
    let first = run("3");
    ok(&first, "budget sp => ok:");
    assert_eq!(hits_and_misses(&first), (0, 2), "{}", text(&first.stderr));
    assert_eq!(entries(&cache).len(), 2);
    let second = run("3");
    ok(&second, "budget sp => ok:");
    assert_eq!(hits_and_misses(&second), (2, 0), "{}", text(&second.stderr));
    let wide = run("3000");
    ok(&wide, "budget sp => ok:");
    assert_eq!(hits_and_misses(&wide), (0, 2), "{}", text(&wide.stderr));
    assert_eq!(entries(&cache).len(), 4);
}

#[test]
fn inspect_uses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let probe = guest("probe");
    let first = capbroker(&cache, &["inspect", probe.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(hits_and_misses(&first), (0, 1), "{}", text(&first.stderr));
    let second = capbroker(&cache, &["inspect", probe.to_str().unwrap()]);
    assert_eq!(hits_and_misses(&second), (1, 0), "{}", text(&second.stderr));
    assert_eq!(first.stdout, second.stdout);
}

/// What a test does to an entry's bytes.
type Damage = fn(&mut Vec<u8>);

/// A truncated, altered or foreign entry is compiled again with a warning,
/// never loaded, and replaced by a good one.
#[test]
fn a_bad_entry_is_compiled_again_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let hello = hello.to_str().unwrap();
    ok(&capbroker(&cache, &["run", hello]), "hello");
    let entry = entries(&cache).remove(0);
    let good = std::fs::read(&entry).unwrap();

    let damage: [(&str, Damage); 4] = [
        ("truncated", |b| b.truncate(b.len() / 2)),
        ("shorter than a tag", |b| b.truncate(10)),
        ("one byte changed", |b| {
            let i = b.len() / 2;
            b[i] ^= 1;
        }),
        ("emptied", |b| b.clear()),
    ];
    for (what, damage) in damage {
        let mut bad = good.clone();
        damage(&mut bad);
        std::fs::write(&entry, &bad).unwrap();
        let out = capbroker(&cache, &["run", hello]);
        ok(&out, "hello");
        assert_eq!(hits_and_misses(&out).0, 0, "{what}: {}", text(&out.stderr));
        assert!(
            warnings(&out).contains("is not usable") && warnings(&out).contains("compiling again"),
            "{what}: {}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read(&entry).unwrap(), good, "{what}: not replaced");
    }

    // An entry written by another cache (another key), under the right
    // name: not written here, so not loaded.
    let other = tmp.path().join("other");
    ok(&capbroker(&other, &["run", hello]), "hello");
    let foreign = std::fs::read(entries(&other).remove(0)).unwrap();
    assert_ne!(foreign, good, "each cache tags with its own key");
    std::fs::write(&entry, &foreign).unwrap();
    let out = capbroker(&cache, &["run", hello]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("not written here"),
        "{}",
        text(&out.stderr)
    );
    // And now it hits again.
    let out = capbroker(&cache, &["run", hello]);
    assert_eq!(hits_and_misses(&out), (1, 0), "{}", text(&out.stderr));

    // An entry with a second link (a backup, or a folder a guest may
    // write elsewhere): it could be changed from there, so it is not
    // loaded, and is replaced by one of its own.
    let linked = tmp.path().join("linked.cwasm");
    std::fs::hard_link(&entry, &linked).unwrap();
    let out = capbroker(&cache, &["run", hello]);
    ok(&out, "hello");
    assert_eq!(hits_and_misses(&out).0, 0, "{}", text(&out.stderr));
    assert!(
        warnings(&out).contains("has 2 links"),
        "{}",
        text(&out.stderr)
    );
    let out = capbroker(&cache, &["run", hello]);
    assert_eq!(hits_and_misses(&out), (1, 0), "{}", text(&out.stderr));
    // A FIFO in the entry's place neither blocks the run nor is loaded.
    std::fs::remove_file(&entry).unwrap();
    let c = std::ffi::CString::new(entry.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = capbroker(&cache, &["run", hello]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("not a regular file"),
        "{}",
        text(&out.stderr)
    );
    // A link in the entry's place is not followed.
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&linked, &entry).unwrap();
    let out = capbroker(&cache, &["run", hello]);
    ok(&out, "hello");
    assert_eq!(hits_and_misses(&out).0, 0, "{}", text(&out.stderr));
    assert!(
        warnings(&out).contains("is not usable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn no_cache_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let out = capbroker(&cache, &["run", "--no-cache", hello.to_str().unwrap()]);
    ok(&out, "hello");
    let out = capbroker(&cache, &["inspect", "--no-cache", hello.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The manifest's key does the same.
    let manifest = tmp.path().join("capbroker.toml");
    std::fs::write(&manifest, "component = \"hello.wasm\"\ncache = false\n").unwrap();
    let out = capbroker(&cache, &["run", "-m", manifest.to_str().unwrap()]);
    ok(&out, "hello");
    assert_eq!(hits_and_misses(&out), (0, 0), "{}", text(&out.stderr));
    assert!(!cache.exists(), "the cache folder was made");
    // --print-config shows it.
    let out = capbroker(
        &cache,
        &["run", "-m", manifest.to_str().unwrap(), "--print-config"],
    );
    assert!(
        text(&out.stdout).contains("cache = false"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn runs_filling_the_cache_at_once_all_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_capbroker"))
                .args(["run", hello.to_str().unwrap()])
                .env("CAPBROKER_CACHE_DIR", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        ok(&out, "hello");
        assert_eq!(warnings(&out), "", "{}", text(&out.stderr));
    }
    // One entry, no temporary file left, and it is good.
    let names: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let out = capbroker(&cache, &["run", hello.to_str().unwrap()]);
    assert_eq!(hits_and_misses(&out), (1, 0), "{}", text(&out.stderr));
}

#[test]
fn an_unusable_cache_folder_warns_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = program(tmp.path(), "hello", "hello");
    // Below a file: it cannot be made.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = capbroker(&file.join("cache"), &["run", hello.to_str().unwrap()]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("cannot create") && warnings(&out).contains("compiling without it"),
        "{}",
        text(&out.stderr)
    );
    // Open to other users: its entries could have been written by them.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = capbroker(&shared, &["run", hello.to_str().unwrap()]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("open to other users"),
        "{}",
        text(&out.stderr)
    );
    assert!(entries(&shared).is_empty());
    // A link is not followed.
    let private = tmp.path().join("private");
    ok(
        &capbroker(&private, &["run", hello.to_str().unwrap()]),
        "hello",
    );
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let out = capbroker(&link, &["run", hello.to_str().unwrap()]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("not a folder"),
        "{}",
        text(&out.stderr)
    );
    // A key others may read is no secret.
    std::fs::set_permissions(private.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = capbroker(&private, &["run", hello.to_str().unwrap()]);
    ok(&out, "hello");
    assert!(
        warnings(&out).contains("open to other users"),
        "{}",
        text(&out.stderr)
    );
}

/// Beyond its bound, the cache removes the entries used least recently.
#[test]
fn the_cache_keeps_within_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let mut rt = Runtime::new().unwrap();
    let mut cache = Cache::open(&dir, rt.engine()).unwrap();
    // Room for about one entry.
    let a = program(tmp.path(), "a", "a");
    let probe = |rt: &Runtime, p: &Path| assert!(matches!(rt.load_any(p), Ok(Loaded::Command(_))));
    {
        let mut rt = Runtime::new().unwrap();
        rt.set_cache(Cache::open(&dir, rt.engine()).unwrap());
        probe(&rt, &a);
    }
    let one = std::fs::metadata(entries(&dir).remove(0)).unwrap().len();
    cache.set_limit(one + one / 2);
    rt.set_cache(cache);
    let b = program(tmp.path(), "b", "b");
    probe(&rt, &b);
    let left = entries(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    // The newer one stays.
    let c = program(tmp.path(), "c", "c");
    probe(&rt, &c);
    assert_eq!(entries(&dir).len(), 1);
    assert!(!left.contains(&entries(&dir)[0]));
}

/// The cache holds machine code the broker runs unsandboxed: a run whose
/// grants could write its folder (or a folder on its path) is refused, as
/// one that could write its manifest is; `--no-cache` loads nothing from
/// it, so it runs.
#[test]
fn a_grant_that_could_write_the_cache_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let hello = hello.to_str().unwrap();
    // A writing grant elsewhere is not the cache's, whether its folder is
    // there yet or not.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let other = format!("/data={}:rw", elsewhere.display());
    ok(
        &capbroker(&cache, &["run", "--dir", &other, hello]),
        "hello",
    );
    ok(
        &capbroker(&cache, &["run", "--dir", &other, hello]),
        "hello",
    );
    assert_eq!(entries(&cache).len(), 1);
    let rw = format!("/data={}:rw", tmp.path().display());
    let out = capbroker(&cache, &["run", "--dir", &rw, hello]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("compiled-component cache"), "{stderr}");
    assert!(stderr.contains("grant narrower folders"), "{stderr}");
    assert!(
        stderr.contains("is within reach of grant `/data`"),
        "{stderr}"
    );
    // Nor with --no-cache: a later run with the cache on would load what
    // this run's guest left there.
    let out = capbroker(&cache, &["run", "--no-cache", "--dir", &rw, hello]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is within reach"));
    // Reading is not writing.
    let ro = format!("/data={}:ro", tmp.path().display());
    ok(&capbroker(&cache, &["run", "--dir", &ro, hello]), "hello");
    // Before the cache's folder is there: a grant of the folder above.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let out = capbroker(
        &fresh.join("cache"),
        &[
            "run",
            "--dir",
            &format!("/data={}:rw", fresh.display()),
            hello,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is within reach"),
        "{}",
        text(&out.stderr)
    );
    assert!(entries(&fresh.join("cache")).is_empty());
    assert!(!fresh.join("cache").exists(), "a refused run makes nothing");

    // A cache folder that cannot be made (a file stands on its path): the
    // grant that could make it is still refused.
    let blocked = tmp.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("file"), "").unwrap();
    let grant = format!("/data={}:rw", blocked.display());
    let out = capbroker(
        &blocked.join("file").join("cache"),
        &["run", "--dir", &grant, hello],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is within reach"));

    // The default folders are guarded whatever this run's own cache is:
    // a later run with the default environment would load from them.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let grant = format!("/home={}:rw", home.display());
    let elsewhere = tmp.path().join("own-cache");
    for no_cache in [false, true] {
        let mut args = vec!["run", "--dir", &grant, hello];
        if no_cache {
            args.insert(1, "--no-cache");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args(&args)
            .env("CAPBROKER_CACHE_DIR", &elsewhere)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(".cache/capbroker/key"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(!home.join(".cache").exists());
}

/// CAPBROKER_CACHE_DIR names one folder for every run, or is not used: a
/// relative one would be another folder from each working folder, and a
/// run's guard could look at its own only.
#[test]
fn a_relative_cache_dir_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = program(tmp.path(), "hello", "hello");
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    for relative in ["rel-cache", "/proc/self/cwd/rel-cache"] {
        let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args(["run", hello.to_str().unwrap()])
            .current_dir(tmp.path())
            .env("CAPBROKER_CACHE_DIR", relative)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        ok(&out, "hello");
        assert!(
            warnings(&out).contains("is not used: it must be an absolute path"),
            "{}",
            text(&out.stderr)
        );
        assert!(!tmp.path().join("rel-cache").exists());
        assert_eq!(entries(&home.join(".cache/capbroker")).len(), 1);
    }
}

/// A run without HOME still keeps its guests out of the cache of the
/// user's ordinary runs, in the home folder the user database names.
#[test]
fn without_home_the_users_own_cache_is_still_guarded() {
    // SAFETY: getpwuid's result is read at once, on this thread.
    let home = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        assert!(!pw.is_null());
        std::ffi::CStr::from_ptr((*pw).pw_dir)
            .to_string_lossy()
            .into_owned()
    };
    let tmp = tempfile::tempdir().unwrap();
    let hello = program(tmp.path(), "hello", "hello");
    let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args([
            "run",
            "--dir",
            &format!("/h={home}:rw"),
            hello.to_str().unwrap(),
        ])
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("CAPBROKER_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    refused(&out, &[".cache/capbroker", "is within reach of grant `/h`"]);
}

/// A grant narrowed to paths in or on the way to the cache, whether they
/// are there or not, is a grant that can write the cache.
#[test]
fn a_grant_scoped_into_the_cache_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("top");
    std::fs::create_dir(&top).unwrap();
    let hello = program(tmp.path(), "hello", "hello");
    let hello = hello.to_str().unwrap();
    let cache = top.join("cache");
    ok(&capbroker(&cache, &["run", hello]), "hello");
    let entry = entries(&cache).remove(0);
    let entry = entry.file_name().unwrap().to_str().unwrap().to_string();
    let manifest = tmp.path().join("m.toml");
    let scoped = |paths: &str| {
        std::fs::write(
            &manifest,
            format!(
                "[dir.\"/top\"]\npath = \"{}\"\nrights = \"rw\"\n[dir.\"/top\".paths]\n{paths}\n",
                top.display()
            ),
        )
        .unwrap();
        capbroker(
            &cache,
            &["run", "-q", "-m", manifest.to_str().unwrap(), hello],
        )
    };
    // An entry (there), the key read-only beside it.
    let out = scoped(&format!(
        "\"cache/key\" = \"read\"\n\"cache/{entry}\" = \"rw\""
    ));
    refused(&out, &["a place inside it", "grant narrower folders"]);
    // A file not there yet in the cache folder, and folders on the way.
    for paths in [
        "\"cache/new.cwasm\" = \"rw\"",
        "\"other/new\" = \"rw\"\n\"cache/sub/x\" = \"create\"",
    ] {
        refused(&scoped(paths), &["is within reach"]);
    }
    std::fs::remove_dir_all(&cache).unwrap();
    for paths in ["\"cache\" = \"rw\"", "\"cache/key\" = \"write\""] {
        refused(&scoped(paths), &["is within reach"]);
        assert!(!cache.exists(), "{paths}");
    }
    // A sibling of the cache, there or not, is not the cache's.
    ok(&scoped("\"elsewhere\" = \"rw\""), "hello");
    ok(&scoped("\"cache-not\" = \"rw\""), "hello");
}

/// `capbroker serve` compiles its proxy component once: a second server
/// loads it from the cache.
#[test]
fn serve_uses_the_cache() {
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let proxy = guest("http_probe");
    let serve = |log: &str| {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tmp.path().join(log);
        let mut child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args(["serve", "-q", "--addr", &format!("127.0.0.1:{port}")])
            .arg(&proxy)
            .env("CAPBROKER_CACHE_DIR", &cache)
            .env("CAPBROKER_LOG", "capbroker::run::cache=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not start listening");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("panicked"), "{log}");
        (
            log.matches("compiled-component cache: hit").count(),
            log.matches("compiled-component cache: miss").count(),
        )
    };
    let (hits, misses) = serve("first.log");
    assert!(hits == 0 && misses >= 1, "{hits} hits, {misses} misses");
    assert_eq!(entries(&cache).len(), 1);
    let (hits, misses) = serve("second.log");
    assert!(hits >= 1 && misses == 0, "{hits} hits, {misses} misses");
    assert_eq!(entries(&cache).len(), 1);
}

/// `capbroker compile COMPONENT -o OUT`, then OUT in place of the `.wasm`.
fn compile(cache: &Path, component: &Path, out: &Path, more: &[&str]) -> Output {
    let mut args = vec!["compile"];
    args.extend_from_slice(more);
    args.extend([component.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    capbroker(cache, &args)
}

/// Asserts the run was refused before any guest ran: exit 2, no panic,
/// and `want` in what it said.
fn refused(out: &Output, want: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for w in want {
        assert!(stderr.contains(w), "want `{w}` in: {stderr}");
    }
}

/// An artifact of `capbroker compile` runs as its component does, as the
/// root, as a spawned child and under `serve`, and touches no cache.
#[test]
fn an_artifact_runs_in_place_of_its_component() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let probe = tmp.path().join("probe.cwasm");
    let out = compile(&cache, &guest("probe"), &probe, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!cache.exists(), "compile keeps nothing in the cache");
    // The default output: the component's path with `.cwasm`.
    let hello = program(tmp.path(), "hello", "hello from an artifact");
    ok(
        &capbroker(&cache, &["compile", hello.to_str().unwrap()]),
        "",
    );
    let hello = hello.with_extension("cwasm");
    let run = capbroker(&cache, &["run", hello.to_str().unwrap()]);
    ok(&run, "hello from an artifact");
    assert_eq!(hits_and_misses(&run), (0, 0), "{}", text(&run.stderr));
    // A child from an artifact, beside the root from one.
    let child = format!("child={}", probe.display());
    let run = capbroker(
        &cache,
        &[
            "run",
            "--component",
            &child,
            "--spawn",
            "sp=max-memory=16MiB,max-fuel=100M,timeout=5s,max-children=2",
            probe.to_str().unwrap(),
            "spawn sp child budget - P memory",
            "wait P",
        ],
    );
    ok(&run, "wait P => ok:finished:ok:");
    assert_eq!(hits_and_misses(&run), (0, 0), "{}", text(&run.stderr));
    assert!(entries(&cache).is_empty());
    // serve answers from an artifact.
    let proxy = tmp.path().join("hello.cwasm");
    let out = compile(&cache, &guest("http_hello"), &proxy, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(["serve", "-q", "--addr", &format!("127.0.0.1:{port}")])
        .arg(&proxy)
        .env("CAPBROKER_CACHE_DIR", &cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            break c;
        }
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    };
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello, bench"), "{answer}");
}

/// An artifact made by another wasmtime, or for an engine configured
/// otherwise, is refused with what to do; a damaged one likewise.
#[test]
fn an_artifact_for_another_version_or_engine_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let good = tmp.path().join("good.cwasm");
    assert!(compile(&cache, &hello, &good, &[]).status.success());
    let sealed = std::fs::read(&good).unwrap();
    let bytes = compiled::unseal("good", &sealed).unwrap().to_vec();
    // wasmtime's engine section starts with its format byte, the length
    // of the version and the version ("48"): made by wasmtime 47 instead
    // (sealed again, as `capbroker compile` of that version would).
    let at = bytes
        .windows(4)
        .position(|w| w == b"\x00\x0248")
        .expect("the engine section's version");
    let mut old = bytes.clone();
    old[at + 2..at + 4].copy_from_slice(b"47");
    let old_path = tmp.path().join("old.cwasm");
    std::fs::write(&old_path, compiled::seal(old)).unwrap();
    refused(
        &capbroker(&cache, &["run", old_path.to_str().unwrap()]),
        &[
            "was compiled for another capbroker or engine configuration",
            "incompatible version '47'",
            "capbroker compile",
        ],
    );
    // For a pool of more than about 2,000 instances (bounds checks in the
    // code), run in the default pool: another engine configuration.
    let manifest = tmp.path().join("wide.toml");
    std::fs::write(
        &manifest,
        "[spawn.sp]\nmax-children = 3000\nmax-memory = \"16MiB\"\n",
    )
    .unwrap();
    let wide = tmp.path().join("wide.cwasm");
    let m = manifest.to_str().unwrap();
    let out = compile(&cache, &guest("probe"), &wide, &["-m", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let w = wide.to_str().unwrap();
    refused(
        &capbroker(&cache, &["run", w, "budget sp"]),
        &["was compiled for another capbroker or engine configuration"],
    );
    // With the manifest it was compiled for, it runs.
    ok(
        &capbroker(&cache, &["run", "-q", "-m", m, w, "budget sp"]),
        "budget sp => ok:",
    );
    // A manifest for another machine: its component is compiled for its
    // budgets, and the folders its grants name need not be here.
    std::fs::copy(guest("probe"), tmp.path().join("probe.wasm")).unwrap();
    let there = tmp.path().join("there.toml");
    std::fs::write(
        &there,
        "component = \"probe.wasm\"\n[spawn.sp]\nmax-children = 3000\n\
         max-memory = \"16MiB\"\n[dir.data]\npath = \"/no/such/folder\"\n",
    )
    .unwrap();
    let from_there = tmp.path().join("there.cwasm");
    let out = capbroker(
        &cache,
        &[
            "compile",
            "-m",
            there.to_str().unwrap(),
            "-o",
            from_there.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    ok(
        &capbroker(
            &cache,
            &[
                "run",
                "-q",
                "-m",
                m,
                from_there.to_str().unwrap(),
                "budget sp",
            ],
        ),
        "budget sp => ok:",
    );
    // Truncated, or any byte changed (its code, wasmtime's metadata, the
    // digest): refused before wasmtime reads it. Without the digest such a
    // byte ran as changed machine code, or crashed the host.
    let cut = tmp.path().join("cut.cwasm");
    std::fs::write(&cut, &sealed[..sealed.len() / 2]).unwrap();
    refused(
        &capbroker(&cache, &["run", cut.to_str().unwrap()]),
        &["is not a compiled component made by `capbroker compile`"],
    );
    let damaged = tmp.path().join("damaged.cwasm");
    for at in [
        100,
        sealed.len() / 3,
        sealed.len() / 2,
        sealed.len() - 60,
        sealed.len() - 1,
    ] {
        let mut bad = sealed.clone();
        bad[at] ^= 0x24;
        std::fs::write(&damaged, &bad).unwrap();
        refused(
            &capbroker(&cache, &["run", damaged.to_str().unwrap()]),
            &["is damaged", "compile it again"],
        );
    }
    // wasmtime's own artifacts carry no digest.
    let wasmtime_made = tmp.path().join("wasmtime.cwasm");
    std::fs::write(&wasmtime_made, &bytes).unwrap();
    refused(
        &capbroker(&cache, &["run", wasmtime_made.to_str().unwrap()]),
        &["is not a compiled component made by `capbroker compile`"],
    );
    assert!(entries(&cache).is_empty(), "artifacts never fill the cache");
}

/// Machine code is taken only from a file the operator names that no
/// writing grant reaches, and never from bytes.
#[test]
fn an_artifact_a_grant_could_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let apps = tmp.path().join("apps");
    std::fs::create_dir(&apps).unwrap();
    let hello = program(&apps, "hello", "hello");
    let artifact = apps.join("hello.cwasm");
    assert!(compile(&cache, &hello, &artifact, &[]).status.success());
    let a = artifact.to_str().unwrap();
    let rw = format!("/apps={}:rw", apps.display());
    refused(
        &capbroker(&cache, &["run", "--no-cache", "--dir", &rw, a]),
        &["the compiled component", "is within reach of grant `/apps`"],
    );
    // As a child too.
    let probe = apps.join("probe.cwasm");
    assert!(compile(&cache, &guest("probe"), &probe, &[])
        .status
        .success());
    let child = format!("child={}", probe.display());
    let h = hello.to_str().unwrap();
    let out = capbroker(
        &cache,
        &["run", "--no-cache", "--component", &child, "--dir", &rw, h],
    );
    refused(&out, &["the compiled component", "is within reach"]);
    // Machine code in a file not named `.cwasm` (as a guest granted a
    // `.wasm`'s folder in another run could leave it): refused, as the
    // root and as a child.
    let sneaky = tmp.path().join("sneaky.wasm");
    std::fs::copy(&artifact, &sneaky).unwrap();
    let s = sneaky.to_str().unwrap();
    refused(
        &capbroker(&cache, &["run", s]),
        &["holds compiled machine code", "does not end in `.cwasm`"],
    );
    let sneaky_child = format!("child={s}");
    refused(
        &capbroker(
            &cache,
            &[
                "run",
                "--component",
                &sneaky_child,
                guest("probe").to_str().unwrap(),
            ],
        ),
        &["--component child", "does not end in `.cwasm`"],
    );
    // An artifact with a second link: a guest of another run could write
    // through it, so it is refused whatever this run grants.
    let twin = tmp.path().join("twin.cwasm");
    std::fs::hard_link(&artifact, &twin).unwrap();
    refused(
        &capbroker(&cache, &["run", a]),
        &["has 2 hard links", "give it a file of its own"],
    );
    std::fs::remove_file(&twin).unwrap();
    // Reading is not writing; and the `.wasm` itself may stay writable.
    let ro = format!("/apps={}:ro", apps.display());
    ok(&capbroker(&cache, &["run", "--dir", &ro, a]), "hello");
    ok(
        &capbroker(&cache, &["run", "--no-cache", "--dir", &rw, h]),
        "hello",
    );
    // An embedder's bytes are never machine code.
    let rt = Runtime::new().unwrap();
    let err = rt
        .load_bytes("given", &std::fs::read(&artifact).unwrap())
        .err()
        .expect("artifact bytes refused");
    assert!(format!("{err:#}").contains("never as bytes"), "{err:#}");
}

/// `capbroker compile` refuses what it cannot make an artifact of, and
/// never replaces the component.
#[test]
fn compile_refuses_bad_input_and_keeps_the_component() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let hello = program(tmp.path(), "hello", "hello");
    let before = std::fs::read(&hello).unwrap();
    let out = tmp.path().join("out.cwasm");
    refused(
        &compile(&cache, &hello, &hello, &[]),
        &["is the component itself"],
    );
    assert_eq!(std::fs::read(&hello).unwrap(), before);
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    refused(
        &compile(&cache, &junk, &out, &[]),
        &["is not a WebAssembly file"],
    );
    refused(
        &compile(&cache, &tmp.path().join("none.wasm"), &out, &[]),
        &["cannot read component"],
    );
    assert!(compile(&cache, &hello, &out, &[]).status.success());
    let again = tmp.path().join("again.cwasm");
    refused(
        &compile(&cache, &out, &again, &[]),
        &["is compiled already"],
    );
    assert!(!again.exists());
    // A component that imports what capbroker does not give.
    let odd = tmp.path().join("odd.wasm");
    std::fs::write(
        &odd,
        wat::parse_str(r#"(component (import "no-such-function" (func)))"#).unwrap(),
    )
    .unwrap();
    refused(
        &compile(&cache, &odd, &out, &[]),
        &["imports something capbroker does not provide"],
    );
    // Nothing -o names is replaced unless it is a regular file.
    let link = tmp.path().join("link.cwasm");
    let target = tmp.path().join("precious.txt");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    refused(
        &compile(&cache, &hello, &link, &[]),
        &["is not a regular file"],
    );
    refused(
        &compile(&cache, &hello, tmp.path(), &[]),
        &["is not a regular file"],
    );
    // A component that is neither an app, a proxy nor a command.
    let empty = tmp.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    refused(
        &compile(&cache, &empty, &out, &[]),
        &["capbroker could not run it"],
    );
    // A component path a guest turned into a link to a device: read no
    // further than its type.
    let zero = tmp.path().join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for cmd in ["run", "compile"] {
        refused(
            &capbroker(&cache, &[cmd, zero.to_str().unwrap()]),
            &["is not a regular file"],
        );
    }
    // The last good artifact is still whole.
    ok(&capbroker(&cache, &["run", out.to_str().unwrap()]), "hello");
}
