//! `capbroker audit FILE`: a JSON Lines audit log, summarised: the process
//! tree with each process's grants, pledges and exit, then the denials
//! grouped by kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::{clean, MAX_MESSAGE, MAX_TEXT};

#[derive(Default)]
struct Process {
    component: String,
    parent: Option<u64>,
    grants: Vec<String>,
    handles: Vec<String>,
    pledges: Vec<String>,
    denials: u64,
    exit: Option<String>,
}

#[derive(Default)]
struct Group {
    count: u64,
    example: String,
}

/// A line of a log that is not an audit event, at `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum BadLog {
    #[error("{file}:{line}: not a JSON object: {error}")]
    NotJson {
        file: String,
        line: usize,
        error: serde_json::Error,
    },
    #[error("{file}:{line}: not a capbroker audit event (no `event` or `pid`)")]
    NotEvent { file: String, line: usize },
}

/// Summarises the log `text` (the contents of `name`).
pub fn summarise(name: &str, text: &str) -> Result<String, BadLog> {
    let mut procs: BTreeMap<u64, Process> = BTreeMap::new();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut suppressed = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Value = serde_json::from_str(line).map_err(|error| BadLog::NotJson {
            file: name.to_string(),
            line: i + 1,
            error,
        })?;
        // A log is text a guest had a hand in, and the summary goes to a
        // terminal: every string from it is cleaned again.
        let field = |k: &str| {
            clean(e.get(k).and_then(Value::as_str).unwrap_or(""), MAX_MESSAGE).into_owned()
        };
        let (Some(event), Some(pid)) = (e.get("event").and_then(Value::as_str), e["pid"].as_u64())
        else {
            return Err(BadLog::NotEvent {
                file: name.to_string(),
                line: i + 1,
            });
        };
        let p = procs.entry(pid).or_default();
        p.component = field("component");
        p.parent = e["parent"].as_u64();
        match event {
            "grant" => p
                .grants
                .push(format!("{} = {}", field("grant"), field("detail"))),
            "pledge" => p.pledges.push(field("authority")),
            "spawn" => {
                let child = procs.entry(e["child"].as_u64().unwrap_or(0)).or_default();
                child.parent = Some(pid);
                child.component = field("child_component");
                child.handles = e["handles"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|h| clean(h, MAX_TEXT).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
            }
            "exit" => {
                p.exit = Some(format!(
                    "{}, fuel {}, peak memory {} KiB, {:.1} ms",
                    field("status"),
                    e["fuel_used"].as_u64().unwrap_or(0),
                    e["peak_memory"].as_u64().unwrap_or(0) >> 10,
                    e["wall_us"].as_u64().unwrap_or(0) as f64 / 1000.0
                ))
            }
            "deny" | "fail" => {
                p.denials += 1;
                let g = groups.entry((field("error"), field("op"))).or_default();
                g.count += 1;
                if g.example.is_empty() {
                    g.example = format!(
                        "{} `{}` in {}: {}",
                        field("handle"),
                        field("path"),
                        field("component"),
                        field("message")
                    );
                }
            }
            "suppressed" => suppressed += e["count"].as_u64().unwrap_or(0),
            _ => {}
        }
    }

    let mut out = String::new();
    writeln!(out, "processes").unwrap();
    let roots: Vec<u64> = procs
        .iter()
        .filter(|(_, p)| p.parent.is_none_or(|parent| !procs.contains_key(&parent)))
        .map(|(pid, _)| *pid)
        .collect();
    // Children by parent, once: the log (the guest's doing, in part) may
    // hold many processes, and a chain of them as deep as it likes.
    let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (pid, p) in &procs {
        if let Some(parent) = p.parent.filter(|q| q != pid && procs.contains_key(q)) {
            children.entry(parent).or_default().push(*pid);
        }
    }
    let mut todo: Vec<(u64, usize)> = roots.iter().rev().map(|pid| (*pid, 1)).collect();
    while let Some((pid, depth)) = todo.pop() {
        process(&procs[&pid], pid, depth, &mut out);
        for child in children.get(&pid).into_iter().flatten().rev() {
            todo.push((*child, depth + 1));
        }
    }
    let total: u64 = groups.values().map(|g| g.count).sum();
    writeln!(out, "denials and failures: {total}").unwrap();
    for ((error, op), g) in &groups {
        writeln!(
            out,
            "  {error:<14} {op:<16} ×{:<5} e.g. {}",
            g.count, g.example
        )
        .unwrap();
    }
    if suppressed > 0 {
        writeln!(
            out,
            "  and {suppressed} more left out of the log by its rate limit"
        )
        .unwrap();
    }
    Ok(out)
}

/// How deep the tree is drawn by indenting.
const MAX_INDENT: usize = 32;

/// The lines of one process, indented by its `depth` in the tree (at most
/// [`MAX_INDENT`] steps, then with its depth written out).
fn process(p: &Process, pid: u64, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth.min(MAX_INDENT));
    if depth > MAX_INDENT {
        writeln!(out, "{pad}{pid} {} (depth {depth})", p.component).unwrap();
    } else {
        writeln!(out, "{pad}{pid} {}", p.component).unwrap();
    }
    for g in &p.grants {
        writeln!(out, "{pad}  grant {g}").unwrap();
    }
    if !p.handles.is_empty() {
        writeln!(
            out,
            "{pad}  handles from its parent: {}",
            p.handles.join(", ")
        )
        .unwrap();
    }
    for a in &p.pledges {
        writeln!(out, "{pad}  pledged {a}").unwrap();
    }
    if p.denials > 0 {
        writeln!(out, "{pad}  {} denials and failures", p.denials).unwrap();
    }
    match &p.exit {
        Some(e) => writeln!(out, "{pad}  exit: {e}").unwrap(),
        None => writeln!(out, "{pad}  exit: not recorded").unwrap(),
    }
}
