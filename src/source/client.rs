//! The ModelArts HTTP client: signs every request (AK/SK), caps the request rate,
//! pages through job searches and maps error answers to [`SourceError`].
//!
//! It only reads: job search, job details and temporary log links. Downloading a
//! link is the fetch layer's job; this module hands out [`LogLink`]s whose `Debug`
//! and `Display` never show the presigned query.

use super::auth::RequestAuth;
use super::error::{ApiFault, SourceError, Target, parse_fault};
use super::job_object::JobObject;
use super::redact::Redaction;
use super::settings::ModelArtsConfig;
use super::sign;
use crate::http::{describe_reqwest_error, parse_retry_after};
use crate::model::{Job, JobId, JobPhase, TaskId};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

/// Events asked for per page (the documented maximum).
const EVENTS_PAGE_SIZE: u32 = 100;
/// A job's events are never read past this many pages, whatever the server says.
const MAX_EVENT_PAGES: u32 = 1_000;
/// Largest page the search API accepts.
pub const SEARCH_PAGE_SIZE: u32 = 50;
/// A search never reads more pages than this (5 million jobs), whatever the server says.
const MAX_SEARCH_PAGES: u32 = 100_000;
/// Search pages asked for at once once the job count is known.
const SEARCH_WINDOW: u32 = 8;
/// After a 429 without `Retry-After`, every request of the client waits this long.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(2);
/// This many failed requests in a row (5xx, connection errors) open the breaker.
const BREAKER_THRESHOLD: u32 = 8;
/// While open, the breaker fails calls at once; then one call probes again.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("malog/", env!("CARGO_PKG_VERSION"));

pub use super::auth::{Credentials, CredentialsError};

/// A temporary download link. Its query string is a credential: `Debug` and
/// `Display` show only scheme, host and path.
#[derive(Clone)]
pub struct LogLink {
    url: Url,
}

impl LogLink {
    pub fn new(url: Url) -> LogLink {
        LogLink { url }
    }

    /// The full URL, for the HTTP request only. Never log it.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }
}

impl std::fmt::Debug for LogLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogLink({self})")
    }
}

impl std::fmt::Display for LogLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}?<redacted>",
            self.url.scheme(),
            self.host(),
            self.url.path()
        )
    }
}

/// Which jobs a search returns. Phases go to the server as a filter; the name
/// pattern and creation bound are applied here too, since the server's handling
/// of them is not documented precisely.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub phases: Vec<JobPhase>,
    pub name_pattern: Option<regex::Regex>,
    /// Only jobs created at or after this instant (epoch ms).
    pub created_after_ms: Option<i64>,
}

impl JobFilter {
    pub fn matches(&self, job: &Job) -> bool {
        (self.phases.is_empty() || self.phases.contains(&job.phase))
            && self
                .name_pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&job.name))
            && self.created_after_ms.is_none_or(|t| job.created_at_ms >= t)
    }
}

/// Signed, rate-limited access to one project's training jobs.
#[derive(Clone)]
pub struct ModelArtsClient {
    /// The configured source's name: the `source` label of its metrics.
    name: Arc<str>,
    /// Sent with every search when set.
    workspace_id: Option<String>,
    http: reqwest::Client,
    endpoint: Url,
    project_id: String,
    credentials: Arc<Credentials>,
    /// Shared by every clone, so the cap holds across all workers of a run.
    limiter: Arc<super::limiter::RateCap>,
    /// Shared by every clone: throttling and failures slow or stop the whole
    /// client, not just the request that saw them.
    health: Arc<Mutex<Health>>,
    /// Held by the one request allowed while the credentials are unproven, so that
    /// bad keys cost one authentication failure, not one per worker.
    probe: Arc<tokio::sync::Mutex<()>>,
    request_timeout: Duration,
    /// Applied to every job object before it leaves this module.
    redaction: Redaction,
}

/// What the client learned about the service from earlier answers.
#[derive(Debug, Default)]
struct Health {
    /// Every request waits until then (set by a 429).
    paused_until: Option<tokio::time::Instant>,
    /// Set by a 401: further calls fail at once, because the gateway locks an AK
    /// after five authentication failures in a row.
    auth_failure: Option<ApiFault>,
    /// Whether a request of this pass was accepted by the gateway.
    verified: bool,
    /// Failed requests in a row (5xx, connection errors).
    consecutive_failures: u32,
    /// While set and in the future, calls fail at once instead of flooding a
    /// service that is down.
    open_until: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for ModelArtsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelArtsClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

// --- wire shapes (tolerant: every field the archiver does not need is optional) ---

#[derive(Deserialize)]
struct SearchPage {
    #[serde(default)]
    count: Option<u64>,
    /// Kept as JSON: each item is also the job's record.
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct LinkBody {
    #[serde(default)]
    obs_url: String,
}

impl ModelArtsClient {
    pub fn new(
        cfg: &ModelArtsConfig,
        credentials: Credentials,
        http: reqwest::Client,
    ) -> ModelArtsClient {
        ModelArtsClient {
            name: Arc::from(cfg.name.as_str()),
            workspace_id: cfg.workspace_id.clone(),
            http,
            endpoint: cfg.endpoint.clone(),
            project_id: cfg.project_id.clone(),
            credentials: Arc::new(credentials),
            limiter: Arc::new(super::limiter::RateCap::per_second(cfg.requests_per_second)),
            health: Arc::new(Mutex::new(Health::default())),
            probe: Arc::new(tokio::sync::Mutex::new(())),
            request_timeout: cfg.request_timeout,
            redaction: Redaction::default(),
        }
    }

    /// Redacts job records this way (the default redacts environment values too).
    pub fn with_redaction(mut self, redaction: Redaction) -> ModelArtsClient {
        self.redaction = redaction;
        self
    }

    /// Forgets a previous authentication failure and opens the way for a new
    /// attempt; called at the start of each pass.
    pub fn reset_health(&self) {
        *self.health() = Health::default();
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails fast when an earlier answer says further calls are pointless, and
    /// otherwise waits out a throttling pause.
    async fn admit(&self, target: &Target) -> Result<(), SourceError> {
        let pause = {
            let health = self.health();
            if let Some(fault) = &health.auth_failure {
                return Err(SourceError::Unauthorized {
                    target: target.clone(),
                    fault: fault.clone(),
                });
            }
            if health
                .open_until
                .is_some_and(|t| t > tokio::time::Instant::now())
            {
                return Err(SourceError::Unavailable {
                    target: target.clone(),
                    failures: health.consecutive_failures,
                });
            }
            health.paused_until
        };
        if let Some(until) = pause {
            tokio::time::sleep_until(until).await;
        }
        Ok(())
    }

    /// Records what one answer says about the service as a whole.
    fn observe(&self, result: &Result<bytes::Bytes, SourceError>) {
        let mut health = self.health();
        match result {
            Ok(_) => {
                health.verified = true;
                health.consecutive_failures = 0;
                health.open_until = None;
            }
            Err(SourceError::Throttled { retry_after, .. }) => {
                health.verified = true;
                // The parser caps what a server may ask for; the checked sum keeps
                // even an uncapped value from panicking.
                let now = tokio::time::Instant::now();
                let pause = retry_after.unwrap_or(DEFAULT_THROTTLE_PAUSE);
                let until = now
                    .checked_add(pause.min(crate::http::MAX_RETRY_AFTER))
                    .unwrap_or(now);
                health.paused_until = Some(health.paused_until.map_or(until, |t| t.max(until)));
            }
            Err(SourceError::Unauthorized { fault, .. }) => {
                health.auth_failure = Some(fault.clone())
            }
            Err(SourceError::Server { .. } | SourceError::Transport { .. }) => {
                health.consecutive_failures += 1;
                if health.consecutive_failures >= BREAKER_THRESHOLD {
                    health.open_until = Some(tokio::time::Instant::now() + BREAKER_OPEN_FOR);
                }
            }
            Err(_) => {
                // Any other answer came from a gateway that accepted the signature.
                health.verified = true;
                health.consecutive_failures = 0;
            }
        }
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// What the answers of this pass say about the source, for `/healthz`:
    /// `ok`, or why its calls fail at once or wait.
    pub fn condition(&self) -> String {
        let health = self.health();
        let now = tokio::time::Instant::now();
        if let Some(fault) = &health.auth_failure {
            format!("authentication failed: {fault}")
        } else if health.open_until.is_some_and(|t| t > now) {
            format!(
                "unavailable: {} failed requests in a row",
                health.consecutive_failures
            )
        } else if health.paused_until.is_some_and(|t| t > now) {
            "throttled: requests paused".to_owned()
        } else {
            "ok".to_owned()
        }
    }

    /// Lists all jobs matching `filter`, newest first, de-duplicated by id. Pages by
    /// page index; stops at a short page, at the reported count, at jobs older than
    /// the creation bound, or at a page that brings no new job (reported, not looped on).
    pub async fn search_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, SourceError> {
        self.search_jobs_with(filter, &|job| job).await
    }

    /// [`ModelArtsClient::search_jobs`], handing each job it keeps to `keep`
    /// as its page is read, so a caller can set its record aside at once
    /// instead of holding every page's records until the search ends.
    pub async fn search_jobs_with(
        &self,
        filter: &JobFilter,
        keep: &(dyn Fn(Job) -> Job + Sync),
    ) -> Result<Vec<Job>, SourceError> {
        let mut seen = HashSet::new();
        let mut jobs = Vec::new();
        // Page 0 alone tells how many jobs there are; then up to SEARCH_WINDOW
        // pages are asked for at once (the request-rate cap still applies).
        // Processing stays in page order, so the stop rules below hold as if
        // the pages had been read one by one; a stop wastes at most the rest
        // of its window.
        let mut total_pages = MAX_SEARCH_PAGES;
        let mut next = 0;
        while next < total_pages {
            let window = if next == 0 {
                1
            } else {
                SEARCH_WINDOW.min(total_pages - next)
            };
            let mut pages = futures::stream::iter(next..next + window)
                .map(|page| self.search_page(page, SEARCH_PAGE_SIZE, filter))
                .buffered(window as usize);
            while let Some(result) = pages.next().await {
                let page = next;
                next += 1;
                let result = result?;
                if let Some(count) = result.count {
                    let pages = count.div_ceil(u64::from(SEARCH_PAGE_SIZE)).max(1);
                    total_pages = total_pages.min(u32::try_from(pages).unwrap_or(u32::MAX));
                }
                let items = result.items.len();
                let mut new_items = 0;
                let mut older_than_bound = false;
                for item in result.items {
                    let job = self.search_item(item)?;
                    if filter
                        .created_after_ms
                        .is_some_and(|t| job.created_at_ms < t)
                    {
                        older_than_bound = true;
                    }
                    if seen.insert(job.id.clone()) {
                        new_items += 1;
                        if filter.matches(&job) {
                            jobs.push(keep(job));
                        }
                    }
                }
                if items < SEARCH_PAGE_SIZE as usize || older_than_bound {
                    return Ok(jobs);
                }
                if new_items == 0 {
                    tracing::warn!(
                        page,
                        "job search returned a page of jobs already seen; stopping paging there"
                    );
                    return Ok(jobs);
                }
            }
        }
        if total_pages == MAX_SEARCH_PAGES {
            tracing::warn!(
                pages = MAX_SEARCH_PAGES,
                "job search stopped at the page limit"
            );
        }
        Ok(jobs)
    }

    /// One page (by index) of `limit` jobs of the job search, newest first.
    async fn search_page(
        &self,
        page: u32,
        limit: u32,
        filter: &JobFilter,
    ) -> Result<SearchPage, SourceError> {
        let mut body = serde_json::json!({
            "offset": page,
            "limit": limit,
            "sort_by": "create_time",
            "order": "desc",
        });
        if let Some(workspace) = &self.workspace_id {
            body["workspace_id"] = serde_json::json!(workspace);
        }
        if !filter.phases.is_empty() {
            let phases: Vec<&str> = filter.phases.iter().map(JobPhase::as_str).collect();
            body["filters"] =
                serde_json::json!([{"key": "phase", "operator": "in", "value": phases}]);
        }
        let bytes = self
            .call(
                reqwest::Method::POST,
                &["training-job-searches"],
                "application/json;charset=utf-8",
                Some(body.to_string().into_bytes()),
                Target::Search,
            )
            .await?;
        decode(&bytes, Target::Search)
    }

    /// The newest `limit` jobs in one search request, unfiltered: `malog doctor`'s
    /// cheap check of authentication, project and the list permission.
    pub async fn newest_jobs(&self, limit: u32) -> Result<Vec<Job>, SourceError> {
        let page = self.search_page(0, limit, &JobFilter::default()).await?;
        page.items
            .into_iter()
            .map(|item| self.search_item(item))
            .collect()
    }

    /// One job object of a search page, parsed and redacted.
    fn search_item(&self, item: serde_json::Value) -> Result<Job, SourceError> {
        JobObject::parse(item, self.redaction).map_err(|e| SourceError::Decode {
            target: Target::Search,
            message: format!("a job object is invalid: {e}"),
        })
    }

    /// The details of one job, including its task list.
    pub async fn job(&self, id: &JobId) -> Result<Job, SourceError> {
        let target = Target::Job(id.clone());
        let bytes = self
            .call(
                reqwest::Method::GET,
                &["training-jobs", &id.0],
                "application/json",
                None,
                target.clone(),
            )
            .await?;
        let value: serde_json::Value = decode(&bytes, target.clone())?;
        JobObject::parse(value, self.redaction).map_err(|e| SourceError::Decode {
            target,
            message: format!("invalid job object: {e}"),
        })
    }

    /// A fresh temporary download link for one task's log (valid about 5 minutes).
    pub async fn log_link(&self, job: &JobId, task: &TaskId) -> Result<LogLink, SourceError> {
        let target = Target::Task(job.clone(), task.clone());
        let bytes = self
            .call(
                reqwest::Method::GET,
                &["training-jobs", &job.0, "tasks", &task.0, "logs", "url"],
                "application/octet-stream",
                None,
                target.clone(),
            )
            .await?;
        let body: LinkBody = decode(&bytes, target.clone())?;
        let url = Url::parse(&body.obs_url).map_err(|_| SourceError::Decode {
            target: target.clone(),
            message: "obs_url is not a URL".to_owned(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SourceError::Decode {
                target,
                message: format!("obs_url has unsupported scheme {:?}", url.scheme()),
            });
        }
        Ok(LogLink::new(url))
    }

    /// Every event of a job (§2.9), as the API returns them. Pages by page
    /// index until a page is short, the collected count reaches `total`, or a
    /// page brings nothing new (the docs disagree on what `offset` counts; a
    /// server counting records instead of pages repeats itself and is stopped
    /// there, with what was collected).
    pub async fn job_events(&self, id: &JobId) -> Result<Vec<serde_json::Value>, SourceError> {
        #[derive(Deserialize)]
        struct EventsPage {
            #[serde(default)]
            total: Option<u64>,
            #[serde(default)]
            events: Vec<serde_json::Value>,
        }
        let target = Target::Job(id.clone());
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        for page in 0..MAX_EVENT_PAGES {
            let offset = page.to_string();
            let limit = EVENTS_PAGE_SIZE.to_string();
            let bytes = self
                .call_with_query(
                    &["training-jobs", &id.0, "events"],
                    &[("offset", &offset), ("limit", &limit)],
                    target.clone(),
                )
                .await?;
            let body: EventsPage = decode(&bytes, target.clone())?;
            let short = body.events.len() < EVENTS_PAGE_SIZE as usize;
            let mut new = 0;
            for event in body.events {
                if seen.insert(event.to_string()) {
                    events.push(event);
                    new += 1;
                }
            }
            let complete = body.total.is_some_and(|t| events.len() as u64 >= t);
            if short || complete || new == 0 {
                break;
            }
        }
        Ok(events)
    }

    /// One task's resource metrics (§2.10), as the API returns them.
    pub async fn task_metrics(
        &self,
        job: &JobId,
        task: &TaskId,
    ) -> Result<serde_json::Value, SourceError> {
        let target = Target::Task(job.clone(), task.clone());
        let bytes = self
            .call_with_query(
                &["training-jobs", &job.0, "metrics", &task.0],
                &[],
                target.clone(),
            )
            .await?;
        decode(&bytes, target)
    }

    /// Sends one signed API request, within the client's rate cap and health
    /// rules, and returns the body of a 2xx answer.
    async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        content_type: &str,
        body: Option<Vec<u8>>,
        target: Target,
    ) -> Result<bytes::Bytes, SourceError> {
        self.request(method, segments, &[], content_type, body, target)
            .await
    }

    /// A GET with a query string (events, metrics).
    async fn call_with_query(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        target: Target,
    ) -> Result<bytes::Bytes, SourceError> {
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let method = reqwest::Method::GET;
        self.request(method, segments, &query, "application/json", None, target)
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(String, String)],
        content_type: &str,
        body: Option<Vec<u8>>,
        target: Target,
    ) -> Result<bytes::Bytes, SourceError> {
        // Until one request of the pass got through the gateway, requests go one
        // at a time: the probe lock is held across the request.
        let _probe = if self.health().verified {
            None
        } else {
            Some(self.probe.lock().await)
        };
        self.admit(&target).await?;
        let mut result = self
            .send(
                method.clone(),
                segments,
                query,
                content_type,
                body.clone(),
                target.clone(),
            )
            .await;
        // The API refused our IAM token (expired, revoked): log in again once.
        let token_refused = matches!(&result, Err(SourceError::Unauthorized { target, .. }) if *target != Target::Iam);
        if token_refused && self.credentials.invalidate_token() {
            record_answer(&self.name, &result);
            result = self
                .send(method, segments, query, content_type, body, target)
                .await;
        }
        record_answer(&self.name, &result);
        self.observe(&result);
        result
    }

    /// One API request: URL, signed headers, a slot of the rate cap, the answer.
    async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(String, String)],
        content_type: &str,
        body: Option<Vec<u8>>,
        target: Target,
    ) -> Result<bytes::Bytes, SourceError> {
        let url = self.api_url(segments, query);
        let body = body.unwrap_or_default();
        let (headers, credential) = self
            .auth_headers(&method, &url, query, content_type, &body)
            .await?;
        let header_map = header_map(&headers, credential, &target)?;
        let mut request = self
            .http
            .request(method, url)
            .headers(header_map)
            .timeout(self.request_timeout);
        if !body.is_empty() {
            request = request.body(body);
        }
        // Last thing before sending, so that every API request (a retry after a
        // refreshed token included) takes a slot, and the time between the slot
        // and the gateway is as short as it can be.
        self.limiter.acquire().await;
        let response = request
            .send()
            .await
            .map_err(|e| transport(target.clone(), e))?;
        answer(response, target).await
    }

    /// `{endpoint}/v2/{project_id}/{segments…}?{query}`, each segment encoded
    /// the way the signature expects.
    fn api_url(&self, segments: &[&str], query: &[(String, String)]) -> url::Url {
        let mut path = self.endpoint.path().trim_end_matches('/').to_owned();
        path.push_str("/v2/");
        path.push_str(&sign::encode_component(&self.project_id));
        for segment in segments {
            path.push('/');
            path.push_str(&sign::encode_component(segment));
        }
        let mut url = self.endpoint.clone();
        url.set_path(&path);
        if !query.is_empty() {
            url.set_query(Some(&sign::canonical_query(query)));
        }
        url
    }

    /// The request's headers, and apart from them the (name, value) of the
    /// credential itself (a token, or the AK/SK signature over the others).
    async fn auth_headers(
        &self,
        method: &reqwest::Method,
        url: &url::Url,
        query: &[(String, String)],
        content_type: &str,
        body: &[u8],
    ) -> Result<(Vec<(String, String)>, (&'static str, String)), SourceError> {
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), content_type.into()),
            ("User-Agent".into(), USER_AGENT.into()),
            ("X-Project-Id".into(), self.project_id.clone()),
        ];
        let credential = match self
            .credentials
            .request_auth(&self.http, self.request_timeout)
            .await?
        {
            RequestAuth::Token(token) => ("X-Auth-Token", token),
            RequestAuth::Sign {
                access_key,
                secret_key,
                security_token,
            } => {
                headers.push((
                    sign::DATE_HEADER.into(),
                    chrono::Utc::now().format(sign::DATE_FORMAT).to_string(),
                ));
                if let Some(extra) = sign::content_sha256_header(&headers) {
                    headers.push(extra);
                }
                // Temporary keys: the security token is added before signing, so it is signed.
                if let Some(token) = security_token {
                    headers.push(("X-Security-Token".into(), token.to_owned()));
                }
                let host = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_owned(),
                };
                headers.push(("Host".into(), host));
                let signable = sign::SignableRequest {
                    method: method.as_str(),
                    raw_path: url.path(),
                    query,
                    headers: &headers,
                    body,
                };
                (
                    "Authorization",
                    sign::authorization(&signable, access_key, secret_key),
                )
            }
        };
        Ok((headers, credential))
    }
}

/// The headers as the HTTP client takes them, secrets marked sensitive so that
/// no debug print of the request shows them.
fn header_map(
    headers: &[(String, String)],
    (credential_name, credential): (&'static str, String),
    target: &Target,
) -> Result<HeaderMap, SourceError> {
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        // Host is set by the HTTP client from the URL, with the same value we signed.
        if name == "Host" {
            continue;
        }
        let name =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("static header names");
        let mut value = HeaderValue::from_str(value).map_err(|_| SourceError::Decode {
            target: target.clone(),
            message: "a header value is not valid ASCII (check modelarts.project_id)".to_owned(),
        })?;
        value.set_sensitive(name == "x-security-token");
        header_map.insert(name, value);
    }
    let mut secret_value = HeaderValue::from_str(&credential).map_err(|_| SourceError::Decode {
        target: target.clone(),
        message: "the credential is not valid ASCII".to_owned(),
    })?;
    secret_value.set_sensitive(true);
    header_map.insert(credential_name, secret_value);
    Ok(header_map)
}

/// The body of a successful answer, or the API's error read from it.
async fn answer(response: reqwest::Response, target: Target) -> Result<bytes::Bytes, SourceError> {
    let status = response.status();
    let retry_after = parse_retry_after(response.headers());
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport(target.clone(), e))?;
    if status.is_success() && status != reqwest::StatusCode::NO_CONTENT {
        return Ok(bytes);
    }
    let mut fault = parse_fault(status.as_u16(), &bytes);
    if status == reqwest::StatusCode::NO_CONTENT && fault.code.is_empty() {
        // 204 is documented as ModelArts.2776 NotReadyToFetchLog.
        fault.code = "ModelArts.2776".to_owned();
    }
    Err(SourceError::from_response(target, fault, retry_after))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], target: Target) -> Result<T, SourceError> {
    serde_json::from_slice(bytes).map_err(|e| SourceError::Decode {
        target,
        message: format!("invalid JSON: {e}"),
    })
}

fn transport(target: Target, e: reqwest::Error) -> SourceError {
    SourceError::Transport {
        target,
        message: describe_reqwest_error(e),
    }
}

/// Counts one API call in the metrics by how it was answered.
fn record_answer<T>(source: &str, result: &Result<T, SourceError>) {
    use crate::telemetry::{ApiAnswer, record_api_call};
    let answer = match result {
        Ok(_) => ApiAnswer::Ok,
        // The breaker answered without a request: nothing was sent.
        Err(SourceError::Unavailable { .. }) => return,
        Err(e) => match e.http_status() {
            Some(status) => ApiAnswer::Status {
                status,
                throttled: matches!(e, SourceError::Throttled { .. }),
            },
            None => ApiAnswer::Transport,
        },
    };
    record_api_call(source, answer);
}

#[cfg(test)]
mod tests;
