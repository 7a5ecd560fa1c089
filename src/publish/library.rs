//! Sylabs-style library references (`library://[host/]entity/collection/container[:tag]`),
//! asked the way the public client (scs-library-client) asks: `GET /v1/images/<ref>?arch=`
//! answers `{"data": {"hash": "sha256.<hex>", "size": N, ...}}`; the bytes come from
//! `GET /v1/imagefile/<ref>?arch=`, which answers with the file or a redirect (302/303) to
//! the blob host.

use serde::Deserialize;

use super::{
    base_url, bearer, plain_component, publisher_digest, split_tag, Pins, PublishError, Resolved,
    MAX_ANSWER,
};
use crate::config::Publishers;
use crate::digest::Digest;
use crate::fetch::{DocumentRequest, Fetcher};
use crate::source::Location;

/// Parses what follows `library://` in `full`.
pub(super) fn parse(full: &str, rest: &str) -> Result<(Location, Pins), String> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (host, names) = match parts.len() {
        3 => (None, &parts[..]),
        4 => (Some(parts[0].to_string()), &parts[1..]),
        _ => {
            return Err(format!(
                "{full:?}: expected library://[host/]entity/collection/container[:tag]"
            ))
        }
    };
    let (container, tag) = split_tag(names[2]);
    if host.as_deref().is_some_and(str::is_empty)
        || ![names[0], names[1], container]
            .iter()
            .all(|c| plain_component(c))
        || !plain_component(tag)
    {
        return Err(format!("{full:?}: unusable name or tag"));
    }
    let sha256 = match tag.strip_prefix("sha256.") {
        Some(hex) => Some(Digest::parse(hex).map_err(|e| format!("{full:?}: {e}"))?),
        None => None,
    };
    let location = Location::Library {
        host,
        path: format!("{}/{}/{container}", names[0], names[1]),
        tag: tag.to_string(),
    };
    Ok((location, Pins { sha256, weak: None }))
}

#[derive(Deserialize)]
struct ImageAnswer {
    data: Option<Image>,
}

#[derive(Deserialize)]
struct Image {
    hash: Option<String>,
    size: Option<u64>,
}

/// The image's pinned sha256 and size from a `/v1/images` answer, or why the answer is not
/// usable.
pub fn image_answer(body: &[u8]) -> Result<(Digest, Option<u64>), String> {
    let answer: ImageAnswer = serde_json::from_slice(body)
        .map_err(|e| format!("image answer is not the library's JSON: {e}"))?;
    let image = answer.data.ok_or("image answer has no data")?;
    let hash = image.hash.ok_or("image answer has no hash")?;
    match publisher_digest(&hash) {
        Some((Some(d), None)) => Ok((d, image.size)),
        _ => Err(format!("image hash {hash:?} is not sha256.<hex>")),
    }
}

/// Looks the image up and says where its file is.
pub(super) async fn resolve(
    fetcher: &Fetcher,
    publishers: &Publishers,
    location: &Location,
    host: Option<&str>,
    path: &str,
    tag: &str,
) -> Result<Resolved, PublishError> {
    let reference = location.reference().unwrap_or_default();
    let answer_error = |message: String| PublishError::Answer {
        reference: reference.clone(),
        message,
    };
    let host = host
        .or(publishers.library_host.as_deref())
        .ok_or_else(|| PublishError::Config {
            reference: reference.clone(),
            message: "no library host: name one in the reference or set library_host".into(),
        })?;
    let base = base_url(publishers, host, &reference)?;
    let arch = publishers.library_arch.as_str();
    let endpoint = |what: &str| {
        let mut url = base
            .join(&format!("v1/{what}/{path}:{tag}"))
            .map_err(|e| answer_error(format!("{what} url: {e}")))?;
        url.query_pairs_mut().append_pair("arch", arch);
        Ok::<_, PublishError>(url)
    };
    let images = endpoint("images")?;
    let headers = bearer(publishers, host);
    let label = format!("library {reference}");
    let doc = fetcher
        .get_document(&DocumentRequest {
            label: &label,
            url: &images,
            accept: Some("application/json"),
            headers: &headers,
            max_bytes: MAX_ANSWER,
        })
        .await?;
    if !doc.is_success() {
        return Err(answer_error(format!(
            "{images} answered HTTP {}",
            doc.status
        )));
    }
    let (sha256, size) = image_answer(&doc.body).map_err(answer_error)?;
    Ok(Resolved {
        urls: vec![endpoint("imagefile")?],
        headers,
        sha256: Some(sha256),
        weak: None,
        size,
    })
}
