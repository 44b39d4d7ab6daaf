//! The benchmark's chart: every figure as bars beside its floor and its
//! peer, latency and throughput in two panels (SVG, log scale).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{Better, Line, Report};

const WIDTH: u32 = 1100;
const ROW: u32 = 64;
const PANEL_EXTRA: u32 = 90;

const OURS: RGBColor = RGBColor(31, 119, 180);
const FLOOR: RGBColor = RGBColor(150, 150, 150);
const PEER: RGBColor = RGBColor(214, 39, 40);

/// Draws `report` as an SVG document.
///
/// ```
/// use yuki_examples::report::{Better, Line, Report};
///
/// let mut report = Report::default();
/// report.lines.push(Line::new("get", "us", 14.0, Better::Lower).floor("raw", 12.0));
/// report.lines.push(Line::new("batched set", "M ops/s", 2.5, Better::Higher));
/// let svg = yuki_examples::chart::svg(&report).unwrap();
/// assert!(svg.starts_with("<svg") && svg.contains("batched set"));
/// ```
pub fn svg(report: &Report) -> Result<String, String> {
    let latency: Vec<&Line> = report
        .lines
        .iter()
        .filter(|l| l.better == Better::Lower)
        .collect();
    let throughput: Vec<&Line> = report
        .lines
        .iter()
        .filter(|l| l.better == Better::Higher)
        .collect();
    let height = |n: usize| {
        if n == 0 {
            0
        } else {
            n as u32 * ROW + PANEL_EXTRA
        }
    };
    let (top, bottom) = (height(latency.len()), height(throughput.len()));
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, (WIDTH, (top + bottom).max(1))).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let (upper, lower) = root.split_vertically(top);
        if !latency.is_empty() {
            panel(
                &upper,
                "Latency: lower is better",
                "microseconds (log scale)",
                &latency,
            )?;
        }
        if !throughput.is_empty() {
            panel(
                &lower,
                "Throughput: higher is better",
                "millions per second (log scale)",
                &throughput,
            )?;
        }
        root.present().map_err(text)?;
    }
    Ok(out)
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The values of a line worth a bar: (series, value, name).
fn bars(line: &Line) -> Vec<(RGBColor, f64, String)> {
    let mut bars = vec![(OURS, line.ours, "yuki".to_owned())];
    if let Some((name, v)) = &line.floor {
        bars.push((FLOOR, *v, name.clone()));
    }
    if let Some((name, Ok(v))) = &line.peer {
        bars.push((PEER, *v, name.clone()));
    }
    bars.retain(|(_, v, _)| v.is_finite() && *v > 0.0);
    bars
}

/// One panel: a row per line (its name, then a bar each for yuki, the floor
/// and the peer); the unit of each line is in its name.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    axis: &str,
    lines: &[&Line],
) -> Result<(), String> {
    let values = lines.iter().flat_map(|l| bars(l)).map(|(_, v, _)| v);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo / 2.0, hi * 4.0)
    } else {
        (0.1, 10.0)
    };
    let rows = lines.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(0)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..rows)
        .map_err(text)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(8)
        .x_desc(axis)
        .axis_desc_style(("sans-serif", 15))
        .x_label_style(("sans-serif", 14))
        .x_label_formatter(&|v| crate::report::num(*v))
        .draw()
        .map_err(text)?;

    for (i, line) in lines.iter().enumerate() {
        // The first line at the top.
        let top = rows - i as f64;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{} ({})", line.figure, line.unit),
                (lo, top - 0.05),
                ("sans-serif", 17).into_font().color(&BLACK),
            )))
            .map_err(text)?;
        let mut y = top - 0.32;
        for (color, value, name) in bars(line) {
            let bar = Rectangle::new([(lo, y - 0.18), (value, y)], color.filled());
            let label = Text::new(
                format!("{} {name}", crate::report::num(value)),
                (value, y - 0.02),
                ("sans-serif", 14).into_font().color(&BLACK),
            );
            chart.draw_series([bar]).map_err(text)?;
            chart.draw_series([label]).map_err(text)?;
            y -= 0.22;
        }
        if let Some((name, Err(why))) = &line.peer {
            let note = Text::new(
                format!("{name}: {why}"),
                (lo, y - 0.02),
                ("sans-serif", 14).into_font().color(&PEER),
            );
            chart.draw_series([note]).map_err(text)?;
        }
    }
    for (name, color) in [("yuki", OURS), ("floor", FLOOR), ("peer", PEER)] {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(text)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(text)?;
    Ok(())
}
