//! Every scenario for a moment against tether on every runtime: counts, never times.
//! (The figures come from `bench/run.sh`; a test only checks that the harness and the
//! subjects do what the tables claim: every echo answered, every delivery in order.)

use std::net::SocketAddr;

use tether_bench::load::{self, Outcome, Scenario, Spec};
use tether_bench::proto::Proto;
use tether_bench::servers::{self, Kind, Runtime};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn run(addr: SocketAddr, scenario: Scenario) -> Outcome {
    let spec = Spec {
        addr,
        scenario: scenario.clone(),
        warmup: 0.1,
        secs: 0.3,
        server_pid: None,
    };
    load::run(&spec).unwrap_or_else(|err| panic!("{scenario:?}: {err}"))
}

fn assert_counts(what: &str, outcome: &Outcome) {
    assert_eq!(outcome.errors, 0, "{what}: {outcome:?}");
    assert_eq!(outcome.out_of_order, 0, "{what}: {outcome:?}");
    assert_eq!(outcome.received, outcome.expected, "{what}: {outcome:?}");
    // Not `measured`: whether anything fell in the 0.3 s window depends on the machine's
    // load. Every run sends at once, and the drain waits for every answer.
    assert!(outcome.received > 0, "{what}: nothing received: {outcome:?}");
}

fn every_scenario(runtime: Runtime) {
    let raw = servers::start(runtime, Kind::Raw, any_port()).expect("raw server");
    for (inflight, size) in [(1, 20), (8, 20), (2, 1024)] {
        let outcome = run(
            raw,
            Scenario::RawEcho {
                conns: 10,
                inflight,
                size,
            },
        );
        assert_counts(&format!("{runtime:?} raw echo {inflight}×{size}"), &outcome);
        assert_eq!(outcome.sent, outcome.received);
    }
    let idle = run(
        raw,
        Scenario::Idle {
            proto: None,
            conns: 20,
        },
    );
    assert_eq!(idle.received, 20, "{runtime:?} idle raw: {idle:?}");

    let session = servers::start(runtime, Kind::Session, any_port()).expect("session server");
    for inflight in [1, 8] {
        let outcome = run(
            session,
            Scenario::SessionEcho {
                proto: Proto::Tether,
                conns: 10,
                inflight,
                size: 20,
                ack_every: 4,
            },
        );
        assert_counts(&format!("{runtime:?} session echo ×{inflight}"), &outcome);
    }
    for ack_every in [0, 4] {
        let outcome = run(
            session,
            Scenario::Fanout {
                proto: Proto::Tether,
                members: 20,
                window: 4,
                ack_every,
            },
        );
        assert_counts(&format!("{runtime:?} fan-out, acks every {ack_every}"), &outcome);
        assert!(
            outcome.sent > 0 && outcome.received == outcome.sent * 20,
            "{outcome:?}"
        );
        // Each delivery in the window is timed from its publisher's write.
        assert_eq!(outcome.measured > 0, outcome.p99_us.is_some(), "{outcome:?}");
    }
    let idle = run(
        session,
        Scenario::Idle {
            proto: Some(Proto::Tether),
            conns: 20,
        },
    );
    assert_eq!(idle.received, 20, "{runtime:?} idle sessions: {idle:?}");
    // The resume storm: every session back, every missed message once and in order.
    let storm = run(
        session,
        Scenario::ResumeStorm {
            sessions: 30,
            missed: 3,
        },
    );
    assert_counts(&format!("{runtime:?} resume storm"), &storm);
    assert_eq!(
        (storm.measured, storm.expected),
        (30, 90),
        "{runtime:?} resume storm: {storm:?}"
    );

    // The join storm with presence: every member learns every other (its join reply's
    // list and the `sys.presence` announcements; in a room this small the replies
    // often list everyone before the first announcement, so none is required).
    let presence = servers::start(runtime, Kind::SessionPresence, any_port()).expect("presence server");
    let join = run(presence, Scenario::Join { sessions: 50 });
    assert_counts(&format!("{runtime:?} join storm"), &join);
    assert_eq!(join.measured, 50, "{runtime:?} join storm: {join:?}");
    assert!(
        join.presence_msgs.is_some() && join.reply_bytes.is_some_and(|n| n > 0),
        "{runtime:?} join storm: {join:?}"
    );

    // The same App over raw TCP (the length-prefixed framing).
    let tcp = servers::start(runtime, Kind::SessionTcp, any_port()).expect("raw TCP server");
    for inflight in [1, 8] {
        let outcome = run(
            tcp,
            Scenario::SessionEcho {
                proto: Proto::TetherTcp,
                conns: 10,
                inflight,
                size: 20,
                ack_every: 4,
            },
        );
        assert_counts(&format!("{runtime:?} raw TCP session echo ×{inflight}"), &outcome);
    }
    let fanout = run(
        tcp,
        Scenario::Fanout {
            proto: Proto::TetherTcp,
            members: 20,
            window: 4,
            ack_every: 4,
        },
    );
    assert_counts(&format!("{runtime:?} raw TCP fan-out"), &fanout);
}

#[test]
fn tokio_subjects_answer_every_scenario() {
    every_scenario(Runtime::Tokio);
}

#[test]
fn smol_subjects_answer_every_scenario() {
    every_scenario(Runtime::Smol);
}

#[test]
fn async_std_subjects_answer_every_scenario() {
    every_scenario(Runtime::AsyncStd);
}

/// The engine alone, in process: every scenario for a moment at small sizes, every
/// answer, delivery and replay counted (`engine::run` fails when one is off).
#[test]
fn engine_scenarios_count_out() {
    use tether_bench::engine::{self, EngineScenario, EngineSpec};
    for scenario in [
        EngineScenario::Echo {
            sessions: 10,
            per_step: 1,
            size: 20,
            ack_every: 4,
        },
        EngineScenario::Echo {
            sessions: 10,
            per_step: 8,
            size: 20,
            ack_every: 16,
        },
        EngineScenario::Fanout {
            members: 50,
            ack_every: 0,
        },
        EngineScenario::Fanout {
            members: 50,
            ack_every: 16,
        },
        EngineScenario::ResumeStorm {
            sessions: 30,
            missed: 3,
        },
    ] {
        let spec = EngineSpec {
            scenario: scenario.clone(),
            warmup: 0.05,
            secs: 0.1,
        };
        let outcome = engine::run(&spec).unwrap_or_else(|err| panic!("{scenario:?}: {err}"));
        assert!(outcome.ops > 0, "{scenario:?}: {outcome:?}");
        assert_eq!(outcome.done, outcome.expected, "{scenario:?}: {outcome:?}");
        assert!(
            outcome.cpu_s > 0.0 && outcome.ns_per_op > 0.0,
            "{scenario:?}: {outcome:?}"
        );
    }
}

/// `tether-bench all --only engine`: the engine rows at the quick sizes through the
/// runner (each in a process of its own), their table in the section, and the chart
/// written next to the markdown file and linked from it; then `render` of the run's
/// record writes the same report again.
#[test]
fn runner_writes_engine_rows_and_chart() {
    let dir = std::env::temp_dir().join(format!("tether-bench-smoke-{}", std::process::id()));
    // Its target/ takes the run's record (not the repository's: no peers there).
    std::fs::create_dir_all(dir.join("target")).unwrap();
    let out = dir.join("BENCH.md");
    std::fs::write(&out, "# before\n").unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tether-bench"))
        .args([
            "all", "--quick", "--rounds", "1", "--secs", "0", "0.05", "--only", "engine", "--out",
        ])
        .arg(&out)
        .env("TETHER_ROOT", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.starts_with("# before\n"), "{md}");
    assert!(
        md.contains("### The engine alone, in process (no sockets, no runtime)"),
        "{md}"
    );
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.contains("per step (answers)") || l.contains("(deliveries)") || l.contains("(resumes)"))
        .collect();
    assert_eq!(rows.len(), 5, "{md}");
    for row in rows {
        assert!(row.contains("| ok | 1 |"), "counts not ok: {row}");
    }
    assert!(md.contains("](benchmarks.svg)"), "{md}");
    let svg = std::fs::read_to_string(dir.join("benchmarks.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    // The record gives the same report back (into a file of its own).
    let again = dir.join("AGAIN.md");
    std::fs::write(&again, "# before\n").unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tether-bench"))
        .args(["render", "--out"])
        .arg(&again)
        .env("TETHER_ROOT", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), md);
    let _ = std::fs::remove_dir_all(&dir);
}
