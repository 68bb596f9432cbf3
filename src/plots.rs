//! Texture plots (SVG): per layer, the histogram of the filter texture distribution (the
//! similarity `sim_f` of each filter to the layer's mean filter, METHOD §2), and the fraction of
//! live stripes of every layer.

use std::path::Path;

use plotters::prelude::*;
use texprune_layer::Prunable;

use crate::layer_texture::textures;

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What the drawing backend reported.
    pub message: String,
}

const BINS: usize = 20;

/// Most layers whose names label the live-stripe chart's axis.
const LABELLED_LAYERS: usize = 12;

/// Draws the texture distributions and live-stripe fractions of `model` into the SVG `path`,
/// titled `title`.
///
/// # Errors
/// [`PlotError`] when the chart cannot be drawn or the file written.
pub fn plot_texture<M: Prunable>(model: &M, path: &Path, title: &str) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let layers = textures(model);
    let cols = 4usize;
    let rows = layers.len().div_ceil(cols).max(1);
    let (width, height) = (1000u32, 220 * rows as u32 + 320);
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (grid, bottom) = root.split_vertically(220 * rows as u32);
    let cells = grid.split_evenly((rows, cols));
    let histograms: Vec<[u32; BINS]> = layers
        .iter()
        .map(|layer| {
            let mut counts = [0u32; BINS];
            for s in &layer.similarity {
                counts[((s.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)] += 1;
            }
            counts
        })
        .collect();
    // One count scale for every layer's histogram, so that the layers read side by side.
    let top = histograms
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    for ((layer, counts), cell) in layers.iter().zip(&histograms).zip(&cells) {
        let mut chart = ChartBuilder::on(cell)
            .caption(
                format!("{} (live {:.0} %)", layer.name, 100.0 * layer.live),
                ("sans-serif", 13),
            )
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(30)
            .build_cartesian_2d(0f64..1f64, 0u32..top + top / 10 + 1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(5)
            .y_labels(4)
            .x_desc("filter similarity to the layer mean")
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let lo = i as f64 / BINS as f64;
                Rectangle::new(
                    [(lo, 0), (lo + 1.0 / BINS as f64, c)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    let n = layers.len().max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("live stripes per layer", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(if n > LABELLED_LAYERS { 28 } else { 60 })
        .y_label_area_size(40)
        // A discrete range includes its end: `0..n - 1` is n segments.
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..1.05f64)
        .map_err(|e| err(&e))?;
    // Each bar is labelled with its layer's name; beyond a dozen layers the names would overlap,
    // so the axis counts them instead.
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if n <= LABELLED_LAYERS => {
            layers.get(*i).map(|l| l.name.clone()).unwrap_or_default()
        }
        SegmentValue::CenterOf(i) => i.to_string(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(LABELLED_LAYERS))
        .x_label_formatter(&label)
        .x_desc(if n > LABELLED_LAYERS {
            "layer (forward order)"
        } else {
            "layer"
        })
        .y_desc("live fraction")
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(layers.iter().enumerate().map(|(i, l)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), l.live),
                ],
                RED.mix(0.6).filled(),
            );
            bar.set_margin(0, 0, 4, 4);
            bar
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Width of the legend beside each line chart, in pixels.
const LEGEND_WIDTH: u32 = 170;

/// Draws, for every layer, a line of `values[layer][point]` against `xs`, into the area `area`,
/// with the legend in a column to the right of the chart, where it hides no curve.
fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    names: &[String],
    xs: &[f64],
    values: &[Vec<f64>],
    y_range: std::ops::Range<f64>,
    x_desc: &str,
) -> Result<(), String> {
    let (width, height) = area.dim_in_pixel();
    let (plot, legend) = area.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
    let x_max = xs.iter().copied().fold(x_min + 1e-9, f64::max);
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(45)
        .build_cartesian_2d(x_min..x_max, y_range)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, ys) in values.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                xs.iter().copied().zip(ys.iter().copied()),
                Palette99::pick(i).to_rgba().stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
    }
    // One row per layer, as many as fit; the rest counted.
    let (row, top) = (14i32, 34i32);
    let fit = ((height as i32 - top - row) / row).max(1) as usize;
    let shown = if names.len() > fit {
        fit - 1
    } else {
        names.len()
    };
    for (i, name) in names.iter().take(shown).enumerate() {
        let y = top + row * i as i32;
        let color = Palette99::pick(i).to_rgba();
        legend
            .draw(&PathElement::new(
                vec![(6, y), (24, y)],
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(
                name.clone(),
                (30, y - 6),
                ("sans-serif", 11).into_font(),
            ))
            .map_err(|e| e.to_string())?;
    }
    if shown < names.len() {
        legend
            .draw(&Text::new(
                format!("… {} more", names.len() - shown),
                (30, top + row * shown as i32 - 6),
                ("sans-serif", 11).into_font(),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Two stacked line charts into the SVG `path`: `top` and `bottom` are
/// `(caption, values[layer][point], y range)` over `xs`.
pub(crate) type Panel<'a> = (&'a str, &'a [Vec<f64>], std::ops::Range<f64>);

pub(crate) fn plot_lines(
    path: &Path,
    title: &str,
    names: &[String],
    xs: &[f64],
    x_desc: &str,
    panels: &[Panel],
) -> Result<(), PlotError> {
    let err = |message: String| PlotError {
        path: path.display().to_string(),
        message,
    };
    let root = SVGBackend::new(path, (1000, 360 * panels.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for ((caption, values, range), area) in panels.iter().zip(&areas) {
        lines(area, caption, names, xs, values, range.clone(), x_desc).map_err(err)?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One method's points for [`plot_methods`]: `(x, mean, standard deviation)` per target.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSeries {
    /// The method's name (the legend).
    pub name: String,
    /// `(x, y mean, y standard deviation)`, in the order to join them.
    pub points: Vec<(f64, f64, f64)>,
}

/// Draws each series as a line through its means with `± standard deviation` error bars, into
/// the SVG `path`: for instance test accuracy (%) against FLOPs removed (%), one line per method.
///
/// # Errors
/// [`PlotError`] when the chart cannot be drawn or the file written.
pub fn plot_methods(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[MethodSeries],
) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (mut x_lo, mut x_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y, e) in points() {
        (x_lo, x_hi) = (x_lo.min(x), x_hi.max(x));
        (y_lo, y_hi) = (y_lo.min(y - e), y_hi.max(y + e));
    }
    if !(x_lo.is_finite() && y_lo.is_finite()) {
        return Err(err(&"no finite point to draw"));
    }
    let x_pad = ((x_hi - x_lo) * 0.08).max(1.0);
    let y_pad = ((y_hi - y_lo) * 0.15).max(0.2);
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (x_lo - x_pad)..(x_hi + x_pad),
            (y_lo - y_pad)..(y_hi + y_pad),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Methods at the same x are shifted apart a little so their bars do not hide each other.
        let shift = (i as f64 - (series.len() as f64 - 1.0) / 2.0) * x_pad * 0.12;
        let at = |&(x, y, e): &(f64, f64, f64)| (x + shift, y, e);
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(at).map(|(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(at)
                    .map(|(x, y, e)| ErrorBar::new_vertical(x, y - e, y, y + e, color.filled(), 8)),
            )
            .map_err(|e| err(&e))?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(at)
                    .map(|(x, y, _)| Circle::new((x, y), 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
