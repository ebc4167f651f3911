//! `wasi-fs.to-descriptor`: a capbroker directory handle becomes a standard
//! `wasi:filesystem` descriptor with the same or fewer rights, under the
//! same confinement and revocations; nothing goes the other way.

mod support;

use support::{dir_at, Probe, Tree};

#[tokio::test]
async fn a_descriptor_from_a_handle_keeps_its_rights_and_its_confinement() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("attenuate data read,write,list D", "ok"),
        ("wasi-read D read hello.txt", "ok:hello"),
        ("wasi-read D read sub/inner.txt", "ok:inner"),
        // Fewer rights than the handle: a read-only descriptor cannot write.
        (
            "wasi-write D read hello.txt changed",
            "err:io:wasi not-permitted",
        ),
        // Writing an existing file needs `write`; creating one, `create`.
        (
            "wasi-write D read,write hello.txt changed",
            "err:io:wasi not-permitted",
        ),
        ("wasi-read D read hello.txt", "ok:hello"),
        // With `create` and `write` from a handle that has them, it writes.
        ("wasi-write data write,create new.txt made", "ok"),
        // More rights than the handle: refused, nothing made.
        ("wasi-read D read,create hello.txt", "err:denied:create"),
        ("wasi-read D all hello.txt", "err:denied:create,remove"),
        // The handle's confinement holds for the descriptor.
        (
            "wasi-read D read ../outside/secret",
            "err:io:wasi not-permitted",
        ),
        ("wasi-read D read /etc/passwd", "err:io:wasi not-permitted"),
    ])
    .await;
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert_eq!(tree.read("root/new.txt").as_deref(), Some("made"));
}

#[tokio::test]
async fn revoking_the_handle_closes_its_descriptors() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("revocable data D R", "ok"),
        ("wasi-hold D read,list W", "ok"),
        ("wasi-read-held W hello.txt", "ok:hello"),
        ("revoke R", "ok"),
        ("wasi-read-held W hello.txt", "err:io:wasi access"),
        ("wasi-read D read hello.txt", "err:revoked"),
        // The handle it was not derived from still works.
        ("wasi-read data read hello.txt", "ok:hello"),
    ])
    .await;
}
