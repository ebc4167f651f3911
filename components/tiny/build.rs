// A child this small needs little stack. Keeping the stack (and with it the
// data and the first heap pages, which follow it) inside the first pages of
// linear memory lets the host reuse those pages without faulting them in
// anew for every instance.
fn main() {
    println!("cargo:rustc-link-arg=-zstack-size=16384");
}
