//! Network handles: listening and connecting only where granted, whatever
//! the spelling of the address; narrowing rights; sharing a connection with
//! a child; revocation.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use capbroker::grants::{Grant, NamedGrant};
use support::{spawner, Probe};

fn listen(spec: &str) -> NamedGrant {
    Grant::parse_listen(spec).expect("listen spec")
}

fn connect(spec: &str) -> NamedGrant {
    Grant::parse_connect(spec).expect("connect spec")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_only_where_granted() {
    let port = free_port();
    let mut p = Probe::start(&[listen(&format!("web=127.0.0.1:{port}"))]).await;
    p.expect(&[
        (
            &format!("listen web 127.0.0.2:{port} L"),
            "err:refused:127.0.0.2",
        ),
        (
            &format!("listen web 0.0.0.0:{port} L"),
            "err:refused:0.0.0.0",
        ),
        (&format!("listen web [::]:{port} L"), "err:refused:[::]"),
        (&format!("listen web [::1]:{port} L"), "err:refused:[::1]"),
        (
            &format!("listen web [::ffff:127.0.0.1]:{port} L"),
            "err:refused:[::ffff:127.0.0.1]",
        ),
        ("listen web 127.0.0.1:0 L", "err:refused:port 0"),
        (
            &format!("listen web 127.0.0.1:{} L", port.wrapping_add(1)),
            "err:refused",
        ),
        (&format!("listen web 127.1:{port} L"), "err:invalid"),
        (&format!("listen web localhost:{port} L"), "err:invalid"),
        (
            &format!("listen web 127.0.0.1:{port} L"),
            &format!("ok:127.0.0.1:{port}"),
        ),
    ])
    .await;
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    p.expect(&[
        ("accept L S", "ok"),
        ("sread S 5", "ok:hello"),
        ("swrite S world", "ok"),
        ("sshut S", "ok"),
    ])
    .await;
    assert_eq!(client.join().unwrap(), "world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_only_where_granted() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut p = Probe::start(&[connect(&format!("api=127.0.0.1:{port}"))]).await;
    p.expect(&[
        (
            &format!("connect api 127.0.0.2:{port} S"),
            "err:refused:127.0.0.2",
        ),
        (
            &format!("connect api 0.0.0.0:{port} S"),
            "err:refused:0.0.0.0",
        ),
        (&format!("connect api [::1]:{port} S"), "err:refused:[::1]"),
        (
            &format!("connect api [::ffff:127.0.0.1]:{port} S"),
            "err:refused:[::ffff:127.0.0.1]",
        ),
        (
            &format!("connect api 127.0.0.1:{} S", port.wrapping_add(1)),
            "err:refused",
        ),
        // Other spellings go through the resolver and are judged by what
        // they resolve to.
        (&format!("connect api 127.2:{port} S"), "err:refused"),
        (&format!("connect api 2130706434:{port} S"), "err:refused"),
        ("connect api 127.0.0.1 S", "err:invalid"),
        (&format!("connect api localhost:{port} S1"), "ok:127.0.0.1"),
        (
            &format!("connect api 127.0.0.1:{port} S2"),
            &format!("ok:127.0.0.1:{port}"),
        ),
        ("swrite S2 ping", "ok"),
    ])
    .await;
    // Only the two granted connections reached the server.
    server.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    for _ in 0..50 {
        match server.accept() {
            Ok((s, _)) => accepted.push(s),
            Err(_) if accepted.len() == 2 => break,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    assert_eq!(accepted.len(), 2);
    let mut got = [0u8; 4];
    accepted[1].set_nonblocking(false).unwrap();
    accepted[1].read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    // A name that resolves outside the grant is refused.
    let mut p = Probe::start(&[connect(&format!("api=10.0.0.0/8:{port}"))]).await;
    p.expect(&[(
        &format!("connect api localhost:{port} S"),
        "err:refused:localhost",
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rights_only_narrow() {
    let mut p = Probe::start(&[listen("web=127.0.0.0/8:8000-8099")]).await;
    p.expect(&[
        ("ranges web", "ok:127.0.0.0/8:8000-8099"),
        ("net-attenuate web 127.0.0.1:8000-8010 N", "ok"),
        ("ranges N", "ok:127.0.0.1/32:8000-8010"),
        ("net-attenuate web 127.0.0.1:7999-8010 X", "err:refused"),
        ("net-attenuate web 10.0.0.1:8000-8000 X", "err:refused"),
        ("net-attenuate web 0.0.0.0/0:8000-8000 X", "err:refused"),
        ("net-attenuate N 127.0.0.1:8000-8020 X", "err:refused"),
        ("net-attenuate N nonsense:1-2 X", "err:invalid"),
        ("listen N 127.0.0.1:8050 L", "err:refused"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_can_be_handed_to_a_child_and_nothing_else() {
    let port = free_port();
    let mut p = Probe::start(&[
        listen(&format!("web=127.0.0.1:{port}")),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=5s,max-children=4"),
    ])
    .await;
    p.expect(&[(&format!("listen web 127.0.0.1:{port} L"), "ok")])
        .await;
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"req").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    });
    let child = format!(
        "sread S 3;listen web 127.0.0.1:{port} X;connect api 127.0.0.1:{port} Y;swrite S from-child;sshut S"
    );
    p.expect(&[
        ("accept L S", "ok"),
        (&format!("spawn sp self budget S C {child}"), "ok"),
        ("sdrop S", "ok"),
        (
            "wait C",
            "ok:finished:ok:req\nerr:invalid:probe holds no handle `web`\nerr:invalid:probe holds no handle `api`\nok\nok",
        ),
    ])
    .await;
    assert_eq!(client.join().unwrap(), "from-child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_listen_right_stops_its_listeners() {
    let port = free_port();
    let mut p = Probe::start(&[listen(&format!("web=127.0.0.1:{port}"))]).await;
    p.expect(&[
        ("revocable web W R", "ok"),
        (&format!("listen W 127.0.0.1:{port} L"), "ok"),
        ("revoke R", "ok"),
        ("accept L S", "err:revoked"),
        (&format!("listen W 127.0.0.1:{port} L2"), "err:revoked"),
        ("net-attenuate W 127.0.0.1:1-2 X", "err:revoked"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rights_narrow_and_revoke_like_listen_rights() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut p = Probe::start(&[connect(&format!("api=127.0.0.0/8:{port}"))]).await;
    p.expect(&[
        (
            &format!("net-attenuate api 127.0.0.1:{port}-{port} N"),
            "ok",
        ),
        ("ranges N", &format!("ok:127.0.0.1/32:{port}-{port}")),
        (
            &format!("net-attenuate api 10.0.0.1:{port}-{port} X"),
            "err:refused",
        ),
        (
            &format!("net-attenuate N 127.0.0.2:{port}-{port} X"),
            "err:refused",
        ),
        (
            &format!("connect N 127.0.0.2:{port} S"),
            "err:refused:127.0.0.2",
        ),
        ("revocable N C R", "ok"),
        (
            &format!("connect C 127.0.0.1:{port} S"),
            &format!("ok:127.0.0.1:{port}"),
        ),
        ("revoke R", "ok"),
        (&format!("connect C 127.0.0.1:{port} S2"), "err:revoked"),
        ("swrite S after", "err:revoked"),
        (
            &format!("net-attenuate C 127.0.0.1:{port}-{port} X"),
            "err:revoked",
        ),
        // The right it was copied from is untouched.
        (
            &format!("connect N 127.0.0.1:{port} S3"),
            &format!("ok:127.0.0.1:{port}"),
        ),
    ])
    .await;
}
