"""The command line: `serve`, `refresh` and `admin-token`; the only reader of os.environ."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence

from . import __version__, config, logs
from .admin_auth import DEFAULT_TTL, AdminTokens
from .coordinator import Refresher
from .docker_engine import DockerEngine
from .errors import ConfigError, EngineUnavailable, UnknownRuntime
from .refresh import RefreshService

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_engine(settings: config.Config) -> DockerEngine:
    """The Docker adapter for these settings."""
    return DockerEngine(
        settings.docker_env,
        registry_auth=settings.registry_auth,
        platform=settings.image_platform,
        max_connections=settings.swap.parallelism * 2 + 4,
    )


def build_refresher(settings: config.Config, engine: DockerEngine) -> Refresher:
    """What refreshes the runtimes: this host's containers, or the Swarm's services."""
    if settings.orchestrator is config.Orchestrator.SWARM:
        from .docker_swarm import DockerSwarm
        from .swarm import SwarmService

        return SwarmService(settings, DockerSwarm(engine))
    return RefreshService(settings, engine)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workspace-image-receiver",
        description="Keep ws-* workspace containers on the newest published template image.",
        epilog="Settings come from the environment; see README.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")

    refresh = commands.add_parser(
        "refresh", help="pull and recreate once from this host, print the result as JSON"
    )
    refresh.add_argument("runtimes", nargs="*", metavar="RUNTIME", help="default: all of RUNTIMES")
    refresh.add_argument("--no-recreate", action="store_true", help="only pull")
    refresh.add_argument("--force", action="store_true", help="recreate even if up to date")

    token = commands.add_parser("admin-token", help="print a signed admin token")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="lifetime in seconds (3600)")
    token.add_argument("--subject", default="admin", help="who the token is for (admin)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    try:
        if args.command == "admin-token":
            return _admin_token(env, args.ttl, args.subject)
        if args.command == "refresh" and args.runtimes and not env.get("RUNTIMES"):
            env["RUNTIMES"] = ",".join(args.runtimes)
        settings = config.load(env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(settings.log_level, settings.log_format)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    return _refresh(settings, args.runtimes or None, not args.no_recreate, args.force)


def _admin_token(env: Mapping[str, str], ttl: int, subject: str) -> int:
    keys = config.admin_keys_from_env(env)
    if not keys:
        print("error: ADMIN_SECRET_KEY (or ADMIN_SECRET_KEY_FILE) is not set", file=sys.stderr)
        return EXIT_USAGE
    if ttl <= 0:
        print("error: --ttl must be a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    print(AdminTokens(keys).mint(ttl=ttl, subject=subject))
    return EXIT_OK


def _serve(settings: config.Config, host: str, port: int) -> int:
    from .app import build_app
    from .server import serve

    engine = build_engine(settings)
    try:
        serve(build_app(settings, engine, build_refresher(settings, engine)), host, port)
    finally:
        engine.close()
    return EXIT_OK


def _refresh(
    settings: config.Config, runtimes: Sequence[str] | None, recreate: bool, force: bool
) -> int:
    engine = build_engine(settings)
    try:
        refresher = build_refresher(settings, engine)
        result = refresher.refresh(runtimes, recreate=recreate, force=force)
    except UnknownRuntime as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EngineUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.close()
    print(json.dumps(result.as_json(), indent=2))
    return EXIT_OK if result.ok else EXIT_FAILED
