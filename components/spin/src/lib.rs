//! An app that spins in `requests`, where no entry point has been called
//! yet: the host must stop it with the limits `run` would have.

use capbroker_sdk::{export, Guest, Request};

struct Spin;

impl Guest for Spin {
    fn requests() -> Vec<Request> {
        loop {
            std::hint::black_box(0u64);
        }
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        Ok(())
    }
}

export!(Spin);
