"""Dashboard data read from the database (selectors), one module per dashboard."""
