//! The test guest. `run` keeps the grants it receives under their names;
//! `step` then runs one command at a time on them, so that a test can change
//! the host file system between two calls. Given arguments, `run` runs each
//! as a command and prints its result, for tests through the binary.
//!
//! It is a `service`: it can spawn itself, and as a child (`start`) it runs
//! the `;`-separated commands of its input and returns their results, one
//! per line; given `serve`, it runs each message from its parent as a
//! command and sends back the result.
//!
//! Results are `ok`, `ok:VALUE` or `err:CODE:DETAIL`.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package capbroker:probe;
        world probe {
            include capbroker:caps/service@0.1.0;
            /// Runs one command on the handles held; see the crate docs.
            export step: func(command: string) -> string;
        }
    ",
    world: "capbroker:probe/probe",
    // The probe's world includes `app`: reuse the SDK's types for it.
    with: {
        "capbroker:caps/types@0.1.0": capbroker_sdk::bindings::capbroker::caps::types,
        "capbroker:caps/fs@0.1.0": capbroker_sdk::bindings::capbroker::caps::fs,
        "capbroker:caps/net@0.1.0": capbroker_sdk::bindings::capbroker::caps::net,
        "capbroker:caps/grants@0.1.0": capbroker_sdk::bindings::capbroker::caps::grants,
        "capbroker:caps/spawn@0.1.0": capbroker_sdk::bindings::capbroker::caps::spawn,
        "capbroker:caps/process@0.1.0": capbroker_sdk::bindings::capbroker::caps::process,
        "capbroker:caps/mailbox@0.1.0": capbroker_sdk::bindings::capbroker::caps::mailbox,
        "capbroker:caps/pledge@0.1.0": capbroker_sdk::bindings::capbroker::caps::pledge,
        "capbroker:caps/wasi-fs@0.1.0": capbroker_sdk::bindings::capbroker::caps::wasi_fs,
        "wasi:filesystem/types@0.2.12": capbroker_sdk::bindings::wasi::filesystem::types,
        "wasi:io/error@0.2.12": capbroker_sdk::bindings::wasi::io::error,
        "wasi:io/poll@0.2.12": capbroker_sdk::bindings::wasi::io::poll,
        "wasi:io/streams@0.2.12": capbroker_sdk::bindings::wasi::io::streams,
        "wasi:clocks/wall-clock@0.2.12": capbroker_sdk::bindings::wasi::clocks::wall_clock,
    },
});

use capbroker_sdk::bindings::wasi::io::streams::{InputStream, OutputStream};
use capbroker_sdk::wasi_fs::{
    to_descriptor, Descriptor, DescriptorFlags, ErrorCode, OpenFlags as WasiOpen, PathFlags,
};
// The probe tests the WIT interface itself, so it uses the generated
// handles and error, not the SDK's std-shaped layer.
use capbroker_sdk::raw::{Dir, Error, File};
use capbroker_sdk::{
    granted, mailbox, rights_list, spawn, EntryKind, ExitStatus, Grant, Handle, Limits, OpenFlags,
    Process, Revoker, Rights, Share, Shared, Spawner, Wants, RIGHT_NAMES,
};
use capbroker_sdk::{
    AddressRange, ConnectRight, ListenRight, TcpListener, TcpStream, UdpRight, UdpSocket,
};

#[derive(Default)]
struct Held {
    dirs: HashMap<String, Dir>,
    files: HashMap<String, File>,
    spawners: HashMap<String, Spawner>,
    procs: HashMap<String, Process>,
    revokers: HashMap<String, Revoker>,
    listens: HashMap<String, ListenRight>,
    connects: HashMap<String, ConnectRight>,
    listeners: HashMap<String, TcpListener>,
    streams: HashMap<String, TcpStream>,
    udps: HashMap<String, UdpRight>,
    udp_sockets: HashMap<String, UdpSocket>,
    descriptors: HashMap<String, Descriptor>,
    inputs: HashMap<String, InputStream>,
    outputs: HashMap<String, OutputStream>,
}

impl Held {
    fn keep(&mut self, grants: Vec<Grant>) {
        for g in grants {
            match g.handle {
                Handle::Dir(d) => {
                    self.dirs.insert(g.name, d);
                }
                Handle::Spawner(s) => {
                    self.spawners.insert(g.name, s);
                }
                Handle::Listen(l) => {
                    self.listens.insert(g.name, l);
                }
                Handle::Connect(c) => {
                    self.connects.insert(g.name, c);
                }
                Handle::TcpStream(t) => {
                    self.streams.insert(g.name, t);
                }
                Handle::Udp(u) => {
                    self.udps.insert(g.name, u);
                }
            }
        }
    }
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held::default());
}

struct Probe;

impl Guest for Probe {
    fn requests() -> Vec<Request> {
        let read_only = Rights::READ | Rights::LIST;
        [
            ("data", Rights::all()),
            ("b", Rights::all()),
            ("a", read_only),
            ("ro", read_only),
            ("box", Rights::CREATE),
        ]
        .into_iter()
        .map(|(name, rights)| Request {
            name: name.into(),
            wants: Wants::Dir(rights),
            optional: true,
            about: "test".into(),
        })
        .chain(
            [
                ("sp", Wants::Spawner),
                ("sp2", Wants::Spawner),
                ("web", Wants::Listen),
                ("api", Wants::Connect),
                ("peers", Wants::Udp),
            ]
            .map(|(name, wants)| Request {
                name: name.into(),
                wants,
                optional: true,
                about: "test".into(),
            }),
        )
        .collect()
    }

    fn run(args: Vec<String>) -> Result<(), String> {
        HELD.with(|h| h.borrow_mut().keep(granted()));
        for a in args {
            println!("{a} => {}", Probe::step(a.clone()));
        }
        Ok(())
    }

    fn start(input: Vec<u8>) -> Result<Vec<u8>, String> {
        HELD.with(|h| h.borrow_mut().keep(granted()));
        let input = String::from_utf8(input).map_err(|_| "input is not UTF-8")?;
        // `serve`: run each message from the parent as a command and send
        // back its result, until the parent is gone (the fuzzer's child
        // that keeps its copy while its parent revokes or pledges).
        if input.trim() == "serve" {
            while let Some(m) = mailbox::receive() {
                let result = Probe::step(String::from_utf8_lossy(&m).into_owned());
                if mailbox::send(result.as_bytes()).is_err() {
                    break;
                }
            }
            return Ok(b"served".to_vec());
        }
        let mut out = Vec::new();
        for command in input.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            if let Some(msg) = command.strip_prefix("fail ") {
                return Err(msg.to_string());
            }
            out.push(Probe::step(command.to_string()));
        }
        Ok(out.join("\n").into_bytes())
    }

    fn step(command: String) -> String {
        HELD.with(|h| match exec(&mut h.borrow_mut(), &command) {
            Ok(v) if v.is_empty() => "ok".to_string(),
            Ok(v) => format!("ok:{v}"),
            Err(e) => format!("err:{}", describe(&e)),
        })
    }
}

fn describe(e: &Error) -> String {
    match e.detail() {
        d if d.is_empty() => e.code().to_string(),
        d => format!("{}:{d}", e.code()),
    }
}

fn parse_rights(s: &str) -> Rights {
    match s {
        "all" => Rights::all(),
        "none" => Rights::empty(),
        _ => s.split(',').fold(Rights::empty(), |acc, w| {
            acc | RIGHT_NAMES
                .iter()
                .find(|(_, n)| *n == w)
                .map(|(r, _)| *r)
                .expect("bad right in test")
        }),
    }
}

fn parse_flags(s: &str) -> OpenFlags {
    s.split(',').fold(OpenFlags::empty(), |acc, w| {
        acc | match w {
            "read" => OpenFlags::READ,
            "write" => OpenFlags::WRITE,
            "append" => OpenFlags::APPEND,
            "create" => OpenFlags::CREATE,
            "exclusive" => OpenFlags::EXCLUSIVE,
            "truncate" => OpenFlags::TRUNCATE,
            other => panic!("bad open flag `{other}` in test"),
        }
    })
}

fn kind(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Directory => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    }
}

/// A standard descriptor for the held dir `name`, with `rights`.
fn descriptor(h: &Held, name: &str, rights: &str) -> Result<Descriptor, Error> {
    to_descriptor(held(&h.dirs, "dir", name)?, parse_rights(rights))
}

fn wasi_read(d: &Descriptor, path: &str) -> Result<String, ErrorCode> {
    let f = d.open_at(
        PathFlags::empty(),
        path,
        WasiOpen::empty(),
        DescriptorFlags::READ,
    )?;
    let (bytes, _) = f.read(1 << 20, 0)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn wasi_write(d: &Descriptor, path: &str, content: &[u8]) -> Result<String, ErrorCode> {
    let f = d.open_at(
        PathFlags::empty(),
        path,
        WasiOpen::CREATE | WasiOpen::TRUNCATE,
        DescriptorFlags::WRITE,
    )?;
    f.write(content, 0)?;
    Ok(String::new())
}

fn wasi_held<'a>(h: &'a Held, d: &str) -> Result<&'a Descriptor, Error> {
    h.descriptors
        .get(d)
        .ok_or_else(|| Error::Invalid(format!("no descriptor `{d}`")))
}

/// `open-at` flags from a comma-separated list: read, write, create,
/// exclusive, truncate, directory.
fn wasi_flags(s: &str) -> (WasiOpen, DescriptorFlags) {
    s.split(',').fold(
        (WasiOpen::empty(), DescriptorFlags::empty()),
        |(o, d), w| match w {
            "read" => (o, d | DescriptorFlags::READ),
            "write" => (o, d | DescriptorFlags::WRITE),
            "create" => (o | WasiOpen::CREATE, d),
            "exclusive" => (o | WasiOpen::EXCLUSIVE, d),
            "truncate" => (o | WasiOpen::TRUNCATE, d),
            "directory" => (o | WasiOpen::DIRECTORY, d),
            "none" => (o, d),
            other => panic!("bad wasi flag `{other}` in test"),
        },
    )
}

/// A WASI error code, as the probe reports errors (`err:wasi:CODE`).
fn wasi_error(e: ErrorCode) -> Error {
    Error::Io(format!("wasi {}", e.name()))
}

/// A small, fixed pattern so that streamed data can be checked.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Outcome counts as `KEY#COUNT` joined by `,`, sorted.
fn tally(counts: HashMap<String, u32>) -> String {
    let mut v: Vec<String> = counts
        .into_iter()
        .map(|(k, c)| format!("{k}#{c}"))
        .collect();
    v.sort();
    v.join(",")
}

fn exec(h: &mut Held, command: &str) -> Result<String, Error> {
    if let Some(rest) = command.strip_prefix("spawn ") {
        return spawn_cmd(h, rest);
    }
    // `psend P MESSAGE`: the message is the rest of the line (a command for
    // a child in `serve` mode, say).
    if let Some((p, msg)) = command
        .strip_prefix("psend ")
        .and_then(|r| r.split_once(' '))
    {
        return held(&h.procs, "process", p)?
            .send(msg.as_bytes())
            .map(|_| String::new());
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["rights", _] => Ok(rights_list(held(&h.dirs, "dir", words[1])?.rights())),
        ["read", _, path] => {
            let bytes = held(&h.dirs, "dir", words[1])?.read_file(path)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        ["write", _, path, content] => held(&h.dirs, "dir", words[1])?
            .write_file(path, content.as_bytes())
            .map(|_| String::new()),
        ["list", _, path] => {
            let entries = held(&h.dirs, "dir", words[1])?.list(path)?;
            Ok(entries
                .iter()
                .map(|e| format!("{}={}", e.name, kind(e.kind)))
                .collect::<Vec<_>>()
                .join(","))
        }
        ["stat", _, path] => {
            let s = held(&h.dirs, "dir", words[1])?.stat(path)?;
            Ok(format!("{}:{}", kind(s.kind), s.size))
        }
        ["mkdir", _, path] => held(&h.dirs, "dir", words[1])?
            .create_dir(path)
            .map(|_| String::new()),
        ["rm", _, path] => held(&h.dirs, "dir", words[1])?
            .remove_file(path)
            .map(|_| String::new()),
        ["rmdir", _, path] => held(&h.dirs, "dir", words[1])?
            .remove_dir(path)
            .map(|_| String::new()),
        ["rename", _, from, to] => held(&h.dirs, "dir", words[1])?
            .rename(from, to)
            .map(|_| String::new()),
        ["open-dir", _, path, rights, new] => {
            let sub = held(&h.dirs, "dir", words[1])?.open_dir(path, parse_rights(rights))?;
            h.dirs.insert(new.to_string(), sub);
            Ok(String::new())
        }
        ["attenuate", _, rights, new] => {
            let sub = held(&h.dirs, "dir", words[1])?.attenuate(parse_rights(rights))?;
            h.dirs.insert(new.to_string(), sub);
            Ok(String::new())
        }
        // Through a standard WASI descriptor made from a handle.
        ["wasi-read", _, rights, path] => {
            let d = descriptor(h, words[1], rights)?;
            wasi_read(&d, path).map_err(wasi_error)
        }
        ["wasi-write", _, rights, path, content] => {
            let d = descriptor(h, words[1], rights)?;
            wasi_write(&d, path, content.as_bytes()).map_err(wasi_error)
        }
        ["wasi-hold", _, rights, new] => {
            let d = descriptor(h, words[1], rights)?;
            h.descriptors.insert(new.to_string(), d);
            Ok(String::new())
        }
        ["wasi-read-held", d, path] => {
            let d = h
                .descriptors
                .get(*d)
                .ok_or_else(|| Error::Invalid(format!("no descriptor `{d}`")))?;
            wasi_read(d, path).map_err(wasi_error)
        }
        // Raw `wasi:filesystem` on held descriptors (`wasi-hold` makes one).
        ["wasi-open", d, path, flags, new] => {
            let (oflags, dflags) = wasi_flags(flags);
            let f = wasi_held(h, d)?
                .open_at(PathFlags::empty(), path, oflags, dflags)
                .map_err(wasi_error)?;
            h.descriptors.insert(new.to_string(), f);
            Ok(String::new())
        }
        ["wasi-drop", d] => {
            h.descriptors
                .remove(*d)
                .ok_or_else(|| Error::Invalid(format!("no descriptor `{d}`")))?;
            Ok(String::new())
        }
        ["wasi-stat", d, path] => {
            let d = wasi_held(h, d)?;
            let s = if *path == "." {
                d.stat()
            } else {
                d.stat_at(PathFlags::empty(), path)
            };
            s.map(|s| s.size.to_string()).map_err(wasi_error)
        }
        ["wasi-list", d] => {
            let entries = wasi_held(h, d)?.read_directory().map_err(wasi_error)?;
            let mut names = Vec::new();
            while let Some(e) = entries.read_directory_entry().map_err(wasi_error)? {
                names.push(e.name);
            }
            names.sort();
            Ok(names.join(","))
        }
        ["wasi-mkdir", d, path] => wasi_held(h, d)?
            .create_directory_at(path)
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-unlink", d, path] => wasi_held(h, d)?
            .unlink_file_at(path)
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-rmdir", d, path] => wasi_held(h, d)?
            .remove_directory_at(path)
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-symlink", d, target, path] => wasi_held(h, d)?
            .symlink_at(target, path)
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-readlink", d, path] => wasi_held(h, d)?.readlink_at(path).map_err(wasi_error),
        ["wasi-settimes", d, path] => {
            use capbroker_sdk::bindings::wasi::filesystem::types::NewTimestamp;
            wasi_held(h, d)?
                .set_times_at(
                    PathFlags::empty(),
                    path,
                    NewTimestamp::Now,
                    NewTimestamp::Now,
                )
                .map(|_| String::new())
                .map_err(wasi_error)
        }
        ["wasi-setsize", d, size] => wasi_held(h, d)?
            .set_size(size.parse().unwrap())
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-fread", d] => {
            let (bytes, _) = wasi_held(h, d)?.read(1 << 20, 0).map_err(wasi_error)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        ["wasi-fwrite", d, data] => wasi_held(h, d)?
            .write(data.as_bytes(), 0)
            .map(|_| String::new())
            .map_err(wasi_error),
        ["wasi-link", d1, p1, d2, p2] => {
            let (a, b) = (wasi_held(h, d1)?, wasi_held(h, d2)?);
            a.link_at(PathFlags::empty(), p1, b, p2)
                .map(|_| String::new())
                .map_err(wasi_error)
        }
        ["wasi-rename", d1, p1, d2, p2] => {
            let (a, b) = (wasi_held(h, d1)?, wasi_held(h, d2)?);
            a.rename_at(p1, b, p2)
                .map(|_| String::new())
                .map_err(wasi_error)
        }
        ["wasi-instream", d, new] => {
            let s = wasi_held(h, d)?.read_via_stream(0).map_err(wasi_error)?;
            h.inputs.insert(new.to_string(), s);
            Ok(String::new())
        }
        ["wasi-outstream", d, new] => {
            let s = wasi_held(h, d)?.append_via_stream().map_err(wasi_error)?;
            h.outputs.insert(new.to_string(), s);
            Ok(String::new())
        }
        ["wasi-sread", s] => {
            let s = h
                .inputs
                .get(*s)
                .ok_or_else(|| Error::Invalid(format!("no stream `{s}`")))?;
            s.blocking_read(1 << 16)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| Error::Io(format!("stream {e:?}")))
        }
        ["wasi-swrite", s, data] => {
            let s = h
                .outputs
                .get(*s)
                .ok_or_else(|| Error::Invalid(format!("no stream `{s}`")))?;
            s.blocking_write_and_flush(data.as_bytes())
                .map(|_| String::new())
                .map_err(|e| Error::Io(format!("stream {e:?}")))
        }
        // Makes and drops `n` descriptors from the held dir `name`.
        ["wasi-churn", _, n] => {
            for _ in 0..n.parse::<u32>().unwrap() {
                drop(descriptor(h, words[1], "read")?);
            }
            Ok(String::new())
        }
        // Derives and drops a handle `n` times.
        ["churn", _, n] => {
            let d = held(&h.dirs, "dir", words[1])?;
            for _ in 0..n.parse::<u32>().unwrap() {
                drop(d.attenuate(Rights::READ)?);
            }
            Ok(String::new())
        }
        // Opens PATH through descriptor D until refused; keeps them all,
        // then drops them. Gives how many opened and the error.
        ["wasi-fill", d, path] => {
            let d = wasi_held(h, d)?;
            let mut kept = Vec::new();
            let err = loop {
                match d.open_at(
                    PathFlags::empty(),
                    path,
                    WasiOpen::empty(),
                    DescriptorFlags::READ,
                ) {
                    Ok(f) => kept.push(f),
                    Err(e) => break e,
                }
                if kept.len() > 100_000 {
                    return Ok("no limit".into());
                }
            };
            Err(Error::Io(format!(
                "wasi {} after {}",
                err.name(),
                kept.len()
            )))
        }
        // A result of `n` bytes (as a child's output).
        ["bigout", n] => Ok("x".repeat(n.parse().unwrap())),
        // Lists descriptor D `n` times, keeping every listing.
        ["wasi-listings", d, n] => {
            let d = wasi_held(h, d)?;
            let mut kept = Vec::new();
            for _ in 0..n.parse::<u32>().unwrap() {
                match d.read_directory() {
                    Ok(l) => kept.push(l),
                    Err(e) => {
                        return Err(Error::Io(format!("wasi {} after {}", e.name(), kept.len())))
                    }
                }
            }
            Ok(kept.len().to_string())
        }
        ["pledge-fs"] => {
            capbroker_sdk::pledge::filesystem();
            Ok(String::new())
        }
        ["pledge-spawn"] => {
            capbroker_sdk::pledge::spawn();
            Ok(String::new())
        }
        ["pledge-network"] => {
            capbroker_sdk::pledge::network();
            Ok(String::new())
        }
        ["drop", name] => {
            h.dirs
                .remove(*name)
                .ok_or_else(|| Error::Invalid(format!("no dir `{name}`")))?;
            Ok(String::new())
        }
        ["open", _, path, flags, new] => {
            let f = held(&h.dirs, "dir", words[1])?.open_file(path, parse_flags(flags))?;
            h.files.insert(new.to_string(), f);
            Ok(String::new())
        }
        ["fread", f, len] => {
            let f = h
                .files
                .get(*f)
                .ok_or_else(|| Error::Invalid(format!("no file `{f}`")))?;
            Ok(String::from_utf8_lossy(&f.read(len.parse().unwrap())?).into_owned())
        }
        ["fwrite", f, data] => {
            let f = h
                .files
                .get(*f)
                .ok_or_else(|| Error::Invalid(format!("no file `{f}`")))?;
            f.write(data.as_bytes()).map(|_| String::new())
        }
        ["fseek", f, off] => {
            let f = h
                .files
                .get(*f)
                .ok_or_else(|| Error::Invalid(format!("no file `{f}`")))?;
            f.seek(off.parse().unwrap()).map(|_| String::new())
        }
        ["fstat", f] => {
            let f = h
                .files
                .get(*f)
                .ok_or_else(|| Error::Invalid(format!("no file `{f}`")))?;
            let s = f.stat()?;
            Ok(format!("{}:{}", kind(s.kind), s.size))
        }
        ["fdrop", f] => {
            h.files
                .remove(*f)
                .ok_or_else(|| Error::Invalid(format!("no file `{f}`")))?;
            Ok(String::new())
        }
        // Streams a file through in chunks; checks the pattern `stream-write`
        // writes and returns the byte count and the peak linear memory.
        ["stream-read", _, path, chunk] => {
            let f = held(&h.dirs, "dir", words[1])?.open_file(path, OpenFlags::READ)?;
            let chunk: u32 = chunk.parse().unwrap();
            let mut total = 0u64;
            let mut pattern_ok = true;
            loop {
                let buf = f.read(chunk)?;
                if buf.is_empty() {
                    break;
                }
                for (i, b) in buf.iter().enumerate() {
                    if *b != pattern(total + i as u64) {
                        pattern_ok = false;
                    }
                }
                total += buf.len() as u64;
            }
            Ok(format!(
                "{total}:{}:{}",
                if pattern_ok { "pattern" } else { "other" },
                memory_bytes()
            ))
        }
        ["stream-write", _, path, size, chunk] => {
            let f = held(&h.dirs, "dir", words[1])?.open_file(
                path,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            )?;
            let size: u64 = size.parse().unwrap();
            let chunk: u64 = chunk.parse().unwrap();
            let mut buf = vec![0u8; chunk as usize];
            let mut written = 0u64;
            while written < size {
                let n = chunk.min(size - written);
                for i in 0..n {
                    buf[i as usize] = pattern(written + i);
                }
                f.write(&buf[..n as usize])?;
                written += n;
            }
            Ok(format!("{written}:{}", memory_bytes()))
        }
        // Derives handles until the host refuses; drops them all again.
        ["exhaust", _] => {
            let base = held(&h.dirs, "dir", words[1])?;
            let mut held = Vec::new();
            let err = loop {
                match base.attenuate(Rights::READ) {
                    Ok(x) => held.push(x),
                    Err(e) => break e,
                }
                if held.len() > 1_000_000 {
                    return Ok("no limit".into());
                }
            };
            let n = held.len();
            drop(held);
            Err(match err {
                Error::LimitExceeded(m) => Error::LimitExceeded(format!("{n}:{m}")),
                other => other,
            })
        }
        // Reads `path` `n` times and counts each distinct outcome, for races.
        ["read-loop", _, path, n] => {
            let mut counts: HashMap<String, u32> = HashMap::new();
            for _ in 0..n.parse::<u32>().unwrap() {
                let key = match held(&h.dirs, "dir", words[1])?.read_file(path) {
                    Ok(b) => format!("ok={}", String::from_utf8_lossy(&b)),
                    Err(e) => describe(&e).split(':').next().unwrap().to_string(),
                };
                *counts.entry(key).or_default() += 1;
            }
            Ok(tally(counts))
        }
        // Attack: stats N distinct paths of LEN bytes (each refused or
        // failing), to see what the host keeps per path.
        ["stat-many", _, n, len] => {
            let d = held(&h.dirs, "dir", words[1])?;
            let len: usize = len.parse().unwrap();
            let mut ok = 0u64;
            for i in 0..n.parse::<u64>().unwrap() {
                let mut p = format!("{i}-");
                while p.len() < len {
                    p.push('x');
                }
                if d.stat(&p).is_ok() {
                    ok += 1;
                }
            }
            Ok(ok.to_string())
        }
        // Attack: asks for `mib` MiB and handles a refusal (no trap).
        ["try-alloc", mib] => {
            let mut v: Vec<u8> = Vec::new();
            match v.try_reserve_exact(mib.parse::<usize>().unwrap() << 20) {
                Ok(()) => Ok("reserved".into()),
                Err(_) => Ok("refused".into()),
            }
        }
        ["memory"] => Ok(memory_bytes().to_string()),
        ["listen", r, addr, name] => {
            let l = held(&h.listens, "handle", r)?.listen(addr)?;
            let local = l.local_address();
            h.listeners.insert(name.to_string(), l);
            Ok(local)
        }
        ["connect", r, addr, name] => {
            let s = held(&h.connects, "handle", r)?.connect(addr)?;
            let peer = s.peer_address();
            h.streams.insert(name.to_string(), s);
            Ok(peer)
        }
        ["accept", l, name] => {
            let s = held(&h.listeners, "handle", l)?.accept()?;
            h.streams.insert(name.to_string(), s);
            Ok(String::new())
        }
        ["sread", s, len] => {
            let data = held(&h.streams, "handle", s)?.read(len.parse().unwrap())?;
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        ["swrite", s, data] => held(&h.streams, "handle", s)?
            .write(data.as_bytes())
            .map(|_| String::new()),
        // One write of `mib` MiB, to see a revoke stop it midway.
        ["swrite-fill", s, mib] => held(&h.streams, "handle", s)?
            .write(&vec![b'x'; mib.parse::<usize>().unwrap() << 20])
            .map(|_| String::new()),
        ["sshut", s] => held(&h.streams, "handle", s)?
            .shutdown()
            .map(|_| String::new()),
        ["sdrop", s] => {
            h.streams
                .remove(*s)
                .ok_or_else(|| Error::Invalid(format!("no stream `{s}`")))?;
            Ok(String::new())
        }
        // `udp-bind R LOCAL NAME`: a socket of UDP right R.
        ["udp-bind", r, addr, name] => {
            let s = held(&h.udps, "handle", r)?.bind(addr)?;
            let local = s.local_address();
            h.udp_sockets.insert(name.to_string(), s);
            Ok(local)
        }
        ["udp-send", s, to, data] => held(&h.udp_sockets, "handle", s)?
            .send(to, data.as_bytes())
            .map(|_| String::new()),
        // One datagram of `bytes` bytes.
        ["udp-send-fill", s, to, bytes] => held(&h.udp_sockets, "handle", s)?
            .send(to, &vec![b'x'; bytes.parse().unwrap()])
            .map(|_| String::new()),
        ["udp-recv", s] => {
            let (data, from) = held(&h.udp_sockets, "handle", s)?.receive()?;
            Ok(format!("{}@{from}", String::from_utf8_lossy(&data)))
        }
        ["udp-drop", r] => {
            h.udps
                .remove(*r)
                .ok_or_else(|| Error::Invalid(format!("no udp right `{r}`")))?;
            Ok(String::new())
        }
        ["ranges", r] => {
            let ranges = match (h.listens.get(*r), h.udps.get(*r)) {
                (Some(l), _) => l.ranges(),
                (_, Some(u)) => u.ranges(),
                _ => held(&h.connects, "handle", r)?.ranges(),
            };
            Ok(ranges
                .iter()
                .map(|x| format!("{}:{}-{}", x.network, x.first_port, x.last_port))
                .collect::<Vec<_>>()
                .join(","))
        }
        // `net-attenuate R NETWORK:FIRST-LAST,… NEW`
        ["net-attenuate", r, ranges, new] => {
            let ranges: Vec<AddressRange> = ranges
                .split(',')
                .map(|x| {
                    let (net, ports) = x.rsplit_once(':').unwrap();
                    let (a, b) = ports.split_once('-').unwrap();
                    AddressRange {
                        network: net.into(),
                        first_port: a.parse().unwrap(),
                        last_port: b.parse().unwrap(),
                    }
                })
                .collect();
            if let Some(l) = h.listens.get(*r) {
                let n = l.attenuate(&ranges)?;
                h.listens.insert(new.to_string(), n);
            } else if let Some(u) = h.udps.get(*r) {
                let n = u.attenuate(&ranges)?;
                h.udps.insert(new.to_string(), n);
            } else {
                let n = held(&h.connects, "handle", r)?.attenuate(&ranges)?;
                h.connects.insert(new.to_string(), n);
            }
            Ok(String::new())
        }
        // Handles are handed over once: asking again gets nothing back.
        ["granted"] => Ok(format!("{} more", granted().len())),
        ["trap"] => panic!("the probe was asked to trap"),
        ["loop"] => loop {
            std::hint::black_box(0u64);
        },
        ["sleep", ms] => {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
            Ok(String::new())
        }
        // A child: answers every message from its parent, until none come.
        ["echo"] => {
            let mut n = 0;
            while let Some(m) = mailbox::receive() {
                let mut reply = b"echo:".to_vec();
                reply.extend(m);
                mailbox::send(&reply)?;
                n += 1;
            }
            Ok(n.to_string())
        }
        ["send", msg] => mailbox::send(msg.as_bytes()).map(|_| String::new()),
        // Sends `n` messages of `mib` MiB to the parent (`sendbig`) or to a
        // child (`psendbig P`), from one buffer, until one is refused.
        ["sendbig", mib, n] => Ok(send_many(mib, n, |m| mailbox::send(m))),
        ["psendbig", p, mib, n] => {
            let p = held(&h.procs, "process", p)?;
            Ok(send_many(mib, n, |m| p.send(m)))
        }
        // Reads every message a child sent, until it has ended and none is left.
        ["precv-all", p] => {
            let p = held(&h.procs, "process", p)?;
            let (mut count, mut bytes) = (0, 0);
            while let Some(m) = p.receive() {
                count += 1;
                bytes += m.len();
            }
            Ok(format!("count={count},bytes={bytes}"))
        }
        // Spawns `self` sharing the spawner `sp` `n` times under as many
        // names (`dup`: the last name repeats the first), and waits.
        ["spawn-shares", sp, n, rest @ ..] => {
            let s = held(&h.spawners, "spawner", sp)?;
            let n: usize = n.parse().unwrap();
            let shares: Vec<Share> = (0..n)
                .map(|i| Share {
                    name: if rest == ["dup"] && i + 1 == n {
                        "s0".to_string()
                    } else {
                        format!("s{i}")
                    },
                    handle: Shared::Spawner(s),
                })
                .collect();
            let p = spawn(s, "self", None, &shares, s.budget().limits, b"granted")?;
            Ok(status(&p.wait()))
        }
        // Attack (tests/attack3.rs): spawns `self` `count` times, each
        // sharing the spawner `sp` under `n` names of `len` bytes (the most
        // a share's name may have is 256), dropping each process at once.
        // Every spawn writes a `spawn` event naming its shares.
        ["spawn-flood", sp, count, n, len] => {
            let s = held(&h.spawners, "spawner", sp)?;
            let (count, n, len): (usize, usize, usize) = (
                count.parse().unwrap(),
                n.parse().unwrap(),
                len.parse().unwrap(),
            );
            let shares: Vec<Share> = (0..n)
                .map(|i| {
                    let mut name = format!("{i:03}");
                    name.push_str(&"n".repeat(len.saturating_sub(name.len())));
                    Share {
                        name,
                        handle: Shared::Spawner(s),
                    }
                })
                .collect();
            let mut ok = 0;
            for _ in 0..count {
                if spawn(s, "self", None, &shares, s.budget().limits, b"").is_ok() {
                    ok += 1;
                }
            }
            Ok(format!("spawned={ok}"))
        }
        ["recv"] => Ok(mailbox::receive()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .unwrap_or("none".into())),
        // A spawn bomb: spawn yourself four times with your spawner, then wait.
        ["bomb", sp] => {
            let spawner = h
                .spawners
                .get(*sp)
                .ok_or_else(|| Error::Invalid("no spawner".into()))?;
            let limits = spawner.budget().limits;
            let share = [Share {
                name: sp.to_string(),
                handle: Shared::Spawner(spawner),
            }];
            let (mut spawned, mut refused) = (Vec::new(), 0);
            for _ in 0..4 {
                match spawn(
                    spawner,
                    "self",
                    None,
                    &share,
                    limits,
                    format!("bomb {sp}").as_bytes(),
                ) {
                    Ok(p) => spawned.push(p),
                    Err(_) => refused += 1,
                }
            }
            let n = spawned.len();
            for p in spawned {
                p.wait();
            }
            Ok(format!("spawned={n},refused={refused}"))
        }
        ["wait", p] => Ok(status(&held(&h.procs, "process", p)?.wait())),
        ["try-wait", p] => Ok(held(&h.procs, "process", p)?
            .try_wait()
            .map(|s| status(&s))
            .unwrap_or("running".into())),
        ["kill", p] => {
            held(&h.procs, "process", p)?.kill();
            Ok(String::new())
        }
        ["precv", p] => Ok(held(&h.procs, "process", p)?
            .receive()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .unwrap_or("none".into())),
        ["pid", p] => Ok(held(&h.procs, "process", p)?.id().to_string()),
        ["pdrop", p] => {
            h.procs
                .remove(*p)
                .ok_or_else(|| Error::Invalid(format!("no process `{p}`")))?;
            Ok(String::new())
        }
        ["budget", sp] => {
            let b = held(&h.spawners, "spawner", sp)?.budget();
            Ok(format!(
                "{},{},{},{},{}",
                b.limits.max_memory,
                b.limits.max_fuel,
                b.limits.timeout_ms,
                b.max_children,
                b.components.join("+")
            ))
        }
        ["running", sp] => Ok(held(&h.spawners, "spawner", sp)?.running().to_string()),
        ["attenuate-spawner", sp, limits, children, comps, new] => {
            let s = held(&h.spawners, "spawner", sp)?;
            let limits = parse_limits(limits, s);
            let budget = capbroker_sdk::Budget {
                limits,
                max_children: children.parse().unwrap(),
                components: comps.split('+').map(str::to_string).collect(),
            };
            let derived = s.attenuate(&budget)?;
            h.spawners.insert(new.to_string(), derived);
            Ok(String::new())
        }
        ["drop-spawner", sp] => {
            h.spawners
                .remove(*sp)
                .ok_or_else(|| Error::Invalid(format!("no spawner `{sp}`")))?;
            Ok(String::new())
        }
        ["revocable", name, new, rev] => {
            if let Some(l) = h.listens.get(*name) {
                let (copy, r) = l.revocable()?;
                h.listens.insert(new.to_string(), copy);
                h.revokers.insert(rev.to_string(), r);
            } else if let Some(c) = h.connects.get(*name) {
                let (copy, r) = c.revocable()?;
                h.connects.insert(new.to_string(), copy);
                h.revokers.insert(rev.to_string(), r);
            } else if let Some(u) = h.udps.get(*name) {
                let (copy, r) = u.revocable()?;
                h.udps.insert(new.to_string(), copy);
                h.revokers.insert(rev.to_string(), r);
            } else if let Some(d) = h.dirs.get(*name) {
                let (copy, r) = d.revocable()?;
                h.dirs.insert(new.to_string(), copy);
                h.revokers.insert(rev.to_string(), r);
            } else {
                let (copy, r) = held(&h.spawners, "spawner", name)?.revocable()?;
                h.spawners.insert(new.to_string(), copy);
                h.revokers.insert(rev.to_string(), r);
            }
            Ok(String::new())
        }
        ["revoke", rev] => {
            h.revokers
                .get(*rev)
                .ok_or_else(|| Error::Invalid(format!("no revoker `{rev}`")))?
                .revoke();
            Ok(String::new())
        }
        // Allocates and touches `mib` MiB, to run into a memory limit.
        ["alloc", mib] => {
            let v = vec![1u8; mib.parse::<usize>().unwrap() << 20];
            Ok(format!("{}", v.iter().map(|b| *b as usize).sum::<usize>()))
        }
        // What the standard library reaches without handles: it must be nothing.
        ["ambient", addr] => {
            let fs = match std::fs::read_dir("/") {
                Ok(_) => "open".to_string(),
                Err(e) => format!("{:?}", e.kind()),
            };
            let cwd = std::fs::read("hello.txt")
                .map(|_| "open")
                .unwrap_or("refused");
            let env = std::env::vars().count();
            let net = match std::net::TcpStream::connect(addr) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("{:?}", e.kind()),
            };
            Ok(format!("fs={fs},cwd={cwd},env={env},net={net}"))
        }
        // The race harness (tests/race.rs): N rounds on both faces.
        ["race-loop", d, s, w, ws, n] => race_loop(h, [d, s, w, ws], n.parse().unwrap()),
        _ => Err(Error::Invalid(format!("probe does not know `{command}`"))),
    }
}

/// The size of every file outside the grant in tests/race.rs.
const SECRET_SIZE: u64 = 777_777;

/// What one racing operation saw: its text (contents, names or a size),
/// or its error code.
type Seen = Result<String, String>;

fn fs_seen<T>(r: Result<T, Error>, show: impl FnOnce(T) -> String) -> Seen {
    r.map(show).map_err(|e| e.code().to_string())
}

fn wasi_seen(r: Result<String, ErrorCode>) -> Seen {
    r.map_err(|e| format!("wasi-{}", e.name()))
}

fn names_of(entries: &[capbroker_sdk::Entry]) -> String {
    entries
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Opens `path` below `d` as `oflags`/`flags` ask, following a last link
/// if `follow`, and reads it (a file) or lists it (a directory).
fn wasi_take(
    d: &Descriptor,
    follow: bool,
    path: &str,
    oflags: WasiOpen,
    flags: DescriptorFlags,
) -> Result<String, ErrorCode> {
    let pf = if follow {
        PathFlags::SYMLINK_FOLLOW
    } else {
        PathFlags::empty()
    };
    let f = d.open_at(pf, path, oflags, flags)?;
    if oflags.contains(WasiOpen::DIRECTORY) {
        let entries = f.read_directory()?;
        let mut names = Vec::new();
        while let Some(e) = entries.read_directory_entry()? {
            names.push(e.name);
        }
        return Ok(names.join(","));
    }
    if flags.contains(DescriptorFlags::WRITE) {
        f.write(b"w", 0)?;
        return Ok(String::new());
    }
    let (bytes, _) = f.read(4096, 0)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `race-loop D S W WS N`: `N` rounds of reads, writes, opens, listings,
/// stats, renames and removals on the paths tests/race.rs keeps swapping
/// (`x`, `file`, `sub`), through the handle `D` on the grant, the handle
/// `S` on its `sub`, and `wasi:filesystem` descriptors `W` (of `D`) and
/// `WS` (of `sub`). Every file outside the grant holds `SECRET` and is
/// `SECRET_SIZE` bytes, and some are named so: whatever an operation gets
/// back that shows one is a leak. Gives `ops=N;ok=OP#N,…;err=CODE#N,…;
/// leaks=…` (at most 8 leaks, each cut short).
fn race_loop(h: &Held, names: [&str; 4], n: u32) -> Result<String, Error> {
    let (d, s) = (
        held(&h.dirs, "dir", names[0])?,
        held(&h.dirs, "dir", names[1])?,
    );
    let (w, ws) = (wasi_held(h, names[2])?, wasi_held(h, names[3])?);
    let (none, dir) = (WasiOpen::empty(), WasiOpen::DIRECTORY);
    let (read, write) = (DescriptorFlags::READ, DescriptorFlags::WRITE);
    let make = WasiOpen::CREATE | WasiOpen::TRUNCATE;
    let unit = |_: ()| String::new();
    let bytes = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let size = |st: capbroker_sdk::Stat| format!("size:{}", st.size);
    let mut ok: HashMap<String, u32> = HashMap::new();
    let mut err: HashMap<String, u32> = HashMap::new();
    let mut leaks = Vec::new();
    let mut ops = 0u32;
    for _ in 0..n {
        for i in 0.. {
            let (op, seen): (&str, Seen) = match i {
                // capbroker's `fs` face.
                0 => ("read-x", fs_seen(d.read_file("x"), bytes)),
                1 => ("read-x/secret", fs_seen(d.read_file("x/SECRET-a"), bytes)),
                2 => ("read-file", fs_seen(d.read_file("file"), bytes)),
                3 => (
                    "read-sub/inner",
                    fs_seen(d.read_file("sub/inner.txt"), bytes),
                ),
                4 => (
                    "read-sub/../file",
                    fs_seen(d.read_file("sub/../file"), bytes),
                ),
                5 => ("read-S../file", fs_seen(s.read_file("../file"), bytes)),
                6 => (
                    "read-S/deeper/../../file",
                    fs_seen(s.read_file("deeper/../../file"), bytes),
                ),
                7 => ("list-x", fs_seen(d.list("x"), |e| names_of(&e))),
                8 => ("list-sub/..", fs_seen(d.list("sub/.."), |e| names_of(&e))),
                9 => ("list-S..", fs_seen(s.list(".."), |e| names_of(&e))),
                10 => ("stat-x", fs_seen(d.stat("x"), size)),
                11 => ("stat-file", fs_seen(d.stat("file"), size)),
                12 => ("stat-sub/../x", fs_seen(d.stat("sub/../x"), size)),
                13 => (
                    "open-x",
                    fs_seen(
                        d.open_file("x", OpenFlags::READ).and_then(|f| f.read(4096)),
                        bytes,
                    ),
                ),
                14 => (
                    "open-file-append",
                    fs_seen(
                        d.open_file("file", OpenFlags::READ | OpenFlags::APPEND)
                            .and_then(|f| f.write(b"w").and_then(|_| f.read(4096))),
                        bytes,
                    ),
                ),
                15 => ("write-x", fs_seen(d.write_file("x", b"w"), unit)),
                16 => (
                    "write-x/planted",
                    fs_seen(d.write_file("x/planted", b"w"), unit),
                ),
                17 => (
                    "write-sub/../planted",
                    fs_seen(d.write_file("sub/../planted", b"w"), unit),
                ),
                18 => (
                    "write-S../planted",
                    fs_seen(s.write_file("../planted", b"w"), unit),
                ),
                19 => ("mkdir-x/made", fs_seen(d.create_dir("x/made"), unit)),
                20 => ("rm-x/secret", fs_seen(d.remove_file("x/SECRET-a"), unit)),
                21 => (
                    "rename-x/secret",
                    fs_seen(d.rename("x/SECRET-a", "stolen"), unit),
                ),
                22 => (
                    "rename-file-into-x",
                    fs_seen(d.rename("file", "x/planted"), unit),
                ),
                23 => (
                    "rename-S../file",
                    fs_seen(s.rename("../file", "stolen"), unit),
                ),
                24 => ("read-stolen", fs_seen(d.read_file("stolen"), bytes)),
                // `wasi:filesystem`, through descriptors made from handles.
                25 => (
                    "wasi-read-x",
                    wasi_seen(wasi_take(w, true, "x", none, read)),
                ),
                26 => (
                    "wasi-read-x/secret",
                    wasi_seen(wasi_take(w, false, "x/SECRET-a", none, read)),
                ),
                27 => (
                    "wasi-read-file",
                    wasi_seen(wasi_take(w, true, "file", none, read)),
                ),
                28 => (
                    "wasi-read-sub/../file",
                    wasi_seen(wasi_take(w, true, "sub/../file", none, read)),
                ),
                29 => (
                    "wasi-read-WS../file",
                    wasi_seen(wasi_take(ws, true, "../file", none, read)),
                ),
                30 => ("wasi-list-x", wasi_seen(wasi_take(w, true, "x", dir, read))),
                31 => (
                    "wasi-list-sub/..",
                    wasi_seen(wasi_take(w, true, "sub/..", dir, read)),
                ),
                32 => (
                    "wasi-list-WS..",
                    wasi_seen(wasi_take(ws, true, "..", dir, read)),
                ),
                33 => (
                    "wasi-stat-x",
                    wasi_seen(
                        w.stat_at(PathFlags::SYMLINK_FOLLOW, "x")
                            .map(|st| format!("size:{}", st.size)),
                    ),
                ),
                34 => (
                    "wasi-write-x",
                    wasi_seen(wasi_take(w, true, "x", make, write)),
                ),
                35 => (
                    "wasi-write-x/planted",
                    wasi_seen(wasi_take(w, false, "x/planted", make, write)),
                ),
                36 => (
                    "wasi-write-WS../planted",
                    wasi_seen(wasi_take(ws, false, "../planted", make, write)),
                ),
                37 => (
                    "wasi-mkdir-x/made",
                    wasi_seen(w.create_directory_at("x/made").map(unit)),
                ),
                38 => (
                    "wasi-unlink-x/secret",
                    wasi_seen(w.unlink_file_at("x/SECRET-a").map(unit)),
                ),
                39 => (
                    "wasi-rename-x/secret",
                    wasi_seen(w.rename_at("x/SECRET-a", w, "stolen").map(unit)),
                ),
                40 => (
                    "wasi-rename-file-into-x",
                    wasi_seen(w.rename_at("file", w, "x/planted").map(unit)),
                ),
                41 => (
                    "wasi-link-x",
                    wasi_seen(w.link_at(PathFlags::empty(), "x", w, "linked").map(unit)),
                ),
                42 => (
                    "wasi-link-x/secret",
                    wasi_seen(
                        w.link_at(PathFlags::empty(), "x/SECRET-a", w, "linked")
                            .map(unit),
                    ),
                ),
                43 => ("read-linked", fs_seen(d.read_file("linked"), bytes)),
                44 => (
                    "wasi-unlink-linked",
                    wasi_seen(w.unlink_file_at("linked").map(unit)),
                ),
                _ => break,
            };
            ops += 1;
            match seen {
                Ok(text) => {
                    let leaked = text.contains("SECRET") || text == format!("size:{SECRET_SIZE}");
                    if leaked && leaks.len() < 8 {
                        leaks.push(format!(
                            "{op}={}",
                            text.chars().take(60).collect::<String>()
                        ));
                    }
                    *ok.entry(op.to_string()).or_default() += 1;
                }
                Err(code) => *err.entry(code).or_default() += 1,
            }
        }
    }
    Ok(format!(
        "ops={ops};ok={};err={};leaks={}",
        tally(ok),
        tally(err),
        leaks.join("|")
    ))
}

/// `spawn SPAWNER COMPONENT[@ENTRY] LIMITS GRANTS NAME [INPUT…]`: LIMITS is
/// `MEMORY,FUEL,MS` or `budget` (the spawner's own), GRANTS is `-` or
/// handle names joined by `,`; the rest of the line is the child's input.
/// `NAME*N` spawns N children and waits for them all, counting statuses;
/// `NAME*N!` kills each before waiting.
fn spawn_cmd(h: &mut Held, rest: &str) -> Result<String, Error> {
    let parts: Vec<&str> = rest.splitn(6, ' ').collect();
    let [sp, comp, limits, grants, name] = parts[..5] else {
        return Err(Error::Invalid(format!("bad spawn command `{rest}`")));
    };
    let input = parts.get(5).copied().unwrap_or("");
    let s = held(&h.spawners, "spawner", sp)?;
    let limits = parse_limits(limits, s);
    let (comp, entry) = match comp.split_once('@') {
        Some((c, e)) => (c, Some(e)),
        None => (comp, None),
    };
    let names: Vec<&str> = if grants == "-" {
        vec![]
    } else {
        grants.split(',').collect()
    };
    let mut shares = Vec::new();
    for n in &names {
        let handle = if let Some(d) = h.dirs.get(*n) {
            Shared::Dir(d)
        } else if let Some(s) = h.spawners.get(*n) {
            Shared::Spawner(s)
        } else if let Some(t) = h.streams.get(*n) {
            Shared::TcpStream(t)
        } else if let Some(l) = h.listens.get(*n) {
            Shared::Listen(l)
        } else if let Some(c) = h.connects.get(*n) {
            Shared::Connect(c)
        } else if let Some(u) = h.udps.get(*n) {
            Shared::Udp(u)
        } else {
            return Err(Error::Invalid(format!("probe holds no handle `{n}`")));
        };
        shares.push(Share {
            name: n.to_string(),
            handle,
        });
    }
    if let Some((_, count)) = name.split_once('*') {
        let (count, kill) = match count.strip_suffix('!') {
            Some(count) => (count, true),
            None => (count, false),
        };
        let count: usize = count.parse().unwrap();
        let mut procs = Vec::new();
        for _ in 0..count {
            procs.push(spawn(s, comp, entry, &shares, limits, input.as_bytes())?);
        }
        if kill {
            procs.iter().for_each(Process::kill);
        }
        let mut counts: HashMap<String, u32> = HashMap::new();
        for p in procs {
            let st = status(&p.wait());
            *counts
                .entry(st.split(':').next().unwrap().to_string())
                .or_default() += 1;
        }
        return Ok(tally(counts));
    }
    let p = spawn(s, comp, entry, &shares, limits, input.as_bytes())?;
    h.procs.insert(name.to_string(), p);
    Ok(String::new())
}

fn send_many(mib: &str, n: &str, send: impl Fn(&[u8]) -> Result<(), Error>) -> String {
    let message = vec![7u8; mib.parse::<usize>().unwrap() << 20];
    let n: usize = n.parse().unwrap();
    for i in 0..n {
        if let Err(e) = send(&message) {
            return format!("sent={i},err={}", e.code());
        }
    }
    format!("sent={n}")
}

fn parse_limits(s: &str, sp: &Spawner) -> Limits {
    if s == "budget" {
        return sp.budget().limits;
    }
    let v: Vec<u64> = s.split(',').map(|x| x.parse().expect("limit")).collect();
    Limits {
        max_memory: v[0],
        max_fuel: v[1],
        timeout_ms: v[2],
    }
}

fn status(s: &ExitStatus) -> String {
    match s {
        ExitStatus::Finished(out) => format!("finished:{}", String::from_utf8_lossy(out)),
        ExitStatus::Failed(m) => format!("failed:{m}"),
        ExitStatus::Trapped(m) => format!("trapped:{}", m.lines().next().unwrap_or("")),
        ExitStatus::OutOfMemory => "out-of-memory".into(),
        ExitStatus::OutOfCpu => "out-of-cpu".into(),
        ExitStatus::TimedOut => "timed-out".into(),
        ExitStatus::Killed => "killed".into(),
    }
}

/// The handle of `kind` the probe holds as `name`.
fn held<'a, T>(map: &'a HashMap<String, T>, kind: &str, name: &str) -> Result<&'a T, Error> {
    map.get(name)
        .ok_or_else(|| Error::Invalid(format!("probe holds no {kind} `{name}`")))
}

fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

export!(Probe);
