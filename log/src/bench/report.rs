//! `rill bench ... --html FILE`: one self-contained HTML page (inline SVG, no script, nothing
//! fetched) with the figures' table, throughput over time, and the latency percentile curves
//! on the usual "nines" axis. Hand-drawn SVG: two line charts do not need a plotting crate.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::tcp::TcpReport;

const W: f64 = 760.0;
const H: f64 = 320.0;
/// Plot area margins: left, right, top, bottom.
const M: (f64, f64, f64, f64) = (70.0, 20.0, 20.0, 50.0);
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// A line chart: `lines` of (label, points); x ticks at `xticks` (value, label).
fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    x_range: (f64, f64),
    xticks: &[(f64, String)],
) -> String {
    let (l, r, t, b) = M;
    let (pw, ph) = (W - l - r, H - t - b);
    let ymax = nice_max(
        lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(0.0, f64::max),
    );
    let (x0, x1) = x_range;
    let sx = |x: f64| l + (x - x0) / (x1 - x0).max(1e-9) * pw;
    let sy = |y: f64| t + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<h2>{}</h2><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        esc(title),
        H + 20.0 * lines.len() as f64
    );
    // Grid and y ticks.
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            sy(y) + 4.0,
            fmt_num(y),
            py = sy(y),
        );
    }
    for (x, label) in xticks {
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 16.0,
            esc(label),
            px = sx(*x),
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##,
        l + pw / 2.0,
        t + ph + 36.0,
        esc(xlabel),
        t + ph / 2.0,
        t + ph / 2.0,
        esc(ylabel),
    );
    for (i, (label, points)) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = H + 20.0 * i as f64 - 4.0;
        let _ = write!(
            s,
            r#"<line x1="{l}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            l + 24.0,
            l + 30.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The percentile curve of `h` on the nines axis: x = log10(1 / (1 - q)), so 90% is 1,
/// 99% is 2, 99.9% is 3; latencies in milliseconds.
fn percentile_curve(h: &Histogram<u64>, max_nines: f64) -> Vec<(f64, f64)> {
    (0..=200)
        .map(|i| {
            let x = max_nines * i as f64 / 200.0;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

/// The report page for `reports` (one per workload run).
pub fn html(title: &str, reports: &[TcpReport]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:900px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,td:nth-child(2),th{{text-align:left}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    for rep in reports {
        let _ = write!(s, "<p>{}</p>", esc(&rep.description));
        s.push_str(
            "<table><tr><th>workload</th><th>metric</th><th>value</th><th>unit</th>\
             <th>baseline</th><th>ratio</th></tr>",
        );
        for r in &rep.rows {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
                esc(&r.workload),
                esc(&r.metric),
                fmt_num(r.value),
                esc(&r.unit),
                fmt_num(r.baseline),
                r.ratio
            );
        }
        s.push_str("</table>");
        let series: Vec<_> = rep
            .series
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .cloned()
            .collect();
        if !series.is_empty() {
            let x1 = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
                .fold(1.0, f64::max)
                .ceil();
            let step = nice_max(x1 / 8.0).max(1.0);
            let ticks: Vec<(f64, String)> = (0..)
                .map(|i| i as f64 * step)
                .take_while(|x| *x <= x1)
                .map(|x| (x, format!("{x:.0}")))
                .collect();
            s.push_str(&chart(
                "Throughput over time",
                "seconds",
                "MB/s",
                &series,
                (0.0, x1),
                &ticks,
            ));
        }
        if !rep.latencies.is_empty() {
            // As many nines as the largest histogram can tell apart.
            let most = rep
                .latencies
                .iter()
                .map(|(_, h)| h.len())
                .max()
                .unwrap_or(1);
            let nines = ((most as f64).log10().floor()).clamp(1.0, 5.0);
            let lines: Vec<_> = rep
                .latencies
                .iter()
                .map(|(n, h)| (n.clone(), percentile_curve(h, nines)))
                .collect();
            let ticks: Vec<(f64, String)> = (0..=nines as u32)
                .map(|i| {
                    let label = match i {
                        0 => "0%".to_string(),
                        1 => "90%".to_string(),
                        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
                    };
                    (i as f64, label)
                })
                .collect();
            s.push_str(&chart(
                "Latency by percentile",
                "percentile",
                "ms",
                &lines,
                (0.0, nines),
                &ticks,
            ));
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchRow;

    #[test]
    fn the_report_is_one_self_contained_page() {
        let mut h = crate::bench::loopback::latency_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let rep = TcpReport {
            rows: vec![BenchRow::new("w<1>", "throughput", 10.0, "MB/s", 20.0)],
            series: vec![("w".into(), vec![(1.0, 5.0), (2.0, 7.5)])],
            latencies: vec![("lat".into(), h)],
            description: "a & b".into(),
        };
        let page = html("rill bench", &[rep]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("w&lt;1&gt;") && page.contains("a &amp; b"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("99.9%") && page.contains("99%") && page.contains("90%"));
        // Nothing to fetch.
        assert!(!page.contains("src=") && !page.contains("<script"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(1234.0), 2000.0);
        assert_eq!(nice_max(0.3), 0.5);
    }
}
