//! Removes secrets from a job record before anything stores or prints it.
//!
//! The fields of a ModelArts job object that can hold secrets are listed in
//! `shared/modelarts-api.md` §2.11; the SDK marks none of them sensitive, so
//! malog decides: keys stay (they say what was configured), values become
//! `"<redacted>"`. Environment variables are redacted whole unless the operator
//! chose `[jobs] keep_environment = true`; parameters and commands only where a
//! name or a `name=value` pair looks like a credential, because the rest is what
//! people come back to read. This module owns the rules, not where they apply.

use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Names of things that hold credentials: `password`, `db_passwd`, `API_KEY`,
/// `hf_token`, `secret_access_key`, `auth`…
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|(^|[_-])(ak|sk)$")
        .expect("static regex")
});

/// `name=value` or `name: value` pairs with a secret-like name, in free text
/// (commands, parameter values); the value ends at a space, quote or separator.
static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)((?:[A-Za-z0-9_.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential))[A-Za-z0-9_.-]*\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"'&;,]+)"#,
    )
    .expect("static regex")
});

/// `--password VALUE` flags (the value after a space).
static SECRET_FLAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(--?[A-Za-z0-9_-]*(?:password|passwd|token|secret|api-key|access-key|secret-key)\s+)([^\s-][^\s]*)")
        .expect("static regex")
});

/// What to keep of a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Keep environment variable values verbatim (`[jobs] keep_environment`).
    pub keep_environment: bool,
}

impl Redaction {
    /// Redacts `record` (a job object) in place.
    pub fn apply(self, record: &mut Value) {
        if let Some(algorithm) = record.get_mut("algorithm") {
            self.algorithm(algorithm);
        }
        if let Some(tasks) = record.get_mut("tasks").and_then(Value::as_array_mut) {
            for task in tasks {
                if let Some(algorithm) = task.get_mut("algorithm") {
                    self.algorithm(algorithm);
                }
            }
        }
        if let Some(annotations) = record.pointer_mut("/metadata/annotations") {
            redact_values(annotations);
        }
        if let Some(endpoints) = record.get_mut("endpoints").and_then(Value::as_object_mut) {
            for endpoint in endpoints.values_mut() {
                if let Some(token) = endpoint.get_mut("token") {
                    *token = Value::from(REDACTED);
                }
            }
        }
        if !self.keep_environment
            && let Some(envs) = record
                .pointer_mut("/ftjob_config/task_env/envs")
                .and_then(Value::as_array_mut)
        {
            for env in envs {
                if let Some(value) = env.get_mut("value") {
                    *value = Value::from(REDACTED);
                }
            }
        }
    }

    fn algorithm(self, algorithm: &mut Value) {
        if !self.keep_environment
            && let Some(envs) = algorithm.get_mut("environments")
        {
            // The response schema says an array of maps, the create request one
            // map: accept both.
            match envs {
                Value::Array(maps) => maps.iter_mut().for_each(redact_values),
                other => redact_values(other),
            }
        }
        if let Some(command) = algorithm.get_mut("command") {
            scrub(command);
        }
        if let Some(parameters) = algorithm
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        {
            for parameter in parameters {
                let secret_name = parameter
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| SECRET_NAME.is_match(n));
                if let Some(value) = parameter.get_mut("value") {
                    if secret_name {
                        *value = Value::from(REDACTED);
                    } else {
                        scrub(value);
                    }
                }
            }
        }
    }
}

/// Replaces every value of a string map (or of each map in an array) by [`REDACTED`].
fn redact_values(map: &mut Value) {
    match map {
        Value::Object(entries) => {
            for value in entries.values_mut() {
                *value = Value::from(REDACTED);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_values),
        Value::Null => {}
        other => *other = Value::from(REDACTED),
    }
}

/// Redacts secret-looking pairs and flags inside a string value.
fn scrub(value: &mut Value) {
    if let Value::String(text) = value {
        let once = SECRET_PAIR.replace_all(text, format!("${{1}}{REDACTED}"));
        let twice = SECRET_FLAG.replace_all(&once, format!("${{1}}{REDACTED}"));
        if twice != text.as_str() {
            *text = twice.into_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({
            "metadata": {"id": "j", "name": "n", "annotations": {"owner": "alice-token-xyz"}},
            "algorithm": {
                "command": "python train.py --password hunter2 --epochs 3 DB_URL=postgres://u:p@h token=abc123",
                "parameters": [
                    {"name": "lr", "value": "0.1"},
                    {"name": "db_password", "value": "hunter2"},
                    {"name": "extra", "value": "--api_key=sk-live-1 --batch 8"}
                ],
                "environments": [{"HF_TOKEN": "hf_secret", "EPOCHS": "3"}]
            },
            "tasks": [{"algorithm": {"environments": {"WANDB_API_KEY": "w-secret"}}}],
            "endpoints": {"jupyter_lab": {"token": "jl-secret"}, "ssh": {"key_pair_names": ["kp"]}},
            "ftjob_config": {"task_env": {"envs": [{"env_name": "X", "value": "ft-secret"}]}}
        })
    }

    /// GUARD: no value of §2.11's fields survives; keys and harmless values stay.
    #[test]
    fn secrets_are_redacted_and_keys_kept() {
        let mut r = record();
        Redaction::default().apply(&mut r);
        let text = r.to_string();
        for secret in [
            "hunter2",
            "abc123",
            "sk-live-1",
            "hf_secret",
            "w-secret",
            "jl-secret",
            "ft-secret",
            "alice-token-xyz",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(r["algorithm"]["environments"][0]["EPOCHS"], REDACTED);
        assert_eq!(r["algorithm"]["parameters"][0]["value"], "0.1");
        assert_eq!(
            r["algorithm"]["parameters"][2]["value"],
            "--api_key=<redacted> --batch 8"
        );
        let command = r["algorithm"]["command"].as_str().unwrap();
        assert!(command.contains("--epochs 3"), "{command}");
        assert!(command.contains("--password <redacted>"), "{command}");
        assert_eq!(r["endpoints"]["ssh"]["key_pair_names"], json!(["kp"]));
        assert!(r["tasks"][0]["algorithm"]["environments"]["WANDB_API_KEY"] == REDACTED);
    }

    #[test]
    fn keep_environment_keeps_only_the_environment() {
        let mut r = record();
        Redaction {
            keep_environment: true,
        }
        .apply(&mut r);
        assert_eq!(r["algorithm"]["environments"][0]["HF_TOKEN"], "hf_secret");
        assert_eq!(r["algorithm"]["parameters"][1]["value"], REDACTED);
        assert!(!r.to_string().contains("jl-secret"));
    }
}
