"""The cluster report's renderers: views as rows, JSON and CSV, a self-contained HTML page, the terminal table."""
