//! A real `redis-server` for the tests of nodes that share rooms through Redis: started
//! on a free loopback port in a scratch directory, with persistence off, and killed
//! when dropped. A test that cannot find `redis-server` fails and says how to install
//! it; it never passes without Redis.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The message a test fails with when there is no `redis-server`.
pub const INSTALL: &str = "redis-server is needed by the Redis tests and was not found on PATH \
     (or at $REDIS_SERVER): install redis-server (apt-get install redis-server)";

/// A `redis-server` process of this test.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    persistent: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts `redis-server` with its append-only file on (`appendfsync always`), so
    /// that what it held survives [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        // A free port is only free when asked: another test's server may take it
        // before ours binds. Then ours exits (or another answers there): try another.
        let mut last = String::new();
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = std::env::temp_dir().join(format!("tether-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a scratch directory for redis-server");
            let mut server = Self {
                port,
                dir,
                child: None,
                persistent,
            };
            match server.launch() {
                Ok(()) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start on any of 20 free ports; the last: {last}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown) and waits for its end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)): empty,
    /// or with what it held if it is [persistent](Self::start_persistent).
    pub fn restart(&mut self) {
        if let Err(why) = self.launch() {
            panic!("redis-server did not start again: {why}");
        }
    }

    /// Spawns the server and waits until it answers: `Err` when it exited (its port
    /// was taken) or the process answering on its port is another one.
    fn launch(&mut self) -> Result<(), String> {
        self.stop();
        let binary = binary();
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("{INSTALL} ({}: {err})", binary.display()));
        let pid = child.id();
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("redis-server on {addr} exited: {status}"));
            }
            if TcpStream::connect(addr).is_ok() {
                // Listening, and loading done: it answers INFO with its process id.
                if let Ok(answering) = self.process_id() {
                    if answering == pid {
                        return Ok(());
                    }
                    self.stop();
                    return Err(format!(
                        "another redis-server (pid {answering}) answers on {addr}"
                    ));
                }
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("redis-server did not answer on {addr} in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the server answering on this server's port.
    fn process_id(&self) -> Result<u32, String> {
        let mut connection = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(|err| err.to_string())?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut connection)
            .map_err(|err| err.to_string())?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| "INFO server without a process_id".to_owned())
    }

    /// A plain connection, to ask the server what it holds (`PUBSUB NUMSUB`, `INFO`).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection to the test's redis-server")
    }

    /// How many connections are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut self.connection())
            .expect("PUBSUB NUMSUB");
        n
    }

    /// Memory the server uses (`used_memory`) and how many keys it holds.
    pub fn memory(&self) -> (u64, u64) {
        let mut connection = self.connection();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut connection)
            .expect("INFO memory");
        let used = info
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let keys: u64 = redis::cmd("DBSIZE").query(&mut connection).expect("DBSIZE");
        (used, keys)
    }

    /// How many times the server ran `command` (from `INFO commandstats`), or 0.
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .expect("INFO commandstats");
        let key = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|line| line.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a `redis_node` process (`command`: the test's `CARGO_BIN_EXE_redis_node`
/// with its arguments and environment), stdin and stdout piped, and reads the address
/// it serves from its first line (`listening ADDR`).
pub fn start_node(mut command: Command) -> (Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the redis_node binary starts");
    let stdout = child.stdout.take().expect("its stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("its first line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("redis_node said {line:?}"))
        .parse()
        .expect("an address");
    (child, addr)
}

/// `$REDIS_SERVER`, or `redis-server` on `PATH` (or in `/usr/bin`, `/usr/sbin`).
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")]);
    locate(std::env::var_os("REDIS_SERVER"), dirs)
}

/// `explicit`, or the first `redis-server` in `dirs`; fails saying how to install it.
fn locate(explicit: Option<std::ffi::OsString>, dirs: impl IntoIterator<Item = PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return PathBuf::from(path);
    }
    dirs.into_iter()
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_file(candidate))
        .unwrap_or_else(|| panic!("{INSTALL}"))
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `redis-server` the Redis tests fail, and say how to install it.
    #[test]
    #[should_panic(expected = "install redis-server (apt-get install redis-server)")]
    fn a_missing_redis_server_fails_with_how_to_install_it() {
        locate(None, [std::env::temp_dir().join("tether-no-redis-here")]);
    }
}
