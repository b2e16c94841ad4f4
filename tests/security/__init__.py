"""Hostile input against the web side: headers and CSRF, survey links, API keys."""
