//! Config parsing and validation tests.
use super::*;

const MINIMAL: &str = r#"
    [modelarts]
    endpoint = "https://modelarts.cn-north-4.myhuaweicloud.com"
    project_id = "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
    [jobs]
    ids = ["3faf5c03-aaa1-4cbe-879d-24b05d997347"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/malog"))
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { key, .. } => key.to_owned(),
        other => panic!("expected an Invalid error, got {other}"),
    }
}

#[test]
fn minimal_config_gets_defaults_and_resolved_paths() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.fetch.concurrency, defaults::CONCURRENCY);
    assert_eq!(c.index_path, Path::new("/etc/malog/index.sqlite"));
    assert_eq!(c.storage.root, Path::new("/etc/malog/archive"));
}

/// GUARD: the shipped example must always parse and validate.
#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config.example.toml");
    let c = parse(text).unwrap();
    assert!(c.sources[0].jobs.discover);
    // Installed as /etc/malog/malog.toml by the package: the service's state directory.
    assert!(c.index_path.starts_with("/var/lib/malog"));
    assert!(c.storage.root.starts_with("/var/lib/malog"));
}

#[test]
fn unknown_key_is_named() {
    let err = parse(&format!("{MINIMAL}\n[fetch]\nconcurency = 3\n")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("concurency"), "{text}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (
            "endpoint = \"https://modelarts.cn-north-4.myhuaweicloud.com\"",
            "endpoint = \"ftp://x\"",
            "modelarts.endpoint",
        ),
        (
            "project_id = \"0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d\"",
            "project_id = \"../x\"",
            "modelarts.project_id",
        ),
        (
            "ids = [\"3faf5c03-aaa1-4cbe-879d-24b05d997347\"]",
            "ids = []",
            "jobs",
        ),
    ];
    for (from, to, key) in cases {
        assert_eq!(key_of(parse(&MINIMAL.replace(from, to)).unwrap_err()), key);
    }
    let extra = [
        ("[fetch]\nconcurrency = 0", "fetch.concurrency"),
        ("[fetch]\nidle_timeout = \"0s\"", "fetch.idle_timeout"),
        ("[storage]\nkind = \"ftp\"", "storage.kind"),
        (
            "[storage]\nlayout = \"../{job_id}/{task_id}\"",
            "storage.layout",
        ),
    ];
    for (tail, key) in extra {
        assert_eq!(
            key_of(parse(&format!("{MINIMAL}\n{tail}\n")).unwrap_err()),
            key,
            "{tail}"
        );
    }
    let jobs_tail = [
        ("created_after = \"yesterday\"", "jobs.created_after"),
        ("phases = [\"Done\"]", "jobs.phases"),
        ("name_pattern = \"(\"", "jobs.name_pattern"),
    ];
    for (line, key) in jobs_tail {
        let text = MINIMAL.replace("[jobs]", &format!("[jobs]\n{line}"));
        assert_eq!(key_of(parse(&text).unwrap_err()), key, "{line}");
    }
}

#[test]
fn created_after_forms() {
    assert_eq!(
        parse_created_after("30d", "jobs.created_after").unwrap(),
        CreatedAfter::Within(Duration::from_secs(30 * 86400))
    );
    assert_eq!(
        parse_created_after("1970-01-02", "jobs.created_after").unwrap(),
        CreatedAfter::Since(86_400_000)
    );
    assert_eq!(
        parse_created_after("1970-01-01T00:00:01Z", "jobs.created_after").unwrap(),
        CreatedAfter::Since(1000)
    );
    assert_eq!(
        CreatedAfter::Within(Duration::from_secs(1)).bound_ms(5000),
        4000
    );
}

#[test]
fn daemon_keys_default_and_validate() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.schedule.cron.expr(), defaults::CRON);
    assert_eq!(c.daemon.listen.to_string(), defaults::LISTEN);
    assert_eq!(c.daemon.shutdown_grace, defaults::SHUTDOWN_GRACE);
    assert_eq!(
        c.alerts.retention_warn_after,
        defaults::RETENTION_WARN_AFTER
    );
    // The example shows every daemon key with its default.
    let example = parse(include_str!("../../config.example.toml")).unwrap();
    assert_eq!(example.schedule.cron, c.schedule.cron);
    assert_eq!(example.daemon.listen, c.daemon.listen);
    assert_eq!(example.daemon.shutdown_grace, c.daemon.shutdown_grace);
    assert_eq!(
        example.alerts.retention_warn_after,
        c.alerts.retention_warn_after
    );
    // And every [web] key with its default.
    assert!(!example.web.enabled && !c.web.enabled);
    assert_eq!(example.web.listen, c.web.listen);
    assert_eq!(c.web.listen.to_string(), web_defaults::LISTEN);
    assert_eq!(example.web.auth, WebAuth::None);
    assert_eq!(example.web.search_timeout, web_defaults::SEARCH_TIMEOUT);
    assert_eq!(example.web.search_max_hits, web_defaults::SEARCH_MAX_HITS);
    assert_eq!(example.web.search_max_logs, web_defaults::SEARCH_MAX_LOGS);
    assert_eq!(example.web.log_search_bytes, web_defaults::LOG_SEARCH_BYTES);

    let c = parse(&format!(
        "{MINIMAL}\n[schedule]\ncron = \"30 2 * * *\"\n[daemon]\nlisten = \"0.0.0.0:9100\"\nshutdown_grace = \"5s\"\n[alerts]\nretention_warn_after = \"20d\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.schedule.cron.expr(),
        "0 30 2 * * *",
        "5-field lines get seconds"
    );
    assert_eq!(c.daemon.listen.port(), 9100);
    assert_eq!(
        c.alerts.retention_warn_after,
        Duration::from_secs(20 * 86400)
    );

    let bad = [
        ("[schedule]\ncron = \"every hour\"", "schedule.cron"),
        ("[schedule]\ncron = \"0 0 0 30 2 *\"", "schedule.cron"),
        ("[daemon]\nlisten = \"localhost\"", "daemon.listen"),
        (
            "[alerts]\nretention_warn_after = \"0s\"",
            "alerts.retention_warn_after",
        ),
    ];
    for (tail, key) in bad {
        let err = parse(&format!("{MINIMAL}\n{tail}\n")).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
        assert_eq!(key_of(err), key, "{tail}");
    }
    let err = parse(&format!("{MINIMAL}\n[daemon]\nshutdown_grace = \"soon\"\n")).unwrap_err();
    assert!(err.to_string().contains("shutdown_grace"), "{err}");
}

#[test]
fn storage_s3_and_compression_keys() {
    use crate::storage::Compression;
    use crate::storage::s3::{Addressing, DEFAULT_PART_SIZE};
    let obs = r#"
[storage]
kind = "s3"
bucket = "my-logs"
prefix = "/malog/prod/"
endpoint = "https://obs.cn-north-4.myhuaweicloud.com"
region = "cn-north-4"
access_key_file = "keys/ak"
secret_key_file = "/run/credentials/malog.service/sk"
compression = "zstd"
zstd_level = 9
"#;
    let c = parse(&format!("{MINIMAL}{obs}")).unwrap();
    let s3 = c.storage.s3.expect("kind = s3");
    assert_eq!(s3.prefix, "malog/prod");
    assert_eq!(s3.addressing, Addressing::Virtual);
    assert_eq!(s3.part_size, DEFAULT_PART_SIZE);
    assert_eq!(
        s3.access_key_file.as_deref(),
        Some(Path::new("/etc/malog/keys/ak"))
    );
    assert_eq!(s3.session_token_file, None);
    assert_eq!(
        (c.storage.compression, c.storage.zstd_level),
        (Compression::Zstd, 9)
    );
    assert!(!format!("{s3:?}").is_empty());

    let local = parse(MINIMAL).unwrap();
    assert!(local.storage.s3.is_none());
    assert_eq!(local.storage.compression, Compression::None);
    assert_eq!(local.storage.sync, crate::storage::SyncMode::File);
    let fs = parse(&format!("{MINIMAL}\n[storage]\nsync = \"filesystem\"\n")).unwrap();
    assert_eq!(fs.storage.sync, crate::storage::SyncMode::Filesystem);
    assert!(local.storage.append_in_place);
    let copying = parse(&format!("{MINIMAL}\n[storage]\nappend_in_place = false\n")).unwrap();
    assert!(!copying.storage.append_in_place);

    let s3_base = "[storage]\nkind = \"s3\"\nbucket = \"logs\"\naddressing = \"path\"\n";
    let cases = [
        ("[storage]\nbucket = \"logs\"", "storage.bucket"),
        ("[storage]\nkind = \"s3\"", "storage.bucket"),
        (
            "[storage]\nkind = \"s3\"\nbucket = \"Logs_1\"",
            "storage.bucket",
        ),
        ("[storage]\ncompression = \"gzip\"", "storage.compression"),
        ("[storage]\nsync = \"never\"", "storage.sync"),
        (&format!("{s3_base}sync = \"file\""), "storage.sync"),
        (
            &format!("{s3_base}append_in_place = true"),
            "storage.append_in_place",
        ),
        ("[storage]\nzstd_level = 22", "storage.zstd_level"),
        (&format!("{s3_base}prefix = \"a/../b\""), "storage.prefix"),
        (
            &format!("{s3_base}endpoint = \"s3.example.com\""),
            "storage.endpoint",
        ),
        (
            &format!("{s3_base}endpoint = \"https://h/x\""),
            "storage.endpoint",
        ),
        (
            "[storage]\nkind = \"s3\"\nbucket = \"logs\"\naddressing = \"dns\"",
            "storage.addressing",
        ),
        (&format!("{s3_base}region = \"\""), "storage.region"),
        (&format!("{s3_base}part_size = 1000"), "storage.part_size"),
        (&format!("{s3_base}max_retries = 99"), "storage.max_retries"),
        (
            "[storage]\nkind = \"s3\"\nbucket = \"logs\"\nendpoint = \"http://127.0.0.1:9000\"",
            "storage.addressing",
        ),
    ];
    for (tail, key) in cases {
        let text = format!("{MINIMAL}\n{tail}\n");
        assert_eq!(key_of(parse(&text).unwrap_err()), key, "{tail}");
    }
}

const TWO_SOURCES: &str = r#"
    [sources.north]
    endpoint = "https://modelarts.cn-north-4.myhuaweicloud.com"
    project_id = "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
    requests_per_second = 5
    [sources.north.jobs]
    discover = true

    [sources.eu-research]
    endpoint = "https://modelarts.eu-west-101.myhuaweicloud.eu"
    project_id = "1b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
    workspace_id = "2c3d"
    auth = "token"
    [sources.eu-research.jobs]
    ids = ["3faf5c03-aaa1-4cbe-879d-24b05d997347"]
"#;

#[test]
fn sources_tables_each_get_their_own_settings() {
    let c = parse(TWO_SOURCES).unwrap();
    let names: Vec<&str> = c.sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["eu-research", "north"]);
    let (eu, north) = (&c.sources[0], &c.sources[1]);
    assert_eq!(north.modelarts.requests_per_second, 5);
    assert_eq!(
        eu.modelarts.requests_per_second,
        defaults::REQUESTS_PER_SECOND
    );
    assert_eq!(north.modelarts.region.as_deref(), Some("cn-north-4"));
    assert_eq!(eu.modelarts.region.as_deref(), Some("eu-west-101"));
    assert_eq!(eu.modelarts.workspace_id.as_deref(), Some("2c3d"));
    assert!(north.jobs.discover && !eu.jobs.discover);
    assert_eq!(eu.jobs.ids.len(), 1);
    // Several sources: the default layout gets a folder per source.
    assert!(c.storage.layout.uses_source());
}

#[test]
fn the_single_form_is_one_source_named_default() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.sources.len(), 1);
    assert_eq!(c.sources[0].name(), DEFAULT_SOURCE);
    assert!(!c.storage.layout.uses_source(), "the layout is unchanged");
}

#[test]
fn both_forms_together_say_what_to_do() {
    let err = parse(&format!("{MINIMAL}\n{TWO_SOURCES}")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("[sources.default]") && text.contains("not both"),
        "{text}"
    );
}

#[test]
fn source_errors_name_the_source_key() {
    let bad = TWO_SOURCES.replace("requests_per_second = 5", "requests_per_second = 0");
    assert_eq!(
        key_of(parse(&bad).unwrap_err()),
        "sources.north.requests_per_second"
    );
    let bad = TWO_SOURCES.replace("discover = true", "discover = true\nphases = [\"Done\"]");
    assert_eq!(
        key_of(parse(&bad).unwrap_err()),
        "sources.north.jobs.phases"
    );
    let bad = TWO_SOURCES.replace("sources.north", "sources.North");
    assert_eq!(key_of(parse(&bad).unwrap_err()), "sources.North");
    let bad = TWO_SOURCES.replace("requests_per_second = 5", "endpont = \"x\"");
    let text = parse(&bad).unwrap_err().to_string();
    assert!(
        text.contains("sources.north") && text.contains("endpont"),
        "{text}"
    );
}

#[test]
fn with_several_sources_a_layout_must_keep_them_apart() {
    let text = format!("{TWO_SOURCES}\n[storage]\nlayout = \"{{job_id}}/{{task_id}}.log\"\n");
    assert_eq!(key_of(parse(&text).unwrap_err()), "storage.layout");
    let text = format!(
        "{TWO_SOURCES}\n[storage]\nlayout = \"{{region}}/{{source}}/{{job_id}}/{{task_id}}.log\"\n"
    );
    assert!(parse(&text).is_ok());
    // {region} needs every source to know its region.
    let text = format!(
        "{}\n[storage]\nlayout = \"{{region}}/{{source}}/{{job_id}}/{{task_id}}.log\"\n",
        TWO_SOURCES.replace(
            "https://modelarts.cn-north-4.myhuaweicloud.com",
            "http://127.0.0.1:9"
        )
    );
    assert_eq!(key_of(parse(&text).unwrap_err()), "sources.north.region");
}

/// GUARD: each source reads its own secrets: `<source>-ak` in
/// `$CREDENTIALS_DIRECTORY`, `MALOG_<SOURCE>_AK` in the environment; the
/// single form keeps its names.
#[test]
fn each_source_names_its_own_secrets() {
    let c = parse(TWO_SOURCES).unwrap();
    let eu = &c.sources[0].modelarts;
    assert_eq!(eu.credential_name("ak"), "eu-research-ak");
    assert_eq!(
        eu.env_name("HUAWEICLOUD_SDK_SECURITY_TOKEN", "security-token"),
        "MALOG_EU_RESEARCH_SECURITY_TOKEN"
    );
    assert_eq!(
        eu.config_key("token_file"),
        "sources.eu-research.token_file"
    );
    let single = &parse(MINIMAL).unwrap().sources[0].modelarts;
    assert_eq!(single.credential_name("ak"), "ak");
    assert_eq!(
        single.env_name("HUAWEICLOUD_SDK_AK", "ak"),
        "HUAWEICLOUD_SDK_AK"
    );

    let dir = tempfile::tempdir().unwrap();
    let north = &c.sources[1].modelarts;
    std::fs::write(dir.path().join("north-ak"), "NORTH-AK").unwrap();
    std::fs::write(dir.path().join("ak"), "SHARED-AK").unwrap();
    let err = crate::source::Credentials::resolve_in(north, Some(dir.path()))
        .unwrap_err()
        .to_string();
    // The access key was found under the source's name; the secret key is missing.
    assert!(
        err.contains("secret key") && err.contains("north-sk") && err.contains("MALOG_NORTH_SK"),
        "{err}"
    );
}

/// GUARD: the example's "Several sources" block, uncommented in place of
/// [modelarts] and [jobs], must parse and validate too.
#[test]
fn example_sources_block_is_valid() {
    let text = include_str!("../../config.example.toml");
    let (single, sources) = text
        .split_once("# --- Several sources")
        .expect("the example has a sources block");
    let (_, example) = sources
        .split_once("# (A test parses this example")
        .expect("the sources block has its example");
    let block: String = example
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")))
        .map(|l| format!("{l}\n"))
        .collect();
    // The rest of the file without its [modelarts] and [jobs] tables.
    let mut rest = String::new();
    let mut skipping = false;
    for line in single.lines() {
        if line.starts_with('[') {
            skipping = line == "[modelarts]" || line == "[jobs]";
        }
        if !skipping {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    let c = parse(&format!("{rest}\n{block}")).unwrap();
    let names: Vec<&str> = c.sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["default", "eu-research"]);
    assert!(c.storage.layout.uses_source());
    assert_eq!(c.sources[1].modelarts.auth, AuthMethod::Token);
}

/// GUARD: `[web]` keys are checked and named; basic auth needs a user.
#[test]
fn web_keys_are_validated() {
    let err = |extra: &str| {
        parse(&format!("{MINIMAL}\n[web]\n{extra}\n"))
            .unwrap_err()
            .to_string()
    };
    assert!(err("listen = \"nowhere\"").contains("web.listen"));
    assert!(err("auth = \"oauth\"").contains("web.auth"));
    assert!(err("auth = \"basic\"").contains("web.user"));
    assert!(err("search_max_hits = 0").contains("web.search_max_hits"));
    assert!(err("log_search_bytes = 10").contains("web.log_search_bytes"));
    let c = parse(&format!(
        "{MINIMAL}\n[web]\nenabled = true\nauth = \"basic\"\nuser = \"ml\"\nsecret_file = \"web-secret\"\n"
    ))
    .unwrap();
    assert!(c.web.enabled);
    assert_eq!(
        c.web.auth,
        WebAuth::Basic {
            user: "ml".to_owned()
        }
    );
    assert_eq!(
        c.web.secret_file.unwrap(),
        Path::new("/etc/malog/web-secret")
    );
}
