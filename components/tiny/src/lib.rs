//! The smallest useful child process: it returns its input, and reports how
//! many handles it was given. Given `wait`, it first waits for a message
//! from its parent (or for its parent to go): the idle child of the
//! benchmark suite's `idle-children`.

use capbroker_sdk::{child, export_child, granted, mailbox};

struct Tiny;

impl child::Guest for Tiny {
    fn start(mut input: Vec<u8>) -> Result<Vec<u8>, String> {
        if input == b"wait" {
            mailbox::receive();
        }
        let grants = granted();
        input.push(b'0' + grants.len() as u8);
        Ok(input)
    }
}

export_child!(Tiny);
