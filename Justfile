# capbroker's tasks. `just demo` runs the example, `just test` the test suite.

set shell := ["bash", "-euo", "pipefail", "-c"]

demo_dir := "target/demo"
worker := "target/guests/wasm32-wasip2/release/worker.wasm"
fanout := "target/guests/wasm32-wasip2/release/fanout.wasm"

# List the recipes.
default:
    @just --list

# Build every guest component in components/ for wasm32-wasip2.
guests:
    cd components && cargo build --release

# Build the capbroker binary.
build:
    cargo build -p capbroker

# The examples, then the per-request sandboxes of `capbroker serve`.
# Run the worker and fanout examples, then the serve demo.
demo: examples serve-demo

# `capbroker serve` with the seed's routes (components/examples/serve):
# requests through curl, each in a fresh instance; the server then stops.
# Serve the seed's routes and send them requests with curl.
serve-demo: guests build
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v curl >/dev/null; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq curl
    fi
    rm -rf {{demo_dir}}/uploads && mkdir -p {{demo_dir}}/uploads
    manifest=components/examples/serve/capbroker.toml
    echo "\$ capbroker serve -m $manifest"
    target/debug/capbroker serve -m "$manifest" &
    server=$!
    trap 'kill $server 2>/dev/null' EXIT
    for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
    show() { echo; echo "\$ curl $*"; curl -s -w '  [%{http_code}]\n' "$@" || echo "  [connection cut]"; }
    show http://127.0.0.1:8080/hello
    show -X PUT --data-binary 'an upload' http://127.0.0.1:8080/upload/note.txt
    echo "  the folder holds: $(ls {{demo_dir}}/uploads)"
    show -X PUT --data-binary 'again' http://127.0.0.1:8080/upload/note.txt
    show -X PUT --data-binary 'x' --path-as-is http://127.0.0.1:8080/upload/../escape.txt
    show 'http://127.0.0.1:8080/read?path=/uploads/note.txt'
    show 'http://127.0.0.1:8080/read?path=/etc/passwd'
    show http://127.0.0.1:8080/preopens
    show http://127.0.0.1:8080/envall
    show 'http://127.0.0.1:8080/fetch?url=http://example.com/'
    show http://127.0.0.1:8080/spin
    show http://127.0.0.1:8080/hog
    show 'http://127.0.0.1:8080/sleep?ms=3000'
    show http://127.0.0.1:8080/hello

# The web server example: a capbroker app that spawns a child per request.
# Start the web server example app on 127.0.0.1:8080.
web-server: guests build
    @echo 'Try, in another terminal:'
    @echo '  curl -i http://127.0.0.1:8080/                 # a handler child answers'
    @echo '  curl -i http://127.0.0.1:8080/sandbox          # what a handler can reach: nothing'
    @echo '  curl -i --data-binary @README.md http://127.0.0.1:8080/upload/readme.txt'
    @echo '  curl -i --path-as-is -X POST http://127.0.0.1:8080/upload/../x   # 403: outside uploads'
    @echo '  curl -i http://127.0.0.1:8080/spin             # 503: out of CPU'
    @echo '  curl -i http://127.0.0.1:8080/hog              # 503: out of memory'
    @echo '  curl -i http://127.0.0.1:8080/sleep            # 503: out of time'
    @echo 'Uploads land in components/examples/web-server/uploads. Ctrl-C stops the server.'
    @echo '$ capbroker run -m components/examples/web-server/capbroker.toml'
    target/debug/capbroker run -m components/examples/web-server/capbroker.toml

# Run the worker and fanout examples on a fresh scratch folder.
examples: guests build
    rm -rf {{demo_dir}}/conf {{demo_dir}}/data
    mkdir -p {{demo_dir}}/conf {{demo_dir}}/data/reports {{demo_dir}}/data/private
    printf 'folder = reports\n' > {{demo_dir}}/conf/worker.conf
    printf 'the quick brown fox\njumps over the lazy dog\n' > {{demo_dir}}/data/reports/fox.txt
    printf 'capabilities, not ambient authority\n' > {{demo_dir}}/data/reports/motto.txt
    printf 'the worker never reads this\n' > {{demo_dir}}/data/private/diary.txt
    @echo '$ capbroker inspect {{worker}}'
    @target/debug/capbroker inspect {{worker}}
    @echo '$ capbroker run --dir cfg={{demo_dir}}/conf:ro --dir data={{demo_dir}}/data {{worker}}'
    @target/debug/capbroker run --dir cfg={{demo_dir}}/conf:ro --dir data={{demo_dir}}/data {{worker}}
    @echo '$ cat {{demo_dir}}/data/reports/summary.txt'
    @cat {{demo_dir}}/data/reports/summary.txt
    @echo
    @echo '# One child process per file; spin.txt makes its child loop forever.'
    printf 'spin\n' > {{demo_dir}}/data/reports/spin.txt
    @echo '$ capbroker run --dir data={{demo_dir}}/data/reports:ro --spawn workers=max-children=8 {{fanout}}'
    @target/debug/capbroker run --dir data={{demo_dir}}/data/reports:ro --spawn workers=max-children=8 {{fanout}}

# Compose the read-only adapter in front of APP into OUT (wac and
# wasm-tools are installed into target/tools if missing).
sandbox APP OUT: guests
    test -x target/tools/bin/wac || cargo install --locked wac-cli@0.12.0 --no-default-features --features wit --root target/tools
    test -x target/tools/bin/wasm-tools || cargo install --locked wasm-tools@1.263.0 --no-default-features --features component,validate,print,parse --root target/tools
    PATH="$PWD/target/tools/bin:$PATH" components/adapters/sandbox {{APP}} target/guests/wasm32-wasip2/release/read_only_adapter.wasm {{OUT}}

# A steady load below the server's capacity with abusive requests mixed
# in; it fails on a wrong answer, or memory or fds growing past their
# bounds (docs/soak.md). The curve goes to target/soak/curve.csv.
# Soak the web server example for DURATION: seconds, or 10m, 1h.
soak DURATION="120": guests
    CAPBROKER_SOAK_SECS={{DURATION}} cargo test -p capbroker --test soak -- --nocapture

# Run the whole test suite (the tests build the guests themselves, too).
test: guests system-packages
    cargo test --workspace

# libseccomp, pkg-config and protoc build the containerd shim; containerd
# and runc run its tests. From Debian's packages, as root or with sudo:
# Install the shim's build and test packages from Debian if missing.
system-packages:
    #!/usr/bin/env bash
    set -euo pipefail
    if pkg-config --exists libseccomp 2>/dev/null && command -v protoc >/dev/null \
        && command -v containerd >/dev/null && command -v runc >/dev/null; then
        exit 0
    fi
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        libseccomp-dev pkg-config protobuf-compiler containerd runc

# `wasmtime serve` is the anchor of the suite's `serve` metric.
# Install wasmtime-cli 48.0.8 into target/tools if missing.
wasmtime-cli:
    test -x target/tools/bin/wasmtime || cargo install --locked wasmtime-cli@48.0.8 --root target/tools

# Every metric against an anchor measured in the same run, printed as a
# table and one JSON line each (docs/performance.md); then containers
# through the shim against runc.
# Run the benchmark suite, then the container benchmark.
bench: guests system-packages wasmtime-cli
    cargo bench --bench suite
    cargo bench -p containerd-shim-capbroker --bench containers

# Fewer, shorter rounds and no containers: under three minutes on 2
# cores, builds excluded.
# Run the benchmark suite quickly.
bench-quick: guests wasmtime-cli
    cargo bench --bench suite -- --quick

# On the nightly toolchain with cargo-fuzz (both installed if missing).
# New inputs go into fuzz/corpus/confinement, a failing one into
# fuzz/artifacts/confinement; docs/fuzzing.md says how to read them.
# Run the file-system fuzzer for SECS seconds (0: until stopped).
fuzz SECS="0": guests
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cargo +nightly fuzz run confinement --features libfuzzer --sanitizer none \
        -- -max_len=98 -max_total_time={{SECS}} -print_final_stats=1

# Shrink fuzz/corpus/confinement to the inputs that add coverage.
fuzz-cmin: guests
    cargo +nightly fuzz cmin confinement --features libfuzzer --sanitizer none -- -max_len=98

# Format and lint everything.
check:
    cargo fmt --all --check
    cd components && cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
