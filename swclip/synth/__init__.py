"""The procedural multi-city demo world: street networks, latent fields, rendered street views.

``make_world(out_dir, seed=0, ...)`` writes an ordinary dataset (samples.csv +
images) plus ``world.json`` with the ground truth: every latent field's
correlation range in metres and seed, per city. See ``swclip.synth.world``.
"""

from swclip.synth.fields import FieldSpec, correlation, field_uniform, field_values
from swclip.synth.render import FIELD_NAMES, CityStyle, render_batch
from swclip.synth.world import CITIES, World, load_world, make_world, world_fields

__all__ = [
    "CITIES",
    "FIELD_NAMES",
    "CityStyle",
    "FieldSpec",
    "World",
    "correlation",
    "field_uniform",
    "field_values",
    "load_world",
    "make_world",
    "render_batch",
    "world_fields",
]
