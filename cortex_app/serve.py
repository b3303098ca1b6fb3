"""`python -m cortex_app.serve`: how the console starts, in its container image and under
`make up` (which compiles the frontend first, when the code changed, and passes --checked).

1. `cortex_app.prestart` in a child process (checks, migrations, first admin); its exit
   status is ours when it fails, so a bad setting stops the container with one clear line.
   `--checked`: make up has just run it.
2. Reflex's production backend on CORTEX_PORT, serving the compiled frontend in the web
   folder (`.web/build/client`, or REFLEX_WEB_WORKDIR's: `docker build` and `make up` compile
   it). Unlike `reflex run --env prod`, nothing is compiled or built here, so a start takes
   seconds and needs no Node.js in the image.

SIGTERM reaches the server (this process, PID 1 in the container), which runs the app's
lifespan shutdown: the scheduler stops and the shutdown policy is applied.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cortex_app.settings import SettingsError, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def frontend_build_dir() -> Path:
    from reflex.utils.prerequisites import get_web_dir
    from reflex_base import constants

    web = get_web_dir()
    return (web if web.is_absolute() else PROJECT_ROOT / web) / constants.Dirs.STATIC


def forget_disk_states() -> None:
    """Remove what Reflex's disk state manager wrote before this console kept page states in
    memory (rxconfig.py): pickles of every page's state, secrets included."""
    import shutil

    from reflex.utils.prerequisites import get_states_dir

    states = get_states_dir()
    shutil.rmtree(states if states.is_absolute() else PROJECT_ROOT / states, ignore_errors=True)


def main(argv: list[str]) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"cortex: error: {exc}", file=sys.stderr, flush=True)
        return 2
    build = frontend_build_dir()
    if not (build / "index.html").is_file():
        print(f"cortex: error: no compiled frontend at {build}; this command serves the build that "
              "`docker build` makes (on bare metal use `make up`)", file=sys.stderr, flush=True)
        return 2
    if "--checked" not in argv:
        # As PID 1 this process ignores SIGTERM unless it handles it: pass it on to prestart, so
        # `docker stop` during a long migration does not wait for SIGKILL.
        prestart = subprocess.Popen([sys.executable, "-m", "cortex_app.prestart"], cwd=PROJECT_ROOT)
        signal.signal(signal.SIGTERM, lambda *_: prestart.terminate())
        status = prestart.wait()
        if status != 0:
            return status if status > 0 else 128 - status  # killed by a signal: 128 + its number
    # Until the server takes SIGTERM over (it imports the app first), a stop just ends us:
    # nothing has started yet that needs a graceful end.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

    from reflex.environment import environment
    from reflex.utils import exec as reflex_exec
    from reflex_base import constants

    from reflex.utils import prerequisites

    forget_disk_states()
    environment.REFLEX_ENV_MODE.set(constants.Env.PROD)
    environment.REFLEX_SKIP_COMPILE.set(True)
    environment.REFLEX_MOUNT_FRONTEND_COMPILED_APP.set(True)
    prerequisites.get_app()  # imported here, so the forked worker shares it (as Reflex's own target)
    # Reflex's production backend (granian), serving cortex_app.served(): its app with the
    # gateway in front.
    reflex_exec.run_granian_backend_prod(settings.listen, settings.port, constants.LogLevel.INFO,
                                         app_target="cortex_app.cortex_app:served")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
