"""A small Sphinx extension that keeps the rendered book free of CDN addresses.

Jupyter Book always loads ``sphinx_thebe``, which writes the address of its JavaScript bundle
on unpkg.com into every page, although this book never launches Thebe (``launch_buttons.thebe``
is off) and so never fetches it. The book must read offline with no CDN address in its HTML, so
this extension blanks that address in the inline configuration script (and drops the
duplicate copy of that script). MathJax itself is served
locally by ``sphinx-mathjax-offline``.
"""

from __future__ import annotations

import re
from typing import Any

_REMOTE = re.compile(r"https?://(?:unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com)[^\"']*")


def _blank_remote_addresses(app: Any, pagename: str, templatename: str, context: dict,
                            doctree: Any) -> None:
    """Blank CDN addresses in inline scripts and drop repeated inline scripts.

    sphinx_thebe adds its ``const THEBE_JS_URL = ...`` script twice in Jupyter Book 1.0.4;
    the second copy throws "Identifier has already been declared" in the browser console.
    """
    seen_bodies: set[str] = set()
    kept = []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", None)
        body = attributes.get("body") if isinstance(attributes, dict) else None
        if body:
            if _REMOTE.search(body):
                attributes["body"] = body = _REMOTE.sub("", body)
            if body in seen_bodies:
                continue
            seen_bodies.add(body)
        kept.append(script)
    if "script_files" in context:
        context["script_files"][:] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _blank_remote_addresses, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
