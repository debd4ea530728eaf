//! The integration suite ([`tether_tests::suite`]) against a server on each runtime,
//! once per envelope codec: the same test bodies, three servers, two codecs.

mod tokio_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Tokio);
}

mod async_std_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::AsyncStd);
}

mod smol_server {
    tether_tests::runtime_suite!(tether_tests::harness::ServerRuntime::Smol);
}

mod tokio_server_msgpack {
    tether_tests::runtime_suite!(
        tether_tests::harness::ServerRuntime::Tokio,
        tether_tests::Codec::MsgPack
    );
}

mod async_std_server_msgpack {
    tether_tests::runtime_suite!(
        tether_tests::harness::ServerRuntime::AsyncStd,
        tether_tests::Codec::MsgPack
    );
}

mod smol_server_msgpack {
    tether_tests::runtime_suite!(
        tether_tests::harness::ServerRuntime::Smol,
        tether_tests::Codec::MsgPack
    );
}
