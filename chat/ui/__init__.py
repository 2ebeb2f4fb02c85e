"""ChatLab's Gradio UI: one module per tab, each exposing build(); strings for both languages live in i18n.py."""
