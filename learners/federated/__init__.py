"""Federated learning as plain arrays (no Django): strategies, privacy, secure aggregation, coordinator and site.

A regular package rather than a namespace one because import-linter does not look
inside namespace sub-packages, and `.importlinter` checks what this one imports.
"""
