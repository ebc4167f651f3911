//! The test guest. `run` keeps the grants it receives under their names;
//! `step` then runs one command at a time on them, so that a test can change
//! the host file system between two calls. Given arguments, `run` runs each
//! as a command and prints its result, for tests through the binary.
//!
//! Results are `ok`, `ok:VALUE` or `err:CODE:DETAIL`.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package capbroker:probe;
        world probe {
            include capbroker:caps/app@0.1.0;
            /// Runs one command on the handles held; see the crate docs.
            export step: func(command: string) -> string;
        }
    ",
    world: "capbroker:probe/probe",
    // The probe's world includes `app`: reuse the SDK's types for it.
    with: {
        "capbroker:caps/types@0.1.0": capbroker_sdk::bindings::capbroker::caps::types,
        "capbroker:caps/fs@0.1.0": capbroker_sdk::bindings::capbroker::caps::fs,
        "capbroker:caps/grants@0.1.0": capbroker_sdk::bindings::capbroker::caps::grants,
    },
});

use capbroker_sdk::{
    rights_list, Dir, EntryKind, Error, File, Handle, OpenFlags, Rights, Wants, RIGHT_NAMES,
};

#[derive(Default)]
struct Held {
    dirs: HashMap<String, Dir>,
    files: HashMap<String, File>,
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
        ]
        .into_iter()
        .map(|(name, rights)| Request {
            name: name.into(),
            wants: Wants::Dir(rights),
            optional: true,
            about: "test".into(),
        })
        .collect()
    }

    fn run(args: Vec<String>, grants: Vec<Grant>) -> Result<(), String> {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            for g in grants {
                match g.handle {
                    Handle::Dir(d) => h.dirs.insert(g.name, d),
                };
            }
        });
        for a in args {
            println!("{a} => {}", Probe::step(a.clone()));
        }
        Ok(())
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
    match e {
        Error::Denied(r) => format!("denied:{}", rights_list(*r)),
        Error::Escape(p) => format!("escape:{p}"),
        Error::NotFound(p) => format!("not-found:{p}"),
        Error::Exists(p) => format!("exists:{p}"),
        Error::NotDirectory(p) => format!("not-directory:{p}"),
        Error::IsDirectory(p) => format!("is-directory:{p}"),
        Error::NotEmpty(p) => format!("not-empty:{p}"),
        Error::Invalid(m) => format!("invalid:{m}"),
        Error::LimitExceeded(m) => format!("limit-exceeded:{m}"),
        Error::Io(m) => format!("io:{m}"),
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

/// A small, fixed pattern so that streamed data can be checked.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn exec(h: &mut Held, command: &str) -> Result<String, Error> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["rights", _] => Ok(rights_list(dir(&h.dirs, words[1])?.rights())),
        ["read", _, path] => {
            let bytes = dir(&h.dirs, words[1])?.read_file(path)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        ["write", _, path, content] => dir(&h.dirs, words[1])?
            .write_file(path, content.as_bytes())
            .map(|_| String::new()),
        ["list", _, path] => {
            let entries = dir(&h.dirs, words[1])?.list(path)?;
            Ok(entries
                .iter()
                .map(|e| format!("{}={}", e.name, kind(e.kind)))
                .collect::<Vec<_>>()
                .join(","))
        }
        ["stat", _, path] => {
            let s = dir(&h.dirs, words[1])?.stat(path)?;
            Ok(format!("{}:{}", kind(s.kind), s.size))
        }
        ["mkdir", _, path] => dir(&h.dirs, words[1])?
            .create_dir(path)
            .map(|_| String::new()),
        ["rm", _, path] => dir(&h.dirs, words[1])?
            .remove_file(path)
            .map(|_| String::new()),
        ["rmdir", _, path] => dir(&h.dirs, words[1])?
            .remove_dir(path)
            .map(|_| String::new()),
        ["rename", _, from, to] => dir(&h.dirs, words[1])?
            .rename(from, to)
            .map(|_| String::new()),
        ["open-dir", _, path, rights, new] => {
            let sub = dir(&h.dirs, words[1])?.open_dir(path, parse_rights(rights))?;
            h.dirs.insert(new.to_string(), sub);
            Ok(String::new())
        }
        ["attenuate", _, rights, new] => {
            let sub = dir(&h.dirs, words[1])?.attenuate(parse_rights(rights))?;
            h.dirs.insert(new.to_string(), sub);
            Ok(String::new())
        }
        ["drop", name] => {
            h.dirs
                .remove(*name)
                .ok_or_else(|| Error::Invalid(format!("no dir `{name}`")))?;
            Ok(String::new())
        }
        ["open", _, path, flags, new] => {
            let f = dir(&h.dirs, words[1])?.open_file(path, parse_flags(flags))?;
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
            let f = dir(&h.dirs, words[1])?.open_file(path, OpenFlags::READ)?;
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
            let f = dir(&h.dirs, words[1])?.open_file(
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
            let base = dir(&h.dirs, words[1])?;
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
                let key = match dir(&h.dirs, words[1])?.read_file(path) {
                    Ok(b) => format!("ok={}", String::from_utf8_lossy(&b)),
                    Err(e) => describe(&e).split(':').next().unwrap().to_string(),
                };
                *counts.entry(key).or_default() += 1;
            }
            let mut v: Vec<String> = counts
                .into_iter()
                .map(|(k, c)| format!("{k}#{c}"))
                .collect();
            v.sort();
            Ok(v.join(","))
        }
        ["memory"] => Ok(memory_bytes().to_string()),
        ["trap"] => panic!("the probe was asked to trap"),
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
        _ => Err(Error::Invalid(format!("probe does not know `{command}`"))),
    }
}

fn dir<'a>(dirs: &'a HashMap<String, Dir>, name: &str) -> Result<&'a Dir, Error> {
    dirs.get(name)
        .ok_or_else(|| Error::Invalid(format!("probe holds no dir `{name}`")))
}

fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

export!(Probe);
