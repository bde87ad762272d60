//! Logs are plain text when stderr is not a terminal (a redirected run's log file holds no
//! colour codes) and honour NO_COLOR on a terminal.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, run};

const ESC: &str = "\x1b[";

/// A labelling run of ten Fashion-MNIST test images with the committed model: it logs at info.
fn label_command(dir: &Path, out: &str) -> Command {
    let mut cmd = Command::new(bin("maxl-label"));
    cmd.args(["--backend", "tract", "--model"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .arg("--input")
        .arg(dir.join("images"))
        .arg("--out")
        .arg(dir.join(out));
    cmd
}

/// `cmd` run by script(1) on a pseudo-terminal, with NO_COLOR set or not: what it printed.
fn on_a_terminal(cmd: &Command, no_color: bool) -> String {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let mut script = Command::new("script");
    script.args(["-qec", &line.join(" "), "/dev/null"]);
    script.env_remove("NO_COLOR");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let r = run(&mut script);
    r.assert_ok();
    r.stdout
}

#[test]
fn logs_are_plain_text_unless_stderr_is_a_terminal_without_no_color() {
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new(bin("maxl-train"))
        .args(["dump-images", "--per-class", "1", "--data"])
        .arg(common::fashion_mnist_dir())
        .arg("--out")
        .arg(tmp.path().join("images")))
    .assert_ok();

    // Redirected: the info line is there, without escape codes.
    let r = run(label_command(tmp.path(), "a.csv").env_remove("NO_COLOR"));
    r.assert_ok();
    assert!(
        r.stderr.contains("INFO") && r.stderr.contains("labelling"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains(ESC),
        "colour in a redirected log: {:?}",
        r.stderr
    );

    // On a terminal: coloured, unless NO_COLOR is set.
    let coloured = on_a_terminal(&label_command(tmp.path(), "b.csv"), false);
    assert!(coloured.contains("labelling"), "{coloured}");
    assert!(
        coloured.contains(ESC),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(&label_command(tmp.path(), "c.csv"), true);
    let log_line = plain
        .lines()
        .find(|l| l.contains("INFO"))
        .unwrap_or_default();
    assert!(log_line.contains("labelling"), "{plain:?}");
    assert!(!log_line.contains(ESC), "NO_COLOR ignored: {log_line:?}");
}
