"""Location towers: coordinates -> (B, D) embeddings, before L2-normalisation.

Two towers, chosen by ``ModelConfig.location_tower``:

- ``gps`` (GeoCLIP-style, Vicente Vivanco Cepeda et al. 2023): the Equal Earth
  projection of (lat, lon), normalised so the world's x spans [-1, 1]; random
  Fourier features cos/sin(2π b·u) with b ~ N(0, σ²) at several scales σ; one
  MLP per scale to the embedding dimension; the scales' outputs are summed.
  One unit of u is EE_UNIT_KM ≈ 17,243 km, so a scale σ resolves wavelengths
  of about EE_UNIT_KM / σ: σ = 2^8 ≈ 67 km (GeoCLIP's finest), 2^12 ≈ 4.2 km,
  2^14 ≈ 1.05 km, 2^16 ≈ 263 m. Street-level work inside a city of a few km
  needs the fine scales (``gps_wavelength_km``).
- ``text`` (location-as-text): a template such as "a street view photo at
  latitude 51.50721, longitude -0.12758 in London", tokenised and read by an
  open_clip ``TextTransformer``, with optional learnable context tokens
  (CoOp-style) inserted after the start token.

The Fourier matrices are drawn from a seeded generator and saved with the
weights, so a model rebuilt from its config is identical before any training
and a loaded checkpoint carries exactly the matrices it was trained with.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from swclip.geo import EARTH_RADIUS_M, equal_earth

DEFAULT_TEMPLATE = "a street view photo at latitude {lat:.5f}, longitude {lon:.5f}{in_city}"
TEMPLATE_FIELDS = ("lat", "lon", "city", "in_city")
# u = equal_earth(.., radius_m=1) / EE_X_MAX. GeoCLIP scales the projection by SF / 180 with SF = 66.50336, which
# puts (0°, ±180°) at |x| = 1 to 1e-7; we take its constant, so a tower with GeoCLIP's weights computes GeoCLIP.
GEOCLIP_SF = 66.50336
EE_X_MAX = 180.0 / GEOCLIP_SF
EE_UNIT_KM = EE_X_MAX * EARTH_RADIUS_M / 1000.0


def gps_wavelength_km(frequency_scale: float) -> float:
    """Typical wavelength (km) resolved by a Fourier frequency scale (dimensionless): EE_UNIT_KM / scale."""
    return EE_UNIT_KM / float(frequency_scale)


def normalised_equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """(B, 2) latlon degrees -> (B, 2) float64 Equal Earth (x, y), x in [-1, 1], y in about [-0.49, 0.49]."""
    return equal_earth(latlon.to(torch.float64), radius_m=1.0) / EE_X_MAX


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features [cos 2πBu, sin 2πBu] with B ~ N(0, s²), (n_features, 2).

    ``frequency_scale`` s is GeoCLIP's "sigma": the standard deviation of the random frequencies, in cycles
    per unit of normalised equal-earth coordinates (dimensionless). It is not the soft-label bandwidth
    ``sigma_m`` (metres); :func:`gps_wavelength_km` converts it to the wavelength it resolves.

    The phase 2πBu is computed in float64: at s = 2^16 a float32 u would put
    about 0.03 rad of rounding noise on each phase. ``b`` is a persistent
    buffer drawn from ``torch.Generator().manual_seed(seed)``.
    """

    def __init__(self, frequency_scale: float, n_features: int, seed: int):
        super().__init__()
        if not frequency_scale > 0:
            raise ValueError(f"Fourier frequency scale must be > 0, got {frequency_scale}")
        gen = torch.Generator().manual_seed(int(seed))
        self.frequency_scale = float(frequency_scale)
        self.register_buffer(
            "b", torch.randn(n_features, 2, generator=gen, dtype=torch.float64).float() * self.frequency_scale
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, 2) float64 normalised coordinates -> (B, 2·n_features) float64."""
        phase = 2.0 * math.pi * (u @ self.b.to(torch.float64).T)  # (B, n_features)
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class GPSLocationTower(nn.Module):
    """GeoCLIP-style location encoder. forward: (B, 2) latlon degrees -> (B, embed_dim).

    scales: Fourier frequency scales (GeoCLIP's σ, dimensionless: 2^0, 2^4, 2^8). rff_dim: frequencies per
    scale (features = 2·rff_dim). hidden, depth: each scale's MLP (GeoCLIP:
    1024, 3). seed: seeds the Fourier matrices (scale i uses seed + i).
    """

    def __init__(
        self,
        embed_dim: int,
        scales: Sequence[float] = (1.0, 16.0, 256.0),
        rff_dim: int = 256,
        hidden: int = 1024,
        depth: int = 3,
        seed: int = 0,
    ):
        super().__init__()
        if not scales:
            raise ValueError("gps tower needs at least one Fourier scale")
        if depth < 1 or hidden < 1 or rff_dim < 1:
            raise ValueError(f"gps tower needs depth, hidden, rff_dim >= 1; got {depth}, {hidden}, {rff_dim}")
        self.rff = nn.ModuleList(GaussianFourierFeatures(s, rff_dim, seed + i) for i, s in enumerate(scales))
        self.mlps = nn.ModuleList()
        for _ in scales:
            layers, width = [], 2 * rff_dim
            for _ in range(depth):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            layers.append(nn.Linear(width, embed_dim))  # the head: what a locked tower still trains
            self.mlps.append(nn.Sequential(*layers))

    def projection_parameters(self):
        """The heads (last Linear of each scale's MLP): trainable under ``lock_location``."""
        for mlp in self.mlps:
            yield from mlp[-1].parameters()

    def forward(self, latlon: torch.Tensor, city=None, tokens=None) -> torch.Tensor:
        u = normalised_equal_earth(latlon)  # (B, 2) float64
        dtype = self.mlps[0][0].weight.dtype
        return sum(mlp(rff(u).to(dtype)) for rff, mlp in zip(self.rff, self.mlps))  # (B, D)


def check_template(template: str) -> None:
    """Raise ValueError if ``template`` uses a field other than {lat}, {lon}, {city}, {in_city}."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"location template {template!r} is not a valid format string: {e}") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise ValueError(
            f"location template {template!r} uses unknown field(s) {unknown}; allowed: {list(TEMPLATE_FIELDS)}"
        )
    if "lat" not in fields or "lon" not in fields:
        raise ValueError(f"location template {template!r} must contain both {{lat}} and {{lon}}")


def format_locations(latlon, city: Sequence[str | None] | None = None, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Location-as-text strings. latlon: (B, 2) degrees; city: B names or None.

    ``{in_city}`` becomes " in <city>" when a city is given and "" otherwise.
    """
    ll = latlon.detach().cpu().to(torch.float64).numpy() if torch.is_tensor(latlon) else np.asarray(latlon, np.float64)
    if city is not None and len(city) != len(ll):
        raise ValueError(f"city has {len(city)} names for {len(ll)} locations")
    out = []
    for i, (lat, lon) in enumerate(ll):
        c = None if city is None else city[i]
        out.append(template.format(lat=lat, lon=lon, city=c or "", in_city=f" in {c}" if c else ""))
    return out


class LocationTokenizer:
    """Locations -> the token ids a text tower reads; small and picklable, for the data pipeline.

    tokenizer: open_clip's tokenizer; context_length: the text tower's; n_ctx learnable
    context slots are left as padding after the start token; pad_id fills them.
    """

    def __init__(self, tokenizer, template: str, context_length: int, n_ctx: int = 0, pad_id: int = 0):
        check_template(template)
        self.tokenizer, self.template = tokenizer, template
        self.context_length, self.n_ctx, self.pad_id = int(context_length), int(n_ctx), int(pad_id)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, context_length) long, with n_ctx placeholder slots after the start token."""
        tokens = self.tokenizer(list(texts), context_length=self.context_length - self.n_ctx)  # (B, L - n_ctx)
        if self.n_ctx:
            pad = torch.full((tokens.shape[0], self.n_ctx), self.pad_id, dtype=tokens.dtype)
            tokens = torch.cat([tokens[:, :1], pad, tokens[:, 1:]], dim=1)  # (B, L)
        return tokens

    def __call__(self, latlon, city: Sequence[str | None] | None = None) -> torch.Tensor:
        """(B, 2) latlon degrees (+ B city names) -> (B, context_length) long token ids."""
        return self.tokenize(format_locations(latlon, city, self.template))


class TextLocationTower(nn.Module):
    """Location-as-text through an open_clip ``TextTransformer``. forward: (B, 2) -> (B, embed_dim).

    text: an open_clip TextTransformer (causal, no CLS embedding); tokenizer:
    open_clip's tokenizer for the architecture; n_ctx: learnable context
    tokens placed after the start token (the template's tokens are truncated
    to fit the context length).
    """

    def __init__(self, text: nn.Module, tokenizer, template: str = DEFAULT_TEMPLATE, n_ctx: int = 0, seed: int = 0):
        super().__init__()
        check_template(template)
        from open_clip.transformer import TextTransformer

        if not isinstance(text, TextTransformer):
            raise ValueError(
                f"location-as-text needs an open_clip TextTransformer text tower, got {type(text).__name__} "
                "(Hugging Face text towers are not supported as location towers)"
            )
        if getattr(text, "cls_emb", None) is not None:
            raise ValueError("text towers with an appended CLS embedding (CoCa) are not supported as location towers")
        if not 0 <= n_ctx < text.context_length - 2:
            raise ValueError(f"context_tokens must be in [0, {text.context_length - 3}], got {n_ctx}")
        self.text, self.tokenizer, self.template, self.n_ctx = text, tokenizer, template, int(n_ctx)
        self.location_tokenizer = LocationTokenizer(tokenizer, template, text.context_length, n_ctx, text.pad_id)
        if n_ctx:
            gen = torch.Generator().manual_seed(int(seed))
            self.context = nn.Parameter(torch.randn(n_ctx, text.width, generator=gen) * 0.02)  # CoOp init
        else:
            self.context = None

    def projection_parameters(self):
        """The text projection: trainable under ``lock_location``."""
        proj = self.text.text_projection
        if proj is None:
            return iter(())
        return iter([proj]) if isinstance(proj, nn.Parameter) else proj.parameters()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, context_length) token ids, with n_ctx placeholder slots after the start token."""
        return self.location_tokenizer.tokenize(texts)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """list of B strings -> (B, embed_dim)."""
        return self.encode_tokens(self.tokenize(texts))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids (from ``location_tokenizer``) -> (B, embed_dim). Tensors only: compiles whole."""
        text = self.text
        tokens = tokens.to(text.positional_embedding.device)
        cast_dtype = text.transformer.get_cast_dtype()
        x = text.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
        if self.n_ctx:
            ctx = self.context.to(cast_dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)
        x = x + text.positional_embedding[: x.shape[1]].to(cast_dtype)
        attn_mask = text.attn_mask
        x = text.transformer(x, attn_mask=attn_mask)
        x = text.ln_final(x)
        from open_clip.transformer import text_global_pool

        pooled = text_global_pool(x, tokens, pool_type=text.pool_type, eos_token_id=getattr(text, "eos_id", None))
        proj = text.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled

    def forward(
        self,
        latlon: torch.Tensor,
        city: Sequence[str | None] | None = None,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 2) latlon (+ city names), or ready ``tokens`` (B, L) from the data pipeline -> (B, embed_dim)."""
        if tokens is None:
            tokens = self.location_tokenizer(latlon, city)
        return self.encode_tokens(tokens)
