//! Network handles: listening, connecting and exchanging UDP datagrams only
//! where granted, whatever the spelling of the address; narrowing rights;
//! sharing a connection or a right with a child; revocation; and UDP for
//! plain programs through the binary.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

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
        // Other spellings are names, and this grant names no host: they
        // are refused without a lookup.
        (
            &format!("connect api 127.2:{port} S"),
            "err:refused:`127.2`",
        ),
        (
            &format!("connect api 2130706434:{port} S"),
            "err:refused:`2130706434`",
        ),
        ("connect api 127.0.0.1 S", "err:invalid"),
        (
            &format!("connect api 127.0.0.1:{port} S1"),
            &format!("ok:127.0.0.1:{port}"),
        ),
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
}

/// Case 11 of issue 16: the broker looked up any name a guest passed to
/// `connect` (a DNS exfiltration channel, and an oracle of what names
/// resolve to), even under a grant of addresses only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_name_is_refused_unless_a_grant_names_it() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut p = Probe::start(&[connect(&format!("api=127.0.0.1:{port}"))]).await;
    p.expect(&[
        (
            &format!("connect api localhost:{port} S"),
            "err:refused:`localhost` is not a host name granted to this right (it was granted addresses only)",
        ),
        (
            &format!("connect api 127.0.0.1:{port} S"),
            &format!("ok:127.0.0.1:{port}"),
        ),
    ])
    .await;
}

/// A grant may name a host: it is looked up once, when the component
/// starts, and the right reaches the addresses it resolved to and no
/// others; the guest reaches them by that name (matched as text) or by
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_reaches_what_it_resolved_to() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut p = Probe::start(&[connect(&format!("api=localhost:{port}"))]).await;
    p.expect(&[
        (
            &format!("connect api localhost:{port} S1"),
            &format!("ok:127.0.0.1:{port}"),
        ),
        (
            &format!("connect api LocalHost.:{port} S2"),
            &format!("ok:127.0.0.1:{port}"),
        ),
        (
            &format!("connect api 127.0.0.1:{port} S3"),
            &format!("ok:127.0.0.1:{port}"),
        ),
        (
            &format!("connect api localhost:{} S", port.wrapping_add(1)),
            "err:refused:port",
        ),
        (&format!("connect api 127.0.0.2:{port} S"), "err:refused"),
        (
            &format!("connect api api.localhost:{port} S"),
            "err:refused:`api.localhost` is not a host name granted to this right (it was granted localhost)",
        ),
        (
            &format!("net-attenuate api 127.0.0.1:{port}-{port} N"),
            "ok",
        ),
        (
            &format!("connect N localhost:{port} S4"),
            &format!("ok:127.0.0.1:{port}"),
        ),
    ])
    .await;
    let ranges = p.step("ranges api").await;
    assert!(
        ranges.contains(&format!("127.0.0.1/32:{port}-{port}")),
        "{ranges}"
    );

    assert!(Grant::parse_listen("web=localhost:8080").is_err());
    assert!(Grant::parse_connect("api=127.1:80").is_err());
}

/// A peer that never answers (here a listener whose queue is full, which
/// drops SYNs) does not hold a `connect` for the system's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_gets_no_answer_gives_up() {
    let full = tokio::net::TcpSocket::new_v4().unwrap();
    full.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = full.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut queued = Vec::new();
    while let Ok(Ok(s)) = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        queued.push(s);
        assert!(queued.len() < 64, "the listen queue never filled");
    }
    let mut p = Probe::start(&[connect(&format!("api={addr}"))]).await;
    let started = std::time::Instant::now();
    let got = p.step(&format!("connect api {addr} S")).await;
    let took = started.elapsed();
    assert!(got.starts_with("err:io:"), "{got}");
    assert!(got.contains("no connection within 10000 ms"), "{got}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

/// Case 11 of issue 16, second half: `renounce(network)` ended WASI's
/// sockets but not capbroker's own listen and connect rights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pledging_the_network_ends_every_network_handle() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    let lport = free_port();
    let mut p = Probe::start(&[
        listen(&format!("web=127.0.0.1:{lport}")),
        connect(&format!("api=127.0.0.1:{sport}")),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=5s,max-children=4"),
    ])
    .await;
    let early_child = format!("sleep 1000;connect api 127.0.0.1:{sport} Y;sread S 1");
    p.expect(&[
        (&format!("listen web 127.0.0.1:{lport} L"), "ok"),
        (&format!("connect api 127.0.0.1:{sport} S"), "ok"),
        // A child given copies before the pledge, which uses them after it.
        (&format!("spawn sp self budget api,S C {early_child}"), "ok"),
        ("pledge-network", "ok"),
        (
            &format!("connect api 127.0.0.1:{sport} S2"),
            "err:refused:the network was pledged away",
        ),
        (&format!("listen web 127.0.0.1:{lport} L2"), "err:refused"),
        ("accept L A", "err:refused"),
        ("swrite S after", "err:refused"),
        ("sread S 1", "err:refused"),
        ("sshut S", "err:refused"),
        (
            &format!("net-attenuate api 127.0.0.1:{sport}-{sport} N"),
            "err:refused",
        ),
        ("revocable api C2 R", "err:refused"),
        (
            "wait C",
            "ok:finished:ok\nerr:refused:the network was pledged away\nerr:refused",
        ),
        // Copies made after the pledge are dead on arrival.
        (
            &format!("spawn sp self budget api D connect api 127.0.0.1:{sport} Y"),
            "ok",
        ),
        (
            "wait D",
            "ok:finished:err:refused:the network was pledged away",
        ),
    ])
    .await;
    // Only the connection made before the pledge reached the server, and
    // nothing was written on it.
    server.set_nonblocking(true).unwrap();
    let mut accepted = 0;
    while let Ok((mut s, _)) = server.accept() {
        accepted += 1;
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        assert!(!matches!(s.read(&mut buf), Ok(n) if n > 0));
    }
    assert_eq!(accepted, 1);
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

/// A long write stops within a piece of it once its right is revoked,
/// rather than running to its end: a child writes 24 MiB in one call to a
/// peer that reads slowly, and its parent revokes the right meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_stops_a_long_write_midway() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    // 64 KiB every 20 ms, about 3 MiB a second, until the writer stops.
    let reader = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let (mut total, mut buf) = (0usize, vec![0; 64 << 10]);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    let mut p = Probe::start(&[connect(&format!("api=127.0.0.1:{port}")), spawner("sp")]).await;
    p.expect(&[
        ("revocable api C R", "ok"),
        ("spawn sp self budget C kid serve", "ok"),
        (&format!("psend kid connect C 127.0.0.1:{port} S"), "ok"),
        ("precv kid", "ok:ok:127.0.0.1"),
        ("psend kid swrite-fill S 24", "ok"),
        ("sleep 300", "ok"),
        ("revoke R", "ok"),
        ("precv kid", "ok:err:revoked"),
    ])
    .await;
    let total = reader.join().unwrap();
    assert!(
        total < 16 << 20,
        "{total} bytes of 24 MiB went out, most of them after the revoke"
    );
}

/// Port 0 lets the system pick any port: a grant of a range of ports that
/// starts at 0 does not cover it, only one of every port does.
#[tokio::test]
async fn port_zero_needs_every_port() {
    let mut p = Probe::start(&[listen("web=127.0.0.1:0-100")]).await;
    p.expect(&[("listen web 127.0.0.1:0 L", "err:refused:port 0")])
        .await;
    let mut p = Probe::start(&[listen("web=127.0.0.1:0-65535")]).await;
    p.expect(&[("listen web 127.0.0.1:0 L", "ok")]).await;
}

/// Port 0 needs every port on the very address asked for; `[::]`, which
/// also listens on IPv4, needs `0.0.0.0` too; and the unspecified address,
/// which the system takes for loopback, is never connected to.
#[tokio::test]
async fn addresses_that_mean_more_than_they_say() {
    let port = free_port();
    let mut p = Probe::start(&[
        listen(&format!(
            "web=127.0.0.1:0-1023,127.0.0.2:0-65535,[::]:{port}"
        )),
        connect(&format!("api=0.0.0.0/5:{port}")),
    ])
    .await;
    p.expect(&[
        ("listen web 127.0.0.1:0 L", "err:refused:port 0"),
        (&format!("listen web [::]:{port} L6"), "err:refused"),
        (&format!("connect api 0.0.0.0:{port} S"), "err:refused"),
    ])
    .await;
}

// UDP: a right in the `net` interface, and `wasi:sockets/udp` for plain
// programs.

fn udp(spec: &str) -> NamedGrant {
    Grant::parse_udp(spec).expect("udp spec")
}

/// A UDP echo on 127.0.0.1. Before each echo, a datagram comes to the
/// sender from `intruder`, another socket on another port, which the tests'
/// grants never name: a receive that hands it over has let it through.
struct UdpEcho {
    port: u16,
    intruder: u16,
}

fn udp_echo() -> UdpEcho {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ports = UdpEcho {
        port: echo.local_addr().unwrap().port(),
        intruder: intruder.local_addr().unwrap().port(),
    };
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = intruder.send_to(b"intruder", from);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_right_exchanges_datagrams_only_with_its_peers() {
    let e = udp_echo();
    let port = e.port;
    let mut p = Probe::start(&[udp(&format!("peers=127.0.0.1:{port}"))]).await;
    p.expect(&[
        // A chosen local address is a listen right's, not a UDP right's.
        ("udp-bind peers 127.0.0.1:0 U", "err:refused:127.0.0.1:0"),
        ("udp-bind peers 0.0.0.0:5353 U", "err:refused"),
        ("udp-bind peers 0.0.0.1 U", "err:invalid"),
        ("udp-bind peers 0.0.0.0:0 U", "ok:0.0.0.0:"),
        (
            &format!("udp-send U 127.0.0.1:{} x", e.intruder),
            "err:refused:127.0.0.1",
        ),
        (&format!("udp-send U 0.0.0.0:{port} x"), "err:refused"),
        (
            &format!("udp-send U [::ffff:127.0.0.1]:{port} x"),
            "err:refused:[::ffff:127.0.0.1]",
        ),
        (&format!("udp-send U 127.1:{port} x"), "err:refused:`127.1`"),
        (
            &format!("udp-send U localhost:{port} x"),
            "err:refused:`localhost`",
        ),
        (
            &format!("udp-send-fill U 127.0.0.1:{port} 65508"),
            "err:invalid:65508 bytes",
        ),
        (&format!("udp-send U 127.0.0.1:{port} hi"), "ok"),
        // The intruder's datagram came first, and was dropped.
        ("udp-recv U", &format!("ok:hi@127.0.0.1:{port}")),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_rights_narrow_revoke_and_drop_like_the_others() {
    let e = udp_echo();
    let port = e.port;
    let mut p = Probe::start(&[udp(&format!("peers=127.0.0.0/8:{port}"))]).await;
    p.expect(&[
        (
            &format!("net-attenuate peers 127.0.0.1:{port}-{port} N"),
            "ok",
        ),
        ("ranges N", &format!("ok:127.0.0.1/32:{port}-{port}")),
        (
            &format!("net-attenuate peers 127.0.0.0/8:{port}-{}", port + 1),
            "err",
        ),
        (
            &format!("net-attenuate N 127.0.0.2:{port}-{port} X"),
            "err:refused",
        ),
        ("udp-bind N 0.0.0.0:0 UN", "ok"),
        (&format!("udp-send UN 127.0.0.2:{port} x"), "err:refused"),
        ("revocable N C R", "ok"),
        ("udp-bind C 0.0.0.0:0 U", "ok"),
        (&format!("udp-send U 127.0.0.1:{port} one"), "ok"),
        ("udp-recv U", &format!("ok:one@127.0.0.1:{port}")),
        (&format!("udp-send U 127.0.0.1:{port} two"), "ok"),
        ("revoke R", "ok"),
        // The echo of `two` arrives after the revoke: not handed over.
        ("udp-recv U", "err:revoked"),
        (&format!("udp-send U 127.0.0.1:{port} three"), "err:revoked"),
        ("udp-bind C 0.0.0.0:0 U2", "err:revoked"),
        (
            &format!("net-attenuate C 127.0.0.1:{port}-{port} X"),
            "err:revoked",
        ),
        // The rights it came from are untouched.
        (&format!("udp-send UN 127.0.0.1:{port} four"), "ok"),
        ("udp-recv UN", &format!("ok:four@127.0.0.1:{port}")),
        // Dropped, it is gone: nothing hands it back.
        ("udp-drop peers", "ok"),
        (
            "udp-bind peers 0.0.0.0:0 U3",
            "err:invalid:probe holds no handle",
        ),
        ("granted", "ok:0 more"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_right_is_shared_with_a_child_and_ended_by_a_pledge() {
    let e = udp_echo();
    let port = e.port;
    let mut p = Probe::start(&[
        udp(&format!("peers=127.0.0.1:{port}")),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=5s,max-children=4"),
    ])
    .await;
    let child = format!("udp-bind peers 0.0.0.0:0 K;udp-send K 127.0.0.1:{port} kid;udp-recv K");
    p.expect(&[(&format!("spawn sp self budget peers C {child}"), "ok")])
        .await;
    let got = p.step("wait C").await;
    assert!(
        got.ends_with(&format!("ok\nok:kid@127.0.0.1:{port}")),
        "{got}"
    );
    p.expect(&[
        ("udp-bind peers 0.0.0.0:0 U", "ok"),
        ("pledge-network", "ok"),
        (
            &format!("udp-send U 127.0.0.1:{port} x"),
            "err:refused:the network was pledged away",
        ),
        ("udp-recv U", "err:refused"),
        ("udp-bind peers 0.0.0.0:0 U2", "err:refused"),
        // A copy given to a child after the pledge is dead on arrival.
        (
            "spawn sp self budget peers D udp-bind peers 0.0.0.0:0 K",
            "ok",
        ),
        (
            "wait D",
            "ok:finished:err:refused:the network was pledged away",
        ),
    ])
    .await;
}

/// std-probe, a plain `wasi:cli` program, run through the binary.
fn std_probe(grants: &[&str], steps: &[&str]) -> (Vec<String>, std::process::Output) {
    let probe = support::guest("std-probe");
    let mut args = vec!["run", "--timeout", "20s"];
    args.extend(grants);
    args.push(probe.to_str().unwrap());
    args.extend(steps);
    let out = support::capbroker(&args);
    let lines = support::text(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (lines, out)
}

fn expect_lines(got: &[String], want: &[&str], out: &std::process::Output) {
    assert_eq!(
        got.len(),
        want.len(),
        "{got:#?}\nstderr: {}",
        support::text(&out.stderr)
    );
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.starts_with(w),
            "expected `{w}…`, got `{g}`\nall: {got:#?}"
        );
    }
}

#[test]
fn a_plain_program_exchanges_udp_datagrams_only_within_its_grant() {
    let e = udp_echo();
    let port = e.port;
    let tree = support::Tree::new();
    let log = tree.path("audit.jsonl");
    let echo = format!("127.0.0.1:{port}");
    let other = format!("127.0.0.1:{}", e.intruder);
    let (lines, out) = std_probe(
        &[
            "--audit",
            log.to_str().unwrap(),
            "--udp",
            &format!("echo={echo}"),
        ],
        &["udp-echo", &echo, "hi", "udp-echo", &other, "x"],
    );
    expect_lines(
        &lines,
        &[
            // The intruder's datagram came first, and was dropped.
            &format!("ok udp-echo hi from {echo}"),
            "err permission-denied udp-echo",
        ],
        &out,
    );
    let all = support::events(&log);
    let denied = |op: &str, path: &str| {
        all.iter()
            .any(|e| e["event"] == "deny" && e["op"] == op && e["path"] == path)
    };
    assert!(denied("udpsend", &other), "{all:#?}");
    assert!(denied("udpreceive", &other), "{all:#?}");

    // A connected socket: the same peers only.
    let (lines, out) = std_probe(
        &["--udp", &format!("echo={echo}")],
        &[
            "udp-bind",
            "0.0.0.0:0",
            "udp-connect",
            &other,
            "udp-connect",
            &echo,
            "udp-echo",
            "connected",
            "again",
        ],
    );
    expect_lines(
        &lines,
        &[
            "ok udp-bind 0.0.0.0:",
            "err permission-denied udp-connect",
            "ok udp-connect",
            &format!("ok udp-echo again from {echo}"),
        ],
        &out,
    );

    // No UDP grant, or only TCP ones: no UDP at all.
    for grants in [vec![], vec!["--connect", "api=127.0.0.1:1-65535"]] {
        let (lines, out) = std_probe(&grants, &["udp-echo", &echo, "hi"]);
        expect_lines(&lines, &["err permission-denied udp-echo"], &out);
    }
}

#[test]
fn a_plain_program_binds_a_chosen_udp_address_only_with_a_listen_grant() {
    let e = udp_echo();
    let peers = format!("echo=127.0.0.1:{}", e.port);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let local = format!("127.0.0.1:{port}");
    let (lines, out) = std_probe(
        &["--udp", &peers],
        &["udp-bind", &local, "udp-bind", "0.0.0.0:0"],
    );
    expect_lines(
        &lines,
        &["err permission-denied udp-bind", "ok udp-bind 0.0.0.0:"],
        &out,
    );
    let (lines, out) = std_probe(
        &["--udp", &peers, "--listen", &format!("here={local}")],
        &[
            "udp-bind",
            &local,
            "udp-echo",
            &format!("127.0.0.1:{}", e.port),
            "bound",
        ],
    );
    expect_lines(
        &lines,
        &[
            &format!("ok udp-bind {local}"),
            &format!("ok udp-echo bound from 127.0.0.1:{}", e.port),
        ],
        &out,
    );
}

#[test]
fn pledging_the_network_ends_a_plain_programs_udp_sockets() {
    let e = udp_echo();
    let echo = format!("127.0.0.1:{}", e.port);
    let (lines, out) = std_probe(
        &["--udp", &format!("echo={echo}")],
        &[
            "udp-bind",
            "0.0.0.0:0",
            "udp-echo",
            &echo,
            "before",
            "pledge",
            "net",
            // The socket made before the pledge: a receive fails at once
            // (it does not wait for datagrams that would be dropped), and
            // so does a send. Then a new socket.
            "udp-recv",
            "udp-echo",
            &echo,
            "x",
            "udp-bind",
            "0.0.0.0:0",
        ],
    );
    expect_lines(
        &lines,
        &[
            "ok udp-bind",
            &format!("ok udp-echo before from {echo}"),
            "ok pledge net",
            "err permission-denied udp-recv",
            "err",
            "err permission-denied udp-bind",
        ],
        &out,
    );
}

#[test]
fn malformed_udp_grants_are_refused_with_the_flag_named() {
    let probe = support::guest("std-probe");
    for spec in [
        "echo",
        "echo=",
        "=127.0.0.1:53",
        "echo=127.0.0.1",
        "echo=127.0.0.1:90-80",
        "echo=10.0.0.0/33:53",
        "echo=127.1:53",
        "echo=not a host:53",
    ] {
        let out = support::capbroker(&["run", "--udp", spec, probe.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{spec}");
        let err = support::text(&out.stderr);
        assert!(err.contains("--udp"), "{spec}: {err}");
    }
    // Ranges no peer can ever be in are refused for UDP and connect
    // grants alike, rather than granted and never matched.
    for flag in ["--udp", "--connect"] {
        for (range, says) in [
            ("0.0.0.0:53", "the unspecified address"),
            ("[::]:53", "the unspecified address"),
            ("[::ffff:127.0.0.1]:53", "IPv4-mapped"),
            ("[::ffff:0:0]/96:53", "IPv4-mapped"),
            ("127.0.0.1:0", "port 0"),
        ] {
            let spec = format!("peer={range}");
            let out = support::capbroker(&["run", flag, &spec, probe.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(2), "{flag} {spec}");
            let err = support::text(&out.stderr);
            assert!(err.contains(says), "{flag} {spec}: {err}");
        }
    }
}

#[test]
fn a_udp_grant_in_the_manifest_works_as_the_flag() {
    let e = udp_echo();
    let echo = format!("127.0.0.1:{}", e.port);
    let tree = support::Tree::new();
    let manifest = tree.path("m.toml");
    let probe = support::guest("std-probe");
    std::fs::write(
        &manifest,
        format!(
            "component = {:?}\nargs = [\"udp-echo\", \"{echo}\", \"hi\"]\n\n[udp]\necho = \"{echo}\"\n",
            probe.display().to_string()
        ),
    )
    .unwrap();
    let out = support::capbroker(&["run", "-m", manifest.to_str().unwrap()]);
    expect_lines(
        &support::text(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
        &[&format!("ok udp-echo hi from {echo}")],
        &out,
    );
    // --print-config writes it back as it was read.
    let out = support::capbroker(&["run", "-m", manifest.to_str().unwrap(), "--print-config"]);
    let printed = support::text(&out.stdout);
    assert!(printed.contains("[udp]"), "{printed}");
    assert!(
        printed.contains(&format!("echo = [\"{echo}\"]")),
        "{printed}"
    );
}

#[test]
fn learning_narrows_a_udp_grant_to_the_peers_used() {
    let e = udp_echo();
    let port = e.port;
    let tree = support::Tree::new();
    let m = tree.path("learned.toml");
    let probe = support::guest("probe");
    let steps = [
        "udp-bind peers 0.0.0.0:0 U".to_string(),
        format!("udp-send U 127.0.0.1:{port} hi"),
        "udp-recv U".to_string(),
    ];
    let grant = format!("peers=127.0.0.0/8:{port}");
    let mut args = vec![
        "run",
        "--learn",
        m.to_str().unwrap(),
        "--udp",
        &grant,
        probe.to_str().unwrap(),
    ];
    args.extend(steps.iter().map(String::as_str));
    let out = support::capbroker(&args);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let toml = std::fs::read_to_string(&m).unwrap();
    assert!(
        toml.contains(&format!("[udp]\npeers = [\"127.0.0.1:{port}\"]")),
        "{toml}"
    );
    // The learned manifest re-runs the steps, and refuses another peer.
    let other = format!("udp-send U 127.0.0.1:{} x", e.intruder);
    let mut args = vec!["run", "-m", m.to_str().unwrap()];
    args.extend(steps.iter().map(String::as_str));
    args.push(&other);
    let out = support::capbroker(&args);
    let stdout = support::text(&out.stdout);
    assert!(
        stdout.contains(&format!("udp-recv U => ok:hi@127.0.0.1:{port}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{other} => err:refused:")),
        "{stdout}"
    );
}
