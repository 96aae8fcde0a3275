//! Tests of `s3`.

use super::*;

fn config(endpoint: Option<&str>, addressing: Addressing) -> S3Config {
    S3Config {
        bucket: "logs".into(),
        prefix: String::new(),
        endpoint: endpoint.map(|e| Url::parse(e).unwrap()),
        region: "cn-north-4".into(),
        addressing,
        ca_bundle: None,
        access_key_file: None,
        secret_key_file: None,
        session_token_file: None,
        part_size: DEFAULT_PART_SIZE,
        max_retries: DEFAULT_MAX_RETRIES,
    }
}

#[test]
fn virtual_hosted_endpoint_gets_the_bucket() {
    let obs = config(
        Some("https://obs.cn-north-4.myhuaweicloud.com"),
        Addressing::Virtual,
    );
    assert_eq!(
        request_endpoint(&obs).unwrap(),
        "https://logs.obs.cn-north-4.myhuaweicloud.com"
    );
    let already = config(
        Some("https://logs.obs.cn-north-4.myhuaweicloud.com/"),
        Addressing::Virtual,
    );
    assert_eq!(
        request_endpoint(&already).unwrap(),
        "https://logs.obs.cn-north-4.myhuaweicloud.com"
    );
    let minio = config(Some("http://127.0.0.1:9000/"), Addressing::Path);
    assert_eq!(request_endpoint(&minio).unwrap(), "http://127.0.0.1:9000");
    assert_eq!(request_endpoint(&config(None, Addressing::Virtual)), None);
}

#[test]
fn list_uploads_answer_parses() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>logs</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/b.log</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/a.log</Key><UploadId>u1</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated>
<StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>p/b.log</Key><UploadId>u2</UploadId><Initiated>2026-01-02T00:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
    let page: ListUploadsResult = quick_xml::de::from_str(xml).unwrap();
    assert!(page.is_truncated);
    assert_eq!(page.uploads.len(), 2);
    assert_eq!(page.uploads[1].upload_id, "u2");
    assert_eq!(page.next_key_marker.as_deref(), Some("p/b.log"));
    let empty =
        "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
    let page: ListUploadsResult = quick_xml::de::from_str(empty).unwrap();
    assert!(page.uploads.is_empty());
}

#[test]
fn error_documents_are_recognised() {
    let body =
        "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
    assert_eq!(error_code(body).as_deref(), Some("NoSuchBucket"));
    assert_eq!(error_code("<CopyObjectResult/>"), None);
}

#[test]
fn metadata_values_are_header_safe() {
    assert_eq!(meta_value("worker-0"), "worker-0");
    assert_eq!(meta_value("a%b"), "a%25b");
    assert_eq!(meta_value("训练"), "%E8%AE%AD%E7%BB%83");
    assert_eq!(meta_value("x\ny"), "x%0Ay");
}

/// GUARD: secrets never reach Debug output.
#[test]
fn credentials_debug_shows_a_prefix_only() {
    let c = S3Credentials {
        access_key: "AKIAEXAMPLEKEY".into(),
        secret_key: "very-secret".into(),
        session_token: Some("token-secret".into()),
    };
    let text = format!("{c:?}");
    assert!(
        text.contains("AKIA") && !text.contains("EXAMPLEKEY"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}
