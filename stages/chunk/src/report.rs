//! The dataset report shared by `chunk` and `split`: length statistics, a histogram in
//! `report.json`, and the same histogram as an SVG plot.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// Lengths of samples, in `unit`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthStats {
    pub unit: String,
    pub count: usize,
    pub total: u64,
    pub min: u32,
    pub median: u32,
    pub mean: f64,
    pub max: u32,
    pub histogram: Histogram,
}

/// Equal-width bins: `counts[i]` values fall in `[edges[i], edges[i + 1])`, the last bin is
/// closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram {
    pub edges: Vec<u32>,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal bins from 0 to `max` (rounded up so the width is a whole number).
    pub fn new(values: &[u32], bins: u32, max: u32) -> Self {
        let width = max.div_ceil(bins).max(1);
        let edges = (0..=bins).map(|i| i * width).collect();
        let mut counts = vec![0; bins as usize];
        for &v in values {
            counts[((v / width) as usize).min(bins as usize - 1)] += 1;
        }
        Histogram { edges, counts }
    }
}

impl LengthStats {
    pub fn new(unit: &str, lengths: &[u32], histogram_max: u32) -> Self {
        let mut sorted = lengths.to_vec();
        sorted.sort_unstable();
        let total: u64 = sorted.iter().map(|&v| u64::from(v)).sum();
        LengthStats {
            unit: unit.to_owned(),
            count: sorted.len(),
            total,
            min: sorted.first().copied().unwrap_or(0),
            median: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
            mean: if sorted.is_empty() {
                0.0
            } else {
                total as f64 / sorted.len() as f64
            },
            max: sorted.last().copied().unwrap_or(0),
            histogram: Histogram::new(
                lengths,
                20,
                histogram_max.max(sorted.last().copied().unwrap_or(0)),
            ),
        }
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} samples, {} {} (min {}, median {}, mean {:.0}, max {})",
            self.count, self.total, self.unit, self.min, self.median, self.mean, self.max
        )
    }
}

/// Draws one or more histograms with the same edges (say train and test) into an SVG file.
pub fn plot(
    path: &Path,
    title: &str,
    unit: &str,
    series: &[(&str, &Histogram)],
) -> Result<(), String> {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let x_max = *first.edges.last().unwrap_or(&1);
    let y_max = series
        .iter()
        .flat_map(|(_, h)| h.counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0u32..x_max, 0u64..y_max + y_max / 10 + 1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(format!("sample length ({unit})"))
        .y_desc("samples")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];
    for (index, (name, histogram)) in series.iter().enumerate() {
        let color = colors[index % colors.len()];
        let bars = histogram.counts.iter().enumerate().map(|(i, &count)| {
            Rectangle::new(
                [(histogram.edges[i], 0), (histogram.edges[i + 1], count)],
                color.mix(0.55).filled(),
            )
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_cover_every_value() {
        let h = Histogram::new(&[0, 5, 10, 99, 100], 10, 100);
        assert_eq!(h.edges.len(), 11);
        assert_eq!(h.counts.iter().sum::<u64>(), 5);
        assert_eq!(h.counts[9], 2);
    }

    #[test]
    fn writes_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        let stats = LengthStats::new("chars", &[10, 20, 30, 500], 0);
        plot(&path, "lengths", "chars", &[("all", &stats.histogram)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert_eq!(stats.median, 30);
    }
}
