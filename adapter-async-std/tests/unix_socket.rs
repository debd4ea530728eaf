//! The "Writing a transport" example (`examples/unix_socket.rs`): an application and
//! its client over a Unix socket; docs/GUIDE.md quotes it.

#[allow(dead_code)]
#[path = "../examples/unix_socket.rs"]
mod unix_socket;

#[test]
fn an_app_and_its_client_talk_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("tether-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let reply = smol::block_on(unix_socket::run(unix_socket::app(), path.clone())).expect("an echo");
    assert_eq!(reply, "over a Unix socket");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_guide_quotes_the_example() {
    let source = include_str!("../examples/unix_socket.rs");
    let block = source
        .split("// guide:start\n")
        .nth(1)
        .and_then(|rest| rest.split("// guide:end").next())
        .expect("the markers");
    let guide = include_str!("../../docs/GUIDE.md");
    assert!(
        guide.contains(block),
        "docs/GUIDE.md no longer shows examples/unix_socket.rs"
    );
}
