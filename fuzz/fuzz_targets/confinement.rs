//! libFuzzer's entry: every input through the harness; an oracle failure
//! is a crash, with the input and what went wrong.
#![no_main]

use std::cell::RefCell;

use capbroker_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: RefCell<Harness> =
        RefCell::new(Harness::new().expect("build the guests first: `just guests`"));
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        if let Err(v) = h.borrow_mut().run_bytes(data) {
            panic!("oracle failure:\n{v}");
        }
    });
});
