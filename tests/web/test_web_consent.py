"""ICE consent between Chromium and the media port (server/media/consent.py): the browser
answers the server's checks, and the port answers the browser's."""

from __future__ import annotations

from server.media.consent import ConsentChecker
from tests.web.browser import new_page
from tests.web.page_helpers import sessions_of, sign_in, until


async def test_the_browser_and_the_port_keep_each_others_consent(site, chromium):
    # Server checks every ~0.3 s; the port's socket opens with the first session, so it
    # takes this checker. Chromium keeps its own interval (a few seconds).
    site.hub.media_port.consent = ConsentChecker(interval=0.3, timeout=2.0, tick=0.05)
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")

    async def both_ways() -> bool:
        consent = site.hub.stats()["ice_consent"]
        return consent["answers"] >= 10 and consent["answered"] >= 2

    await until(both_ways, timeout=20, what="consent checks answered both ways")
    consent = site.hub.stats()["ice_consent"]
    assert consent["connections"] == 1
    assert consent["expired"] == 0 and consent["answers_refused"] == 0
    (session,) = sessions_of(site, "u1")
    assert session.peer.connection_state == "connected"
    await page.wait_for_selector('#connection[data-state="online"]')
