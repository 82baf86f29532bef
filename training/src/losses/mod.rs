//! The five losses of docs/METHOD.md §2, each a pure function on tensors, and their weighted sum;
//! plus the twin loss, which the synthetic sources make possible (x̃ against the healthy twin).
//!
//! Every ‖·‖² of docs/METHOD.md is taken as a mean over its elements (pixels, or positions × D), so
//! that the weights λ do not depend on the image or grid size.

mod discrimination;
mod latent;
mod reconstruction;
mod segmentation;
mod ssim;
mod total;
mod twin;

pub use discrimination::{discrimination_image, discrimination_null, discrimination_position};
pub use latent::latent;
pub use reconstruction::{reconstruction, residual};
pub use segmentation::{
    cross_entropy, generalized_dice, generalized_dice_probabilities, segmentation,
};
pub use ssim::{SSIM_WINDOW, ssim, ssim_map};
pub use total::{LossTerms, Targets, total_loss};
pub use twin::twin;
