//! `permaproxy demo` tells its story alone: the numbered walkthrough on
//! stdout, and the proxy's own log lines (Pingora's bootstrap and shutdown,
//! the access log) in `data/demo.log`, whose path the demo prints.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::proxy::{tail, BIN};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_the_story_alone_and_logs_to_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let log_path = dir.path().join("data/demo.log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    // A clean environment and a cwd of its own: the demo writes ./data.
    let mut child = Command::new(BIN)
        .arg("demo")
        .env_clear()
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn permaproxy demo");
    let deadline = Instant::now() + secs(60);
    let stdout = loop {
        let text = read(&out_path);
        // The last line of the walkthrough; its requests are in the log by
        // then, give or take the access log's few milliseconds of batching.
        if text.contains("Ctrl-C stops the demo") && read(&log_path).contains("route=\"hosted\"") {
            break text;
        }
        if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not finish its walkthrough\n--- stdout ---\n{text}\n--- stderr ---\n{}\n--- log ---\n{}",
                read(&err_path),
                tail(&read(&log_path), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let (stderr, log) = (read(&err_path), read(&log_path));

    assert!(stdout.contains("-> 200 OK image/png"), "{stdout}");
    assert!(
        stdout.contains(&format!("proxy log: {}", log_path.display())),
        "the demo must say where its log is:\n{stdout}"
    );
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains("INFO") && !text.contains("Bootstrap"),
            "log lines on the demo's {name}:\n{text}"
        );
    }
    assert!(
        log.contains("Bootstrap") && log.contains("access") && log.contains("route=\"rewrite\""),
        "the log file lacks Pingora's or the access lines:\n{log}"
    );
    assert!(!log.contains("\u{1b}["), "colour codes in the log file");
}
