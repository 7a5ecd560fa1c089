//! lazycas: a lazy, verified, content-addressed FUSE filesystem for container images and
//! additional-files archives.
//!
//! Data flows one way: kernel request → [`fs`] (dispatch to a namespace, errno) → namespace
//! ([`catalog`] names, `sha256/`, archive trees) → [`content`] (make it local: single flight)
//! → [`store`] (bytes and metadata on disk) / [`fetch`] (bytes from the network) → origin.
//! [`source`] says where content comes from, [`archive`] reads tar and tar.gz, [`config`]
//! reads the TOML file, [`daemon`] runs a mount, [`cli`] is the command line. [`digest`] and
//! [`range`] are the value types everyone shares; [`heap`] keeps the daemon's memory at its
//! working set. [`oci`] is the image format (references, manifests, registry auth, layer
//! flattening); [`chunk`] the chunk index of range-lazy images.
#![warn(missing_docs)]

pub mod archive;
pub mod catalog;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod content;
pub mod daemon;
pub mod digest;
pub mod fetch;
pub mod fs;
pub mod heap;
pub mod oci;
pub mod publish;
pub mod range;
pub mod sets;
pub mod source;
pub mod store;
