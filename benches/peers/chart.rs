//! The scaling chart: calls/s and executions/s against threads on one hot key
//! (1 ms sleep), one line per implementation, drawn as SVG with plotters.
//!
//! plotters is built without its `ttf` feature, so no system font library is
//! needed: the SVG backend writes labels as `<text>` elements that the viewer
//! renders, and plotters only estimates their size for the layout.

use std::error::Error;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One implementation's points: (threads, calls/s, executions/s).
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64, f64)>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

pub fn scaling_svg(path: &Path, series: &[Series], caption: &str) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1380, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 18))?;
    let panels = root.split_evenly((1, 3));
    let (left, middle, right) = (&panels[0], &panels[1], &panels[2]);
    let max_threads = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    // The most a hot key can serve: every thread once per 1 ms flight.
    let limit: Vec<(f64, f64)> = series
        .first()
        .map(|s| s.points.iter().map(|p| (p.0, p.0 * 1000.0)).collect())
        .unwrap_or_default();
    let top = |pick: fn(&(f64, f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(pick))
            .fold(1.0, f64::max)
    };
    let top_calls = limit.iter().map(|p| p.1).fold(top(|p| p.1), f64::max);

    let bottom = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .min(1000.0);
    let mut calls = ChartBuilder::on(left)
        .caption("calls/s (log–log)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(
            (1.0..max_threads).log_scale(),
            (bottom * 0.7..top_calls * 1.5).log_scale(),
        )?;
    calls
        .configure_mesh()
        .x_desc("threads on one hot key")
        .y_desc("calls/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    calls
        .draw_series(LineSeries::new(limit, BLACK.mix(0.4).stroke_width(1)))?
        .label("limit: threads / 1 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = s.points.iter().map(|p| (p.0, p.1));
        calls
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        calls.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
    }
    calls
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;

    let mut share = ChartBuilder::on(middle)
        .caption(
            "share of the limit (calls/s ÷ threads/1 ms)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d((1.0..max_threads).log_scale(), 0.0..1.0)?;
    share
        .configure_mesh()
        .x_desc("threads on one hot key")
        .y_desc("share of the limit")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    draw_lines(&mut share, series, |p| p.1 / (p.0 * 1000.0))?;

    let mut executions = ChartBuilder::on(right)
        .caption("executions of f per second", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d((1.0..max_threads).log_scale(), 0.0..top(|p| p.2) * 1.25)?;
    executions
        .configure_mesh()
        .x_desc("threads on one hot key")
        .y_desc("executions/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    draw_lines(&mut executions, series, |p| p.2)?;
    root.present()?;
    Ok(())
}

type LogLinear<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;

/// One line with dots per implementation, `y` picked from each point.
fn draw_lines(
    chart: &mut LogLinear<'_>,
    series: &[Series],
    y: fn(&(f64, f64, f64)) -> f64,
) -> Result<(), Box<dyn Error>> {
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = s.points.iter().map(|p| (p.0, y(p)));
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
    }
    Ok(())
}
