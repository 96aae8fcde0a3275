//! End-to-end checks of the simulator over real HTTP on 127.0.0.1 with reqwest,
//! one scenario per test: the ModelArts API (`api.rs`), links and downloads
//! (`obs.rs`), every fault kind (`faults.rs`) and the benchmark's extras
//! (`control.rs`). This file holds the harness.

mod api;
mod control;
mod faults;
mod obs;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;

use super::{SimConfig, Simulator};
use crate::source::sign::{
    DATE_FORMAT, SignableRequest, authorization, content_sha256_header, encode_component,
};

pub const JOB: &str = "3faf5c03-aaa1-4cbe-879d-24b05d997347";
pub const RUNNING: &str = "b7e3a9d1-24c6-4f58-8a0e-6d2c91f4e7b3";
pub const CREATING: &str = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b";

/// A started demo simulator and a client that signs like the Python SDK.
pub struct Harness {
    pub sim: Simulator,
    pub http: reqwest::Client,
    pub config: SimConfig,
}

impl Harness {
    pub async fn start(config: SimConfig) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(listener, config.clone()).await.unwrap();
        Harness {
            sim,
            http: reqwest::Client::new(),
            config,
        }
    }

    pub async fn demo() -> Harness {
        Harness::start(SimConfig::demo()).await
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/v2/{}/{rest}", self.config.project_id)
    }

    /// Sends a request signed with the simulator's credentials.
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let mut headers = vec![
            ("Host".to_owned(), self.sim.addr().to_string()),
            (
                "X-Sdk-Date".to_owned(),
                chrono::Utc::now().format(DATE_FORMAT).to_string(),
            ),
            ("Content-Type".to_owned(), content_type.to_owned()),
            ("X-Project-Id".to_owned(), self.config.project_id.clone()),
        ];
        headers.extend(content_sha256_header(&headers));
        let req = SignableRequest {
            method,
            raw_path: path,
            query: &[],
            headers: &headers,
            body: &body,
        };
        let auth = authorization(&req, &self.config.access_key, &self.config.secret_key);
        let mut builder = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.sim.endpoint()),
            )
            .header("Authorization", auth)
            .body(body);
        for (name, value) in &headers {
            builder = builder.header(name, value);
        }
        builder.send().await.unwrap()
    }

    pub async fn get_json(&self, rest: &str) -> (StatusCode, Value) {
        let response = self
            .signed("GET", &self.path(rest), "application/json", None)
            .await;
        (response.status(), response.json().await.unwrap())
    }

    pub async fn search(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .signed(
                "POST",
                &self.path("training-job-searches"),
                "application/json;charset=utf-8",
                Some(body),
            )
            .await;
        (response.status(), response.json().await.unwrap())
    }

    /// Asks for a log link the way the archiver does (octet-stream, unsigned payload).
    pub async fn link(&self, job: &str, task: &str) -> (StatusCode, Value) {
        let path = self.path(&format!("training-jobs/{job}/tasks/{task}/logs/url"));
        let response = self
            .signed("GET", &path, "application/octet-stream", None)
            .await;
        (response.status(), response.json().await.unwrap())
    }

    pub async fn link_url(&self, job: &str, task: &str) -> String {
        let (status, body) = self.link(job, task).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["obs_url"].as_str().unwrap().to_owned()
    }
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Reads a body to the end; returns the bytes received and whether it broke.
pub async fn read_body(response: reqwest::Response) -> (usize, bool) {
    let mut stream = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}
