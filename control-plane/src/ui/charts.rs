//! Charts as SVG text drawn on the server with `plotters` (its SVG backend only: no font
//! files, no JavaScript, nothing fetched by the browser), inlined into the page. Text and grid
//! lines are coloured by the stylesheet (`.chart text`, `.chart line`), which overrides
//! plotters' presentation attributes, so one SVG reads in light and dark mode; series keep
//! their palette colours, chosen to read on both.
//!
//! Amounts become `f64` here and only here, to place rectangles in pixels: every figure a
//! person reads (totals, the table, the CSV) is the exact decimal from the store.

use plotters::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// Series colours (Tableau 10: distinct, and legible on a light and a dark background).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (78, 121, 167),
    (242, 142, 43),
    (225, 87, 89),
    (118, 183, 178),
    (89, 161, 79),
    (237, 201, 72),
    (176, 122, 161),
    (255, 157, 167),
    (156, 117, 95),
    (186, 176, 172),
];

/// The palette's colour of series `i` (the palette repeats).
fn rgb(i: usize) -> (u8, u8, u8) {
    PALETTE
        .get(i % PALETTE.len())
        .copied()
        .unwrap_or((128, 128, 128))
}

/// The colour of series `i`, as `#rrggbb`.
pub fn colour(i: usize) -> String {
    let (r, g, b) = rgb(i);
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A stacked bar chart: one bar per bucket (a day or an hour), one stacked segment per series.
#[derive(Debug, Clone, Default)]
pub struct Stacked {
    /// Bucket labels, left to right.
    pub buckets: Vec<String>,
    /// Series names and their value in each bucket (same length as `buckets`).
    pub series: Vec<(String, Vec<Decimal>)>,
}

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError(format!("{e:?}"))
}

/// Pixel size of the spend chart (scaled to the page's width by CSS).
pub const SIZE: (u32, u32) = (1000, 360);

/// Draws `chart` as an SVG document of [`SIZE`], the y axis in USD.
pub fn stacked_bars(chart: &Stacked) -> Result<String, ChartError> {
    let n = chart.buckets.len().max(1);
    let mut tops = vec![0f64; n];
    let mut bars: Vec<Vec<(usize, f64, f64)>> = Vec::with_capacity(chart.series.len());
    for (_, values) in &chart.series {
        let mut segs = Vec::new();
        for (x, v) in values.iter().enumerate() {
            let v = v.to_f64().unwrap_or(0.0);
            if let Some(top) = tops.get_mut(x) {
                if v > 0.0 {
                    segs.push((x, *top, *top + v));
                    *top += v;
                }
            }
        }
        bars.push(segs);
    }
    let max = tops.iter().copied().fold(0.0, f64::max);
    let ymax = if max > 0.0 { max * 1.1 } else { 1.0 };
    // Enough decimals that the axis's ticks differ: cents for dollars, more for fractions.
    let decimals = (2 - ymax.log10().floor() as i64).clamp(2, 8) as usize;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let mut c = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n).into_segmented(), 0f64..ymax)
            .map_err(err)?;
        // Each bucket is a segment; its label sits under its centre.
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => chart.buckets.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(10))
            .x_label_formatter(&label)
            .y_labels(6)
            .y_label_formatter(&|y| format!("${y:.decimals$}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, segs) in bars.iter().enumerate() {
            let (r, g, b) = rgb(i);
            let style = RGBColor(r, g, b).filled();
            c.draw_series(segs.iter().map(|&(x, lo, hi)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(x), lo),
                        (SegmentValue::Exact(x + 1), hi),
                    ],
                    style,
                );
                // A gap between bars while they are wide enough to spare two pixels.
                if n <= 120 {
                    bar.set_margin(0, 0, 2, 2);
                }
                bar
            }))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_rect_per_non_empty_segment() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let chart = Stacked {
            buckets: vec!["2026-12-01".into(), "2026-12-02".into()],
            series: vec![
                ("gpt-4o".into(), vec![d("1.5"), d("0")]),
                ("claude".into(), vec![d("0.5"), d("2")]),
            ],
        };
        let svg = stacked_bars(&chart).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let blue = svg.matches(&colour(0).to_uppercase()).count() + svg.matches(&colour(0)).count();
        let orange =
            svg.matches(&colour(1).to_uppercase()).count() + svg.matches(&colour(1)).count();
        assert_eq!((blue, orange), (1, 2), "{svg}");
        assert!(svg.contains("2026-12-02"), "{svg}");
    }
}
