"""The console image: size, build times, start time and idle memory. Prints its figures.

    python bench/image.py [--runs N]     (DOCKER_HOST: the test engine; make bench)

- size of the image built from the project's Dockerfile (BASE = the local bookworm +
  python3 stand-in for python:3.11-slim, as in the tests);
- build time: cold (no layer cache; the base image present), cached (nothing changed), and
  after a one-line code change (the usual rebuild: dependencies cached, frontend rebuilt);
- `docker run` -> /api/health 200, over N runs with a fresh volume each (goal: < 5 s);
- idle memory of the console container 20 s after start (goal: < 250 MB): the cgroup's
  usage less its page cache (what `docker stats` shows), and the processes' summed RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import selfhost  # noqa: E402
from tests.conftest import free_port  # noqa: E402

RSS_SCRIPT = ("import glob\nt=0\nfor f in glob.glob('/proc/[0-9]*/status'):\n"
              "    try:\n        t+=int([l for l in open(f) if l.startswith('VmRSS')][0].split()[1])\n"
              "    except Exception: pass\nprint(t)")


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    client = docker.DockerClient(base_url=host, timeout=120)
    tag = uuid.uuid4().hex[:6]
    extra_tags = [f"cortex-test/console:bench-edit-{tag}", f"cortex-test/console:bench-cold-{tag}"]
    with tempfile.TemporaryDirectory() as tmp:
        context = selfhost.build_context(Path(tmp))
        first, _ = selfhost.build_image(client, context)
        cached, _ = selfhost.build_image(client, context)
        init = context / "cortex_app/__init__.py"
        init.write_text(init.read_text() + f"\n# bench edit {tag}\n")
        edited, _ = selfhost.build_image(client, context, tag=extra_tags[0])
        cold, _ = selfhost.build_image(client, context, tag=extra_tags[1], nocache=True)
    size = client.images.get(selfhost.IMAGE).attrs["Size"]

    starts, mems, rss = [], [], []
    network = f"cortex-bench-net-{tag}"
    try:
        for i in range(args.runs):
            name, volume = f"cortex-bench-{tag}-{i}", f"cortex-bench-data-{tag}-{i}"
            try:
                console = selfhost.run_console(client, host, name=name, port=free_port(), volume=volume,
                                               network=network)
                t_run = console.wait_healthy(timeout=60)
                starts.append(t_run)
                if i == 0:
                    time.sleep(20)  # idle: the scheduler's jobs have all run a few times
                    stats = client.api.stats(name, stream=False)["memory_stats"]
                    cache = stats.get("stats", {}).get("inactive_file", stats.get("stats", {}).get("cache", 0))
                    mems.append(stats["usage"] - cache)
                    out = console.container.exec_run(["python3", "-c", RSS_SCRIPT]).output.decode().strip()
                    rss.append(int(out) * 1024)
            finally:
                selfhost.remove_everything(client, consoles=[name], volume=volume, network=network)
    finally:
        for t in extra_tags:
            try:
                client.images.remove(t, force=True)
            except docker.errors.ImageNotFound:
                pass

    print(f"console image ({selfhost.IMAGE}, BASE={selfhost.BASE})")
    print(f"  image size                         {mb(size)}")
    print(f"  build, cold (no layer cache)       {cold:.1f} s")
    print(f"  build, after a one-line code edit  {edited:.1f} s")
    print(f"  build, cached (nothing changed)    {cached:.1f} s   (this run's first build: {first:.1f} s)")
    print(f"  docker run -> /api/health 200      median {statistics.median(starts):.2f} s over {len(starts)} runs "
          f"(min {min(starts):.2f}, max {max(starts):.2f}; goal < 5 s)")
    print(f"  idle memory after 20 s             {mb(mems[0])} cgroup, {mb(rss[0])} summed RSS (goal < 250 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
