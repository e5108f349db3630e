//! The shape of the convolutions the kernels compute.

/// The shape of a stride-1 convolution with square `k×k` kernels and padding `p`: zeros,
/// or with `circular` the rows and columns of the opposite side (as PyTorch's
/// `padding_mode="circular"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub padding: usize,
    pub circular: bool,
}

impl ConvShape {
    pub fn out_hw(&self) -> Option<(usize, usize)> {
        let hp = self.h + 2 * self.padding;
        let wp = self.w + 2 * self.padding;
        (hp >= self.k && wp >= self.k).then(|| (hp - self.k + 1, wp - self.k + 1))
    }
}
