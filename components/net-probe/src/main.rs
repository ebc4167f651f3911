//! `listen-unbound FAMILY`: creates a TCP socket and listens on it without
//! binding it first (wasi:sockets allows that: the host binds the
//! unspecified address to a port the system picks), then prints the
//! local address, or the error.
use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let family = match args.get(1).map(String::as_str) {
        Some("v6") => IpAddressFamily::Ipv6,
        _ => IpAddressFamily::Ipv4,
    };
    match args.first().map(String::as_str) {
        Some("listen-unbound") => {
            let sock = create_tcp_socket(family).expect("socket");
            let result = sock.start_listen().and_then(|()| {
                sock.subscribe().block();
                sock.finish_listen()
            });
            match result {
                Ok(()) => {
                    let port = match sock.local_address().unwrap() {
                        IpSocketAddress::Ipv4(a) => a.port,
                        IpSocketAddress::Ipv6(a) => a.port,
                    };
                    println!("listening on port {port}");
                    std::thread::sleep(std::time::Duration::from_millis(
                        args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                    ));
                }
                Err(e) => println!("err {e:?}"),
            }
        }
        Some("bind-listen") => {
            use wasip2::sockets::network::{Ipv4SocketAddress, Ipv6SocketAddress};
            let port: u16 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let net = wasip2::sockets::instance_network::instance_network();
            let sock = create_tcp_socket(family).expect("socket");
            let local = match family {
                IpAddressFamily::Ipv4 => IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port,
                    address: (0, 0, 0, 0),
                }),
                IpAddressFamily::Ipv6 => IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port,
                    address: (0, 0, 0, 0, 0, 0, 0, 0),
                    flow_info: 0,
                    scope_id: 0,
                }),
            };
            let r = sock.start_bind(&net, local).and_then(|()| {
                sock.subscribe().block();
                sock.finish_bind()
            });
            println!("bind {r:?}");
            let r = sock.start_listen().and_then(|()| {
                sock.subscribe().block();
                sock.finish_listen()
            });
            println!("listen {r:?} local {:?}", sock.local_address());
            std::thread::sleep(std::time::Duration::from_millis(
                args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
            ));
        }
        _ => println!("usage: listen-unbound [v4|v6] [MS]"),
    }
}
