// Every request instantiates this component twice. A small stack keeps the
// pages a fresh instance touches (stack, data, first heap pages) inside the
// part of each pooled memory slot the broker keeps resident, so a spawn
// does not fault them in anew.
fn main() {
    println!("cargo:rustc-link-arg=-zstack-size=32768");
}
