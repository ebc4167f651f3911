//! Counts the words of every `.txt` file in `data`, each in a child process
//! of its own: the child gets a read-only copy of `data`, the file's name as
//! input, 16 MiB of memory, 50M fuel and one second. A file named
//! `spin.txt` makes its child loop forever, to show that one runaway child
//! ends alone (out of CPU) while the others finish.

use capbroker_sdk::{
    export_service, mailbox, service, ExitStatus, Grants, Limits, Request, Rights, Share, Shared,
};

struct Fanout;

impl service::Guest for Fanout {
    fn requests() -> Vec<Request> {
        vec![
            Request::dir(
                "data",
                Rights::READ | Rights::LIST,
                "the .txt files to count",
            ),
            Request::spawner("workers", "one child process per file"),
        ]
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        let mut grants = Grants::granted();
        let data = grants.dir("data")?;
        let workers = grants.spawner("workers")?;
        let files: Vec<String> = data
            .list(".")
            .map_err(|e| e.message())?
            .into_iter()
            .filter(|e| e.file_type().is_file() && e.file_name().ends_with(".txt"))
            .map(|e| e.file_name().to_owned())
            .collect();
        // The children only read: share a copy that cannot even list.
        let read_only = data.attenuate(Rights::READ).map_err(|e| e.message())?;
        drop(data);

        let limits = Limits {
            max_memory: 16 << 20,
            max_fuel: 50_000_000,
            timeout_ms: 1_000,
        };
        let mut children = Vec::new();
        for name in files {
            let share = Share {
                name: "data".into(),
                handle: Shared::Dir(read_only.as_raw()),
            };
            let child = workers
                .spawn("self", &[share], limits, name.as_bytes())
                .map_err(|e| e.message())?;
            children.push((name, child));
        }
        for (name, child) in children {
            let hello = child
                .receive()
                .map(|m| String::from_utf8_lossy(&m).into_owned());
            match child.wait() {
                ExitStatus::Finished(out) => println!(
                    "{name}: {} words (child said {:?})",
                    String::from_utf8_lossy(&out),
                    hello.unwrap_or_default()
                ),
                ExitStatus::OutOfCpu => println!("{name}: the child ran out of CPU"),
                other => println!("{name}: the child ended: {other:?}"),
            }
        }
        Ok(())
    }

    fn start(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let data = Grants::granted().dir("data")?;
        let name = String::from_utf8(input).map_err(|_| "bad file name")?;
        mailbox::send(format!("counting {name}").as_bytes()).map_err(|e| e.message())?;
        if name == "spin.txt" {
            loop {
                std::hint::black_box(());
            }
        }
        let text = data.read_to_string(&name).map_err(|e| e.message())?;
        Ok(text.split_whitespace().count().to_string().into_bytes())
    }
}

export_service!(Fanout);
