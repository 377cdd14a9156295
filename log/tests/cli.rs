//! The `rill` binary: `rill bench storage` runs, prints its table, and with `--json` one
//! object per line with the documented fields; bad arguments fail with a clear message.

use std::process::Command;

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

#[test]
fn bench_storage_prints_json_rows_with_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let out = rill()
        .args(["bench", "storage", "--seconds", "0.4", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let workloads: Vec<&str> = rows
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    for w in [
        "append-100B",
        "append-1KiB",
        "read-1KiB",
        "append-fsync-64KiB",
    ] {
        assert!(workloads.contains(&w), "missing {w} in {workloads:?}");
    }
    for r in &rows {
        for field in ["metric", "unit"] {
            assert!(r[field].is_string());
        }
        let (value, baseline, ratio) = (
            r["value"].as_f64().unwrap(),
            r["baseline"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
        );
        assert!(value > 0.0 && baseline > 0.0, "{r}");
        assert!(
            (ratio - value / baseline).abs() < 1e-6 * ratio.max(1.0),
            "{r}"
        );
    }
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = rill()
        .args(["bench", "storage", "--seconds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
    let out = rill().args(["bench", "nosuch"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn bench_produce_and_consume_report_ratios_to_the_storage_paths() {
    for (workload, names) in [
        ("produce", &["produce-100B", "produce-1KiB"][..]),
        ("consume", &["consume-100B"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = rill()
            .args(["bench", workload, "--seconds", "0.4", "--json", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for name in names {
            let row = rows
                .iter()
                .find(|r| r["workload"] == *name && r["metric"] == "records")
                .expect(name);
            assert!(
                row["value"].as_f64().unwrap() > 0.0 && row["baseline"].as_f64().unwrap() > 0.0
            );
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn bench_e2e_reports_latency_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = rill()
        .args([
            "bench",
            "e2e",
            "--seconds",
            "0.3",
            "--rate",
            "2000",
            "--json",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let metrics: Vec<&str> = rows.iter().map(|r| r["metric"].as_str().unwrap()).collect();
    assert_eq!(metrics, vec!["p50 latency", "p99 latency", "p99.9 latency"]);
    let values: Vec<f64> = rows.iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert!(
        values[0] > 0.0 && values[0] <= values[1] && values[1] <= values[2],
        "{values:?}"
    );
}

/// JSON rows of a successful `rill` run.
fn json_rows(out: std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The TCP benches start a `rill broker` child, measure rill's clients against it and the
/// machine's own limits in the same run, clean up after themselves, and write the HTML report.
#[test]
fn tcp_benches_measure_a_broker_process_against_the_machines_limits() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let work = dir.path().join("work");
    let run = |args: &[&str]| {
        rill()
            .args(["bench"])
            .args(args)
            .args(["--tcp", "--seconds", "0.5", "--json", "--dir"])
            .arg(&work)
            .output()
            .unwrap()
    };
    let mut produce = rill();
    produce
        .args(["bench", "produce", "--tcp", "--seconds", "0.5", "--json"])
        .args(["--size", "100", "--partitions", "2", "--rate", "20000"])
        .arg("--dir")
        .arg(&work)
        .arg("--html")
        .arg(&html);
    let rows = json_rows(produce.output().unwrap());
    let metric = |rows: &[serde_json::Value], w: &str, m: &str| -> (f64, f64) {
        let r = rows
            .iter()
            .find(|r| r["workload"] == w && r["metric"] == m)
            .unwrap_or_else(|| panic!("no {w} {m} in {rows:?}"));
        (
            r["value"].as_f64().unwrap(),
            r["baseline"].as_f64().unwrap(),
        )
    };
    let w = "tcp-produce-100B-20000-per-s";
    let (records, loopback) = metric(&rows, w, "records");
    // Paced at 20,000/s for half a second: about 10,000 records acknowledged.
    assert!(records > 1_000.0 && records < 40_000.0, "{records}");
    assert!(loopback > records);
    assert!(metric(&rows, w, "vs file write").1 > 0.0);
    let (p50, ping) = metric(&rows, w, "p50 latency");
    assert!(p50 >= 1.0 && ping >= 1.0);
    assert!(metric(&rows, w, "p99 latency").0 >= p50);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(w) && page.contains("<svg"));

    let rows = json_rows(run(&["consume", "--records", "20000", "--size", "512"]));
    let (mbps, loopback) = metric(&rows, "tcp-consume-512B", "throughput");
    assert!(mbps > 0.0 && loopback > 0.0);

    let rows = json_rows(run(&["e2e", "--rate", "1000", "--size", "64"]));
    let (p50, _) = metric(&rows, "tcp-e2e-1000-per-s-64B", "p50 latency");
    let (p999, _) = metric(&rows, "tcp-e2e-1000-per-s-64B", "p99.9 latency");
    assert!(p50 >= 1.0 && p999 >= p50);
    assert!(metric(&rows, "tcp-e2e-1000-per-s-64B-ack", "p50 latency").0 >= 1.0);
    // The started brokers and their data are gone.
    assert_eq!(
        std::fs::read_dir(&work).map_or(0, |d| d.count()),
        0,
        "bench files left behind"
    );

    // TCP-only flags without --tcp are refused, not ignored.
    let out = rill()
        .args(["bench", "produce", "--partitions", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tcp"));
}
