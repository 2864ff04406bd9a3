"""The field users' page over HTTPS/WSS with the site's self-signed certificate.

A phone on the LAN opens https://<the dispatcher PC's address>:8443/, accepts the
certificate once, and then has a secure context: the microphone may be used. Here the
"phone" is Chromium told to accept the certificate (`--ignore-certificate-errors`, as the
user's click-through would) on a name that is not loopback (tests.web.browser's
INSECURE_HOST, mapped to 127.0.0.1), so loopback's own exemption plays no part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.harness import Site, start_site
from tests.web.browser import Microphone, insecure_origin, new_page
from tests.web.page_helpers import press_ptt, release_ptt, sign_in, until

ACCEPT_CERTIFICATE = "--ignore-certificate-errors"


@pytest.fixture
async def tls_site(tmp_path: Path) -> AsyncIterator[Site]:
    running = await start_site(tmp_path / "site", users=3, tls_self_signed=True)
    try:
        yield running
    finally:
        await running.server.stop()


async def test_the_page_over_https_is_a_secure_context_and_may_talk(tls_site, launch):
    assert tls_site.url.startswith("https://127.0.0.1:")
    browser = await launch(Microphone.FAKE, extra=[ACCEPT_CERTIFICATE])
    page = await new_page(browser)
    lan_like = insecure_origin(tls_site.url)  # https on a name that is not loopback
    await sign_in(page, lan_like, "u1")  # the page's WebSocket is wss:// on this origin
    assert page.url.startswith("https://")
    assert await page.evaluate("() => window.isSecureContext") is True
    assert await page.evaluate("() => typeof navigator.mediaDevices?.getUserMedia") == "function"

    alpha = tls_site.channels["alpha"]
    await press_ptt(page)
    await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
    lease = tls_site.hub.floor.current(alpha)
    assert lease is not None and lease.name == "u1"
    await release_ptt(page)

    async def released() -> bool:
        return tls_site.hub.floor.current(alpha) is None

    await until(released, what="the page to release the floor")
    # (The same name over plain http is no secure context: tests/web/test_web_microphone.py.)

