"""RedisFailureLimiter against a real redis-server: failures counted across nodes, the
sliding window, success, the keys' own expiry, an outage, and two sites' logins."""

from __future__ import annotations

import time

import aiohttp
import pytest
import redis

from server.logins import LoginStoreUnavailable
from server.ratelimit_redis import RedisFailureLimiter, ThrottleUnavailable
from tests.server import harness


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make(redis_server):
    """Limiters on the test's Redis, each with a client of its own (a node each)."""
    made: list[RedisFailureLimiter] = []

    def limiter(max_failures: int, window_s: float, clock=time.time, scope: str = "user"):
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        made.append(RedisFailureLimiter(client, max_failures, window_s, scope=scope, clock=clock))
        return made[-1]

    yield limiter
    for limiter in made:
        limiter.close()


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_failures_on_two_nodes_add_up(make, clock):
    one, two = make(5, 60.0, clock), make(5, 60.0, clock)
    for node in (one, two, one, two):
        node.failed("bob")
        clock.now += 1
    assert one.retry_after("bob") == two.retry_after("bob") == 0
    two.failed("bob")  # the fifth
    assert one.retry_after("bob") == pytest.approx(56.0)  # first failure at +0, now +4
    assert two.retry_after("bob") == pytest.approx(56.0)
    assert one.retry_after("alice") == 0


def test_refusal_lifts_when_the_oldest_failure_leaves_the_window(make, clock):
    limiter = make(2, 10.0, clock)
    limiter.failed("k")
    clock.now += 4
    limiter.failed("k")
    clock.now += 5.9
    assert limiter.retry_after("k") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.retry_after("k") == 0
    limiter.failed("k")  # the second failure (at +4) still counts
    assert limiter.retry_after("k") == pytest.approx(4.0)


def test_success_clears_the_key_on_every_node(make, clock, raw):
    one, two = make(2, 60.0, clock), make(2, 60.0, clock)
    one.failed("k")
    two.failed("k")
    one.failed("other")
    assert two.retry_after("k") > 0
    assert len(one) == len(two) == 2
    two.succeeded("k")
    assert one.retry_after("k") == 0
    assert len(one) == 1
    assert raw.exists("vpdesk:login-failures:user:other")


def test_a_key_keeps_only_its_last_failures(make, clock, raw):
    limiter = make(3, 60.0, clock)
    for _ in range(50):
        limiter.failed("k")
        clock.now += 0.1
    assert raw.zcard("vpdesk:login-failures:user:k") == 3
    assert limiter.retry_after("k") == pytest.approx(60.0 - 0.3)  # the last three count


def test_scopes_are_apart(make, clock):
    users, addresses = make(1, 60.0, clock, scope="user"), make(1, 60.0, clock, scope="address")
    users.failed("127.0.0.1")
    assert users.retry_after("127.0.0.1") > 0
    assert addresses.retry_after("127.0.0.1") == 0
    assert len(addresses) == 0


def test_the_key_expires_a_window_after_the_last_failure(make, raw):
    limiter = make(1, 0.5)  # the real clock
    limiter.failed("k")
    assert limiter.retry_after("k") > 0
    assert 0 < raw.pttl("vpdesk:login-failures:user:k") <= 500
    deadline = time.monotonic() + 3.0
    while raw.exists("vpdesk:login-failures:user:k") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not raw.exists("vpdesk:login-failures:user:k")
    assert limiter.retry_after("k") == 0


@pytest.mark.parametrize("args", [(0, 10.0), (3, 0.0), (3, -1.0)])
def test_bad_settings_are_refused(make, args):
    with pytest.raises(ValueError):
        make(*args)


def test_an_outage_refuses_rather_than_letting_guesses_through(make, redis_server):
    # Deliberately not fail-open: see server.ratelimit_redis.
    limiter = make(2, 60.0)
    limiter.failed("k")
    limiter.failed("k")
    redis_server.stop()
    try:
        for call in (lambda: limiter.retry_after("k"), lambda: limiter.failed("k"),
                     lambda: limiter.succeeded("k")):
            with pytest.raises(ThrottleUnavailable):
                call()
        assert issubclass(ThrottleUnavailable, LoginStoreUnavailable)  # the routes' 503
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5.0
    while True:
        try:
            assert limiter.retry_after("k") == 0  # Redis kept nothing over its restart
            break
        except ThrottleUnavailable:
            assert time.monotonic() < deadline, "the limiter did not come back"
            time.sleep(0.1)


async def test_failed_logins_on_two_sites_add_up(tmp_path, redis_server):
    sites = []
    try:
        for name in ("a", "b"):
            sites.append(await harness.start_site(
                tmp_path / name, users=2, redis_url=redis_server.url,
                login_failures_per_user=5, login_failures_per_address=50,
            ))
        a, b = sites
        async with aiohttp.ClientSession() as http:
            async def attempt(site: harness.Site, password: str) -> int:
                body = {"username": "u1", "password": password}
                async with http.post(site.url + "/api/login", json=body) as resp:
                    return resp.status

            assert [await attempt(site, "wrong") for site in (a, b, a, b, a)] == [401] * 5
            # The sixth is refused on either site, even with the right password.
            assert await attempt(b, harness.PASSWORD) == 429
            assert await attempt(a, harness.PASSWORD) == 429
            # Another user is not affected.
            async with http.post(a.url + "/api/login",
                                 json={"username": "u0", "password": harness.PASSWORD}) as resp:
                assert resp.status == 200
    finally:
        for site in sites:
            await site.server.stop()
