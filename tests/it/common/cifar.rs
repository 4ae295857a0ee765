//! The generated CIFAR-10 fixtures (tests/fixtures/make_cifar10.py): what each file holds, and a
//! local HTTP server to download them from. Shared by `tests/it/data.rs` and
//! `tests/environment.rs`.

use std::path::{Path, PathBuf};

use resnet_transfer::data::Cifar10;

pub const PER_FILE: usize = 8;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

/// The generator's formula for file `k` (1..5 training, 6 test).
pub fn expected_label(k: usize, i: usize) -> usize {
    (3 * i + k) % 10
}

pub fn expected_pixel(k: usize, i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((7 * i + 50 * c + 3 * y + 5 * x + 11 * expected_label(k, i) + 13 * k) % 256) as u8
}

pub fn check(cifar: &Cifar10) {
    assert_eq!(cifar.train.len(), 5 * PER_FILE);
    assert_eq!(cifar.test.len(), PER_FILE);
    assert_eq!(cifar.class_names[1], "automobile");
    assert_eq!(cifar.class_names.len(), 10);
    for (i, k, c, y, x) in [
        (0, 1, 0, 0, 0),
        (3, 2, 1, 5, 7),
        (7, 5, 2, 31, 31),
        (5, 4, 1, 16, 0),
    ] {
        let n = (k - 1) * PER_FILE + i; // position in the concatenated training set
        assert_eq!(cifar.train.label(n), expected_label(k, i));
        assert_eq!(
            cifar.train.pixel(n, c, y, x).unwrap(),
            expected_pixel(k, i, c, y, x),
            "{i} {k} {c} {y} {x}"
        );
    }
    assert_eq!(
        cifar.test.pixel(6, 2, 9, 30).unwrap(),
        expected_pixel(6, 6, 2, 9, 30)
    );
    assert_eq!(cifar.test.label(6), expected_label(6, 6));
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Serves `body` at every path (or 404s) on 127.0.0.1 until `requests` have been answered.
pub fn serve(body: Vec<u8>, status: u16, requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_secs(30)) else {
                return;
            };
            let response = tiny_http::Response::from_data(body.clone()).with_status_code(status);
            let _ = request.respond(response);
        }
    });
    (url, handle)
}

pub fn md5_of(path: &Path) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
