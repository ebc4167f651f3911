//! The Rust SDK's std-shaped layer, through the binary
//! (components/examples/sdk-rust): a capbroker file read with
//! `std::io::Read::read_to_string` and `BufRead::lines`, a denial that
//! surfaces as `std::io::ErrorKind::PermissionDenied`, a grant lookup that
//! names what is missing, and the scoped drop and the one-line pledge
//! refusing what follows, each with the text Rust prints for the error.

mod support;

use support::{capbroker, guest, text, Tree};

/// What the example prints, line for line: the SDK's `Display` for its
/// errors and the `io::ErrorKind` they convert to.
const EXPECTED: &str = "\
config: mode = demo
cfg after its scope: no directory granted as `cfg`
read_to_string: hello
lines: alpha|beta|gamma
last 6 bytes: gamma
wrote at 8
append opens at 0 and reads '3'
append wrote up to 17
out.txt: 3 lines|and more
missing.txt: NotFound: not found: `missing.txt`
create, then create_new(false): made true
binary.bin as text: InvalidData: invalid: `binary.bin` is not UTF-8
metadata(\"\"): InvalidInput: invalid: an empty path names nothing (`.` is the directory itself)
drop box, read+write new file: PermissionDenied: denied: the handle lacks read
write through read-only: PermissionDenied: denied: the handle lacks write,create
held file, first line: alpha
after pledge, read: refused: the file system was pledged away
after pledge, held file: PermissionDenied: refused: the file system was pledged away
";

#[test]
fn the_rust_sdk_is_std_io_and_gives_up_the_filesystem_in_one_line() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("conf")).unwrap();
    std::fs::write(tree.path("conf/app.conf"), "mode = demo\n").unwrap();
    std::fs::write(tree.path("root/lines.txt"), "alpha\nbeta\ngamma\n").unwrap();
    let cfg = format!("cfg={}:ro", tree.path("conf").display());
    let data = format!("data={}", tree.root().display());
    let app = guest("sdk_rust");
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &data, app.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, EXPECTED, "stderr: {stderr}");
    // It wrote through `Write`, and the refused write changed nothing.
    assert_eq!(
        tree.read("root/out.txt").as_deref(),
        Some("3 lines\nand more\n")
    );
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    // The refused drop-box open made nothing.
    assert!(tree.path("root/made.txt").exists() && !tree.path("root/inbox.txt").exists());
    // The broker recorded both refusals.
    assert!(stderr.contains("op=write-file"), "{stderr}");
    assert!(stderr.contains("pledged away"), "{stderr}");
}

/// guests.md tells an app outside this repository to depend on the SDK by
/// path: the SDK's manifest must stand on its own then (no workspace to
/// inherit from), and its WIT must still be found. Checked, not built, for
/// wasm32-wasip2, with a target dir of its own under target/ so that a
/// warm run reuses it.
#[test]
fn a_crate_outside_the_repository_uses_the_sdk_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let sdk = support::root().join("components/sdk");
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    std::fs::write(
        tmp.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"outside\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\ncapbroker-sdk = {{ path = {:?} }}\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("src/lib.rs"),
        "use capbroker_sdk::{export, Grants, Guest, Request, Rights};\n\
         struct App;\n\
         impl Guest for App {\n\
         fn requests() -> Vec<Request> { vec![Request::dir(\"data\", Rights::READ, \"reads\")] }\n\
         fn run(_: Vec<String>) -> Result<(), String> {\n\
         let data = Grants::granted().dir(\"data\")?;\n\
         data.read_to_string(\"x\")?;\n\
         capbroker_sdk::pledge::filesystem();\n\
         Ok(())\n\
         }\n\
         }\n\
         export!(App);\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "check",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(tmp.path().join("Cargo.toml"))
        .env(
            "CARGO_TARGET_DIR",
            support::root().join("target/guests-outside"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
