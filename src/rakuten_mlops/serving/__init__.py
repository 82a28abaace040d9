"""The prediction service (FastAPI): `create_app` in `app.py`, routes in `api/routes/`."""
