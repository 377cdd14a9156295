//! Runs every example (built by `cargo test` next to this test) on bounded input and checks
//! that it finished and that its own check of its output against its input passed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/run_examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `name` with `args`; its stdout, once it exits successfully within two minutes.
fn run(name: &str, args: &[&str]) -> String {
    let path = example(name);
    assert!(path.exists(), "{} is not built", path.display());
    let mut child = Command::new(&path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("{name} did not finish in two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn log_basics() {
    let out = run("log_basics", &[]);
    assert!(out.contains("reopened orders-0: log end offset 4"), "{out}");
}

#[test]
fn quickstart() {
    let out = run("quickstart", &["--records", "2000"]);
    assert!(
        out.contains("all 20 windows match the input's counts, each emitted once"),
        "{out}"
    );
}

#[test]
fn wordcount() {
    let out = run("wordcount", &["--records", "500"]);
    assert!(out.contains("all 12 words counted exactly"), "{out}");
}

#[test]
fn windowed_pageviews() {
    let out = run("windowed_pageviews", &["--records", "2000"]);
    assert!(
        out.contains("hopping windows match, each emitted once"),
        "{out}"
    );
}

#[test]
fn sessions() {
    let out = run("sessions", &["--records", "1000"]);
    assert!(
        out.contains("sessions of 10 users match the input"),
        "{out}"
    );
}

#[test]
fn enrich() {
    let out = run("enrich", &["--records", "500"]);
    assert!(
        out.contains("all 500 orders enriched with their customer (or none)"),
        "{out}"
    );
}

#[test]
fn fraud() {
    let out = run("fraud", &["--records", "1000"]);
    assert!(out.contains("exactly the suspicious pairs"), "{out}");
}

#[test]
fn bank() {
    let out = run("bank", &["--records", "2000"]);
    assert!(out.contains("killed instance 1 after"), "{out}");
    assert!(out.contains("approved and credited once each"), "{out}");
    assert!(out.contains("total 10000"), "{out}");
}

/// A `rill broker` process on a free port, stopped when dropped.
struct BrokerProcess {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `rill` binary built beside the examples (`cargo test --workspace` builds it).
fn start_broker() -> Option<BrokerProcess> {
    use std::io::BufRead;
    let rill = example("../rill");
    if !rill.exists() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&rill)
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // "rill broker listening on 127.0.0.1:PORT (advertised as ...), data in ..."
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line from rill broker: {line}"))
        .to_string();
    Some(BrokerProcess {
        child,
        address,
        _dir: dir,
    })
}

#[test]
fn every_example_runs_against_a_rill_broker_over_tcp() {
    let Some(broker) = start_broker() else {
        assert!(
            std::env::var_os("RILL_COMPAT_REQUIRED").is_none(),
            "the rill binary is not built beside the examples"
        );
        println!("SKIPPED: build the rill binary (cargo test --workspace does)");
        return;
    };
    let b = ["--bootstrap-server", broker.address.as_str()];
    for (name, records, expect) in [
        ("quickstart", "1000", "windows match"),
        ("wordcount", "200", "counted exactly"),
        ("windowed_pageviews", "1000", "each emitted once"),
        ("sessions", "500", "match the input"),
        ("enrich", "200", "orders enriched"),
        ("fraud", "500", "exactly the suspicious pairs"),
        ("bank", "1000", "approved and credited once each"),
    ] {
        let mut args = b.to_vec();
        args.extend(["--records", records]);
        let out = run(name, &args);
        assert!(out.contains(expect), "{name} over TCP:\n{out}");
    }
}
