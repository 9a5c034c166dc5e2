"""`cnn-vis studio` (`python cnn_vis.py --studio`): a local web app for dreaming in a browser,
built on Gradio (`pip install 'cnn-vis[studio]'`). This module checks where it may listen,
keeps Gradio off the network (no analytics, no version checks, no share links), gives it a
temporary folder of its own and serves the page of `cnnvis.studio_page` until Ctrl-C or
SIGTERM (exit status 130 or 143, as for any command), its folder removed first.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cnnvis.errors import UserError
from cnnvis.settings import GROUPS, default, option_names
from cnnvis.studio_runs import Studio

STUDIO_OPTIONS = tuple(option_names(group=GROUPS[13]))
# What Gradio and the Hugging Face hub would otherwise fetch or send at start and on use.
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_MCP_SERVER": "False"}


def check_studio_options(options: dict[str, object]) -> None:
    """Refuse the studio's options given without --studio: they would do nothing."""
    for name in STUDIO_OPTIONS:
        if name != "studio" and name in options and not options.get("studio"):
            raise UserError(f"--{name} is an option of the studio; add --studio (or run "
                            f"cnn-vis studio), or drop --{name}.")


def credentials(listen: str, auth: str | None, no_auth: bool) -> tuple[str, str] | None:
    """The (user, password) the studio asks for; a UserError where it would listen beyond
    this machine without them (unless `no_auth`)."""
    if auth is not None:
        user, colon, password = auth.partition(":")
        if not (user and colon and password):
            raise UserError(f"--auth takes USER:PASSWORD, a name and a password joined by ':', "
                            f"not '{auth}'.")
        return user, password
    if _loopback(listen):
        return None
    if not no_auth:
        raise UserError(f"--listen {listen} lets anyone who can reach this machine use the "
                        "studio; give --auth USER:PASSWORD, or --no_auth to allow it anyway.")
    print(f"cnn-vis studio: warning: listening on {listen} without --auth: anyone who can "
          "reach this machine can use the studio.", file=sys.stderr)
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(options: dict[str, object]) -> int:
    """Serve the studio until Ctrl-C or SIGTERM (raised here as KeyboardInterrupt, and
    `console.Terminated`); its temporary folder goes with it."""
    listen = options.get("listen", default("listen"))
    port = options.get("port", default("port"))
    auth = credentials(listen, options.get("auth"), options.get("no_auth", False))
    root = Path(tempfile.mkdtemp(prefix="cnn-vis-studio-"))
    try:
        studio = Studio(root, *(options.get(name, default(name)) for name in (
            "max_upload_mb", "max_upload_megapixels", "max_upload_seconds", "gpu")))
        # Before Gradio is imported: it reads its cache folder once, at import.
        os.environ.update({**OFFLINE, "GRADIO_TEMP_DIR": str(studio.uploads)})
        try:
            from cnnvis import studio_page
        except ImportError as error:
            raise UserError(f"the studio needs Gradio ({error}); install it with "
                            "pip install 'cnn-vis[studio]'.") from None
        app = studio_page.build(studio)
        app.queue(default_concurrency_limit=1)
        app.launch(server_name=listen, server_port=port, auth=auth, share=False, quiet=True,
                   prevent_thread_lock=True, show_error=True, allowed_paths=[],
                   max_file_size=studio.max_bytes, ssr_mode=False, mcp_server=False,
                   enable_monitoring=False, footer_links=["api"])
        print(f"cnn-vis studio: open http://{listen}:{port} in a browser (Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        try:   # until Ctrl-C or SIGTERM, which the command line turns into its exit status
            while app.is_running:
                time.sleep(0.1)
        finally:
            app.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
