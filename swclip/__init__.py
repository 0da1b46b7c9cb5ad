"""SW-CLIP Explorer: street-view geo-localization with Spatially-Weighted CLIP.

The library layer. It never imports streamlit; the app in ``app.py`` and
``pages/`` calls into it.
"""

__version__ = "0.1.0"
