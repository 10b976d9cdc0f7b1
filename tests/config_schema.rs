//! The configuration checked against the schema it serves: `[[subscriptions]]`
//! fields that are not on the Subscription type and CEL rules that read
//! variables they are not given are refused by `subcar check`, at start-up
//! and on SIGHUP, each named by its key; a rule reading an argument the field
//! does not declare is a warning. SIGHUP also re-introspects the upstream.

mod support;

use std::process::Stdio;
use std::time::Duration;

use subcar::app::AppError;
use subcar::subscriptions::crosscheck::Mismatch;
use support::process::{ConfigFile, Until, output, printed};
use support::upstream::closed_port_url;
use support::{Builder, TestSubcar, TestUpstream, manifest_dir};

/// The realtime subcar (fields `incidentUpdated(severity:)`, `counter`,
/// `item(kind:)`) with `extra` TOML. Keep it while the file is used: it
/// holds the SDL file.
fn realtime(upstream_url: &str, extra: &str) -> Builder {
    TestSubcar::realtime(upstream_url).extra(extra)
}

/// `subcar check` on `builder`'s configuration: exit code and everything printed.
async fn check(builder: &Builder) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = ConfigFile::write(dir.path(), "subcar", builder.clone());
    let out = output(file.check()).await;
    (out.status.code(), printed(&out))
}

#[tokio::test]
async fn check_names_an_unknown_field_and_the_fields_there_are() {
    let config = realtime(
        &closed_port_url(),
        "[[subscriptions]]\nfield = \"counter\"\n[[subscriptions]]\nfield = \"incidentUpdatd\"\n",
    );
    let (code, printed) = check(&config).await;
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains(
            "subscriptions[1].field: \"incidentUpdatd\" is not a field of the Subscription type (fields: incidentUpdated, counter, item)"
        ),
        "{printed}"
    );
    assert!(!printed.contains("configuration: ok"), "{printed}");
}

#[tokio::test]
async fn check_names_a_rule_reading_a_variable_it_is_not_given() {
    let config = realtime(
        &closed_port_url(),
        "[[subscriptions]]\nfield = \"item\"\nfilter = \"evnt.kind == 'a'\"\nallow = \"event.kind == 'a'\"\n",
    );
    let (code, printed) = check(&config).await;
    assert_eq!(code, Some(1), "{printed}");
    for line in [
        "subscriptions[0].filter: \"evnt\" is not a variable of this rule: expected event, args, claims",
        "subscriptions[0].allow: \"event\" is not a variable of this rule: expected args, claims",
    ] {
        assert!(printed.contains(line), "{line} in\n{printed}");
    }
}

#[tokio::test]
async fn check_warns_about_a_filter_reading_an_undeclared_argument() {
    let config = realtime(
        &closed_port_url(),
        "[[subscriptions]]\nfield = \"incidentUpdated\"\nfilter = \"args.severities == null || event.severity in args.severities\"\n",
    );
    let (code, printed) = check(&config).await;
    // Valid (the upstream is not running here): a warning, not an error.
    assert_eq!(code, Some(2), "{printed}");
    assert!(printed.contains("configuration: ok"), "{printed}");
    assert!(
        printed.contains(
            "warning: subscriptions[0].filter: args.severities is always null: \"incidentUpdated\" declares no argument \"severities\" (arguments: severity)"
        ),
        "{printed}"
    );
    let fixed = realtime(
        &closed_port_url(),
        "[[subscriptions]]\nfield = \"incidentUpdated\"\nfilter = \"args.severity == null || event.severity == args.severity\"\n",
    );
    let (_, printed) = check(&fixed).await;
    assert!(!printed.contains("warning"), "{printed}");
}

/// Start-up refuses what `check` refuses, also when the upstream's part of
/// the schema is still to be introspected.
#[tokio::test]
async fn start_refuses_an_unknown_field_and_an_unknown_variable() {
    let upstream = TestUpstream::start().await;
    let refused = realtime(
        &upstream.url(),
        "[[subscriptions]]\nfield = \"incidentUpdatd\"\n[[subscriptions]]\nfield = \"counter\"\nfilter = \"payload > 1\"\n",
    )
    .introspect()
    .try_spawn()
    .await;
    let Err(AppError::CrossCheck(e)) = refused else {
        panic!("start-up was not refused by the cross-check");
    };
    assert!(
        matches!(&e.0[..], [
            Mismatch::UnknownField { index: 0, field, .. },
            Mismatch::UnknownVariable { index: 1, rule, variable, .. },
        ] if field == "incidentUpdatd" && rule == "filter" && variable == "payload"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = realtime(&upstream.url(), "[[subscriptions]]\nfield = \"nope\"\n");
    let file = ConfigFile::write(dir.path(), "subcar", config.clone());
    let out = output({
        let mut run = support::process::subcar();
        run.arg("--config").arg(&file.path);
        run
    })
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", printed(&out));
    assert!(
        printed(&out).contains("subscriptions[0].field: \"nope\" is not a field"),
        "{}",
        printed(&out)
    );
}

/// A reloaded file whose `[[subscriptions]]` do not fit the schema is
/// refused whole; the running configuration stays.
#[tokio::test]
async fn sighup_refuses_a_file_that_does_not_fit_the_schema() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let running = realtime(&upstream.url(), "");
    let file = ConfigFile::write(dir.path(), "subcar", running.clone());
    let mut subcar = file.start(Stdio::piped(), Until::Listening).await;
    let changed = running
        .clone()
        .extra("[[subscriptions]]\nfield = \"countr\"\n[log]\nfilter = \"debug\"\n");
    let (mut applied, mut refused) = (false, false);
    subcar
        .reload(&file, changed, |line| {
            applied |= line.contains("log.filter applied");
            refused |= line.contains("configuration reload refused");
            refused && line.contains("subscriptions[0].field: \"countr\" is not a field")
        })
        .await;
    assert!(!applied, "nothing of a refused file is applied");
    let health = reqwest::get(format!("http://{}/healthz", file.addrs.public))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    subcar.child.kill().await.unwrap();
}

/// With `schema.refresh_interval = "0s"` the schema is refreshed on SIGHUP
/// only: a redeployed API's new field is learned then.
#[tokio::test]
async fn sighup_refreshes_the_upstream_schema() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = TestSubcar::builder(upstream.url())
        .introspect()
        .schema_path(manifest_dir().join("tests/fixtures/enrich/schema.graphql"))
        .schema("refresh_interval = \"0s\"");
    let file = ConfigFile::write(dir.path(), "subcar", config);
    let subcar = file.start(Stdio::null(), Until::Listening).await;
    let sdl_url = format!("http://{}/graphql/schema.graphql", file.addrs.public);
    let sdl = || async { reqwest::get(&sdl_url).await.unwrap().text().await.unwrap() };
    assert!(sdl().await.contains("type Ticket"));
    upstream.evolve();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sdl().await.contains("priority"),
        "no refresh without SIGHUP"
    );

    subcar.signal("-HUP");
    for _ in 0..100 {
        if sdl().await.contains("priority") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("SIGHUP did not refresh the upstream schema");
}
