"""Nothing is downloaded at run time (README): a Hub id that is not in the local cache ends in one line naming the
command that fetches it, at once, without a network request, even where the environment is not marked offline
(the suite itself runs with HF_HUB_OFFLINE=1, which would hide a loader that asks the network)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import socket, sys, traceback
    calls = []
    def refuse(*args, **kwargs):
        # huggingface_hub fetches its agent registry when it builds a request's headers, even for a cache-only
        # load (one GET, short timeout, errors swallowed; huggingface_hub/utils/_detect_agent.py): not a download
        if not any(f.filename.endswith("_detect_agent.py") for f in traceback.extract_stack()):
            calls.append(args[:1])
        raise OSError("network refused by the test")
    socket.getaddrinfo = refuse
    socket.socket.connect = refuse
    from ugd_core.errors import UgdError
    from ugd_core.registry import get_registry
    reg = get_registry()
    cases = [("backbone", "diffusers-pixel", {"model": "ugd-tests/no-such-unet"}),
             ("backbone", "stable-diffusion", {"model": "ugd-tests/no-such-sd"}),
             ("backbone", "stable-diffusion-3", {"model": "ugd-tests/no-such-sd3"}),
             ("guide", "clip", {"prompt": "a cat", "model": "ugd-tests/no-such-clip"})]
    for kind, name, params in cases:
        try:
            reg.build(kind, name, params, device="cpu")
        except UgdError as exc:
            print(name, "|", exc)
        else:
            print(name, "| loaded")
    print("network calls:", len(calls))  # besides the agent registry
""")


def test_a_hub_id_missing_from_the_cache_asks_no_network():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[-1] == "network calls: 0", out.stdout
    for line in lines[:-1]:
        name, message = line.split(" | ")
        assert "not found" in message and "hf download ugd-tests/no-such-" in message and "model=" in message, line
    assert len(lines) == 5
