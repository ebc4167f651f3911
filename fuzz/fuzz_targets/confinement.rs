//! libFuzzer's entry: every input through the harness; an oracle failure
//! is a crash, with the input and what went wrong.
#![no_main]

use std::cell::RefCell;

use capbroker_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: RefCell<Harness> = RefCell::new({
        // `CAPBROKER_FUZZ_NO_OPENAT2=1`: cap-std's own resolver, as on a
        // kernel without openat2.
        if std::env::var_os("CAPBROKER_FUZZ_NO_OPENAT2").is_some() {
            unsafe { capbroker_fuzz::openat2::deny_openat2() }.expect("install the seccomp filter");
            assert!(!capbroker_fuzz::openat2::openat2_available());
        }
        Harness::new().expect("build the guests first: `just guests`")
    });
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        if let Err(v) = h.borrow_mut().run_bytes(data) {
            panic!("oracle failure:\n{v}");
        }
    });
});
