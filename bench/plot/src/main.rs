//! Draws the per-second IOPS timelines of `bench/run.sh` (W2: 4k randwrite
//! during a full background copy, W3: the same with NOCOPY) as PNG, tzero
//! against QEMU, with T0 at x = 0.
//!
//! Usage: tzero-bench-plot RESULTS.json OUTDIR
//! Reads `workloads.W2|W3.{tzero,qemu}.timeline` ([[seconds from T0, IOPS], ...]),
//! `.baseline_iops` and `.copy_done_s` (W2), writes OUTDIR/w2_timeline.png and
//! OUTDIR/w3_timeline.png.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde_json::Value;

const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    baseline: Option<f64>,
    copy_done: Option<f64>,
}

fn series(w: &Value, sys: &str, label: &'static str, color: RGBColor) -> Option<Series> {
    let s = w.get(sys)?;
    let points: Vec<(f64, f64)> = s
        .get("timeline")?
        .as_array()?
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect();
    if points.is_empty() {
        return None;
    }
    Some(Series {
        label,
        color,
        points,
        baseline: s.get("baseline_iops").and_then(Value::as_f64),
        copy_done: s.get("copy_done_s").and_then(Value::as_f64),
    })
}

fn plot(out: &str, title: &str, all: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    let xmin = all.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(f64::MAX, f64::min).min(-1.0);
    let xmax = all.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(f64::MIN, f64::max).max(1.0);
    let ymax = all
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.baseline))
        .fold(1.0, f64::max)
        * 1.12;

    let root = BitMapBackend::new(out, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin..xmax, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds from T0 (establish)")
        .y_desc("4k randwrite IOPS (1 s averages)")
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    // T0
    chart.draw_series(LineSeries::new(vec![(0.0, 0.0), (0.0, ymax)], BLACK.stroke_width(1)))?;
    for (i, s) in all.iter().enumerate() {
        let c = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), c.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        if let Some(b) = s.baseline {
            let lc = c.mix(0.45);
            chart
                .draw_series(DashedLineSeries::new(vec![(xmin, b), (xmax, b)], 6, 4, lc.stroke_width(1)))?
                .label(format!("{} baseline (no relationship)", s.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], lc.stroke_width(1)));
        }
        if let Some(d) = s.copy_done {
            chart.draw_series(DashedLineSeries::new(
                vec![(d, 0.0), (d, ymax)],
                3,
                3,
                c.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{} copy done", s.label),
                (d, ymax * (0.97 - 0.05 * i as f64)),
                ("sans-serif", 14).into_font().color(&c),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} RESULTS.json OUTDIR", args[0]);
        std::process::exit(2);
    }
    let font = FONT_FILES
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .ok_or("no TTF font found (install fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, font).map_err(|_| "bad font")?;

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let date = v.get("date").and_then(Value::as_str).unwrap_or("");
    for (key, file, what) in [
        ("W2", "w2_timeline.png", "W2: 4k randwrite QD32 on the source, full background copy (COPY) at T0"),
        ("W3", "w3_timeline.png", "W3: 4k randwrite QD32 on the source, NOCOPY established at T0"),
    ] {
        let Some(w) = v.get("workloads").and_then(|w| w.get(key)) else {
            eprintln!("{key}: not in results, skipped");
            continue;
        };
        let all: Vec<Series> = [
            series(w, "tzero", "tzero", RGBColor(0x1f, 0x77, 0xb4)),
            series(w, "qemu", "QEMU QSD", RGBColor(0xd6, 0x27, 0x28)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if all.is_empty() {
            eprintln!("{key}: no timeline, skipped");
            continue;
        }
        let out = format!("{}/{}", args[2], file);
        plot(&out, &format!("{what}  ({date})"), &all)?;
        println!("wrote {out}");
    }
    Ok(())
}
