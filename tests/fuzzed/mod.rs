//! Replays the fuzz seeds and every input the fuzzers ever crashed on (`fuzz/seeds`,
//! `fuzz/regressions`) through the same entry points the fuzz targets use.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} panics", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn http_inputs_that_once_mattered() {
    assert!(replay("http", ringlock::fuzzing::http) >= 6);
}

#[test]
fn wire_inputs_that_once_mattered() {
    assert!(replay("wire", ringlock::fuzzing::wire) >= 12);
}
