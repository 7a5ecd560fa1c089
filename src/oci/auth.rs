//! Registry authentication, the pure part: reading `WWW-Authenticate` challenges, building the
//! token request, reading the token response, and caching tokens until shortly before they
//! expire.
//!
//! The flow (distribution's token spec): a request answered 401 carries
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; the client GETs
//! `realm?service=…&scope=…` (with Basic credentials when it has some) and receives
//! `{"token": …, "expires_in": …, "issued_at": …}`; it retries with `Authorization: Bearer …`.
//! [`Challenge::parse_all`] reads the header (RFC 7235: case-insensitive scheme, several
//! challenges, quoted strings with `\` escapes), [`BearerChallenge::token_url`] builds the request,
//! [`TokenResponse::parse`] reads the answer and [`TokenCache`] keeps tokens per (registry,
//! scope). The HTTP requests themselves go through the fetcher, not here.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use parking_lot::Mutex;
use url::Url;

/// Lifetime of a token whose response gives no `expires_in` (the token spec's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A cached token is not handed out in its last seconds, so a request started with it still
/// arrives before it expires.
pub const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Largest token response read (tokens are a few KiB).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;

/// Why an authentication header or token response cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The header is not `scheme [params]` as RFC 7235 has it.
    #[error("malformed WWW-Authenticate header {header:?}: {reason}")]
    MalformedChallenge {
        /// The header value.
        header: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A Bearer challenge without `realm`.
    #[error("Bearer challenge has no realm: {0:?}")]
    NoRealm(String),
    /// The realm is not an http(s) URL.
    #[error("Bearer realm {0:?} is not an http(s) URL")]
    BadRealm(String),
    /// A 401 without any `WWW-Authenticate` challenge.
    #[error("the registry refused access without a WWW-Authenticate challenge")]
    NoChallenge,
    /// None of the challenges is one lazycas can answer.
    #[error("registry asks for {0:?} authentication, which lazycas does not support")]
    UnsupportedScheme(String),
    /// The token endpoint answered something else than the token JSON.
    #[error("malformed token response: {0}")]
    MalformedToken(String),
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Challenge {
    /// `Bearer realm=…`: get a token from the realm.
    Bearer(BearerChallenge),
    /// `Basic realm=…`: send credentials on every request.
    Basic {
        /// The protection space, if named.
        realm: Option<String>,
    },
    /// Any other scheme, with its name.
    Other(String),
}

/// The parameters of a Bearer challenge.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BearerChallenge {
    /// The token endpoint.
    pub realm: Url,
    /// The `service` to ask a token for.
    pub service: Option<String>,
    /// The scope the registry wants (`repository:team/app:pull`); may be absent.
    pub scope: Option<String>,
    /// The `error` parameter (`invalid_token`, `insufficient_scope`) of a retried request.
    pub error: Option<String>,
}

impl Challenge {
    /// Parses every challenge in one header value.
    pub fn parse_all(header: &str) -> Result<Vec<Challenge>, AuthError> {
        let raw = ChallengeLexer::new(header).challenges()?;
        raw.into_iter()
            .map(|(scheme, params)| Challenge::from_parts(header, &scheme, params))
            .collect()
    }

    /// The Bearer challenge among the headers' challenges, else Basic, else an error naming
    /// what was offered.
    pub fn preferred<'a>(
        headers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Challenge, AuthError> {
        let mut all = Vec::new();
        for h in headers {
            all.extend(Challenge::parse_all(h)?);
        }
        if all.is_empty() {
            return Err(AuthError::NoChallenge);
        }
        let pick = |want: fn(&Challenge) -> bool| all.iter().find(|c| want(c)).cloned();
        pick(|c| matches!(c, Challenge::Bearer(_)))
            .or_else(|| pick(|c| matches!(c, Challenge::Basic { .. })))
            .ok_or_else(|| {
                let offered = all
                    .iter()
                    .map(|c| match c {
                        Challenge::Other(s) => s.clone(),
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                AuthError::UnsupportedScheme(offered)
            })
    }

    fn from_parts(
        header: &str,
        scheme: &str,
        mut params: HashMap<String, String>,
    ) -> Result<Challenge, AuthError> {
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(Challenge::Basic {
                realm: params.remove("realm"),
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Challenge::Other(scheme.to_string()));
        }
        let realm = params
            .remove("realm")
            .ok_or_else(|| AuthError::NoRealm(header.to_string()))?;
        let url = Url::parse(&realm).map_err(|_| AuthError::BadRealm(realm.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AuthError::BadRealm(realm));
        }
        Ok(Challenge::Bearer(BearerChallenge {
            realm: url,
            service: params.remove("service"),
            scope: params.remove("scope"),
            error: params.remove("error"),
        }))
    }
}

impl BearerChallenge {
    /// The token request URL: the realm with `service`, then each scope (the challenge's own
    /// first, then `extra_scopes` not already there), then `account` when credentials are sent.
    pub fn token_url(&self, extra_scopes: &[&str], account: Option<&str>) -> Url {
        let mut url = self.realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &self.service {
                query.append_pair("service", service);
            }
            let mut scopes: Vec<&str> = self.scope.as_deref().into_iter().collect();
            for s in extra_scopes {
                if !scopes.contains(s) {
                    scopes.push(s);
                }
            }
            for s in scopes {
                query.append_pair("scope", s);
            }
            if let Some(account) = account {
                query.append_pair("account", account);
            }
        }
        url
    }

    /// The scope a token is cached under: the challenge's, else the caller's.
    pub fn cache_scope(&self, fallback: &str) -> String {
        self.scope.clone().unwrap_or_else(|| fallback.to_string())
    }
}

/// The scope for pulling from `repository` (`repository:team/app:pull`).
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The `Authorization` value for Basic credentials.
pub fn basic_authorization(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A challenge as lexed: its scheme and its lowercased parameter names with their values.
type RawChallenge = (String, HashMap<String, String>);

/// Splits a header into (scheme, params) challenges.
struct ChallengeLexer<'a> {
    header: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> ChallengeLexer<'a> {
    fn new(header: &'a str) -> Self {
        ChallengeLexer {
            header,
            s: header.as_bytes(),
            i: 0,
        }
    }

    fn err(&self, reason: &'static str) -> AuthError {
        AuthError::MalformedChallenge {
            header: self.header.to_string(),
            reason,
        }
    }

    fn challenges(mut self) -> Result<Vec<RawChallenge>, AuthError> {
        let mut out: Vec<RawChallenge> = Vec::new();
        loop {
            self.skip_separators();
            if self.i >= self.s.len() {
                break;
            }
            let name = self
                .token()
                .ok_or_else(|| self.err("expected a scheme or parameter"))?;
            self.skip_spaces();
            match out.last_mut() {
                Some((_, params)) if self.peek() == Some(b'=') => {
                    self.i += 1;
                    self.skip_spaces();
                    let value = self.value()?;
                    params.insert(name.to_ascii_lowercase(), value);
                }
                _ => {
                    out.push((name, HashMap::new()));
                    self.skip_token68();
                }
            }
        }
        if out.is_empty() {
            return Err(self.err("empty"));
        }
        Ok(out)
    }

    /// Skips a token68 credential right after a scheme (`Negotiate abc==`): lazycas never
    /// answers those. Anything else (the first `name=value`) is left in place.
    fn skip_token68(&mut self) {
        let start = self.i;
        let token68_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        while self.peek().is_some_and(token68_char) {
            self.i += 1;
        }
        let chars_end = self.i;
        while self.peek() == Some(b'=') {
            self.i += 1;
        }
        self.skip_spaces();
        if chars_end == start || !matches!(self.peek(), None | Some(b',')) {
            self.i = start;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// An RFC 7230 token.
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A token or a quoted string with `\` escapes.
    fn value(&mut self) -> Result<String, AuthError> {
        if self.peek() != Some(b'"') {
            return self
                .token()
                .ok_or_else(|| self.err("expected a parameter value"));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self
                        .s
                        .get(self.i + 1)
                        .copied()
                        .ok_or_else(|| self.err("unterminated quoted string"))?;
                    out.push(escaped);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.err("quoted string is not UTF-8"))
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token as the token endpoint returned it. Its `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// The bearer token (`token`, or OAuth2's `access_token`).
    pub token: String,
    /// How long it is valid from issue.
    pub expires_in: Duration,
    /// When the endpoint says it issued it, if it says.
    pub issued_at: Option<SystemTime>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

impl TokenResponse {
    /// Parses the token endpoint's JSON body.
    pub fn parse(body: &[u8]) -> Result<TokenResponse, AuthError> {
        if body.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(AuthError::MalformedToken(format!(
                "{} bytes, more than {MAX_TOKEN_RESPONSE_BYTES}",
                body.len()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Raw {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<i64>,
            issued_at: Option<String>,
        }
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| AuthError::MalformedToken(e.to_string()))?;
        let token = raw
            .token
            .filter(|t| !t.is_empty())
            .or(raw.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| AuthError::MalformedToken("no token or access_token".into()))?;
        let expires_in = match raw.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s as u64),
            _ => DEFAULT_TOKEN_LIFETIME,
        };
        let issued_at = match raw.issued_at {
            Some(s) => Some(parse_rfc3339(&s).ok_or_else(|| {
                AuthError::MalformedToken(format!("issued_at {s:?} is not an RFC 3339 time"))
            })?),
            None => None,
        };
        Ok(TokenResponse {
            token,
            expires_in,
            issued_at,
        })
    }

    /// When the token stops being valid, counted from `received` (our clock): the endpoint's
    /// `issued_at` is only used to shorten the lifetime when it says the token is already old,
    /// so a skewed registry clock never makes us keep a token longer than it allows.
    pub fn expires_at(&self, received: Instant, received_wall: SystemTime) -> Instant {
        let age = self
            .issued_at
            .and_then(|t| received_wall.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        received + self.expires_in.saturating_sub(age)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(start..i.min(start + 9))?;
        if digits.is_empty() {
            return None;
        }
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.as_bytes()[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Bearer tokens per (registry, scope), reused until [`TOKEN_EXPIRY_MARGIN`] before expiry.
/// Thread-safe.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
}

struct CachedToken {
    token: String,
    expires_at: Instant,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.tokens.lock().len())
            .finish()
    }
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> TokenCache {
        TokenCache::default()
    }

    /// The cached token for (`registry`, `scope`) if it is still good at `now`.
    pub fn get(&self, registry: &str, scope: &str, now: Instant) -> Option<String> {
        let mut tokens = self.tokens.lock();
        let key = (registry.to_string(), scope.to_string());
        match tokens.get(&key) {
            Some(t) if now + TOKEN_EXPIRY_MARGIN < t.expires_at => Some(t.token.clone()),
            Some(_) => {
                tokens.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers `response`, received at `now` (and `now_wall` on the wall clock).
    pub fn insert(
        &self,
        registry: &str,
        scope: &str,
        response: &TokenResponse,
        now: Instant,
        now_wall: SystemTime,
    ) {
        let cached = CachedToken {
            token: response.token.clone(),
            expires_at: response.expires_at(now, now_wall),
        };
        self.tokens
            .lock()
            .insert((registry.to_string(), scope.to_string()), cached);
    }

    /// Forgets the token for (`registry`, `scope`): the registry answered 401 to it, so the
    /// next request fetches a new one.
    pub fn invalidate(&self, registry: &str, scope: &str) {
        self.tokens
            .lock()
            .remove(&(registry.to_string(), scope.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(header: &str) -> BearerChallenge {
        match Challenge::parse_all(header).unwrap().as_slice() {
            [Challenge::Bearer(b)] => b.clone(),
            other => panic!("{header}: {other:?}"),
        }
    }

    #[test]
    fn parses_docker_hub_challenge() {
        let b = bearer(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(b.realm.as_str(), "https://auth.docker.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(b.scope.as_deref(), Some("repository:library/alpine:pull"));
        assert_eq!(b.error, None);
        let url = b.token_url(&[], None);
        assert_eq!(
            url.as_str(),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull"
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_params_flexible() {
        let b = bearer(
            r#"bEaReR   Realm = "http://127.0.0.1:9/auth?x=1" , SERVICE=reg ,scope="a:b:pull,push",error="invalid_token""#,
        );
        assert_eq!(b.realm.as_str(), "http://127.0.0.1:9/auth?x=1");
        assert_eq!(b.service.as_deref(), Some("reg"));
        assert_eq!(b.scope.as_deref(), Some("a:b:pull,push"));
        assert_eq!(b.error.as_deref(), Some("invalid_token"));
        let url = b.token_url(&["repository:x:pull"], Some("me"));
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let want = [
            ("x", "1"),
            ("service", "reg"),
            ("scope", "a:b:pull,push"),
            ("scope", "repository:x:pull"),
            ("account", "me"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(pairs, want);
    }

    #[test]
    fn quoted_strings_with_escapes() {
        let b = bearer(r#"Bearer realm="https://h/t",service="a \"quoted\" \\ name, with comma""#);
        assert_eq!(
            b.service.as_deref(),
            Some(r#"a "quoted" \ name, with comma"#)
        );
        assert!(matches!(
            Challenge::parse_all(r#"Bearer realm="https://h/t"#),
            Err(AuthError::MalformedChallenge { .. })
        ));
        assert!(matches!(
            Challenge::parse_all(r#"Bearer realm="https://h/t\"#),
            Err(AuthError::MalformedChallenge { .. })
        ));
    }

    #[test]
    fn several_challenges_and_basic() {
        let all = Challenge::parse_all(
            r#"Basic realm="Registry Realm", Bearer realm="https://h/token",service="h""#,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            Challenge::Basic {
                realm: Some("Registry Realm".into())
            }
        );
        assert!(matches!(&all[1], Challenge::Bearer(b) if b.service.as_deref() == Some("h")));
        let preferred =
            Challenge::preferred([r#"Basic realm="x""#, r#"Bearer realm="https://h/t""#]);
        assert!(matches!(preferred, Ok(Challenge::Bearer(_))));
        let basic = Challenge::preferred([r#"basic realm="x""#]).unwrap();
        assert_eq!(
            basic,
            Challenge::Basic {
                realm: Some("x".into())
            }
        );
        let other = Challenge::preferred(["Negotiate abc=="]).unwrap_err();
        assert_eq!(other, AuthError::UnsupportedScheme("Negotiate".into()));
        assert_eq!(Challenge::preferred([]), Err(AuthError::NoChallenge));
        let all = Challenge::parse_all("Negotiate abc==, Basic realm=x").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1],
            Challenge::Basic {
                realm: Some("x".into())
            }
        );
    }

    #[test]
    fn bad_bearer_challenges() {
        assert!(matches!(
            Challenge::parse_all(r#"Bearer service="x""#),
            Err(AuthError::NoRealm(_))
        ));
        assert!(matches!(
            Challenge::parse_all(r#"Bearer realm="ftp://x/y""#),
            Err(AuthError::BadRealm(_))
        ));
        assert!(matches!(
            Challenge::parse_all(r#"Bearer realm="not a url""#),
            Err(AuthError::BadRealm(_))
        ));
        for garbage in [
            "",
            " , ",
            "=x",
            "Bearer realm=",
            "\"x\"",
            "Bearer realm=\u{e9}",
        ] {
            let _ = Challenge::parse_all(garbage);
        }
        assert!(Challenge::parse_all("").is_err());
    }

    #[test]
    fn token_responses() {
        let t = TokenResponse::parse(
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-05-01T12:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.expires_in, Duration::from_secs(300));
        assert_eq!(
            t.issued_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_714_564_800))
        );
        assert!(!format!("{t:?}").contains("abc"));

        let t = TokenResponse::parse(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token, "xyz");
        assert_eq!(t.expires_in, DEFAULT_TOKEN_LIFETIME);
        assert_eq!(t.issued_at, None);

        let t =
            TokenResponse::parse(br#"{"token":"","access_token":"xyz","expires_in":0}"#).unwrap();
        assert_eq!(
            (t.token.as_str(), t.expires_in),
            ("xyz", DEFAULT_TOKEN_LIFETIME)
        );

        for bad in [
            &br#"{}"#[..],
            b"not json",
            br#"{"token":""}"#,
            br#"{"token":"a","issued_at":"yesterday"}"#,
        ] {
            assert!(matches!(
                TokenResponse::parse(bad),
                Err(AuthError::MalformedToken(_))
            ));
        }
    }

    #[test]
    fn rfc3339_times() {
        let at = |s: &str| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(
            at("2000-02-29T23:59:59Z"),
            Some(Duration::from_secs(951_868_799))
        );
        assert_eq!(
            at("2024-05-01T14:00:00+02:00"),
            Some(Duration::from_secs(1_714_564_800))
        );
        assert_eq!(
            at("2024-05-01T12:00:00.5Z"),
            Some(Duration::new(1_714_564_800, 500_000_000))
        );
        assert_eq!(
            at("2024-05-01T12:00:00.123456789123Z"),
            Some(Duration::new(1_714_564_800, 123_456_789))
        );
        for bad in [
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2024-05-01T12:00:00+2",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn cache_reuses_until_expiry_minus_margin() {
        let cache = TokenCache::new();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let response = TokenResponse {
            token: "tok".into(),
            expires_in: Duration::from_secs(60),
            issued_at: None,
        };
        assert_eq!(cache.get("reg", "s", t0), None);
        cache.insert("reg", "s", &response, t0, wall);
        assert_eq!(cache.get("reg", "s", t0).as_deref(), Some("tok"));
        assert_eq!(
            cache
                .get("reg", "s", t0 + Duration::from_secs(49))
                .as_deref(),
            Some("tok")
        );
        assert_eq!(cache.get("reg", "other", t0), None);
        assert_eq!(cache.get("other", "s", t0), None);
        assert_eq!(cache.get("reg", "s", t0 + Duration::from_secs(50)), None);
        // Expired entries are dropped.
        assert_eq!(cache.get("reg", "s", t0), None);

        cache.insert("reg", "s", &response, t0, wall);
        cache.invalidate("reg", "s");
        assert_eq!(cache.get("reg", "s", t0), None);
    }

    #[test]
    fn issued_at_in_the_past_shortens_lifetime() {
        let now_wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = Instant::now();
        let mut r = TokenResponse {
            token: "t".into(),
            expires_in: Duration::from_secs(300),
            issued_at: Some(now_wall - Duration::from_secs(100)),
        };
        assert_eq!(r.expires_at(now, now_wall), now + Duration::from_secs(200));
        // A registry clock ahead of ours does not lengthen it.
        r.issued_at = Some(now_wall + Duration::from_secs(100));
        assert_eq!(r.expires_at(now, now_wall), now + Duration::from_secs(300));
        r.issued_at = Some(now_wall - Duration::from_secs(1000));
        assert_eq!(r.expires_at(now, now_wall), now);
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(basic_authorization("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(pull_scope("team/app"), "repository:team/app:pull");
    }
}
