//! lazycas: a lazy, verified, content-addressed FUSE filesystem for container images and
//! additional-files archives.
//!
//! Data flows one way — kernel request → [`fs`] → [`catalog`] / [`archives`] / [`archive`] → [`store`] →
//! [`fetch`] → origin. [`oci`] is the image format (references, manifests, registry auth, layer
//! flattening). [`config`] reads the TOML file, [`daemon`] runs a mount, [`cli`] is the
//! command line. [`digest`] and [`range`] are the value types everyone shares.

pub mod archive;
pub mod archives;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod digest;
pub mod fetch;
pub mod fs;
pub mod oci;
pub mod range;
pub mod store;
