//! Installs the reference server's SDKs under `target/sdk/` on first use: the Python package
//! from PyPI into a virtual environment, and the Node client shipped in the `lockserver` crate
//! package with `axios` from npm; and the tools the deployment tests run: schemathesis from
//! PyPI (its own virtual environment) and cargo-deb from crates.io, each at a pinned version.
//! A file lock per installation keeps concurrent tests (or test processes) from installing
//! twice. The system tools (`promtool`, `systemd-analyze`) come from Debian's packages, which
//! `.ci/run` installs: [`system_tool`] finds them.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The versions the reference server 0.1.3 documents.
const PYTHON_SDK: &str = "lockserver-client==0.1.3";
const RUST_CRATE_VERSION: &str = "0.1.3";
/// The fuzzer that proves `docs/openapi.yaml` against a live server.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The Debian package builder.
const CARGO_DEB: &str = "3.8.0";

fn sdk_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("sdk");
    fs::create_dir_all(&dir).expect("create target/sdk");
    dir
}

/// Runs `f` holding the SDK directory's lock.
fn locked<T>(f: impl FnOnce(&Path) -> T) -> T {
    locked_as(".lock", f)
}

/// Runs `f` holding the lock named `name` in the SDK directory.
fn locked_as<T>(name: &str, f: impl FnOnce(&Path) -> T) -> T {
    let dir = sdk_dir();
    let lock = File::create(dir.join(name)).expect("lock file");
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

/// The `schemathesis` command, from a virtual environment of its own.
pub fn schemathesis() -> PathBuf {
    locked_as(".lock-schemathesis", |dir| {
        let venv = dir.join("schemathesis");
        let marker = venv.join("installed");
        if fs::read_to_string(&marker).ok().as_deref() != Some(SCHEMATHESIS) {
            run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv));
            run(Command::new(venv.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                SCHEMATHESIS,
            ]));
            fs::write(&marker, SCHEMATHESIS).unwrap();
        }
        venv.join("bin").join("schemathesis")
    })
}

/// The `cargo-deb` command, built from crates.io the first time (about a minute and a half on
/// two cores), its build directory removed after.
pub fn cargo_deb() -> PathBuf {
    locked_as(".lock-cargo-deb", |dir| {
        let root = dir.join("cargo-deb");
        let marker = root.join("installed");
        if fs::read_to_string(&marker).ok().as_deref() != Some(CARGO_DEB) {
            let build = root.join("build");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo)
                .args(["install", "--locked", "--force", "--quiet", &format!("cargo-deb@{CARGO_DEB}")])
                .arg("--root")
                .arg(&root)
                .arg("--target-dir")
                .arg(&build)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR"));
            let _ = fs::remove_dir_all(&build);
            fs::write(&marker, CARGO_DEB).unwrap();
        }
        root.join("bin").join("cargo-deb")
    })
}

/// The system tool `name` (from the Debian package `package`, which `.ci/run` installs), if it
/// is on the `PATH`. In CI (`CI` set) a missing tool fails the test; elsewhere the test says
/// so and passes, so that a machine without it can still run the rest.
pub fn system_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: .ci/run installs the {package} package"
        );
        eprintln!("skipped: {name} is not installed (apt-get install {package}; .ci/run does)");
    }
    found
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
