//! PNG figures written during training: the loss curve and the sample grid.
//!
//! Text (titles, axes, legends) is drawn with a system TrueType font when one is found
//! (DejaVu Sans or Liberation Sans, as Debian's fonts-dejavu-core ships); without one the figures
//! are drawn without text rather than failing.

mod font;
mod loss_curve;
mod sample_grid;

pub use font::text_available;
pub use loss_curve::{LossHistory, write_loss_curve};
pub use sample_grid::{GridRow, write_sample_grid};

/// A figure that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// Drawing failed.
    #[error("drawing {0}")]
    Draw(String),
    /// Encoding or writing the PNG failed.
    #[error("writing PNG: {0}")]
    Write(#[from] image::ImageError),
}
