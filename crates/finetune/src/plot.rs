//! Loss and learning-rate curves as SVG files, drawn from the metrics log.

use std::path::Path;

use plotters::prelude::*;

use crate::metrics::MetricsLine;

/// A named series of (step, value) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// The train-loss and eval-loss series of `lines`.
pub fn loss_series(lines: &[MetricsLine]) -> Vec<Series<'static>> {
    let pick = |f: fn(&MetricsLine) -> Option<f64>| {
        lines
            .iter()
            .filter_map(|l| f(l).map(|v| (l.step as f64, v)))
            .collect()
    };
    vec![
        Series {
            label: "train loss",
            points: pick(|l| l.loss),
            color: BLUE,
        },
        Series {
            label: "eval loss",
            points: pick(|l| l.eval_loss),
            color: RED,
        },
    ]
}

/// The learning-rate series of `lines`.
pub fn lr_series(lines: &[MetricsLine]) -> Vec<Series<'static>> {
    vec![Series {
        label: "learning rate",
        points: lines
            .iter()
            .filter_map(|l| l.lr.map(|v| (l.step as f64, v)))
            .collect(),
        color: BLUE,
    }]
}

/// Renders `series` against the optimizer step into an SVG document.
pub fn svg(title: &str, y_label: &str, series: &[Series<'_>]) -> Result<String, String> {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    let (x_max, y_min, y_max) = all.iter().fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)),
    );
    let (y_min, y_max) = if all.is_empty() {
        (0.0, 1.0)
    } else if y_max > y_min {
        let pad = (y_max - y_min) * 0.05;
        (y_min - pad, y_max + pad)
    } else {
        (
            y_min - 0.5 * y_min.abs().max(1e-9),
            y_max + 0.5 * y_max.abs().max(1e-9),
        )
    };
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (720, 400)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(text)
}

/// Writes `loss.svg` and `lr.svg` into `dir`.
pub fn write_curves(dir: &Path, lines: &[MetricsLine]) -> Result<(), String> {
    let loss = svg("Loss", "mean token NLL", &loss_series(lines))?;
    let lr = svg("Learning rate", "lr", &lr_series(lines))?;
    std::fs::write(dir.join("loss.svg"), loss)
        .map_err(|e| format!("{}: {e}", dir.join("loss.svg").display()))?;
    std::fs::write(dir.join("lr.svg"), lr)
        .map_err(|e| format!("{}: {e}", dir.join("lr.svg").display()))
}
