"""What the page says when it cannot have the microphone: permission refused, no
microphone at all, a page not opened over a secure origin. Listening goes on; a press
explains itself with the busy tone and asks the server for nothing."""

from __future__ import annotations

from tests.web.browser import Microphone, insecure_origin, new_page
from tests.web.page_helpers import press_ptt, release_ptt, sign_in, tones_played


async def _press_is_refused_locally(site, page) -> None:
    await press_ptt(page)
    await release_ptt(page)
    await page.wait_for_function("() => window.vpdeskDebug.tonesPlayed().includes('busy')")
    assert await tones_played(page) == ["busy"]
    assert site.hub.floor.current(site.channels["alpha"]) is None, "a press without a microphone took the floor"


async def test_a_refused_permission_says_how_to_allow_it(site, launch):
    browser = await launch(Microphone.DENIED)
    page = await new_page(browser)
    await sign_in(page, site.url, "u1")  # listening works without a microphone
    await page.wait_for_selector("#notice:not([hidden])")
    text = await page.text_content("#notice-text")
    assert "blocked" in text and "site settings" in text
    assert await page.is_visible("#notice-retry")
    await _press_is_refused_locally(site, page)
    assert "blocked" in await page.text_content("#message")


async def test_no_microphone_says_so_and_retry_tries_again(site, launch):
    browser = await launch(Microphone.ABSENT)
    page = await new_page(browser)
    await sign_in(page, site.url, "u1")
    await page.wait_for_selector("#notice:not([hidden])")
    assert "No microphone was found" in await page.text_content("#notice-text")
    await _press_is_refused_locally(site, page)

    await page.click("#notice-retry")  # still none: the same message comes back
    await page.wait_for_function(
        "() => window.vpdeskDebug.app.micProblem && window.vpdeskDebug.app.micProblem.kind === 'absent'"
    )
    assert await page.is_visible("#notice")


async def test_an_insecure_origin_is_explained_instead_of_failing_silently(site, chromium):
    page = await new_page(chromium)
    await sign_in(page, insecure_origin(site.url), "u1")
    assert await page.evaluate("() => window.isSecureContext") is False
    await page.wait_for_selector("#notice:not([hidden])")
    text = await page.text_content("#notice-text")
    assert "secure connection" in text and "https://" in text
    assert await page.is_hidden("#notice-retry"), "retrying cannot help on an insecure origin"
    await _press_is_refused_locally(site, page)
