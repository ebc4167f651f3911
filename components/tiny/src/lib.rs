//! The smallest useful child process: it returns its input, and reports how
//! many handles it was given. Given `wait`, it first waits on its mailbox
//! until its parent is gone (an idle child, for measuring what one costs the
//! host); given `busy N`, it makes N random reads and writes in 1 MiB of its
//! memory and returns a checksum (a busy child, for measuring what explicit
//! bounds checks cost).

use capbroker_sdk::{child, export_child, granted, mailbox};

struct Tiny;

impl child::Guest for Tiny {
    fn start(mut input: Vec<u8>) -> Result<Vec<u8>, String> {
        if input == b"wait" {
            while mailbox::receive().is_some() {}
        }
        if let Some(n) = input.strip_prefix(b"busy ") {
            let n: u64 = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or("busy N")?;
            return Ok(busy(n).to_string().into_bytes());
        }
        let grants = granted();
        input.push(b'0' + grants.len() as u8);
        Ok(input)
    }
}

/// `n` dependent random reads and writes over 1 MiB of words.
fn busy(n: u64) -> u32 {
    let mut words = vec![0u32; 1 << 18];
    let mut x: u32 = 1;
    for i in 0..n {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let at = (x >> 14) as usize;
        let v = words[at].wrapping_add(i as u32) ^ x;
        words[at] = v;
        x ^= words[(v >> 14) as usize];
    }
    std::hint::black_box(&words);
    x
}

export_child!(Tiny);
