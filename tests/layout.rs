//! The host crate's layout holds: the shared core imports no capability
//! kind, no kind's room imports another's, and every import runs down the
//! floors (see docs/architecture.md). Read from the sources' own
//! `crate::` paths, doc links included, so an upward reference fails here
//! before it becomes a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each folder of `host/src`, from the ground floor up, and what it may
/// use besides itself.
const FLOORS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("fs", &["core"]),
    ("net", &["core"]),
    ("spawn", &["core"]),
    ("pledge", &["core"]),
    ("grants", &["core", "fs", "net", "spawn"]),
    ("wasi", &["core", "fs", "net"]),
    (
        "policy",
        &["core", "fs", "net", "spawn", "pledge", "grants"],
    ),
    (
        "run",
        &[
            "core", "fs", "net", "spawn", "pledge", "grants", "wasi", "policy",
        ],
    ),
    (
        "serve",
        &[
            "core", "fs", "net", "spawn", "pledge", "grants", "wasi", "policy", "run",
        ],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The folders of `host/src` that `text` names as `crate::FOLDER`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `$crate::` in a macro is another crate's.
        if !name.is_empty() && !text[..i].ends_with('$') {
            found.insert(name);
        }
    }
    found
}

#[test]
fn imports_run_down_the_floors_and_no_room_uses_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let floors: BTreeMap<&str, &[&str]> = FLOORS.iter().copied().collect();
    let mut wrong = Vec::new();
    let mut seen_folders = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let mut parts = rel.components();
        let first = parts.next().unwrap().as_os_str().to_str().unwrap();
        if parts.next().is_none() {
            // `lib.rs` and `main.rs` stand above every floor.
            continue;
        }
        seen_folders.insert(first.to_string());
        let Some(allowed) = floors.get(first) else {
            wrong.push(format!(
                "{}: the folder `{first}` has no floor",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used != first && !allowed.contains(&used.as_str()) {
                wrong.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that break the layout:\n{}",
        wrong.join("\n")
    );
    let known: BTreeSet<String> = FLOORS.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(seen_folders, known, "every folder has a floor and exists");
}

#[test]
fn the_check_catches_an_upward_import() {
    assert!(uses("use crate::run::ctx::State;").contains("run"));
    assert!(uses("/// see [`crate::grants`]").contains("grants"));
    assert!(uses("$crate::fs::x").is_empty());
}
