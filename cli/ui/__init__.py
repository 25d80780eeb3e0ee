"""``ugd ui``: a local browser page (Gradio) over the registry and :func:`cli.run.generate_to_dir`.

Nothing is fetched from the internet: analytics and update checks are off, the theme's fonts ship
with Gradio, and sharing (a public tunnel) is only on with ``--share``. See docs/ui.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ugd_core.errors import UgdError

OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no usage reports or version check to api.gradio.app
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SSR_MODE": "False",  # no Node server
}


def offline() -> None:
    """Turn off everything Gradio would fetch or report (before gradio is imported)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def build(registry: Any = None) -> Any:
    """The Gradio Blocks of the page (gradio imported here, so `ugd --help` stays fast)."""
    offline()
    try:
        from .app import build_app
    except ImportError as exc:
        raise UgdError(f"the browser UI needs gradio ({exc.name} is missing); install it: .venv/bin/pip install -e '.[ui]'") from None
    return build_app(registry)


def check_port(host: str, port: int) -> None:
    """A UgdError naming the fix when ``host:port`` cannot be bound (taken, or an address not on this machine),
    before the page is built or ``outputs/`` is made."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UgdError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pass another --port or --host") from None


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, *, block: bool = True, registry: Any = None,
          announce: Callable[[str], None] | None = None) -> Any:
    """Serve the page on ``host:port`` with Gradio's queue (one run at a time); returns the Blocks when not ``block``.
    ``announce`` gets the page's address once the port is known to be free, before the page is built."""
    check_port(host, port)
    if announce is not None:
        announce(f"http://{host}:{port}/")
    demo = build(registry)
    outputs = Path("outputs").resolve()
    outputs.mkdir(exist_ok=True)
    from .app import CSS

    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, inbrowser=False,
                    show_error=True, allowed_paths=[str(outputs)], footer_links=[], css=CSS, quiet=True, ssr_mode=False)
    except OSError as exc:
        raise UgdError(f"cannot serve on {host}:{port} ({exc}); pass another --port") from None
    return demo
