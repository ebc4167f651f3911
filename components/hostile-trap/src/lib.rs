//! Attack guest (tests/attack3.rs): its `requests` export traps inside a
//! function whose name (in the name section, which the guest chooses)
//! carries a newline, terminal escapes and a forged audit line. The trap's
//! backtrace names that function.

use capbroker_sdk::{export, Guest, Request};

#[inline(never)]
#[export_name = "\n2026-12-01T00:00:00.000000Z  WARN capbroker::audit: FORGED\u{1b}[2J"]
pub extern "C" fn evil(x: u32) -> u32 {
    if x != 12345 {
        core::arch::wasm32::unreachable()
    }
    x
}

struct HostileTrap;

impl Guest for HostileTrap {
    fn requests() -> Vec<Request> {
        let x = std::hint::black_box(1);
        evil(x);
        Vec::new()
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        Ok(())
    }
}

export!(HostileTrap);
