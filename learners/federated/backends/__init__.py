"""The runtimes that carry a federation's messages: in-process, or one Celery queue per site.

A regular package rather than a namespace one because import-linter does not look
inside namespace sub-packages, and `.importlinter` checks what this one imports.
"""
