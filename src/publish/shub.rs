//! Singularity Registry Server references (`shub://host/collection/container:tag`), asked
//! the way its API serves them: `GET /api/container/<collection>/<container>:<tag>` answers
//! `{"image": "<download url>", "version": "<hash>", "collection": ..., "tag": ..., ...}`.
//! A `sha256.<hex>` version pins the digest; an md5 version is a weak pin.

use serde::Deserialize;
use url::Url;

use super::{
    base_url, bearer, plain_component, publisher_digest, split_tag, Pins, PublishError, Resolved,
    MAX_ANSWER,
};
use crate::config::Publishers;
use crate::digest::Digest;
use crate::fetch::{DocumentRequest, Fetcher};
use crate::source::{Location, WeakPin};

/// Parses what follows `shub://` in `full`.
pub(super) fn parse(full: &str, rest: &str) -> Result<(Location, Pins), String> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [host, collection, last] = parts[..] else {
        return Err(format!(
            "{full:?}: expected shub://host/collection/container:tag"
        ));
    };
    let (container, tag) = split_tag(last);
    if host.is_empty()
        || ![collection, container, tag]
            .iter()
            .all(|c| plain_component(c))
    {
        return Err(format!("{full:?}: unusable host, name or tag"));
    }
    let location = Location::Shub {
        host: host.to_string(),
        collection: collection.to_string(),
        container: container.to_string(),
        tag: tag.to_string(),
    };
    Ok((location, Pins::default()))
}

/// One shub container to look up.
pub(super) struct Target<'a> {
    pub reference: &'a str,
    pub host: &'a str,
    pub collection: &'a str,
    pub container: &'a str,
    pub tag: &'a str,
}

#[derive(Deserialize)]
struct ContainerAnswer {
    image: Option<String>,
    version: Option<String>,
}

/// The image URL and its pin (sha256, or a weak md5) from an `/api/container` answer, or why
/// the answer is not usable.
pub fn container_answer(body: &[u8]) -> Result<(Url, Option<Digest>, Option<WeakPin>), String> {
    let answer: ContainerAnswer = serde_json::from_slice(body)
        .map_err(|e| format!("answer is not the registry's JSON: {e}"))?;
    // The registry answers `{}` for a container it does not have.
    let image = answer
        .image
        .ok_or("no such container (the answer has no image)")?;
    let image = Url::parse(&image)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| format!("image {image:?} is not an http(s) URL"))?;
    let version = answer.version.ok_or("the answer has no version")?;
    let (sha256, weak) = publisher_digest(&version)
        .ok_or_else(|| format!("version {version:?} is not a sha256 or md5"))?;
    Ok((image, sha256, weak))
}

/// Looks the container up and says where its image is.
pub(super) async fn resolve(
    fetcher: &Fetcher,
    publishers: &Publishers,
    t: &Target<'_>,
) -> Result<Resolved, PublishError> {
    let answer_error = |message: String| PublishError::Answer {
        reference: t.reference.to_string(),
        message,
    };
    let base = base_url(publishers, t.host, t.reference)?;
    let url = base
        .join(&format!(
            "api/container/{}/{}:{}",
            t.collection, t.container, t.tag
        ))
        .map_err(|e| answer_error(format!("api url: {e}")))?;
    let headers = bearer(publishers, t.host);
    let label = format!("shub {}", t.reference);
    let doc = fetcher
        .get_document(&DocumentRequest {
            label: &label,
            url: &url,
            accept: Some("application/json"),
            headers: &headers,
            max_bytes: MAX_ANSWER,
        })
        .await?;
    if !doc.is_success() {
        return Err(answer_error(format!("{url} answered HTTP {}", doc.status)));
    }
    let (image, sha256, weak) = container_answer(&doc.body).map_err(answer_error)?;
    Ok(Resolved {
        urls: vec![image],
        headers: reqwest::header::HeaderMap::new(),
        sha256,
        weak,
        size: None,
    })
}
