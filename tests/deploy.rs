//! The Kubernetes example must keep working as the configuration grows: the
//! ConfigMap's subcar.toml and schema are loaded as subcar would load them.

use std::path::Path;

/// The lines of a `key: |` block scalar in a ConfigMap, dedented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().expect("the key is present");
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn configmap_config_and_schema_load() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/configmap.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("subcar.toml"), block(&yaml, "subcar.toml")).unwrap();
    std::fs::write(
        dir.path().join("schema.graphql"),
        block(&yaml, "schema.graphql"),
    )
    .unwrap();

    let config =
        subcar::config::Config::load(&dir.path().join("subcar.toml"), std::iter::empty()).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:4000");
    assert_eq!(
        config.webhook.listen.ip().to_string(),
        "127.0.0.1",
        "webhook stays inside the pod"
    );
    subcar::app::App::build(config).expect("the example's schema and config build an app");
}
