//! The integration suite ([`tether_tests::suite`]) against a server on each runtime,
//! reached over each transport (WebSocket once per envelope codec): the same test
//! bodies, twelve servers.

mod tokio_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio);
}

mod async_std_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd);
}

mod smol_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol);
}

mod tokio_tcp {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio, Tcp);
}

mod async_std_tcp {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd, Tcp);
}

mod smol_tcp {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol, Tcp);
}

mod tokio_memory {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio, Memory);
}

mod async_std_memory {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd, Memory);
}

mod smol_memory {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol, Memory);
}

mod tokio_msgpack {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio, WebSocketMsgPack);
}

mod async_std_msgpack {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd, WebSocketMsgPack);
}

mod smol_msgpack {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol, WebSocketMsgPack);
}
