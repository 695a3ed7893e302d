//! The scaling chart: calls/s and executions/s against threads on one hot key
//! (1 ms sleep), one line per implementation, drawn as SVG with plotters.
//!
//! plotters is built without its `ttf` feature, so no system font library is
//! needed: the SVG backend writes labels as `<text>` elements that the viewer
//! renders, and plotters only estimates their size for the layout.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
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

/// Pixels across: GitHub shows the README's and docs' images at most about
/// 880 px wide, so text drawn at this width keeps nearly its size there.
const WIDTH: u32 = 1000;
/// Text sizes in pixels at full width.
const TITLE: u32 = 24;
const CAPTION: u32 = 21;
const LABEL: u32 = 18;

/// Three panels: calls/s across the top (it carries the legend), the share
/// of the limit and the executions of `f` side by side below it. Threads go
/// across on a log2 scale, ticked at the powers of two the sweep runs.
pub fn scaling_svg(path: &Path, series: &[Series], caption: &str) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (WIDTH, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", TITLE))?;
    let (top, bottom) = root.split_vertically(470);
    let (middle, right) = bottom.split_horizontally(WIDTH / 2);
    let max_log2 = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0.log2()))
        .fold(1.0, f64::max);
    let across = || 0.0..max_log2;
    // The most a hot key can serve: every thread once per 1 ms flight.
    let limit: Vec<(f64, f64)> = series
        .first()
        .map(|s| s.points.iter().map(|p| (p.0, p.0 * 1000.0)).collect())
        .unwrap_or_default();
    let top_of = |pick: fn(&(f64, f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(pick))
            .fold(1.0, f64::max)
    };
    let top_calls = limit.iter().map(|p| p.1).fold(top_of(|p| p.1), f64::max);
    let bottom_calls = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .min(1000.0);

    let mut calls = panel(&top, "calls/s (log scales)")
        .build_cartesian_2d(across(), (bottom_calls * 0.7..top_calls * 1.5).log_scale())?;
    mesh(&mut calls, "calls/s", 0, max_log2)?;
    calls
        .draw_series(LineSeries::new(
            limit.iter().map(|&(t, c)| (t.log2(), c)),
            BLACK.mix(0.4).stroke_width(2),
        ))?
        .label("limit: threads / 1 ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.4)));
    draw_lines(&mut calls, series, |p| p.1, true)?;
    calls
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", LABEL))
        .draw()?;

    let mut share = panel(&middle, "share of the limit").build_cartesian_2d(across(), 0.0..1.0)?;
    mesh(&mut share, "calls/s ÷ (threads / 1 ms)", 1, max_log2)?;
    draw_lines(&mut share, series, |p| p.1 / (p.0 * 1000.0), false)?;

    let mut executions = panel(&right, "executions of f per second")
        .build_cartesian_2d(across(), 0.0..top_of(|p| p.2) * 1.25)?;
    mesh(&mut executions, "executions/s", 0, max_log2)?;
    draw_lines(&mut executions, series, |p| p.2, false)?;
    root.present()?;
    Ok(())
}

/// A panel with the layout all three share.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", CAPTION))
        .margin(14)
        .x_label_area_size(56)
        .y_label_area_size(84);
    builder
}

/// A panel: log2(threads) across, `Y` up.
type Panel<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

fn mesh<Y>(
    chart: &mut Panel<'_, '_, Y>,
    y_desc: &str,
    decimals: usize,
    max_log2: f64,
) -> Result<(), Box<dyn Error>>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        // One tick per power of two: 1, 2, 4 … as the sweep runs them.
        .x_labels(max_log2.round() as usize + 1)
        .x_desc("threads on one hot key")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style(("sans-serif", LABEL))
        .axis_desc_style(("sans-serif", LABEL))
        .draw()?;
    Ok(())
}

/// One line with dots per implementation, `y` picked from each point, and
/// the implementations' names in the legend if `legend`.
fn draw_lines<Y: Ranged<ValueType = f64>>(
    chart: &mut Panel<'_, '_, Y>,
    series: &[Series],
    y: fn(&(f64, f64, f64)) -> f64,
    legend: bool,
) -> Result<(), Box<dyn Error>> {
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = s.points.iter().map(|p| (p.0.log2(), y(p)));
        let line = chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))?;
        if legend {
            line.label(s.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        }
        chart.draw_series(points.map(|p| Circle::new(p, 4, color.filled())))?;
    }
    Ok(())
}
