//! Integration tests: the binary run on real temporary trees.

mod differential;
mod sync;
mod util;
