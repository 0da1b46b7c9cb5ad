"""Data: the sample table, its readers, validation, spatial splits, images and shards.

The sample table is a pandas DataFrame with columns ``id, image, lat, lon, city``
plus optional ``country, split, heading, captured_at, place_id`` (see ``swclip.data.table``; readers derive
``place_id`` from the coordinates rounded to 1 m when the table has none).

- readers: ``read_table`` (CSV/TSV/Parquet), ``read_osv5m``, ``read_exif_folder``,
  ``read_webdataset`` / ``stream_webdataset`` (tar shards, written by ``write_webdataset``);
- ``validate`` -> ``ValidationReport``; readers raise ``DataValidationError`` unless
  ``drop_invalid=True``;
- ``spatial_split`` (blocks + buffer) and ``table_hash`` for the manifest;
- ``open_image`` (the one safe way to open an image), ``ImageDataset``, ``StreetAugment``.
"""

from swclip.data.images import (
    ImageDataset,
    ImageError,
    StreetAugment,
    check_image_file,
    open_image,
    resolve_image_path,
    tiny_image_warning,
)
from swclip.data.shards import read_webdataset, stream_webdataset, write_webdataset
from swclip.data.splits import spatial_split, table_hash
from swclip.data.table import EmptyTableError, exif_gps, read_exif_folder, read_osv5m, read_table
from swclip.data.validate import DataValidationError, ValidationReport, validate

__all__ = [
    "DataValidationError",
    "EmptyTableError",
    "ImageDataset",
    "ImageError",
    "StreetAugment",
    "ValidationReport",
    "check_image_file",
    "exif_gps",
    "open_image",
    "read_exif_folder",
    "read_osv5m",
    "read_table",
    "read_webdataset",
    "resolve_image_path",
    "spatial_split",
    "stream_webdataset",
    "table_hash",
    "tiny_image_warning",
    "validate",
    "write_webdataset",
]
