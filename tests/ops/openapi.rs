//! `docs/openapi.yaml` against a live server: schemathesis (pinned, from PyPI) generates
//! requests for every operation from the spec, valid and not, and checks each answer's status,
//! content type and body against it. Bounded by a number of examples per operation and a fixed
//! seed; the hooks (`schemathesis_hooks.py`) validate the plain-text bodies too and keep waits
//! short.

use std::path::Path;
use std::process::Command;

use crate::support::{SECRET, TestServer, scratch_dir, sdks};

/// The warnings that fail the run (see the `--warnings` argument).
const WARNINGS: &str = "missing_auth,base_url_mismatch,validation_mismatch,missing_deserializer,\
unused_openapi_auth,unsupported_regex,method_not_allowed";
/// Test cases per operation and phase.
const EXAMPLES: &str = "40";
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[test]
fn the_openapi_spec_holds_against_a_live_server() {
    let schemathesis = sdks::schemathesis();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = TestServer::start(2);
    // Its cache and reports go to a scratch directory.
    let work = scratch_dir("schemathesis");
    let out = Command::new(schemathesis)
        .arg("run")
        .arg(root.join("docs/openapi.yaml"))
        .args(["--url", &format!("http://{}", server.addr)])
        .args(["--header", &format!("X-LOCKSERVER-SECRET: {SECRET}")])
        .args(["--checks", CHECKS, "--max-examples", EXAMPLES, "--seed", "14", "--workers", "2"])
        .args(["--request-timeout", "10", "--no-color"])
        // Every warning but missing test data: a single server answers the cluster's
        // operations 404 by design (tests/cluster runs them against clusters).
        .args(["--warnings", WARNINGS])
        // Hypothesis's checks of its own generation speed: a loaded machine is no finding.
        .args(["--suppress-health-check", "all"])
        .env("PYTHONPATH", root.join("tests/ops"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .current_dir(&work)
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Tested: 15"), "every operation was tested:\n{report}");
    assert!(report.contains("No issues found in"), "{report}");
    std::fs::remove_dir_all(work).unwrap();
}
