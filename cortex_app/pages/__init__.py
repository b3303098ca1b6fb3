"""The console's pages; cortex_app.py registers each one."""

from .auth import login, setup
from .gpus import gpus
from .hosts import hosts
from .keys import keys
from .model_detail import model_detail
from .model_form import model_form
from .models import models
from .overview import overview
from .settings import settings
from .system import system
from .usage import usage

__all__ = ["gpus", "hosts", "keys", "login", "model_detail", "model_form", "models", "overview", "settings", "setup", "system",
           "usage"]
