"""The deployment files and the operations guide stay true to the server.

Every TOML file under deploy/ and every TOML block of docs/operations.md loads with the
server's own `load_config` (an unknown key is an error there); every `vpserver` command
line (the guide's code blocks, the systemd unit's ExecStart, the compose nodes' commands)
parses with the server's own argument parser, so an option the guide names but the
server lacks fails here; the systemd unit is well-formed (and passes `systemd-analyze
verify` where that exists); compose.yaml is YAML whose nodes, Redis and coturn are wired
to files that exist; and a real redis-server runs deploy/redis/vpdesk-redis.conf with AOF
on, `noeviction`, and an ACL user that can do a node's floor operations and the
provisioning commands' directory writes, and nothing outside the site's prefix.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import redis.exceptions

from server.cli import build_parser
from server.config import ServerConfig, load_config, parse_listen
from server.state.base import FloorLease
from server.state.redis_store import RedisLiveStore
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
GUIDE = ROOT / "docs" / "operations.md"
UNIT = DEPLOY / "systemd" / "vpserver@.service"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "compose" / "Dockerfile"
REDIS_CONF = DEPLOY / "redis" / "vpdesk-redis.conf"
# The instance the unit's %i stands for in these checks (node-1.toml is the example).
INSTANCE = "1"


# -- reading the files ------------------------------------------------------------------


def code_blocks(markdown: str) -> list[tuple[str, str, int]]:
    """(language, text, line number of the opening fence) of each fenced block."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL):
        line = markdown.count("\n", 0, match.start()) + 1
        blocks.append((match.group(1), match.group(2), line))
    return blocks


def vpserver_argvs(script: str) -> list[tuple[int, list[str]]]:
    """(line offset, argv after the program) of each `vpserver` command in a shell text
    (also under `sudo -u USER`), with backslash continuations joined and comments dropped."""
    found = []
    logical, start = "", 0
    for offset, line in enumerate(script.splitlines()):
        if not logical:
            start = offset
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        command = re.sub(r"^sudo\s+(-u\s+\S+\s+)?", "", logical.strip().removeprefix("$ "))
        program = command.split(maxsplit=1)[0] if command else ""
        if program == "vpserver" or program.endswith("/vpserver"):
            found.append((start, shlex.split(command, comments=True)[1:]))
        logical = ""
    return found


def unit_parser() -> configparser.ConfigParser:
    # strict=False: systemd allows a key more than once; no interpolation: %i is systemd's.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def unit_exec_start() -> list[str]:
    return shlex.split(unit_parser()["Service"]["ExecStart"].replace("%i", INSTANCE))


def compose_commands() -> list[tuple[str, list[str]]]:
    """(service, command) of every `command: [...]` in compose.yaml, read as JSON (the
    file writes them as flow sequences of double-quoted strings), without a YAML parser."""
    text = COMPOSE.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"^\s+command:\s*(?=\[)", text, re.MULTILINE):
        service = re.findall(r"^  ([\w.-]+):\s*$", text[: match.start()], re.MULTILINE)[-1]
        command, _ = decoder.raw_decode(text, match.end())
        found.append((service, command))
    return found


def load_yaml(path: Path):
    """The YAML document, parsed by PyYAML in this venv or else in the system's Python
    (Debian's python3-yaml); None when neither has it."""
    try:
        import yaml  # not a dependency of the project
    except ImportError:
        yaml = None
    if yaml is not None:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        return None
    result = subprocess.run(
        [system_python, "-c", "import json, sys, yaml; "
                              "print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    if result.returncode != 0:
        if "No module named 'yaml'" in result.stderr:
            return None
        pytest.fail(f"{path} is not valid YAML:\n{result.stderr}")
    return json.loads(result.stdout)


def redis_conf_directives() -> dict[str, list[list[str]]]:
    """Directive name (lower case) -> the argument lists of each line giving it."""
    directives: dict[str, list[list[str]]] = {}
    for line in REDIS_CONF.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            directives.setdefault(words[0].lower(), []).append(words[1:])
    return directives


def acl_user() -> tuple[str, str, str]:
    """(name, password, key prefix) of the nodes' ACL user in the Redis configuration."""
    [args] = redis_conf_directives()["user"]
    password = next(a[1:] for a in args if a.startswith(">"))
    pattern = next(a[1:] for a in args if a.startswith("~"))
    return args[0], password, pattern.removesuffix("*")


# -- every vpserver command line parses -------------------------------------------------


def _command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    guide = GUIDE.read_text(encoding="utf-8")
    for lang, text, line in code_blocks(guide):
        if lang in ("", "sh", "bash", "console"):
            for offset, argv in vpserver_argvs(text):
                lines.append((f"operations.md:{line + 1 + offset}", argv))
    lines.append(("vpserver@.service ExecStart", unit_exec_start()[1:]))
    for service, command in compose_commands():
        if command and command[0] == "vpserver":
            lines.append((f"compose.yaml {service}", command[1:]))
    return lines


COMMAND_LINES = _command_lines()


def parse_vpserver(argv: list[str], where: str):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        complaint = (stderr.getvalue().strip().splitlines() or ["(no message)"])[-1]
        pytest.fail(f"{where}: `vpserver {shlex.join(argv)}` does not parse: {complaint}")


@pytest.mark.parametrize("where,argv", COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_vpserver_command_line_parses(where, argv):
    args = parse_vpserver(argv, where)
    if args.command is None and args.listen is not None:
        parse_listen(args.listen)  # raises ConfigError for a bad HOST:PORT


def test_the_command_lines_were_found():
    """Guards the extraction: a change of layout must not make the test above vacuous."""
    sources = [where.split(":")[0].split(" ")[0] for where, _ in COMMAND_LINES]
    assert sources.count("operations.md") >= 5
    assert sources.count("vpserver@.service") == 1
    assert sources.count("compose.yaml") == 2


# -- every TOML file and block loads ----------------------------------------------------

DEPLOY_TOML = sorted(DEPLOY.rglob("*.toml"))
GUIDE_TOML = [(line, text) for lang, text, line in code_blocks(GUIDE.read_text(encoding="utf-8"))
              if lang == "toml"]


@pytest.mark.parametrize("path", DEPLOY_TOML, ids=[str(p.relative_to(DEPLOY)) for p in DEPLOY_TOML])
def test_deploy_toml_loads(path):
    config = load_config(path)
    assert isinstance(config, ServerConfig)


@pytest.mark.parametrize("line,text", GUIDE_TOML,
                         ids=[f"operations.md:{line}" for line, _ in GUIDE_TOML])
def test_guide_toml_block_loads(line, text, tmp_path):
    path = tmp_path / f"operations-{line}.toml"
    path.write_text(text, encoding="utf-8")
    load_config(path)


def test_the_toml_files_were_found():
    names = {str(p.relative_to(DEPLOY)) for p in DEPLOY_TOML}
    assert {"systemd/node-1.toml", "compose/site.toml"} <= names
    assert len(GUIDE_TOML) >= 1


def test_toml_redis_settings_match_the_acl_user():
    """The example configs log in as the Redis configuration's ACL user, under its prefix."""
    user, password, prefix = acl_user()
    for path in DEPLOY_TOML:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        if "redis_url" not in raw:
            continue
        url = urlsplit(raw["redis_url"])
        assert (url.username, url.password) == (user, password), path
        assert raw.get("redis_prefix", ServerConfig.redis_prefix) == prefix, path


# -- the systemd unit -------------------------------------------------------------------


def test_unit_sections_and_service_settings():
    unit = unit_parser()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert unit_exec_start()[0] == "/opt/vpdesk/.venv/bin/vpserver"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "vpdesk"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    # What would break ICE or the relay: no network of its own, and the socket families
    # aioice needs (AF_NETLINK lists the interfaces' addresses).
    assert service.get("PrivateNetwork", "no") == "no"
    assert {"AF_INET", "AF_INET6", "AF_NETLINK"} <= set(service["RestrictAddressFamilies"].split())
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_reads_the_example_config_and_writes_its_data_dir():
    argv = unit_exec_start()
    config_path = Path(argv[argv.index("--config") + 1])
    example = DEPLOY / "systemd" / config_path.name
    assert example.is_file(), f"the unit reads {config_path}; deploy/systemd has no {config_path.name}"
    service = unit_parser()["Service"]
    data_dir = Path("/var/lib") / service["StateDirectory"].replace("%i", INSTANCE)
    assert load_config(example).data_dir == data_dir
    assert str(data_dir) in service["ReadWritePaths"].replace("%i", INSTANCE).split()


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify also checks that ExecStart's program exists: point it at this checkout's.
    vpserver = ROOT / ".venv" / "bin" / "vpserver"
    assert vpserver.exists(), "the checkout's venv has no vpserver script"
    text = UNIT.read_text(encoding="utf-8").replace("/opt/vpdesk/.venv/bin/vpserver", str(vpserver))
    (tmp_path / UNIT.name).write_text(text, encoding="utf-8")
    result = subprocess.run([analyze, "verify", f"./vpserver@{INSTANCE}.service"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values too, and only warns: read the warnings.
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if "vpserver@" in line]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


# -- compose and the image --------------------------------------------------------------


def test_compose_is_yaml_wired_to_existing_files():
    compose = load_yaml(COMPOSE)
    if compose is None:
        pytest.skip("no YAML parser: PyYAML is in neither this venv nor /usr/bin/python3 "
                    "(apt install python3-yaml); the command lines are still checked")
    services = compose["services"]
    assert set(services) == {"redis", "node-1", "node-2", "coturn"}
    assert all(s["network_mode"] == "host" for s in services.values())
    # The JSON reading the command-line test relies on saw exactly what YAML sees.
    with_command = [(name, s["command"]) for name, s in services.items() if "command" in s]
    assert compose_commands() == with_command

    def mounts(service: dict) -> dict[str, str]:
        """container path -> host source of the service's volumes"""
        return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}

    base = COMPOSE.parent
    redis_service = services["redis"]
    assert (base / mounts(redis_service)[redis_service["command"][1]]).resolve() == REDIS_CONF
    public_urls = set()
    for name in ("node-1", "node-2"):
        node = services[name]
        assert (base / node["build"]["context"] / node["build"]["dockerfile"]).resolve() == DOCKERFILE
        args = parse_vpserver(node["command"][1:], f"compose.yaml {name}")
        config_source = base / mounts(node)[str(args.config)]
        load_config(config_source)
        assert mounts(node)[str(args.data)] in compose["volumes"], f"{name}: data folder not a volume"
        secret = args.turn_secret_file
        assert secret.parent == Path("/run/secrets") and secret.name in node["secrets"]
        assert (base / compose["secrets"][secret.name]["file"]).parent == base
        public_urls.add(getattr(args, "public_url", None))
    assert len(public_urls) == 2, "each node needs its own public URL"


def test_dockerfile_installs_the_pinned_aiortc():
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    for source in re.findall(r"^COPY (.+?) \S+$", dockerfile, re.MULTILINE):
        for name in source.split():
            assert (ROOT / name).exists(), f"the Dockerfile copies {name}, which is not in the checkout"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    dependencies = pyproject["project"]["dependencies"]
    pins = dict(d.split("==") for d in dependencies if "==" in d)
    assert f"('{pins['aiortc']}', '{pins['aioice']}')" in dockerfile, \
        "the Dockerfile's version check must name pyproject.toml's pins"
    # setup.py builds the C fan-out; without it the image would forward with Python.
    copied = {name for source in re.findall(r"^COPY (.+?) \S+$", dockerfile, re.MULTILINE) for name in source.split()}
    assert "setup.py" in copied
    assert "assert c_fanout_built()" in dockerfile


# -- Redis ------------------------------------------------------------------------------


def test_redis_conf_says_what_the_guide_promises():
    directives = redis_conf_directives()
    assert directives["appendonly"] == [["yes"]]
    assert directives["appendfsync"] == [["everysec"]]
    assert directives["maxmemory-policy"] == [["noeviction"]]
    assert directives["requirepass"] and directives["requirepass"][0]
    for addresses in directives["bind"]:
        everywhere = {"0.0.0.0", "*", "::", "-::*", "-*"}
        assert not everywhere & set(addresses), "Redis only on private addresses"
    user, _, prefix = acl_user()
    assert user and prefix


@pytest.fixture
def configured_redis(tmp_path):
    """A real redis-server running deploy/redis/vpdesk-redis.conf (which it refuses to
    start with if any line is wrong), on a free loopback port, its files in tmp_path."""
    executable = shutil.which("redis-server")
    assert executable, "redis-server not found (scripts/setup.sh --test installs it)"
    port = free_port()
    process = subprocess.Popen(
        [executable, str(REDIS_CONF), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--daemonize", "no", "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    admin = redis.Redis(port=port, password=redis_conf_directives()["requirepass"][0][0],
                        decode_responses=True, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (tmp_path / "redis.log").read_text()
            try:
                admin.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        yield port, admin, tmp_path
    finally:
        admin.close()
        process.terminate()
        process.wait(timeout=10)


async def test_redis_conf_runs_with_aof_noeviction_and_a_limited_user(configured_redis):
    port, admin, data_dir = configured_redis
    assert admin.config_get("appendonly") == {"appendonly": "yes"}
    assert admin.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}

    user, password, prefix = acl_user()
    url = f"redis://{user}:{password}@127.0.0.1:{port}/0"
    store = RedisLiveStore.from_url(url, prefix=prefix)
    try:
        lease = FloorLease(channel_id=7, token="t1", session_id="s1", user_id=1, name="alice",
                           priority="normal", since=time.time())
        assert await store.floor_acquire(lease, 3000) is None
        assert await store.floor_renew(7, "t1", 3000)
        assert (await store.floor_get(7)).name == "alice"
        assert await store.floor_release(7, "t1")
    finally:
        await store.close()
    assert (data_dir / "appendonlydir").is_dir() or (data_dir / "appendonly.aof").exists()

    # The provisioning commands on the site's directory in Redis, as this user: a user
    # added through one data folder is listed through another.
    def vpserver(data: str, *argv: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "server", "--redis", url, "--data", str(data_dir / data), *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    vpserver("a", "user", "add", "alice", "--role", "general", "--password", "pick-one-123")
    assert "alice" in vpserver("b", "user", "list")
    assert admin.acl_log() == [], "the nodes' user was refused something it needs"

    node = redis.Redis.from_url(url, socket_timeout=2)
    try:
        node.publish(f"{prefix}directory:changed", "1")  # pub/sub under the prefix
        with pytest.raises(redis.exceptions.NoPermissionError):
            node.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            node.set("another-site:floor:7", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            node.publish("another-site:directory:changed", "1")
    finally:
        node.close()
