//! Prints its arguments separated by spaces, as `echo` does. Plain Rust std
//! for wasm32-wasip2: no capbroker import, so `wasmtime run` runs it too.

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    println!("{}", words.join(" "));
}
