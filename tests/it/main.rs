//! Integration tests: the binary run on real temporary trees.

mod differential;
mod safety;
mod sync;
mod util;
