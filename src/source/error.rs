//! [`SourceError`]: every way a ModelArts API call can fail, classified by meaning
//! (see the error table in `docs/` and the API facts), with the job and task it
//! concerns. Messages never contain credentials or presigned URLs.

use crate::model::{JobId, TaskId};
use std::time::Duration;

/// What a failed call was about, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Logging in to IAM for a token.
    Iam,
    Search,
    Job(JobId),
    Task(JobId, TaskId),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Iam => f.write_str("IAM token request"),
            Target::Search => f.write_str("job search"),
            Target::Job(j) => write!(f, "job {j}"),
            Target::Task(j, t) => write!(f, "job {j} task {t}"),
        }
    }
}

/// The error body of ModelArts (`error_code`, `error_msg`) or of the API gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiFault {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{target}: training job not found (deleted?) ({fault})")]
    JobNotFound { target: Target, fault: ApiFault },
    #[error("{target}: log not generated yet ({fault})")]
    LogNotReady { target: Target, fault: ApiFault },
    #[error("{target}: log no longer available in ModelArts ({fault})")]
    LogGone { target: Target, fault: ApiFault },
    #[error(
        "{target}: authentication failed ({fault}); check HUAWEICLOUD_SDK_AK/SK (or the key files) and that the clock is within 15 minutes of UTC"
    )]
    Unauthorized { target: Target, fault: ApiFault },
    #[error(
        "{target}: permission denied ({fault}); the IAM user needs modelarts:trainJob:get, :list and :logExport"
    )]
    PermissionDenied { target: Target, fault: ApiFault },
    #[error("{target}: throttled ({fault})")]
    Throttled {
        target: Target,
        fault: ApiFault,
        retry_after: Option<Duration>,
    },
    #[error("{target}: server error ({fault})")]
    Server { target: Target, fault: ApiFault },
    #[error("{target}: request rejected ({fault})")]
    Rejected { target: Target, fault: ApiFault },
    #[error(
        "{target}: ModelArts unavailable: {failures} requests in a row failed; not asking again for a minute"
    )]
    Unavailable { target: Target, failures: u32 },
    #[error("{target}: cannot reach ModelArts: {message}")]
    Transport { target: Target, message: String },
    #[error("{target}: unexpected response: {message}")]
    Decode { target: Target, message: String },
}

impl SourceError {
    /// The HTTP status of the API's answer; `None` when no answer came.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            SourceError::JobNotFound { fault, .. }
            | SourceError::LogNotReady { fault, .. }
            | SourceError::LogGone { fault, .. }
            | SourceError::Unauthorized { fault, .. }
            | SourceError::PermissionDenied { fault, .. }
            | SourceError::Throttled { fault, .. }
            | SourceError::Server { fault, .. }
            | SourceError::Rejected { fault, .. } => Some(fault.status),
            SourceError::Unavailable { .. }
            | SourceError::Transport { .. }
            | SourceError::Decode { .. } => None,
        }
    }

    /// Whether trying again later in the same run may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Throttled { .. }
                | SourceError::Server { .. }
                | SourceError::Transport { .. }
        )
    }

    /// The server's requested delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Maps an HTTP error answer to its meaning.
    pub fn from_response(
        target: Target,
        fault: ApiFault,
        retry_after: Option<Duration>,
    ) -> SourceError {
        match (fault.status, fault.code.as_str()) {
            (_, "ModelArts.2775") => SourceError::JobNotFound { target, fault },
            (_, "ModelArts.2818" | "ModelArts.2776") => SourceError::LogNotReady { target, fault },
            (_, "ModelArts.2819" | "ModelArts.2820" | "ModelArts.2822") => {
                SourceError::LogGone { target, fault }
            }
            (429, _) | (_, "APIG.0308" | "ModelArts.2799") => SourceError::Throttled {
                target,
                fault,
                retry_after,
            },
            (401, _) | (_, "APIG.0301") => SourceError::Unauthorized { target, fault },
            (403, _) | (_, "ModelArts.2771") => SourceError::PermissionDenied { target, fault },
            (500..=599, _) => SourceError::Server { target, fault },
            _ => SourceError::Rejected { target, fault },
        }
    }
}

/// Parses an error body in any of the shapes the SDK accepts; unknown bodies keep
/// only the status.
pub fn parse_fault(status: u16, body: &[u8]) -> ApiFault {
    #[derive(serde::Deserialize, Default)]
    struct Body {
        error_code: Option<String>,
        error_msg: Option<String>,
        #[serde(rename = "errorCode")]
        error_code_camel: Option<String>,
        #[serde(rename = "errorMsg")]
        error_msg_camel: Option<String>,
        code: Option<serde_json::Value>,
        message: Option<String>,
    }
    let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed
        .error_code
        .or(parsed.error_code_camel)
        .or(parsed.code.map(|c| match c {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
        .unwrap_or_default();
    let mut message = parsed
        .error_msg
        .or(parsed.error_msg_camel)
        .or(parsed.message)
        .unwrap_or_default();
    // Keep messages short and single-line in logs and the index.
    message.truncate(300);
    ApiFault {
        status,
        code,
        message: message.replace('\n', " "),
    }
}

impl crate::backoff::Retryable for SourceError {
    fn is_retryable(&self) -> bool {
        SourceError::is_retryable(self)
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        SourceError::retry_after(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_status_labels() {
        let fault = |status| ApiFault {
            status,
            code: String::new(),
            message: String::new(),
        };
        let throttled = SourceError::Throttled {
            target: Target::Search,
            fault: fault(429),
            retry_after: None,
        };
        assert_eq!(throttled.http_status(), Some(429));
        let transport = SourceError::Transport {
            target: Target::Search,
            message: "refused".into(),
        };
        assert_eq!(transport.http_status(), None);
    }

    fn classify(status: u16, code: &str) -> SourceError {
        let fault = ApiFault {
            status,
            code: code.into(),
            message: String::new(),
        };
        SourceError::from_response(Target::Search, fault, None)
    }

    #[test]
    fn errors_are_classified_by_meaning() {
        assert!(matches!(
            classify(400, "ModelArts.2775"),
            SourceError::JobNotFound { .. }
        ));
        assert!(matches!(
            classify(400, "ModelArts.2818"),
            SourceError::LogNotReady { .. }
        ));
        for code in ["ModelArts.2819", "ModelArts.2820"] {
            assert!(matches!(classify(400, code), SourceError::LogGone { .. }));
        }
        assert!(matches!(
            classify(429, "APIG.0308"),
            SourceError::Throttled { .. }
        ));
        assert!(matches!(
            classify(429, "ModelArts.2799"),
            SourceError::Throttled { .. }
        ));
        assert!(matches!(
            classify(401, "APIG.0301"),
            SourceError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(403, "ModelArts.0108"),
            SourceError::PermissionDenied { .. }
        ));
        assert!(matches!(classify(503, ""), SourceError::Server { .. }));
        assert!(matches!(
            classify(400, "ModelArts.2764"),
            SourceError::Rejected { .. }
        ));
        assert!(classify(429, "APIG.0308").is_retryable());
        assert!(classify(502, "").is_retryable());
        assert!(!classify(401, "APIG.0301").is_retryable());
        assert!(!classify(403, "ModelArts.0108").is_retryable());
    }

    #[test]
    fn fault_bodies_in_all_shapes() {
        let f = parse_fault(
            400,
            br#"{"error_code":"ModelArts.2775","error_msg":"Training job (ID: x) not found."}"#,
        );
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("ModelArts.2775", "Training job (ID: x) not found.")
        );
        let f = parse_fault(400, br#"{"errorCode":"X.1","errorMsg":"m"}"#);
        assert_eq!(f.code, "X.1");
        let f = parse_fault(502, b"<html>bad gateway</html>");
        assert_eq!((f.status, f.code.as_str()), (502, ""));
        assert_eq!(f.to_string(), "HTTP 502");
    }
}
