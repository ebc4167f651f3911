//! The web-server example end to end, through the `capbroker` binary, over
//! real TCP: every request runs in a child with a budget and no authority
//! but, for uploads, a create-only handle on the uploads folder.

mod support;

use support::web::Server;

#[test]
fn requests_uploads_and_what_a_handler_can_reach() {
    let server = Server::start();
    assert_eq!(server.request("GET", "/", b""), (200, "hello, test".into()));
    assert_eq!(server.request("GET", "/nope", b"").0, 404);

    let (code, body) = server.request("POST", "/upload/report.txt", b"uploaded bytes");
    assert_eq!((code, body.as_str()), (201, "stored report.txt (14 bytes)"));
    assert_eq!(
        server.tree.read("uploads/report.txt").as_deref(),
        Some("uploaded bytes")
    );
    // Create-only: an upload cannot replace a file.
    assert_eq!(
        server.request("POST", "/upload/report.txt", b"again").0,
        403
    );
    assert_eq!(
        server.tree.read("uploads/report.txt").as_deref(),
        Some("uploaded bytes")
    );
    // Nothing leaves the uploads folder.
    for path in [
        "/upload/../escaped.txt",
        "/upload/../conf/server.conf",
        "/upload//tmp/escaped.txt",
    ] {
        let (code, body) = server.request("POST", path, b"x");
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.starts_with("escape"), "{path}: {body}");
    }
    assert!(!server.tree.path("escaped.txt").exists());
    assert!(server
        .tree
        .read("conf/server.conf")
        .unwrap()
        .contains("listen"));
    let mut stored: Vec<_> = std::fs::read_dir(server.tree.path("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    stored.sort();
    assert_eq!(stored, ["report.txt"]);

    // A handler reaches no file, no socket, no environment, no handle.
    let (code, body) = server.request("GET", "/sandbox", b"");
    assert_eq!(
        (code, body.as_str()),
        (200, "fs=refused file=refused net=refused env=0 handles=0")
    );
}

#[test]
fn exhausted_handlers_get_503_while_50_concurrent_requests_succeed() {
    let server = std::sync::Arc::new(Server::start());
    let bad: Vec<_> = ["/spin", "/hog", "/sleep"]
        .into_iter()
        .map(|path| {
            let s = server.clone();
            std::thread::spawn(move || (path, s.request("GET", path, b"")))
        })
        .collect();
    let good: Vec<_> = (0..50)
        .map(|_| {
            let s = server.clone();
            std::thread::spawn(move || s.request("GET", "/", b""))
        })
        .collect();
    for g in good {
        assert_eq!(g.join().unwrap(), (200, "hello, test".to_string()));
    }
    for b in bad {
        let (path, (code, body)) = b.join().unwrap();
        assert_eq!(code, 503, "{path}: {body}");
        let why = match path {
            "/spin" => "CPU",
            "/hog" => "memory",
            _ => "time",
        };
        assert!(body.contains(why), "{path}: {body}");
    }
}

#[test]
fn a_thousand_requests_leave_memory_steady() {
    let server = Server::start();
    for _ in 0..100 {
        assert_eq!(server.request("GET", "/", b"").0, 200);
    }
    let before = server.rss_kib();
    for _ in 0..1000 {
        assert_eq!(server.request("GET", "/", b"").0, 200);
    }
    let grown_mib = server.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 32,
        "1000 requests grew the server by {grown_mib} MiB"
    );
    assert_eq!(server.request("GET", "/", b"").0, 200);
}
