"""Which node of a site to connect to: the ordered candidate URLs and the one in use.

A site of several server nodes is one system to the console: the session is site-wide,
so when the node in use dies the console moves to another one and resumes there.
`NodeList` keeps the candidates in order of preference (the URLs the user configured
first, then the nodes the server listed in its `hello` response, docs/protocol.md), which
one is in use, and how many attempts in a row have failed, so that the session layer knows
when it has tried every node and must back off.

URLs are compared normalised (`normalize_url`): "HTTPS://Node-1:443/" and
"https://node-1" are one node.

Pure data: no I/O, no Qt. Call on the console's event loop only.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """A server's base URL in one spelling: scheme and host in lower case, the scheme's
    default port and any trailing "/" dropped. Raises ValueError for anything that is not
    an http(s) URL with a host."""
    text = url.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not a server address (http://HOST:PORT or https://HOST:PORT): {text!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in server address {text!r}") from exc
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def parse_url_list(text: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list ("https://a:8443, https://b:8443"), normalised,
    in order, without duplicates. Raises ValueError for a bad entry or an empty list."""
    urls = _unique(normalize_url(part) for part in text.split(",") if part.strip())
    if not urls:
        raise ValueError("no server address given")
    return tuple(urls)


def host_port(url: str) -> str:
    """"host:port" of a URL, for the status line (the default port is left out)."""
    return urlsplit(url).netloc or url


def _unique(urls: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for url in urls:
        if url not in seen:
            seen.append(url)
    return seen


class NodeList:
    """The candidate nodes of one site, the one in use and the current failure streak.

    `configured`: the user's URLs, in their order (at least one). The server's list
    (`learn`) comes after them; a later `hello` replaces what an earlier one taught, since
    the server lists the nodes alive now. The node in use is never dropped by `learn`.
    """

    def __init__(self, configured: Iterable[str]) -> None:
        self._configured = _unique(normalize_url(u) for u in configured)
        if not self._configured:
            raise ValueError("a site needs at least one server address")
        self._learned: list[str] = []
        self._current = self._configured[0]
        self._failures = 0  # attempts failed in a row since the last connection
        self._round: set[str] = set()  # nodes failed since the last round began

    # --- reading -------------------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """Every candidate, in order of preference."""
        return tuple(self._configured + [u for u in self._learned if u not in self._configured])

    @property
    def configured(self) -> tuple[str, ...]:
        return tuple(self._configured)

    @property
    def current(self) -> str:
        """The URL in use (or about to be tried)."""
        return self._current

    @property
    def position(self) -> int:
        """1-based place of `current` in `urls`."""
        return self.urls.index(self._current) + 1

    @property
    def failures(self) -> int:
        """Attempts failed in a row since the last connection."""
        return self._failures

    def __len__(self) -> int:
        return len(self.urls)

    # --- what happened -------------------------------------------------------------

    def connected(self) -> None:
        """The node in use answered hello: the failure streak ends."""
        self._failures = 0
        self._round.clear()

    def advance(self) -> bool:
        """The node in use failed (lost, or refused a connection): move to the next one.

        Returns True when this failure completes a round, i.e. every candidate has
        failed once more in a row: the caller then backs off before the next round.
        """
        self._failures += 1
        self._round.add(self._current)
        urls = self.urls
        self._current = urls[(urls.index(self._current) + 1) % len(urls)]
        if self._round.issuperset(urls):
            self._round.clear()
            return True
        return False

    def learn(self, nodes: Iterable[object]) -> bool:
        """Merge the server's list of live nodes (hello's `nodes`); True when the
        candidates changed. Entries that are not http(s) URLs are ignored."""
        learned: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                try:
                    learned.append(normalize_url(node))
                except ValueError:
                    continue
        if self._current not in self._configured and self._current not in learned:
            learned.insert(0, self._current)
        learned = _unique(learned)
        if learned == self._learned:
            return False
        before = self.urls
        self._learned = learned
        return self.urls != before


__all__ = ["NodeList", "host_port", "normalize_url", "parse_url_list"]
