//! The web-server example started through the `capbroker` binary with its
//! own manifest, a scratch tree and a free port (tests/web_server.rs and
//! tests/soak.rs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Tree;

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub tree: Tree,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server with `greeting = hello, test`, its output discarded.
    pub fn start() -> Server {
        Server::start_with("hello, test", Stdio::null())
    }

    /// Starts the server with `greeting`, its stderr sent to `stderr`.
    pub fn start_with(greeting: &str, stderr: Stdio) -> Server {
        let tree = Tree::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(tree.path("conf")).unwrap();
        std::fs::create_dir_all(tree.path("uploads")).unwrap();
        std::fs::write(
            tree.path("conf/server.conf"),
            format!("listen = 127.0.0.1:{port}\ngreeting = {greeting}\n"),
        )
        .unwrap();
        // The example's own manifest, with the folders and the port this
        // test uses instead of the manifest's.
        super::guests(); // the manifest names the built component
        let manifest = super::root().join("components/examples/web-server/capbroker.toml");
        let child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args([
                "run",
                "-m",
                manifest.to_str().unwrap(),
                "--dir",
                &format!("cfg={}:ro", tree.path("conf").display()),
                "--dir",
                &format!("uploads={}", tree.path("uploads").display()),
                "--listen",
                &format!("web=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let server = Server { child, port, tree };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// One request; returns the status code and the body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// The server process's resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// How many file descriptors the server process holds.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}
