"""The prediction API (FastAPI): ``app.py`` builds it, ``routes/`` holds one router per area."""
