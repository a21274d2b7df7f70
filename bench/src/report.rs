//! `berth-bench report`: one report from the scenario results in the output directory —
//! every target with its measured value, berth's ratio to the best peer on every measure
//! that has peers, and an SVG plot of each scenario's latency distributions (written to
//! `plots/`). Works on the JSON files alone, so it can be regenerated without rerunning.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::Value;

/// The scenarios in report order: (file stem, title).
const SCENARIOS: &[(&str, &str)] = &[
    ("run", "run --rm end to end, and supervisor memory"),
    (
        "network",
        "run --rm on the default bridge, published-port throughput",
    ),
    ("starts", "detached starts back to back, ps -a at scale"),
    ("pull", "pull and unpack, cold and warm"),
    ("api", "API round trip and daemon memory"),
    ("authz", "authorization policy cost on API calls"),
    ("logs", "log throughput through logging drivers"),
    ("tracing", "cost of OpenTelemetry export on run --rm"),
    ("plugin", "Wasm plugin path"),
];

/// One latency distribution found in a scenario's results.
struct Series {
    label: String,
    /// Engine, when the distribution sits in a per-engine entry.
    engine: Option<String>,
    /// The measure's name within its engine entry (for peer ratios).
    measure: String,
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    percentiles_us: Vec<f64>,
}

/// A result's `machine` as the report names it.
fn machine_text(m: &Value) -> String {
    format!(
        "{} CPUs ({}), {} MiB RAM, kernel {}",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_kb"].as_u64().unwrap_or(0) / 1024,
        m["kernel"].as_str().unwrap_or("?")
    )
}

/// The report from the results alone (`berth-bench report`).
pub fn write(out_dir: &Path) -> anyhow::Result<()> {
    write_with(out_dir, "report", Duration::ZERO, &[])
}

/// The report after a run of `berth-bench MODE` that took `elapsed`; `failed` names the
/// scenarios that failed in it, with their errors.
pub fn write_with(
    out_dir: &Path,
    mode: &str,
    elapsed: Duration,
    failed: &[String],
) -> anyhow::Result<()> {
    let plots = out_dir.join("plots");
    std::fs::create_dir_all(&plots)?;
    let mut md = String::from("# berth benchmark report\n\n");
    // The first result's machine heads the report; a scenario measured on another says so.
    let mut machine: Option<String> = None;
    let mut targets = String::new();
    let mut ratios = String::new();
    let mut sections = String::new();
    for (stem, title) in SCENARIOS {
        let path = out_dir.join(format!("{stem}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            let _ = writeln!(
                sections,
                "## {stem}: {title}\n\nNot run (no {stem}.json).\n"
            );
            continue;
        };
        let result: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let measured_on = result.get("machine").map(machine_text);
        if machine.is_none()
            && let Some(m) = &measured_on
        {
            let _ = writeln!(md, "Machine: {m}.\n");
            machine = measured_on.clone();
        }
        let command = result["command"].as_str().unwrap_or("?");
        for t in result["targets"].as_array().into_iter().flatten() {
            let _ = writeln!(
                targets,
                "| {stem} | {} | {} | {} | {} |",
                t["name"].as_str().unwrap_or("?"),
                t["target"].as_str().unwrap_or("?"),
                t["measured"].as_str().unwrap_or("?"),
                if t["met"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
        let mut series = Vec::new();
        collect(&result, &mut Vec::new(), None, &mut series);
        peer_ratios(stem, &series, &mut ratios);
        let _ = writeln!(
            sections,
            "## {stem}: {title}\n\nCommand: `{command}`. Details: [{stem}.md]({stem}.md).\n"
        );
        if let Some(m) = measured_on.filter(|m| Some(m) != machine.as_ref()) {
            let _ = writeln!(sections, "Measured on another machine: {m}.\n");
        }
        if !series.is_empty() {
            let svg = plots.join(format!("{stem}.svg"));
            plot(&svg, title, &series).with_context(|| format!("plotting {}", svg.display()))?;
            let _ = writeln!(
                sections,
                "| series | median | p90 | p99 |\n|---|---|---|---|"
            );
            for s in &series {
                let _ = writeln!(
                    sections,
                    "| {} | {} | {} | {} |",
                    s.label,
                    human(s.median_us),
                    human(s.p90_us),
                    human(s.p99_us)
                );
            }
            let _ = writeln!(sections, "\n![{stem}](plots/{stem}.svg)\n");
        }
    }
    if mode != "report" {
        let _ = writeln!(
            md,
            "Made by `bench/run.sh` (`berth-bench {mode}`, release build) in {:.0} s, every scenario in one run; berth and its peers alternate within each scenario (A B A B ...).\n",
            elapsed.as_secs_f64()
        );
    } else {
        md.push_str("Regenerated by `berth-bench report` from the scenario results below.\n\n");
    }
    if !failed.is_empty() {
        md.push_str("**Scenarios that failed in this run** (their figures below are from an earlier run, if any):\n\n");
        for f in failed {
            let _ = writeln!(md, "- {f}");
        }
        md.push('\n');
    }
    md.push_str(
        "## Targets\n\n| scenario | target | goal | measured | met |\n|---|---|---|---|---|\n",
    );
    md.push_str(&targets);
    if !ratios.is_empty() {
        md.push_str("\n## berth against the best peer (medians)\n\nRatio = best peer's median / berth's: above 1, berth is faster.\n\n| scenario | measure | berth | best peer | ratio | runc |\n|---|---|---|---|---|---|\n");
        md.push_str(&ratios);
    }
    md.push('\n');
    md.push_str(&sections);
    let path = out_dir.join("report.md");
    std::fs::write(&path, &md)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Finds every latency summary (an object with `percentiles_us`) under `value`. Array
/// entries are named by their `engine` (or `name`) field.
fn collect(value: &Value, path: &mut Vec<String>, engine: Option<&str>, out: &mut Vec<Series>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(points)) = map.get("percentiles_us") {
                let points: Vec<f64> = points.iter().filter_map(Value::as_f64).collect();
                let field = |k: &str| map.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
                if points.len() == 101 {
                    out.push(Series {
                        label: path.join(" "),
                        engine: engine.map(str::to_owned),
                        measure: path.last().cloned().unwrap_or_default(),
                        median_us: field("median_us"),
                        p90_us: field("p90_us"),
                        p99_us: field("p99_us"),
                        percentiles_us: points,
                    });
                }
                return;
            }
            for (key, v) in map {
                path.push(key.replace('_', " "));
                collect(v, path, engine, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let name = item
                    .get("engine")
                    .or_else(|| item.get("name"))
                    .and_then(Value::as_str);
                // An engine's entry is labelled by the engine alone: "berth run rm true".
                let container = path.pop();
                path.push(name.map_or_else(|| format!("{i}"), str::to_owned));
                collect(item, path, name.or(engine), out);
                path.pop();
                if let Some(c) = container {
                    path.push(c);
                }
            }
        }
        _ => {}
    }
}

/// One row per measure that berth and at least one peer have.
fn peer_ratios(stem: &str, series: &[Series], out: &mut String) {
    for berth in series
        .iter()
        .filter(|s| s.engine.as_deref() == Some("berth"))
    {
        let same = |engine: &str| {
            series
                .iter()
                .find(|s| s.engine.as_deref() == Some(engine) && s.measure == berth.measure)
        };
        let best = ["docker", "podman"]
            .iter()
            .filter_map(|e| same(e).map(|s| (*e, s.median_us)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((peer, peer_median)) = best else {
            continue;
        };
        let runc = same("runc").map_or_else(|| "-".into(), |s| human(s.median_us));
        let _ = writeln!(
            out,
            "| {stem} | {} | {} | {peer} {} | {:.2}x | {runc} |",
            berth.measure,
            human(berth.median_us),
            human(peer_median),
            peer_median / berth.median_us
        );
    }
}

fn human(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// Whether `v` is 1, 2 or 5 times a power of ten: the only ticks labelled on a log axis,
/// so that labels do not run into each other.
fn round_number(v: f64) -> bool {
    if v <= 0.0 || !v.is_finite() {
        return false;
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6 * m)
}

/// A CDF per series: latency (log scale) across, percentile up.
fn plot(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let positive = |v: &f64| *v > 0.0 && v.is_finite();
    let all = series
        .iter()
        .flat_map(|s| s.percentiles_us.iter().copied())
        .filter(positive);
    let (low, high) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    anyhow::ensure!(low.is_finite() && high > 0.0, "no positive samples");
    let (low, high) = (low / 1.2, high * 1.2);
    let height = 360 + 18 * series.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((low..high).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency")
        .y_desc("percentile")
        .x_label_formatter(&|v| {
            if round_number(*v) {
                human(*v)
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .percentiles_us
            .iter()
            .enumerate()
            .filter(|(_, v)| positive(v))
            .map(|(p, v)| (*v, p as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} (median {})", s.label, human(s.median_us)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
