"""Streamlit glue of the app (the library, swclip/, never imports streamlit).

- ``urlstate``: values a link reproduces (query string <-> session state).
- ``loaders``: cached readers of one runs root (runs, predictions, embeddings, thumbnails, the predictor).
- ``frame``: the sidebar, the demo banner and ``ensure_frame()``, the first call of every page.
"""
