//! Running tests again without `openat2`, so that cap-std's own path
//! resolver is exercised too (the one Linux uses where `openat2` is not
//! available). Shared by `support` and by the fuzzer (`fuzz/src/lib.rs`
//! includes this file as its `openat2` module).
#![allow(dead_code)]

use std::process::Command;

/// Makes `openat2` fail with ENOSYS in the calling process from now on, so
/// that cap-std falls back to its own path resolver (as it does on kernels
/// without `openat2`). Meant for a `pre_exec` hook in a child process.
///
/// # Safety
/// Async-signal-safe; only `prctl` calls with a filter on the stack.
pub unsafe fn deny_openat2() -> std::io::Result<()> {
    const SYS_OPENAT2: u32 = 437; // the same on every Linux architecture
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: SYS_OPENAT2,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        || libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const _,
        ) != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The environment variable that marks a test binary's run without
/// `openat2`.
pub const NO_OPENAT2: &str = "CAPBROKER_TEST_NO_OPENAT2";

/// In a run without `openat2`, asserts that it really is gone.
pub fn assert_openat2_as_expected() {
    if std::env::var_os(NO_OPENAT2).is_some() {
        assert!(!openat2_available(), "the seccomp filter did not take");
    }
}

/// Whether `openat2` works in this process.
pub fn openat2_available() -> bool {
    let how = [0u64; 3]; // struct open_how { flags, mode, resolve }
    let fd = unsafe {
        libc::syscall(
            437,
            libc::AT_FDCWD,
            c".".as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        true
    } else {
        std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
    }
}

/// Runs the calling test binary's tests again in a child process where
/// `openat2` fails with ENOSYS (skipping `skip`, the test that calls this),
/// and fails unless they all pass there and `openat2_is_as_expected` ran.
pub fn rerun(skip: &str) {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(NO_OPENAT2).is_some() {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--skip", skip, "--test-threads", "2"])
        .env(NO_OPENAT2, "1");
    unsafe { cmd.pre_exec(|| deny_openat2()) };
    let out = cmd.output().expect("run the tests again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "without openat2:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("openat2_is_as_expected ... ok"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
