//! The test servers answer `--help` with their options, and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn every_program_answers_help_with_its_options() {
    for (program, flags) in [
        (env!("CARGO_BIN_EXE_plain-server"), &[][..]),
        (env!("CARGO_BIN_EXE_browser-test-server"), &["--port"][..]),
    ] {
        let output = Command::new(program).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{program}: {output:?}");
        assert!(text.starts_with("usage: "), "{program}: {text}");
        for flag in flags {
            assert!(text.contains(flag), "{program} --help lists {flag}: {text}");
        }
    }
}
