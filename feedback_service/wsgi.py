"""The WSGI application for gunicorn: `gunicorn 'feedback_service.wsgi:app'`."""
from . import configure_logging, create_app

app = create_app()
configure_logging(app.config["FEEDBACK_LOG_LEVEL"])
