//! The integration suite ([`tether_tests::suite`]) against a server on each runtime:
//! the same test bodies, three servers.

mod tokio_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio);
}

mod async_std_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd);
}

mod smol_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol);
}
