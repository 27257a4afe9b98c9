//! Installs the reference server's SDKs under `target/sdk/` on first use: the Python package
//! from PyPI into a virtual environment, and the Node client shipped in the `lockserver` crate
//! package with `axios` from npm. A file lock keeps concurrent tests (or test processes) from
//! installing twice.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The versions the reference server 0.1.3 documents.
const PYTHON_SDK: &str = "lockserver-client==0.1.3";
const RUST_CRATE_VERSION: &str = "0.1.3";

fn sdk_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("sdk");
    fs::create_dir_all(&dir).expect("create target/sdk");
    dir
}

/// Runs `f` holding the SDK directory's lock.
fn locked<T>(f: impl FnOnce(&Path) -> T) -> T {
    let dir = sdk_dir();
    let lock = File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("lock target/sdk");
    let out = f(&dir);
    drop(lock);
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python of a virtual environment with the Python SDK and `requests` installed.
pub fn python() -> PathBuf {
    locked(|dir| {
        let venv = dir.join("venv");
        let python = venv.join("bin").join("python");
        let marker = venv.join("installed");
        if fs::read_to_string(&marker).ok().as_deref() != Some(PYTHON_SDK) {
            run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv));
            run(Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PYTHON_SDK,
                "requests",
            ]));
            fs::write(&marker, PYTHON_SDK).unwrap();
        }
        python
    })
}

/// A directory holding the Node client (its `index.js` and `package.json`, copied unchanged
/// from the crate package) with its dependency `axios` installed from npm.
pub fn node_client() -> PathBuf {
    locked(|dir| {
        let client = dir.join("node").join("lockserver-client");
        let marker = client.join("installed");
        if !marker.exists() {
            let shipped = crate_dir().join("js-client");
            fs::create_dir_all(&client).unwrap();
            for file in ["index.js", "package.json"] {
                fs::copy(shipped.join(file), client.join(file))
                    .unwrap_or_else(|e| panic!("copy {file}: {e}"));
            }
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&client));
            fs::write(&marker, "").unwrap();
        }
        client
    })
}

/// Where cargo unpacked the `lockserver` crate (a dev-dependency), found with `cargo metadata`.
fn crate_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lockserver" && p["version"] == RUST_CRATE_VERSION)
        .expect("the lockserver crate in cargo metadata");
    Path::new(package["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf()
}
