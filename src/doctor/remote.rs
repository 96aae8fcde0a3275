//! Doctor's checks over the network: the clock against the API's `Date`
//! header, a few cheap signed API calls (through the same client a pass uses),
//! and a write, read and delete of a probe object in the archive.

use super::Check;
use crate::config::{AuthMethod, Config, SourceConfig};
use crate::model::{Job, JobId};
use crate::source::{Credentials, ModelArtsClient, SourceError};
use crate::storage::s3::Addressing;
use crate::storage::{ArchiveKey, Storage, StoreError};
use std::time::Duration;

/// The API gateway rejects signatures dated further than this from its clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// A clock this far off still works, but is drifting towards the limit.
const WARN_SKEW: Duration = Duration::from_secs(60);
/// Jobs asked for by the search check: enough to find one with tasks.
const SEARCH_LIMIT: u32 = 10;

/// The clock, then authentication, project and permissions (list, get, log link).
pub(super) async fn api(
    config: &Config,
    source: &SourceConfig,
    credentials: Option<Credentials>,
) -> Vec<Check> {
    let http = match reqwest::Client::builder()
        .connect_timeout(config.fetch.connect_timeout)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            return vec![Check::fail(
                "api",
                format!("cannot set up an HTTP client: {}", e.without_url()),
                "check the system's TLS certificates",
            )];
        }
    };
    let clock = clock(source, &http).await;
    let clock_failed = clock.status == super::Status::Fail;
    let unreachable = clock.area == "api";
    let mut checks = vec![clock];
    if unreachable {
        return checks;
    }
    let Some(credentials) = credentials else {
        checks.push(Check::skip(
            "api",
            "not checked: the credentials are missing or unreadable",
        ));
        return checks;
    };
    if clock_failed && source.modelarts.auth == AuthMethod::AkSk {
        checks.push(Check::skip(
            "api",
            "not checked: with this clock every signed request fails, and five failures in a row lock the access key",
        ));
        return checks;
    }
    let client = ModelArtsClient::new(&source.modelarts, credentials, http);
    checks.extend(permissions(source, &client).await);
    checks
}

/// Compares this machine's clock with the API's `Date` header, from an unsigned
/// request (it cannot fail authentication, whatever the clock says). A check in
/// the area "api" means the endpoint could not be reached at all.
async fn clock(config: &SourceConfig, http: &reqwest::Client) -> Check {
    let endpoint = &config.modelarts.endpoint;
    let response = http
        .get(endpoint.clone())
        .timeout(config.modelarts.request_timeout)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            return Check::fail(
                "api",
                format!(
                    "cannot reach {endpoint}: {}",
                    crate::http::describe_reqwest_error(e)
                ),
                "check `modelarts.endpoint` (https://modelarts.{region}.myhuaweicloud.com), DNS, proxy and firewall",
            );
        }
    };
    let local = chrono::Utc::now();
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok());
    let Some(date) = date else {
        return Check::skip(
            "clock",
            format!("not checked: {endpoint} sent no readable Date header"),
        );
    };
    let skew = date.with_timezone(&chrono::Utc) - local;
    let off = skew.abs().to_std().unwrap_or(Duration::MAX);
    // `Date` has whole seconds: beyond a few minutes, whole minutes say it better.
    let shown = match off.as_secs() {
        s if s >= 180 => (s + 30) / 60 * 60,
        s => s,
    };
    let how = format!(
        "this machine's clock is {} {} the API's",
        humantime::format_duration(Duration::from_secs(shown)),
        if skew > chrono::TimeDelta::zero() {
            "behind"
        } else {
            "ahead of"
        }
    );
    let fix =
        "synchronise the clock with NTP (`timedatectl set-ntp true`, chrony or systemd-timesyncd)";
    if off > MAX_SKEW {
        Check::fail(
            "clock",
            format!("{how}: more than the 15 minutes the API gateway accepts"),
            fix,
        )
    } else if off > WARN_SKEW {
        Check::warn(
            "clock",
            format!("{how} (the gateway accepts 15 minutes)"),
            fix,
        )
    } else {
        Check::pass(
            "clock",
            format!(
                "agrees with the API's Date header ({}s apart)",
                off.as_secs()
            ),
        )
    }
}

/// One search (list), the details of one job (get) and the log link of one task
/// (log export). The first failure stops the rest: after an authentication
/// failure, further calls would only bring the key closer to its lock-out.
async fn permissions(config: &SourceConfig, client: &ModelArtsClient) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(jobs) = search(config, client, &mut checks).await else {
        return checks;
    };
    let detail_id = jobs
        .first()
        .map(|j| j.id.clone())
        .or_else(|| config.jobs.ids.first().map(|id| JobId(id.clone())));
    let Some(detail_id) = detail_id else {
        checks.push(Check::skip(
            "api",
            "job details and log links not checked: no job found",
        ));
        return checks;
    };
    let detailed = match client.job(&detail_id).await {
        Ok(job) => {
            checks.push(Check::pass(
                "api",
                format!("job details allowed (job {detail_id})"),
            ));
            Some(job)
        }
        Err(SourceError::JobNotFound { .. }) => {
            checks.push(Check::warn(
                "api",
                format!("job {detail_id} does not exist (deleted?)"),
                "remove it from `jobs.ids`",
            ));
            None
        }
        Err(e) => {
            checks.push(api_failure(config, &e, "modelarts:trainJob:get"));
            return checks;
        }
    };
    let with_tasks = detailed
        .iter()
        .chain(jobs.iter())
        .find(|j| !j.tasks.is_empty());
    let Some(job) = with_tasks else {
        checks.push(Check::skip(
            "api",
            "log-link permission not checked: no job with tasks found",
        ));
        return checks;
    };
    let task = &job.tasks[0];
    checks.push(match client.log_link(&job.id, task).await {
        // A log not there (yet, or any more) is an answer past the permission check.
        Ok(_) | Err(SourceError::LogNotReady { .. } | SourceError::LogGone { .. }) => Check::pass(
            "api",
            format!("log links allowed (job {} task {task})", job.id),
        ),
        Err(e) => api_failure(config, &e, "modelarts:trainJob:logExport"),
    });
    checks
}

/// The job search (authentication, project, list permission) when jobs are
/// discovered; `None` when it failed and the checks end.
async fn search(
    config: &SourceConfig,
    client: &ModelArtsClient,
    checks: &mut Vec<Check>,
) -> Option<Vec<Job>> {
    if !config.jobs.discover {
        checks.push(Check::skip(
            "api",
            "job search not checked: `jobs.discover` is off (only `jobs.ids`)",
        ));
        return Some(Vec::new());
    }
    match client.newest_jobs(SEARCH_LIMIT).await {
        Ok(jobs) => {
            checks.push(Check::pass(
                "api",
                format!(
                    "authenticated; project {}; job search allowed ({} jobs seen)",
                    config.modelarts.project_id,
                    jobs.len()
                ),
            ));
            Some(jobs)
        }
        Err(e) => {
            checks.push(api_failure(config, &e, "modelarts:trainJob:list"));
            None
        }
    }
}

/// A failed API call, with what to do about it.
fn api_failure(config: &SourceConfig, e: &SourceError, permission: &str) -> Check {
    let fix = match e {
        SourceError::Unauthorized { .. } => match config.modelarts.auth {
            AuthMethod::AkSk => "check that the access key and secret key belong together and are enabled (console → My Credentials → Access Keys); the gateway locks an access key after five failures in a row, so fix the keys before trying again".to_owned(),
            AuthMethod::Token => "the IAM token is invalid or expired: put a fresh one in place".to_owned(),
            AuthMethod::Password => "check `modelarts.user_name`, `modelarts.domain_name` (the account name) and the password".to_owned(),
        },
        SourceError::PermissionDenied { .. } => {
            format!("grant the IAM user (or its group) the action {permission}")
        }
        SourceError::Rejected { fault, .. }
            if matches!(fault.code.as_str(), "ModelArts.2786" | "ModelArts.0210") =>
        {
            "check `modelarts.project_id`: it must be the project of the endpoint's region (console → My Credentials → Projects)".to_owned()
        }
        SourceError::Transport { .. } | SourceError::Unavailable { .. } => {
            "check `modelarts.endpoint`, DNS, proxy and firewall".to_owned()
        }
        _ => "see the error above; docs/RELIABILITY.md lists what each API error means".to_owned(),
    };
    Check::fail("api", e.to_string(), fix)
}

/// Writes, reads back and deletes a probe object in the archive.
pub(super) async fn storage(config: &Config) -> Vec<Check> {
    let storage = match Storage::from_config(&config.storage).await {
        Ok(storage) => storage,
        Err(e) => return vec![storage_failure(config, &e)],
    };
    let name = format!(".malog-doctor-probe-{:016x}", rand::random::<u64>());
    let key = ArchiveKey::from_stored(&name).expect("the probe key is valid");
    let location = storage.location(&storage.stored_key(&key));
    vec![match storage.round_trip(&key).await {
        Ok(()) => Check::pass(
            "storage",
            format!("wrote, read back and deleted a probe object ({location})"),
        ),
        Err(e) => storage_failure(config, &e),
    }]
}

/// A storage failure, with a fix that names the likely setting.
fn storage_failure(config: &Config, e: &StoreError) -> Check {
    let mut message = e.to_string();
    let fix = match (&config.storage.s3, e) {
        // The probe's own object cannot be missing right after its write: the
        // service found no bucket (its 404 becomes "not found").
        (Some(s3), StoreError::NotFound { .. }) => {
            message = format!(
                "S3 answered 404 (no such bucket) to the probe of bucket {:?}",
                s3.bucket
            );
            no_bucket_fix(s3)
        }
        (_, StoreError::Credentials { .. }) => {
            "give the S3 keys as `storage.access_key_file`/`secret_key_file` or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_owned()
        }
        (None, _) => format!(
            "make {} writable by the user malog runs as (the systemd unit writes only under /var/lib/malog)",
            config.storage.root.display()
        ),
        (Some(s3), _) => s3_fix(s3, &message),
    };
    Check::fail("storage", message, fix)
}

/// What an S3 error most likely means, from the service's error code or the
/// client's error text.
fn s3_fix(s3: &crate::storage::S3Config, message: &str) -> String {
    let has = |needles: &[&str]| {
        let lower = message.to_ascii_lowercase();
        needles
            .iter()
            .any(|n| lower.contains(&n.to_ascii_lowercase()))
    };
    let endpoint = s3
        .endpoint
        .as_ref()
        .map_or("the default AWS endpoint".to_owned(), |u| u.to_string());
    if has(&[
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "IncorrectEndpoint",
        "InvalidRegion",
        "x-amz-bucket-region",
    ]) {
        return format!(
            "region: requests are signed for `storage.region` = {:?}, which is not the bucket's region; set it to the region of the bucket (Huawei OBS: the region in the endpoint, e.g. \"cn-north-4\")",
            s3.region
        );
    }
    if has(&[
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "UnknownIssuer",
        "corrupt message",
    ]) {
        return format!(
            "TLS: the connection to {endpoint} could not be secured; for a private CA set `storage.ca_bundle`, for a plain-HTTP server write http:// in `storage.endpoint`"
        );
    }
    if has(&["dns error", "failed to lookup", "name or service not known"]) {
        return match s3.addressing {
            Addressing::Virtual => format!(
                "addressing: with addressing = \"virtual\" the bucket is part of the host name ({}.<endpoint host>), which does not resolve; use addressing = \"path\" for MinIO and other servers without virtual-hosted buckets",
                s3.bucket
            ),
            Addressing::Path => format!("check the host name in `storage.endpoint` ({endpoint})"),
        };
    }
    if has(&["NoSuchBucket"]) {
        return no_bucket_fix(s3);
    }
    if has(&["InvalidAccessKeyId"]) {
        return "the S3 access key is unknown to the service: check it".to_owned();
    }
    if has(&["SignatureDoesNotMatch"]) {
        return "the S3 secret key does not match the access key (or `storage.region` is wrong): check both".to_owned();
    }
    if has(&["AccessDenied", "403"]) {
        return "the S3 key may not write, read or delete under the prefix: allow s3:PutObject, s3:GetObject and s3:DeleteObject (OBS: PutObject, GetObject, DeleteObject)".to_owned();
    }
    if has(&["connect", "connection refused", "timed out"]) {
        return format!(
            "cannot reach {endpoint}: check `storage.endpoint`, DNS, proxy and firewall"
        );
    }
    "see the error above; README \"S3, Huawei OBS and MinIO\" has working settings for each service"
        .to_owned()
}

/// The service knows no such bucket: with path addressing, most likely it finds
/// buckets by host name only.
fn no_bucket_fix(s3: &crate::storage::S3Config) -> String {
    let endpoint = s3
        .endpoint
        .as_ref()
        .map_or("the default AWS endpoint".to_owned(), |u| u.to_string());
    match s3.addressing {
        Addressing::Path => format!(
            "addressing: no bucket {:?} at {}/{0}; check `storage.bucket`, and set addressing = \"virtual\" for services that find buckets by host name (Huawei OBS, AWS)",
            s3.bucket,
            endpoint.trim_end_matches('/')
        ),
        Addressing::Virtual => format!(
            "no bucket {:?} at {endpoint}; check `storage.bucket` and `storage.endpoint`",
            s3.bucket
        ),
    }
}
