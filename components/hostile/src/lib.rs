//! Attack guest (tests/attack3.rs): its `requests` carry terminal escape
//! sequences and newlines in the names and descriptions it chooses, to see
//! whether the broker prints them raw (`capbroker inspect`, and the error
//! when the operator does not grant a required request).

use capbroker_sdk::{export, Guest, Request, Rights, Wants};

struct Hostile;

impl Guest for Hostile {
    fn requests() -> Vec<Request> {
        vec![Request {
            name: "cfg\u{1b}[2J\u{1b}[H".into(),
            wants: Wants::Dir(Rights::READ),
            optional: false,
            about: "x\n2026-12-01T00:00:00.000000Z  WARN capbroker::audit: FORGED line\r\u{1b}[31mred\u{202e}".into(),
        }]
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        Ok(())
    }
}

export!(Hostile);
