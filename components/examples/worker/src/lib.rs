//! A worker that gives up what it does not need as soon as it can.
//!
//! 1. It reads its configuration through `cfg`, a read-only handle.
//! 2. From `data` it derives a handle on the one sub-folder the configuration
//!    names, with only the rights it keeps using.
//! 3. It drops `cfg` and `data`: from here on it can touch nothing else.
//! 4. It goes on working: it summarises every `.txt` file in its folder into
//!    `summary.txt`, then shows that what it dropped is out of reach.

use capbroker_sdk::{export, Dir, Grants, Guest, Request, Rights};

struct Worker;

impl Guest for Worker {
    fn requests() -> Vec<Request> {
        vec![
            Request::dir("cfg", Rights::READ, "reads worker.conf"),
            Request::dir(
                "data",
                Rights::READ | Rights::WRITE | Rights::CREATE | Rights::LIST,
                "works in the sub-folder worker.conf names",
            ),
        ]
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        let mut grants = Grants::granted();
        let cfg = grants.dir("cfg")?;
        let data = grants.dir("data")?;

        let conf = cfg
            .read_to_string("worker.conf")
            .map_err(|e| format!("worker.conf: {e}"))?;
        let folder = setting(&conf, "folder").ok_or("worker.conf has no `folder = …` line")?;
        println!("config: working in `{folder}`");

        let work = data
            .open_dir(
                folder,
                Rights::READ | Rights::CREATE | Rights::WRITE | Rights::LIST,
            )
            .map_err(|e| format!("opening {folder}: {e}"))?;
        drop(cfg);
        drop(data);
        println!("dropped `cfg` and `data`; holding only `{folder}` with read,write,create,list");

        summarise(&work)?;
        show_what_is_gone(&work);
        Ok(())
    }
}

fn setting<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn summarise(work: &Dir) -> Result<(), String> {
    let mut summary = String::new();
    for entry in work.read_dir(".")? {
        let entry = entry?;
        let name = entry.file_name();
        if !entry.file_type().is_file() || !name.ends_with(".txt") || name == "summary.txt" {
            continue;
        }
        let text = work.read_to_string(name)?;
        let line = format!(
            "{}: {} lines, {} words\n",
            name,
            text.lines().count(),
            text.split_whitespace().count()
        );
        print!("{line}");
        summary.push_str(&line);
    }
    work.write("summary.txt", &summary)?;
    println!("wrote summary.txt");
    Ok(())
}

/// Every way back to the dropped authority fails, with an error value.
fn show_what_is_gone(work: &Dir) {
    let attempts: [(&str, Result<(), capbroker_sdk::Error>); 4] = [
        ("open ..", work.open_dir("..", Rights::READ).map(drop)),
        (
            "read ../../conf/worker.conf",
            work.read("../../conf/worker.conf").map(drop),
        ),
        ("read /etc/passwd", work.read("/etc/passwd").map(drop)),
        (
            "regain remove",
            work.attenuate(Rights::READ | Rights::REMOVE).map(drop),
        ),
    ];
    for (what, result) in attempts {
        match result {
            Ok(()) => println!("UNEXPECTED: {what} worked"),
            Err(e) => println!("refused: {what}: {e}"),
        }
    }
}

export!(Worker);
