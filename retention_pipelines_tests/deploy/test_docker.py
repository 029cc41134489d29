"""The container deployment (``docker/``), checked without a Docker engine.

The Dockerfile passes hadolint and copies only what the build context holds; the image
installs the platform's dependencies and neither the dev nor the bench group; the compose file
follows the Compose specification; every command a service runs (and every health check) is a
command and options of the installed CLIs; the services are wired to each other consistently
(the same databases, volumes and ports on both ends, health-gated dependencies, no literal
secret); and the Postgres init script, run on a real server, creates the databases and logins
the services' URLs name, with the access each service needs and no more.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import psycopg
import pytest
import yaml
from compose_spec import PyCompose

from retention_pipelines.core import database

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
INIT_SCRIPT = DOCKER / "postgres" / "init-databases.sh"
BIN = Path(sys.executable).parent

# `${NAME}`, `${NAME:-default}`, `${NAME:?message}`: a value Compose takes from docker/.env.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?P<rest>(:?[-?])[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$")
# What a Postgres login is called in the postgres service's environment, per database.
INIT_ROLES = {"warehouse": "WAREHOUSE", "dagster": "DAGSTER", "mlflow": "MLFLOW"}


# --- reading the files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _words(arguments: str) -> list[str]:
    """An instruction's arguments, in JSON (exec) form or shell form."""
    if arguments.startswith("["):
        return list(json.loads(arguments))
    return shlex.split(arguments)


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


def dockerfile_copies() -> list[Copy]:
    copies = []
    for instruction in dockerfile_instructions():
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = _words(instruction.arguments)
        flags = [word for word in words if word.startswith("--")]
        paths = [word for word in words if not word.startswith("--")]
        from_stage = next(
            (flag.split("=", 1)[1] for flag in flags if flag.startswith("--from=")), None
        )
        copies.append(Copy(paths[:-1], paths[-1], from_stage))
    return copies


def build_context_sources() -> list[str]:
    """Every path the build reads from its context: COPY/ADD sources without ``--from`` and
    the sources of ``RUN --mount=type=bind`` mounts of the context."""
    sources = [
        source for copy in dockerfile_copies() if copy.from_stage is None for source in copy.sources
    ]
    for instruction in dockerfile_instructions():
        if instruction.keyword != "RUN":
            continue
        for mount in re.findall(r"--mount=(\S+)", instruction.arguments):
            options = dict(option.split("=", 1) for option in mount.split(",") if "=" in option)
            if options.get("type") == "bind" and "from" not in options:
                sources.append(options.get("source", "."))
    return sources


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV (the last stage's, where the platform runs)."""
    env: dict[str, str] = {}
    for instruction in dockerfile_instructions():
        if instruction.keyword == "FROM":
            env = {}
        elif instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def image_command(keyword: str) -> list[str]:
    """The runtime stage's CMD, or its HEALTHCHECK's command (after its options)."""
    (instruction,) = [i for i in dockerfile_instructions() if i.keyword == keyword]
    arguments = instruction.arguments
    if keyword == "HEALTHCHECK":
        arguments = arguments.split(" CMD ", 1)[1]
    return _words(arguments)


def uv_sync_commands() -> list[list[str]]:
    commands = []
    for instruction in dockerfile_instructions():
        if instruction.keyword == "RUN" and "uv sync" in instruction.arguments:
            words = shlex.split(instruction.arguments)
            start = words.index("uv")
            commands.append(words[start:])
    return commands


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """``.dockerignore`` as (excludes, pattern) pairs, with Docker's matching: anchored at
    the context's root, ``*`` within a path segment, ``**`` across segments."""
    patterns = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").lstrip("/")))
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        patterns.append((not negated, re.compile(f"^{regex}$")))
    return patterns


def ignored_by_docker(path: str) -> bool:
    """Whether the build context leaves ``path`` out (it or a folder above it matches)."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for excludes, pattern in dockerignore_patterns():
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose reads it: YAML merge keys (``<<``) resolved."""
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def example_environment() -> dict[str, str]:
    """docker/.env.example with every secret filled in, as a person would."""
    return {name: value or secrets.token_hex(8) for name, value in env_example().items()}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every value (``${NAME}``, ``${NAME:-default}``,
    ``${NAME:?message}``, ``$$`` for a dollar), which Compose applies before validating."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, rest = match["name"], match["rest"] or ""
        found = env.get(name, "")
        if rest.startswith((":?", "?")) and not found:
            raise AssertionError(f"{name} is required: {rest.lstrip(':?')}")
        if rest.startswith(":-"):
            return found or rest[2:]
        return found

    return "$".join(INTERPOLATION.sub(substitute, part) for part in value.split("$$"))


@pytest.fixture(scope="module")
def rendered(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file with docker/.env.example's variables, secrets filled in."""
    return interpolate(compose, example_environment())


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def platform_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (built from docker/Dockerfile)."""
    return {name: service for name, service in services(compose).items() if "build" in service}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(name): str(value) for name, value in env.items()}


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", f"a health check in exec form, not {test[0]}"
    return list(test[1:])


def url_parts(value: str) -> SplitResult:
    """``value`` as a URL, each ``${NAME...}`` in it shortened to ``${NAME}`` (a message
    after ``:?`` may hold characters that end a URL's parts)."""
    return urlsplit(INTERPOLATION.sub(lambda match: "${" + match["name"] + "}", value))


def interpolated(value: str) -> str | None:
    """The variable a value is taken from whole (``${NAME...}``), or None."""
    match = INTERPOLATION.fullmatch(value)
    return match["name"] if match else None


def env_example() -> dict[str, str]:
    values = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


# --- the Dockerfile ---------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    completed = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_path_the_build_reads_is_in_the_build_context() -> None:
    sources = build_context_sources()
    assert {"uv.lock", "pyproject.toml", "retention_pipelines", "dbt_project"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), (
            f"the Dockerfile reads {source}, which is not in the repository"
        )
        assert not ignored_by_docker(source), (
            f"the Dockerfile reads {source}, which .dockerignore leaves out"
        )


def test_the_build_context_leaves_local_state_secrets_and_caches_out() -> None:
    for path in [
        ".git/config",
        ".venv/bin/python",
        ".retention/pgdata/PG_VERSION",
        ".tools/bin/uv",
        ".env",
        "docker/.env",
        ".hypothesis/examples/x",
        ".pytest_cache/v/cache",
        "retention_pipelines/__pycache__/cli.cpython-311.pyc",
        "dbt_project/target/manifest.json",
        "dbt_project/logs/dbt.log",
        "retention_pipelines_tests/conftest.py",
    ]:
        assert ignored_by_docker(path), f"{path} would be sent to the Docker build"
    for path in [
        "retention_pipelines/cli.py",
        "dbt_project/models",
        "docker/dagster.yaml",
        "uv.lock",
    ]:
        assert not ignored_by_docker(path), f"{path} is needed by the build"


def test_the_image_runs_as_an_unprivileged_user_and_checks_its_health() -> None:
    instructions = dockerfile_instructions()
    stages = [instruction for instruction in instructions if instruction.keyword == "FROM"]
    runtime = instructions[instructions.index(stages[-1]) :]
    users = [instruction.arguments for instruction in runtime if instruction.keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    healthcheck = [instruction for instruction in runtime if instruction.keyword == "HEALTHCHECK"]
    command = next(instruction for instruction in runtime if instruction.keyword == "CMD")
    assert healthcheck, "the image's default role has a HEALTHCHECK"
    assert "grpc-health-check" in healthcheck[0].arguments
    assert _words(command.arguments)[:3] == ["dagster", "api", "grpc"]
    assert any(instruction.keyword == "LABEL" for instruction in runtime)
    # Nothing to compile with at run time.
    assert not any("apt-get install" in instruction.arguments for instruction in runtime)


def test_the_image_installs_the_locked_dependencies_without_the_dev_or_bench_groups() -> None:
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed (make bootstraps it)")
    syncs = uv_sync_commands()
    assert syncs, "the Dockerfile installs with uv sync"
    selection = {"--no-dev", "--no-default-groups", "--frozen"}
    for sync in syncs:
        assert "--frozen" in sync, f"{shlex.join(sync)} installs from the lock as it is"
    flags = [flag for flag in syncs[-1] if flag in selection]
    exported = subprocess.run(
        [uv, "export", "--no-hashes", "--no-header", "--no-emit-project", "--quiet", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {_normalized(line.split("==")[0]) for line in exported.splitlines() if "==" in line}
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in project["project"]["dependencies"]:
        assert _requirement_name(requirement) in installed
    for group in ("dev", "bench"):
        for requirement in project["dependency-groups"][group]:
            assert _requirement_name(requirement) not in installed, (
                f"{requirement} of the {group} group would be installed in the image"
            )


def _requirement_name(requirement: str) -> str:
    return _normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- the compose file -------------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification(rendered: dict[str, Any]) -> None:
    parsed = PyCompose.from_json(json.dumps(rendered))
    parsed.validate()
    assert set(parsed.service_names()) == set(services(rendered))


def test_the_compose_specification_check_can_fail() -> None:
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps({"services": {"api": {"image": "x", "helthcheck": {}}}}))


def test_docker_compose_renders_the_file_with_the_example_secrets_filled_in(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("the docker compose plugin is not installed here")
    env_file = tmp_path / "compose.env"
    env_file.write_text(
        "".join(
            f"{name}={value or secrets.token_hex(8)}\n" for name, value in env_example().items()
        ),
        encoding="utf-8",
    )
    completed = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    every = services(compose)
    for name, service in every.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in every, f"{name} depends on {target}, which is no service"
            assert condition == {"condition": "service_healthy"}, f"{name} → {target}: {condition}"
            assert "healthcheck" in every[target]
    _assert_no_cycle(every)


def _assert_no_cycle(every: dict[str, dict[str, Any]]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' → '.join([*path, name])}"
        if name not in done:
            for target in every[name].get("depends_on") or {}:
                visit(target, (*path, name))
            done.add(name)

    for name in every:
        visit(name, ())


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    """Where a service's environment holds a secret itself rather than taking it from
    docker/.env: a variable named like a secret, or a URL with a password."""
    found = []
    for name, service in services(compose).items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable) and not interpolated(value):
                found.append(f"{name}: {variable}")
            password = url_parts(value).password if "://" in value else None
            if password is not None and not interpolated(unquote(password)):
                found.append(f"{name}: the password in {variable}")
    return found


def required_variables(compose: dict[str, Any]) -> set[str]:
    """The variables Compose refuses to start without (``${NAME:?message}``)."""
    return {
        match["name"]
        for service in services(compose).values()
        for value in environment(service).values()
        for match in INTERPOLATION.finditer(value)
        if (match["rest"] or "").startswith(":?")
    }


def test_no_service_holds_a_literal_secret(compose: dict[str, Any]) -> None:
    assert literal_secrets(compose) == []
    tampered = {"services": {"api": {"environment": {
        "RETENTION_DATABASE_URL": "postgresql://retention:s3cret@postgres:5432/retention",
        "GF_SECURITY_ADMIN_PASSWORD": "admin",
    }}}}  # fmt: skip
    assert literal_secrets(tampered) == [
        "api: the password in RETENTION_DATABASE_URL",
        "api: GF_SECURITY_ADMIN_PASSWORD",
    ]
    for instruction in dockerfile_instructions():
        if instruction.keyword in {"ENV", "ARG"}:
            assert not SECRET_NAME.search(instruction.arguments), instruction


def test_the_env_example_names_every_secret_and_holds_none(compose: dict[str, Any]) -> None:
    required = required_variables(compose)
    assert {
        "POSTGRES_PASSWORD",
        "RETENTION_DB_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "RETENTION_PSEUDONYM_KEY",
    } <= required
    example = env_example()
    assert required <= set(example), f"docker/.env.example lacks {required - set(example)}"
    for variable in required:
        assert example[variable] == "", f"docker/.env.example gives {variable} a value"


# --- the commands -----------------------------------------------------------------------------


def installed_distributions() -> set[str]:
    """The distributions the image installs: the lock without the default groups."""
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        return set()
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-default-groups", "--no-hashes", "--no-header", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {_normalized(line.split("==")[0]) for line in exported.splitlines() if "==" in line}
    return names | {"retention-pipelines"}


class CommandLineError(Exception):
    """A command line its CLI would refuse: an unknown command or option, a bad value."""


def console_script(name: str) -> Any:
    """The click command behind the console script ``name`` of this environment (click's, or
    the copy of click that Typer carries, for ``retention``)."""
    assert (BIN / name).exists(), f"{name} is not a console script of the environment"
    scripts = list(entry_points(group="console_scripts", name=name))
    assert scripts, f"no package provides the console script {name}"
    loaded = scripts[0].load()
    if hasattr(loaded, "make_context"):
        return loaded
    if name == "retention":
        import typer.main  # noqa: PLC0415

        return typer.main.get_command(loaded)
    command = getattr(importlib.import_module(scripts[0].module), "cli", None)
    assert hasattr(command, "make_context"), f"{name}: no click command found"
    return command


def parse_command_line(words: list[str], paths: dict[str, Path] | None = None) -> list[str]:
    """Resolve ``words`` (a console script, subcommands, options) as the CLI would and parse
    the options without running anything; return the command's path. Unknown commands or
    options, missing or badly typed values raise :class:`CommandLineError`. Paths in the image
    are replaced by the repository's files the Dockerfile copies there (``paths``)."""
    command = console_script(words[0])
    args = [str(paths[word]) if paths and word in paths else word for word in words[1:]]
    path = [words[0]]
    while hasattr(command, "list_commands") and args and not args[0].startswith("-"):
        found = command.get_command(command.context_class(command), args[0])
        if found is None:
            raise CommandLineError(f"{' '.join(path)} has no command {args[0]}")
        path.append(args.pop(0))
        command = found
    if hasattr(command, "list_commands"):
        raise CommandLineError(f"{' '.join(path)} needs a command")
    try:
        command.make_context(" ".join(path), args)
    except Exception as error:
        if not hasattr(error, "format_message"):
            raise
        raise CommandLineError(f"{shlex.join(words)}: {error.format_message()}") from error
    return path


def service_commands(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Every command line the platform's services run: their command and health check."""
    for name, service in platform_services(compose).items():
        yield name, [str(word) for word in service["command"]]
        check = healthcheck_command(service)
        if check[0] != "python":
            yield f"{name} (health check)", check


def image_paths() -> dict[str, Path]:
    """Files the Dockerfile copies from the repository, by their path in the image."""
    return {
        copy.destination: REPO / copy.sources[0]
        for copy in dockerfile_copies()
        if copy.from_stage is None and len(copy.sources) == 1 and copy.destination.startswith("/")
    }


def test_every_retention_command_a_service_runs_is_in_the_cli(compose: dict[str, Any]) -> None:
    commands = [
        (name, words) for name, words in service_commands(compose) if words[0] == "retention"
    ]
    assert {" ".join(words[:2]) for _, words in commands} == {
        "retention serve",
        "retention dashboard",
        "retention exporter",
    }
    for name, words in commands:
        try:
            parse_command_line(words)
        except CommandLineError as error:
            pytest.fail(f"{name}: {error}")


def test_a_command_the_cli_does_not_have_is_found() -> None:
    with pytest.raises(CommandLineError, match="no command serve-everything"):
        parse_command_line(["retention", "serve-everything"])
    with pytest.raises(CommandLineError, match="--replicas"):
        parse_command_line(["retention", "serve", "--replicas", "2"])
    with pytest.raises(CommandLineError, match="--workers"):
        parse_command_line(["retention", "serve", "--workers", "two"])
    with pytest.raises(CommandLineError, match="needs a command"):
        parse_command_line(["retention", "db"])


@pytest.mark.slow
def test_every_dagster_and_mlflow_command_a_service_runs_is_installed_in_the_image(
    compose: dict[str, Any],
) -> None:
    distributions = installed_distributions()
    commands = [
        (name, words) for name, words in service_commands(compose) if words[0] != "retention"
    ]
    commands += [
        ("the image's CMD", image_command("CMD")),
        ("the image's HEALTHCHECK", image_command("HEALTHCHECK")),
    ]
    assert {words[0] for _, words in commands} == {
        "dagster",
        "dagster-webserver",
        "dagster-daemon",
        "mlflow",
    }
    for name, words in commands:
        try:
            parse_command_line(words, image_paths())
        except CommandLineError as error:
            pytest.fail(f"{name}: {error}")
        (script,) = {
            entry.dist.name
            for entry in entry_points(group="console_scripts", name=words[0])
            if entry.dist
        } & {
            "dagster",
            "dagster-webserver",
            "mlflow",
        }
        if distributions:
            assert _normalized(script) in distributions, (
                f"{words[0]} comes from {script}, not installed in the image"
            )


# --- how the services fit together ------------------------------------------------------------


def _option(words: list[str], *names: str) -> str:
    value = _option_or_none(words, *names)
    assert value is not None, f"none of {names} in {shlex.join(words)}"
    return value


def _option_or_none(words: list[str], *names: str) -> str | None:
    for index, word in enumerate(words):
        if word in names:
            return words[index + 1]
    return None


def test_each_platform_service_listens_where_its_port_health_check_and_peers_say(
    compose: dict[str, Any],
) -> None:
    every = services(compose)
    for name, service in platform_services(compose).items():
        words = [str(word) for word in service["command"]]
        port = _option_or_none(words, "--port", "-p")
        if port is None:
            assert not service.get("ports"), f"{name} publishes a port it does not listen on"
            continue
        # Inside its container: the port is reached from the other services and the host.
        listens = _option(words, "--host", "-h")
        assert listens == "0.0.0.0", f"{name} listens on {listens} only"  # noqa: S104
        check = " ".join(healthcheck_command(service))
        if "urlopen" in check:
            assert f"127.0.0.1:{port}/" in check, f"{name}'s health check asks another port"
        published = [str(mapping).rsplit(":", 1)[-1] for mapping in service.get("ports", [])]
        assert published in ([], [port]), f"{name} publishes {published}, listens on {port}"
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text(encoding="utf-8"))
    (location,) = workspace["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] in every
    assert str(grpc["port"]) == _option([str(w) for w in every[grpc["host"]]["command"]], "-p")
    scraped = (DOCKER / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    for target in ("api", "exporter"):
        port = _option([str(word) for word in every[target]["command"]], "--port")
        assert f"{target}:{port}" in scraped, f"Prometheus does not scrape {target}:{port}"


def test_grafana_reads_the_prometheus_and_the_dashboards_compose_provides(
    compose: dict[str, Any],
) -> None:
    grafana = services(compose)["grafana"]
    mounts = dict(str(volume).split(":")[:2] for volume in grafana["volumes"])
    provisioning = DOCKER / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert [source["url"] for source in datasources if source["type"] == "prometheus"] == [
        "http://prometheus:9090"
    ]
    assert "prometheus" in services(compose)
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    assert {provider["options"]["path"] for provider in providers} == {
        mounts["./grafana/dashboards"]
    }


def test_every_service_of_the_platform_gets_the_settings_it_needs(compose: dict[str, Any]) -> None:
    dagster_config = (DOCKER / "dagster.yaml").read_text(encoding="utf-8")
    dagster_variables = set(re.findall(r"env:\s*(\w+)", dagster_config))
    assert dagster_variables >= {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_HOST"}
    for name, service in platform_services(compose).items():
        words = [str(word) for word in service["command"]]
        env = environment(service)
        if words[0].startswith("dagster"):
            missing = dagster_variables - set(env)
            assert not missing, f"{name} runs Dagster without {missing}"
        # A platform process without the URL would start an embedded Postgres of its own.
        if words[0] == "retention" or words[:3] == ["dagster", "api", "grpc"]:
            # ...and one with the URL but no pseudonym key refuses to name customers.
            needed = {
                "RETENTION_DATABASE_URL",
                "RETENTION_READER_PASSWORD",
                "RETENTION_PSEUDONYM_KEY",
            }
            assert needed <= set(env), name
        # The runs (subprocesses of the code server) hand the night's tasks to the CRM.
        if words[:3] == ["dagster", "api", "grpc"]:
            assert {"RETENTION_CRM_WEBHOOK_URL", "RETENTION_CRM_WEBHOOK_SECRET"} <= set(env)
        if words[0] == "mlflow":
            assert "MLFLOW_BACKEND_STORE_URI" in env


def test_the_services_share_the_volumes_where_the_platform_reads_and_writes(
    compose: dict[str, Any],
) -> None:
    image_env = dockerfile_env()
    every = services(compose)

    def mounted(service: str, path: str) -> str:
        for volume in every[service].get("volumes", []):
            source, target, *mode = str(volume).split(":")
            if target == path:
                return ":".join([source, *mode])
        raise AssertionError(f"{service} does not mount {path}")

    artifacts = image_env["RETENTION_MLFLOW_ARTIFACT_ROOT"]
    assert (
        _option([str(w) for w in every["mlflow"]["command"]], "--artifacts-destination")
        == artifacts
    )
    assert mounted("user-code", artifacts) == mounted("mlflow", artifacts) == "mlflow-artifacts"
    assert mounted("api", artifacts) == "mlflow-artifacts:ro"
    assert mounted("user-code", image_env["RETENTION_HOME_DIR"]) == "retention-data"
    compute_logs = yaml.safe_load((DOCKER / "dagster.yaml").read_text(encoding="utf-8"))[
        "compute_logs"
    ]
    base_dir = compute_logs["config"]["base_dir"]
    assert base_dir.startswith(image_env["DAGSTER_HOME"])
    for service in ("user-code", "webserver", "daemon"):
        assert mounted(service, base_dir) == "dagster-storage"
    assert mounted("webserver-readonly", base_dir) == "dagster-storage:ro"
    declared = set(compose.get("volumes") or {})
    for name, service in every.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, not in docker/"
            else:
                assert source in declared, f"{name} mounts the undeclared volume {source}"


def test_the_databases_the_services_use_are_those_the_init_script_creates(
    compose: dict[str, Any],
) -> None:
    every = services(compose)
    init = environment(every["postgres"])
    assert "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/" in " ".join(
        str(volume) for volume in every["postgres"]["volumes"]
    )
    created = {
        role: (init[f"{prefix}_USER"], init[f"{prefix}_DB"]) for role, prefix in INIT_ROLES.items()
    }
    password_of = {
        role: interpolated(init[f"{prefix}_PASSWORD"]) for role, prefix in INIT_ROLES.items()
    }
    used: set[str] = set()
    for name, service in platform_services(compose).items():
        env = environment(service)
        for role, url in _database_urls(env):
            parts = url_parts(url)
            assert (parts.username, parts.path.lstrip("/")) == created[role], f"{name}: {url}"
            assert (parts.hostname, parts.port) == ("postgres", 5432)
            assert interpolated(unquote(parts.password or "")) == password_of[role], (
                f"{name}: {url}"
            )
            used.add(role)
        if "DAGSTER_POSTGRES_USER" in env:
            assert (env["DAGSTER_POSTGRES_USER"], env["DAGSTER_POSTGRES_DB"]) == created["dagster"]
            assert interpolated(env["DAGSTER_POSTGRES_PASSWORD"]) == password_of["dagster"]
            used.add("dagster")
        if "RETENTION_DATABASE_URL" in env:
            # The platform reaches MLflow's store and Dagster's runs on the same server.
            assert env["RETENTION_DAGSTER_DATABASE"] == created["dagster"][1]
            assert env["RETENTION_MLFLOW_DATABASE"] == created["mlflow"][1]
    assert used == set(INIT_ROLES)


def _database_urls(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    if "RETENTION_DATABASE_URL" in env:
        yield "warehouse", env["RETENTION_DATABASE_URL"]
    if "MLFLOW_BACKEND_STORE_URI" in env:
        yield "mlflow", env["MLFLOW_BACKEND_STORE_URI"]


def test_the_dagster_instance_of_the_containers_loads_with_the_default_run_launcher(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dagster._core.instance.config import dagster_instance_config  # noqa: PLC0415
    from dagster._serdes.config_class import ConfigurableClassData  # noqa: PLC0415

    for name in ("HOST", "PORT", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", "5432" if name == "PORT" else "x")
    shutil.copy(DOCKER / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    launcher = config["run_launcher"]
    launcher_config = yaml.safe_dump(launcher.get("config") or {})
    rehydrated = ConfigurableClassData(launcher["module"], launcher["class"], launcher_config)
    assert type(rehydrated.rehydrate()).__name__ == "DefaultRunLauncher"
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {
        "env": "DAGSTER_POSTGRES_PASSWORD"
    }


# --- the init script on a real server ---------------------------------------------------------


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class InitializedServer:
    server_url: str
    logins: dict[str, Login]
    reader: database.ReaderRole

    def url(self, role: str, database_of: str | None = None) -> str:
        login = self.logins[role]
        target = self.logins[database_of or role].database
        return database.with_login(
            database.with_database(self.server_url, target), login.user, login.password
        )


def _psql_path() -> str:
    found = shutil.which("psql")
    if found:
        return str(Path(found).parent)
    spec = importlib.util.find_spec("pgserver")
    assert spec and spec.submodule_search_locations, "psql is needed: Debian's or pgserver's"
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")


@pytest.fixture(scope="module")
def initialized_server(server_url: str) -> Iterator[InitializedServer]:
    """docker/postgres/init-databases.sh run on the test server as the image runs it, with
    throwaway names for the databases and logins; all of them dropped afterwards."""
    prefix = f"retention_test_init_{uuid.uuid4().hex[:8]}"
    logins = {
        role: Login(f"{prefix}_{role}", secrets.token_hex(12), f"{prefix}_{role}_db")
        for role in INIT_ROLES
    }
    parts = database.connection_parts(server_url)
    env = {
        **os.environ,
        "PATH": f"{_psql_path()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": parts.host,
        "PGPORT": str(parts.port),
        "PGPASSWORD": parts.password,
        "POSTGRES_USER": parts.user,
        "POSTGRES_DB": "postgres",
    }
    for role, prefix_name in INIT_ROLES.items():
        login = logins[role]
        env |= {f"{prefix_name}_USER": login.user, f"{prefix_name}_PASSWORD": login.password}
        env |= {f"{prefix_name}_DB": login.database}
    reader = database.ReaderRole(
        group=f"{prefix}_reader", connection_limit=5, statement_timeout="60s",
        login=f"{prefix}_reader_login", password=secrets.token_hex(12),
    )  # fmt: skip
    try:
        completed = subprocess.run(
            ["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        assert completed.returncode == 0, completed.stderr
        yield InitializedServer(server_url, logins, reader)
    finally:
        with database.connect(
            database.with_database(server_url, "postgres"), autocommit=True
        ) as conn:
            for login in logins.values():
                conn.execute(f'drop database if exists "{login.database}" with (force)')
            for role in [reader.login, reader.group, *(login.user for login in logins.values())]:
                conn.execute(f'drop role if exists "{role}"')


def test_each_login_reaches_its_own_database_and_no_other(
    initialized_server: InitializedServer,
) -> None:
    server = initialized_server
    for role in INIT_ROLES:
        with database.connect(server.url(role), retry_s=0) as conn:
            assert conn.execute("select current_database()").fetchone() == (
                server.logins[role].database,
            )
    for role, other in [
        ("dagster", "warehouse"),
        ("dagster", "mlflow"),
        ("mlflow", "warehouse"),
        ("mlflow", "dagster"),
    ]:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            database.connect(server.url(role, other), retry_s=0).close()


def test_the_platform_login_prepares_the_warehouse_without_being_a_superuser(
    initialized_server: InitializedServer,
) -> None:
    server = initialized_server
    url = server.url("warehouse")
    with database.connect(url) as conn:
        row = conn.execute(
            "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = current_user"
        ).fetchone()
    assert row == (False, False, True)
    reader = server.reader
    prepared = database.prepared_database_url(url, home_dir=Path("/nonexistent"), reader=reader)
    assert database.current_version(prepared) == len(database.available_migrations())
    reader_url = database.with_login(url, reader.login or "", reader.password)
    with database.connect(reader_url, retry_s=0) as conn:
        assert conn.execute("show default_transaction_read_only").fetchone() == ("on",)


@pytest.mark.parametrize("owner", ["dagster", "mlflow"])
def test_what_the_platform_creates_in_dagster_and_mlflow_belongs_to_their_owner(
    initialized_server: InitializedServer, owner: str
) -> None:
    server = initialized_server
    owner_user = server.logins[owner].user
    with database.connect(server.url("warehouse", owner), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == (owner_user,)
        conn.execute("create table made_by_the_platform (id integer)")
        conn.execute("insert into made_by_the_platform values (1)")
        table_owner = conn.execute(
            "select tableowner from pg_tables where tablename = 'made_by_the_platform'"
        ).fetchone()
    assert table_owner == (owner_user,)
    with database.connect(server.url(owner), autocommit=True) as conn:
        conn.execute("insert into made_by_the_platform values (2)")
        conn.execute("create table made_by_the_owner (id integer)")
        conn.execute("insert into made_by_the_owner values (3)")
    with database.connect(server.url("warehouse", owner)) as conn:
        assert conn.execute("select count(*) from made_by_the_platform").fetchone() == (2,)
        assert conn.execute("select id from made_by_the_owner").fetchone() == (3,)


@pytest.mark.slow
def test_the_mlflow_server_login_uses_the_store_the_platform_created(
    initialized_server: InitializedServer,
) -> None:
    from mlflow import MlflowClient  # noqa: PLC0415

    from retention_pipelines.core.registry import mlflow_tracking_uri  # noqa: PLC0415

    server = initialized_server
    platform_uri = mlflow_tracking_uri(server.url("warehouse"), server.logins["mlflow"].database)
    experiment = MlflowClient(platform_uri).create_experiment(
        f"made-by-the-platform-{uuid.uuid4().hex[:6]}"
    )
    as_the_server = MlflowClient(database.sqlalchemy_url(server.url("mlflow")))
    assert as_the_server.get_experiment(experiment).experiment_id == experiment
    as_the_server.set_experiment_tag(experiment, "checked-by", "the mlflow login")


@pytest.mark.slow
def test_the_platform_login_reads_the_runs_dagster_stores(
    initialized_server: InitializedServer,
) -> None:
    from dagster_postgres import DagsterPostgresStorage  # noqa: PLC0415

    server = initialized_server
    # What the webserver, daemon and runs do first: create the instance's tables.
    DagsterPostgresStorage(postgres_url=server.url("dagster")).run_storage.get_runs()
    with database.connect(server.url("warehouse", "dagster")) as conn:
        conn.execute("set transaction read only")
        assert conn.execute("select count(*) from runs").fetchone() == (0,)
