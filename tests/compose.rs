//! Composition as a sandboxing tool: the read-only adapter
//! (components/adapters/read-only) composed in front of an app with `wac`
//! narrows every directory the app gets, including the ones it passes to
//! its children, and the app runs under `capbroker run` unchanged.
//! Composition mismatches are errors that name the interface.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{capbroker, guests, root, text, Tree};

/// Runs `wac` with `args`.
fn wac(args: &[&str]) -> Output {
    Command::new(support::wac())
        .args(args)
        .current_dir(root())
        .output()
        .expect("run wac")
}

/// `app` composed behind `adapter` with the shipped recipe,
/// components/adapters/sandbox (which runs `wac compose`).
fn sandboxed(app: &Path, out: &Path, adapter: &Path) -> Output {
    // The script finds both tools on PATH.
    let tools = support::wac().parent().unwrap().to_path_buf();
    assert_eq!(support::wasm_tools().parent(), Some(tools.as_path()));
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(root().join("components/adapters/sandbox"))
        .args([app, adapter, out])
        .env("PATH", path)
        .output()
        .expect("run components/adapters/sandbox")
}

fn adapter() -> PathBuf {
    guests().join("read_only_adapter.wasm")
}

fn composed_dir() -> PathBuf {
    let dir = root().join("target/guests/composed");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The probe behind the adapter (composed once per test binary).
fn sandboxed_probe() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let out = composed_dir().join("probe-read-only.wasm");
        let o = sandboxed(&guests().join("probe.wasm"), &out, &adapter());
        assert!(o.status.success(), "wac compose: {}", text(&o.stderr));
        out
    })
}

/// Runs `wasm` with a read-write-create-remove grant of the tree's root and
/// the probe steps `steps`; returns (stdout, stderr).
fn run_probe(wasm: &Path, tree: &Tree, extra: &[&str], steps: &[&str]) -> (String, String) {
    let grant = format!(
        "data={}:read,write,create,list,remove",
        tree.root().display()
    );
    // Flags before the component: every word after it is the component's.
    let mut args = vec!["run", "--dir", &grant];
    args.extend_from_slice(extra);
    args.push(wasm.to_str().unwrap());
    args.extend_from_slice(steps);
    let out = capbroker(&args);
    assert!(
        out.status.success(),
        "capbroker run failed: {}",
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_adapter_narrows_every_directory_the_app_gets() {
    let tree = Tree::new();
    let steps = [
        "read data hello.txt",
        "write data new.txt x",
        "rm data hello.txt",
        "rights data",
        "attenuate data read,write W",
        "open-dir data sub read,list S",
        "read S inner.txt",
        "wasi-read data read hello.txt",
        "wasi-write data read,write hello.txt x",
        "granted",
    ];
    // Without the adapter, the same grant lets the probe write.
    let (plain, _) = run_probe(&guests().join("probe.wasm"), &tree, &[], &steps[..3]);
    assert!(plain.contains("write data new.txt x => ok\n"), "{plain}");
    assert!(plain.contains("rm data hello.txt => ok\n"), "{plain}");
    std::fs::write(tree.path("root/hello.txt"), "hello").unwrap();
    std::fs::remove_file(tree.path("root/new.txt")).unwrap();

    let (out, err) = run_probe(sandboxed_probe(), &tree, &[], &steps);
    let expected = [
        "read data hello.txt => ok:hello",
        "write data new.txt x => err:denied:write,create",
        "rm data hello.txt => err:denied:remove",
        "rights data => ok:read,list",
        "attenuate data read,write W => err:denied:write",
        "open-dir data sub read,list S => ok",
        "read S inner.txt => ok:inner",
        "wasi-read data read hello.txt => ok:hello",
        "wasi-write data read,write hello.txt x => err:denied:write",
        "granted => ok:0 more",
    ];
    for line in expected {
        assert!(
            out.contains(&format!("{line}\n")),
            "missing `{line}` in:\n{out}"
        );
    }
    // Nothing changed on disk.
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert!(!tree.path("root/new.txt").exists());
    // The adapter logged every call, and the host refused what it forwarded.
    for line in [
        "[read-only] granted data",
        "[read-only] data: read-file hello.txt -> ok",
        "[read-only] data: write-file new.txt -> denied(write,create)",
        "[read-only] data/sub: read-file inner.txt -> ok",
        "[read-only] data: to-descriptor -> denied(write)",
    ] {
        assert!(err.contains(line), "missing `{line}` in stderr:\n{err}");
    }
}

#[test]
fn children_get_only_the_narrowed_handles() {
    let tree = Tree::new();
    let spawn = "sp=max-memory=16MiB,max-fuel=100M,timeout=5s,max-children=4";
    let probe = guests().join("probe.wasm");
    let component = format!("probe={}", probe.display());
    let extra = ["--spawn", spawn, "--component", &component];
    let steps = [
        // A plain probe (no adapter of its own) gets a copy of the handle
        // the app got through the adapter: the narrowed one.
        "spawn sp probe budget data P write data a.txt x;rights data;read data hello.txt",
        "wait P",
        // `self` is the composed component: its grants pass the adapter too.
        "spawn sp self budget data Q write data b.txt x;rights data",
        "wait Q",
        // A spawner passed on cannot widen anything either.
        "spawn sp probe budget data,sp R spawn sp probe budget data S write data c.txt x",
        "wait R",
    ];
    let (out, err) = run_probe(sandboxed_probe(), &tree, &extra, &steps);
    for line in [
        "wait P => ok:finished:err:denied:write,create\nok:read,list\nok:hello",
        "wait Q => ok:finished:err:denied:write,create\nok:read,list",
        "wait R => ok:finished:ok",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    for f in ["a.txt", "b.txt", "c.txt"] {
        assert!(!tree.path(&format!("root/{f}")).exists(), "{f} was written");
    }
    assert!(
        err.contains("[read-only] process: spawn probe sharing data -> ok"),
        "{err}"
    );
}

#[test]
fn wac_plug_composes_the_same_sandbox() {
    let tree = Tree::new();
    let out = composed_dir().join("probe-plugged.wasm");
    let o = wac(&[
        "plug",
        guests().join("probe.wasm").to_str().unwrap(),
        "--plug",
        adapter().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "wac plug: {}", text(&o.stderr));
    let (stdout, _) = run_probe(&out, &tree, &[], &["write data new.txt x", "rights data"]);
    assert!(
        stdout.contains(
            "write data new.txt x => err:denied:write,create\nrights data => ok:read,list\n"
        ),
        "{stdout}"
    );
    assert!(!tree.path("root/new.txt").exists());
}

/// A component made from `wit` alone (no real code), for bad compositions.
fn dummy(name: &str, wit: &str) -> PathBuf {
    let dir = composed_dir();
    let src = dir.join(format!("{name}.wit"));
    std::fs::write(&src, wit).unwrap();
    let core = dir.join(format!("{name}.core.wasm"));
    let out = dir.join(format!("{name}.wasm"));
    let tools = support::wasm_tools();
    for args in [
        vec![
            "component",
            "embed",
            "--dummy",
            src.to_str().unwrap(),
            "-w",
            "adapter",
            "-o",
            core.to_str().unwrap(),
        ],
        vec![
            "component",
            "new",
            core.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    ] {
        let o = Command::new(&tools).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "wasm-tools {args:?}: {}",
            text(&o.stderr)
        );
    }
    out
}

/// Asserts that a tool run failed, saying `what`.
fn fails_saying(o: Output, what: &str) {
    let err = text(&o.stderr);
    assert!(
        !o.status.success() && err.contains(what),
        "wanted `{what}`, got: {err}"
    );
}

/// An app that imports a version of `fs` capbroker does not provide.
fn needs_v2() -> PathBuf {
    dummy(
        "needs-v2",
        "package capbroker:caps@0.2.0;
         interface fs { resource dir { rights: func() -> u8; } }
         world adapter {
             import fs;
             export run: func(args: list<string>) -> result<_, string>;
         }",
    )
}

#[test]
fn composition_mismatches_name_the_interface() {
    let probe = guests().join("probe.wasm");
    let bad = composed_dir().join("bad.wasm");

    // An adapter that exports another version of `fs`.
    let v2 = dummy(
        "fs-v2",
        "package capbroker:caps@0.2.0;
         interface fs { resource dir { rights: func() -> u8; } }
         world adapter { export fs; }",
    );
    let o = sandboxed(&probe, &bad, &v2);
    fails_saying(
        o,
        "the instance has no export named `capbroker:caps/fs@0.1.0`",
    );

    // An adapter whose `fs` has the right name and the wrong shape.
    let shape = dummy(
        "fs-shape",
        "package capbroker:caps@0.1.0;
         interface fs { resource dir { rights: func() -> u8; } }
         world adapter { export fs; }",
    );
    let script = composed_dir().join("fs-only.wac");
    std::fs::write(
        &script,
        "package test:fs-only;
         let adapter = new capbroker:adapter { ... };
         let app = new capbroker:app {
             \"capbroker:caps/fs@0.1.0\": adapter[\"capbroker:caps/fs@0.1.0\"], ...
         };
         export app...;",
    )
    .unwrap();
    let o = wac(&[
        "compose",
        script.to_str().unwrap(),
        "--dep",
        &format!("capbroker:adapter={}", shape.display()),
        "--dep",
        &format!("capbroker:app={}", probe.display()),
        "-o",
        bad.to_str().unwrap(),
    ]);
    fails_saying(
        o,
        "mismatched instantiation argument `capbroker:caps/fs@0.1.0`",
    );
    // The recipe wires every handle-carrying interface the app imports, so
    // an adapter that leaves one out is an error too, not a way around it.
    let o = sandboxed(&probe, &bad, &shape);
    fails_saying(
        o,
        "the instance has no export named `capbroker:caps/net@0.1.0`",
    );

    // An app that imports another version of a handle-carrying interface
    // is refused by the recipe rather than left half-wrapped.
    let needs = needs_v2();
    fails_saying(
        sandboxed(&needs, &bad, &adapter()),
        "imports capbroker:caps/fs@0.2.0; this script wires capbroker:caps/fs@0.1.0",
    );

    // Another spelling of the same version (build metadata) is another
    // version to the recipe too: the runtime could take it for this one,
    // and the app would reach the host around the adapter.
    let plus = dummy(
        "needs-plus",
        "package capbroker:caps@0.1.0+x;
         interface fs { resource dir { rights: func() -> u8; } }
         world adapter {
             import fs;
             export run: func(args: list<string>) -> result<_, string>;
         }",
    );
    fails_saying(
        sandboxed(&plus, &bad, &adapter()),
        "imports capbroker:caps/fs@0.1.0+x; this script wires capbroker:caps/fs@0.1.0",
    );

    // A composed component that imports what capbroker does not provide:
    // `capbroker run` refuses it, naming the import, and runs nothing.
    let o = capbroker(&["run", needs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("component imports instance `capbroker:caps/fs@0.2.0`"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn the_wit_package_resolves_offline_as_is() {
    let o = Command::new(support::wasm_tools())
        .args(["component", "wit", "wit"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let wit = text(&o.stdout);
    for item in [
        "package capbroker:caps@0.1.0",
        "world app {",
        "export run: func(args: list<string>) -> result<_, string>;",
        "granted: func() -> list<grant>;",
    ] {
        assert!(wit.contains(item), "missing `{item}`");
    }
}
