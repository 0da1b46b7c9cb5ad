"""Visualisation: plotly figures, folium / pydeck maps, spatial bins and scale-aware units for the app."""
