//! The loss curve of a training run as a PNG image (plotters, with the DejaVu Sans
//! Mono font built in so no system font is needed), and as CSV text. No file I/O:
//! the caller writes the bytes.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::sync::Once;
use thiserror::Error;

/// Why the plot could not be drawn.
#[derive(Debug, Error)]
pub enum PlotError {
    /// A loss that is not a finite number (training diverged): there is no scale
    /// to plot it on.
    #[error("the loss of epoch {epoch} is {value}, not a finite number, so it cannot be plotted")]
    NotFinite { epoch: usize, value: f64 },
    /// plotters or the PNG encoder failed (a kiln bug).
    #[error("drawing the loss curve failed: {0}")]
    Draw(String),
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
const FONT: &[u8] = include_bytes!("assets/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

/// `epoch,loss` lines with a header, one per epoch (epochs counted from 1).
pub fn loss_csv(losses: &[f64]) -> String {
    let mut text = String::from("epoch,loss\n");
    for (index, loss) in losses.iter().enumerate() {
        text.push_str(&format!("{},{loss}\n", index + 1));
    }
    text
}

/// The loss per epoch as a line plot, PNG bytes of `WIDTH`x`HEIGHT` pixels.
pub fn loss_curve_png(title: &str, losses: &[f64]) -> Result<Vec<u8>, PlotError> {
    if let Some((index, &value)) = losses.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(PlotError::NotFinite {
            epoch: index + 1,
            value,
        });
    }
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // The font is built in and valid; a failure would only leave text undrawn,
        // and drawing then reports it.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
    let draw = |err: &dyn std::fmt::Display| PlotError::Draw(err.to_string());
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let top = losses.iter().copied().fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.05 } else { 1.0 };
        let epochs = losses.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..epochs.max(2.0), 0.0..top)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("mean loss")
            .label_style((FAMILY, 14))
            .x_label_formatter(&|epoch| format!("{epoch:.0}"))
            .draw()
            .map_err(|e| draw(&e))?;
        let points = losses
            .iter()
            .enumerate()
            .map(|(index, &loss)| ((index + 1) as f64, loss));
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| draw(&e))?;
        writer.write_image_data(&pixels).map_err(|e| draw(&e))?;
    }
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_has_one_line_per_epoch() {
        assert_eq!(loss_csv(&[2.5, 0.125]), "epoch,loss\n1,2.5\n2,0.125\n");
    }

    #[test]
    fn the_plot_is_a_png_with_the_curve_drawn() {
        let png = loss_curve_png("digits", &[2.3, 1.0, 0.5, 0.25]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        // The curve is blue; the text (title, labels) is black.
        let rgb: Vec<&[u8]> = pixels.chunks_exact(3).collect();
        assert!(rgb.iter().filter(|p| p[2] > 200 && p[0] < 60).count() > 500);
        assert!(rgb.iter().filter(|p| p.iter().all(|&c| c < 60)).count() > 500);
        let err = loss_curve_png("x", &[1.0, f64::NAN]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the loss of epoch 2 is NaN, not a finite number, so it cannot be plotted"
        );
    }
}
