"""Reflex configuration. The database URL comes from Cortex's settings (CORTEX_DB_URL, else
the SQLite file in CORTEX_DATA_DIR); reading the environment is all this file does."""

import reflex as rx
from reflex.plugins.sitemap import SitemapPlugin

# Reflex compares the tables it knows with the database before serving; importing the
# models here lets it see ours (else it reports every table as a pending change).
import cortex_app.models  # noqa: F401
from cortex_app.settings import load_settings

settings = load_settings()
config = rx.Config(
    app_name="cortex_app",
    db_url=settings.db_url,
    # Same origin only: CORS and the websocket's Origin check (a page of another site, or of
    # another port of this host, cannot drive the console through the admin's browser).
    cors_allowed_origins=settings.allowed_origins,
    # Page states (the session token, a shown-once secret, a typed HF token) stay in this
    # process's memory: Reflex's default pickles every one to .states/ on disk. One process
    # serves the console (no Redis), so nothing needs them elsewhere; a restart asks the
    # browser to load its page afresh, as it would anyway.
    state_manager_mode=rx.constants.StateManagerMode.MEMORY,
    telemetry_enabled=False,
    show_built_with_reflex=False,
    disable_plugins=[SitemapPlugin],
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", radius="medium"))],
)
