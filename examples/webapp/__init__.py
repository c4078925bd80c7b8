"""A web app whose "retrain" button enqueues a run and answers at once: FastAPI (async) and Flask (sync)."""
