//! The Rust SDK's std-shaped API, and the seed's contract: read the
//! configuration, then give up the filesystem in one line.
//!
//! 1. `cfg` lives in a block: the configuration is read through it and the
//!    handle is dropped at the closing brace, for good.
//! 2. Through `data` it reads with `std::io` (`Read::read_to_string`,
//!    `BufRead::lines`, `Seek`), writes with `Write`, and turns a denial
//!    into a `std::io::Error` of kind `PermissionDenied`.
//! 3. `capbroker_sdk::pledge::filesystem()`: every handle, and the file it
//!    still holds open, refuses what follows.
//!
//! Each refusal is printed as Rust prints the error (`{}` and, for a
//! `std::io::Error`, its kind).

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use capbroker_sdk::{export, Grants, Guest, OpenOptions, Request, Rights};

struct App;

impl Guest for App {
    fn requests() -> Vec<Request> {
        vec![
            Request::dir("cfg", Rights::READ, "reads app.conf"),
            Request::dir(
                "data",
                Rights::READ | Rights::LIST | Rights::WRITE | Rights::CREATE,
                "reads its input and writes out.txt",
            ),
        ]
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        let mut grants = Grants::granted();

        // 1. A scoped handle: `cfg` is gone at the closing brace.
        let conf = {
            let cfg = grants.dir("cfg")?;
            cfg.read_to_string("app.conf")?
        };
        println!("config: {}", conf.trim());
        match grants.dir("cfg") {
            Ok(_) => println!("cfg after its scope: still here?!"),
            Err(e) => println!("cfg after its scope: {e}"),
        }

        // 2. std::io on capbroker files.
        let data = grants.dir("data")?;
        io_demo(&data).map_err(|e| format!("{e} ({:?})", e.kind()))?;

        let read_only = data.attenuate(Rights::READ | Rights::LIST)?;
        let denied: io::Error = match read_only.write("hello.txt", "changed") {
            Ok(()) => return Err("write through read-only: allowed?!".into()),
            Err(e) => e.into(),
        };
        println!("write through read-only: {:?}: {denied}", denied.kind());
        drop(read_only);

        // 3. One line gives up the filesystem; the open file goes with it.
        // (Read the first line unbuffered: a `BufReader` here would fetch
        // the whole small file before the pledge.)
        let mut held = data.open("lines.txt")?;
        let mut first = [0; 6];
        held.read_exact(&mut first).map_err(|e| e.to_string())?;
        println!(
            "held file, first line: {}",
            String::from_utf8_lossy(&first).trim_end()
        );
        capbroker_sdk::pledge::filesystem();
        match data.read_to_string("hello.txt") {
            Ok(_) => println!("after pledge, read: allowed?!"),
            Err(e) => println!("after pledge, read: {e}"),
        }
        match BufReader::new(held).lines().next() {
            Some(Err(e)) => println!("after pledge, held file: {:?}: {e}", e.kind()),
            other => println!("after pledge, held file: {other:?}?!"),
        }
        Ok(())
    }
}

/// Plain `std::io`: nothing here knows it runs on capbroker handles but the
/// `Dir` it starts from.
fn io_demo(data: &capbroker_sdk::Dir) -> io::Result<()> {
    let mut text = String::new();
    data.open("hello.txt")?.read_to_string(&mut text)?;
    println!("read_to_string: {text}");

    let lines = BufReader::new(data.open("lines.txt")?)
        .lines()
        .collect::<io::Result<Vec<String>>>()?;
    println!("lines: {}", lines.join("|"));

    let mut file = data.open("lines.txt")?;
    file.seek(SeekFrom::End(-6))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    println!("last 6 bytes: {}", tail.trim_end());

    let mut out = data.create("out.txt")?;
    writeln!(out, "{} lines", lines.len())?;
    println!("wrote at {}", out.stream_position()?);
    drop(out);
    // Appending starts at the start, as std's files do, and a write moves
    // to the end.
    let mut log = data.open_with("out.txt", OpenOptions::new().read(true).append(true))?;
    let at = log.stream_position()?;
    let mut first = [0; 1];
    log.read_exact(&mut first)?;
    println!("append opens at {at} and reads {:?}", first[0] as char);
    writeln!(log, "and more")?;
    println!("append wrote up to {}", log.stream_position()?);
    drop(log);
    println!(
        "out.txt: {}",
        data.read_to_string("out.txt")?
            .trim_end()
            .replace('\n', "|")
    );

    refusal("missing.txt", data.open("missing.txt"));

    // std's `OpenOptions`: `create_new(false)` leaves `create` as it was.
    data.open_with(
        "made.txt",
        OpenOptions::new()
            .write(true)
            .create(true)
            .create_new(false),
    )?;
    println!(
        "create, then create_new(false): made {}",
        data.try_exists("made.txt")?
    );
    data.write("binary.bin", [0xff, 0xfe])?;
    refusal("binary.bin as text", data.read_to_string("binary.bin"));
    refusal("metadata(\"\")", data.metadata(""));
    // A drop box makes new files; reading one back needs `read` all the same.
    let drop_box = data.attenuate(Rights::CREATE)?;
    let new_rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .clone();
    refusal(
        "drop box, read+write new file",
        drop_box.open_with("inbox.txt", &new_rw),
    );
    Ok(())
}

/// Prints a refusal as Rust prints it once it is a `std::io::Error`.
fn refusal<T>(what: &str, result: Result<T, capbroker_sdk::Error>) {
    match result {
        Ok(_) => println!("{what}: allowed?!"),
        Err(e) => {
            let e = io::Error::from(e);
            println!("{what}: {:?}: {e}", e.kind());
        }
    }
}

export!(App);
