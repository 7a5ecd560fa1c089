//! `lazycas pull SET`: every member of an asset set fetched now and pinned, one after the other,
//! each as `pull` fetches it alone (a file or archive by its source, a `docker://` image with
//! all its layers, after its image ID is checked); inline members are already here.

use std::sync::Arc;

use super::commands::pull_source;
use super::pull_image::pull_image_with_id;
use super::Failure;
use crate::config::Config;
use crate::sets::{MemberContent, SetConfig};
use crate::store::Store;

/// Pulls every member of `set` into `store`; the first failure stops it, naming the member.
pub fn pull_set(config: &Config, store: &Arc<Store>, set: &SetConfig) -> Result<(), Failure> {
    for member in &set.members {
        let pulled = match &member.content {
            MemberContent::Asset(a) => pull_source(config, store, &a.source(), a.kind),
            MemberContent::Image(i) => {
                pull_image_with_id(config, &i.reference.to_string(), i.image_id)
            }
            MemberContent::Inline(_) => Ok(()),
        };
        pulled.map_err(|e| naming(&format!("{}/{}", set.name, member.path), e))?;
    }
    println!("{} pulled ({} members)", set.name, set.members.len());
    Ok(())
}

/// `failure`, saying which member it is about.
fn naming(member: &str, failure: Failure) -> Failure {
    match failure {
        Failure::Usage(m) => Failure::Usage(format!("{member}: {m}")),
        Failure::Runtime(e) => Failure::Runtime(e.context(member.to_string())),
    }
}
