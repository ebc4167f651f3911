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
    // The broker recorded both refusals.
    assert!(stderr.contains("op=write-file"), "{stderr}");
    assert!(stderr.contains("pledged away"), "{stderr}");
}
