"""Fixed bodies the collector answers with: the 1×1 GIF and small HTML pages."""

from __future__ import annotations

import html

#: The smallest transparent 1×1 GIF (43 bytes).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;
padding:0 1rem;color:#222}}
button{{font:inherit;padding:.5rem 1rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body_html: str) -> str:
    return _PAGE.format(title=html.escape(title), body=body_html)


BAD_LINK = page(
    "This link is not valid",
    "<p>The link you followed is incomplete, altered or has expired. "
    "Please use the latest email you received, or visit the website directly.</p>",
)

UNSUBSCRIBED = page(
    "You are unsubscribed",
    "<p>You will not receive marketing emails from us any more. "
    "It may take a moment for every system to catch up.</p>",
)


def confirm_unsubscribe(action: str) -> str:
    """Shown to automated GETs (mail scanners): a human confirms with one click."""
    return page(
        "Unsubscribe",
        f'<form method="post" action="{html.escape(action, quote=True)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<p>Stop receiving marketing emails from us?</p>"
        '<button type="submit">Unsubscribe</button></form>',
    )
