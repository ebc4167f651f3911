//! Container create → start → exit through the shim, against runc running
//! a static native hello, in one run under a containerd of our own. Target:
//! at most 1.3 times runc's time (medians) for an image as `capbroker-image`
//! builds it, the component compiled into it; an image of the `.wasm`
//! alone, which each container compiles at its start, is reported beside.
//!
//! Both go through `ctr run --rm`, so both include ctr's own start-up,
//! containerd's bookkeeping and a snapshot per container; the difference
//! is the shim and what runs in the container: capbroker compiling and
//! running a component, or runc exec'ing a native binary.

use std::path::Path;
use std::time::{Duration, Instant};

use containerd_shim_capbroker::image::Image;
use containerd_shim_capbroker::local::{guest_component, static_program, Containerd, RUNTIME};

const RUNS: usize = 30;
const WARMUP: usize = 3;

/// `puts("hello")`, linked statically so the image needs nothing else.
fn hello_native(dir: &Path) -> Vec<u8> {
    let source = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";
    static_program(dir, "hello", source).unwrap()
}

fn time_run(ctd: &Containerd, runtime: &str, image: &str, id: &str, expect: &str) -> Duration {
    let t = Instant::now();
    let out = ctd.ctr(&["run", "--rm", "--runtime", runtime, image, id]);
    let elapsed = t.elapsed();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && all.contains(expect),
        "{runtime}: {all}"
    );
    elapsed
}

fn report(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: p50 {:>7.1} ms   p99 {:>7.1} ms",
        ms(at(0.5)),
        ms(at(0.99))
    );
    at(0.5)
}

fn main() {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-capbroker-v1"));
    let ctd = Containerd::start(shim.parent().unwrap()).unwrap();

    let mut wasm = Image::new("docker.io/capbroker/hello-wasm:1");
    wasm.add("/hello.wasm", guest_component("std-probe").unwrap())
        .unwrap();
    wasm.entrypoint = vec!["/hello.wasm".into(), "stderr".into(), "hello".into()];
    ctd.import(&wasm).unwrap();
    // As `capbroker-image` builds it: the compiled artifact in the image.
    let probe = ctd.scratch().join("hello.wasm");
    std::fs::write(&probe, guest_component("std-probe").unwrap()).unwrap();
    let artifact = capbroker::run::compiled::compile(&capbroker::policy::Config {
        component: Some(probe),
        ..Default::default()
    })
    .unwrap();
    let mut compiled = Image::new("docker.io/capbroker/hello-compiled:1");
    compiled.add("/hello.cwasm", artifact).unwrap();
    compiled.entrypoint = vec!["/hello.cwasm".into(), "stderr".into(), "hello".into()];
    ctd.import(&compiled).unwrap();
    let mut native = Image::new("docker.io/capbroker/hello-native:1");
    native
        .add_executable("/hello", hello_native(ctd.scratch()))
        .unwrap();
    native.entrypoint = vec!["/hello".into()];
    ctd.import(&native).unwrap();

    let (mut shim_runs, mut runc_runs, mut compiled_runs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..WARMUP + RUNS {
        // Interleaved, so all see the same machine.
        let a = time_run(
            &ctd,
            RUNTIME,
            "docker.io/capbroker/hello-wasm:1",
            &format!("w{i}"),
            "hello",
        );
        let c = time_run(
            &ctd,
            RUNTIME,
            "docker.io/capbroker/hello-compiled:1",
            &format!("c{i}"),
            "hello",
        );
        let b = time_run(
            &ctd,
            "io.containerd.runc.v2",
            "docker.io/capbroker/hello-native:1",
            &format!("n{i}"),
            "hello",
        );
        if i >= WARMUP {
            shim_runs.push(a);
            runc_runs.push(b);
            compiled_runs.push(c);
        }
    }
    println!("container create → start → exit with `ctr run --rm`, {RUNS} runs each");
    let c = report(
        "capbroker shim, compiled image (capbroker-image)",
        compiled_runs,
    );
    let a = report(
        "capbroker shim, .wasm image (compiled per start)",
        shim_runs,
    );
    let b = report(
        "runc, static native hello                       ",
        runc_runs,
    );
    let ratio = c.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio shim/runc (p50), compiled image: {ratio:.2} (target at most 1.30: {})",
        if ratio <= 1.3 { "met" } else { "NOT met" }
    );
    println!(
        "ratio shim/runc (p50), .wasm image: {:.2}",
        a.as_secs_f64() / b.as_secs_f64()
    );
}
