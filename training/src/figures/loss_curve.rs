//! The loss-curve figure: each loss term against the step, log scale.

use std::path::Path;

use plotters::prelude::*;

use super::{FigureError, font::text_available};

/// Loss values recorded during training: one row per logged step, one column per named term.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossHistory {
    /// The names of the terms, in column order.
    pub names: Vec<String>,
    /// (step, values) rows.
    pub rows: Vec<(usize, Vec<f64>)>,
}

impl LossHistory {
    /// Appends one step's named values (the names of the first call fix the columns).
    pub fn push(&mut self, step: usize, values: &[(&str, f64)]) {
        if self.names.is_empty() {
            self.names = values.iter().map(|(n, _)| n.to_string()).collect();
        }
        self.rows
            .push((step, values.iter().map(|(_, v)| *v).collect()));
    }

    /// Means over consecutive windows of `width` rows (smooths the curve for plotting).
    pub fn smoothed(&self, width: usize) -> Vec<(usize, Vec<f64>)> {
        self.rows
            .chunks(width.max(1))
            .map(|chunk| {
                let step = chunk.last().map_or(0, |r| r.0);
                let columns = self.names.len();
                let means = (0..columns)
                    .map(|c| chunk.iter().map(|r| r.1[c]).sum::<f64>() / chunk.len() as f64)
                    .collect();
                (step, means)
            })
            .collect()
    }
}

const COLOURS: [RGBColor; 8] = [
    BLACK,
    RED,
    BLUE,
    GREEN,
    MAGENTA,
    CYAN,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// Writes the curves of `history` (smoothed to at most ~300 points) as a 900×520 PNG.
pub fn write_loss_curve(history: &LossHistory, path: &Path) -> Result<(), FigureError> {
    let (width, height) = (900u32, 520u32);
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let width_rows = history.rows.len().div_ceil(300).max(1);
    let points = history.smoothed(width_rows);
    let text = text_available();
    draw(&mut buffer, (width, height), history, &points, text)
        .map_err(|e| FigureError::Draw(format!("the loss curve: {e}")))?;
    let image = image::RgbImage::from_raw(width, height, buffer).expect("buffer matches size");
    image.save(path)?;
    Ok(())
}

fn draw(
    buffer: &mut [u8],
    size: (u32, u32),
    history: &LossHistory,
    points: &[(usize, Vec<f64>)],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(buffer, size).into_drawing_area();
    root.fill(&WHITE)?;
    let last_step = points.last().map_or(1, |p| p.0.max(1));
    let positive = points
        .iter()
        .flat_map(|p| p.1.iter().copied())
        .filter(|v| *v > 0.0);
    let (lo, hi) = positive.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi {
        (lo * 0.8, hi * 1.25)
    } else {
        (1e-3, 1.0)
    };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder
            .caption("diptych training losses (log scale)", ("sans-serif", 22))
            .x_label_area_size(36)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0usize..last_step, (lo..hi).log_scale())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("step").y_desc("loss");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;
    for (column, name) in history.names.iter().enumerate() {
        let colour = COLOURS[column % COLOURS.len()];
        let series = points.iter().map(|p| (p.0, p.1[column].max(lo)));
        let drawn = chart.draw_series(LineSeries::new(series, colour.stroke_width(2)))?;
        if text {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_of_the_requested_size() {
        let mut history = LossHistory::default();
        for step in 0..50 {
            let s = step as f64;
            history.push(
                step,
                &[
                    ("total", 10.0 / (1.0 + s)),
                    ("seg", 1.0 / (1.0 + s)),
                    ("zero", 0.0),
                ],
            );
        }
        assert_eq!(history.smoothed(10).len(), 5);
        let path = std::env::temp_dir().join(format!("diptych-loss-{}.png", std::process::id()));
        write_loss_curve(&history, &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (900, 520));
        // the curves put coloured (red) pixels on the white background
        assert!(
            image
                .pixels()
                .any(|p| p.0[0] > 200 && p.0[1] < 60 && p.0[2] < 60)
        );
        std::fs::remove_file(&path).unwrap();
    }
}
