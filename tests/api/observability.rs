//! The shipped alerting rules (deploy/prometheus/alerts.yaml) and Grafana
//! dashboard (deploy/grafana/recordhook.json) name only metrics a running
//! server exposes: a renamed metric breaks this test, not an alert at 3 am.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A file of the repository, as text.
fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Each alert's name and PromQL expression.
fn alert_expressions() -> Vec<(String, String)> {
    let rules: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/prometheus/alerts.yaml")).unwrap();
    let groups = rules["groups"].as_sequence().unwrap();
    groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap())
        .map(|rule| {
            let name = rule["alert"].as_str().unwrap().to_owned();
            let expr = rule["expr"].as_str().unwrap().to_owned();
            (name, expr)
        })
        .collect()
}

/// The dashboard, parsed.
fn dashboard() -> Value {
    serde_json::from_str(&repo_file("deploy/grafana/recordhook.json")).unwrap()
}

/// Each dashboard query's panel title and PromQL expression.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |target| (title.clone(), target["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

/// The `recordhook_…` metric names `expr` selects, exactly as written
/// (`…_total`, `…_bucket`: the names of the series Prometheus stores).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for (start, _) in expr.match_indices("recordhook_") {
        let before = expr[..start].chars().next_back();
        if before.is_some_and(|c| is_name_char(c) || c.is_ascii_uppercase()) {
            continue;
        }
        let name: String = expr[start..]
            .chars()
            .take_while(|&c| is_name_char(c))
            .collect();
        names.insert(name);
    }
    names
}

/// Every metric name the rules and the dashboard select, with where.
fn referenced_metrics(expressions: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut referenced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (place, expr) in expressions {
        for name in metric_names(expr) {
            referenced.entry(name).or_default().push(place.clone());
        }
    }
    referenced
}

/// The names of the samples in a `/metrics` text: `x_total`, `x_bucket`,
/// `x_sum`, `x_count`, gauges by their own name. Comment lines (`# TYPE`)
/// do not count: a series must hold a value for an alert to see it.
fn exposed_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Referenced names not among `exposed`, each with where it is used.
fn missing<'a>(
    referenced: &'a BTreeMap<String, Vec<String>>,
    exposed: &BTreeSet<String>,
) -> Vec<(&'a String, &'a Vec<String>)> {
    referenced
        .iter()
        .filter(|(name, _)| !exposed.contains(*name))
        .collect()
}

/// The rules' and the dashboard's expressions together.
fn all_expressions() -> Vec<(String, String)> {
    let mut expressions: Vec<(String, String)> = alert_expressions()
        .into_iter()
        .map(|(alert, expr)| (format!("alert {alert}"), expr))
        .collect();
    expressions.extend(
        dashboard_expressions(&dashboard())
            .into_iter()
            .map(|(panel, expr)| (format!("panel {panel:?}"), expr)),
    );
    expressions
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_name_is_on_a_running_servers_metrics() {
    let referenced = referenced_metrics(&all_expressions());
    assert!(
        referenced.len() >= 10,
        "too few metric names found, is the extraction broken? {referenced:?}"
    );
    // Served as the README's scrape configuration has it: on the admin
    // listener, without a token.
    let app = spawn_app_with_config(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [\"admin-token-0123456789abcdef\"]\n",
    )
    .await;
    let admin = app.admin_address.clone().unwrap();
    // One callback delivered to the default sink, so the series created on
    // first use (events, deliveries, delivery lag) exist.
    assert_eq!(
        app.post_json(&recording("observability")).await.status(),
        200
    );
    let delivered = r#"recordhook_deliveries_total{sink="console",outcome="delivered"}"#;
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric_at(&admin, delivered).await >= 1.0
        })
        .await,
        "the callback was not delivered"
    );
    let response = reqwest::get(format!("{admin}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let exposed = exposed_names(&response.text().await.unwrap());
    let missing = missing(&referenced, &exposed);
    assert!(
        missing.is_empty(),
        "named by the alerts or the dashboard but not on /metrics: {missing:?}\nexposed: {exposed:?}"
    );
}

#[test]
fn a_name_the_server_does_not_expose_is_reported_with_where_it_is_used() {
    let referenced = referenced_metrics(&[(
        "alert Typo".to_owned(),
        "rate(recordhook_callbacks_total[5m]) > 0 and recordhook_dead_leters > 0".to_owned(),
    )]);
    let exposed = exposed_names(
        "# TYPE recordhook_dead_leters gauge\n\
         recordhook_callbacks_total{outcome=\"accepted\"} 1\n\
         recordhook_dead_letters{sink=\"a\"} 0\n",
    );
    let missing = missing(&referenced, &exposed);
    assert_eq!(
        format!("{missing:?}"),
        r#"[("recordhook_dead_leters", ["alert Typo"])]"#
    );
}

#[test]
fn metric_names_are_read_whole_from_promql() {
    let cases = [
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(recordhook_delivery_lag_seconds_bucket{job=~"$job"}[5m])))"#,
            vec!["recordhook_delivery_lag_seconds_bucket"],
        ),
        (
            r#"a_recordhook_x + recordhook_spool_size_bytes{job="recordhook_job"}"#,
            vec!["recordhook_job", "recordhook_spool_size_bytes"],
        ),
        (r#"up{job="recordhook"} == 0"#, vec![]),
    ];
    for (expr, expected) in cases {
        let names: Vec<String> = metric_names(expr).into_iter().collect();
        assert_eq!(names, expected, "{expr}");
    }
}

#[test]
fn the_dashboard_takes_its_prometheus_data_source_as_a_variable() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    assert!(!dashboard_expressions(&dashboard).is_empty());
}

/// `expr` with the dashboard's variables replaced by what Grafana would
/// send, so Prometheus's own parser can read it.
fn as_prometheus_sees_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

#[test]
fn promtool_parses_every_dashboard_query() {
    // promtool comes with Debian's prometheus package, which .ci/run installs.
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(!ci, "promtool is missing (apt-get install prometheus)");
        eprintln!("promtool_parses_every_dashboard_query: no promtool, not checked");
        return;
    }
    // Each query as a recording rule, which `promtool check rules` parses.
    let rules: Vec<serde_json::Value> = dashboard_expressions(&dashboard())
        .iter()
        .enumerate()
        .map(|(n, (_, expr))| {
            serde_json::json!({"record": format!("dashboard:query_{n}"), "expr": as_prometheus_sees_it(expr)})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    // JSON is YAML.
    let body = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, body.to_string()).unwrap();
    let output = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
