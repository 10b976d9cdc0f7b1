//! TLS on the public listener, with a self-signed certificate made here.

mod support;

use serde_json::json;
use support::{TestSubcar, TestUpstream};

#[tokio::test]
async fn https_with_http1_and_http2_over_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, tls) = support::self_signed_tls(dir.path());

    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url())
        .extra(&tls)
        .spawn()
        .await;
    let url = format!("https://localhost:{}/graphql", subcar.addr.port());
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();

    for (client, version) in [
        (
            reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .http1_only()
                .build()
                .unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (
            reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .build()
                .unwrap(),
            reqwest::Version::HTTP_2,
        ),
    ] {
        let res = client
            .post(&url)
            .json(&json!({"query": "{ hello }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.version(), version);
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap()["data"]["hello"],
            "Hello, world!"
        );
    }
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");

    // Plain HTTP on the TLS port does not get through.
    let plain = reqwest::Client::new()
        .post(format!("http://localhost:{}/graphql", subcar.addr.port()))
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await;
    assert!(plain.is_err());
}

#[tokio::test]
async fn unusable_tls_files_fail_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("tls.crt");
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let text = TestSubcar::builder("http://127.0.0.1:1/graphql")
        .extra(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert_path.display(),
            dir.path().join("missing.key").display()
        ))
        .config_text();
    let config = subcar::config::Config::parse(&text, std::iter::empty()).unwrap();
    let err = subcar::app::App::build(config)
        .err()
        .expect("bad TLS files are refused")
        .to_string();
    assert!(err.contains("server.tls.cert"), "{err}");
}
