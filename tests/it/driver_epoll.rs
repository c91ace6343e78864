//! The epoll fallback: where io_uring is unavailable the same registry runs on monoio's
//! legacy driver. `RINGYARD_DRIVER=epoll` forces it, so the fallback path is exercised on
//! machines that do have io_uring. Its own test binary, because the variable is set for the
//! whole process.

use crate::common::*;

#[test]
fn epoll_driver_serves_push_and_pull() {
    std::env::set_var("RINGYARD_DRIVER", "epoll");
    let server = Server::start();
    let log = server.stderr();
    assert!(
        log.contains("(epoll)"),
        "listening line names the driver: {log}"
    );
    assert!(
        log.contains("using the epoll driver"),
        "fallback is logged: {log}"
    );
    let mut c = server.client();
    let layer = pseudo_random(3 * 1024 * 1024 + 17, 7);
    let (digest, manifest) = push_image(&mut c, "epoll/app", "v1", &[&layer]);
    let r = c.get("/v2/epoll/app/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let layer_digest = sha256_digest(&layer);
    let r = c.get(&format!("/v2/epoll/app/blobs/{layer_digest}"));
    assert_eq!(r.status, 200);
    assert!(r.body == layer, "layer comes back byte-identical");
    assert_eq!(server.stop().code(), Some(0));
}
