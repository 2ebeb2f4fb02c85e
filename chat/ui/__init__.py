"""ChatLab's Gradio UI: one module per tab, each with build(settings); the UI strings are locales/<language>.json,
read by i18n.py; limits.py puts heavy events in their kind's queue group; handlers.py binds the settings in."""
