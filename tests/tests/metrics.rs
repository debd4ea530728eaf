//! `/metrics` scraped over HTTP from a real server (the chat example's set-up: the
//! endpoint and `prometheus_route` on one axum router) after some traffic, parsed as
//! the Prometheus text format, and checked against the table in `docs/GUIDE.md`: every
//! documented series present with its type and labels, and the values telling what
//! happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use adapter_tokio::{
    mount, prometheus_route, prometheus_route_with, serve_router, App, Client, ClientOptions, CloseCode,
    Context, TokioRuntime,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GUIDE: &str = include_str!("../../docs/GUIDE.md");
const WAIT: Duration = Duration::from_secs(10);

/// One documented series: name, type, and each label with its documented values
/// (empty when the values are open, like `event`).
struct Documented {
    name: String,
    kind: String,
    labels: Vec<(String, Vec<String>)>,
}

/// The rows of the GUIDE's metrics table.
fn documented() -> Vec<Documented> {
    let table = GUIDE
        .split("<!-- metrics-table: checked by tests/tests/metrics.rs -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /metrics-table -->").next())
        .expect("docs/GUIDE.md has the metrics table");
    let ticked =
        |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = ticked(cells[1]).remove(0);
            let kind = cells[2].to_owned();
            // `label`: `v1`, `v2` — the first ticked word is the label, the rest values.
            let labels = match ticked(cells[3]).split_first() {
                None => Vec::new(),
                Some((label, values)) => vec![(label.clone(), values.to_vec())],
            };
            Documented { name, kind, labels }
        })
        .collect()
}

/// A parsed exposition: the `# TYPE` of each family, and the samples.
#[derive(Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut parsed = Self::default();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "text after # EOF");
                return parsed;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                parsed.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closing brace");
                    let labels = labels
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label=value");
                            (key.to_owned(), value.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            parsed.samples.push((name.to_owned(), labels, value));
        }
        panic!("no # EOF at the end");
    }

    /// The value of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .2
    }
}

/// `GET path` over a fresh connection: the status, the headers (lowercase names), the body.
async fn get(port: u16, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test]
async fn metrics_are_scraped_with_every_documented_series_and_type() {
    let app = App::new()
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("echo", |ctx: Context| async move {
            let value: Value = ctx.payload()?;
            ctx.reply("echo.reply", &value)
        })
        .on("room.join", |ctx: Context| async move {
            ctx.join("lobby").await?;
            ctx.reply("room.joined", &())
        });
    let hub = app.start(TokioRuntime);
    let router = axum::Router::new()
        .route("/ws", mount(hub.clone()))
        .route("/metrics", prometheus_route(hub.handle().clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_router(listener, router, &hub).run_until(async {
        let _ = stopped.await;
    }));

    // Traffic: two clients, three echoes, one room.
    let url = format!("ws://127.0.0.1:{port}/ws");
    let alice = Client::connect(&url, ClientOptions::with_credential("alice"))
        .await
        .unwrap();
    let bob = Client::connect(&url, ClientOptions::with_credential("bob"))
        .await
        .unwrap();
    for n in 0..3 {
        alice.query("echo", &n, Some(WAIT)).await.unwrap();
    }
    bob.query("room.join", &(), Some(WAIT)).await.unwrap();

    let (status, headers, body) = get(port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some(adapter_tokio::prometheus::CONTENT_TYPE)
    );
    let exposition = Exposition::parse(&body);

    let documented = documented();
    assert_eq!(documented.len(), 19, "the GUIDE's table has every series");
    for series in &documented {
        // OpenMetrics names a counter's family without `_total`.
        let family = match series.kind.as_str() {
            "counter" => series
                .name
                .strip_suffix("_total")
                .expect("counters end in _total"),
            _ => series.name.as_str(),
        };
        assert_eq!(
            exposition.types.get(family).map(String::as_str),
            Some(series.kind.as_str()),
            "# TYPE of {family}"
        );
        let sample_name = match series.kind.as_str() {
            "histogram" => format!("{}_count", series.name),
            _ => series.name.clone(),
        };
        let samples: Vec<_> = exposition
            .samples
            .iter()
            .filter(|(n, ..)| *n == sample_name)
            .collect();
        assert!(!samples.is_empty(), "no sample of {sample_name}");
        let keys: BTreeSet<&String> = samples.iter().flat_map(|(_, l, _)| l.keys()).collect();
        let documented_keys: BTreeSet<&String> = series.labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, documented_keys, "labels of {sample_name}");
        for (label, values) in &series.labels {
            for value in values {
                assert!(
                    samples.iter().any(|(_, l, _)| l.get(label) == Some(value)),
                    "{sample_name}{{{label}=\"{value}\"}} is missing"
                );
            }
        }
    }

    // The values say what happened.
    assert_eq!(exposition.value("tether_connections", &[]), 2.0);
    assert_eq!(exposition.value("tether_sessions", &[("state", "live")]), 2.0);
    assert_eq!(
        exposition.value("tether_sessions", &[("state", "suspended")]),
        0.0
    );
    assert_eq!(exposition.value("tether_rooms", &[]), 1.0);
    assert_eq!(exposition.value("tether_sessions_created_total", &[]), 2.0);
    assert_eq!(exposition.value("tether_connections_refused_total", &[]), 0.0);
    assert!(exposition.value("tether_messages_total", &[("direction", "in")]) >= 4.0);
    assert!(exposition.value("tether_bytes_total", &[("direction", "out")]) > 0.0);
    assert_eq!(
        exposition.value("tether_handler_duration_seconds_count", &[("event", "echo")]),
        3.0
    );
    assert_eq!(
        exposition.value(
            "tether_handler_duration_seconds_bucket",
            &[("event", "echo"), ("le", "+Inf")]
        ),
        3.0
    );
    assert_eq!(
        exposition.value("tether_resumes_refused_total", &[("reason", "expired")]),
        0.0
    );

    // Beside an application's own registry: both encoded, one `# EOF`.
    use adapter_tokio::prometheus::prometheus_client::encoding::text::{encode_eof, encode_registry};
    use adapter_tokio::prometheus::prometheus_client::metrics::counter::Counter;
    let mut mine = adapter_tokio::prometheus::prometheus_client::registry::Registry::with_prefix("chat");
    let lines: Counter = Counter::default();
    lines.inc_by(7);
    mine.register("lines", "Chat lines", lines);
    let tethers = hub.handle().prometheus_registry().await.unwrap();
    let mut both = String::new();
    encode_registry(&mut both, &mine).unwrap();
    encode_registry(&mut both, &tethers).unwrap();
    encode_eof(&mut both).unwrap();
    let both = Exposition::parse(&both);
    assert_eq!(both.value("chat_lines_total", &[]), 7.0);
    assert_eq!(both.value("tether_connections", &[]), 2.0);

    alice.close(CloseCode::NORMAL, "done").await.unwrap();
    bob.close(CloseCode::NORMAL, "done").await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    hub.handle().shutdown().await;
    // A stopped hub: the route says so.
    assert!(hub.handle().prometheus_text().await.is_none());
}

/// `prometheus_route_with` serves the server's series and the extra registries, asked
/// for on every scrape, in one exposition (one `# EOF`, after all of them).
#[tokio::test]
async fn extra_registries_are_served_in_the_same_exposition() {
    use adapter_tokio::prometheus::prometheus_client::metrics::counter::Counter;
    use adapter_tokio::prometheus::prometheus_client::registry::Registry;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let hub = App::new().start(TokioRuntime);
    let scrapes = Arc::new(AtomicU64::new(0));
    let counted = scrapes.clone();
    let extra = move || {
        let mut registry = Registry::with_prefix("app");
        let counter = Counter::<u64>::default();
        counter.inc_by(counted.fetch_add(1, Ordering::SeqCst) + 1);
        registry.register("scrapes", "Scrapes of this endpoint", counter);
        vec![registry]
    };
    let router = axum::Router::new().route("/metrics", prometheus_route_with(hub.handle().clone(), extra));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_router(listener, router, &hub).run_until(std::future::pending()));
    for scrape in 1..=2 {
        let (status, headers, body) = get(port, "/metrics").await;
        assert_eq!(status, 200);
        assert!(headers["content-type"].starts_with("application/openmetrics-text"));
        let parsed = Exposition::parse(&body);
        assert_eq!(parsed.types["tether_connections"], "gauge");
        assert_eq!(parsed.types["app_scrapes"], "counter");
        let value = parsed
            .samples
            .iter()
            .find(|(name, _, _)| name == "app_scrapes_total")
            .map(|(_, _, value)| *value);
        assert_eq!(value, Some(scrape as f64), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1);
    }
}
