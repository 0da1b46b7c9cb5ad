"""The method: CLIP towers and model, soft-label and semivariogram-weighted losses, GPS queue, negatives."""
