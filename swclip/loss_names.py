"""The training objectives' names, as configs, run manifests and experiment records spell them."""

CLIP = "clip"  # one-hot InfoNCE (CLIP)
SWCLIP = "swclip"  # soft labels from the distance kernel
SWCLIP_NC = "swclip+nc"  # soft labels plus the neighbourhood-consistency term
SEMIVARIOGRAM = "semivariogram"  # semivariogram-weighted negatives (swclip or chen2025 variant)

LOSSES = (CLIP, SWCLIP, SWCLIP_NC, SEMIVARIOGRAM)
SOFT_LABEL_LOSSES = (SWCLIP, SWCLIP_NC)  # the objectives with a soft-label σ
