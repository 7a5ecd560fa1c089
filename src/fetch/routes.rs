//! Proxy groups and their health: which HTTP client to use for a URL (CVMFS-style failover).
//!
//! Groups are tried in order. Within a group the member is chosen by a hash of the URL among
//! the healthy members, so every node asks the same proxy for the same blob (one cache fill per
//! blob instead of one per proxy). A member that failed is skipped until `proxy_reset` passes.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use parking_lot::Mutex;
use url::Url;

use super::{FetchError, FetchSettings};
use crate::config::Route;

/// The clients for every route and the failure marks of the proxies.
#[derive(Debug)]
pub struct Routes {
    groups: Vec<Vec<Route>>,
    clients: HashMap<Route, reqwest::Client>,
    failed_until: Mutex<HashMap<Route, Instant>>,
    reset: std::time::Duration,
}

/// `DIRECT` or the proxy URL, for logs and counters.
pub fn route_name(r: &Route) -> String {
    match r {
        Route::Direct => "DIRECT".into(),
        Route::Proxy(u) => u.as_str().trim_end_matches('/').to_string(),
    }
}

impl Routes {
    /// One client per distinct route.
    pub fn new(settings: &FetchSettings) -> Result<Routes, FetchError> {
        let mut clients = HashMap::new();
        for route in settings.proxies.iter().flatten() {
            if clients.contains_key(route) {
                continue;
            }
            let mut b = reqwest::Client::builder()
                .connect_timeout(settings.timeout)
                .pool_idle_timeout(std::time::Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("lazycas/", env!("CARGO_PKG_VERSION")));
            b =
                match route {
                    Route::Direct => b.no_proxy(),
                    Route::Proxy(p) => b.proxy(reqwest::Proxy::all(p.as_str()).map_err(|e| {
                        FetchError::Network {
                            label: "proxies".into(),
                            url: p.to_string(),
                            message: e.to_string(),
                        }
                    })?),
                };
            let client = b.build().map_err(|e| FetchError::Network {
                label: "http client".into(),
                url: String::new(),
                message: e.to_string(),
            })?;
            clients.insert(route.clone(), client);
        }
        Ok(Routes {
            groups: settings.proxies.clone(),
            clients,
            failed_until: Mutex::new(HashMap::new()),
            reset: settings.proxy_reset,
        })
    }

    /// Number of proxy groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The member of group `group` to use for `url`, skipping failed proxies and those in
    /// `tried` (`None` when no member is left).
    pub fn pick(
        &self,
        group: usize,
        url: &Url,
        tried: &[Route],
    ) -> Option<(Route, reqwest::Client)> {
        let members = self.groups.get(group)?;
        let now = Instant::now();
        let failed = self.failed_until.lock();
        let healthy: Vec<&Route> = members
            .iter()
            .filter(|r| failed.get(*r).is_none_or(|until| *until <= now))
            .filter(|r| !tried.contains(r))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let mut h = DefaultHasher::new();
        url.as_str().hash(&mut h);
        let route = healthy[(h.finish() % healthy.len() as u64) as usize].clone();
        let client = self.clients.get(&route)?.clone();
        Some((route, client))
    }

    /// The routes to try for `url`, in order (see [`Search`]).
    pub fn search<'a>(&'a self, url: &'a Url) -> Search<'a> {
        Search {
            routes: self,
            url,
            group: 0,
            tried: Vec::new(),
            last: None,
        }
    }

    /// Skips `route` for the reset interval.
    pub fn mark_failed(&self, route: &Route) {
        tracing::warn!(proxy = %route_name(route), "proxy failed; skipping it for {}s", self.reset.as_secs());
        self.failed_until
            .lock()
            .insert(route.clone(), Instant::now() + self.reset);
    }
}

/// A walk through the groups for one URL: [`Search::next`] gives the route to try, and
/// [`Search::failed`] says it failed. A route whose proxy could not be reached is marked failed
/// and another member of its group comes next; any other failure moves on to the next group.
pub struct Search<'a> {
    routes: &'a Routes,
    url: &'a Url,
    group: usize,
    tried: Vec<Route>,
    last: Option<FetchError>,
}

impl Search<'_> {
    /// The next route to try, with its client; `None` once every group is done.
    pub fn next(&mut self) -> Option<(Route, reqwest::Client)> {
        while self.group < self.routes.group_count() {
            if let Some((route, client)) = self.routes.pick(self.group, self.url, &self.tried) {
                self.tried.push(route.clone());
                return Some((route, client));
            }
            self.next_group();
        }
        None
    }

    /// `route` (the last one [`Search::next`] gave) failed with `e`.
    pub fn failed(&mut self, route: &Route, e: FetchError) {
        if e.is_proxy_down(route) {
            self.routes.mark_failed(route);
        } else {
            self.next_group();
        }
        self.last = Some(e);
    }

    /// The last failure, when any route was tried.
    pub fn last_failure(self) -> Option<FetchError> {
        self.last
    }

    fn next_group(&mut self) {
        self.group += 1;
        self.tried.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(proxies: &[&str]) -> FetchSettings {
        FetchSettings {
            timeout: Duration::from_secs(1),
            chunk_size: 1 << 20,
            parallel: 2,
            proxies: crate::config::parse_proxies(
                &proxies.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
            retries: 1,
            proxy_reset: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_search_fails_over_within_a_group_only_when_the_proxy_is_down() {
        let r = Routes::new(&settings(&[
            "http://127.0.0.1:1|http://127.0.0.1:2",
            "DIRECT",
        ]))
        .unwrap();
        let url = Url::parse("http://127.0.0.1/x").unwrap();
        let unreachable = || FetchError::Unreachable {
            label: "t".into(),
            url: url.to_string(),
            message: "refused".into(),
        };
        let status = FetchError::Status {
            label: "t".into(),
            url: url.to_string(),
            status: 404,
        };
        // Both proxies down: each is tried once, then DIRECT.
        let mut search = r.search(&url);
        let (a, _) = search.next().unwrap();
        search.failed(&a, unreachable());
        let (b, _) = search.next().unwrap();
        assert!(matches!(b, Route::Proxy(_)) && a != b);
        search.failed(&b, unreachable());
        let (c, _) = search.next().unwrap();
        assert_eq!(c, Route::Direct);
        search.failed(&c, unreachable());
        assert!(search.next().is_none());
        assert!(matches!(
            search.last_failure(),
            Some(FetchError::Unreachable { .. })
        ));
        // Another failure than a dead proxy moves on to the next group at once.
        let fresh = Routes::new(&settings(&[
            "http://127.0.0.1:1|http://127.0.0.1:2",
            "DIRECT",
        ]))
        .unwrap();
        let mut search = fresh.search(&url);
        let (a, _) = search.next().unwrap();
        search.failed(&a, status);
        assert_eq!(search.next().unwrap().0, Route::Direct);
    }

    #[test]
    fn failed_member_is_skipped_then_group_empties() {
        let r = Routes::new(&settings(&[
            "http://127.0.0.1:1|http://127.0.0.1:2",
            "DIRECT",
        ]))
        .unwrap();
        let url = Url::parse("http://127.0.0.1/x").unwrap();
        let (first, _) = r.pick(0, &url, &[]).unwrap();
        assert_eq!(
            r.pick(0, &url, &[]).unwrap().0,
            first,
            "same URL, same proxy"
        );
        let (other, _) = r.pick(0, &url, std::slice::from_ref(&first)).unwrap();
        assert_ne!(first, other, "an untried member is offered");
        r.mark_failed(&first);
        let (second, _) = r.pick(0, &url, &[]).unwrap();
        assert_ne!(first, second);
        r.mark_failed(&second);
        assert!(r.pick(0, &url, &[]).is_none());
        assert_eq!(r.pick(1, &url, &[]).unwrap().0, Route::Direct);
    }
}
