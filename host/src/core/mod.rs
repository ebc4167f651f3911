//! The shared core: what every capability kind uses, and which imports none
//! of them.
//!
//! - [`rights`] and [`error`]: what a handle allows, the error every call
//!   returns, and the error of an operator's value that does not parse;
//! - [`lineage`]: revocation cells a handle descends from;
//! - [`pledges`]: the classes of authority an instance has given up;
//! - [`gate`] and [`streams`]: rights shared by a descriptor and the streams
//!   opened from it, which only narrow;
//! - [`limits`]: what one process may consume;
//! - [`audit`] and [`learn`]: the record of what happened, and of what was
//!   used;
//! - [`kind`]: the life cycle every capability kind goes through, and
//!   [`view`]: the per-store state every kind's host code works through.

pub mod audit;
pub mod error;
pub mod gate;
pub mod kind;
pub mod learn;
pub mod limits;
pub mod lineage;
pub mod pledges;
pub mod rights;
pub mod streams;
pub mod view;
pub mod wit;

pub use error::{Describe, Error, HostError, HostResult, Invalid};
pub use rights::{Rights, RightsList};
pub use view::{Core, View};
