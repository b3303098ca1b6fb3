"""Image references, a pull's progress from the engine's own messages, and pull errors."""

import pytest

from cortex_app.images import (DONE, FAILED, PullError, PullProgress, canonical, explain_pull_error, is_present,
                               registry_of, split_reference)


@pytest.mark.parametrize("ref, want", [
    ("ghcr.io/ggml-org/llama.cpp:server", ("ghcr.io/ggml-org/llama.cpp", "server")),
    ("vllm/vllm-openai", ("vllm/vllm-openai", "latest")),
    ("127.0.0.1:5000/x/y", ("127.0.0.1:5000/x/y", "latest")),
    ("127.0.0.1:5000/x/y:1.2", ("127.0.0.1:5000/x/y", "1.2")),
    ("busybox@sha256:abc", ("busybox", "sha256:abc")),
    (" busybox ", ("busybox", "latest")),
])
def test_split_reference(ref, want):
    assert split_reference(ref) == want


def test_presence_knows_the_implicit_latest():
    tags = {"vllm/vllm-openai:latest", "127.0.0.1:5000/x/y:1.2"}
    assert is_present("vllm/vllm-openai", tags) and is_present("vllm/vllm-openai:latest", tags)
    assert is_present("127.0.0.1:5000/x/y:1.2", tags)
    assert not is_present("127.0.0.1:5000/x/y", tags)  # :latest is another tag
    assert canonical("busybox") == "busybox:latest" and canonical("b@sha256:1") == "b@sha256:1"
    # Docker Hub's own prefixes are not in the engine's list; digests are (image_tags lists them).
    assert canonical("docker.io/library/busybox:1") == "busybox:1"
    assert canonical("docker.io/vllm/vllm-openai") == "vllm/vllm-openai:latest"
    assert is_present("docker.io/vllm/vllm-openai:latest", tags)
    assert is_present("repo@sha256:abc", {"repo@sha256:abc"})


@pytest.mark.parametrize("ref, registry", [
    ("ghcr.io/a/b:1", "ghcr.io"), ("127.0.0.1:5000/a", "127.0.0.1:5000"), ("localhost/a", "localhost"),
    ("vllm/vllm-openai", "docker.io"), ("busybox", "docker.io"),
])
def test_registry_of(ref, registry):
    assert registry_of(ref) == registry


def _msgs():
    # What Docker Engine 20.10 sends for a pull whose base layer is already there (recorded).
    return [
        {"status": "Pulling from cortex-test/pull-me", "id": "b68dc255"},
        {"status": "Already exists", "progressDetail": {}, "id": "33f97e08571a"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "1ce68aa2a31e"},
        {"status": "Downloading", "progressDetail": {"current": 6_000_000, "total": 24_000_000},
         "id": "1ce68aa2a31e"},
    ]


def test_progress_counts_bytes_of_layers_with_a_known_size():
    p = PullProgress(image="127.0.0.1:5000/cortex-test/pull-me:b68dc255")
    for m in _msgs():
        p.apply(m)
    # A quarter downloaded of the one layer to fetch (the one the engine had weighs nothing);
    # the download is 90 % of a layer's bar, its extraction the rest.
    assert p.fraction == pytest.approx(0.225)
    assert p.view()["percent"] == 22 and p.view()["active"]
    assert p.describe() == "6 MB of 24 MB, 1 of 2 layers done"
    p.apply({"status": "Download complete", "progressDetail": {}, "id": "1ce68aa2a31e"})
    assert p.fraction == pytest.approx(0.9)
    p.apply({"status": "Extracting", "progressDetail": {"current": 12_000_000, "total": 24_000_000},
             "id": "1ce68aa2a31e"})
    assert p.fraction == pytest.approx(0.95)
    p.apply({"status": "Pull complete", "progressDetail": {}, "id": "1ce68aa2a31e"})
    assert p.fraction == 1.0
    p.apply({"status": "Digest: sha256:0"})
    p.apply({"status": "Status: Downloaded newer image for x"})
    assert p.describe() == "24 MB of 24 MB, 2 of 2 layers done"
    p.state, p.finished_at = DONE, p.started_at + 3.25
    assert p.describe() == "pulled in 3.2 s (24 MB)"


def test_a_layer_that_waits_weighs_as_an_average_one_and_the_bar_never_goes_back():
    p = PullProgress(image="a")
    for layer in ("l1", "l2"):
        p.apply({"status": "Pulling fs layer", "progressDetail": {}, "id": layer})
    p.apply({"status": "Downloading", "progressDetail": {"current": 10, "total": 10}, "id": "l1"})
    assert p.fraction == pytest.approx(0.45)  # l1 downloaded (90 % of its part), l2 waits at its size guess
    p.apply({"status": "Downloading", "progressDetail": {"current": 1, "total": 1000}, "id": "l2"})
    assert p.fraction == pytest.approx(0.45)  # l2 turned out big: the figure would drop; the bar holds
    assert p.view()["percent"] == 45


def test_progress_before_any_layer_says_what_the_engine_does():
    p = PullProgress(image="a")
    assert p.fraction == 0 and p.describe() == "asking the registry"
    p.apply({"status": "Pulling from library/a", "id": "latest"})
    assert p.layers == {} and p.describe() == "Pulling from library/a"


def test_an_error_message_ends_the_pull_with_the_reason():
    p = PullProgress(image="127.0.0.1:5000/a:1")
    with pytest.raises(PullError, match="disk is full"):
        p.apply({"errorDetail": {"message": "write /var/lib/docker/x: no space left on device"},
                 "error": "write /var/lib/docker/x: no space left on device"})
    assert p.state != FAILED  # the runner decides the end state, once


@pytest.mark.parametrize("raw, says", [
    ("Head \"http://127.0.0.1:5000/v2/a/manifests/1\": no basic auth credentials", "wants credentials"),
    ("unauthorized: authentication required", "docker login 127.0.0.1:5000"),
    ("manifest for 127.0.0.1:5000/a:1 not found: manifest unknown: manifest unknown", "is not in the registry"),
    ("Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused", "cannot be reached"),
    ("no space left on device", "disk is full"),
    ("something else entirely", "pull of 127.0.0.1:5000/a:1 failed"),
])
def test_pull_errors_say_what_to_do(raw, says):
    text = explain_pull_error("127.0.0.1:5000/a:1", raw)
    assert says in text and raw[:40] in text
