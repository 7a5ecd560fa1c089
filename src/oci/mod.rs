//! OCI and Docker images, the format side: what a reference names, what a registry's manifest
//! says, how to authenticate to it, and how layers flatten into one root filesystem.
//!
//! Nothing here does I/O; registry requests go through [`crate::fetch`] and layer bytes through
//! [`crate::archive`]. The API:
//! - [`reference::ImageReference`]: `docker://…`, `oras://…` and mount paths, parsed and
//!   normalised with Docker Hub's rules;
//! - [`manifest::parse_manifest`]: a fetched manifest document, verified, with platform choice
//!   and the layer list;
//! - [`auth`]: `WWW-Authenticate` challenges, token requests and responses, a token cache;
//! - [`whiteout::merge_layers`]: the merged tree of an image's layers, as the image spec defines
//!   it (`.wh.` whiteouts, opaque directories).

pub mod auth;
pub mod manifest;
pub mod reference;
pub mod whiteout;
