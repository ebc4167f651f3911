//! The containerd shim, end to end: each test starts its own containerd
//! (its own root, state, socket and config; never the system's), imports
//! images built here with `ctr image import`, runs them with
//! `ctr run --runtime io.containerd.capbroker.v1` or through the CRI API
//! as the kubelet does, and stops containerd at its end. containerd, runc
//! and ctr are installed from Debian's packages when missing.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use containerd_shim_capbroker::image::Image;
use containerd_shim_capbroker::local::{guest_component, static_program, Containerd, RUNTIME};

/// The std-probe guest (a plain `wasi:cli` command), built once.
fn std_probe() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| guest_component("std-probe").unwrap())
}

/// A containerd of the test's own that runs this build's shim.
fn start() -> Containerd {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-capbroker-v1"));
    Containerd::start(shim.parent().unwrap()).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The probe with a manifest granting `/data` read-only, a file inside the
/// grant and one outside it.
fn granted_image(name: &str) -> Image {
    let mut image = Image::new(name);
    image.add("/std-probe.wasm", std_probe().to_vec()).unwrap();
    image
        .add(
            "/capbroker.toml",
            b"[dir.\"/data\"]\npath = \"/data\"\nrights = \"ro\"\n".to_vec(),
        )
        .unwrap();
    image
        .add("/data/granted.txt", b"granted words".to_vec())
        .unwrap();
    image.add("/secret.txt", b"secret words".to_vec()).unwrap();
    image.entrypoint = vec!["/std-probe.wasm".into()];
    image
}

#[test]
fn ctr_runs_a_component_with_the_grants_of_its_image() {
    let ctd = start();
    ctd.import(&granted_image("docker.io/capbroker/granted:1"))
        .unwrap();

    let out = ctd.run(
        "docker.io/capbroker/granted:1",
        "granted",
        &["--env", "GREETING=hello"],
        &[
            "/std-probe.wasm",
            "read",
            "/data/granted.txt",
            "read",
            "/secret.txt",
            "write",
            "/data/new.txt",
            "x",
            "env",
            "GREETING",
            "stderr",
            "to the log",
            "exit",
            "3",
        ],
    );
    let stdout = text(&out.stdout);
    // WASI 0.2's `exit` carries success or failure, not a code: any
    // non-zero exit is 1, as under `wasmtime run` and `capbroker run`.
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}\ncontainerd: {}",
        text(&out.stderr),
        ctd.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ok read") && lines[0].contains("granted words"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("err ") && !stdout.contains("secret words"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("err "),
        "a read-only grant was written: {stdout}"
    );
    assert!(
        lines[3].starts_with("ok env") && lines[3].contains("hello"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("to the log"),
        "{}",
        text(&out.stderr)
    );

    // The same image's entrypoint alone runs the probe with no steps.
    let out = ctd.run("docker.io/capbroker/granted:1", "plain", &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn without_a_manifest_an_image_is_granted_nothing() {
    let ctd = start();
    let mut image = granted_image("docker.io/capbroker/bare:1");
    image.remove("/capbroker.toml");
    ctd.import(&image).unwrap();
    let out = ctd.run(
        "docker.io/capbroker/bare:1",
        "bare",
        &[],
        &["/std-probe.wasm", "read", "/data/granted.txt", "list", "/"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.lines().all(|l| l.starts_with("err ")),
        "reached the image's files without a grant: {stdout}"
    );
    assert!(!stdout.contains("granted words"), "{stdout}");
}

#[test]
fn a_killed_container_ends_with_137() {
    let ctd = start();
    ctd.import(&granted_image("docker.io/capbroker/sleeper:1"))
        .unwrap();
    let running = ctd
        .ctr_command(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "docker.io/capbroker/sleeper:1",
            "sleeper",
            "/std-probe.wasm",
            "sleep",
            "600000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = text(&ctd.ctr(&["task", "ls"]).stdout);
        if tasks.contains("sleeper") && tasks.contains("RUNNING") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let kill = ctd.ctr(&["task", "kill", "--signal", "SIGKILL", "sleeper"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn bad_images_end_with_a_clear_message_and_the_shim_carries_on() {
    let ctd = start();
    let mut bad = granted_image("docker.io/capbroker/bad:1");
    bad.add("/not-a-component.wasm", b"hello, I am text".to_vec())
        .unwrap();
    ctd.import(&bad).unwrap();

    let cases: [(&str, &[&str], &str); 2] = [
        ("missing", &["/nothing-here.wasm"], "/nothing-here.wasm"),
        ("text", &["/not-a-component.wasm"], "not-a-component"),
    ];
    for (id, args, says) in cases {
        let out = ctd.run("docker.io/capbroker/bad:1", id, &[], args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {stderr}");
        assert!(
            stderr.contains("capbroker: error:") && stderr.contains(says),
            "{id}: {stderr}"
        );
    }

    // Manifests the broker refuses: one it cannot read, and one its own
    // grants could rewrite (a guest would choose the grants of the
    // container's next start).
    let cases: [(&str, &[u8], &[&str]); 2] = [
        (
            "broken",
            b"[dir.\"/data\"]\npath = \"/data\"\nrights = \"rwx\"\n",
            &["capbroker.toml:3", "rwx"],
        ),
        (
            "writable",
            b"[dir.\"/root\"]\npath = \"/\"\nrights = \"rw\"\n",
            &["the manifest `/capbroker.toml` is within reach of grant `/root`"],
        ),
    ];
    for (id, manifest, says) in cases {
        let name = format!("docker.io/capbroker/{id}:1");
        let mut image = granted_image(&name);
        image.add("/capbroker.toml", manifest.to_vec()).unwrap();
        ctd.import(&image).unwrap();
        let out = ctd.run(&name, id, &[], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {stderr}");
        assert!(says.iter().all(|s| stderr.contains(s)), "{id}: {stderr}");
    }

    // And the next good container runs as usual.
    let out = ctd.run(
        "docker.io/capbroker/bad:1",
        "good",
        &[],
        &["/std-probe.wasm", "read", "/data/granted.txt"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("granted words"));
}

/// The pod sandbox's "pause" container: waits for a signal.
fn pause_program(dir: &Path) -> Vec<u8> {
    let source = "#include <signal.h>\n#include <unistd.h>\n\
        static void stop(int s) { (void)s; _exit(0); }\n\
        int main(void) { signal(SIGTERM, stop); signal(SIGINT, stop); for (;;) pause(); }\n";
    static_program(dir, "pause", source).unwrap()
}

mod cri {
    //! The path the kubelet takes: containerd's CRI API over its socket.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use hyper_util::rt::TokioIo;
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::*;
    use tonic::transport::{Channel, Endpoint, Uri};
    use tower::service_fn;

    pub async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
        let socket = socket.to_owned();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("cannot connect to containerd's CRI");
        RuntimeServiceClient::new(channel)
    }

    /// A pod on the node's network (so that no CNI is needed), its logs
    /// under `logs`.
    pub fn pod(name: &str, logs: &Path) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container(
        name: &str,
        image: &str,
        command: &[&str],
        env: &[(&str, &str)],
    ) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    /// Waits for the container to exit; its exit code.
    pub async fn exit_code(client: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = client
                .container_status(ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                })
                .await
                .expect("ContainerStatus")
                .into_inner()
                .status
                .expect("a status");
            if status.state == ContainerState::ContainerExited as i32 {
                return status.exit_code;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not exit: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One pod with one container, as the kubelet runs it: RunPodSandbox
/// with the `capbroker` runtime handler, CreateContainer, StartContainer,
/// the container's exit, its log, then the pod stopped and removed.
/// Gives the exit code and the log.
async fn run_pod(ctd: &Containerd, pod: &str, command: &[&str]) -> (i32, String) {
    use k8s_cri::v1::{
        CreateContainerRequest, RemoveContainerRequest, RemovePodSandboxRequest,
        RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    };

    let logs = ctd.scratch().join("pods").join(pod);
    std::fs::create_dir_all(&logs).unwrap();
    let mut client = cri::connect(&ctd.socket()).await;
    let pod_config = cri::pod(pod, &logs);
    let sandbox = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: "capbroker".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", ctd.log()))
        .into_inner()
        .pod_sandbox_id;
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::container(
                "main",
                "docker.io/capbroker/granted:1",
                command,
                &[("GREETING", "from the pod spec")],
            )),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", ctd.log()))
        .into_inner()
        .container_id;
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", ctd.log()));
    let code = cri::exit_code(&mut client, &id).await;
    let log = std::fs::read_to_string(logs.join("main.log")).unwrap_or_default();
    client
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", ctd.log()));
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", ctd.log()));
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", ctd.log()));
    (code, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn cri_runs_pods_with_the_capbroker_runtime_handler() {
    use containerd_shim_capbroker::local::{CRI_NAMESPACE, PAUSE_IMAGE};

    let ctd = start();
    let mut pause = Image::new(PAUSE_IMAGE);
    pause
        .add_executable("/pause", pause_program(ctd.scratch()))
        .unwrap();
    pause.entrypoint = vec!["/pause".into()];
    ctd.import_into(CRI_NAMESPACE, &pause).unwrap();
    ctd.import_into(
        CRI_NAMESPACE,
        &granted_image("docker.io/capbroker/granted:1"),
    )
    .unwrap();

    let (code, log) = run_pod(
        &ctd,
        "probe",
        &[
            "/std-probe.wasm",
            "read",
            "/data/granted.txt",
            "read",
            "/secret.txt",
            "env",
            "GREETING",
        ],
    )
    .await;
    assert_eq!(code, 0, "{log}\n{}", ctd.log());
    // CRI's log format: time, stream, tag, then the line.
    assert!(
        log.contains(" stdout F ok read") && log.contains("granted words"),
        "{log}"
    );
    assert!(!log.contains("secret words"), "{log}");
    assert!(log.contains("from the pod spec"), "{log}");

    // A bad container ends with its reason in its log…
    let (code, log) = run_pod(&ctd, "missing", &["/nothing-here.wasm"]).await;
    assert_eq!(code, 2, "{log}");
    assert!(
        log.contains(" stderr F capbroker: error:") && log.contains("/nothing-here.wasm"),
        "{log}"
    );
    // …and the next pod runs as usual.
    let (code, log) = run_pod(&ctd, "again", &["/std-probe.wasm", "exit", "0"]).await;
    assert_eq!(code, 0, "{log}");
}

#[test]
fn an_app_runs_with_its_manifest_and_the_container_environment_aside() {
    let ctd = start();
    let mut image = Image::new("docker.io/capbroker/worker:1");
    image
        .add("/worker.wasm", guest_component("worker").unwrap())
        .unwrap();
    image
        .add(
            "/capbroker.toml",
            b"[dir.cfg]\npath = \"/conf\"\nrights = \"ro\"\n\n\
              [dir.data]\npath = \"/data\"\nrights = \"rw\"\n"
                .to_vec(),
        )
        .unwrap();
    image
        .add("/conf/worker.conf", b"folder = reports\n".to_vec())
        .unwrap();
    image
        .add("/data/reports/fox.txt", b"the quick brown fox\n".to_vec())
        .unwrap();
    image.entrypoint = vec!["/worker.wasm".into()];
    ctd.import(&image).unwrap();

    // The container always has an environment (PATH at least); an app has
    // none to give it, and runs all the same.
    let out = ctd.run(
        "docker.io/capbroker/worker:1",
        "worker",
        &["--env", "X=1"],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("fox.txt: 1 lines, 4 words"), "{stdout}");
    assert!(stdout.contains("wrote summary.txt"), "{stdout}");
    // The image's /etc/passwd is as far out of reach as the node's.
    assert!(
        stdout.contains("refused: read /etc/passwd: escape"),
        "{stdout}"
    );
}

/// An image whose entrypoint is a `wasi:http/proxy` component is served,
/// a fresh instance per request, with the routes of its manifest: here the
/// upload route's create-only folder, and nothing for any other request.
#[test]
fn a_proxy_component_image_is_served_with_its_routes() {
    use std::io::{Read, Write};
    let ctd = start();
    let mut image = Image::new("docker.io/capbroker/http:1");
    image
        .add("/http_probe.wasm", guest_component("http-probe").unwrap())
        .unwrap();
    image
        .add(
            "/capbroker.toml",
            b"[[route]]\nroute = \"/upload/...\"\nmethods = [\"PUT\"]\n\
              [route.dir.\"/uploads\"]\npath = \"/uploads\"\nrights = \"create\"\n\
              [[route]]\nroute = \"/...\"\n"
                .to_vec(),
        )
        .unwrap();
    image.add("/uploads/.keep", Vec::new()).unwrap();
    image.add("/secret.txt", b"secret words".to_vec()).unwrap();
    image.entrypoint = vec!["/http_probe.wasm".into()];
    ctd.import(&image).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("CAPBROKER_ADDR=127.0.0.1:{port}");
    // runwasi keeps a container's state by its id beyond its containerd.
    let id = format!("http-{}", std::process::id());
    let mut server = ctd
        .ctr_command(&[
            "run",
            "--rm",
            "--net-host",
            "--runtime",
            RUNTIME,
            "--env",
            &addr,
            "docker.io/capbroker/http:1",
            &id,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = |method: &str, path: &str, body: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || server.try_wait().unwrap().is_some() {
            let _ = ctd
                .ctr_command(&["task", "kill", "-s", "SIGKILL", &id])
                .output();
            let _ = server.kill();
            let out = server.wait_with_output().unwrap();
            panic!(
                "the container did not serve: {}\n{}",
                text(&out.stderr),
                ctd.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let hello = request("GET", "/hello", "");
    let upload = request("PUT", "/upload/a.txt", "uploaded");
    let secret = request("GET", "/read?path=/secret.txt", "");
    let preopens = request("GET", "/preopens", "");
    let _ = ctd
        .ctr_command(&["task", "kill", "-s", "SIGKILL", &id])
        .output();
    let _ = server.wait();
    assert!(
        hello.starts_with("HTTP/1.1 200") && hello.ends_with("hello"),
        "{hello}"
    );
    assert!(upload.starts_with("HTTP/1.1 201"), "{upload}");
    assert!(secret.starts_with("HTTP/1.1 500"), "{secret}");
    assert!(!secret.contains("secret words"), "{secret}");
    assert!(
        preopens.starts_with("HTTP/1.1 200") && preopens.ends_with("\r\n\r\n"),
        "{preopens}"
    );
}

/// `capbroker-image` builds the component into the image compiled, so no
/// container start compiles it; an artifact another capbroker made is
/// refused in the container's log with what to do.
#[test]
fn capbroker_image_builds_in_the_compiled_component() {
    let ctd = start();
    let dir = ctd.scratch().join("build");
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("std-probe.wasm");
    std::fs::write(&wasm, std_probe()).unwrap();
    let manifest = dir.join("capbroker.toml");
    std::fs::write(
        &manifest,
        "[dir.\"/data\"]\npath = \"/data\"\nrights = \"ro\"\n",
    )
    .unwrap();
    let data = dir.join("granted.txt");
    std::fs::write(&data, "granted words").unwrap();
    let tarball = dir.join("image.tar");
    let name = "docker.io/capbroker/compiled:1";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker-image"))
        .arg(name)
        .arg(&tarball)
        .arg(&wasm)
        .arg("-m")
        .arg(&manifest)
        .arg("--file")
        .arg(format!("{}=/data/granted.txt", data.display()))
        .args(["--", "read", "/data/granted.txt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ctd
        .ctr_in(
            "capbroker-test",
            &["image", "import", &tarball.to_string_lossy()],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ctd.run(name, "compiled", &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\ncontainerd: {}",
        text(&out.stderr),
        ctd.log()
    );
    assert!(text(&out.stdout).contains("granted words"));
    // The entrypoint is the artifact, not the `.wasm` (not in the image).
    let out = ctd.run(name, "wasm", &[], &["/std-probe.wasm"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = ctd.run(name, "cwasm", &[], &["/std-probe.cwasm", "stderr", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // An artifact another wasmtime made (its engine section says 47).
    let sealed = capbroker::run::compiled::compile(&capbroker::policy::Config {
        component: Some(wasm.clone()),
        ..Default::default()
    })
    .unwrap();
    let mut artifact = capbroker::run::compiled::unseal("", &sealed)
        .unwrap()
        .to_vec();
    let at = artifact
        .windows(4)
        .position(|w| w == b"\x00\x0248")
        .expect("the engine section's version");
    artifact[at + 2..at + 4].copy_from_slice(b"47");
    let mut old = Image::new("docker.io/capbroker/old-artifact:1");
    old.add("/app.cwasm", capbroker::run::compiled::seal(artifact))
        .unwrap();
    old.entrypoint = vec!["/app.cwasm".into()];
    ctd.import(&old).unwrap();
    let out = ctd.run("docker.io/capbroker/old-artifact:1", "old", &[], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("compiled for another capbroker or engine configuration")
            && stderr.contains("incompatible version '47'"),
        "{stderr}"
    );
}
