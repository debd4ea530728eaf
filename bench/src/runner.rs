//! The command line and the runner: subjects, scenarios, interleaved rounds with a
//! fresh server per run, medians, and the markdown written into docs/BENCHMARKS.md.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::chart::{self, Bar};
use crate::engine::{self, EngineOutcome, EngineScenario, EngineSpec};
use crate::load::{self, Outcome, Scenario, Spec};
use crate::proto::Proto;
use crate::servers::{self, Kind, Runtime};
use serde::{Deserialize, Serialize};

/// The core the server is pinned to.
const SERVER_CPU: &str = "0";
/// The core the load generator is pinned to.
const LOAD_CPU: &str = "1";
/// Where the section begins and ends in docs/BENCHMARKS.md.
const BEGIN: &str =
    "<!-- tether-bench:begin (written by `bench/run.sh`; edit bench/src/runner.rs instead) -->";
const END: &str = "<!-- tether-bench:end -->";

/// What a subject speaks, so which scenarios it takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Plain WebSocket echo.
    Raw,
    /// Sessions, rooms, correlated answers, in this protocol.
    Session(Proto),
}

/// One server under test.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its name in the tables.
    pub name: String,
    /// What it speaks.
    pub family: Family,
    /// The command that starts it; `{port}` is replaced by the port.
    pub command: Vec<String>,
    /// The command that starts it with presence on, for the join storm (None: it has
    /// no presence, and the join storm is not its scenario).
    pub presence: Option<Vec<String>>,
    /// Whether this is tether (ratios are tether / peer).
    pub tether: bool,
}

/// A scenario with its name in the tables.
#[derive(Debug, Clone)]
pub struct Case {
    /// Row title.
    pub title: String,
    /// Raw or session.
    pub raw: bool,
    /// The scenario, for tether's protocol (the runner swaps the protocol per subject).
    pub scenario: Scenario,
}

/// A scenario of the engine alone, with its name in the tables.
#[derive(Debug, Clone)]
pub struct EngineCase {
    /// Row title.
    pub title: String,
    /// The scenario.
    pub scenario: EngineScenario,
}

/// The name of the engine rows' subject, which `--only` is matched against.
pub const ENGINE_SUBJECT: &str = "tether engine (in process)";

/// The command line: `serve`, `load`, `engine` or `all`.
pub fn main(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let runtime: Runtime = args.get(1).ok_or("serve RUNTIME KIND ADDR")?.parse()?;
            let kind: Kind = args.get(2).ok_or("serve RUNTIME KIND ADDR")?.parse()?;
            let addr: SocketAddr = args
                .get(3)
                .map_or("127.0.0.1:9100", String::as_str)
                .parse()
                .map_err(|e| format!("address: {e}"))?;
            let bound = servers::start(runtime, kind, addr).map_err(|e| e.to_string())?;
            eprintln!("tether {runtime:?} {kind:?} on {bound}");
            loop {
                std::thread::park();
            }
        }
        Some("load") => {
            let spec: Spec =
                serde_json::from_str(args.get(1).ok_or("load SPEC_JSON")?).map_err(|e| e.to_string())?;
            let outcome = load::run(&spec).map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&outcome).map_err(|e| e.to_string())?);
            Ok(())
        }
        // One run as JSON in, JSON out (how `all` runs it, pinned to the server's
        // core), or every engine scenario for a few rounds, as a table on stdout.
        Some("engine") if args.get(1).is_some_and(|a| a.trim_start().starts_with('{')) => {
            let spec: EngineSpec = serde_json::from_str(&args[1]).map_err(|e| e.to_string())?;
            let outcome = engine::run(&spec)?;
            println!("{}", serde_json::to_string(&outcome).map_err(|e| e.to_string())?);
            Ok(())
        }
        Some("engine") => engine_only(&args[1..]),
        Some("all") => all(&args[1..]),
        Some("render") => render(&args[1..]),
        _ => Err("usage: tether-bench serve|load|engine|all|render (see bench/README.md)".to_owned()),
    }
}

struct Options {
    quick: bool,
    rounds: usize,
    out: PathBuf,
    /// Where the chart goes (default: `benchmarks.svg` next to `out`).
    chart: Option<PathBuf>,
    only: Option<String>,
    root: PathBuf,
    /// Seconds of warm-up and of the measured window per run.
    timing: (f64, f64),
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let root = std::env::var("TETHER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let mut options = Options {
        quick: false,
        rounds: 3,
        out: root.join("docs/BENCHMARKS.md"),
        chart: None,
        only: None,
        root,
        timing: (0.0, 0.0),
    };
    let mut timing = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--rounds" => options.rounds = args.next().and_then(|n| n.parse().ok()).ok_or("--rounds N")?,
            "--out" => options.out = PathBuf::from(args.next().ok_or("--out FILE")?),
            "--chart" => options.chart = Some(PathBuf::from(args.next().ok_or("--chart FILE")?)),
            "--only" => options.only = Some(args.next().ok_or("--only WORD")?.clone()),
            "--secs" => {
                let parse = |v: Option<&String>| v.and_then(|v| v.parse::<f64>().ok());
                let warmup = parse(args.next()).ok_or("--secs WARMUP WINDOW")?;
                let window = parse(args.next()).ok_or("--secs WARMUP WINDOW")?;
                timing = Some((warmup, window));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    options.timing = timing.unwrap_or(if options.quick { (1.0, 3.0) } else { (2.0, 10.0) });
    Ok(options)
}

/// The subjects whose programs are there (bench/run.sh builds and installs them), and
/// a line for each that is not.
pub fn subjects(root: &Path) -> (Vec<Subject>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (subject, needs) in candidates(root) {
        match needs {
            Some(needs) if !needs.exists() => {
                missing.push(format!("{} (no {})", subject.name, needs.display()))
            }
            _ => found.push(subject),
        }
    }
    (found, missing)
}

/// Every subject, with the file a peer needs to run (None: tether's own, always there).
fn candidates(root: &Path) -> Vec<(Subject, Option<PathBuf>)> {
    let exe = std::env::current_exe().map_or_else(|_| "tether-bench".to_owned(), |p| p.display().to_string());
    let mut found = Vec::new();
    for (runtime, label) in [
        ("tokio", "tether (tokio)"),
        ("smol", "tether (smol)"),
        ("async-std", "tether (async-std)"),
    ] {
        let serve = |kind: &str| -> Vec<String> {
            vec![
                exe.clone(),
                "serve".into(),
                runtime.into(),
                kind.into(),
                "127.0.0.1:{port}".into(),
            ]
        };
        let raw = Subject {
            name: label.to_owned(),
            family: Family::Raw,
            command: serve("raw"),
            presence: None,
            tether: true,
        };
        let session = Subject {
            name: label.to_owned(),
            family: Family::Session(Proto::Tether),
            command: serve("session"),
            presence: Some(serve("session-presence")),
            tether: true,
        };
        found.extend([(raw, None), (session, None)]);
    }
    let peers = root.join("bench/peers/target/release");
    let node = root.join("bench/node");
    let python = root.join("bench/python");
    let venv_python = python.join(".venv/bin/python");
    let candidates: Vec<(&str, Family, Vec<String>, PathBuf)> = vec![
        (
            "fastwebsockets",
            Family::Raw,
            vec![
                peers.join("peer-fastwebsockets").display().to_string(),
                "{port}".into(),
            ],
            peers.join("peer-fastwebsockets"),
        ),
        (
            "tokio-tungstenite",
            Family::Raw,
            vec![
                peers.join("peer-tungstenite").display().to_string(),
                "{port}".into(),
            ],
            peers.join("peer-tungstenite"),
        ),
        (
            "socketioxide",
            Family::Session(Proto::SocketIo),
            vec![
                peers.join("peer-socketioxide").display().to_string(),
                "{port}".into(),
            ],
            peers.join("peer-socketioxide"),
        ),
        (
            "uWebSockets.js (Node)",
            Family::Raw,
            vec![
                "node".into(),
                node.join("uws_echo.js").display().to_string(),
                "{port}".into(),
            ],
            node.join("node_modules/uWebSockets.js/package.json"),
        ),
        (
            "ws (Node)",
            Family::Raw,
            vec![
                "node".into(),
                node.join("ws_echo.js").display().to_string(),
                "{port}".into(),
            ],
            node.join("node_modules/ws/package.json"),
        ),
        (
            "socket.io (Node)",
            Family::Session(Proto::SocketIo),
            vec![
                "node".into(),
                node.join("socketio.js").display().to_string(),
                "{port}".into(),
            ],
            node.join("node_modules/socket.io/package.json"),
        ),
        (
            "websockets (Python)",
            Family::Raw,
            vec![
                venv_python.display().to_string(),
                python.join("ws_echo.py").display().to_string(),
                "{port}".into(),
            ],
            venv_python.clone(),
        ),
    ];
    for (name, family, command, needs) in candidates {
        let peer = Subject {
            name: name.to_owned(),
            family,
            command,
            presence: None,
            tether: false,
        };
        found.push((peer, Some(needs)));
    }
    found
}

/// The scenarios, short (`quick`) or as the issue sizes them.
pub fn cases(quick: bool) -> Vec<Case> {
    let members = fanout_members(quick);
    let idle = if quick { 1000 } else { 5000 };
    let storm = if quick { 1000 } else { 10_000 };
    let join = if quick { 2000 } else { 10_000 };
    let raw = |conns, inflight, size| Scenario::RawEcho {
        conns,
        inflight,
        size,
    };
    let echo = |inflight| Scenario::SessionEcho {
        proto: Proto::Tether,
        conns: 100,
        inflight,
        size: 20,
        ack_every: 16,
    };
    let fanout = |members, ack_every| Scenario::Fanout {
        proto: Proto::Tether,
        members,
        window: 4,
        ack_every,
    };
    let mut cases = vec![
        Case {
            title: "raw echo, 100 conns × 20 B, 1 in flight".into(),
            raw: true,
            scenario: raw(100, 1, 20),
        },
        Case {
            title: "raw echo, 100 conns × 20 B, 8 in flight".into(),
            raw: true,
            scenario: raw(100, 8, 20),
        },
        Case {
            title: "raw echo, 500 conns × 1 KiB, 1 in flight".into(),
            raw: true,
            scenario: raw(500, 1, 1024),
        },
        Case {
            title: "session echo, 100 sessions × 20 B, 1 in flight".into(),
            raw: false,
            scenario: echo(1),
        },
        Case {
            title: "session echo, 100 sessions × 20 B, 8 in flight".into(),
            raw: false,
            scenario: echo(8),
        },
    ];
    for &members in members {
        cases.push(Case {
            title: format!("room fan-out, {members} members, 4 publications in flight (deliveries)"),
            raw: false,
            scenario: fanout(members, 0),
        });
        cases.push(Case {
            title: format!("room fan-out, {members} members, acks every 16 (deliveries)"),
            raw: false,
            scenario: fanout(members, 16),
        });
    }
    cases.extend([
        Case {
            title: format!("resume storm: {storm} sessions cut at once, 4 messages missed each (resumes)"),
            raw: false,
            scenario: Scenario::ResumeStorm {
                sessions: storm,
                missed: 4,
            },
        },
        Case {
            title: format!("join storm: {join} sessions join one room with presence (sessions)"),
            raw: false,
            scenario: Scenario::Join { sessions: join },
        },
        Case {
            title: format!("idle raw connections ({idle}), server RSS per connection"),
            raw: true,
            scenario: Scenario::Idle {
                proto: None,
                conns: idle,
            },
        },
        Case {
            title: format!("idle sessions in a room ({idle}), server RSS per session"),
            raw: false,
            scenario: Scenario::Idle {
                proto: Some(Proto::Tether),
                conns: idle,
            },
        },
    ]);
    cases
}

/// The scenarios of the engine alone: the socket rows' session scenarios at the same
/// sizes (so that each can be set against its socket row), run in process.
pub fn engine_cases(quick: bool) -> Vec<EngineCase> {
    let storm = if quick { 1000 } else { 10_000 };
    let echo = |per_step| EngineScenario::Echo {
        sessions: 100,
        per_step,
        size: 20,
        ack_every: 16,
    };
    let fanout = |members, ack_every| EngineScenario::Fanout { members, ack_every };
    let mut cases = vec![
        EngineCase {
            title: "session echo, 100 sessions × 20 B, 1 per step (answers)".into(),
            scenario: echo(1),
        },
        EngineCase {
            title: "session echo, 100 sessions × 20 B, 8 per step (answers)".into(),
            scenario: echo(8),
        },
    ];
    for &members in fanout_members(quick) {
        cases.push(EngineCase {
            title: format!("room fan-out, {members} members, no acks (deliveries)"),
            scenario: fanout(members, 0),
        });
        cases.push(EngineCase {
            title: format!("room fan-out, {members} members, acks every 16 (deliveries)"),
            scenario: fanout(members, 16),
        });
    }
    cases.push(EngineCase {
        title: format!("resume storm: {storm} sessions, 4 messages missed each (resumes)"),
        scenario: EngineScenario::ResumeStorm {
            sessions: storm,
            missed: 4,
        },
    });
    cases
}

/// The room sizes of the fan-out rows: the 1,000 and 5,000, or 1,000 alone
/// when quick.
fn fanout_members(quick: bool) -> &'static [usize] {
    if quick {
        &[1000]
    } else {
        &[1000, 5000]
    }
}

/// Whether the socket scenario `socket` is the engine scenario `engine` through
/// sockets: same sessions, requests in flight and size; same members and acks; same
/// storm. (The socket fan-out's window of publications in flight has no counterpart
/// in process, where each publication is delivered before the next.)
pub fn is_twin(engine: &EngineScenario, socket: &Scenario) -> bool {
    match (engine, socket) {
        (
            EngineScenario::Echo {
                sessions,
                per_step,
                size,
                ack_every,
            },
            Scenario::SessionEcho {
                proto: Proto::Tether,
                conns,
                inflight,
                size: socket_size,
                ack_every: socket_acks,
            },
        ) => sessions == conns && per_step == inflight && size == socket_size && ack_every == socket_acks,
        (
            EngineScenario::Fanout { members, ack_every },
            Scenario::Fanout {
                proto: Proto::Tether,
                members: socket_members,
                ack_every: socket_acks,
                ..
            },
        ) => members == socket_members && ack_every == socket_acks,
        (
            EngineScenario::ResumeStorm { sessions, missed },
            Scenario::ResumeStorm {
                sessions: socket_sessions,
                missed: socket_missed,
            },
        ) => sessions == socket_sessions && missed == socket_missed,
        _ => false,
    }
}

/// The scenario as `subject` speaks it, or None when it does not take part.
fn for_subject(case: &Case, subject: &Subject) -> Option<Scenario> {
    let proto = match (case.raw, subject.family) {
        (true, Family::Raw) => return Some(case.scenario.clone()),
        (false, Family::Session(proto)) => proto,
        _ => return None,
    };
    let mut scenario = case.scenario.clone();
    match &mut scenario {
        Scenario::SessionEcho { proto: p, .. } | Scenario::Fanout { proto: p, .. } => *p = proto,
        Scenario::Idle { proto: p, .. } => *p = Some(proto),
        Scenario::RawEcho { .. } => {}
        // Only tether resumes a session with what it missed.
        Scenario::ResumeStorm { .. } if !subject.tether => return None,
        Scenario::ResumeStorm { .. } => {}
        // Only a subject with presence tells each member who else is in the room.
        Scenario::Join { .. } if subject.presence.is_none() => return None,
        Scenario::Join { .. } => {}
    }
    // Socket.IO has no acknowledgements of deliveries: the "acks" row is tether's only.
    if let Scenario::Fanout { ack_every, .. } = scenario {
        if proto == Proto::SocketIo && ack_every > 0 {
            return None;
        }
    }
    Some(scenario)
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The case whose peers tether's row `c` is held against: `c` itself, or for a fan-out
/// with acknowledgements (tether's alone: Socket.IO has none) the same room without.
fn peer_case(cases: &[Case], c: usize) -> usize {
    let Scenario::Fanout {
        members, ack_every, ..
    } = cases[c].scenario
    else {
        return c;
    };
    if ack_every == 0 {
        return c;
    }
    cases
        .iter()
        .position(
            |case| matches!(case.scenario, Scenario::Fanout { members: m, ack_every: 0, .. } if m == members),
        )
        .unwrap_or(c)
}

/// Which of `subjects` every ratio of `case` is taken from: tether on tokio, in the
/// family the case runs (raw or sessions).
fn reference(subjects: &[Subject], case: &Case) -> Option<usize> {
    subjects
        .iter()
        .position(|s| s.tether && s.name.contains("tokio") && for_subject(case, s).is_some())
}

/// The command that starts `subject` for `scenario`: with presence on for the join
/// storm.
fn command_for<'a>(subject: &'a Subject, scenario: &Scenario) -> &'a [String] {
    match scenario {
        Scenario::Join { .. } => subject.presence.as_ref().unwrap_or(&subject.command),
        _ => &subject.command,
    }
}

/// Starts `subject` for `scenario` on `port`.
fn start(subject: &Subject, scenario: &Scenario, port: u16) -> io::Result<Server> {
    let args: Vec<String> = command_for(subject, scenario)
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new("taskset")
        .arg("-c")
        .arg(SERVER_CPU)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut server = Server(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Some(status) = server.0.try_wait()? {
            return Err(io::Error::other(format!("{} exited: {status}", subject.name)));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{} did not listen within 20 s",
                subject.name
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a runtime that starts lazily (Node, Python) settle before loading it.
    std::thread::sleep(Duration::from_millis(300));
    Ok(server)
}

/// One run: a fresh server, the load generator pinned to the other core.
fn run_once(subject: &Subject, scenario: &Scenario, (warmup, secs): (f64, f64)) -> Result<Outcome, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let server = start(subject, scenario, port).map_err(|e| e.to_string())?;
    let spec = Spec {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        scenario: scenario.clone(),
        warmup,
        secs,
        server_pid: Some(server.0.id()),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut load = Command::new("taskset")
        .arg("-c")
        .arg(LOAD_CPU)
        .arg(exe)
        .arg("load")
        .arg(serde_json::to_string(&spec).map_err(|e| e.to_string())?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Connections (60 s at most), the run, the drain (10 s), and a margin.
    let limit = Instant::now() + Duration::from_secs_f64(warmup + secs + 90.0);
    while load.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > limit {
            let _ = load.kill();
            let _ = load.wait();
            return Err("the load generator did not finish in time".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = load.wait_with_output().map_err(|e| e.to_string())?;
    drop(server);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// One run of the engine alone, in a process of its own (a fresh heap, as a fresh
/// server has) pinned to the server's core, so that its figures come from the core the
/// socket rows' servers ran on. Without `taskset`, unpinned.
fn run_engine_once(spec: &EngineSpec) -> Result<EngineOutcome, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let output = match Command::new("taskset")
        .arg("-c")
        .arg(SERVER_CPU)
        .arg(&exe)
        .arg("engine")
        .arg(&json)
        .output()
    {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Command::new(&exe).arg("engine").arg(&json).output()
        }
        other => other,
    }
    .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// The medians of one engine scenario, and whether every run's counts held.
#[derive(Debug, Clone, Default)]
struct EngineCell {
    ops_per_cpu_s: Option<f64>,
    ns_per_op: Option<f64>,
    runs: usize,
    failures: Vec<String>,
}

fn summarise_engine(outcomes: &[EngineOutcome], failures: &[String]) -> EngineCell {
    let pick =
        |f: &dyn Fn(&EngineOutcome) -> f64| median(outcomes.iter().map(f).filter(|v| *v > 0.0).collect());
    EngineCell {
        ops_per_cpu_s: pick(&|o| o.ops_per_cpu_s),
        ns_per_op: pick(&|o| o.ns_per_op),
        runs: outcomes.len(),
        failures: failures.to_vec(),
    }
}

/// The engine table: one row per case, with (when `socket_ns` has it) the server CPU
/// per message of the same scenario through sockets and the engine's share of it.
fn engine_table(cases: &[EngineCase], cells: &[EngineCell], socket_ns: &[Option<f64>]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| scenario | ops/CPU-s | CPU ns/op | socket row: tether (tokio) server CPU ns/op | engine's share | counts | runs |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|---:|");
    for ((case, cell), socket) in cases.iter().zip(cells).zip(socket_ns) {
        let counts = match cell.failures.first() {
            None => "ok".to_owned(),
            Some(first) => format!(
                "{} failed: {}",
                cell.failures.len(),
                first.lines().next().unwrap_or("")
            ),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {counts} | {} |",
            case.title,
            cell.ops_per_cpu_s
                .map_or("–".to_owned(), |v| format!("{:.0}k", v / 1000.0)),
            cell.ns_per_op.map_or("–".to_owned(), |v| format!("{v:.0}")),
            socket.map_or("–".to_owned(), |v| format!("{v:.0}")),
            match (cell.ns_per_op, socket) {
                (Some(e), Some(s)) if *s > 0.0 => format!("{:.0}%", e / s * 100.0),
                _ => "–".to_owned(),
            },
            cell.runs
        );
    }
    md
}

/// `tether-bench engine [--quick] [--rounds N] [--secs WARMUP WINDOW] [--only WORD]`:
/// every engine scenario (whose title contains WORD) in this process, rounds
/// interleaved, the table on stdout.
fn engine_only(args: &[String]) -> Result<(), String> {
    let options = parse_options(args)?;
    let mut cases = engine_cases(options.quick);
    if let Some(only) = &options.only {
        cases.retain(|c| c.title.contains(only.as_str()));
    }
    let mut results: Vec<(Vec<EngineOutcome>, Vec<String>)> =
        cases.iter().map(|_| Default::default()).collect();
    for round in 0..options.rounds {
        for (case, (outcomes, failures)) in cases.iter().zip(&mut results) {
            eprint!("round {} · {} … ", round + 1, case.title);
            let spec = EngineSpec {
                scenario: case.scenario.clone(),
                warmup: options.timing.0,
                secs: options.timing.1,
            };
            match engine::run(&spec) {
                Ok(outcome) => {
                    eprintln!(
                        "{:.0} ops/CPU-s, {:.0} ns/op ({} ops in {:.2} CPU-s)",
                        outcome.ops_per_cpu_s, outcome.ns_per_op, outcome.ops, outcome.cpu_s
                    );
                    outcomes.push(outcome);
                }
                Err(err) => {
                    eprintln!("failed: {err}");
                    failures.push(err);
                }
            }
        }
    }
    let cells: Vec<EngineCell> = results.iter().map(|(o, f)| summarise_engine(o, f)).collect();
    print!("{}", engine_table(&cases, &cells, &vec![None; cases.len()]));
    if cells.iter().any(|c| !c.failures.is_empty()) {
        return Err("some engine runs failed (see the counts column)".to_owned());
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// A share as a whole percentage, or a dash.
fn percent(share: Option<f64>) -> String {
    share.map_or("–".to_owned(), |s| format!("{:.0}%", s * 100.0))
}

/// Where `all` keeps what it measured, under the repository's root.
const RECORD: &str = "target/tether-bench-results.json";

/// What a run of `all` measured: every run's outcome, kept so that the report can be
/// written again (`render`) when only the way it is written changed.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    meta: Meta,
    /// Every subject of every case it took part in.
    rows: Vec<Row>,
    engine_rows: Vec<EngineRow>,
    /// The peers that were not built or installed, and why.
    missing: Vec<String>,
}

/// When and how a run was made.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    date: String,
    minutes: f64,
    load_before: String,
    load_after: String,
    quick: bool,
    rounds: usize,
    /// Seconds of warm-up and of the measured window per run.
    timing: (f64, f64),
}

/// One subject in one case: its runs, each with its round, and its failures.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    case: String,
    subject: String,
    /// Whether the subject spoke sessions (tether's subjects have one name for both).
    session: bool,
    outcomes: Vec<RoundOutcome>,
    failures: Vec<String>,
}

impl Row {
    fn is(&self, subject: &Subject) -> bool {
        self.subject == subject.name && self.session == matches!(subject.family, Family::Session(_))
    }
}

/// One run and the round (from 1) it ran in.
#[derive(Debug, Serialize, Deserialize)]
struct RoundOutcome {
    round: usize,
    outcome: Outcome,
}

/// The engine alone in one case.
#[derive(Debug, Serialize, Deserialize)]
struct EngineRow {
    case: String,
    outcomes: Vec<EngineOutcome>,
    failures: Vec<String>,
}

/// The engine alone in one case: its runs' outcomes and its failures.
type EngineRuns = (Vec<EngineOutcome>, Vec<String>);

/// One subject's outcomes in one case, each with the round (from 0) it ran in.
type Rounds = Vec<(usize, Outcome)>;

/// A ratio of tether's figure to a peer's taken round by round, each pair from the
/// same round (minutes apart at most: on a host whose speed drifts within a run by
/// more than the subjects differ, a ratio of the two medians could pair a fast round
/// of one with a slow round of the other), and the median of those.
#[derive(Debug, Clone, PartialEq)]
struct Paired {
    median: f64,
    /// Round by round, in round order (rounds where either failed are left out).
    rounds: Vec<f64>,
}

impl Paired {
    /// `ours` over `theirs` in each round both have, `ours_figure` and
    /// `their_figure` picking what is compared from each run.
    fn of(
        ours: &[(usize, Outcome)],
        theirs: &[(usize, Outcome)],
        ours_figure: impl Fn(&Outcome) -> Option<f64>,
        their_figure: impl Fn(&Outcome) -> Option<f64>,
    ) -> Option<Self> {
        let rounds: Vec<f64> = ours
            .iter()
            .filter_map(|(round, o)| {
                let (_, t) = theirs.iter().find(|(r, _)| r == round)?;
                let (a, b) = (ours_figure(o)?, their_figure(t)?);
                (b > 0.0).then_some(a / b).filter(|r| r.is_finite())
            })
            .collect();
        Some(Self {
            median: median(rounds.clone())?,
            rounds,
        })
    }

    /// `0.95 (0.93 · 0.95 · 1.40)`: the median, then each round's when there are more.
    fn show(&self) -> String {
        if self.rounds.len() < 2 {
            return format!("{:.2}", self.median);
        }
        let each: Vec<String> = self.rounds.iter().map(|r| format!("{r:.2}")).collect();
        format!("{:.2} ({})", self.median, each.join(" · "))
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// The medians of one subject in one case, and whether every run's counts held.
#[derive(Debug, Clone, Default)]
struct Cell {
    msg_per_s: Option<f64>,
    msg_per_cpu_s: Option<f64>,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    rss_per_conn: Option<f64>,
    /// Share of its core the server used in the window (1.0: saturated).
    busy: Option<f64>,
    /// Share of the server's CPU time spent in the kernel.
    kernel: Option<f64>,
    /// The measured window, seconds (the join storm: until the last member knew all).
    wall_s: Option<f64>,
    /// Server CPU seconds in the window.
    cpu_s: Option<f64>,
    /// Join storm: presence announcements, their bytes, the join replies' bytes.
    presence_msgs: Option<f64>,
    presence_bytes: Option<f64>,
    reply_bytes: Option<f64>,
    runs: usize,
    counts: String,
    failures: Vec<String>,
}

fn summarise(outcomes: &[(usize, Outcome)], failures: Vec<String>) -> Cell {
    let pick =
        |f: &dyn Fn(&Outcome) -> Option<f64>| median(outcomes.iter().map(|(_, o)| o).filter_map(f).collect());
    let bad: Vec<String> = outcomes
        .iter()
        .map(|(_, o)| o)
        .filter(|o| o.received != o.expected || o.errors > 0 || o.out_of_order > 0)
        .map(|o| {
            format!(
                "{}/{} received, {} errors, {} out of order",
                o.received, o.expected, o.errors, o.out_of_order
            )
        })
        .collect();
    Cell {
        msg_per_s: pick(&|o| Some(o.msg_per_s).filter(|v| *v > 0.0)),
        msg_per_cpu_s: pick(&|o| o.msg_per_cpu_s),
        p50_us: pick(&|o| o.p50_us.map(f64::from)),
        p99_us: pick(&|o| o.p99_us.map(f64::from)),
        p999_us: pick(&|o| o.p999_us.map(f64::from)),
        rss_per_conn: pick(&|o| o.rss_per_conn),
        busy: pick(&|o| o.server_cpu_s.map(|cpu| cpu / o.window_secs)),
        wall_s: pick(&|o| Some(o.window_secs).filter(|v| *v > 0.0)),
        cpu_s: pick(&|o| o.server_cpu_s),
        presence_msgs: pick(&|o| o.presence_msgs.map(|n| n as f64)),
        presence_bytes: pick(&|o| o.presence_bytes.map(|n| n as f64)),
        reply_bytes: pick(&|o| o.reply_bytes.map(|n| n as f64)),
        kernel: pick(&|o| {
            o.server_kernel_s
                .zip(o.server_cpu_s)
                .filter(|(_, cpu)| *cpu > 0.0)
                .map(|(kernel, cpu)| kernel / cpu)
        }),
        runs: outcomes.len(),
        counts: if bad.is_empty() {
            "ok".to_owned()
        } else {
            bad.join("; ")
        },
        failures,
    }
}

fn all(args: &[String]) -> Result<(), String> {
    let options = parse_options(args)?;
    let (mut subjects, missing) = subjects(&options.root);
    if let Some(only) = &options.only {
        subjects.retain(|s| s.name.contains(only.as_str()));
    }
    let cases = cases(options.quick);
    let engine_cases = match &options.only {
        Some(only) if !ENGINE_SUBJECT.contains(only.as_str()) => Vec::new(),
        _ => engine_cases(options.quick),
    };
    let load_before = loadavg();
    let started = Instant::now();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // results[case][subject] = outcomes of every round, with the round they ran in.
    let mut results: Vec<Vec<(Rounds, Vec<String>)>> = cases
        .iter()
        .map(|_| subjects.iter().map(|_| (Vec::new(), Vec::new())).collect())
        .collect();
    let mut engine_results: Vec<EngineRuns> = engine_cases.iter().map(|_| Default::default()).collect();
    for round in 0..options.rounds {
        for (c, case) in cases.iter().enumerate() {
            // Interleaved: every subject once per round, the order rotated each round.
            let n = subjects.len();
            for k in 0..n {
                let s = (k + round) % n;
                let subject = &subjects[s];
                let Some(scenario) = for_subject(case, subject) else {
                    continue;
                };
                eprint!("round {} · {} · {} … ", round + 1, case.title, subject.name);
                match run_once(subject, &scenario, options.timing) {
                    Ok(outcome) => {
                        eprintln!(
                            "{:.0} msg/s, {:.0} msg/CPU-s, p99 {:?} µs, rss/conn {:?}",
                            outcome.msg_per_s,
                            outcome.msg_per_cpu_s.unwrap_or(0.0),
                            outcome.p99_us,
                            outcome.rss_per_conn.map(|b| b.round())
                        );
                        results[c][s].0.push((round, outcome));
                    }
                    Err(err) => {
                        eprintln!("failed: {err}");
                        results[c][s].1.push(err);
                    }
                }
            }
        }
        for (case, (outcomes, failures)) in engine_cases.iter().zip(&mut engine_results) {
            eprint!("round {} · {} · {ENGINE_SUBJECT} … ", round + 1, case.title);
            let spec = EngineSpec {
                scenario: case.scenario.clone(),
                warmup: options.timing.0,
                secs: options.timing.1,
            };
            match run_engine_once(&spec) {
                Ok(outcome) => {
                    eprintln!(
                        "{:.0} ops/CPU-s, {:.0} ns/op",
                        outcome.ops_per_cpu_s, outcome.ns_per_op
                    );
                    outcomes.push(outcome);
                }
                Err(err) => {
                    eprintln!("failed: {err}");
                    failures.push(err);
                }
            }
        }
    }
    let record = Record {
        meta: Meta {
            date,
            minutes: started.elapsed().as_secs_f64() / 60.0,
            load_before,
            load_after: loadavg(),
            quick: options.quick,
            rounds: options.rounds,
            timing: options.timing,
        },
        rows: cases
            .iter()
            .zip(&results)
            .flat_map(|(case, row)| {
                subjects
                    .iter()
                    .zip(row)
                    .filter(|(subject, _)| for_subject(case, subject).is_some())
                    .map(|(subject, (outcomes, failures))| Row {
                        case: case.title.clone(),
                        subject: subject.name.clone(),
                        session: matches!(subject.family, Family::Session(_)),
                        outcomes: outcomes
                            .iter()
                            .map(|(round, outcome)| RoundOutcome {
                                round: round + 1,
                                outcome: outcome.clone(),
                            })
                            .collect(),
                        failures: failures.clone(),
                    })
            })
            .collect(),
        engine_rows: engine_cases
            .iter()
            .zip(engine_results)
            .map(|(case, (outcomes, failures))| EngineRow {
                case: case.title.clone(),
                outcomes,
                failures,
            })
            .collect(),
        missing,
    };
    // Every run's outcome, for whoever wants more than the medians, and for `render`.
    let raw = options.root.join(RECORD);
    if let Ok(text) = serde_json::to_string_pretty(&record) {
        let _ = std::fs::write(&raw, text);
    }
    report(&options, &record)
}

/// `render [RECORD] [--out FILE] [--chart FILE]`: writes the report of a recorded run (default: the last one,
/// target/tether-bench-results.json) again, for when only the way it is written
/// changed. Takes `--out` and `--chart` as `all` does.
fn render(args: &[String]) -> Result<(), String> {
    let (file, rest) = match args.split_first() {
        Some((first, rest)) if !first.starts_with("--") => (Some(PathBuf::from(first)), rest),
        _ => (None, args),
    };
    let options = parse_options(rest)?;
    let path = file.unwrap_or_else(|| options.root.join(RECORD));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let record: Record = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    report(&options, &record)
}

/// Writes the tables, the summary and the chart of `record` into `options.out`.
fn report(options: &Options, record: &Record) -> Result<(), String> {
    let meta = &record.meta;
    let cases = cases(meta.quick);
    // The subjects and engine scenarios the record has, in the runner's order.
    let subjects: Vec<Subject> = candidates(&options.root)
        .into_iter()
        .map(|(subject, _)| subject)
        .filter(|subject| record.rows.iter().any(|row| row.is(subject)))
        .collect();
    let results: Vec<Vec<(Rounds, Vec<String>)>> = cases
        .iter()
        .map(|case| {
            subjects
                .iter()
                .map(|subject| {
                    record
                        .rows
                        .iter()
                        .find(|row| row.case == case.title && row.is(subject))
                        .filter(|_| for_subject(case, subject).is_some())
                        .map(|row| {
                            let outcomes = row.outcomes.iter();
                            let rounds = outcomes
                                .map(|r| (r.round.saturating_sub(1), r.outcome.clone()))
                                .collect();
                            (rounds, row.failures.clone())
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let (engine_cases, engine_results): (Vec<EngineCase>, Vec<EngineRuns>) = engine_cases(meta.quick)
        .into_iter()
        .filter_map(|case| {
            let row = record.engine_rows.iter().find(|row| row.case == case.title)?;
            Some((case, (row.outcomes.clone(), row.failures.clone())))
        })
        .unzip();
    let chart_path = options
        .chart
        .clone()
        .unwrap_or_else(|| options.out.with_file_name("benchmarks.svg"));
    let (date, minutes, load_before, load_after) =
        (&meta.date, meta.minutes, &meta.load_before, &meta.load_after);
    let missing = &record.missing;
    let cells: Vec<Vec<Cell>> = results
        .iter()
        .map(|row| row.iter().map(|(o, f)| summarise(o, f.clone())).collect())
        .collect();
    let engine_cells: Vec<EngineCell> = engine_results
        .iter()
        .map(|(o, f)| summarise_engine(o, f))
        .collect();
    let mut bars = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "## End to end through sockets: tether and its peers (bench/)\n"
    );
    let _ = writeln!(
        md,
        "`bench/run.sh{}` on {date}: {} round(s), {} (warm-up {} s, window {} s per run), \
         {:.0} minutes. Load average before / after: {load_before} / {load_after} \
         (the 2-vCPU machine was shared with other builds: treat ratios as the figures, \
         absolute numbers as indications).\n",
        if meta.quick { " --quick" } else { "" },
        meta.rounds,
        if meta.quick {
            "quick sizes"
        } else {
            "the issue's sizes"
        },
        meta.timing.0,
        meta.timing.1,
        minutes,
    );
    let _ = writeln!(
        md,
        "Method: each run starts a fresh server pinned to core {SERVER_CPU} (`taskset`) and the load \
         generator (one single-threaded tokio runtime, pre-masked frames, one write per read batch) \
         on core {LOAD_CPU}; warm-up, then the measured window; rounds interleave the subjects \
         (order rotated each round); each cell is the median of the rounds. msg/CPU-s divides the \
         messages of the window by the server's user+system CPU time over the same window \
         (`/proc/<pid>/stat`); \"of it in the kernel\" is the system part of that time, softirqs \
         included (on loopback, a server's send also runs the client's TCP input). RSS per connection is the growth of the server's `VmRSS` over N idle \
         connections, divided by N. Ratios are tether (tokio) / peer on msg/CPU-s (above 1: tether \
         does more per CPU second), on p99 (below 1: tether's tail is shorter) and on RSS (below 1: \
         tether uses less), each the median of the rounds' own ratios (tether's run over the peer's \
         of the same round). The join storm (tether only: the peers have no presence) runs from \
         the first join until the last member knows every other. \"counts\" says whether every echo was answered and every delivery \
         arrived in order in every run.\n"
    );
    let _ = writeln!(
        md,
        "Subjects: tether's plain echo is `ws_driver::WebSocket` (bench/src/servers.rs); its \
         session App answers `echo`, `join` and `pub` (to room `bench`), with the rate limit lifted; \
         tokio runs single-threaded (the server has one core), smol on its global executor, \
         async-std on its own. tether's session clients acknowledge every 16 answers \
         (`sys.ack`, as a real client must to keep the replay buffer small); Socket.IO has no such \
         acknowledgement. The Rust peers are in bench/peers (tokio single-threaded too), the Node \
         and Python ones in bench/node and bench/python.\n"
    );
    let _ = writeln!(
        md,
        "### Summary: tether on tokio against the best peer of each row\n"
    );
    let _ = writeln!(
        md,
        "| scenario | tether (tokio) | best peer | ratio (each round's) | tether p99 / best peer's p99 (ms) | tether's CPU in the kernel → ratio were its user space free |"
    );
    let _ = writeln!(md, "|---|---:|---|---:|---|---|");
    for (c, case) in cases.iter().enumerate() {
        let idle = matches!(case.scenario, Scenario::Idle { .. });
        let joins = matches!(case.scenario, Scenario::Join { .. });
        let value = |cell: &Cell| {
            if idle {
                cell.rss_per_conn
            } else {
                cell.msg_per_cpu_s
            }
        };
        let figure = |o: &Outcome| if idle { o.rss_per_conn } else { o.msg_per_cpu_s };
        let Some(t) = reference(&subjects, case) else {
            continue;
        };
        let ours = &cells[c][t];
        // The peers' row: this one, or for tether's fan-out with acks the same room
        // without (the peers have no acknowledgements; the goal holds tether to them).
        let pc = peer_case(&cases, c);
        // Best: the most messages per CPU second, or the least memory (medians).
        let best = subjects
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.tether && for_subject(&cases[pc], s).is_some())
            .filter_map(|(i, s)| value(&cells[pc][i]).map(|v| (i, s, v)))
            .max_by(|a, b| {
                if idle {
                    b.2.total_cmp(&a.2)
                } else {
                    a.2.total_cmp(&b.2)
                }
            });
        let unit = |v: f64| {
            if idle {
                format!("{:.1} KB/conn", v / 1000.0)
            } else {
                format!("{:.0}k msg/CPU-s", v / 1000.0)
            }
        };
        let ratio =
            best.and_then(|(i, _, _)| Paired::of(&results[c][t].0, &results[pc][i].0, figure, figure));
        if let Some(ratio) = &ratio {
            bars.push(Bar {
                label: case.title.clone(),
                value: ratio.median,
                higher_is_better: !idle,
            });
        }
        let without_acks = if pc == c {
            ""
        } else {
            " (without acks: it has none)"
        };
        let peer = best.map_or("–".to_owned(), |(_, s, v)| {
            format!("{} {}{without_acks}", s.name, unit(v))
        });
        let tail = match best.map(|(i, _, _)| &cells[pc][i]) {
            Some(cell) => match (ours.p99_us, cell.p99_us) {
                (Some(a), Some(b)) => format!("{:.1} / {:.1} = {:.2}", a / 1000.0, b / 1000.0, a / b),
                _ => "–".to_owned(),
            },
            None => "–".to_owned(),
        };
        // What bounds the row: tether's kernel time per message alone, against the peer,
        // round by round like the ratio.
        let user_space_free = |o: &Outcome| {
            let share = o.server_kernel_s? / o.server_cpu_s.filter(|cpu| *cpu > 0.0)?;
            o.msg_per_cpu_s
                .zip(Some(share).filter(|s| *s > 0.0))
                .map(|(v, s)| v / s)
        };
        let ceiling = match best {
            Some((i, _, _)) if !idle => {
                Paired::of(&results[c][t].0, &results[pc][i].0, user_space_free, figure)
                    .map_or(percent(ours.kernel), |p| {
                        format!("{} → {:.2}", percent(ours.kernel), p.median)
                    })
            }
            None if !idle => percent(ours.kernel),
            _ => "–".to_owned(),
        };
        let ours_shown = if joins {
            match (ours.wall_s, ours.cpu_s) {
                (Some(wall), Some(cpu)) => format!("{wall:.2} s wall, {cpu:.2} s server CPU"),
                _ => "–".to_owned(),
            }
        } else {
            value(ours).map_or("–".to_owned(), unit)
        };
        let _ = writeln!(
            md,
            "| {} | {ours_shown} | {peer} | {} | {tail} | {ceiling} |",
            case.title,
            ratio.map_or("–".to_owned(), |r| r.show()),
        );
    }
    let _ = writeln!(
        md,
        "\nRatios are tether / peer: above 1 is better for tether in throughput rows, below 1 \
         in memory rows. Each is the median of the rounds' own ratios (in brackets, round by \
         round): the two subjects of a round ran minutes apart, while the host's speed can drift \
         more than that within a run. The last column is what bounds a throughput row: the share of tether's \
         server CPU spent in the kernel, and the ratio tether would reach if its user space cost \
         nothing and its system calls stayed as they are (msg/CPU-s ÷ that share ÷ the peer's).\n"
    );
    // The same ratios as a picture, next to the markdown file.
    let chart = chart::svg("tether (tokio) ÷ best peer, per scenario", &bars);
    std::fs::write(&chart_path, chart).map_err(|e| format!("{}: {e}", chart_path.display()))?;
    eprintln!("wrote {}", chart_path.display());
    let _ = writeln!(
        md,
        "![The summary's ratios, tether ÷ best peer per scenario, on a log scale]({})\n",
        chart_link(&options.out, &chart_path)
    );
    if !engine_cases.is_empty() {
        let _ = writeln!(md, "### The engine alone, in process (no sockets, no runtime)\n");
        let _ = writeln!(
            md,
            "`tether-bench engine` (bench/src/engine.rs): ws-session's server `Engine` driven through \
             its Sans-IO API by a loop on one thread, in a process of its own pinned to core \
             {SERVER_CPU}: inbound texts handed to `handle_message`, `echo` answered with `reply`, \
             `pub` with `broadcast_room`, every outbound message encoded into a buffer and reported \
             flushed; clients acknowledge as in the socket rows. ops/CPU-s and CPU ns/op come from \
             the thread's own CPU time (`/proc/thread-self/schedstat`) over the window (for the storm: \
             around each storm, its setup excluded), median of the rounds. The engine's share is its \
             ns/op over the CPU per message of tether (tokio)'s server in the socket row of the same \
             scenario in this run: the rest is the runtime, the sockets, WebSocket framing and the \
             App layer. Every answer, delivery (in order) and replayed message is counted; a run \
             with a count off fails.\n"
        );
        let socket_ns: Vec<Option<f64>> = engine_cases
            .iter()
            .map(|engine_case| {
                cases
                    .iter()
                    .enumerate()
                    .filter(|(_, case)| is_twin(&engine_case.scenario, &case.scenario))
                    .find_map(|(c, case)| {
                        let t = reference(&subjects, case)?;
                        cells[c][t].msg_per_cpu_s.filter(|v| *v > 0.0).map(|v| 1e9 / v)
                    })
            })
            .collect();
        let _ = writeln!(md, "{}", engine_table(&engine_cases, &engine_cells, &socket_ns));
    }
    for (c, case) in cases.iter().enumerate() {
        let idle = matches!(case.scenario, Scenario::Idle { .. });
        let joins = matches!(case.scenario, Scenario::Join { .. });
        let tether = reference(&subjects, case);
        if !subjects.iter().any(|s| for_subject(case, s).is_some()) {
            continue;
        }
        let _ = writeln!(md, "### {}\n", case.title);
        if joins {
            let _ = writeln!(
                md,
                "| subject | wall s, to the last member knowing all | server CPU s | of it in the kernel | presence messages | presence MB | join replies MB | server RSS growth per session KB | counts | runs |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|");
        } else if idle {
            let _ = writeln!(
                md,
                "| subject | KB per connection | tether (tokio) / subject | runs |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|");
        } else {
            let _ = writeln!(
                md,
                "| subject | msg/s | server core busy | of it in the kernel | msg/CPU-s | p50 µs | p99 µs | p99.9 µs | tether (tokio) / subject: msg/CPU-s, p99 | counts | runs |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
        }
        for (s, subject) in subjects.iter().enumerate() {
            if for_subject(case, subject).is_none() {
                continue;
            }
            let cell = &cells[c][s];
            let name = if subject.tether {
                format!("**{}**", subject.name)
            } else {
                subject.name.clone()
            };
            // tether (tokio) against this subject, round by round (see the summary).
            let ratio = |figure: &dyn Fn(&Outcome) -> Option<f64>| {
                tether
                    .and_then(|t| Paired::of(&results[c][t].0, &results[c][s].0, figure, figure))
                    .map_or("–".to_owned(), |p| format!("{:.2}", p.median))
            };
            let num = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.0}", v));
            let failed = if cell.failures.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} failed: {})",
                    cell.failures.len(),
                    cell.failures[0].lines().next().unwrap_or("")
                )
            };
            let fixed = |v: Option<f64>, scale: f64, places: usize| {
                v.map_or("–".to_owned(), |v| format!("{:.*}", places, v / scale))
            };
            if joins {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {}{failed} |",
                    fixed(cell.wall_s, 1.0, 2),
                    fixed(cell.cpu_s, 1.0, 2),
                    percent(cell.kernel),
                    num(cell.presence_msgs),
                    fixed(cell.presence_bytes, 1e6, 0),
                    fixed(cell.reply_bytes, 1e6, 0),
                    fixed(cell.rss_per_conn, 1000.0, 1),
                    cell.counts,
                    cell.runs
                );
            } else if idle {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {}{failed} |",
                    fixed(cell.rss_per_conn, 1000.0, 1),
                    ratio(&|o| o.rss_per_conn),
                    cell.runs
                );
            } else {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} · {} | {} | {}{failed} |",
                    num(cell.msg_per_s),
                    percent(cell.busy),
                    percent(cell.kernel),
                    num(cell.msg_per_cpu_s),
                    num(cell.p50_us),
                    num(cell.p99_us),
                    num(cell.p999_us),
                    ratio(&|o| o.msg_per_cpu_s),
                    ratio(&|o| o.p99_us.map(f64::from)),
                    cell.counts,
                    cell.runs
                );
            }
        }
        let _ = writeln!(md);
    }
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "Not built on this run (see bench/README.md): {}.\n",
            missing.join(", ")
        );
    }
    let _ = writeln!(md, "{END}");
    write_section(&options.out, &md).map_err(|e| format!("{}: {e}", options.out.display()))?;
    eprintln!("wrote {}", options.out.display());
    Ok(())
}

/// How the markdown file `out` links to the chart at `chart`: by its name when the two
/// are in the same directory (docs/BENCHMARKS.md → benchmarks.svg), by its path as
/// given otherwise.
fn chart_link(out: &Path, chart: &Path) -> String {
    let dir = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    match chart.file_name() {
        Some(name) if dir(out) == dir(chart) => name.to_string_lossy().into_owned(),
        _ => chart.display().to_string(),
    }
}

/// Replaces the section between the markers in `path`, or appends it.
pub fn write_section(path: &Path, section: &str) -> io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            format!(
                "{}{}{}",
                &text[..begin],
                section.trim_end(),
                &text[end + END.len()..]
            )
        }
        _ => format!("{}\n{}", text.trim_end_matches('\n').to_owned() + "\n", section),
    };
    std::fs::write(path, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_row_has_exactly_one_socket_twin() {
        for quick in [true, false] {
            let socket = cases(quick);
            for engine_case in engine_cases(quick) {
                let twins = socket
                    .iter()
                    .filter(|case| is_twin(&engine_case.scenario, &case.scenario))
                    .count();
                assert_eq!(twins, 1, "{} (quick: {quick})", engine_case.title);
            }
        }
    }

    #[test]
    fn the_full_run_fans_out_to_1000_and_5000_members_and_the_quick_one_to_1000() {
        let fanouts = |quick| {
            cases(quick)
                .into_iter()
                .filter_map(|case| match case.scenario {
                    Scenario::Fanout {
                        members, ack_every, ..
                    } => Some((members, ack_every)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(fanouts(false), [(1000, 0), (1000, 16), (5000, 0), (5000, 16)]);
        assert_eq!(fanouts(true), [(1000, 0), (1000, 16)]);
    }

    fn run(round: usize, msg_per_cpu_s: f64) -> (usize, Outcome) {
        let outcome = Outcome {
            msg_per_cpu_s: Some(msg_per_cpu_s),
            ..Outcome::default()
        };
        (round, outcome)
    }

    #[test]
    fn ratios_pair_the_runs_of_one_round_and_leave_out_rounds_either_lacks() {
        let figure = |o: &Outcome| o.msg_per_cpu_s;
        // The peer's slow third round would make a ratio of medians 1.0 (100 / 100);
        // round by round tether is ahead twice and behind once.
        let ours = vec![run(0, 120.0), run(1, 100.0), run(2, 60.0)];
        let theirs = vec![run(0, 100.0), run(1, 125.0), run(2, 40.0)];
        let paired = Paired::of(&ours, &theirs, figure, figure).unwrap();
        assert_eq!(paired.rounds, [1.2, 0.8, 1.5]);
        assert_eq!(paired.median, 1.2);
        assert_eq!(paired.show(), "1.20 (1.20 · 0.80 · 1.50)");
        // A round the peer failed in is no pair; a zero figure is no ratio.
        let theirs = vec![run(0, 100.0), run(2, 0.0)];
        let paired = Paired::of(&ours, &theirs, figure, figure).unwrap();
        assert_eq!(paired.rounds, [1.2]);
        assert_eq!(paired.show(), "1.20");
        assert_eq!(Paired::of(&ours, &[], figure, figure), None);
    }

    #[test]
    fn the_join_storm_is_run_by_tethers_session_servers_with_presence_alone() {
        let (subjects, _) = subjects(Path::new("/nonexistent"));
        let join = cases(false)
            .into_iter()
            .find(|case| matches!(case.scenario, Scenario::Join { sessions: 10_000 }))
            .expect("the full run has the 10,000-member join");
        let taking_part: Vec<_> = subjects
            .iter()
            .filter(|s| for_subject(&join, s).is_some())
            .collect();
        assert_eq!(taking_part.len(), 3, "{taking_part:?}");
        for subject in taking_part {
            assert!(subject.tether && subject.family == Family::Session(Proto::Tether));
            let command = command_for(subject, &join.scenario);
            assert!(command.iter().any(|a| a == "session-presence"), "{command:?}");
            let echo = command_for(subject, &cases(false)[3].scenario);
            assert!(echo.iter().any(|a| a == "session"), "{echo:?}");
        }
    }

    #[test]
    fn fan_out_with_acks_is_held_against_the_peers_of_the_same_room_without() {
        let cases = cases(false);
        let title = |c: usize| cases[c].title.as_str();
        for (c, case) in cases.iter().enumerate() {
            let pc = peer_case(&cases, c);
            match case.scenario {
                Scenario::Fanout {
                    members, ack_every, ..
                } if ack_every > 0 => {
                    assert_ne!(pc, c, "{}", title(c));
                    assert!(
                        matches!(cases[pc].scenario, Scenario::Fanout { members: m, ack_every: 0, .. } if m == members),
                        "{} → {}",
                        title(c),
                        title(pc)
                    );
                }
                _ => assert_eq!(pc, c, "{}", title(c)),
            }
        }
    }

    #[test]
    fn the_chart_is_linked_by_name_beside_the_markdown() {
        let out = Path::new("docs/BENCHMARKS.md");
        assert_eq!(
            chart_link(out, Path::new("docs/benchmarks.svg")),
            "benchmarks.svg"
        );
        assert_eq!(chart_link(out, Path::new("/tmp/c.svg")), "/tmp/c.svg");
    }
}
