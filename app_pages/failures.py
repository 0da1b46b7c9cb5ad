"""failures page (being built)."""

import streamlit as st

import app_support as sup

view = sup.current_view()
sup.require_run(view)
st.title("failures")
