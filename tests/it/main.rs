//! Integration tests: the binary run on real temporary trees.

mod differential;
mod filesystems;
mod options;
mod output;
mod regression;
mod relay;
mod remote;
mod restore;
mod safety;
mod servers;
mod snapshots;
mod stores;
mod sync;
mod util;
