//! The deploy files must keep working as the configuration grows: the
//! image's default configuration and every Kubernetes overlay's
//! configuration are loaded and built as subcar would, and the manifests are
//! checked against what that configuration binds. These read the files in
//! the repository directly (no kubectl); `.ci/deploy-check` renders the
//! overlays and validates them against the Kubernetes schemas.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use subcar::app::App;
use subcar::config::{BusKind, Config};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `KEY=VALUE` lines of a kustomize env file (what `envFrom` puts in
/// the container's environment).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Copies the files of the Dockerfile's final stage that come from the
/// build context (`COPY src dst`, not `--from`) into `root`, laid out as in
/// the image; returns the image's `SUBCAR_CONFIG`.
fn stage_image(dockerfile: &str, root: &Path) -> PathBuf {
    let final_stage = dockerfile.rsplit("\nFROM ").next().expect("a final stage");
    for line in final_stage.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["COPY", src, dst] = words[..] {
            let target = root.join(dst.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(repo().join(src), &target)
                .unwrap_or_else(|e| panic!("COPY {src} {dst}: {e}"));
        }
    }
    let config = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("ENV SUBCAR_CONFIG="))
        .expect("the image sets SUBCAR_CONFIG");
    root.join(config.trim().trim_start_matches('/'))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn image_default_config_binds_what_a_pod_needs_and_builds() {
    let dir = tempfile::tempdir().unwrap();
    let path = stage_image(&read("deploy/Dockerfile"), dir.path());
    let config = Config::load(&path, std::iter::empty()).expect("the image's config loads");
    assert_eq!(config.server.listen, addr("0.0.0.0:4000"), "public");
    assert_eq!(
        config.admin.listen,
        addr("0.0.0.0:9464"),
        "admin on the pod IP: the kubelet's probes and Prometheus reach it"
    );
    assert_eq!(
        config.webhook.listen,
        addr("127.0.0.1:4001"),
        "webhook stays inside the pod"
    );
    let exposed = read("deploy/Dockerfile");
    assert!(exposed.contains("EXPOSE 4000 4001 9464"), "EXPOSE matches");
    App::build(config).expect("the image's config and schema build an app");
}

/// The directories under deploy/kubernetes that choose a bus: each has a
/// `subcar.env` that replaces the base's.
fn overlays() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "base")
        .filter(|name| {
            repo()
                .join("deploy/kubernetes")
                .join(name)
                .join("subcar.env")
                .exists()
        })
        .collect();
    found.sort();
    found
}

/// What one pod of `overlay` runs with: the base ConfigMap's files plus the
/// overlay's environment.
fn overlay_config(overlay: &str, dir: &Path) -> Config {
    for file in ["subcar.toml", "schema.graphql"] {
        std::fs::copy(
            repo().join("deploy/kubernetes/base").join(file),
            dir.join(file),
        )
        .unwrap();
    }
    let env = env_file(&read(&format!("deploy/kubernetes/{overlay}/subcar.env")));
    Config::load(&dir.join("subcar.toml"), env)
        .unwrap_or_else(|e| panic!("overlay {overlay}: configuration: {e}"))
}

#[test]
fn every_overlay_config_loads_and_builds_with_its_bus() {
    assert_eq!(overlays(), ["memory", "nats", "redis"]);
    for (overlay, bus) in [
        ("memory", BusKind::Memory),
        ("redis", BusKind::Redis),
        ("nats", BusKind::Nats),
    ] {
        let kustomization = read(&format!("deploy/kubernetes/{overlay}/kustomization.yaml"));
        for line in [
            "- ../base",
            "name: subcar-env",
            "behavior: replace",
            "- subcar.env",
        ] {
            assert!(
                kustomization.contains(line),
                "{overlay}/kustomization.yaml replaces the base's environment: {line}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let config = overlay_config(overlay, dir.path());
        assert_eq!(config.bus.kind, bus, "overlay {overlay}");
        assert_eq!(config.server.listen, addr("0.0.0.0:4000"));
        assert_eq!(config.admin.listen, addr("0.0.0.0:9464"));
        assert_eq!(
            config.webhook.listen.ip().to_string(),
            "127.0.0.1",
            "webhook stays inside the pod"
        );
        // Connects only once running: building needs no Redis or NATS.
        App::build(config).unwrap_or_else(|e| panic!("overlay {overlay}: {e}"));
    }
}

/// The base's schema is a copy of the example's, not a reference to it:
/// kustomize reads generator files only from inside the kustomization root
/// (a `../` path or a symlink out of it is refused). This keeps the copy
/// from drifting: the same SDL, comments and descriptions aside.
#[test]
fn base_schema_is_the_example_schema() {
    let sdl = |path: &str| -> Vec<String> {
        read(path)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('"'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        sdl("deploy/kubernetes/base/schema.graphql"),
        sdl("examples/schema.graphql")
    );
}

#[test]
fn base_config_without_overlay_is_the_memory_bus() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["subcar.toml", "schema.graphql"] {
        std::fs::copy(
            repo().join("deploy/kubernetes/base").join(file),
            dir.path().join(file),
        )
        .unwrap();
    }
    let env = env_file(&read("deploy/kubernetes/base/subcar.env"));
    let config = Config::load(&dir.path().join("subcar.toml"), env).unwrap();
    assert_eq!(config.bus.kind, BusKind::Memory);
    App::build(config).unwrap();
}

/// The `- name:` entries of the pod's `containers:` list, in order.
fn container_names(deployment: &str) -> Vec<String> {
    deployment
        .lines()
        .skip_while(|l| l.trim() != "containers:")
        .skip(1)
        .take_while(|l| l.trim() != "volumes:")
        .filter_map(|l| l.strip_prefix("        - name: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn deployment_matches_the_config_and_is_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let config = overlay_config("memory", dir.path());
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    let public = config.server.listen.port();
    let admin = config.admin.listen.port();
    for needed in [
        format!("containerPort: {public}"),
        format!("containerPort: {admin}"),
        format!("prometheus.io/port: \"{admin}\""),
        "prometheus.io/scrape: \"true\"".to_owned(),
        "prometheus.io/path: /metrics".to_owned(),
        "path: /readyz".to_owned(),
        "path: /healthz".to_owned(),
        "runAsNonRoot: true".to_owned(),
        "type: RuntimeDefault".to_owned(),
        "readOnlyRootFilesystem: true".to_owned(),
        "runAsUser: 65532".to_owned(),
    ] {
        assert!(deployment.contains(&needed), "deployment.yaml: {needed}");
    }
    // Every container: no privilege escalation, no capabilities.
    let containers = container_names(&deployment);
    assert_eq!(containers, ["api", "subcar"]);
    assert_eq!(
        deployment
            .matches("allowPrivilegeEscalation: false")
            .count(),
        containers.len()
    );
    assert_eq!(
        deployment.matches("drop: [\"ALL\"]").count(),
        containers.len()
    );
    // The webhook is loopback: the Service exposes subcar's public port only.
    let service = read("deploy/kubernetes/base/service.yaml");
    assert!(service.contains("targetPort: graphql"));
    assert!(!service.contains(&config.webhook.listen.port().to_string()));
    let kustomization = read("deploy/kubernetes/base/kustomization.yaml");
    for resource in ["deployment.yaml", "service.yaml", "pdb.yaml"] {
        assert!(
            kustomization.contains(&format!("- {resource}")),
            "{resource}"
        );
    }
    let pdb = read("deploy/kubernetes/base/pdb.yaml");
    assert!(
        pdb.contains("kind: PodDisruptionBudget") && pdb.contains("app.kubernetes.io/name: api")
    );
}

#[test]
fn native_sidecar_component_moves_the_subcar_container() {
    let component = read("deploy/kubernetes/components/native-sidecar/kustomization.yaml");
    // The JSON patch addresses subcar by its index in the base's list.
    let containers = container_names(&read("deploy/kubernetes/base/deployment.yaml"));
    let index = containers.iter().position(|c| c == "subcar").unwrap();
    assert!(component.contains(&format!(
        "path: /spec/template/spec/containers/{index}/name\n        value: subcar"
    )));
    assert!(component.contains(&format!("from: /spec/template/spec/containers/{index}")));
    assert!(component.contains(
        "path: /spec/template/spec/initContainers/0/restartPolicy\n        value: Always"
    ));
    assert!(component.contains("kind: Component"));
    let overlay = read("deploy/kubernetes/native-sidecar/kustomization.yaml");
    assert!(overlay.contains("- ../components/native-sidecar") && overlay.contains("- ../memory"));
}

#[test]
fn podmonitor_selects_the_pods_and_scrapes_the_admin_port() {
    let monitor = read("deploy/kubernetes/monitoring/podmonitor.yaml");
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    assert!(monitor.contains("kind: PodMonitor"));
    // The label the base kustomization puts on the pods.
    let label = "app.kubernetes.io/name: api";
    assert!(read("deploy/kubernetes/base/kustomization.yaml").contains(label));
    assert!(monitor.contains(&format!("matchLabels:\n      {label}")));
    assert!(monitor.contains("- port: admin\n      path: /metrics"));
    assert!(deployment.contains("- name: admin\n              containerPort: 9464"));
    // Kept out of every overlay: the CRD may be missing.
    for overlay in overlays() {
        let k = read(&format!("deploy/kubernetes/{overlay}/kustomization.yaml"));
        assert!(!k.contains("monitoring"), "{overlay}");
    }
}
