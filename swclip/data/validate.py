"""Validation of a sample table: what is wrong, how often, and the first examples.

Readers call ``validate`` and, by default, stop with the report's text
(``DataValidationError``). Only ``drop_invalid=True`` drops the flagged rows, and
the report (kept in ``table.attrs["validation"]``) says how many. Nothing is
lost silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from swclip.data.images import check_image_file, resolve_image_path

REQUIRED = ("id", "image", "lat", "lon", "city")
OPTIONAL = ("country", "split", "heading", "captured_at", "place_id")

# problem key -> what it means, in the report's words
PROBLEMS = {
    "bad_coords": "NaN, infinite or out-of-range coordinates (|lat| > 90 or lon outside [-180, 360])",
    "missing_city": "no city",
    "duplicate_id": "duplicate id (every occurrence after the first)",
    "bad_path": "image path escapes the dataset root or is empty",
    "missing_image": "image file does not exist",
    "unreadable_image": "image file exists but cannot be read",
    "small_city": "city with fewer samples than min_city_samples",
}


class DataValidationError(ValueError):
    """A table failed validation; the message is the full report."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(
            report.text() + "\n(to drop these rows and keep the rest: swclip train/evaluate --drop-invalid, "
            "data.drop_invalid: true in a config, or drop_invalid=True in Python)"
        )


@dataclass
class Problem:
    count: int
    rows: np.ndarray  # row positions in the validated table
    examples: list[str]


@dataclass
class ValidationReport:
    """Counts and first examples per problem. ``ok`` when there are none."""

    n_rows: int
    problems: dict[str, Problem] = field(default_factory=dict)
    n_dropped: int = 0
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def invalid_mask(self) -> np.ndarray:
        """(n_rows,) bool: rows flagged by any problem."""
        mask = np.zeros(self.n_rows, dtype=bool)
        for p in self.problems.values():
            mask[p.rows] = True
        return mask

    def text(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if self.ok:
            return f"{head}{self.n_rows} rows, no problems"
        n_bad = int(self.invalid_mask().sum())
        lines = [f"{head}{n_bad} of {self.n_rows} rows have problems:"]
        for key, p in self.problems.items():
            lines.append(f"  {key} ({PROBLEMS[key]}): {p.count}")
            lines += [f"    e.g. {ex}" for ex in p.examples]
        if self.n_dropped:
            lines.append(f"dropped {self.n_dropped} rows (drop_invalid)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-friendly summary for manifests."""
        return dict(
            source=self.source,
            n_rows=self.n_rows,
            n_dropped=self.n_dropped,
            problems={k: dict(count=p.count, examples=p.examples) for k, p in self.problems.items()},
        )

    def __str__(self) -> str:
        return self.text()


def _add(report: ValidationReport, key: str, rows: np.ndarray, describe, max_examples: int) -> None:
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows):
        report.problems[key] = Problem(int(len(rows)), rows, [describe(int(i)) for i in rows[:max_examples]])


def validate(
    table: pd.DataFrame,
    root=None,
    min_city_samples: int = 1,
    check_images: str | bool = "header",
    max_examples: int = 5,
    source: str = "",
) -> ValidationReport:
    """Check a sample table and report every problem with counts and first examples.

    table: columns ``id, image, lat, lon, city`` (missing columns raise ValueError).
    root: the dataset root that ``image`` paths resolve under; None skips all image checks.
    min_city_samples: cities with fewer rows are reported (``small_city``).
    check_images: "header" (exists, non-empty, recognised, JPEG not truncated:
    cheap), "decode" (full decode of every image: slow), "exists", or False.
    """

    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{source or 'table'}: missing column(s) {missing}; it has {list(table.columns)}")
    if check_images not in ("header", "decode", "exists", False, None):
        raise ValueError(f"check_images must be 'header', 'decode', 'exists' or False, got {check_images!r}")
    report = ValidationReport(n_rows=len(table), source=source)
    ids = table["id"].astype(str).to_numpy()

    def row(i: int) -> str:
        return f"row {i} (id {ids[i]!r})"

    lat = pd.to_numeric(table["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(table["lon"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (lon < -180) | (lon > 360)

    def coord(i: int) -> str:
        hint = " (lat/lon swapped?)" if np.isfinite(lat[i]) and abs(lat[i]) > 90 and abs(lon[i]) <= 90 else ""
        return f"{row(i)}: lat={table['lat'].iloc[i]!r}, lon={table['lon'].iloc[i]!r}{hint}"

    _add(report, "bad_coords", np.flatnonzero(bad), coord, max_examples)

    city = table["city"]
    no_city = city.isna().to_numpy() | (city.astype(str).str.strip() == "").to_numpy()
    _add(report, "missing_city", np.flatnonzero(no_city), row, max_examples)

    dup = pd.Series(ids).duplicated(keep="first").to_numpy()
    _add(report, "duplicate_id", np.flatnonzero(dup), row, max_examples)

    if root is not None and check_images:
        images = table["image"].astype(str).to_numpy()
        bad_path, missing_img, unreadable, reasons = [], [], [], {}
        for i, rel in enumerate(images):
            try:
                path = resolve_image_path(root, rel)
            except ValueError as e:
                bad_path.append(i)
                reasons[i] = str(e)
                continue
            if check_images == "exists":
                problem = None if path.is_file() else "missing"
            else:
                problem = check_image_file(path, decode=check_images == "decode")
            if problem == "missing":
                missing_img.append(i)
                reasons[i] = str(path)
            elif problem is not None:
                unreadable.append(i)
                reasons[i] = f"{rel}: {problem}"
        _add(report, "bad_path", bad_path, lambda i: f"{row(i)}: {reasons[i]}", max_examples)
        _add(report, "missing_image", missing_img, lambda i: f"{row(i)}: {reasons[i]}", max_examples)
        _add(report, "unreadable_image", unreadable, lambda i: f"{row(i)}: {reasons[i]}", max_examples)

    if min_city_samples > 1:
        counts = city.value_counts(dropna=True)
        small = counts[counts < min_city_samples]
        if len(small):
            rows = np.flatnonzero(city.isin(small.index).to_numpy())
            report.problems["small_city"] = Problem(
                int(len(rows)),
                rows,
                [f"{c!r}: {n} sample(s) < {min_city_samples}" for c, n in small.head(max_examples).items()],
            )
    return report


def apply_report(table: pd.DataFrame, report: ValidationReport, drop_invalid: bool) -> pd.DataFrame:
    """Raise with the report, or (``drop_invalid``) drop the flagged rows and record the report."""
    if report.ok:
        out = table.reset_index(drop=True)
    elif not drop_invalid:
        raise DataValidationError(report)
    else:
        mask = report.invalid_mask()
        report.n_dropped = int(mask.sum())
        out = table.loc[~mask].reset_index(drop=True)

        warnings.warn(report.text(), stacklevel=3)
    out.attrs["validation"] = report.to_dict()
    return out
