"""slotfill's HTTP service: FastAPI app, settings, and ``serve()``.

``from service.app import create_app``; ``python -m service --model DIR`` or ``slotfill serve``.
"""
