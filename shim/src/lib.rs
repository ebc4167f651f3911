//! The containerd shim's library side: OCI images of components
//! ([`image`], for `capbroker-image`), and a containerd of one's own
//! ([`local`], for the shim's tests and benchmark).

pub mod image;
pub mod local;
