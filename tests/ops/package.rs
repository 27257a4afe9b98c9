//! The Debian package: `cargo deb` on the binary the suite built (`--no-build`, so no release
//! build; cargo-deb itself is built once into `target/sdk/`), then its contents and control
//! files listed with `dpkg-deb`.

use std::path::Path;
use std::process::Command;

use crate::support::{scratch_dir, sdks};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_debian_package_holds_the_service() {
    let cargo_deb = sdks::cargo_deb();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch_dir("deb");
    // The profile whose directory holds the binary under test: cargo-deb finds it there.
    let binary = Path::new(env!("CARGO_BIN_EXE_ringlock"));
    let profile = match binary.parent().unwrap().file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    run(Command::new(&cargo_deb)
        .args(["--no-build", "--fast", "--quiet", "--profile", profile, "--output"])
        .arg(&out)
        .current_dir(root));
    let debs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    let name = deb.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(&format!("ringlock_{}-1_", env!("CARGO_PKG_VERSION"))), "{name}");

    // Mode and path of every file (directories aside), as dpkg-deb lists them.
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let mut files: Vec<(String, String)> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[0].to_owned(), fields[5].to_owned())
        })
        .collect();
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let expected = [
        ("-rw-r--r--", "./etc/ringlock/ringlock.toml"),
        ("-rwxr-xr-x", "./usr/bin/ringlock"),
        ("-rw-r--r--", "./usr/lib/systemd/system/ringlock.service"),
        ("-rw-r--r--", "./usr/lib/systemd/system/ringlock.socket"),
        ("-rw-r--r--", "./usr/share/doc/ringlock/API.md"),
        ("-rw-r--r--", "./usr/share/doc/ringlock/README.md"),
        ("-rw-r--r--", "./usr/share/doc/ringlock/copyright"),
        ("-rw-r--r--", "./usr/share/doc/ringlock/grafana-dashboard.json"),
        ("-rw-r--r--", "./usr/share/doc/ringlock/openapi.yaml"),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
    assert_eq!(files, expected, "{listing}");
    assert!(listing.lines().all(|l| l.contains(" 0/0 ")), "everything is root's:\n{listing}");

    let field =
        |name: &str| run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name)).trim().to_owned();
    assert_eq!(field("Package"), "ringlock");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    assert!(depends.starts_with("adduser, libc6"), "{depends}");

    let control = out.join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(deb).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap(), "/etc/ringlock/ringlock.toml\n");
    for script in ["postinst", "prerm", "postrm"] {
        let shipped = std::fs::read(root.join("packaging/debian").join(script)).unwrap();
        assert_eq!(std::fs::read(control.join(script)).unwrap(), shipped, "{script} as written");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(control.join(script)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} is executable");
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    for step in [
        "adduser --system --group",
        "chown root:ringlock /etc/ringlock/secret.new",
        "chmod 0640 /etc/ringlock/secret.new",
        "deb-systemd-helper enable ringlock.service",
    ] {
        assert!(postinst.contains(step), "postinst lacks {step:?}");
    }

    let unpacked = out.join("root");
    run(Command::new("dpkg-deb").arg("--extract").arg(deb).arg(&unpacked));
    for (packaged, source) in [
        ("usr/lib/systemd/system/ringlock.service", "packaging/ringlock.service"),
        ("usr/lib/systemd/system/ringlock.socket", "packaging/ringlock.socket"),
        ("etc/ringlock/ringlock.toml", "packaging/ringlock.toml"),
    ] {
        assert_eq!(
            std::fs::read(unpacked.join(packaged)).unwrap(),
            std::fs::read(root.join(source)).unwrap()
        );
    }
    let version = run(Command::new(unpacked.join("usr/bin/ringlock")).arg("--version"));
    assert_eq!(version, format!("ringlock {}\n", env!("CARGO_PKG_VERSION")), "the packaged binary runs");
    std::fs::remove_dir_all(out).unwrap();
}
