"""SW-CLIP Explorer, the Streamlit frame: shared sidebar, URL state, one page per task.

    streamlit run app.py -- --runs-dir runs      # or SWCLIP_RUNS_DIR=runs, or the default runs/

This file routes and draws the shared frame (sidebar, banner) once per run.
The pages in pages/ are thin and self-sufficient: each starts with
``appkit.frame.ensure_frame()``, which draws the same frame when no router did,
so a page works the same under st.navigation, on its own and under AppTest.
The maths lives in swclip/, the figures in swclip/viz/, the Streamlit glue in appkit/
(URL state, cached loaders, the frame).
"""

import os

# A named pretrained tag must fail at once instead of retrying the hub for ~45 s: this app runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st

from appkit import frame

frame.leave_legacy_pages_mode()  # before anything is drawn: a pages/ folder must not switch on Streamlit's v1 mode
st.set_page_config(page_title="SW-CLIP Explorer", page_icon=":material/map:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Runs", icon=":material/list:", default=True),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/add_a_photo:"),
    st.Page("pages/error_map.py", title="Error map", icon=":material/map:"),
    st.Page("pages/semivariogram.py", title="Semivariogram", icon=":material/show_chart:"),
    st.Page("pages/soft_labels.py", title="Soft labels", icon=":material/grid_on:"),
    st.Page("pages/negatives.py", title="Negatives", icon=":material/call_split:"),
    st.Page("pages/neighbourhoods.py", title="Neighbourhoods", icon=":material/hub:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/failures.py", title="Failures", icon=":material/report:"),
]

frame.run_routed(st.navigation(PAGES))
