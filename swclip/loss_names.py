"""The training objectives' names, as configs, run manifests and experiment records spell them."""

CLIP = "clip"  # one-hot InfoNCE (CLIP)
SWCLIP = "swclip"  # soft labels from the distance kernel
SWCLIP_NC = "swclip+nc"  # soft labels plus the neighbourhood-consistency term
SEMIVARIOGRAM = "semivariogram"  # semivariogram-weighted negatives (swclip or chen2025 variant)
# controls for SW-CLIP's soft labels (same σ, same kernel, the spatial structure taken away):
SMOOTH = "smooth"  # label smoothing: each row keeps SW-CLIP's off-diagonal mass at σ, spread uniformly
SHUFFLED = "shuffled"  # SW-CLIP's kernel on a random permutation of the batch's locations

LOSSES = (CLIP, SWCLIP, SWCLIP_NC, SEMIVARIOGRAM, SMOOTH, SHUFFLED)
SOFT_LABEL_LOSSES = (SWCLIP, SWCLIP_NC, SMOOTH, SHUFFLED)  # the objectives with a soft-label σ
CONTROL_LOSSES = (SMOOTH, SHUFFLED)  # experiment controls, not methods (same cost as SWCLIP)
