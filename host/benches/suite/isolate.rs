//! `isolate`: the example web server (components/examples/web-server) as
//! shipped, every request in a fresh child, against the same handler run in
//! the parent (`isolate = no` in its server.conf). Both from the same
//! build, with the shipped manifest's grants and budgets, under the same
//! load. Target: at least 0.8 times the parent's requests/s.

use std::path::Path;
use std::process::Command;

use crate::load::{self, Server};
use crate::report::{spread, Metric, Target};
use crate::Opts;

/// Starts the example from its shipped manifest and server.conf, moved to
/// a free port and a scratch folder, with `isolate = no` if not `isolate`.
fn start(guests: &Path, scratch: &Path, isolate: bool) -> Result<Server, String> {
    let shipped = crate::root().join("components/examples/web-server");
    let port = load::free_port();
    let dir = scratch.join(if isolate { "isolated" } else { "in-parent" });
    let (conf, uploads) = (dir.join("conf"), dir.join("uploads"));
    std::fs::create_dir_all(&conf).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&uploads).map_err(|e| e.to_string())?;
    let mut server_conf: String = std::fs::read_to_string(shipped.join("conf/server.conf"))
        .map_err(|e| e.to_string())?
        .lines()
        .filter(|l| !l.trim_start().starts_with("listen") && !l.trim_start().starts_with("isolate"))
        .map(|l| format!("{l}\n"))
        .collect();
    server_conf += &format!("listen = 127.0.0.1:{port}\n");
    if !isolate {
        server_conf += "isolate = no\n";
    }
    std::fs::write(conf.join("server.conf"), server_conf).map_err(|e| e.to_string())?;
    let text =
        std::fs::read_to_string(shipped.join("capbroker.toml")).map_err(|e| e.to_string())?;
    let mut manifest: toml::Table = text.parse().map_err(|e| format!("capbroker.toml: {e}"))?;
    let path = |p: &Path| toml::Value::String(p.display().to_string());
    manifest.insert("component".into(), path(&guests.join("web_server.wasm")));
    let table = |m: &mut toml::Table, k: &str| -> Result<toml::Table, String> {
        match m.get(k) {
            Some(toml::Value::Table(t)) => Ok(t.clone()),
            _ => Err(format!("capbroker.toml has no `{k}` table")),
        }
    };
    let mut listen = table(&mut manifest, "listen")?;
    listen.insert(
        "web".into(),
        toml::Value::String(format!("127.0.0.1:{port}")),
    );
    manifest.insert("listen".into(), listen.into());
    let mut dirs = table(&mut manifest, "dir")?;
    for (name, at) in [("cfg", &conf), ("uploads", &uploads)] {
        let Some(toml::Value::Table(d)) = dirs.get_mut(name) else {
            return Err(format!("capbroker.toml has no [dir.{name}]"));
        };
        d.insert("path".into(), path(at));
    }
    manifest.insert("dir".into(), dirs.into());
    let file = dir.join("capbroker.toml");
    std::fs::write(
        &file,
        toml::to_string(&manifest).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capbroker"));
    cmd.arg("run").arg("-m").arg(&file);
    Server::start(cmd, port)
}

pub fn run(opts: &Opts, guests: &Path) -> Metric {
    let m = Metric::new("isolate", "ratio", Target::AtLeast(0.8));
    let scratch = tempfile::tempdir().unwrap();
    let servers = start(guests, scratch.path(), true)
        .and_then(|a| Ok((a, start(guests, scratch.path(), false)?)));
    let (isolated, parent) = match servers {
        Ok(s) => s,
        Err(e) => return m.skipped(format!("the example did not start: {e}")),
    };
    let (rounds, warmup, window) = load::plan(opts.quick);
    let stats = load::rounds(
        &[(&isolated, "hello"), (&parent, "hello")],
        rounds,
        warmup,
        window,
    );
    let (a, b) = (&stats[0], &stats[1]);
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect();
    let (a_rps, a_p99) = load::medians(a);
    let (b_rps, b_p99) = load::medians(b);
    let mut detail = format!(
        "GET / from {} keep-alive clients (reconnecting when the server closes), \
         {rounds} rounds of {window:?} after {warmup:?} of warm-up each, in random order\n",
        load::CLIENTS
    );
    for (label, s) in [("a child per request", a), ("in the parent", b)] {
        for (i, r) in s.iter().enumerate() {
            detail += &format!("{label:<20} round {i}: {}\n", r.line());
        }
    }
    detail += &format!(
        "median: isolated {a_rps:.0} req/s p99 {a_p99:.2} ms; in the parent {b_rps:.0} req/s \
         p99 {b_p99:.2} ms\nratio of req/s: {}",
        spread(&ratios, 2)
    );
    let errors: usize = a.iter().chain(b).map(|s| s.errors).sum();
    Metric {
        value: Ok(crate::report::median(&mut ratios.clone())),
        also: vec![(format!("no failed requests ({errors})"), errors == 0)],
        detail,
        ..m
    }
}
