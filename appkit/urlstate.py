"""URL state: every value a link should reproduce (runs, city, σ, and each page's own controls).

A value is read from ``st.query_params`` the first time a session sees it,
kept in ``st.session_state`` (which survives page switches, when Streamlit
clears the query string), and written back to the URL on every run. Keys no
widget wrote in a run (another page's controls) are pruned at its end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

_STORE = "_url_state"
_WRITTEN = "_url_written"


def url_get(key: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """The session's value for ``key``: from the URL the first time, then from session state."""
    store = st.session_state.setdefault(_STORE, {})
    if key not in store:
        raw = st.query_params.get(key)
        try:
            store[key] = parse(raw) if raw not in (None, "") else default
        except (TypeError, ValueError):
            store[key] = default
    return store[key]


def url_set(key: str, value: Any, fmt: Callable[[Any], str] = str) -> None:
    """Remember ``value`` for the session and put it in the URL."""
    st.session_state.setdefault(_STORE, {})[key] = value
    st.session_state.setdefault(_WRITTEN, set()).add(key)
    text = fmt(value)
    if st.query_params.get(key) != text:
        st.query_params[key] = text


def url_widget(
    widget: Callable,
    label: str,
    key: str,
    default: Any,
    parse: Callable[[str], Any] = str,
    fmt: Callable[[Any], str] = str,
    valid: Callable[[Any], bool] | None = None,
    **kwargs: Any,
) -> Any:
    """A widget whose value lives in the URL under ``key``.

    ``valid`` rejects a stale or hand-edited URL value (a run that no longer
    exists, a σ off the scale) in favour of ``default``.
    """
    wkey = f"url:{key}"
    value = url_get(key, default, parse)
    if valid is not None and not valid(value):
        value = default
    if isinstance(value, tuple):
        # A range widget (select_slider, slider) is a range only when value= is a tuple;
        # value= stays equal to the widget's own state, so the widget keeps its identity.
        out = widget(label, key=wkey, value=value, **kwargs)
        url_set(key, tuple(out), fmt)
        return tuple(out)
    current = st.session_state.get(wkey, value)
    if valid is not None and not valid(current):
        current = value
    # Assigned on every run, not only the first: two pages may share a key (Soft labels and Negatives
    # both have "batch") with other bounds, so another widget identity, and Streamlit starts a new
    # identity from its minimum unless the value is set in this run (seen: B = 256 became 2).
    st.session_state[wkey] = current
    out = widget(label, key=wkey, **kwargs)
    url_set(key, out, fmt)
    return out


def begin_run() -> None:
    """Start of every script run (app.py): forget which URL keys were written."""
    st.session_state[_WRITTEN] = set()


def prune_url() -> None:
    """End of every script run: drop URL keys no widget wrote (another page's controls)."""
    written = st.session_state.get(_WRITTEN, set())
    for key in list(st.query_params.keys()):
        if key not in written:
            del st.query_params[key]
