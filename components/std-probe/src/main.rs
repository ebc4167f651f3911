//! A plain `wasi:cli` command written against Rust's standard library. Its
//! arguments are steps, run in order; each prints one line, `ok …` or
//! `err <kind> …`, and a failing step does not stop the next. Steps:
//!
//! - `read PATH`, `write PATH TEXT`, `create PATH`, `list DIR`, `mkdir DIR`,
//!   `remove PATH`, `stat PATH`, `link FROM TO`, `rename FROM TO`,
//!   `append PATH TEXT`
//! - `orphan PREOPEN PATH`: open PATH below the preopen with raw
//!   `wasi:filesystem`, keep only a read stream of it; `orphan-read`;
//!   `preopen-list PREOPEN`: list the preopen's own descriptor; `regain`:
//!   take the preopens, drop them, and ask again
//! - `hold PATH`: open PATH for reading and writing and keep it;
//!   `hold-write TEXT`, `hold-read`: use the kept file
//! - `env KEY`
//! - `connect ADDR`: connect and keep the stream; `send TEXT`: write to it
//!   and read the echo
//! - `lookup NAME`: the addresses `getaddrinfo` finds for NAME, as std looks
//!   them up; `lookup-hold NAME`: ask `wasi:sockets/ip-name-lookup` itself
//!   and keep the stream, beside those kept before; `lookup-ready`: whether
//!   the last kept stream's pollable is ready; `lookup-next`: its next
//!   address, or `none`
//! - `udp-bind ADDR`: bind a UDP socket to ADDR and keep it; `udp-connect
//!   ADDR`: connect the kept socket; `udp-echo ADDR TEXT`: send TEXT to ADDR
//!   from the kept socket (a new one bound to `0.0.0.0:0` if none is kept;
//!   ADDR `connected`: to the peer it is connected to) and print the first
//!   datagram that comes back, and where from; `udp-recv`: wait for a
//!   datagram on the kept socket
//! - `pledge fs|net|env|spawn`, `unveil PREOPEN SUB RIGHTS`
//!   (RIGHTS comma-separated: read, write, create, list, remove)
//! - `exit CODE`, `panic`, `stderr TEXT`, `bomb` (allocate without end),
//!   `sleep MS`
//! - `args`: print every later argument (`ok args ["a", "--b"]`) and stop
//! - `race MS`: for MS milliseconds, the race harness's loop
//!   (tests/race.rs) on `/data`

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs, UdpSocket};

use capbroker_sdk::bindings::wasi::io::streams::InputStream;
use capbroker_sdk::pledge;
use capbroker_sdk::wasi_fs::{DescriptorFlags, OpenFlags as WasiOpen, PathFlags};
use capbroker_sdk::Rights;

// The raw preopens, for the steps that hold a stream without its
// descriptor (Rust's std never does), and the raw name lookup, for the
// steps that hold a lookup's stream across a pledge (std's never outlives
// one call).
wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package capbroker:std-probe;
        world raw {
            import wasi:filesystem/preopens@0.2.12;
            import wasi:sockets/instance-network@0.2.12;
            import wasi:sockets/ip-name-lookup@0.2.12;
        }
    ",
    world: "capbroker:std-probe/raw",
    with: {
        "wasi:filesystem/preopens@0.2.12": generate,
        "wasi:sockets/network@0.2.12": generate,
        "wasi:sockets/instance-network@0.2.12": generate,
        "wasi:sockets/ip-name-lookup@0.2.12": generate,
        "wasi:filesystem/types@0.2.12": capbroker_sdk::bindings::wasi::filesystem::types,
        "wasi:io/error@0.2.12": capbroker_sdk::bindings::wasi::io::error,
        "wasi:io/poll@0.2.12": capbroker_sdk::bindings::wasi::io::poll,
        "wasi:io/streams@0.2.12": capbroker_sdk::bindings::wasi::io::streams,
        "wasi:clocks/wall-clock@0.2.12": capbroker_sdk::bindings::wasi::clocks::wall_clock,
    },
});

/// Opens `path` below the preopen `preopen` for reading and returns a
/// stream of it, dropping the descriptors on the way.
fn orphan_stream(preopen: &str, path: &str) -> std::io::Result<InputStream> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let (dir, _) = dirs
        .into_iter()
        .find(|(_, p)| p == preopen)
        .ok_or(ErrorKind::NotFound)?;
    let file = dir
        .open_at(
            PathFlags::empty(),
            path,
            WasiOpen::empty(),
            DescriptorFlags::READ,
        )
        .map_err(|e| std::io::Error::other(e.name()))?;
    file.read_via_stream(0)
        .map_err(|e| std::io::Error::other(e.name()))
}

use wasi::sockets::ip_name_lookup::{self as name_lookup, ResolveAddressStream};
use wasi::sockets::network::IpAddress;

/// The addresses std's `getaddrinfo` finds for `name`, each once.
fn lookup(name: &str) -> std::io::Result<String> {
    let mut found: Vec<String> = Vec::new();
    for a in (name, 0).to_socket_addrs()? {
        let ip = a.ip().to_string();
        if !found.contains(&ip) {
            found.push(ip);
        }
    }
    Ok(found.join(" "))
}

fn ip(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::Ipv4((a, b, c, d)) => [a, b, c, d].into(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => [a, b, c, d, e, f, g, h].into(),
    }
}

fn kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::PermissionDenied => "permission-denied",
        ErrorKind::NotFound => "not-found",
        ErrorKind::AlreadyExists => "exists",
        _ => "other",
    }
}

fn report(step: &str, r: std::io::Result<String>) {
    match r {
        Ok(s) => println!("ok {step} {s}"),
        Err(e) => println!("err {} {step}: {e}", kind(&e)),
    }
}

fn rights(s: &str) -> Rights {
    s.split(',').fold(Rights::empty(), |r, w| {
        r | match w {
            "read" => Rights::READ,
            "write" => Rights::WRITE,
            "create" => Rights::CREATE,
            "list" => Rights::LIST,
            "remove" => Rights::REMOVE,
            _ => Rights::empty(),
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut held: Option<File> = None;
    let mut stream: Option<TcpStream> = None;
    let mut udp: Option<UdpSocket> = None;
    let mut orphan: Option<InputStream> = None;
    let mut resolving: Vec<ResolveAddressStream> = Vec::new();
    let mut i = 0;
    let next = |i: &mut usize| {
        *i += 1;
        args.get(*i - 1).cloned().unwrap_or_default()
    };
    while i < args.len() {
        let step = next(&mut i);
        match step.as_str() {
            "read" => {
                let p = next(&mut i);
                report(&step, fs::read_to_string(&p));
            }
            "write" => {
                let (p, text) = (next(&mut i), next(&mut i));
                report(&step, fs::write(&p, text).map(|()| p));
            }
            "create" => {
                let p = next(&mut i);
                report(&step, File::create_new(&p).map(|_| p));
            }
            "list" => {
                let p = next(&mut i);
                report(
                    &step,
                    fs::read_dir(&p).and_then(|d| {
                        let mut names = d
                            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                            .collect::<Result<Vec<_>, _>>()?;
                        names.sort();
                        Ok(names.join(","))
                    }),
                );
            }
            "mkdir" => {
                let p = next(&mut i);
                report(&step, fs::create_dir(&p).map(|()| p));
            }
            "orphan" => {
                let (pre, p) = (next(&mut i), next(&mut i));
                report(
                    &step,
                    orphan_stream(&pre, &p).map(|s| {
                        orphan = Some(s);
                        p
                    }),
                );
            }
            "regain" => {
                // Drops every preopen it is handed, then asks again.
                let first = wasi::filesystem::preopens::get_directories().len();
                let again = wasi::filesystem::preopens::get_directories();
                let names: Vec<String> = again.into_iter().map(|(_, p)| p).collect();
                println!("ok regain first={first} again={}", names.join(","));
            }
            "preopen-list" => {
                let pre = next(&mut i);
                let r = wasi::filesystem::preopens::get_directories()
                    .into_iter()
                    .find(|(_, p)| *p == pre)
                    .ok_or_else(|| std::io::Error::from(ErrorKind::NotFound))
                    .and_then(|(d, _)| {
                        let entries = d.read_directory().map_err(|e| {
                            std::io::Error::new(ErrorKind::PermissionDenied, e.name())
                        })?;
                        let mut names = Vec::new();
                        while let Some(e) = entries.read_directory_entry().map_err(|e| {
                            std::io::Error::new(ErrorKind::PermissionDenied, e.name())
                        })? {
                            names.push(e.name);
                        }
                        names.sort();
                        Ok(names.join(","))
                    });
                report(&step, r);
            }
            "orphan-read" => {
                let r = match orphan.as_ref() {
                    Some(s) => s
                        .blocking_read(1 << 16)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .map_err(|e| {
                            std::io::Error::new(ErrorKind::PermissionDenied, format!("{e:?}"))
                        }),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r);
            }
            "link" => {
                let (a, b) = (next(&mut i), next(&mut i));
                report(&step, fs::hard_link(&a, &b).map(|()| b));
            }
            "rename" => {
                let (a, b) = (next(&mut i), next(&mut i));
                report(&step, fs::rename(&a, &b).map(|()| b));
            }
            "append" => {
                let (p, text) = (next(&mut i), next(&mut i));
                let r = OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(text.as_bytes()));
                report(&step, r.map(|()| p));
            }
            "remove" => {
                let p = next(&mut i);
                report(&step, fs::remove_file(&p).map(|()| p));
            }
            "stat" => {
                let p = next(&mut i);
                report(&step, fs::metadata(&p).map(|m| m.len().to_string()));
            }
            "hold" => {
                let p = next(&mut i);
                let f = OpenOptions::new().read(true).write(true).open(&p);
                report(
                    &step,
                    f.map(|f| {
                        held = Some(f);
                        p
                    }),
                );
            }
            "hold-new" => {
                // As std makes a new file: for reading and writing.
                let p = next(&mut i);
                report(
                    &step,
                    File::create_new(&p).map(|f| {
                        held = Some(f);
                        p
                    }),
                );
            }
            "hold-write" => {
                let text = next(&mut i);
                let r = match held.as_mut() {
                    Some(f) => f.write_all(text.as_bytes()).and_then(|()| f.flush()),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r.map(|()| text));
            }
            "hold-read" => {
                let r = match held.as_mut() {
                    Some(f) => f.seek(SeekFrom::Start(0)).and_then(|_| {
                        let mut s = String::new();
                        f.read_to_string(&mut s).map(|_| s)
                    }),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r);
            }
            "env" => {
                let k = next(&mut i);
                report(
                    &step,
                    std::env::var(&k).map_err(|_| ErrorKind::NotFound.into()),
                );
            }
            "connect" => {
                let addr = next(&mut i);
                report(
                    &step,
                    TcpStream::connect(&addr).map(|s| {
                        stream = Some(s);
                        addr
                    }),
                );
            }
            "send" => {
                let text = next(&mut i);
                let r = match stream.as_mut() {
                    Some(s) => s.write_all(text.as_bytes()).and_then(|()| {
                        let mut buf = vec![0; text.len()];
                        s.read_exact(&mut buf)?;
                        Ok(String::from_utf8_lossy(&buf).into_owned())
                    }),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r);
            }
            "lookup" => {
                let name = next(&mut i);
                report(&step, lookup(&name));
            }
            "lookup-hold" => {
                let name = next(&mut i);
                let network = wasi::sockets::instance_network::instance_network();
                match name_lookup::resolve_addresses(&network, &name) {
                    Ok(s) => {
                        println!("ok lookup-hold {name}");
                        resolving.push(s);
                    }
                    Err(e) => println!("err {} lookup-hold {name}", e.name()),
                }
            }
            "lookup-ready" => match resolving.last() {
                None => println!("err not-found lookup-ready"),
                Some(s) => println!("ok lookup-ready {}", s.subscribe().ready()),
            },
            "lookup-next" => match resolving.last().map(|s| s.resolve_next_address()) {
                None => println!("err not-found lookup-next"),
                Some(Ok(Some(a))) => println!("ok lookup-next {}", ip(a)),
                Some(Ok(None)) => println!("ok lookup-next none"),
                Some(Err(e)) => println!("err {} lookup-next", e.name()),
            },
            "udp-bind" => {
                let addr = next(&mut i);
                report(
                    &step,
                    UdpSocket::bind(&addr).and_then(|s| {
                        let local = s.local_addr()?;
                        udp = Some(s);
                        Ok(local.to_string())
                    }),
                );
            }
            "udp-connect" => {
                let addr = next(&mut i);
                let r = match udp.as_ref() {
                    Some(s) => s.connect(&addr).map(|()| addr),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r);
            }
            "udp-echo" => {
                let (addr, text) = (next(&mut i), next(&mut i));
                let r = match udp.take() {
                    Some(s) => Ok(s),
                    None => UdpSocket::bind("0.0.0.0:0"),
                }
                .and_then(|s| {
                    let sent = match addr.as_str() {
                        "connected" => s.send(text.as_bytes()),
                        addr => s.send_to(text.as_bytes(), addr),
                    };
                    let mut buf = [0; 1024];
                    let got = sent.and_then(|_| s.recv_from(&mut buf));
                    udp = Some(s);
                    let (n, from) = got?;
                    Ok(format!(
                        "{} from {from}",
                        String::from_utf8_lossy(&buf[..n])
                    ))
                });
                report(&step, r);
            }
            "udp-recv" => {
                let mut buf = [0; 1024];
                let r = match udp.as_ref() {
                    Some(s) => s.recv_from(&mut buf).map(|(n, from)| {
                        format!("{} from {from}", String::from_utf8_lossy(&buf[..n]))
                    }),
                    None => Err(ErrorKind::NotFound.into()),
                };
                report(&step, r);
            }
            "pledge" => {
                let what = next(&mut i);
                match what.as_str() {
                    "fs" => pledge::filesystem(),
                    "net" => pledge::network(),
                    "env" => pledge::environment(),
                    "spawn" => pledge::spawn(),
                    _ => {}
                }
                println!("ok pledge {what}");
            }
            "unveil" => {
                let (pre, sub, r) = (next(&mut i), next(&mut i), next(&mut i));
                match pledge::unveil_dir(&pre, &sub, rights(&r)) {
                    Ok(()) => println!("ok unveil {pre} {sub}"),
                    Err(e) => println!("err {} unveil: {}", e.code(), e.message()),
                }
            }
            "bomb" => {
                // Allocates and touches memory until the broker says no.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                }
            }
            "exit" => std::process::exit(next(&mut i).parse().unwrap_or(1)),
            "sleep" => {
                let ms = next(&mut i).parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                println!("ok sleep {ms}");
            }
            "race" => {
                let ms = next(&mut i).parse().unwrap_or(0);
                println!("ok race {}", race(ms));
            }
            "panic" => panic!("told to"),
            "stderr" => eprintln!("{}", next(&mut i)),
            "args" => {
                // The rest as the program got them, to show whose they are.
                println!("ok args {:?}", &args[i..]);
                i = args.len();
            }
            other => println!("err unknown-step {other}"),
        }
    }
}

/// The size of every file outside the grant in tests/race.rs.
const SECRET_SIZE: u64 = 777_777;

/// The race harness's loop (tests/race.rs), as a plain program sees it:
/// reads, writes, listings, stats, links, renames and removals through
/// the preopen `/data` on the paths the host keeps swapping, for `ms`
/// milliseconds. Whatever comes back that shows a file from outside the
/// grant (`SECRET` in its contents or name, or its size) is a leak.
/// Gives `ops=N ok=N leaks=…` (at most 8 leaks, each cut short).
fn race(ms: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let names = |p: &str| -> std::io::Result<String> {
        let mut v = fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort();
        Ok(v.join(","))
    };
    let unit = |r: std::io::Result<()>| r.map(|()| String::new());
    let size = |r: std::io::Result<fs::Metadata>| r.map(|m| format!("size:{}", m.len()));
    let (mut ops, mut ok, mut leaks) = (0u64, 0u64, Vec::new());
    while std::time::Instant::now() < deadline {
        for i in 0.. {
            let (op, seen): (&str, std::io::Result<String>) = match i {
                0 => ("read-x", fs::read_to_string("/data/x")),
                1 => ("read-x/secret", fs::read_to_string("/data/x/SECRET-a")),
                2 => ("read-file", fs::read_to_string("/data/file")),
                3 => ("read-sub/../file", fs::read_to_string("/data/sub/../file")),
                4 => ("read-sub/inner", fs::read_to_string("/data/sub/inner.txt")),
                5 => ("list-x", names("/data/x")),
                6 => ("list-sub/..", names("/data/sub/..")),
                7 => ("stat-x", size(fs::metadata("/data/x"))),
                8 => ("stat-sub/../x", size(fs::metadata("/data/sub/../x"))),
                9 => ("write-x", unit(fs::write("/data/x", "w"))),
                10 => ("write-x/planted", unit(fs::write("/data/x/planted", "w"))),
                11 => (
                    "write-sub/../planted",
                    unit(fs::write("/data/sub/../planted", "w")),
                ),
                12 => (
                    "append-file",
                    unit(
                        OpenOptions::new()
                            .append(true)
                            .open("/data/file")
                            .and_then(|mut f| f.write_all(b"w")),
                    ),
                ),
                13 => ("mkdir-x/made", unit(fs::create_dir("/data/x/made"))),
                14 => ("rm-x/secret", unit(fs::remove_file("/data/x/SECRET-a"))),
                15 => (
                    "rename-x/secret",
                    unit(fs::rename("/data/x/SECRET-a", "/data/stolen")),
                ),
                16 => (
                    "rename-file-into-x",
                    unit(fs::rename("/data/file", "/data/x/planted")),
                ),
                17 => ("read-stolen", fs::read_to_string("/data/stolen")),
                18 => ("link-x", unit(fs::hard_link("/data/x", "/data/linked"))),
                19 => (
                    "link-x/secret",
                    unit(fs::hard_link("/data/x/SECRET-a", "/data/linked")),
                ),
                20 => ("read-linked", fs::read_to_string("/data/linked")),
                21 => ("rm-linked", unit(fs::remove_file("/data/linked"))),
                _ => break,
            };
            ops += 1;
            if let Ok(text) = seen {
                ok += 1;
                let leaked = text.contains("SECRET") || text == format!("size:{SECRET_SIZE}");
                if leaked && leaks.len() < 8 {
                    leaks.push(format!(
                        "{op}={}",
                        text.chars().take(60).collect::<String>()
                    ));
                }
            }
        }
    }
    format!("ops={ops} ok={ok} leaks={}", leaks.join("|"))
}
