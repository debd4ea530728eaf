//! The in-memory transport and the test runtime, as docs/GUIDE.md ("Testing an App in
//! memory") shows them: an application tested with a real client, no socket, on a
//! clock that moves only when the test moves it. The guide quotes the block between
//! the markers; a test below checks that it still does.

// guide:start
use std::time::Duration;

use ws_driver::client::{Client, ClientError, ClientOptions, QueryError, State};
use ws_driver::test_runtime::TestRuntime;
use ws_driver::transport::memory::MemoryDialer;
use ws_driver::{App, Context, HandlerResult};

fn app() -> App {
    App::new()
        .authenticate(|token: String, _info| async move { Ok::<_, String>(token) })
        .on("echo", |ctx: Context| async move {
            let text: String = ctx.payload()?;
            ctx.reply("echo", &text)
        })
        .on("never", |_ctx: Context| std::future::pending::<HandlerResult>())
}

#[test]
fn an_app_and_its_client_in_memory_on_a_test_clock() {
    let runtime = TestRuntime::new();
    let hub = app().try_start(runtime.clone()).expect("a valid configuration");
    let dialer = MemoryDialer::new(&hub, runtime.clone());
    let client = Client::start_with(dialer, ClientOptions::with_credential("alice"), runtime.clone());

    let c = client.clone();
    let reply = runtime.block_on(async move {
        c.connected().await?;
        c.query("echo", "hello", None).await
    });
    assert_eq!(reply.unwrap().payload_as::<String>().unwrap(), "hello");

    // An hour of heartbeats in no time: the client answers every `sys.ping`.
    runtime.advance(Duration::from_secs(3600));
    assert_eq!(client.state(), State::Connected);

    // A query nobody answers fails after its 30 s, which pass at once.
    let c = client.clone();
    let started = runtime.now();
    let err = runtime.block_on(async move { c.query("never", &(), None).await });
    assert_eq!(err.unwrap_err(), ClientError::Query(QueryError::Timeout));
    assert_eq!(runtime.now() - started, Duration::from_secs(30));
}
// guide:end

#[test]
fn the_guide_quotes_this_test() {
    let source = include_str!("in_memory_app.rs");
    let block = source
        .split("// guide:start\n")
        .nth(1)
        .and_then(|rest| rest.split("// guide:end").next())
        .expect("the markers");
    let guide = include_str!("../../docs/GUIDE.md");
    assert!(
        guide.contains(block),
        "docs/GUIDE.md no longer shows tests/tests/in_memory_app.rs"
    );
}
