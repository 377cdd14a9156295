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
